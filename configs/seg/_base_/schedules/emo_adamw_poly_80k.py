# EMO (v1) ADE20K recipe (official mmseg 0.28 configs): AdamW lr 1.2e-4, betas (0.9, 0.999), weight decay 0.01
# (0.01 here, 0.05 in every other EMO recipe), no weight decay on norm layers, no gradient clipping, poly LR
# (power 0.9, min 0) updated every iteration, no warm-up, 80k iterations, checkpoint + mIoU every 8000 iterations.
_base_ = ['mmseg::_base_/schedules/schedule_80k.py']

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1.2e-4, betas=(0.9, 0.999), weight_decay=0.01),
    # substring match: every BN / LN (incl. conv_local.norm) and the heads' norms get no decay
    paramwise_cfg=dict(
        custom_keys={
            'norm': dict(decay_mult=0.),
            'absolute_pos_embed': dict(decay_mult=0.),
            'relative_position_bias_table': dict(decay_mult=0.),
        }))
param_scheduler = [dict(type='PolyLR', eta_min=0., power=0.9, begin=0, end=80000, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=80000, val_interval=8000)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=8000))
