# SegFormer head (all-MLP decoder over stages 1-4) on an EMOv2 backbone, ADE20K 150 classes.
# INFERRED (the spec gives no SegFormer config, only its published mIoU): mmseg's stock segformer_mit-b0 model
# (SegformerHead: in_index 0-3, 256 channels, dropout 0.1, SyncBN, align_corners False, CE loss 1.0; no
# auxiliary head; test mode 'whole') with the MiT backbone replaced by EMOv2 as the EMOv2 seg configs set it
# (spec 4.6: window 10, out_indices (1, 2, 3, 4) = strides 4..32, frozen_stages -1, norm_eval False).
# The variant files set the EMOv2 size (arch, init checkpoint) and the head's input channels C1..C4.
_base_ = ['mmseg::_base_/models/segformer_mit-b0.py']

model = dict(
    data_preprocessor=dict(size=(512, 512)),  # pad training crops (and smaller images) to 512x512
    pretrained=None,
    backbone=dict(
        _delete_=True, type='emo_mm.EMOv2', arch='1m', window_size=10, out_indices=(1, 2, 3, 4),
        frozen_stages=-1, norm_eval=False,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/emov2_1m_in1k.pth', prefix='backbone.')),
    decode_head=dict(in_channels=[32, 48, 80, 180], num_classes=150))  # C1..C4 of EMOv2-1M
