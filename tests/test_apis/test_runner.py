"""Registry scopes, the checkpoint loader's refusals, the --mini override, the preflight, and stock mmdet /
mmseg / mmpretrain configs trained and tested by tools/train.py and tools/test.py on the mini sets."""
import os
import pickle
import re
import subprocess
import sys
import textwrap

import pytest
import torch
from mmengine.config import Config

import emo_mm  # noqa: F401
from emo_mm.utils.checkpoint_io import CheckpointError, load_local_checkpoint
from emo_mm.apis.runner import resolve_config_path
from emo_mm.datasets.mini import apply_mini, to_mini_path
from emo_mm.apis.preflight import PreflightError, check

from tests.utils import ROOT, run_tool, tool_exit_message


SSD_STOCK = 'mmdet::ssd/ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py'


def _python(code, **kw):
    """Run ``code`` in a fresh interpreter (nothing of emo_mm imported beforehand)."""
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, **kw)


# ------------------------------------------------------------------------------------------------ registry
def test_scoped_name_resolves_from_stock_registries_without_import():
    """``emo_mm.EMO`` from each stock registry, in an interpreter that never imports emo_mm: the first lookup
    imports it through the scope (one interpreter for the three: each launch costs an interpreter start)."""
    proc = _python('''
        import sys
        registries = {c: __import__(c + '.registry', fromlist=['MODELS']).MODELS for c in ('mmdet', 'mmseg', 'mmpretrain')}
        assert 'emo_mm' not in sys.modules
        for codebase, MODELS in registries.items():
            cls = MODELS.get('emo_mm.EMO')
            print(codebase, cls.__module__, cls.__name__)
    ''')
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f'{c} emo_mm.models.backbones.emo EMO' for c in ('mmdet', 'mmseg', 'mmpretrain')]


def test_bare_name_resolves_with_custom_imports(tmp_path):
    """``custom_imports = ['emo_mm']`` in a user config: each codebase's MODELS builds the bare type name (one
    interpreter for the three: the import is what is tested, and it is the same); that import also gives
    mmdet's SSDHead its ``loss_cls`` attribute (None)."""
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text("custom_imports = dict(imports=['emo_mm'], allow_failed_imports=False)\n"
                        "backbone = dict(type='EMOv2', arch='1m', out_indices=(2, 4))\n")
    proc = _python(f'''
        import sys
        from mmengine.config import Config
        assert 'emo_mm' not in sys.modules
        cfg = Config.fromfile({str(cfg_file)!r})
        for codebase in ('mmdet', 'mmseg', 'mmpretrain'):
            MODELS = __import__(codebase + '.registry', fromlist=['MODELS']).MODELS
            model = MODELS.build(cfg.backbone)
            print(codebase, type(model).__name__, *model.out_indices)
        from mmdet.models.dense_heads import SSDHead
        print(hasattr(SSDHead, 'loss_cls'), SSDHead.loss_cls)
    ''')
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f'{c} EMOv2 2 4' for c in ('mmdet', 'mmseg', 'mmpretrain')] + ['True None']


# ------------------------------------------------------------------------------------- checkpoint loading
class _RunsCode:
    """Pickles to ``os.system(cmd)``: the classic malicious checkpoint."""

    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return os.system, (self.cmd,)


class _GetattrGadget:
    """Pickles to ``getattr(HistoryBuffer, '__init__')``: the first step of a walk to ``__globals__``."""

    def __reduce__(self):
        from mmengine.logging.history_buffer import HistoryBuffer
        return getattr, (HistoryBuffer, '__init__')


@pytest.mark.parametrize('payload', ['system', 'getattr'])
def test_malicious_checkpoint_is_refused(tmp_path, payload):
    marker = tmp_path / 'pwned'
    obj = _RunsCode(f'touch {marker}') if payload == 'system' else _GetattrGadget()
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'w': torch.zeros(1)}, 'meta': obj}, path)
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        load_local_checkpoint(str(path))
    assert not marker.exists()
    # the stock entry point that resume / load_from / tools/test.py use goes through the same loader
    from mmengine.runner.checkpoint import _load_checkpoint
    with pytest.raises(CheckpointError, match='refusing to load') as err:
        _load_checkpoint(str(path))
    assert ('os.system' in str(err.value) or 'posix.system' in str(err.value)) if payload == 'system' \
        else "getattr(type, '__init__')" in str(err.value)
    assert not marker.exists()


