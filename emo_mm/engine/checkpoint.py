"""Crash-safe checkpoints and exact resume for ``tools/train.py``.

A job that dies (SIGKILL, node failure, preemption) while mmengine writes ``epoch_N.pth`` leaves a truncated
file under the final name, and mmengine's ``--resume`` then dies on it. A resumed run also draws different
random numbers than the run it continues (augmentations, drop path), so its losses drift away from an
uninterrupted run. Three pieces fix this without touching mmengine:

* :class:`AtomicLocalBackend` replaces mmengine's ``local`` file backend: every ``put`` goes to a hidden temp
  file in the same directory, is fsync'ed and then ``os.replace``'d over the final name, so a reader sees the
  old file or the complete new one, never half of one (``last_checkpoint`` is written only after that).
* :func:`find_resumable_checkpoint` is what ``--resume`` (no path) starts from: ``last_checkpoint`` if it
  names a complete checkpoint, else the newest complete ``*.pth`` in the work dir, with a warning naming
  each file it skips.
* :class:`RandomStateHook` stores every rank's Python / NumPy / torch random state in each checkpoint and
  restores it on resume; validation runs with the random state saved and restored around it, so an
  interrupted and resumed epoch-based run draws exactly the numbers of an uninterrupted one.
"""
import glob
import logging
import os
import os.path as osp
import random
import re
import tempfile
import zipfile

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size, is_distributed
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import Hook
from mmengine.logging import print_log

from emo_mm.registry import register_hook, scoped
from emo_mm.utils.checkpoint_io import load_local_checkpoint, zip_checkpoint_problem

TEMP_SUFFIX = '.partial'


# ----------------------------------------------------------------------------------------------------------
# atomic writes
def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # directories cannot be opened on some platforms; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(data, filepath):
    """Write ``data`` to ``filepath`` so that a crash at any moment leaves the old file or the new one."""
    directory = osp.dirname(osp.abspath(filepath))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{osp.basename(filepath)}.', suffix=TEMP_SUFFIX, dir=directory)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filepath)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(directory)


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend with atomic ``put`` / ``put_text`` (checkpoints, dumped results)."""

    def put(self, obj, filepath):
        atomic_write_bytes(obj, str(filepath))

    def put_text(self, obj, filepath, encoding='utf-8'):
        atomic_write_bytes(obj.encode(encoding), str(filepath))


def enable_atomic_checkpoints():
    """Route every local mmengine write (``save_checkpoint`` included) through :class:`AtomicLocalBackend`."""
    register_backend('local', AtomicLocalBackend, force=True, prefixes='')


# ----------------------------------------------------------------------------------------------------------
# choosing the checkpoint to resume from
def checkpoint_problem(path):
    """``None`` if ``path`` is a complete PyTorch zip checkpoint, else why not (no unpickling: cheap, safe)."""
    if not osp.isfile(path):
        return 'file does not exist'
    if not zipfile.is_zipfile(path):
        return f'truncated or not a PyTorch checkpoint ({osp.getsize(path)} bytes, no zip directory)'
    return zip_checkpoint_problem(path)


def _step_of(path):
    """``epoch_12.pth`` -> 12, ``iter_4000.pth`` -> 4000, else -1 (sorts last)."""
    match = re.search(r'(\d+)\.pth$', osp.basename(path))
    return int(match.group(1)) if match else -1


def remove_partial_files(work_dir):
    """Delete temp files left by writes that a crash interrupted (only rank 0, the one that writes)."""
    # before the runner exists the process group may not be up yet: torchrun's RANK says who is 0
    if (get_rank() if is_distributed() else int(os.environ.get('RANK', 0))) != 0:
        return
    for path in glob.glob(osp.join(work_dir, f'.*{TEMP_SUFFIX}')):
        print_log(f'removing {path}: left by an interrupted checkpoint write', logger='current')
        os.remove(path)


def find_resumable_checkpoint(work_dir):
    """The checkpoint ``--resume`` should continue from, or ``None`` to start from scratch.

    ``last_checkpoint`` wins if it names a complete file. Otherwise (a file truncated by a crash of a
    non-atomic writer, deleted by ``max_keep_ckpts``, or ``last_checkpoint`` itself cut short) the newest
    complete ``*.pth`` in ``work_dir`` (not ``best_*.pth``) is used; every file passed over is named in a
    warning.
    """
    candidates = []
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip()
        if named:
            candidates.append(named)
        else:
            print_log(f'{pointer} is empty (interrupted write); looking for checkpoints in {work_dir}',
                      logger='current', level=logging.WARNING)
    # best_*.pth (CheckpointHook save_best) hold no optimizer / scheduler state: resuming from one would
    # restart AdamW and the LR schedule without a word
    others = sorted((p for p in glob.glob(osp.join(work_dir, '*.pth')) if not osp.basename(p).startswith('best_')),
                    key=lambda p: (_step_of(p), osp.getmtime(p)), reverse=True)
    candidates += [p for p in others if not candidates or osp.abspath(p) != osp.abspath(candidates[0])]
    for path in candidates:
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        print_log(f'not resuming from {path}: {problem}; trying an older checkpoint', logger='current',
                  level=logging.WARNING)
    print_log(f'--resume: no complete checkpoint in {work_dir}, training starts from scratch', logger='current',
              level=logging.WARNING)
    return None


def keep_seed_of_resumed_run(cfg):
    """Without a fixed seed mmengine draws a new one per start, and the data sampler, built before the
    checkpoint is read, would shuffle with it: take the resumed run's seed from its checkpoint instead."""
    randomness = cfg.get('randomness') or {}
    if not cfg.get('resume') or not cfg.get('load_from') or randomness.get('seed') is not None:
        return
    seed = load_local_checkpoint(cfg.load_from, map_location='cpu').get('meta', {}).get('seed')
    if seed is not None:
        cfg.randomness = dict(randomness, seed=seed)


