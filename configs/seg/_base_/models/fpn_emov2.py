# Semantic FPN (FPN neck + FPNHead over stages 1-4) on an EMOv2 backbone, ADE20K 150 classes: mmseg's fpn_r50 model
# with the ResNet replaced; shaped for EMOv2-1M (the variant files set the size, the neck inputs and weights).
_base_ = ['mmseg::_base_/models/fpn_r50.py']

model = dict(
    data_preprocessor=dict(size=(512, 512)),  # pad training crops (and smaller images) to 512x512
    pretrained=None,  # the stock base points at a ResNet URL, which EncoderDecoder would push into the backbone
    backbone=dict(
        _delete_=True, type='emo_mm.EMOv2', arch='1m', window_size=10, out_indices=(1, 2, 3, 4),
        frozen_stages=-1, norm_eval=False, init_cfg=dict(type='Pretrained', prefix='backbone.')),
    neck=dict(in_channels=[32, 48, 80, 180]),
    decode_head=dict(num_classes=150))
