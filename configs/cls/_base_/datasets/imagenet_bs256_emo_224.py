# ImageNet-1k at 224, the EMO / EMOv2 (timm-style) augmentation:
#   RandomResizedCrop 224 (scale 0.08-1, ratio 3/4-4/3) with random bilinear/bicubic interpolation, flip 0.5,
#   RandAugment rand-m9-mstd0.5-inc1 (= mmpretrain 'timm_increasing', 2 ops, magnitude 9 of 10, std 0.5),
#   no mixup / cutmix, no random erasing. Test: short side 256 bicubic + center crop 224 (crop_pct 0.875).
#   Colour jitter 0.4 is in the official arguments but timm's create_transform drops colour jitter whenever
#   an auto-augment policy is given, so it is not applied here either.
# Data: mmpretrain's ImageNet layout, data/imagenet/{train,val}/ + meta/{train,val}.txt.
dataset_type = 'ImageNet'
data_root = 'data/imagenet'
data_preprocessor = dict(
    num_classes=1000,
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True)
bgr_mean = data_preprocessor['mean'][::-1]

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='RandomChoice',
        transforms=[
            [dict(type='RandomResizedCrop', scale=224, backend='pillow', interpolation=interp)]
            for interp in ('bilinear', 'bicubic')
        ]),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        type='RandAugment',
        policies='timm_increasing',
        num_policies=2,
        total_level=10,
        magnitude_level=9,
        magnitude_std=0.5,
        hparams=dict(pad_val=[round(x) for x in bgr_mean], interpolation='bicubic')),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=256,
    num_workers=8,
    persistent_workers=True,
    dataset=dict(type=dataset_type, data_root=data_root, split='train', pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=128,
    num_workers=8,
    persistent_workers=True,
    dataset=dict(type=dataset_type, data_root=data_root, split='val', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
