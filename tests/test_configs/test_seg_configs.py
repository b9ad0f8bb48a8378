"""Segmentation configs (configs/seg): build, train, evaluate, load weights, complexity, inference sizes.

The trained DeepLabv3-EMO-1M evaluated by ``tools/test.py --mini`` is tests/test_learning/test_memorisation.py's memorisation
run (shared, trained once per session).
"""
import glob
import math
import os.path as osp
import re

import pytest
import torch

from tests.utils import (ROOT, official_weights, random_official_state_dict, run_length, run_tool, shrink_seg,
                         tool_exit_message)

# DeepLabv3 and PSPNet (EMO, EMOv2 incl. 20M); SegFormer head / Semantic FPN: tests/test_configs/test_emov2_family_configs.py
SEG_CONFIGS = sorted(osp.relpath(p, ROOT) for p in glob.glob(str(ROOT / 'configs' / 'seg' / '*.py'))
                     if osp.basename(p).startswith(('deeplabv3', 'pspnet')))
ADE_ROOT = 'data/ade/ADEChallengeData2016'

# Published Params (M) / FLOPs (G) at 512x512 (the EMO / EMOv2 papers' ADE20K tables; also in configs/seg/metafile.yml).
PUBLISHED = {
    'deeplabv3_emo_1m': (5.6, 2.4), 'deeplabv3_emo_2m': (6.9, 3.5), 'deeplabv3_emo_5m': (10.3, 5.8),
    'pspnet_emo_1m': (4.3, 2.1), 'pspnet_emo_2m': (5.5, 3.1), 'pspnet_emo_5m': (8.5, 5.3),
    'deeplabv3_emov2_1m': (5.6, 3.3), 'deeplabv3_emov2_2m': (6.6, 5.0), 'deeplabv3_emov2_5m': (9.9, 9.1),
    'pspnet_emov2_1m': (4.2, 2.9), 'pspnet_emov2_2m': (5.2, 4.6), 'pspnet_emov2_5m': (8.1, 8.6),
    'deeplabv3_emov2_20m': (26.0, 31.6), 'pspnet_emov2_20m': (23.6, 30.9),
}

# The trained DeepLabv3-EMO-1M of these tests is tests/test_learning/test_memorisation.py's fit (trained once per session): from
# scratch, 120 iterations on the first 8 mini ADE20K training images (seed 0). Measured on the 20 held-out mini
# val images: mIoU 57.4 (aAcc 91.6); an untrained model scores 0.0-0.4 (docs/learning_evidence.md).
HELD_OUT_MIOU_MIN = 20.0
SEG_FIT = 'deeplabv3_emo_1m'
# tools/test.py on the fit's own 8 images (its validation set)
ON_FITTED_IMAGES = ['test_dataloader.dataset.indices=8',
                    'test_dataloader.dataset.data_prefix.img_path=images/training',
                    'test_dataloader.dataset.data_prefix.seg_map_path=annotations/training']


def _name(cfg_path):
    return osp.splitext(osp.basename(cfg_path))[0]


def _load_cfg(path):
    from mmengine.config import Config
    return Config.fromfile(str(ROOT / path))


def _build_segmentor(cfg):
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    return MODELS.build(cfg.model)


def test_configs_parse_with_official_settings():
    assert sorted(_name(p) for p in SEG_CONFIGS) == sorted(PUBLISHED)
    for path in SEG_CONFIGS:
        cfg, name = _load_cfg(path), _name(path)
        v2 = '_emov2_' in name
        bb = cfg.model.backbone
        assert bb.type == ('emo_mm.EMOv2' if v2 else 'emo_mm.EMO')
        assert tuple(bb.out_indices) == (1, 2, 3, 4) and bb.frozen_stages == -1 and bb.norm_eval is False
        assert bb.window_size == (10 if v2 else 16 if name.endswith('5m') else 7)
        size = name.rsplit('_', 1)[1]
        assert bb.init_cfg == dict(type='Pretrained', prefix='backbone.',
                                   checkpoint=official_weights('emov2' if v2 else 'emo', size))
        assert cfg.model.pretrained is None
        dec, aux = cfg.model.decode_head, cfg.model.auxiliary_head
        assert dec.type == ('ASPPHead' if name.startswith('deeplabv3') else 'PSPHead')
        assert (dec.in_index, dec.channels, dec.num_classes) == (3, 256, 150)
        assert (aux.type, aux.in_index, aux.channels, aux.num_classes) == ('FCNHead', 2, 256, 150)
        assert aux.loss_decode.loss_weight == 0.4
        assert cfg.model.test_cfg.mode == 'whole'
        opt = cfg.optim_wrapper
        assert opt.optimizer.type == 'AdamW' and opt.optimizer.lr == 1.2e-4
        assert opt.optimizer.weight_decay == (0.05 if v2 else 0.01)
        assert opt.paramwise_cfg.custom_keys['norm'] == dict(decay_mult=0.)
        assert (opt.get('clip_grad') or {}).get('max_norm') == (0.1 if v2 else None)
        assert cfg.train_cfg.max_iters == 80000 and cfg.train_cfg.val_interval == 8000
        assert cfg.train_dataloader.batch_size == (8 if v2 else 4)
        sched = [s.type for s in cfg.param_scheduler]
        assert sched == (['LinearLR', 'CosineAnnealingLR'] if v2 else ['PolyLR'])
        assert cfg.train_dataloader.dataset.data_root == ADE_ROOT and cfg.default_scope == 'mmseg'


