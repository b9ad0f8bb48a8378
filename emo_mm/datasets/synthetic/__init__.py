"""The small synthetic datasets the tests, smoke runs and tutorials train on
(``python tools/misc/make_mini_data.py`` writes them).

Three sets, each in the exact on-disk layout the stock OpenMMLab dataset classes read:

* ``coco/``      mmdet ``CocoDataset``: ``annotations/instances_{train,val}2017.json`` plus
                 ``{train,val}2017/*.jpg``. The json carries the full official COCO category list (80 names,
                 ids 1..90 with gaps), so the stock METAINFO applies; the images contain 5 of them, drawn
                 as colour-coded shapes (1-4 per image) with exact bbox / area / polygon segmentation.
* ``ade/ADEChallengeData2016/``  mmseg ``ADE20KDataset`` (reduce_zero_label): ``images/{training,validation}``
                 ``*.jpg`` and ``annotations/{training,validation}/*.png`` (uint8, 0 = other, 1..150 = class).
* ``imagenet/``  mmpretrain ``ImageNet``/``CustomDataset``: ``{train,val}/<wnid>/*.JPEG`` and
                 ``meta/{train,val}.txt`` ("relpath label"), the first 10 ImageNet wnids, labels 0..9.

Everything is a pure function of ``--seed`` (numpy RandomState per image, fixed JPEG quality), so the same
seed gives byte-identical files with the same OpenCV build. A set is generated in a temporary folder and
renamed into place with a ``.complete`` marker last, so an interrupted run leaves nothing that looks
finished: the next run regenerates it. A complete set is skipped unless ``--force``.
Only numpy and OpenCV are needed (no mmdet/mmseg/mmpretrain).
"""
import argparse
import json
import os
import os.path as osp
import shutil
import time

import cv2

from emo_mm.datasets.synthetic.ade import _gen_ade
from emo_mm.datasets.synthetic.coco import _gen_coco
from emo_mm.datasets.synthetic.imagenet import _gen_imagenet

__all__ = ['generate', 'is_complete', 'main', 'SETS', 'MARKER']

MARKER = '.complete'
SETS = ('coco', 'ade', 'imagenet')
GENERATORS = {'coco': _gen_coco, 'ade': _gen_ade, 'imagenet': _gen_imagenet}


def _dir_stats(path):
    n, size = 0, 0
    for d, _, files in os.walk(path):
        for f in files:
            n += 1
            size += osp.getsize(osp.join(d, f))
    return n, size


def _read_marker(path):
    try:
        with open(osp.join(path, MARKER)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def is_complete(path):
    """A set is complete when its marker exists and the file count it recorded is still there."""
    marker = _read_marker(path)
    if not marker:
        return False
    n, _ = _dir_stats(path)
    return n - 1 == marker.get('files')


def generate(out='data/mini', seed=0, only=None, force=False, verbose=True):
    """Generate the requested sets under ``out``; returns {set: info}."""
    log = print if verbose else (lambda *a, **k: None)
    names = SETS if only is None else ((only,) if isinstance(only, str) else tuple(only))
    for name in names:
        if name not in GENERATORS:
            raise ValueError(f'unknown set {name!r}, choose from {SETS}')
    os.makedirs(out, exist_ok=True)
    results = {}
    for name in names:
        dst = osp.join(out, name)
        if not force and is_complete(dst):
            marker = _read_marker(dst)
            note = '' if marker.get('seed') == seed else f' (made with seed {marker.get("seed")}; --force to remake)'
            log(f'[mini data] {name}: complete at {dst}, skipped{note}')
            results[name] = dict(marker, skipped=True, path=dst)
            continue
        t0 = time.time()
        tmp = osp.join(out, f'.{name}.tmp{os.getpid()}')
        if osp.exists(tmp):
            shutil.rmtree(tmp)
        os.makedirs(tmp)
        try:
            counts = GENERATORS[name](tmp, seed)
            n_files, size = _dir_stats(tmp)
            marker = dict(seed=seed, counts=counts, files=n_files, bytes=size)
            with open(osp.join(tmp, MARKER), 'w') as f:
                json.dump(marker, f, indent=1, sort_keys=True)
            if osp.lexists(dst):  # incomplete leftover or --force: move away, then swap in
                old = osp.join(out, f'.{name}.old{os.getpid()}')
                os.rename(dst, old)
                os.rename(tmp, dst)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, dst)
        finally:
            if osp.exists(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
        dt = time.time() - t0
        split_txt = ', '.join(f'{s}: ' + ' '.join(f'{v} {k}' for k, v in c.items()) for s, c in counts.items())
        log(f'[mini data] {name}: wrote {split_txt}; {n_files} files, {size / 2 ** 20:.1f} MiB '
            f'in {dt:.1f}s -> {dst}')
        results[name] = dict(marker, skipped=False, path=dst, seconds=dt)
    # clean leftovers of interrupted runs of other processes (dead temp folders)
    for entry in os.listdir(out):
        if entry.startswith('.') and ('.tmp' in entry or '.old' in entry):
            pid = entry.rsplit('.tmp', 1)[-1] if '.tmp' in entry else entry.rsplit('.old', 1)[-1]
            if pid.isdigit() and not _pid_alive(int(pid)):
                shutil.rmtree(osp.join(out, entry), ignore_errors=True)
    return results


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv=None):
    p = argparse.ArgumentParser(description='Write the synthetic mini COCO / ADE20K / ImageNet sets',
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', default='data/mini', help='output root (default: data/mini)')
    p.add_argument('--seed', type=int, default=0, help='random seed (default: 0)')
    p.add_argument('--only', choices=SETS, help='generate only this set')
    p.add_argument('--force', action='store_true', help='regenerate sets that already exist')
    args = p.parse_args(argv)
    t0 = time.time()
    cv2.setNumThreads(1)
    generate(args.out, args.seed, args.only, args.force)
    print(f'[mini data] done in {time.time() - t0:.1f}s under {osp.abspath(args.out)}')
    return 0
