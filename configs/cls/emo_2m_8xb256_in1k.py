# EMO-2M ImageNet-1k classification, 224x224 (official top-1 75.1).
_base_ = './emo_1m_8xb256_in1k.py'

model = dict(
    backbone=dict(type='emo_mm.EMO', arch='2m'),
    head=dict(in_channels=200))