def test_truncated_checkpoint_error_names_file(tmp_path):
    good = tmp_path / 'good.pth'
    torch.save({'state_dict': {'w': torch.randn(64, 64)}}, good)
    bad = tmp_path / 'truncated.pth'
    bad.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])
    with pytest.raises(CheckpointError, match=re.escape(str(bad))) as err:
        load_local_checkpoint(str(bad))
    assert 'truncated' in str(err.value)
    assert torch.equal(load_local_checkpoint(str(good))['state_dict']['w'],
                       torch.load(good, weights_only=True)['state_dict']['w'])


def test_restricted_getattr_allows_only_history_buffer_statistics():
    from mmengine.logging.history_buffer import HistoryBuffer
    from emo_mm.utils.compat import _history_buffer_getattr
    buffer = HistoryBuffer([1.0, 3.0], [1, 1])
    assert _history_buffer_getattr(HistoryBuffer, 'mean')(buffer) == 2.0
    for obj, name in [(HistoryBuffer, '__init__'), (HistoryBuffer, '__class__'), (buffer, 'mean'),
                      (os, 'system')]:
        with pytest.raises(pickle.UnpicklingError):
            _history_buffer_getattr(obj, name)


# ------------------------------------------------------------------------------- mini override / preflight
def test_to_mini_path():
    assert to_mini_path('data/coco/') == 'data/mini/coco/'
    assert to_mini_path('data/coco/annotations/instances_val2017.json') == \
        'data/mini/coco/annotations/instances_val2017.json'
    assert to_mini_path('data/ade/ADEChallengeData2016') == 'data/mini/ade/ADEChallengeData2016'
    assert to_mini_path('data/imagenet') == 'data/mini/imagenet'
    assert to_mini_path('data/cocoa/x') == 'data/cocoa/x'
    assert to_mini_path('/abs/data/coco/') == '/abs/data/coco/'


def test_apply_mini_keeps_model_and_pipeline():
    cfg = Config.fromfile(resolve_config_path(SSD_STOCK))
    before = cfg.copy()
    apply_mini(cfg, 'mmdet')
    assert cfg.model == before.model
    assert cfg.train_dataloader.dataset.dataset.pipeline == before.train_dataloader.dataset.dataset.pipeline
    assert cfg.train_dataloader.dataset.dataset.data_root == 'data/mini/coco/'
    assert cfg.val_evaluator.ann_file == 'data/mini/coco/annotations/instances_val2017.json'
    assert cfg.train_cfg.max_epochs == 2 and cfg.train_dataloader.dataset.times == 1
    # schedulers keep their shape: the epoch-based cosine ends with training, the 500-iteration
    # warm-up of a 120-epoch run stays the same fraction (2/120) of the run
    warmup, cosine = cfg.param_scheduler
    assert (cosine.begin, cosine.end, cosine.T_max) == (0, 2, 2)
    assert (warmup.by_epoch, warmup.end) == (False, round(500 * 2 / 120))


def test_mini_schedule_follows_length_given_in_cfg_options(mini_data):
    """``--mini --cfg-options train_cfg.max_epochs=N``: the schedulers are scaled to N epochs, not to the
    default 2 (the cosine would end at epoch 2 and leave the remaining epochs at half the learning rate)."""
    import argparse
    from emo_mm.apis.runner import add_common_args, prepare_config
    parser = argparse.ArgumentParser()
    parser.add_argument('config')
    add_common_args(parser)
    for options, epochs in (([], 2), (['train_cfg.max_epochs=6'], 6)):
        args = parser.parse_args([SSD_STOCK, '--mini', *(['--cfg-options', *options] if options else [])])
        cfg, _ = prepare_config(args, 'tools/train.py', ('train_dataloader', 'val_dataloader'))
        warmup, cosine = cfg.param_scheduler
        assert cfg.train_cfg.max_epochs == epochs
        assert (cosine.begin, cosine.end, cosine.T_max) == (0, epochs, epochs)
        assert warmup.end == round(500 * epochs / 120)


def test_apply_mini_trains_missing_pretrained_backbone_from_scratch(tmp_path):
    cfg = Config.fromfile(str(ROOT / 'configs/det/ssdlite_emo_1m.py'))
    assert cfg.model.backbone.norm_eval and cfg.model.backbone.init_cfg.type == 'Pretrained'
    cfg.model.backbone.init_cfg.checkpoint = str(tmp_path / 'not_converted_yet.pth')
    with pytest.warns(UserWarning, match='starts from scratch'):
        apply_mini(cfg, 'mmdet')
    assert cfg.model.backbone.init_cfg is None and cfg.model.backbone.norm_eval is False


