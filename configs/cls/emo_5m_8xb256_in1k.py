# EMO-5M ImageNet-1k classification, 224x224 (official top-1 78.4).
_base_ = './emo_1m_8xb256_in1k.py'

model = dict(
    backbone=dict(type='emo_mm.EMO', arch='5m'),
    head=dict(in_channels=288))
