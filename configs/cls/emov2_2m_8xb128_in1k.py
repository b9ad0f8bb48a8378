# EMOv2-2M ImageNet-1k classification, 224x224 (official top-1 75.8).
_base_ = './emov2_1m_8xb128_in1k.py'

model = dict(
    backbone=dict(type='emo_mm.EMOv2', arch='2m'),
    head=dict(in_channels=200))
