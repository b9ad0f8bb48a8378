# EMOv2-5M ImageNet-1k classification, 224x224 (official top-1 79.4).
# Same official recipe as EMOv2-1M (see emov2_1m_8xb128_in1k.py); only the backbone width/depth and the head input change.
_base_ = './emov2_1m_8xb128_in1k.py'

model = dict(
    backbone=dict(type='emo_mm.EMOv2', arch='5m'),
    head=dict(in_channels=288))
