# SSDLite with an EMO (v1) backbone: the official recipe (EMO repo
# `down-stream-tasks/mmdetection/configs/ssd_emo/ssdlite_emo_xM_pretrain_coco.py`, mmdet 2.25) in mmdet 3.x terms.
#
# Inherits mmdet's stock SSDLite-MobileNetV2 config, which already holds every official value that is not
# EMO specific: SSDNeck / SSDHead (depthwise, BN eps 1e-3 momentum 0.03, ReLU6), SSD anchors
# (strides 16..320, min/max sizes), MaxIoUAssigner 0.5/0.5, test_cfg (nms 0.45, score 0.02, 200 boxes),
# the 320x320 pipeline (Expand 1-4, MinIoURandomCrop, Resize 320 no keep-ratio, flip, PhotoMetricDistortion),
# RepeatDataset x5 over train2017 (filter_empty_gt, min_size 32), val batch 8, NumClassCheckHook,
# CheckInvalidLossHook(50), cudnn_benchmark, auto_scale_lr base 192 (= 8 GPUs x 24).
#
# EMO-specific (official) values set here:
#   backbone  emo_mm.EMO, out_indices (3, 4) (strides 16/32, channels C3/C4), frozen_stages -1, norm_eval True,
#             ImageNet weights via init_cfg (the official release, see each variant)
#   optimizer AdamW lr 1.2e-3 (= 2e-4 x 6), betas (0.9, 0.999), wd 0.05, no decay on 'norm' params, no clip
#   schedule  linear warm-up 500 iters from 0.001x, cosine (by epoch) to 0 over 120 epochs;
#             120 epochs x RepeatDataset 5 = 600 COCO passes; val + checkpoint every 5 epochs
#   batch     24 per GPU x 8 GPUs = 192 (auto_scale_lr base_batch_size 192), 8 workers per GPU
#   sync_bn   the official backbone converts its BNs to SyncBN, but norm_eval=True keeps every backbone BN in
#             eval mode, where SyncBN == BN: no numerical effect, so it is left out. Neck/head BNs were plain
#             BN officially; `--cfg-options sync_bn=torch` (distributed only) would convert them too.
#   from scratch: `--cfg-options model.backbone.init_cfg=None model.backbone.norm_eval=False`
#             (a random backbone must learn its BN statistics; norm_eval=True keeps them at 0 / 1)
_base_ = 'mmdet::ssd/ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='emo_mm.EMO',
        arch='1m',  # overridden by every variant file
        window_size=7,
        out_indices=(3, 4),
        frozen_stages=-1,
        norm_eval=True,
        init_cfg=dict(type='Pretrained', prefix='backbone.')),  # checkpoint: set by each variant
    neck=dict(in_channels=(80, 168), out_channels=(80, 168, 512, 256, 256, 128)),
    bbox_head=dict(in_channels=(80, 168, 512, 256, 256, 128)))

train_dataloader = dict(batch_size=24, num_workers=8)

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1.2e-3, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        custom_keys={
            'norm': dict(decay_mult=0.),
            'absolute_pos_embed': dict(decay_mult=0.),
            'relative_position_bias_table': dict(decay_mult=0.),
        }))

max_epochs = 120
train_cfg = dict(max_epochs=max_epochs, val_interval=5)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='CosineAnnealingLR', begin=0, end=max_epochs, T_max=max_epochs, by_epoch=True, eta_min=0),
]
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=5, max_keep_ckpts=3))
auto_scale_lr = dict(enable=False, base_batch_size=192)
