"""Compatibility layer for today's stack, active as soon as ``emo_mm`` is imported.

Nothing here edits installed files; each fix is applied at run time and is the smallest one that works:

1. torch >= 2.6 loads checkpoints with ``weights_only=True`` and mmengine 0.10.7 never says otherwise,
   so ``--resume``, ``load_from`` and ``tools/test.py`` refuse the checkpoints mmengine itself wrote
   (open-mmlab/mmengine#1655). We allow exactly the globals such checkpoints contain. ``builtins.getattr``
   is among them (HistoryBuffer pickles bound methods through it) and would open a door to arbitrary code,
   so it is replaced by a getattr that only resolves a HistoryBuffer's statistics methods; ``builtins.bytes``
   (an empty HistoryBuffer) by one that cannot be asked to allocate memory.
2. Local checkpoint reads go through :func:`load_local_checkpoint`, which names the file in its errors
   (a truncated download otherwise reports "failed finding central directory" and nothing else), checks
   the zip's CRCs (torch does not: a flipped bit in a tensor loads as a different weight) and explains a
   refused pickle instead of suggesting ``weights_only=False``.
3. mmdet 3.3.0's ``SSDHead`` never builds ``loss_cls`` but its prediction code reads it
   (open-mmlab/mmdetection#11780): SSD validation, test and inference crash. SSD scores with a softmax
   over num_classes + 1, which is what the code does when ``loss_cls`` has no ``custom_cls_channels``,
   so ``SSDHead.loss_cls = None`` restores the intended behaviour. Applied when mmdet's ssd_head module
   is imported (or at once if it already is), so importing emo_mm does not import mmdet.
4. mmcv's ``RoIAlign`` reads its input as contiguous NCHW memory: on channels-last maps (a deploy-mode EMO
   backbone's FPN outputs) Mask R-CNN pooled wrong features. The input is made contiguous first.

(mmseg's ``EncoderDecoder`` pushing ``model.pretrained`` into the backbone is handled by the backbones,
which accept ``pretrained`` like mmseg's own.)
"""
import importlib.abc
import importlib.util
import os.path as osp
import pickle
import sys
import zipfile

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader


# ----------------------------------------------------------------------------------------------------------
# 1. torch.load allow-list
def _history_buffer_getattr(obj, name):
    """``getattr`` restricted to what mmengine pickles: a HistoryBuffer's registered statistics methods.

    A HistoryBuffer's state holds its statistics functions, which pickle as ``getattr(HistoryBuffer, 'mean')``.
    A general getattr would let a crafted file walk from any allowed object to ``__globals__`` and ``eval``.
    """
    # the built-in four are only added to _statistics_methods when the first buffer is created
    allowed = {'min', 'max', 'current', 'mean', *HistoryBuffer._statistics_methods}
    if obj is HistoryBuffer and name in allowed:
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'checkpoint asks for getattr({type(obj).__name__}, {name!r}); only the statistics methods of '
        'mmengine HistoryBuffer are allowed, anything else could run code')


def _checkpoint_bytes(*args):
    """``bytes`` as pickle protocol 2 uses it: ``bytes()`` for an empty bytes object (an empty HistoryBuffer's
    array holds one). ``bytes(n)`` would allocate n bytes: a two-line pickle could ask for terabytes."""
    if args and not isinstance(args[0], (bytes, bytearray, str)):
        raise pickle.UnpicklingError(f'checkpoint asks for bytes({type(args[0]).__name__}); only bytes() and '
                                     'bytes(<bytes or str>, ...) appear in checkpoints mmengine writes')
    return bytes(*args)


MMENGINE_CHECKPOINT_GLOBALS = [
    HistoryBuffer,
    np.ndarray,
    np.dtype,
    np._core.multiarray._reconstruct,
    np._core.multiarray.scalar,
    (_history_buffer_getattr, 'builtins.getattr'),
    (_checkpoint_bytes, 'builtins.bytes'),
] + [cls for cls in vars(np.dtypes).values() if isinstance(cls, type) and issubclass(cls, np.dtype)]

torch.serialization.add_safe_globals(MMENGINE_CHECKPOINT_GLOBALS)


# ----------------------------------------------------------------------------------------------------------
# 2. local checkpoint loading with errors that name the file
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


# ----------------------------------------------------------------------------------------------------------
# 3. mmdet SSDHead.loss_cls
_SSD_MODULE = 'mmdet.models.dense_heads.ssd_head'


def _fix_ssd_head(module):
    if not hasattr(module.SSDHead, 'loss_cls'):
        module.SSDHead.loss_cls = None


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs ``callback(module)`` right after ``name`` is first imported."""

    def __init__(self, name, callback):
        self.name, self.callback = name, callback

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        exec_module, callback = spec.loader.exec_module, self.callback

        def exec_then_fix(module):
            exec_module(module)
            callback(module)

        spec.loader.exec_module = exec_then_fix
        return spec


if _SSD_MODULE in sys.modules:
    _fix_ssd_head(sys.modules[_SSD_MODULE])
else:
    sys.meta_path.insert(0, _AfterImport(_SSD_MODULE, _fix_ssd_head))


# ----------------------------------------------------------------------------------------------------------
# 4. mmcv RoIAlign on channels-last maps: its kernels index the input's memory as contiguous NCHW, so the
# channels-last FPN maps of a deploy-mode EMO backbone gave wrong RoI features (Mask R-CNN detected other
# boxes than the plain backbone); the input is made contiguous first (a no-op for NCHW maps).
_ROI_ALIGN_MODULE = 'mmcv.ops.roi_align'


def _fix_roi_align(module):
    forward = module.RoIAlign.forward
    if getattr(forward, '_emo_mm_contiguous', False):
        return

    def contiguous_forward(self, input, rois):
        return forward(self, input.contiguous(), rois)

    contiguous_forward._emo_mm_contiguous = True
    module.RoIAlign.forward = contiguous_forward


if _ROI_ALIGN_MODULE in sys.modules:
    _fix_roi_align(sys.modules[_ROI_ALIGN_MODULE])
else:
    sys.meta_path.insert(0, _AfterImport(_ROI_ALIGN_MODULE, _fix_roi_align))
