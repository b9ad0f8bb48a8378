# SSDLite 320x320 + EMO-2M (official recipe, spec 4.1; shared values in ./_base_/ssdlite_emo.py):
# AdamW lr 1.2e-3 wd 0.05 (no decay on norms), warm-up 500 it + cosine, 120 ep x RepeatDataset 5,
# 24/GPU x 8 GPUs = 192 (auto_scale_lr base 192), window 7, out_indices (3, 4), frozen_stages -1,
# norm_eval True.
# From scratch: --cfg-options model.backbone.init_cfg=None model.backbone.norm_eval=False
_base_ = './_base_/ssdlite_emo.py'

model = dict(
    backbone=dict(arch='2m', window_size=7, init_cfg=dict(checkpoint='checkpoints/emo_2m_in1k.pth')),
    neck=dict(in_channels=(120, 200), out_channels=(120, 200, 512, 256, 256, 128)),
    bbox_head=dict(in_channels=(120, 200, 512, 256, 256, 128)))
