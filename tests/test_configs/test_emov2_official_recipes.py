"""The EMOv2 SegFormer-head, Semantic FPN and Mask R-CNN configs against the official recipes.

Expected values are those of the official EMOv2 configs (``downstreams/seg/configs/{segformer,sem_fpn}/``,
``downstreams/det/configs/mask_rcnn/``) and of the ``paramwise_options`` lines of their training logs
(``resources/{Seg,Det}/*.log``), written out here. The per-parameter multipliers are resolved by mmengine's
``DefaultOptimWrapperConstructor`` on the built models, so a custom_keys entry that reaches the wrong
parameters (mmengine matches keys as substrings of the full name, longest key first) fails here.
"""
import pytest
from mmengine.config import Config

from tests.utils import ROOT, official_weights

SIZES = ('1m', '2m', '5m', '20m')
# C1..C4, depths and drop-path rate of each EMOv2 size (the official configs' embed_dims / depths / drop_path)
CHANNELS = {'1m': [32, 48, 80, 180], '2m': [32, 48, 120, 200], '5m': [48, 72, 160, 288], '20m': [64, 128, 320, 448]}
DEPTHS = {'1m': (2, 2, 8, 3), '2m': (3, 3, 9, 3), '5m': (3, 3, 9, 3), '20m': (3, 3, 13, 3)}
DROP_PATH = {'1m': 0.04036, '2m': 0.05, '5m': 0.05, '20m': 0.1}
SEGFORMER_CHANNELS = {'1m': 180, '2m': 288, '5m': 288, '20m': 288}

# Tensors the logs list with a custom multiplier (paramwise_options), per size
LOG_NORM_DECAY0_SEG = {'1m': 64, '2m': 76, '5m': 76, '20m': 92}
LOG_NORM_DECAY0_MASK_RCNN = {'1m': 52, '2m': 60, '5m': 60, '20m': 76}  # stem and stage 1 frozen, not listed
LOG_SEGFORMER_HEAD = {'conv_seg.weight', 'conv_seg.bias', 'fusion_conv.conv.weight', 'fusion_conv.bn.weight',
                      'fusion_conv.bn.bias'} | {f'convs.{i}.{p}' for i in range(4)
                                                for p in ('conv.weight', 'bn.weight', 'bn.bias')}
LOG_FPN_HEAD = {'conv_seg.weight', 'conv_seg.bias'} | {
    f'scale_heads.{i}.{p}' for i in ('0.0', '1.0', '2.0', '2.2', '3.0', '3.2', '3.4')
    for p in ('conv.weight', 'bn.weight', 'bn.bias')}

SEG_LR, MASK_RCNN_LR, WD = 1.2e-4, 2e-4, 0.05


def _cfg(path):
    return Config.fromfile(str(ROOT / path))


def _seg_path(head, size):
    return f'configs/seg/{head}_emov2_{size}.py'


def _mask_path(size):
    return f'configs/det/mask_rcnn_emov2_{size}.py'


def _plain(node):
    """A config dict as plain dicts / lists, without the ``_scope_`` that ``mmseg::`` / ``mmdet::`` bases add."""
    if hasattr(node, 'items'):
        return {k: _plain(v) for k, v in node.items() if k != '_scope_'}
    if isinstance(node, (list, tuple)):
        return type(node)(_plain(v) for v in node)
    return node


def _steps(pipeline):
    return [t['type'] for t in pipeline]


def _check_backbone(bb, size, det):
    assert (bb.type, bb.arch, bb.window_size, tuple(bb.out_indices)) == ('emo_mm.EMOv2', size, 10, (1, 2, 3, 4))
    assert (bb.frozen_stages, bb.norm_eval) == ((1, True) if det else (-1, False))
    weights = official_weights('emov2', size)
    assert _plain(bb.init_cfg) == dict(type='Pretrained', checkpoint=weights, prefix='backbone.')


