"""Crash-safe checkpoints (atomic writes, the resume fallback past damaged files) and exact resume after SIGKILL.

The kill/resume runs use EMO-1M on mini ImageNet, 16 images in batches of 8 (2 iterations per epoch),
3 epochs, seed 0: an uninterrupted reference run, then runs killed with SIGKILL and restarted with
``--resume``; their final checkpoints must hold the same iteration, epoch, LR, weights, optimizer and
scheduler state as the reference. ``make test-slow`` runs the 10-trial loop with kills at random moments.
"""
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
from mmengine.fileio import get_file_backend
from mmengine.logging import MMLogger
from mmengine.runner import save_checkpoint

import emo_mm  # noqa: F401
from emo_mm.engine.checkpoint import (TEMP_SUFFIX, AtomicLocalBackend, checkpoint_problem, enable_atomic_checkpoints,
                                  find_resumable_checkpoint, get_random_state, set_random_state)
from emo_mm.utils.checkpoint_io import load_local_checkpoint

from tests.utils import CLS_TINY_RUN, ROOT, assert_same_training_state, run_tool

EPOCHS = 3  # of CLS_TINY_RUN


def train_cmd(work_dir, *extra):
    return [sys.executable, 'tools/train.py', *CLS_TINY_RUN[:2], '--work-dir', str(work_dir), *extra,
            *CLS_TINY_RUN[2:]]


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
