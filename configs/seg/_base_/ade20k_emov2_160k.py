# EMOv2 ADE20K 512x512 160k recipe of the SegFormer-head and Semantic FPN configs: stock ADE20K pipeline, AdamW with
# the decode head at 10x lr, no gradient clipping, 1500-iteration warm-up, constant lr to 80k, cosine 80k-160k,
# batch 8 per GPU x 4 GPUs = 32.
_base_ = [
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]

train_dataloader = dict(batch_size=8, num_workers=8)
val_dataloader = dict(batch_size=1, num_workers=2)
test_dataloader = val_dataloader

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1.2e-4, betas=(0.9, 0.999), weight_decay=0.05),
    # mmengine matches these as substrings of the full parameter name, longest key first ('head' before 'norm'
    # at equal length): every decode_head.* tensor, its BatchNorms included, trains at 10x lr with weight decay;
    # the backbone's norms get none; 'pos_block' (a MiT name) matches nothing in EMOv2.
    paramwise_cfg=dict(
        custom_keys={
            'pos_block': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.),
            'head': dict(lr_mult=10.),
        }))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    # constant lr from 1500 to 80k: no scheduler in that range
    dict(type='CosineAnnealingLR', T_max=80000, eta_min=0., by_epoch=False, begin=80000, end=160000),
]
# the official config sets no auto_scale_lr; lr 1.2e-4 is for a total batch of 32 (`tools/train.py --auto-scale-lr`)
auto_scale_lr = dict(enable=False, base_batch_size=32)
