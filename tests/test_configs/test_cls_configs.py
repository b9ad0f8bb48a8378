"""Classification configs (configs/cls): build, official logits from a converted checkpoint, mini training."""
import glob
import os.path as osp

import pytest
import torch

from tests.utils import ROOT

CLS_CONFIGS = sorted(osp.relpath(p, ROOT) for p in glob.glob(str(ROOT / 'configs' / 'cls' / '*.py')))
C4 = {'emo_1m': 168, 'emo_2m': 200, 'emo_5m': 288, 'emo_6m': 320, 'emov2_1m': 180, 'emov2_2m': 200, 'emov2_5m': 288}


def _load_cfg(path):
    from mmengine.config import Config
    return Config.fromfile(str(ROOT / path))


def _build(cfg):
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    return MODELS.build(cfg.model)


def _variant(path):
    return '_'.join(osp.basename(path).split('_')[:2])  # emo_1m_8xb256_in1k.py -> emo_1m


def test_names_and_recipe():
    assert [osp.basename(p) for p in CLS_CONFIGS] == [
        'emo_1m_8xb256_in1k.py', 'emo_2m_8xb256_in1k.py', 'emo_5m_8xb256_in1k.py', 'emo_6m_8xb256_in1k.py',
        'emov2_1m_8xb128_in1k.py', 'emov2_2m_8xb128_in1k.py', 'emov2_5m_8xb128_in1k.py']
    for path in CLS_CONFIGS:
        cfg = _load_cfg(path)
        v2 = osp.basename(path).startswith('emov2')
        total = 1024 if v2 else 2048
        assert cfg.default_scope == 'mmpretrain'
        assert cfg.train_dataloader.batch_size * 8 == total and cfg.auto_scale_lr.base_batch_size == total
        opt = cfg.optim_wrapper
        assert opt.optimizer.type == 'AdamW' and opt.optimizer.weight_decay == 0.05
        assert abs(opt.optimizer.lr - 1.5e-3 * total / 512) < 1e-12
        assert opt.clip_grad.max_norm == 5.0
        pw = opt.paramwise_cfg
        assert pw.norm_decay_mult == pw.bias_decay_mult == pw.flat_decay_mult == 0
        assert pw.custom_keys['gamma'] == dict(decay_mult=0.)
        assert cfg.train_cfg.max_epochs == 300
        assert [s.type for s in cfg.param_scheduler] == ['LinearLR', 'CosineAnnealingLR']
        assert cfg.param_scheduler[0].end == 20
        ema = [h for h in cfg.custom_hooks if h.type == 'EMAHook']
        assert len(ema) == 1 and abs(ema[0].momentum - (1 - 0.9998)) < 1e-12
        head = cfg.model.head
        assert head.loss == dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original', loss_weight=1.0)
        types = [t.type for t in cfg.train_dataloader.dataset.pipeline]
        assert 'RandAugment' in types and 'RandomErasing' not in types and 'Mixup' not in str(cfg.model)
        ra = cfg.train_dataloader.dataset.pipeline[types.index('RandAugment')]
        assert (ra.policies, ra.magnitude_level, ra.magnitude_std, ra.num_policies) == ('timm_increasing', 9, 0.5, 2)
        test = cfg.val_dataloader.dataset.pipeline
        assert test[1].scale == 256 and test[1].interpolation == 'bicubic' and test[2].crop_size == 224
        assert cfg.train_dataloader.dataset.data_root == 'data/imagenet'


@pytest.mark.parametrize('path', CLS_CONFIGS)
def test_config_builds_and_classifies(path):
    cfg = _load_cfg(path)
    bb = cfg.model.backbone
    assert bb.final_norm is True and tuple(bb.out_indices) == (4, ) and bb.window_size == 7
    assert cfg.model.head.in_channels == C4[_variant(path)]
    model = _build(cfg).eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 224, 224), mode='tensor')
    assert logits.shape == (1, 1000)


@pytest.mark.parametrize('variant', ['emo_1m', 'emov2_1m'])
def test_converted_checkpoint_gives_official_logits(variant, tmp_path):
    """Official flat layout -> converter -> ImageClassifier: no missing/unexpected key; logits = official head
    on LN(stage 4) -> mean pool (the official classifier), computed here by hand from the raw tensors."""
    from mmengine.runner import load_checkpoint

    from emo_mm.models.pretrained import build_backbone, convert_official
    arch = variant.replace('_', '-')
    gen = torch.Generator().manual_seed(0)
    bb = build_backbone(arch, final_norm=True)
    official = {k: (torch.randn(v.shape, generator=gen) * 0.1 if v.is_floating_point() else v.clone())
                for k, v in bb.state_dict().items()}
    official = {k: (v.abs() + 0.5 if k.endswith('running_var') else v) for k, v in official.items()}
    official['head.weight'] = torch.randn(1000, bb.channels[-1], generator=gen)
    official['head.bias'] = torch.randn(1000, generator=gen)
    src, dst = tmp_path / 'official.pth', tmp_path / 'converted.pth'
    torch.save(official, src)
    convert_official(str(src), str(dst), arch)

    path = next(p for p in CLS_CONFIGS if _variant(p) == variant)
    model = _build(_load_cfg(path)).eval()
    ckpt = load_checkpoint(model, str(dst), map_location='cpu', strict=True)
    assert set(ckpt['state_dict']) == set(model.state_dict())

    x = torch.randn(2, 3, 224, 224, generator=gen)
    with torch.no_grad():
        logits = model(x, mode='tensor')
        # official: stages -> norm (LayerNorm over channels, eps 1e-6) -> mean over H, W -> head
        bb.load_state_dict({k: v for k, v in official.items() if not k.startswith('head.')})
        bb.eval()
        feat = bb(x)[-1]  # stage 4 after the final LayerNorm
        pooled = feat.mean((2, 3))
        ref = pooled @ official['head.weight'].t() + official['head.bias']
    torch.testing.assert_close(logits, ref, rtol=1e-4, atol=1e-4)


def _mini_cfg(path, tmp_path):
    from emo_mm.datasets.mini import apply_mini
    cfg = _load_cfg(path)
    apply_mini(cfg, 'mmpretrain', epochs=1)
    cfg.train_dataloader.dataset.indices = 16  # one iteration (mini batch cap 16)
    cfg.val_dataloader.dataset.indices = 16
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=-1, save_last=False)
    cfg.log_level = 'WARNING'
    cfg.work_dir = str(tmp_path)
    cfg.visualizer.name = f'visualizer_{osp.basename(path)}'  # one visualizer per run in this process
    return cfg


@pytest.mark.parametrize('variant', ['emo_2m', 'emov2_1m'])
def test_one_iteration_and_accuracy_on_mini_imagenet(variant, mini_data, tmp_path):
    """The --mini override on a v1 and a v2 config, in process: the 10-class mini ImageNet layout read by the
    1000-way head, 1 iteration (RandAugment, EMA, clipping), Accuracy top-1 / top-5. (EMO-1M trains through
    tools/train.py --mini in tests/test_learning and tests/test_engine.)"""
    from mmengine.runner import Runner
    path = next(p for p in CLS_CONFIGS if _variant(p) == variant)
    runner = Runner.from_cfg(_mini_cfg(path, tmp_path))
    runner.train()
    hub = runner.message_hub
    assert runner.iter == 1
    assert torch.isfinite(torch.tensor(float(hub.get_scalar('train/loss').current())))
    for key in ('val/accuracy/top1', 'val/accuracy/top5'):
        assert 0 <= float(hub.get_scalar(key).current()) <= 100