# ----------------------------------------------------------------------------------------------------------
# random state
def get_random_state():
    state = dict(python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_random_state(state):
    version, internal, gauss = state['python']
    # weights_only loading turns the tuple of ints into a list; random.setstate wants a tuple
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(tuple(state['numpy']))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


@register_hook
class RandomStateHook(Hook):
    """Saves each rank's random state in the checkpoints and restores it on resume (epoch-based loops).

    The state is taken at the end of each training epoch, where the CheckpointHook saves; validation
    runs between there and the next epoch and consumes random numbers (dataloader seeds), so it is run
    with the training state put aside and restored after it: the next epoch starts from the saved state
    in an uninterrupted run as in a resumed one. Iteration-based loops are left alone: mmengine resumes
    them by re-reading (and re-augmenting) the batches already trained on, which draws random numbers
    before any hook could restore them.
    """

    priority = 'VERY_HIGH'  # before CheckpointHook (NORMAL) in after_train_epoch

    def __init__(self):
        self._epoch_end_states = None
        self._resumed_states = None
        self._before_val = None

    def after_train_epoch(self, runner):
        state = get_random_state()
        self._epoch_end_states = all_gather_object(state) if is_distributed() else [state]

    def before_save_checkpoint(self, runner, checkpoint):
        if self._epoch_end_states is not None and checkpoint['meta'].get('iter') == runner.iter:
            checkpoint['random_state'] = self._epoch_end_states

    def after_load_checkpoint(self, runner, checkpoint):
        self._resumed_states = checkpoint.get('random_state')

    def before_train(self, runner):
        states, self._resumed_states = self._resumed_states, None
        if states is None:
            return
        if len(states) != get_world_size():
            print_log(f'checkpoint holds the random state of {len(states)} processes, this run has '
                      f'{get_world_size()}: continuing with fresh random state', logger='current',
                      level=logging.WARNING)
            return
        set_random_state(states[get_rank()])

    def before_val(self, runner):
        self._before_val = get_random_state()

    def after_val(self, runner):
        if self._before_val is not None:
            set_random_state(self._before_val)
            self._before_val = None


def enable_exact_resume(cfg):
    """Add :class:`RandomStateHook` to an epoch-based training config (once)."""
    if 'max_epochs' not in (cfg.get('train_cfg') or {}):
        return
    hooks = cfg.setdefault('custom_hooks', [])
    if not any(h.get('type') in ('RandomStateHook', RandomStateHook, scoped(RandomStateHook)) for h in hooks):
        hooks.append(dict(type=scoped(RandomStateHook)))
