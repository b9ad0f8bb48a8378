"""Helpers shared by the test modules: tool launches, the tiny classifier run, checkpoint comparison, mini-run
configs, random official checkpoints, and the memorisation recipes (fitted once per session, reused by the
inference and segmentation tests)."""
import glob
import json
import os
import os.path as osp
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------- tool launches
def run_tool(*args, timeout=900, check=True, env=None):
    """Run ``python tools/<args>`` from the repo root as a user would; returns the CompletedProcess."""
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, 'PYTHONUNBUFFERED': '1', **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f'{" ".join(map(str, args))} exited {proc.returncode}\n'
                             f'--- stdout (tail)\n{proc.stdout[-4000:]}\n--- stderr (tail)\n{proc.stderr[-6000:]}')
    return proc


def tool_exit_message(monkeypatch, tool, *args):
    """Run ``python <tool> ARGS`` in this process (the tool's own ``__main__``, the repo root as working
    directory) where it is expected to stop early with ``sys.exit(message)``: returns the message. Python prints
    such a message as it is, as the one line on stderr, exit status 1, no traceback; an exception instead of
    the exit fails the test. Saves the ~5 s interpreter start of a launch for checks of argument and input
    errors."""
    import runpy

    import pytest
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, 'argv', [tool, *map(str, args)])
    monkeypatch.setenv('LOCAL_RANK', os.environ.get('LOCAL_RANK', '0'))  # the tools set it; undone afterwards
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(ROOT / tool), run_name='__main__')
    assert isinstance(exit_.value.code, str), f'{tool} exited with status {exit_.value.code!r}, not a message'
    return exit_.value.code


# EMO-1M on 16 mini ImageNet images, 3 epochs of 2 iterations, seed 0 (the kill / resume reference run)
CLS_TINY_RUN = ['configs/cls/emo_1m_8xb256_in1k.py', '--mini', '--cfg-options', 'train_dataloader.dataset.indices=16',
                'train_dataloader.batch_size=8', 'val_dataloader.dataset.indices=8', 'train_cfg.max_epochs=3',
                'randomness.seed=0']


# ----------------------------------------------------------------------------------------------- checkpoints
def assert_same_training_state(got_path, want_path, atol=1e-6):
    """Two checkpoints of the same schedule point hold the same training state (float noise aside)."""
    from emo_mm.utils.checkpoint_io import load_local_checkpoint
    got, want = load_local_checkpoint(str(got_path)), load_local_checkpoint(str(want_path))
    for key in ('epoch', 'iter', 'seed'):
        assert got['meta'][key] == want['meta'][key], key
    assert got['param_schedulers'] == want['param_schedulers']
    assert [g['lr'] for g in got['optimizer']['param_groups']] == \
        [g['lr'] for g in want['optimizer']['param_groups']]
    for part in ('state_dict', 'ema_state_dict'):
        assert got[part].keys() == want[part].keys()
        for k, v in want[part].items():
            torch.testing.assert_close(got[part][k], v, atol=atol, rtol=0, msg=f'{part}.{k}')
    for idx, state in want['optimizer']['state'].items():
        for k, v in state.items():
            torch.testing.assert_close(got['optimizer']['state'][idx][k], v, atol=atol, rtol=0,
                                       msg=f'optimizer state {idx}.{k}')
    assert got['message_hub']['runtime_info']['iter'] == want['message_hub']['runtime_info']['iter']
    return got


def random_official_state_dict(arch):
    """A classification checkpoint in the official flat layout (stage0..., norm.norm.*, head.*), random."""
    from emo_mm.models.pretrained import build_backbone
    gen = torch.Generator().manual_seed(0)
    state = {}
    backbone = build_backbone(arch, final_norm=True)
    for key, value in backbone.state_dict().items():
        state[key] = torch.randn(value.shape, generator=gen) if value.is_floating_point() else value.clone()
    state['head.weight'] = torch.randn(1000, backbone.channels[-1], generator=gen)
    state['head.bias'] = torch.randn(1000, generator=gen)
    return state


