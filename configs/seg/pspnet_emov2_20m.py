# PSPNet + EMOv2-20M, ADE20K 512x512, 80k iterations (official: EMOv2 repo
# `pspnet/pspnet_emo2_20M-80k_ade20k-512x512.py`, mmseg 1.2.2).
# Official schedule: AdamW lr 1.2e-4, wd 0.05, no decay on norms, clip_grad max_norm 0.1; LinearLR warm-up
# (x1e-5) 500 iterations, constant to 40k, cosine 40k-80k (by iteration); 80k iterations, mIoU + checkpoint
# every 8000; batch 8 per GPU x 4 GPUs = 32.
# Backbone: window_size 10, out_indices (1, 2, 3, 4), frozen_stages -1, norm_eval False; heads SyncBN.
# PSP head (pool scales 1/2/3/6) on stage 4 (C4=448), aux FCN on stage 3 (C3=320); output stride 32 (no dilation).
# Test: mode 'whole' at short side 512. Sliding window instead: --cfg-options model.test_cfg.mode=slide
#   model.test_cfg.crop_size="(512,512)" model.test_cfg.stride="(341,341)"   (see configs/seg/README.md).
# No EMOv2-20M ImageNet weights were released (spec 7): checkpoints/emov2_20m_in1k.pth must come from your own
# ImageNet run of EMOv2-20M (converted with tools/convert_official.py --arch emov2-20m), or train from scratch with
# --cfg-options model.backbone.init_cfg=None
_base_ = ['./_base_/models/pspnet_emov2.py', './_base_/ade20k_emov2_80k.py']

model = dict(
    backbone=dict(arch='20m', window_size=10, init_cfg=dict(checkpoint='checkpoints/emov2_20m_in1k.pth')),
    decode_head=dict(in_channels=448),  # C4
    auxiliary_head=dict(in_channels=320))  # C3
