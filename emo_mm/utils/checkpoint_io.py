"""Checkpoint reads with errors that name the file and the problem.

Local files go through :func:`load_local_checkpoint`, registered as mmengine's loader for plain paths: it
names the file in its errors (a truncated download otherwise reports "failed finding central directory" and
nothing else), checks the zip's CRCs (torch does not: a flipped bit in a tensor loads as a different weight)
and explains a refused pickle instead of suggesting ``weights_only=False``. ``torch.load`` always runs with
``weights_only=True``; :mod:`emo_mm.utils.compat` allows what mmengine itself writes.
"""
import os.path as osp
import pickle
import zipfile

import torch
from mmengine.runner.checkpoint import CheckpointLoader

__all__ = ['CheckpointError', 'zip_checkpoint_problem', 'load_local_checkpoint']


class CheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be used; the message names the file and the reason."""


def _pickle_reason(err):
    """The line of torch's long weights_only message that says what was refused."""
    boilerplate = ('Weights only load failed', 'Please file an issue', 'Check the documentation')
    for line in str(err).splitlines():
        line = line.replace('WeightsUnpickler error:', '').strip()
        if line and not line.startswith(boilerplate):
            return line
    return type(err).__name__


def _first_line(err):
    return (str(err).splitlines() or [''])[0]


def zip_checkpoint_problem(filename):
    """Why the zip container of a checkpoint is damaged, or ``None``. torch.load does not check the CRCs, so a
    flipped bit in tensor data would load as silently different weights. Pre-zip (legacy) files: ``None``."""
    if not zipfile.is_zipfile(filename):
        with open(filename, 'rb') as f:  # a zip cut short has lost its directory: no longer "a zip file"
            return 'truncated zip (no central directory)' if f.read(4) == b'PK\x03\x04' else None
    try:
        with zipfile.ZipFile(filename) as zf:
            bad = zf.testzip()  # reads every record and checks its CRC
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        return f'damaged zip ({err})'
    return f'corrupt record {bad} (CRC mismatch)' if bad is not None else None


def load_local_checkpoint(filename, map_location=None):
    """``torch.load(filename, weights_only=True)`` with clear errors for missing, truncated, corrupt or unsafe
    files."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint file not found: {filename}')
    problem = zip_checkpoint_problem(filename)
    if problem:
        raise CheckpointError(f'cannot read checkpoint {filename} ({osp.getsize(filename)} bytes): {problem}. '
                              'Re-download or re-save it.')
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f'refusing to load {filename}: it contains objects outside the allow-list for checkpoints '
            f'(torch weights_only=True plus what mmengine itself writes). Loading it would run code from '
            f'the file. Details: {_pickle_reason(err)}') from err
    except Exception as err:  # noqa: B902  a corrupt pickle surfaces as Key/Index/Type/...Error of the unpickler
        size = osp.getsize(filename)
        raise CheckpointError(
            f'cannot read checkpoint {filename} ({size} bytes): the file is truncated, corrupt or not a PyTorch '
            f'checkpoint ({type(err).__name__}: {_first_line(err)}). Re-download or re-save it.') from err


# Longer prefixes win in mmengine's lookup, so http://, s3:// etc. keep their own loaders.
CheckpointLoader.register_scheme(prefixes='', loader=load_local_checkpoint, force=True)
