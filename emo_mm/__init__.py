"""emo_mm: EMO and EMOv2 backbones as OpenMMLab 2.x plugins (mmpretrain, mmdet, mmseg).

Importing the package activates the compatibility layer (``emo_mm.compat``) and registers the models.
"""
from . import compat  # noqa: F401  (side effect: torch.load allow-list, upstream fixes)
from . import models  # noqa: F401  (side effect: registration)
# hooks, transforms and wrappers that tools/train.py writes into a run's dumped config (as emo_mm.<Name>, which
# stock tools resolve without custom_imports, see emo_mm.registry): registered on import as well
from . import checkpointing, data_checks, distributed  # noqa: F401,E402

__version__ = '0.1.0'
