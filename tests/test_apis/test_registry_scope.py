"""The hook, transform and model wrapper that tools/train.py writes into a run's config rebuild from a stock
tool's registries without ``custom_imports`` (the ``emo_mm`` scope is imported on demand, like ``emo_mm.EMO``).

Also the review fixes around the tools' inputs: dumped test pipelines unwrapped for the inferencers, checkpoint
arguments checked before anything is built, ``--resume`` never falling back to a ``best_*.pth``."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from mmengine.config import Config

from emo_mm.engine.checkpoint import enable_exact_resume
from emo_mm.datasets.checks import guard_pipelines
from emo_mm.engine.distributed import setup_cpu_distributed

from tests.utils import ROOT

# a config per codebase whose pipelines load images (and, for det / seg, annotations)
CONFIGS = {'mmdet': 'configs/det/ssdlite_emo_1m.py', 'mmseg': 'configs/seg/deeplabv3_emo_1m.py',
           'mmpretrain': 'configs/cls/emo_1m_8xb256_in1k.py'}


def _dump_as_train_py_does(config, path, monkeypatch):
    """The config as tools/train.py dumps it for a CPU multi-process run (launcher pytorch, no GPU)."""
    cfg = Config.fromfile(ROOT / config)
    cfg.launcher = 'pytorch'
    enable_exact_resume(cfg)
    guard_pipelines(cfg)
    # only the config edit of setup_cpu_distributed is wanted here, not a process group
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(torch.distributed, 'is_initialized', lambda: True)
    setup_cpu_distributed(cfg)
    cfg.dump(str(path))
    return path


def test_dumped_config_rebuilds_in_stock_registries_without_importing_emo_mm(tmp_path, monkeypatch, mini_data):
    dumped = {codebase: str(_dump_as_train_py_does(config, tmp_path / f'{codebase}.py', monkeypatch))
              for codebase, config in CONFIGS.items()}
    missing_image = str(tmp_path / 'missing.jpg')
    image = str(ROOT / 'data' / 'mini' / 'coco' / 'val2017' / '000000100001.jpg')
    code = f'''
        import sys
        from mmengine.config import Config
        from mmengine.registry import init_default_scope
        registries = {{c: __import__(c + '.registry', fromlist=['HOOKS']) for c in {list(dumped)!r}}}
        configs = {{c: Config.fromfile(path) for c, path in {dumped!r}.items()}}
        assert 'emo_mm' not in sys.modules
        for codebase, cfg in configs.items():
            registry = registries[codebase]
            init_default_scope(cfg.default_scope)
            # the Runner takes 'priority' off before building a hook
            hooks = [registry.HOOKS.build({{k: v for k, v in h.items() if k != 'priority'}})
                     for h in cfg.get('custom_hooks', [])]
            loading = [registry.TRANSFORMS.build(t) for t in cfg.val_dataloader.dataset.pipeline[:1]]
            wrapper = registry.MODEL_WRAPPERS.get(cfg.model_wrapper_cfg.type)
            out = loading[0](dict(img_path={image!r}))
            try:
                loading[0](dict(img_path={missing_image!r}))
                verdict = 'loaded'
            except Exception as err:
                verdict = type(err).__name__ + ':' + str(err).split(':')[-1].strip().replace(' ', '_')
            print(codebase, [type(h).__name__ for h in hooks].count('RandomStateHook'), type(loading[0]).__name__,
                  type(loading[0].loader).__name__, wrapper.__name__, out['img'].shape[2], verdict)
    '''
    proc = subprocess.run([sys.executable, '-c', textwrap.dedent(code)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {line.split()[0]: line.split(' ', 1)[1] for line in proc.stdout.splitlines()}
    # the seg config is iteration-based: no exact-resume hook there (emo_mm.engine.checkpoint says why)
    for codebase, resume_hooks in (('mmdet', 1), ('mmseg', 0), ('mmpretrain', 1)):
        assert rows[codebase] == (f"{resume_hooks} CheckedLoading LoadImageFromFile "
                                  "CPUDistributedDataParallel 3 BadDataError:file_not_found"), rows


def test_exact_resume_hook_is_added_once_also_next_to_an_old_bare_name():
    cfg = Config(dict(train_cfg=dict(max_epochs=2), custom_hooks=[dict(type='RandomStateHook')]))
    enable_exact_resume(cfg)
    assert [h['type'] for h in cfg.custom_hooks] == ['RandomStateHook']
    cfg = Config(dict(train_cfg=dict(max_epochs=2)))
    enable_exact_resume(cfg)
    enable_exact_resume(cfg)
    assert [h['type'] for h in cfg.custom_hooks] == ['emo_mm.RandomStateHook']


def test_inference_unwraps_the_checked_loading_of_a_dumped_test_config():
    """tools/test.py wraps the test pipeline's loaders; the inferencers need the bare LoadImageFromFile back."""
    from emo_mm.datasets.checks import unguard_pipelines
    cfg = Config.fromfile(ROOT / CONFIGS['mmdet'])
    original = [dict(step) for step in cfg.test_dataloader.dataset.pipeline]
    guard_pipelines(cfg, ('test_dataloader',))
    guard_pipelines(cfg, ('test_dataloader',))  # twice: still one wrapper per loading step
    guarded = cfg.test_dataloader.dataset.pipeline
    loading = [i for i, s in enumerate(original) if s['type'].split('.')[-1].startswith('Load')]
    assert len(loading) == 2  # LoadImageFromFile, LoadAnnotations
    assert [s['type'] for s in guarded] == [
        'emo_mm.CheckedLoading' if i in loading else s['type'] for i, s in enumerate(original)]
    assert [guarded[i]['transform'] for i in loading] == [original[i] for i in loading]
    unguard_pipelines(cfg)
    assert [dict(step) for step in cfg.test_dataloader.dataset.pipeline] == original


def test_checkpoint_argument_is_checked_before_anything_is_built(tmp_path):
    """tools/test.py CKPT and tools/train.py --resume CKPT: one line naming the file, not a runner traceback."""
    from emo_mm.apis.runner import exit_if_checkpoint_unusable
    good = tmp_path / 'epoch_1.pth'
    torch.save({'state_dict': {'w': torch.ones(1000)}}, good)
    exit_if_checkpoint_unusable(str(good), 'checkpoint')
    exit_if_checkpoint_unusable('s3://bucket/missing.pth', 'checkpoint')  # mmengine's (http: test_pretrained_urls)
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(good.read_bytes()[:2000])
    for path, option, problem in ((tmp_path / 'missing.pth', 'checkpoint', 'file not found'),
                                  (cut, '--resume', 'truncated zip (no central directory)')):
        with pytest.raises(SystemExit) as exit_:
            exit_if_checkpoint_unusable(str(path), option)
        assert exit_.value.code == f'{option} {path}: {problem}'


def test_resume_fallback_skips_best_checkpoints(tmp_path):
    """A best_*.pth (no optimizer, no schedulers) newer than the epoch checkpoint of its epoch is not resumed."""
    from emo_mm.engine.checkpoint import find_resumable_checkpoint
    for i, name in enumerate(('epoch_2.pth', 'best_accuracy_top1_epoch_2.pth', 'epoch_3.pth')):
        torch.save({'meta': {'epoch': 2}}, tmp_path / name)
        os.utime(tmp_path / name, (1000 + i, 1000 + i))
    (tmp_path / 'epoch_3.pth').write_bytes(b'PK\x03\x04 cut short')
    assert find_resumable_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch_2.pth')
