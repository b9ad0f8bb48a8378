# RetinaNet-FPN 1x + EMO-1M (official recipe, spec 4.3; shared values in ./_base_/retinanet_emo.py):
# AdamW lr 2e-4 wd 0.05 (no decay on norms), warm-up 500 it + cosine, 12 epochs, 4/GPU x 8 GPUs = 32
# (auto_scale_lr base 32), 1333x800 keep-ratio + flip, window 7, out_indices (1, 2, 3, 4),
# frozen_stages 1, norm_eval True.
# From scratch: --cfg-options model.backbone.init_cfg=None model.backbone.norm_eval=False
_base_ = './_base_/retinanet_emo.py'

model = dict(
    backbone=dict(arch='1m', window_size=7, init_cfg=dict(checkpoint='checkpoints/emo_1m_in1k.pth')),
    neck=dict(in_channels=[32, 48, 80, 168]))
