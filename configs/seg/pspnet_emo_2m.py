# PSPNet + EMO-2M, ADE20K 512x512, 80k iterations (official: EMO repo `pspnet_emo/`, mmseg 0.28).
# Official schedule: AdamW lr 1.2e-4, wd 0.01, no decay on norms, no grad clip; poly (power 0.9, min 0) by
# iteration, no warm-up; 80k iterations, mIoU + checkpoint every 8000; batch 4 per GPU x 8 GPUs = 32.
# Backbone: window_size 7, out_indices (1, 2, 3, 4), frozen_stages -1, norm_eval False, SyncBN in backbone and heads.
# PSP head (pool scales 1/2/3/6) on stage 4 (C4=200), aux FCN on stage 3 (C3=120); output stride 32 (no dilation).
# Test: mode 'whole' at short side 512. Sliding window instead: --cfg-options model.test_cfg.mode=slide
#   model.test_cfg.crop_size="(512,512)" model.test_cfg.stride="(341,341)"   (see configs/seg/README.md).
_base_ = ['./_base_/models/pspnet_emo.py', './_base_/ade20k_emo_80k.py']

model = dict(
    backbone=dict(
        arch='2m',
        window_size=7,
        init_cfg=dict(checkpoint='checkpoints/emo_2m_in1k.pth')),
    decode_head=dict(in_channels=200),
    auxiliary_head=dict(in_channels=120))
