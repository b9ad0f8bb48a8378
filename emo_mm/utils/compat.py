"""Compatibility layer for today's stack, active as soon as ``emo_mm`` is imported.

Nothing here edits installed files; each fix is applied at run time and is the smallest one that works:

1. torch >= 2.6 loads checkpoints with ``weights_only=True`` and mmengine 0.10.7 never says otherwise,
   so ``--resume``, ``load_from`` and ``tools/test.py`` refuse the checkpoints mmengine itself wrote
   (open-mmlab/mmengine#1655). We allow exactly the globals such checkpoints contain. ``builtins.getattr``
   is among them (HistoryBuffer pickles bound methods through it) and would open a door to arbitrary code,
   so it is replaced by a getattr that only resolves a HistoryBuffer's statistics methods; ``builtins.bytes``
   (an empty HistoryBuffer) by one that cannot be asked to allocate memory.
2. Local checkpoint reads go through :func:`emo_mm.utils.checkpoint_io.load_local_checkpoint` (registered
   with mmengine's CheckpointLoader when this module is imported).
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
import pickle
import sys

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer

from emo_mm.utils import checkpoint_io  # noqa: F401  (side effect: registers the local checkpoint loader)


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