# ------------------------------------------------------------------------------------------- SegFormer / FPN
@pytest.mark.parametrize('size', SIZES)
@pytest.mark.parametrize('head', ['segformer', 'fpn'])
def test_seg_config_values(head, size):
    cfg = _cfg(_seg_path(head, size))
    model = cfg.model
    _check_backbone(model.backbone, size, det=False)
    assert model.type == 'EncoderDecoder' and model.pretrained is None and model.get('auxiliary_head') is None
    pre = model.data_preprocessor
    assert (tuple(pre.size), pre.pad_val, pre.seg_pad_val, pre.bgr_to_rgb) == ((512, 512), 0, 255, True)
    assert (list(pre.mean), list(pre.std)) == ([123.675, 116.28, 103.53], [58.395, 57.12, 57.375])
    dec = model.decode_head
    if head == 'segformer':
        assert model.get('neck') is None
        assert (dec.type, list(dec.in_channels), dec.channels) == ('SegformerHead', CHANNELS[size],
                                                                    SEGFORMER_CHANNELS[size])
    else:
        neck = model.neck
        assert (neck.type, list(neck.in_channels), neck.out_channels, neck.num_outs) == \
            ('FPN', CHANNELS[size], 256, 4)
        assert (dec.type, list(dec.in_channels), list(dec.feature_strides), dec.channels) == \
            ('FPNHead', [256] * 4, [4, 8, 16, 32], 128)
    assert list(dec.in_index) == [0, 1, 2, 3]
    assert (dec.dropout_ratio, _plain(dec.norm_cfg), dec.align_corners, dec.num_classes) == \
        (0.1, dict(type='SyncBN', requires_grad=True), False, 150)
    assert _plain(dec.loss_decode) == dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)
    assert model.test_cfg.mode == 'whole'

    opt = cfg.optim_wrapper
    assert opt.type == 'OptimWrapper' and opt.get('clip_grad') is None  # no clipping in the official recipe
    assert _plain(opt.optimizer) == dict(type='AdamW', lr=SEG_LR, betas=(0.9, 0.999), weight_decay=WD)
    assert _plain(opt.paramwise_cfg.custom_keys) == {'pos_block': dict(decay_mult=0.), 'norm': dict(decay_mult=0.),
                                             'head': dict(lr_mult=10.)}
    assert _plain(cfg.param_scheduler) == [
        dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
        dict(type='CosineAnnealingLR', T_max=80000, eta_min=0., by_epoch=False, begin=80000, end=160000)]
    assert _plain(cfg.train_cfg) == dict(type='IterBasedTrainLoop', max_iters=160000, val_interval=16000)
    ckpt = cfg.default_hooks.checkpoint
    assert (ckpt.by_epoch, ckpt.interval) == (False, 16000)
    assert cfg.env_cfg.cudnn_benchmark is True

    train, val = cfg.train_dataloader, cfg.val_dataloader
    assert (train.batch_size, train.sampler.type, train.sampler.shuffle) == (8, 'InfiniteSampler', True)
    assert cfg.auto_scale_lr.base_batch_size == 8 * 4  # 8 per GPU x 4 GPUs, the lr's batch
    assert (val.batch_size, cfg.test_dataloader.batch_size) == (1, 1)
    ds = train.dataset
    assert (ds.type, ds.data_root, _plain(ds.data_prefix)) == (
        'ADE20KDataset', 'data/ade/ADEChallengeData2016',
        dict(img_path='images/training', seg_map_path='annotations/training'))
    assert _plain(val.dataset.data_prefix) == dict(img_path='images/validation', seg_map_path='annotations/validation')
    p = ds.pipeline
    assert _steps(p) == ['LoadImageFromFile', 'LoadAnnotations', 'RandomResize', 'RandomCrop', 'RandomFlip',
                         'PhotoMetricDistortion', 'PackSegInputs']
    assert p[1]['reduce_zero_label'] is True
    assert (p[2]['scale'], p[2]['ratio_range'], p[2]['keep_ratio']) == ((2048, 512), (0.5, 2.0), True)
    assert (p[3]['crop_size'], p[3]['cat_max_ratio'], p[4]['prob']) == ((512, 512), 0.75, 0.5)
    assert {k: v for k, v in p[5].items() if k != 'type'} in ({}, dict(
        brightness_delta=32, contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5), hue_delta=18))
    t = val.dataset.pipeline
    assert _steps(t) == ['LoadImageFromFile', 'Resize', 'LoadAnnotations', 'PackSegInputs']
    assert (t[1]['scale'], t[1]['keep_ratio'], t[2]['reduce_zero_label']) == ((2048, 512), True, True)
    assert _plain(cfg.val_evaluator) == dict(type='IoUMetric', iou_metrics=['mIoU'])


