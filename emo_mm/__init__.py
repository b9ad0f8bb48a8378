"""emo_mm: EMO and EMOv2 backbones as OpenMMLab 2.x plugins (mmpretrain, mmdet, mmseg).

Importing the package activates the compatibility layer (:mod:`emo_mm.utils.compat`) and registers the
backbones, and the hook, transform and model wrapper that ``tools/train.py`` writes into a run's config (as
``emo_mm.<Name>``, which the stock tools resolve without ``custom_imports``, see :mod:`emo_mm.registry`).
"""
import warnings

# mmengine 0.10.7 imports the deprecated pkg_resources; that notice is for mmengine's maintainers, not users
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

from emo_mm.utils import compat  # noqa: F401,E402  (side effect: torch.load allow-list, upstream fixes)
from emo_mm import datasets, engine, models  # noqa: F401,E402  (side effect: registration)

__version__ = '0.1.0'