# One size per family (the sizes differ only in widths / depths: tests/test_models covers every size's forward,
# test_complexity_matches_published builds every config, tests/test_deploy exports and runs every one);
# DeepLabv3-EMO-1M trains through tools/train.py in tests/test_learning.
ONE_ITERATION = ['configs/seg/deeplabv3_emo_5m.py', 'configs/seg/deeplabv3_emov2_2m.py', 'configs/seg/pspnet_emo_1m.py',
                 'configs/seg/pspnet_emov2_5m.py']


def test_one_iteration_configs_cover_every_family():
    assert set(ONE_ITERATION) <= set(SEG_CONFIGS)
    assert {_name(p).rsplit('_', 1)[0] for p in ONE_ITERATION} == {_name(p).rsplit('_', 1)[0] for p in SEG_CONFIGS}


@pytest.mark.parametrize('path', ONE_ITERATION)
def test_config_trains_one_iteration_and_evaluates(path, mini_data, tmp_path):
    """Through the --mini override: 1 iteration (batch 2), then mIoU on one val image."""
    from mmengine.runner import Runner

    from emo_mm.datasets.mini import apply_mini
    cfg = _load_cfg(path)
    apply_mini(cfg, 'mmseg', iters=1)
    shrink_seg(cfg)
    cfg.train_dataloader.batch_size = 2  # BN in the 1x1 pooling branches needs > 1 sample
    cfg.val_dataloader.dataset.indices = 1
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=-1, save_last=False)
    cfg.log_level = 'WARNING'
    cfg.work_dir = str(tmp_path)
    runner = Runner.from_cfg(cfg)
    runner.train()
    hub = runner.message_hub
    assert math.isfinite(float(hub.get_scalar('train/loss').current()))
    for key in ('val/mIoU', 'val/aAcc', 'val/mAcc'):
        assert 0 <= float(hub.get_scalar(key).current()) <= 100


@pytest.mark.parametrize('family', ['emo', 'emov2'])
def test_converted_official_checkpoint_loads_into_segmentor(family, tmp_path):
    """Official layout -> tools' converter -> init_cfg Pretrained(prefix='backbone.'): every backbone tensor."""
    from emo_mm.models.pretrained import convert_official
    from mmengine.logging import MMLogger
    for size in ('1m', '5m'):
        arch = f'{family}-{size}'
        official = random_official_state_dict(arch)
        src, dst = tmp_path / f'{arch}_official.pth', tmp_path / f'{arch}_in1k.pth'
        torch.save({'net_E': official}, src)  # the official files wrap the EMA weights like this
        convert_official(str(src), str(dst), arch)
        cfg = _load_cfg(f'configs/seg/pspnet_{family}_{size}.py')
        cfg.model.backbone.init_cfg.checkpoint = str(dst)
        MMLogger.get_instance('test_seg_ckpt')
        model = _build_segmentor(cfg)
        model.init_weights()
        got = model.backbone.state_dict()
        expected = {k: v for k, v in official.items() if not k.startswith(('head.', 'norm.'))}
        assert sorted(got) == sorted(expected), 'backbone keys differ from the official layout'
        for key, value in expected.items():
            assert torch.equal(got[key], value), f'{arch}: {key} not loaded'


@pytest.mark.parametrize('path', SEG_CONFIGS)
def test_complexity_matches_published(path):
    """tools/analysis_tools/get_flops.py counting at 512x512 vs the papers' ADE20K tables (README: the conventions and the two v1-5M FLOPs).

    The published numbers are the counters' output cut (not rounded) to one decimal: published <= ours <
    published + 0.1. EMO v1 (mmseg 0.28 / mmcv counter) counted the auxiliary FCN head's parameters, EMOv2
    (mmseg 1.x get_flops) removed it first. FLOPs never include the auxiliary head.
    """
    from emo_mm.analysis.complexity import get_complexity
    name = _name(path)
    v2 = '_emov2_' in name
    pub_params, pub_flops = PUBLISHED[name]
    res = get_complexity(str(ROOT / path), (512, 512), no_aux_head=v2)
    params, flops = res['params'] / 1e6, res['flops'] / 1e9
    assert pub_params <= params < pub_params + 0.1, (name, params, pub_params)
    if name in ('deeplabv3_emo_5m', 'pspnet_emo_5m'):
        # published = ours without the attention matmuls (the mmcv 1.x counter cannot see torch.matmul);
        # window 16 makes them 0.75 G here (1M/2M, window 7: 0.08/0.13 G, inside the 5%).
        assert flops / pub_flops - 1 > 0.05
        flops -= res['by_operator']['matmul'] / 1e9
    assert pub_flops <= flops < pub_flops + 0.1, (name, flops, pub_flops)
    assert abs(flops / pub_flops - 1) <= 0.05