# ------------------------------------------------------------------------------------------------ Mask R-CNN
@pytest.mark.parametrize('size', SIZES)
def test_mask_rcnn_config_values(size):
    cfg = _cfg(_mask_path(size))
    model = cfg.model
    _check_backbone(model.backbone, size, det=True)
    assert model.type == 'MaskRCNN' and model.data_preprocessor.pad_size_divisor == 32
    assert model.data_preprocessor.pad_mask is True and model.data_preprocessor.bgr_to_rgb is True
    neck = model.neck
    assert (neck.type, list(neck.in_channels), neck.out_channels, neck.num_outs) == \
        ('FPN', CHANNELS[size], 256, 5)
    assert neck.get('start_level', 0) == 0 and not neck.get('add_extra_convs', False)
    rpn, roi = model.rpn_head, model.roi_head
    assert (rpn.type, rpn.anchor_generator.scales, rpn.anchor_generator.ratios, rpn.anchor_generator.strides) == \
        ('RPNHead', [8], [0.5, 1.0, 2.0], [4, 8, 16, 32, 64])
    assert (roi.bbox_head.type, roi.bbox_head.fc_out_channels, roi.bbox_head.num_classes) == \
        ('Shared2FCBBoxHead', 1024, 80)
    assert (roi.mask_head.type, roi.mask_head.num_convs, roi.mask_head.num_classes) == ('FCNMaskHead', 4, 80)
    assert (roi.bbox_roi_extractor.roi_layer.output_size, roi.mask_roi_extractor.roi_layer.output_size) == (7, 14)
    tr, te = model.train_cfg, model.test_cfg
    assert (tr.rpn.sampler.num, tr.rpn_proposal.nms_pre, tr.rpn_proposal.max_per_img) == (256, 2000, 1000)
    assert (tr.rcnn.sampler.num, tr.rcnn.sampler.pos_fraction, tr.rcnn.mask_size) == (512, 0.25, 28)
    assert (te.rpn.nms_pre, te.rpn.max_per_img, te.rcnn.score_thr, te.rcnn.max_per_img, te.rcnn.mask_thr_binary) \
        == (1000, 1000, 0.05, 100, 0.5)

    opt = cfg.optim_wrapper
    assert opt.type == 'OptimWrapper' and _plain(opt.clip_grad) == dict(max_norm=0.1, norm_type=2)
    assert _plain(opt.optimizer) == dict(type='AdamW', lr=MASK_RCNN_LR, betas=(0.9, 0.999), weight_decay=WD)
    assert _plain(opt.paramwise_cfg.custom_keys) == {k: dict(decay_mult=0.) for k in (
        'absolute_pos_embed', 'relative_position_bias_table', 'norm')}
    assert _plain(cfg.param_scheduler) == [
        dict(type='LinearLR', start_factor=1e-5, by_epoch=False, begin=0, end=500),
        dict(type='CosineAnnealingLR', begin=6, end=12, T_max=6, by_epoch=True, eta_min=0)]
    assert (cfg.train_cfg.max_epochs, cfg.train_cfg.val_interval) == (12, 1)

    train = cfg.train_dataloader
    assert (train.batch_size, train.batch_sampler.type) == (4, 'AspectRatioBatchSampler')
    assert _plain(cfg.auto_scale_lr) == dict(enable=False, base_batch_size=4 * 4)
    assert _plain(train.dataset.filter_cfg) == dict(filter_empty_gt=True, min_size=32)
    p = train.dataset.pipeline
    assert _steps(p) == ['LoadImageFromFile', 'LoadAnnotations', 'Resize', 'RandomFlip', 'PackDetInputs']
    assert (p[1]['with_bbox'], p[1]['with_mask'], p[2]['scale'], p[2]['keep_ratio'], p[3]['prob']) == \
        (True, True, (1333, 800), True, 0.5)
    t = cfg.test_dataloader.dataset.pipeline
    assert _steps(t) == ['LoadImageFromFile', 'Resize', 'LoadAnnotations', 'PackDetInputs']
    assert (cfg.val_dataloader.batch_size, cfg.test_dataloader.batch_size) == (1, 1)
    assert cfg.val_evaluator.type == 'CocoMetric' and list(cfg.val_evaluator.metric) == ['bbox', 'segm']


