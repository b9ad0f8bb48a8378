# SSDLite 320x320 + EMOv2-20M (official recipe, spec 4.2; shared values in ./_base_/ssdlite_emov2.py):
# AdamW lr 2.4e-3 wd 0.05 (no decay on norms), clip 0.1, warm-up 500 it, constant to ep 60, cosine 60-120,
# 120 ep x RepeatDataset 5, 24/GPU x 8 GPUs = 192 (auto_scale_lr base 192), window 10,
# out_indices (3, 4), frozen_stages -1, norm_eval True.
# No EMOv2-20M ImageNet weights were released (spec 7): checkpoints/emov2_20m_in1k.pth must come from your own
# ImageNet run of EMOv2-20M (converted with tools/convert_official.py --arch emov2-20m), or train from scratch:
# --cfg-options model.backbone.init_cfg=None model.backbone.norm_eval=False
_base_ = './_base_/ssdlite_emov2.py'

model = dict(
    backbone=dict(arch='20m', window_size=10, init_cfg=dict(checkpoint='checkpoints/emov2_20m_in1k.pth')),
    neck=dict(in_channels=(320, 448), out_channels=(320, 448, 512, 256, 256, 128)),
    bbox_head=dict(in_channels=(320, 448, 512, 256, 256, 128)))
