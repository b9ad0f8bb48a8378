# SegFormer head + EMOv2-1M, ADE20K 512x512, 160k iterations (published mIoU 37.0, spec 5.4 note; aAcc, mAcc,
# params and FLOPs not given). The recipe is INFERRED (the spec has no SegFormer head config): mmseg's stock
# segformer_mit-b0 model (./_base_/models/segformer_emov2.py) and the EMOv2 seg recipe of spec 4.6 stretched to
# 160k (./_base_/ade20k_emov2_160k.py): AdamW lr 1.2e-4, wd 0.05, no decay on norms, clip_grad max_norm 0.1;
# LinearLR warm-up (x1e-5) 500 iterations, constant to 80k, cosine 80k-160k (by iteration); mIoU + checkpoint
# every 16000; batch 8 per GPU x 4 GPUs = 32.
# Backbone: window_size 10, out_indices (1, 2, 3, 4), frozen_stages -1, norm_eval False;
# SegformerHead over C1..C4 (in_index 0-3, 256 channels).
# Test: mode 'whole' at short side 512 (slide works as for DeepLabv3, see configs/seg/README.md).
_base_ = ['./_base_/models/segformer_emov2.py', './_base_/ade20k_emov2_160k.py']

model = dict(
    backbone=dict(arch='1m', window_size=10, init_cfg=dict(checkpoint='checkpoints/emov2_1m_in1k.pth')),
    decode_head=dict(in_channels=[32, 48, 80, 180]))