# ------------------------------------------------------------------------------------------ mini-run configs
def det_mini_cfg(path, work_dir):
    """A detector config (path) through the --mini override: 1 epoch of 1 iteration on 2 images, evaluated on 2;
    every box kept (an untrained model scores below the configs' thresholds); RetinaNet / Mask R-CNN at a
    sixteenth of 1333x800 (the same transforms)."""
    from mmengine.config import Config

    from emo_mm.datasets.mini import apply_mini
    cfg = Config.fromfile(str(path))
    apply_mini(cfg, 'mmdet')
    cfg.merge_from_dict({
        'train_cfg.max_epochs': 1, 'train_cfg.val_interval': 100,  # evaluated explicitly by the tests
        'train_dataloader.batch_size': 2,
        'val_dataloader.dataset.indices': 2, 'test_dataloader.dataset.indices': 2,
        'default_hooks.checkpoint.interval': 100, 'default_hooks.logger.interval': 1,
    })
    ds = cfg.train_dataloader.dataset
    (ds.dataset if 'dataset' in ds else ds)['indices'] = 2
    test_cfg = cfg.model.test_cfg
    (test_cfg.rcnn if 'rcnn' in test_cfg else test_cfg).score_thr = 0.  # two-stage: the final stage's
    if not Path(path).stem.startswith('ssdlite'):
        for pipeline in (ds.get('pipeline') or ds.dataset.pipeline, cfg.val_dataloader.dataset.pipeline,
                         cfg.test_dataloader.dataset.pipeline):
            for t in pipeline:
                if t['type'] == 'Resize':
                    t['scale'] = (333, 200)
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = f'{Path(path).stem}_{time.time_ns()}'
    return cfg


def shrink_seg(cfg, size=256):
    """Train crops / test short side ``size`` instead of 512 (pipelines otherwise unchanged)."""
    train = cfg.train_dataloader.dataset.pipeline
    train[2]['scale'] = (4 * size, size)
    train[3]['crop_size'] = (size, size)
    cfg.model.data_preprocessor['size'] = (size, size)
    for name in ('val_dataloader', 'test_dataloader'):
        cfg[name].dataset.pipeline[1]['scale'] = (4 * size, size)


# ------------------------------------------------------------------------------------ memorisation recipes
# Every 20th mini ImageNet train image starts a new class: 3-4 images from each of the 10 classes.
CLS_INDICES = [c * 20 + i for c in range(10) for i in range(4 if c < 2 else 3)]
TRAIN_PIPE = 'train_dataloader.dataset.pipeline'
VAL_PIPE = 'val_dataloader.dataset.pipeline'
COCO = 'data/mini/coco'


def _int_list(values):
    return '[' + ','.join(map(str, values)) + ']'


def _coco_subset(tmp, num_images=8):
    from emo_mm.testing import write_coco_subset
    path = tmp / f'instances_fit{num_images}.json'
    if not path.is_file():
        write_coco_subset(str(ROOT / COCO / 'annotations' / 'instances_train2017.json'), str(path), num_images)
    return path


def _retinanet_options(cfg, tmp):
    from emo_mm.testing import coco_fit_options, step_key
    return [*coco_fit_options(cfg, _coco_subset(tmp, 4), size=128, batch_size=4, warmup_iters=30),
            f'{step_key(cfg, TRAIN_PIPE, "RandomFlip")}.prob=0.0']


def _deeplab_options(cfg, tmp):
    from emo_mm.testing import NO_PHOTOMETRIC_DISTORTION, step_key
    return ['train_dataloader.dataset.indices=8', 'val_dataloader.dataset.indices=8',
            'val_dataloader.dataset.data_prefix.img_path=images/training',
            'val_dataloader.dataset.data_prefix.seg_map_path=annotations/training',
            # PhotoMetricDistortion: mmseg's draws the hue shift with randint(-d, d), which fails for d = 0
            *[f'{step_key(cfg, TRAIN_PIPE, "PhotoMetricDistortion")}.{o}'
              for o in [*(o for o in NO_PHOTOMETRIC_DISTORTION if not o.startswith('hue')), 'hue_delta=1']],
            f'{step_key(cfg, TRAIN_PIPE, "RandomResize")}.scale=(1024,256)',
            f'{step_key(cfg, TRAIN_PIPE, "RandomCrop")}.crop_size=(256,256)',
            'model.data_preprocessor.size=(256,256)', f'{step_key(cfg, VAL_PIPE, "Resize")}.scale=(1024,256)']


def _cls_options(cfg, tmp):
    from emo_mm.testing import step_key
    return [f'train_dataloader.dataset.indices={_int_list(CLS_INDICES)}',
            f'val_dataloader.dataset.indices={_int_list(CLS_INDICES)}', 'val_dataloader.dataset.split=train',
            'train_dataloader.batch_size=16', f'{step_key(cfg, "custom_hooks", "EMAHook")}.momentum=0.1',
            *[f'{step_key(cfg, TRAIN_PIPE, "RandomChoice")}.transforms.{i}.0.{o}'  # both RandomResizedCrop variants
              for i in (0, 1) for o in ('scale=112', 'crop_ratio_range=(0.35,1.0)')],
            f'{step_key(cfg, TRAIN_PIPE, "RandAugment")}.magnitude_level=5',
            f'{step_key(cfg, VAL_PIPE, "ResizeEdge")}.scale=128',
            f'{step_key(cfg, VAL_PIPE, "CenterCrop")}.crop_size=112']


