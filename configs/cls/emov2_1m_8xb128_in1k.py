# EMOv2-1M ImageNet-1k classification, 224x224 (official top-1 72.3).
# Official recipe: batch 128 per GPU x 8 GPUs = 1024, AdamW lr 1.5e-3 x 1024/512 = 3e-3, wd 0.05 (none on
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
    backbone=dict(type='emo_mm.EMOv2', arch='1m'),
    head=dict(in_channels=180))

train_dataloader = dict(batch_size=128)
optim_wrapper = dict(optimizer=dict(lr=1.5e-3 * 1024 / 512))
auto_scale_lr = dict(base_batch_size=1024)