def _img_metas(h, w):
    return dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), scale_factor=(1., 1.), flip=False)


@pytest.mark.parametrize('name', ['deeplabv3_emo_1m', 'deeplabv3_emo_5m', 'pspnet_emov2_1m'])
def test_whole_and_slide_inference_on_awkward_sizes(name):
    """Sizes that are multiples of neither the window (7 / 16 / 10) nor 32, smaller and larger than 512."""
    from mmengine.config import ConfigDict
    from mmseg.structures import SegDataSample
    cfg = _load_cfg(f'configs/seg/{name}.py')
    cfg.model.backbone.init_cfg = None
    model = _build_segmentor(cfg).eval()
    torch.manual_seed(0)
    for h, w in ((333, 487), (547, 613)):
        data = dict(inputs=[torch.randint(0, 256, (3, h, w), dtype=torch.uint8)],
                    data_samples=[SegDataSample(metainfo=_img_metas(h, w))])
        preds = {}
        for mode in ('whole', 'slide'):
            model.test_cfg = ConfigDict(mode=mode, crop_size=(512, 512), stride=(341, 341))
            with torch.no_grad():
                out = model.test_step(data)[0]
            assert tuple(out.pred_sem_seg.data.shape) == (1, h, w), (mode, h, w)
            assert tuple(out.seg_logits.data.shape) == (150, h, w)
            assert torch.isfinite(out.seg_logits.data).all()
            preds[mode] = out.seg_logits.data
        if h < 512 and w < 512:  # one window covering the whole image: slide == whole
            torch.testing.assert_close(preds['slide'], preds['whole'], rtol=1e-4, atol=1e-4)


def test_train_without_ade20k_says_what_is_missing(monkeypatch):
    if osp.isdir(ROOT / ADE_ROOT):
        pytest.skip(f'{ADE_ROOT} exists here')
    message = tool_exit_message(monkeypatch, 'tools/train.py', 'configs/seg/deeplabv3_emo_1m.py')
    assert 'ADE20K not found' in message and ADE_ROOT in message
    assert '--mini' in message  # points at the embedded mini set


@pytest.fixture(scope='module')
def fitted(learning_runs):
    """(final validation mIoU, work dir) of DeepLabv3-EMO-1M fitted by the memorisation run of tests/test_learning."""
    return learning_runs(SEG_FIT, 'fit')


def _tools_test_miou(work_dir, name, *options):
    """mIoU printed by tools/test.py --mini on the fitted checkpoint, at the fit's input size (256-pixel short
    side instead of 512)."""
    from mmengine.config import Config

    from emo_mm.testing import step_key
    ckpt = osp.join(work_dir, f"iter_{run_length(SEG_FIT, 'fit')}.pth")
    assert osp.isfile(ckpt)
    config = 'configs/seg/deeplabv3_emo_1m.py'
    resize = step_key(Config.fromfile(str(ROOT / config)), 'test_dataloader.dataset.pipeline', 'Resize')
    proc = run_tool('tools/test.py', config, ckpt, '--mini', '--work-dir', osp.join(work_dir, name), '--cfg-options',
                    'model.data_preprocessor.size=(256,256)', f'{resize}.scale=(1024,256)', *options, timeout=600)
    found = re.findall(r'mIoU: (\d+\.\d+)', proc.stdout + proc.stderr)
    assert found, (proc.stdout + proc.stderr)[-3000:]
    return float(found[-1])


def test_trained_model_segments_held_out_images(fitted):
    """tools/test.py --mini on the mini val images the model never saw: far above an untrained model."""
    miou = _tools_test_miou(fitted[1], 'test_held_out')
    assert miou >= HELD_OUT_MIOU_MIN, miou


def test_tools_test_mini_reports_miou(fitted):
    train_miou, work_dir = fitted
    # same weights, same images, same pipeline: the test run reproduces the last validation
    miou = _tools_test_miou(work_dir, 'test_fitted', *ON_FITTED_IMAGES)
    assert abs(miou - train_miou) < 0.01, (miou, train_miou)
