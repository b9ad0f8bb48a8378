# Mask R-CNN-FPN 1x with an EMOv2 backbone (COCO instance segmentation).
#
# What the spec gives (shared/docs/emo_spec.md): the published box AP (5.3 note: 37.1 / 39.5 / 42.3 / 44.2 for
# 1M / 2M / 5M / 20M) and that the EMOv2 Mask R-CNN runs used the RetinaNet setup of 4 GPUs (4.4: "4 GPUs
# (L40S; A100 for MaskRCNN 1M/20M)"). It gives NO Mask R-CNN config values, no mask AP, params or FLOPs.
# Everything below is therefore INFERRED: mmdet 3.3's stock mask-rcnn_r50_fpn_1x_coco (its four bases, as
# the official EMOv2 RetinaNet config builds on the RetinaNet ones) with the EMOv2 RetinaNet recipe (spec 4.4)
# for backbone, optimizer, schedule and batch:
#
# Stock mmdet parts (inherited, unchanged): RPNHead (anchors scale 8, ratios 0.5/1/2, strides 4..64),
# StandardRoIHead (RoIAlign 7 / 14, Shared2FCBBoxHead 80 classes, FCNMaskHead 4 convs), train/test cfgs
# (RPN 2000 / 1000 proposals, nms 0.7; R-CNN score 0.05, nms 0.5, 100 instances, mask threshold 0.5),
# FPN (256, 5 outputs from all four stages + max-pool), coco_instance data (boxes + polygon masks, Resize
# 1333x800 keep-ratio, flip 0.5, pad 32 in the data preprocessor, aspect-ratio grouped batches),
# CocoMetric bbox + segm, default_runtime.
#
# EMOv2 RetinaNet values (spec 4.4) applied here:
#   backbone  emo_mm.EMOv2, window 10, out_indices (1, 2, 3, 4) (strides 4..32, channels C1..C4),
#             frozen_stages 1 (stem and stage 1 frozen), norm_eval True; ImageNet weights via init_cfg
#   optimizer AdamW lr 2e-4, betas (0.9, 0.999), wd 0.05, no decay on 'norm', grad clip max_norm 0.1 (L2)
#   schedule  linear warm-up 500 iters from 1e-5x, constant lr to epoch 6, cosine (by epoch) to 0 over
#             epochs 6-12; val every epoch
#   batch     4 per GPU x 4 GPUs = 16 (auto_scale_lr base_batch_size 16), 4 workers per GPU
#   from scratch: `--cfg-options model.backbone.init_cfg=None model.backbone.norm_eval=False`
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]

model = dict(
    backbone=dict(
        _delete_=True, type='emo_mm.EMOv2', arch='1m', window_size=10, out_indices=(1, 2, 3, 4),  # arch: variants
        frozen_stages=1, norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/emov2_1m_in1k.pth', prefix='backbone.')),
    neck=dict(in_channels=[32, 48, 80, 180]))  # C1..C4 of EMOv2-1M
train_dataloader = dict(batch_size=4, num_workers=4)

optim_wrapper = dict(
    _delete_=True, type='OptimWrapper', clip_grad=dict(max_norm=0.1, norm_type=2),
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05),
    # EMO has no position embeddings: only 'norm' matters (BN / LN weights and biases get no decay)
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))
train_cfg = dict(max_epochs=12, val_interval=1)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-5, by_epoch=False, begin=0, end=500),
    dict(type='CosineAnnealingLR', begin=6, end=12, T_max=6, by_epoch=True, eta_min=0),  # constant lr before
]
auto_scale_lr = dict(enable=False, base_batch_size=16)
