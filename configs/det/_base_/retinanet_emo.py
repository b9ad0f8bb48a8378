# RetinaNet-FPN with an EMO (v1) backbone: the official recipe (EMO repo
# `down-stream-tasks/mmdetection/configs/retinanet_emo/retinanet_emo_xM_fpn_1x_coco.py`, mmdet 2.25) in mmdet 3.x
# terms.
#
# Stock mmdet parts (inherited, unchanged): RetinaHead (80 classes, 4 stacked 256-wide convs, anchors
# octave 4 x 3 scales x ratios 0.5/1/2, strides 8..128), FocalLoss(2.0, 0.25) + L1Loss, MaxIoUAssigner
# 0.5/0.4, test_cfg (score 0.05, nms 0.5, 100 boxes), FPN (256, start_level 1, extra convs 'on_input',
# 5 outputs), coco_detection data (Resize 1333x800 keep-ratio, flip 0.5, pad 32 in the data preprocessor,
# aspect-ratio grouped batches, min_size 32), default_runtime.
#
# EMO-specific (official) values set here:
#   backbone  emo_mm.EMO, out_indices (1, 2, 3, 4) (strides 4..32, channels C1..C4), frozen_stages 1 (stem and
#             stage 1 frozen), norm_eval True; ImageNet weights via init_cfg
#   optimizer AdamW lr 2e-4, betas (0.9, 0.999), wd 0.05, no decay on 'norm' params, no grad clip
#   schedule  linear warm-up 500 iters from 0.001x, cosine (by epoch) to 0 over 12 epochs; val every epoch
#   batch     4 per GPU x 8 GPUs = 32 (auto_scale_lr base_batch_size 32), 4 workers per GPU
#   sync_bn   official sync_bn=True only touches backbone BNs, which norm_eval=True keeps in eval mode
#             (SyncBN == BN there): left out, no numerical effect. FPN/RetinaHead have no BN.
#   from scratch: `--cfg-options model.backbone.init_cfg=None model.backbone.norm_eval=False`
#             (a random backbone must learn its BN statistics; norm_eval=True keeps them at 0 / 1)
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]

model = dict(
    backbone=dict(
        _delete_=True,
        type='emo_mm.EMO',
        arch='1m',  # overridden by every variant file
        window_size=7,
        out_indices=(1, 2, 3, 4),
        frozen_stages=1,
        norm_eval=True,
        init_cfg=dict(type='Pretrained', prefix='backbone.')),  # checkpoint: set by each variant
    neck=dict(in_channels=[32, 48, 80, 168]))

train_dataloader = dict(batch_size=4, num_workers=4)

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        custom_keys={
            'norm': dict(decay_mult=0.),
            'absolute_pos_embed': dict(decay_mult=0.),
            'relative_position_bias_table': dict(decay_mult=0.),
        }))

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs, val_interval=1)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='CosineAnnealingLR', begin=0, end=max_epochs, T_max=max_epochs, by_epoch=True, eta_min=0),
]
auto_scale_lr = dict(enable=False, base_batch_size=32)
