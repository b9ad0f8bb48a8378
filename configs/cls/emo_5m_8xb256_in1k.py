# EMO-5M ImageNet-1k classification, 224x224 (official top-1 78.4).
# Official recipe: batch 256 per GPU x 8 GPUs = 2048, AdamW lr 1.5e-3 x 2048/512 = 6e-3, wd 0.05 (none on
# norms / biases / 1-D params / gamma), 300 epochs, 20 warm-up epochs + cosine, EMA 0.9998, RandAugment
# rand-m9-mstd0.5-inc1, random bilinear/bicubic resize, label smoothing 0.1, no mixup/cutmix/erasing,
# grad clip 5.0; test resize 256 bicubic + center crop 224. Backbone window_size 7, out_indices (4,),
# final_norm True (official classifier: LN -> mean pool -> Linear).
_base_ = [
    './_base_/models/emo.py',
    './_base_/datasets/imagenet_bs256_emo_224.py',
    './_base_/schedules/imagenet_adamw_300e_emo.py',
    'mmpretrain::_base_/default_runtime.py',
]

model = dict(
    backbone=dict(type='emo_mm.EMO', arch='5m'),
    head=dict(in_channels=288))
