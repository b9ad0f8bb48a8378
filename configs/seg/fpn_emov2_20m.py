# Semantic FPN + EMOv2-20M, ADE20K 512x512, 160k iterations (published mIoU 46.8, spec 5.4 note; aAcc, mAcc,
# params and FLOPs not given). The recipe is INFERRED (the spec has no Semantic FPN config): mmseg's stock
# fpn_r50 model (./_base_/models/fpn_emov2.py) and the EMOv2 seg recipe of spec 4.6 stretched to
# 160k (./_base_/ade20k_emov2_160k.py): AdamW lr 1.2e-4, wd 0.05, no decay on norms, clip_grad max_norm 0.1;
# LinearLR warm-up (x1e-5) 500 iterations, constant to 80k, cosine 80k-160k (by iteration); mIoU + checkpoint
# every 16000; batch 8 per GPU x 4 GPUs = 32.
# Backbone: window_size 10, out_indices (1, 2, 3, 4), frozen_stages -1, norm_eval False;
# FPN neck over C1..C4 (256 channels, 4 outputs) + FPNHead (128 channels).
# Test: mode 'whole' at short side 512 (slide works as for DeepLabv3, see configs/seg/README.md).
# No EMOv2-20M ImageNet weights were released (spec 7): checkpoints/emov2_20m_in1k.pth must come from your own
# ImageNet run of EMOv2-20M (converted with tools/convert_official.py --arch emov2-20m), or train from scratch with
# --cfg-options model.backbone.init_cfg=None
_base_ = ['./_base_/models/fpn_emov2.py', './_base_/ade20k_emov2_160k.py']

model = dict(
    backbone=dict(arch='20m', window_size=10, init_cfg=dict(checkpoint='checkpoints/emov2_20m_in1k.pth')),
    neck=dict(in_channels=[64, 128, 320, 448]))