# -------------------------------------------------------------------------------- multipliers on real names
def _official_norm_names(size, first_stage=0):
    """Backbone BN / LN weights and biases as the official logs name them (stages from ``first_stage``)."""
    modules = ['backbone.stage0.0.norm', 'backbone.stage0.1.norm'] if first_stage == 0 else []
    for stage, depth in enumerate(DEPTHS[size], 1):
        if stage < first_stage:
            continue
        for block in range(depth):
            modules.append(f'backbone.stage{stage}.{block}.conv_local.norm')  # BN
            modules.append(f'backbone.stage{stage}.{block}.norm' + ('.norm' if stage >= 3 else ''))  # BN / LN2d
    return {f'{m}.{p}' for m in modules for p in ('weight', 'bias')}


def _resolved_multipliers(path):
    """{trainable parameter name: (lr, weight_decay)} as mmengine's optimizer constructor sets them."""
    from mmengine.optim import DefaultOptimWrapperConstructor

    from emo_mm.models.build import build_model
    model, _, cfg = build_model(str(ROOT / path))
    model.train()  # frozen stages are applied in train mode as well
    optim_cfg = cfg.optim_wrapper.to_dict()
    paramwise = optim_cfg.pop('paramwise_cfg')
    wrapper = DefaultOptimWrapperConstructor(optim_cfg, paramwise)(model)
    name_of = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for group in wrapper.optimizer.param_groups:
        for p in group['params']:
            out[name_of[id(p)]] = (group['lr'], group['weight_decay'])
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    return out, frozen, model


@pytest.mark.parametrize('path', [_seg_path(h, s) for h in ('segformer', 'fpn') for s in ('1m', '20m')])
def test_seg_multipliers_reach_the_logged_parameters(path):
    size = path.rsplit('_', 1)[1][:-3]
    got, frozen, model = _resolved_multipliers(path)
    assert not frozen
    # the official drop_path: the last rate of the linear ramp over all blocks
    rates = [m.drop_prob for m in model.backbone.modules() if type(m).__name__ == 'DropPath']
    assert max(rates) == pytest.approx(DROP_PATH[size])
    head = {f'decode_head.{n}' for n in (LOG_SEGFORMER_HEAD if 'segformer' in path else LOG_FPN_HEAD)}
    norms = _official_norm_names(size)
    assert len(norms) == LOG_NORM_DECAY0_SEG[size]
    lr10 = {n for n, (lr, _) in got.items() if lr == pytest.approx(10 * SEG_LR)}
    decay0 = {n for n, (_, wd) in got.items() if wd == 0}
    assert lr10 == head  # the head's BatchNorms too: 'head' wins over 'norm'
    assert all(got[n][1] == WD for n in head)
    assert decay0 == norms
    rest = set(got) - head - norms
    assert any('.ls.gamma' in n for n in rest) and any(n.startswith('neck.') for n in rest) == ('fpn' in path)
    assert all(got[n] == (pytest.approx(SEG_LR), WD) for n in rest)


@pytest.mark.parametrize('size', ['1m', '20m'])
def test_mask_rcnn_multipliers_reach_the_logged_parameters(size):
    got, frozen, _ = _resolved_multipliers(_mask_path(size))
    assert frozen == {n for n in frozen if n.startswith(('backbone.stage0.', 'backbone.stage1.'))} and frozen
    assert not set(got) & frozen  # the logs: skipped since requires_grad=False
    norms = _official_norm_names(size, first_stage=2)
    assert len(norms) == LOG_NORM_DECAY0_MASK_RCNN[size]
    assert {n for n, (_, wd) in got.items() if wd == 0} == norms
    assert all(lr == pytest.approx(MASK_RCNN_LR) for lr, _ in got.values())
    assert all(wd == WD for n, (_, wd) in got.items() if n not in norms)


def test_official_norm_names_follow_the_log_layout():
    """The name rule above reproduces names the SegFormer-1M log lists (a sample, copied from the log)."""
    names = _official_norm_names('1m')
    assert {'backbone.stage0.1.norm.bias', 'backbone.stage1.0.conv_local.norm.weight', 'backbone.stage2.1.norm.bias',
            'backbone.stage3.7.norm.norm.weight', 'backbone.stage4.2.conv_local.norm.bias'} <= names
    assert not any(n.startswith('backbone.stage4.3.') for n in names)


def test_imagenet_configs_train_from_scratch():
    """The ImageNet recipes train the backbones; only the det / seg configs start from released weights."""
    paths = sorted((ROOT / 'configs' / 'cls').glob('*.py'))
    assert paths
    for path in paths:
        model = Config.fromfile(str(path)).model
        assert model.backbone.get('init_cfg') is None and model.get('init_cfg') is None, path.name
