"""Issue 14: crash-safe checkpoints, exact resume after SIGKILL, bad data named before it bites.

The kill/resume runs use EMO-1M on mini ImageNet, 16 images in batches of 8 (2 iterations per epoch),
3 epochs, seed 0: an uninterrupted reference run, then runs killed with SIGKILL and restarted with
``--resume``; their final checkpoints must hold the same iteration, epoch, LR, weights, optimizer and
scheduler state as the reference. ``make test-slow`` runs the 10-trial loop with kills at random moments.
"""
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.fileio import get_file_backend
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from mmengine.runner import save_checkpoint
from PIL import Image

import emo_mm  # noqa: F401
from emo_mm.engine.checkpoint import (TEMP_SUFFIX, AtomicLocalBackend, checkpoint_problem, enable_atomic_checkpoints,
                                  find_resumable_checkpoint, get_random_state, set_random_state)
from emo_mm.utils.checkpoint_io import load_local_checkpoint
from emo_mm.datasets.checks import BadDataError, annotation_problem, guard_pipelines, image_file_problem
from emo_mm.apis.preflight import PreflightError, check

from .conftest import CLS_TINY_RUN, ROOT, run_tool

EPOCHS = 3  # of CLS_TINY_RUN


def train_cmd(work_dir, *extra):
    return [sys.executable, 'tools/train.py', *CLS_TINY_RUN[:2], '--work-dir', str(work_dir), *extra,
            *CLS_TINY_RUN[2:]]


def assert_same_training_state(got_path, want_path, atol=1e-6):
    """Two checkpoints of the same schedule point hold the same training state (float noise aside)."""
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


@pytest.fixture
def reference_run(cls_reference_run):
    return cls_reference_run


def wait_for(predicate, proc, timeout=600, poll=0.002):
    end = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, f'training exited ({proc.returncode}) before the moment to kill it'
        assert time.time() < end, 'timed out waiting for the moment to kill the training'
        time.sleep(poll)


