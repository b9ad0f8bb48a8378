# SSDLite with an EMOv2 backbone: the official recipe (EMOv2 repo
# `downstreams/det/configs/ssd/ssdlite_emo2_xM_8gpu_2lr_coco.py`, mmdet 3.3). Model, anchors, pipeline and
# RepeatDataset x5 as for EMO v1 (./ssdlite_emo.py). Differences:
#   backbone  emo_mm.EMOv2, window 10 for every size, out_indices (3, 4), frozen_stages -1, norm_eval True
#             (official sync_bn False)
#   optimizer AdamW lr 2.4e-3 (= 2e-4 x 6 x 2, "2lr"), betas (0.9, 0.999), wd 0.05, no decay on 'norm',
#             grad clip max_norm 0.1 (L2)
#   schedule  linear warm-up 500 iters from 1e-5x, constant lr to epoch 60, cosine (by epoch) to 0 over
#             epochs 60-120; 120 epochs x RepeatDataset 5; val every 5 epochs, checkpoint every epoch
#   batch     24 per GPU x 8 GPUs = 192 (auto_scale_lr base_batch_size 192), 12 workers per GPU
_base_ = './ssdlite_emo.py'

model = dict(
    backbone=dict(type='emo_mm.EMOv2', window_size=10),
    neck=dict(in_channels=(80, 180), out_channels=(80, 180, 512, 256, 256, 128)),
    bbox_head=dict(in_channels=(80, 180, 512, 256, 256, 128)))

train_dataloader = dict(num_workers=12)

optim_wrapper = dict(optimizer=dict(lr=2.4e-3), clip_grad=dict(max_norm=0.1, norm_type=2))

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-5, by_epoch=False, begin=0, end=500),
    dict(type='CosineAnnealingLR', begin=60, end=120, T_max=60, by_epoch=True, eta_min=0),
]
# the official EMOv2 runs checkpoint every epoch (validation stays every 5); max_keep_ckpts 3 bounds the disk
default_hooks = dict(checkpoint=dict(interval=1))
