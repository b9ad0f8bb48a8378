# EMO / EMOv2 ImageNet schedule: AdamW (betas 0.9/0.999, eps 1e-8) lr 1.5e-3 per 512 images, weight decay
# 0.05 except norms, biases, 1-D parameters and the layer-scale `gamma` (EMOv2); grad clip 5.0 (L2 norm);
# 300 epochs, 20 linear warm-up epochs (per iteration), then cosine; EMA of the weights with decay 0.9998
# (mmengine momentum = 1 - decay), evaluated with the EMA weights.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1.5e-3 * 2048 / 512, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05),
    clip_grad=dict(max_norm=5.0, norm_type=2),
    paramwise_cfg=dict(
        norm_decay_mult=0.,
        bias_decay_mult=0.,
        flat_decay_mult=0.,
        custom_keys={'gamma': dict(decay_mult=0.)}))

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=20, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=280, eta_min=1e-6, by_epoch=True, begin=20, end=300,
         convert_to_iter_based=True),
]

train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_cfg = dict()
test_cfg = dict()

custom_hooks = [dict(type='EMAHook', momentum=2e-4, priority='ABOVE_NORMAL')]

# lr above is for the official total batch (EMO: 8 GPUs x 256 = 2048); --auto-scale-lr rescales it linearly.
auto_scale_lr = dict(base_batch_size=2048)
