# EMO-6M ImageNet-1k classification, 224x224 (official top-1 79.0).
_base_ = './emo_1m_8xb256_in1k.py'

model = dict(
    backbone=dict(type='emo_mm.EMO', arch='6m'),
    head=dict(in_channels=320))
