"""emo_mm: EMO and EMOv2 backbones as OpenMMLab 2.x plugins (mmpretrain, mmdet, mmseg).

Importing the package activates the compatibility layer (``emo_mm.compat``) and registers the models.
"""
from . import compat  # noqa: F401  (side effect: torch.load allow-list, upstream fixes)
from . import models  # noqa: F401  (side effect: registration)

__version__ = '0.1.0'
