# RetinaNet-FPN with an EMOv2 backbone: the official recipe (EMOv2 repo
# `downstreams/det/configs/retinanet/retinanet_emo2_xM_fpn_1x_coco.py`, mmdet 3.3). Model and data as for
# EMO v1 (./retinanet_emo.py) plus mmdet's stock RetinaNet TTA settings (the official config lists
# './retinanet_tta.py'; used only with `tools/test.py --tta`). Differences:
#   backbone  emo_mm.EMOv2, window 10 for every size, out_indices (1, 2, 3, 4), frozen_stages 1, norm_eval True
#             (official sync_bn False)
#   optimizer AdamW lr 2e-4, betas (0.9, 0.999), wd 0.05, no decay on 'norm', grad clip max_norm 0.1 (L2)
#   schedule  linear warm-up 500 iters from 1e-5x, constant lr to epoch 6, cosine (by epoch) to 0 over
#             epochs 6-12; val every epoch
#   batch     4 per GPU x 4 GPUs = 16 (auto_scale_lr base_batch_size 16; "lr 2e-4 for 16"), 4 workers per GPU
_base_ = ['./retinanet_emo.py', 'mmdet::retinanet/retinanet_tta.py']

model = dict(
    backbone=dict(type='emo_mm.EMOv2', window_size=10),
    neck=dict(in_channels=[32, 48, 80, 180]))

optim_wrapper = dict(clip_grad=dict(max_norm=0.1, norm_type=2))

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-5, by_epoch=False, begin=0, end=500),
    dict(type='CosineAnnealingLR', begin=6, end=12, T_max=6, by_epoch=True, eta_min=0),
]
auto_scale_lr = dict(enable=False, base_batch_size=16)
