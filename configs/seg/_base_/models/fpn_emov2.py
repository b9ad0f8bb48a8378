# Semantic FPN (FPN neck + FPNHead over stages 1-4) on an EMOv2 backbone, ADE20K 150 classes.
# INFERRED (the spec gives no Semantic FPN config, only its published mIoU): mmseg's stock fpn_r50 model (FPN
# 256 channels, 4 outputs; FPNHead 128 channels, feature strides 4/8/16/32, dropout 0.1, SyncBN,
# align_corners False, CE loss 1.0; no auxiliary head; test mode 'whole') with the ResNet replaced by EMOv2 as
# the EMOv2 seg configs set it (spec 4.6: window 10, out_indices (1, 2, 3, 4) = strides 4..32,
# frozen_stages -1, norm_eval False). The variant files set the EMOv2 size and the neck's input channels C1..C4.
_base_ = ['mmseg::_base_/models/fpn_r50.py']

model = dict(
    data_preprocessor=dict(size=(512, 512)),  # pad training crops (and smaller images) to 512x512
    pretrained=None,  # the stock base points at a ResNet URL, which EncoderDecoder would push into the backbone
    backbone=dict(
        _delete_=True, type='emo_mm.EMOv2', arch='1m', window_size=10, out_indices=(1, 2, 3, 4),
        frozen_stages=-1, norm_eval=False,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/emov2_1m_in1k.pth', prefix='backbone.')),
    neck=dict(in_channels=[32, 48, 80, 180]),  # C1..C4 of EMOv2-1M
    decode_head=dict(num_classes=150))