def _ssdlite_options(cfg, tmp):
    from emo_mm.testing import coco_fit_options
    return coco_fit_options(cfg, _coco_subset(tmp), size=192)


def _tasks():
    from emo_mm.testing import SSDLITE_FIT_EPOCHS, SSDLITE_FIT_LR
    return {
        'ssdlite_emo_1m': dict(config='configs/det/ssdlite_emo_1m.py', metric='coco/bbox_mAP', threshold=0.5,
                               unit='max_epochs', length=SSDLITE_FIT_EPOCHS, lr=SSDLITE_FIT_LR,
                               options=_ssdlite_options),
        'retinanet_emov2_1m': dict(config='configs/det/retinanet_emov2_1m.py', metric='coco/bbox_mAP',
                                   threshold=0.5, unit='max_epochs', length=175, lr=0.001,
                                   options=_retinanet_options),
        'deeplabv3_emo_1m': dict(config='configs/seg/deeplabv3_emo_1m.py', metric='mIoU', threshold=50.,
                                 unit='max_iters', length=100, lr=0.004, options=_deeplab_options),
        'emo_1m_cls': dict(config='configs/cls/emo_1m_8xb256_in1k.py', metric='accuracy/top1', threshold=90.,
                           unit='max_epochs', length=40, lr=0.003, options=_cls_options),
    }


# task -> config, metric (key in the run's scalars.json), threshold, schedule unit, fit length (epochs or
# iterations), lr, the data / input-size / pipeline options (a function of the loaded config and a temp dir;
# pipeline steps are found by type: emo_mm.testing.step_key). tests/test_learning/test_memorisation.py says why
# each recipe is what it is.
TASKS = _tasks()


def run_length(task, kind):
    """Epochs or iterations of a run: the fit's, or 1 epoch / 2 iterations at lr 0 (the weights never move:
    a short run is the same model as a long one)."""
    spec = TASKS[task]
    return spec['length'] if kind == 'fit' else 2 if spec['unit'] == 'max_iters' else 1


def _final_metric(work_dir, key, log):
    """The metric of the run's last validation (scalars.json); 0 if the detector output no box at all."""
    evals = []
    for path in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))):
        with open(path) as f:
            evals += [line for line in map(json.loads, filter(str.strip, f)) if key in line]
    if evals:
        return float(evals[-1][key])
    # mmdet's CocoMetric logs no metric when no box clears the score threshold (an untrained detector)
    assert 'The testing results of the whole dataset is empty' in log, log[-3000:]
    return 0.0


def learning_run(base_temp, task, kind):
    """``(final metric, work dir)`` of ``task`` trained by tools/train.py --mini, kind 'fit' (the recipe) or
    'lr0' (learning switched off); trained once per pytest session (the work dir lies at a fixed place under
    the session's base temp dir ``base_temp``), so that several modules reuse the fitted checkpoints."""
    from mmengine.config import Config
    spec = TASKS[task]
    tmp = Path(base_temp) / 'learning'
    work = tmp / f'{task}_{kind}'
    done = work / 'final_metric.txt'
    if done.is_file():
        return float(done.read_text()), work
    tmp.mkdir(exist_ok=True)
    length = run_length(task, kind)
    options = [*spec['options'](Config.fromfile(str(ROOT / spec['config'])), tmp),
               f"optim_wrapper.optimizer.lr={spec['lr'] if kind == 'fit' else 0.}",
               f"train_cfg.{spec['unit']}={length}", f'train_cfg.val_interval={length}',
               f'default_hooks.checkpoint.interval={length}']
    # the timeout only guards against a hang on a machine shared with other jobs
    proc = run_tool('tools/train.py', spec['config'], '--mini', '--work-dir', work, '--cfg-options', *options,
                    timeout=3600)
    metric = _final_metric(str(work), spec['metric'], proc.stdout + proc.stderr)
    done.write_text(str(metric))
    return metric, work


def official_weights(family, size):
    """The ImageNet weights a det / seg config of ``family`` ('emo' / 'emov2') and ``size`` starts from.

    The official release files (EMO: the committed ``net.pth``; EMOv2: the non-KD 224 file); EMOv2-20M has none,
    its configs name a local file.
    """
    if family == 'emo':
        return f'https://github.com/zhangzjn/EMO/raw/main/resources/EMO_{size.upper()}/net.pth'
    if size == '20m':
        return 'checkpoints/emov2_20m_in1k.pth'
    return f'https://github.com/zhangzjn/data/raw/main/emov2_pretrained_weights/EMOv2_{size.upper()}_224.pth'
