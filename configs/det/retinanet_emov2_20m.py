# RetinaNet-FPN 1x + EMOv2-20M (official recipe, spec 4.4; shared values in ./_base_/retinanet_emov2.py):
# AdamW lr 2e-4 wd 0.05 (no decay on norms), clip 0.1, warm-up 500 it, constant to ep 6, cosine 6-12,
# 12 epochs, 4/GPU x 4 GPUs = 16 (auto_scale_lr base 16), 1333x800 keep-ratio + flip, window 10,
# out_indices (1, 2, 3, 4), frozen_stages 1, norm_eval True.
# No EMOv2-20M ImageNet weights were released (spec 7): checkpoints/emov2_20m_in1k.pth must come from your own
# ImageNet run of EMOv2-20M (converted with tools/convert_official.py --arch emov2-20m), or train from scratch:
# --cfg-options model.backbone.init_cfg=None model.backbone.norm_eval=False
_base_ = './_base_/retinanet_emov2.py'

model = dict(
    backbone=dict(arch='20m', window_size=10, init_cfg=dict(checkpoint='checkpoints/emov2_20m_in1k.pth')),
    neck=dict(in_channels=[64, 128, 320, 448]))
