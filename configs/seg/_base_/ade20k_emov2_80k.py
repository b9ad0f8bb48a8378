# EMOv2 ADE20K 512x512 80k recipe: stock mmseg ADE20K pipeline (RandomResize (2048, 512) x0.5-2.0,
# RandomCrop 512 cat_max_ratio 0.75, flip 0.5, PhotoMetricDistortion; test Resize (2048, 512) keep ratio),
# stock runtime, AdamW + warm-up/constant/cosine schedule, batch 8 per GPU x 4 GPUs = 32.
_base_ = [
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    './schedules/emov2_adamw_cosine_80k.py',
]

data_root = 'data/ade/ADEChallengeData2016'
train_dataloader = dict(batch_size=8, num_workers=8, dataset=dict(data_root=data_root))
val_dataloader = dict(num_workers=2, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
# mmseg's IoUMetric with iou_metrics=['mIoU'] reports aAcc, mIoU and mAcc
# lr 1.2e-4 is for a total batch of 32; `tools/train.py --auto-scale-lr` rescales it for other totals.
auto_scale_lr = dict(enable=False, base_batch_size=32)
default_scope = 'mmseg'
