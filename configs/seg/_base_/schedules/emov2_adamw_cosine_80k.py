# EMOv2 ADE20K recipe (official mmseg 1.2.2 configs): AdamW lr 1.2e-4, betas (0.9, 0.999), weight decay 0.05,
# no weight decay on norm layers, gradient clipping max_norm 0.1 (L2); LinearLR warm-up from 1e-5 x over 500
# iterations, constant LR until 40k, cosine to 0 over 40k-80k (all by iteration); 80k iterations,
# checkpoint + mIoU every 8000 iterations.
_base_ = ['mmseg::_base_/schedules/schedule_80k.py']

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1.2e-4, betas=(0.9, 0.999), weight_decay=0.05),
    clip_grad=dict(max_norm=0.1, norm_type=2),
    # substring match: every BN / LN gets no decay; the layer-scale `ls.gamma` DOES get decay (as official)
    paramwise_cfg=dict(
        custom_keys={
            'norm': dict(decay_mult=0.),
            'absolute_pos_embed': dict(decay_mult=0.),
            'relative_position_bias_table': dict(decay_mult=0.),
        }))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-5, by_epoch=False, begin=0, end=500),
    # constant LR from 500 to 40k: no scheduler in that range
    dict(type='CosineAnnealingLR', T_max=40000, eta_min=0., by_epoch=False, begin=40000, end=80000),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=80000, val_interval=8000)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=8000))
