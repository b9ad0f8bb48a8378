# Mask R-CNN-FPN 1x with an EMOv2 backbone (COCO instance segmentation): mmdet's stock mask-rcnn_r50_fpn_1x_coco
# (RPN, RoI heads, FPN over stages 1-4 + max-pooled 5th level, coco_instance data, bbox + segm CocoMetric) with the
# ResNet replaced, AdamW + clipping, a constant-then-cosine 12-epoch schedule and batch 4 per GPU x 4 GPUs = 16.
# Shaped for EMOv2-1M; the variant files set the size, the neck inputs and the weights.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]

model = dict(
    backbone=dict(
        _delete_=True, type='emo_mm.EMOv2', arch='1m', window_size=10, out_indices=(1, 2, 3, 4),
        frozen_stages=1, norm_eval=True,  # stem and stage 1 frozen
        init_cfg=dict(type='Pretrained', prefix='backbone.')),  # checkpoint: set by each variant
    neck=dict(in_channels=[32, 48, 80, 180]))  # C1..C4 of EMOv2-1M
train_dataloader = dict(batch_size=4, num_workers=4)

optim_wrapper = dict(
    _delete_=True, type='OptimWrapper', clip_grad=dict(max_norm=0.1, norm_type=2),
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05),
    # substring match on the full parameter name: in EMOv2 only 'norm' reaches anything (the backbone's BN / LN
    # weights and biases); the two position-embedding keys are the official (Swin-style) template's
    paramwise_cfg=dict(
        custom_keys={
            'absolute_pos_embed': dict(decay_mult=0.),
            'relative_position_bias_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.),
        }))
train_cfg = dict(max_epochs=12, val_interval=1)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-5, by_epoch=False, begin=0, end=500),
    dict(type='CosineAnnealingLR', begin=6, end=12, T_max=6, by_epoch=True, eta_min=0),  # constant lr before
]
auto_scale_lr = dict(enable=False, base_batch_size=16)
