# Mask R-CNN-FPN 1x + EMOv2-1M, COCO (published box AP 37.1, spec 5.3 note; mask AP, params and FLOPs not
# given). The recipe is INFERRED (the spec has no Mask R-CNN config): mmdet's stock mask-rcnn_r50_fpn_1x_coco
# with the EMOv2 RetinaNet values of spec 4.4, see ./_base_/mask_rcnn_emov2.py: AdamW lr 2e-4 wd 0.05 (no decay
# on norms), clip 0.1, warm-up 500 it, constant to ep 6, cosine 6-12, 12 epochs, 4/GPU x 4 GPUs = 16
# (auto_scale_lr base 16), 1333x800 keep-ratio + flip, window 10, out_indices (1, 2, 3, 4), frozen_stages 1,
# norm_eval True.
# From scratch: --cfg-options model.backbone.init_cfg=None model.backbone.norm_eval=False
_base_ = './_base_/mask_rcnn_emov2.py'

model = dict(
    backbone=dict(arch='1m', window_size=10, init_cfg=dict(checkpoint='checkpoints/emov2_1m_in1k.pth')),
    neck=dict(in_channels=[32, 48, 80, 180]))