def kill_when(work, predicate, may_finish=False):
    """Start tools/train.py, SIGKILL it as soon as ``predicate()`` holds. False if it finished first."""
    proc = subprocess.Popen(train_cmd(work), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: predicate() or (may_finish and proc.poll() is not None), proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    if may_finish and proc.returncode == 0:
        return False
    assert proc.returncode == -signal.SIGKILL
    return True


def last_checkpoint_is(work, name):
    def check():
        try:
            return (work / 'last_checkpoint').read_text().strip().endswith(name)
        except FileNotFoundError:
            return False
    return check


def test_sigkill_then_resume_matches_uninterrupted_run(reference_run, tmp_path):
    work = tmp_path / 'killed'
    kill_when(work, last_checkpoint_is(work, 'epoch_1.pth'))
    assert checkpoint_problem(str(work / 'epoch_1.pth')) is None
    assert not (work / f'epoch_{EPOCHS}.pth').exists()
    # what a kill during a non-atomic save leaves: the pointer names a half-written newer file
    (work / 'epoch_2.pth').write_bytes((reference_run / 'epoch_2.pth').read_bytes()[:1_000_000])
    (work / 'last_checkpoint').write_text(str(work / 'epoch_2.pth'))
    (work / f'.epoch_2.pth.x{TEMP_SUFFIX}').write_bytes(b'left by a killed atomic write')

    proc = run_tool(*train_cmd(work, '--resume')[1:])
    log = proc.stdout + proc.stderr
    assert f'not resuming from {work / "epoch_2.pth"}: truncated or not a PyTorch checkpoint' in log
    assert 'resumed epoch: 1, iter: 2' in log
    assert not list(work.glob(f'.*{TEMP_SUFFIX}'))
    for epoch in range(2, EPOCHS + 1):
        assert_same_training_state(work / f'epoch_{epoch}.pth', reference_run / f'epoch_{epoch}.pth')


@pytest.mark.slow
def test_ten_random_sigkills_resume_exactly(reference_run, tmp_path):
    """10 trials: SIGKILL at a random moment (3 of them while a checkpoint is being written), then resume."""
    rng = random.Random(14)
    # the reference's training span (config dump -> last checkpoint) plus start-up: kills spread over it
    span = (reference_run / f'epoch_{EPOCHS}.pth').stat().st_mtime - \
        min(p.stat().st_mtime for p in reference_run.glob('*.py'))
    results = []
    for trial in range(10):
        work = tmp_path / f'trial{trial}'
        during_save = trial < 3
        if during_save:
            save = 1 + trial % (EPOCHS - 1)

            def writing(work=work, save=save):
                return any(work.glob(f'.epoch_{save}.pth.*{TEMP_SUFFIX}'))
            kill_when(work, writing)
        else:
            delay = rng.uniform(0.2, 1.0) * (span + 10)
            start = time.time()
            while not kill_when(work, lambda start=start, delay=delay: time.time() - start > delay,
                                may_finish=True):
                # the machine ran faster than the reference did: kill a fresh run earlier
                shutil.rmtree(work)
                delay, start = delay / 2, time.time()
        left = sorted(p.name for p in work.glob('*.pth'))
        for p in work.glob('*.pth'):  # whatever the kill left under a final name is complete
            assert checkpoint_problem(str(p)) is None, p
        proc = run_tool(*train_cmd(work, '--resume')[1:])
        resumed = [line for line in (proc.stdout + proc.stderr).splitlines() if 'resumed epoch' in line]
        assert_same_training_state(work / f'epoch_{EPOCHS}.pth', reference_run / f'epoch_{EPOCHS}.pth')
        results.append(f'trial {trial}: {"during a save" if during_save else f"at {delay:.0f} s"}, left {left}, '
                       f'{resumed[-1].split(" - ")[-1] if resumed else "started from scratch"}')
    print('\n'.join(results))


def test_atomic_write_keeps_old_file_when_interrupted(tmp_path, monkeypatch):
    enable_atomic_checkpoints()
    target = tmp_path / 'epoch_1.pth'
    assert isinstance(get_file_backend(str(target)), AtomicLocalBackend)
    save_checkpoint({'state_dict': {'w': torch.ones(3)}}, str(target))
    old = target.read_bytes()

    def killed(fd):
        raise KeyboardInterrupt('simulated kill before the data reached the disk')
    monkeypatch.setattr(os, 'fsync', killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({'state_dict': {'w': torch.zeros(1000)}}, str(target))
    assert target.read_bytes() == old
    assert list(tmp_path.iterdir()) == [target]  # the temp file is gone too
    monkeypatch.undo()
    save_checkpoint({'state_dict': {'w': torch.zeros(1000)}}, str(target))
    assert torch.equal(load_local_checkpoint(str(target))['state_dict']['w'], torch.zeros(1000))


@pytest.fixture
def log_messages():
    """Messages that emo_mm sends to mmengine's current logger during the test (its handlers bypass pytest's
    capture); the handler is removed afterwards."""
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    yield messages
    logger.removeHandler(handler)


def test_find_resumable_checkpoint_falls_back_and_names_skipped(tmp_path, log_messages):
    messages = log_messages
    for i in (1, 2, 3):
        torch.save({'meta': {'epoch': i}}, tmp_path / f'epoch_{i}.pth')
    assert find_resumable_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch_3.pth')  # no pointer: newest
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_2.pth'))
    assert find_resumable_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch_2.pth')  # the pointer wins
    data = (tmp_path / 'epoch_2.pth').read_bytes()
    (tmp_path / 'epoch_2.pth').write_bytes(data[:len(data) // 2])
    (tmp_path / 'epoch_3.pth').unlink()  # removed by max_keep_ckpts
    assert find_resumable_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch_1.pth')
    assert f'not resuming from {tmp_path / "epoch_2.pth"}: truncated' in '\n'.join(messages)
    (tmp_path / 'last_checkpoint').write_text('')  # the pointer itself cut short
    assert find_resumable_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch_1.pth')
    (tmp_path / 'epoch_1.pth').unlink()
    assert find_resumable_checkpoint(str(tmp_path)) is None
    assert 'training starts from scratch' in messages[-1]


def test_random_state_survives_weights_only_round_trip(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    torch.save({'random_state': [get_random_state()]}, tmp_path / 'c.pth')
    want = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(2), np.random.seed(2), torch.manual_seed(2)
    set_random_state(load_local_checkpoint(str(tmp_path / 'c.pth'))['random_state'][0])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == want


# ----------------------------------------------------------------------------------------------------------
# bad data
def _copy_coco(mini_data, dst, n_images=4):
    """A COCO copy with the first ``n_images`` train images of the mini set (data/mini stays untouched)."""
    src = mini_data / 'coco'
    ann = json.loads((src / 'annotations' / 'instances_train2017.json').read_text())
    ann['images'] = ann['images'][:n_images]
    keep = {im['id'] for im in ann['images']}
    ann['annotations'] = [a for a in ann['annotations'] if a['image_id'] in keep]
    (dst / 'annotations').mkdir(parents=True)
    (dst / 'train2017').mkdir()
    for im in ann['images']:
        shutil.copy(src / 'train2017' / im['file_name'], dst / 'train2017' / im['file_name'])
    (dst / 'annotations' / 'instances_train2017.json').write_text(json.dumps(ann))
    return ann


def _det_dataset(root):
    from mmengine.registry import DATASETS
    cfg = Config.fromfile(str(ROOT / 'configs/det/ssdlite_emo_1m.py'))
    ds = cfg.train_dataloader.dataset.dataset
    ds.update(data_root=str(root) + '/', ann_file='annotations/instances_train2017.json',
              data_prefix=dict(img='train2017/'))
    guard_pipelines(cfg, ('train_dataloader',))
    init_default_scope('mmdet')
    return DATASETS.build(ds)


@pytest.mark.parametrize('damage,problem', [
    ('truncate', 'truncated JPEG'),
    ('text', 'not a decodable image'),
    ('delete', 'file not found'),
])
def test_broken_image_is_named(mini_data, tmp_path, damage, problem):
    ann = _copy_coco(mini_data, tmp_path)
    victim = tmp_path / 'train2017' / ann['images'][2]['file_name']
    if damage == 'truncate':
        victim.write_bytes(victim.read_bytes()[:victim.stat().st_size // 2])
    elif damage == 'text':
        victim.write_text('this is not a JPEG\n')
    else:
        victim.unlink()
    dataset = _det_dataset(tmp_path)
    assert dataset[0]['inputs'].shape[0] == 3  # intact images load through the checked pipeline
    with pytest.raises(BadDataError) as err:
        dataset.prepare_data(2)
    msg = str(err.value)
    assert msg.startswith(f'{victim}: ')
    if problem == 'not a decodable image':  # the header does not look like a JPEG: the decoder says so
        assert 'LoadImageFromFile failed' in msg and 'failed to load image' in msg
    else:
        assert problem in msg


def test_image_checks_accept_intact_files(mini_data):
    for path in list((mini_data / 'coco' / 'train2017').iterdir())[:5] + \
            list((mini_data / 'ade/ADEChallengeData2016/annotations/training').iterdir())[:5]:
        assert image_file_problem(str(path)) is None, path


def test_truncated_image_stops_tools_train_in_worker_with_one_line(mini_data, tmp_path):
    """The real tool, with dataloader workers: the message names the file, no worker traceback."""
    ann = _copy_coco(mini_data, tmp_path / 'coco')
    victim = tmp_path / 'coco' / 'train2017' / ann['images'][1]['file_name']
    victim.write_bytes(victim.read_bytes()[:2000])
    proc = run_tool('tools/train.py', 'configs/det/ssdlite_emo_1m.py', '--mini', '--work-dir', tmp_path / 'w',
                    '--cfg-options', f'train_dataloader.dataset.dataset.data_root={tmp_path}/coco/',
                    'train_dataloader.num_workers=1', 'train_dataloader.batch_size=4', 'train_cfg.max_epochs=1',
                    'train_dataloader.persistent_workers=False', check=False, timeout=600)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-2:] == [
        f'bad data: {victim}: truncated JPEG (2000 bytes): no end-of-image marker, the file was cut short',
        'docs/cluster.md "Bad data" explains how to find and fix such files.']
    assert 'Traceback' not in proc.stderr


def test_seg_map_of_other_size_is_named(mini_data, tmp_path):
    from mmengine.registry import DATASETS
    src = mini_data / 'ade' / 'ADEChallengeData2016'
    for sub in ('images/training', 'annotations/training'):
        (tmp_path / sub).mkdir(parents=True)
    stems = sorted(p.stem for p in (src / 'images/training').glob('*.jpg'))[:2]
    for stem in stems:
        shutil.copy(src / f'images/training/{stem}.jpg', tmp_path / f'images/training/{stem}.jpg')
        shutil.copy(src / f'annotations/training/{stem}.png', tmp_path / f'annotations/training/{stem}.png')
    seg = tmp_path / f'annotations/training/{stems[1]}.png'
    small = Image.open(seg).resize((17, 11), Image.NEAREST)
    small.save(seg)
    h, w = np.asarray(Image.open(tmp_path / f'images/training/{stems[1]}.jpg')).shape[:2]
    cfg = Config.fromfile(str(ROOT / 'configs/seg/deeplabv3_emo_1m.py'))
    cfg.train_dataloader.dataset.data_root = str(tmp_path)
    guard_pipelines(cfg, ('train_dataloader',))
    init_default_scope('mmseg')
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    assert dataset[0]['inputs'].shape[0] == 3
    with pytest.raises(BadDataError) as err:
        dataset.prepare_data(1)
    assert str(err.value) == f'{seg}: segmentation map is 11x17 (HxW) but its image ' \
                             f'{tmp_path}/images/training/{stems[1]}.jpg is {h}x{w}'


@pytest.mark.parametrize('content,problem', [
    ('{"images": [', 'not valid json: Expecting value at line 1, column 13'),
    ('{"annotations": [], "categories": []}', "has no 'images' list (top-level keys: ['annotations', "
                                              "'categories'])"),
    ('{"images": [], "annotations": [], "categories": []}', "its 'images' list is empty"),
])
def test_broken_annotation_file_stops_preflight(mini_data, tmp_path, content, problem):
    _copy_coco(mini_data, tmp_path, n_images=1)
    ann = tmp_path / 'annotations' / 'instances_train2017.json'
    ann.write_text(content)
    assert problem in annotation_problem(str(ann), 'CocoDataset')
    cfg = Config.fromfile(str(ROOT / 'configs/det/ssdlite_emo_1m.py'))
    cfg.train_dataloader.dataset.dataset.data_root = str(tmp_path) + '/'
    cfg.model.backbone.init_cfg = None
    with pytest.raises(PreflightError) as err:
        check(cfg, ('train_dataloader',))
    assert f'train_dataloader: annotation file {ann} {problem}' in str(err.value)