def test_preflight_names_missing_dataset(tmp_path):
    cfg = Config.fromfile(resolve_config_path(SSD_STOCK))
    cfg.train_dataloader.dataset.dataset.data_root = str(tmp_path / 'nowhere') + '/'
    with pytest.raises(PreflightError) as err:
        check(cfg, ('train_dataloader',))
    assert 'COCO2017 not found' in str(err.value) and str(tmp_path / 'nowhere') in str(err.value)


def test_train_without_dataset_stops_with_message(tmp_path, monkeypatch):
    cfg = tmp_path / 'user_cfg.py'
    cfg.write_text("_base_ = 'mmdet::ssd/ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py'\n"
                   f"data_root = '{tmp_path}/coco/'\n"
                   "train_dataloader = dict(dataset=dict(dataset=dict(data_root=data_root)))\n")
    message = tool_exit_message(monkeypatch, 'tools/train.py', cfg, '--work-dir', tmp_path / 'wd')
    assert f'COCO2017 not found: missing {tmp_path}/coco/' in message
    assert 'tools/misc/make_mini_data.py' in message and '--mini' in message
    assert not (tmp_path / 'wd').exists()


# ------------------------------------------------------------------------- stock configs: train/test/resume
STOCK = {
    # codebase: (config, options limiting the run, metric regex printed by tools/test.py)
    # (an SSD trained for 2 iterations scores every class near 1/81, below the stock score_thr 0.02:
    # lowering it lets CocoMetric see detections and print its table)
    'mmdet': ('mmdet::ssd/ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py',
              ['train_dataloader.dataset.dataset.indices=16', 'val_dataloader.dataset.indices=8',
               'test_dataloader.dataset.indices=8', 'model.test_cfg.score_thr=0.001'],
              r'coco/bbox_mAP: (-?[\d.]+)'),
    'mmseg': ('mmseg::segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py',
              ['train_cfg.max_iters=2', 'train_cfg.val_interval=2', 'default_hooks.checkpoint.interval=2',
               'train_dataloader.batch_size=2', 'val_dataloader.dataset.indices=4',
               'test_dataloader.dataset.indices=4'],
              r'mIoU: ([\d.]+)'),
    'mmpretrain': ('mmpretrain::mobilenet_v2/mobilenet-v2_8xb32_in1k.py',
                   ['train_dataloader.dataset.indices=32', 'val_dataloader.dataset.indices=16',
                    'test_dataloader.dataset.indices=16'],
                   r'accuracy/top1: ([\d.]+)'),
}


@pytest.mark.parametrize('codebase', list(STOCK))
def test_stock_config_train_test(codebase, mini_data, tmp_path):
    """tools/train.py then tools/test.py --mini on a stock config; mmseg's iteration-based run is also resumed
    (epoch-based resume: tests/test_engine, a SIGKILLed tools/train.py run and a 2-process one)."""
    config, options, metric = STOCK[codebase]
    work = tmp_path / 'work'
    first = ['train_cfg.max_epochs=1'] if codebase != 'mmseg' else []
    run_tool('tools/train.py', config, '--mini', '--work-dir', work, '--cfg-options', *options, *first)
    ckpt = work / ('iter_2.pth' if codebase == 'mmseg' else 'epoch_1.pth')
    assert ckpt.is_file()
    # a checkpoint that mmengine wrote (message hub, numpy history buffers) loads under weights_only
    state = load_local_checkpoint(str(ckpt))
    assert 'message_hub' in state and 'optimizer' in state

    test = run_tool('tools/test.py', config, ckpt, '--mini', '--work-dir', work, '--cfg-options', *options)
    assert re.search(metric, test.stdout + test.stderr), (test.stdout + test.stderr)[-3000:]
    if codebase != 'mmseg':
        return
    resumed = run_tool('tools/train.py', config, '--mini', '--work-dir', work, '--resume', ckpt,
                       '--cfg-options', *options, 'train_cfg.max_iters=4', 'train_cfg.val_interval=4')
    log = resumed.stdout + resumed.stderr
    resumed_at = re.search(r'resumed epoch: (\d+), iter: (\d+)', log)
    assert resumed_at, log[-3000:]
    assert int(resumed_at.group(2)) == 2
    assert (work / 'iter_4.pth').is_file()
