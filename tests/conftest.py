"""Shared fixtures: the repo root as working directory and the generated mini datasets."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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


def run_tool(*args, timeout=900, check=True):
    """Run ``python tools/<args>`` from the repo root as a user would; returns the CompletedProcess."""
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, 'PYTHONUNBUFFERED': '1'})
    if check and proc.returncode != 0:
        raise AssertionError(f'{" ".join(map(str, args))} exited {proc.returncode}\n'
                             f'--- stdout (tail)\n{proc.stdout[-4000:]}\n--- stderr (tail)\n{proc.stderr[-6000:]}')
    return proc


@pytest.fixture(scope='session')
def mini_data():
    """data/mini/{coco,ade,imagenet}, generated once (the generator skips complete sets)."""
    run_tool('tools/misc/make_mini_data.py', timeout=300)
    return ROOT / 'data' / 'mini'


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: minutes-long reliability loops; `make test-slow` runs them, '
                                       '`make test` deselects them')


CLS_TINY_RUN = ['configs/cls/emo_1m_8xb256_in1k.py', '--mini', '--cfg-options', 'train_dataloader.dataset.indices=16',
                'train_dataloader.batch_size=8', 'val_dataloader.dataset.indices=8', 'train_cfg.max_epochs=3',
                'randomness.seed=0']


@pytest.fixture(scope='session')
def cls_reference_run(mini_data, tmp_path_factory):
    """EMO-1M on 16 mini ImageNet images, 3 epochs of 2 iterations, seed 0, uninterrupted: its work dir.

    The reference of the kill / resume tests; its checkpoints are real mmengine checkpoints for the others.
    """
    work = tmp_path_factory.mktemp('cls_reference_run')
    run_tool('tools/train.py', *CLS_TINY_RUN[:2], '--work-dir', work, *CLS_TINY_RUN[2:])
    return work
