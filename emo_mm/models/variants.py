"""The EMO / EMOv2 variants: what the papers report, and how to build each one without a config file."""
from __future__ import annotations

import functools
import glob
import os.path as osp
from collections import OrderedDict
from typing import Optional, Tuple

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

# name: (backbone type, arch, params (M, classifier with 1000-class head), FLOPs at 224 (M))
VARIANTS: 'OrderedDict[str, Tuple[str, str, float, Optional[float]]]' = OrderedDict([
    ('EMO-1M', ('EMO', '1m', 1.361, 261.)),
    ('EMO-2M', ('EMO', '2m', 2.377, 439.)),
    ('EMO-5M', ('EMO', '5m', 5.109, 903.)),
    ('EMO-6M', ('EMO', '6m', 6.168, 961.)),
    ('EMOv2-1M', ('EMOv2', '1m', 1.461, 285.)),
    ('EMOv2-2M', ('EMOv2', '2m', 2.384, 487.)),
    ('EMOv2-5M', ('EMOv2', '5m', 5.126, 1035.)),
    ('EMOv2-20M', ('EMOv2', '20m', 20.195, None)),
])


def variant_backbone_cfg(name: str, **kwargs) -> dict:
    """The backbone dict of a variant, e.g. ``dict(type='emo_mm.EMO', arch='1m')``."""
    btype, arch = VARIANTS[name][:2]
    cfg = dict(type=f'emo_mm.{btype}', arch=arch)
    cfg.update(kwargs)
    return cfg


def find_cls_config(name: str) -> Optional[str]:
    """The ``configs/cls/*.py`` file of a variant, if the repo has one (matched by backbone type and arch)."""
    btype, arch = VARIANTS[name][:2]
    for path in sorted(glob.glob(osp.join(REPO_ROOT, 'configs', 'cls', '*.py'))):
        if _cls_config_backbone(path, osp.getmtime(path)) == (btype, arch):
            return path
    return None


@functools.lru_cache(maxsize=None)
def _cls_config_backbone(path: str, mtime: float) -> Optional[Tuple[str, str]]:
    from mmengine.config import Config
    try:
        cfg = Config.fromfile(path)
    except Exception:  # a config that does not parse is somebody else's problem
        return None
    bb = cfg.get('model', {}).get('backbone', {})
    return str(bb.get('type', '')).split('.')[-1], str(bb.get('arch', '')).lower()


def variant_cls_cfg(name: str, num_classes: int = 1000):
    """A classifier config of a variant: ``configs/cls/*.py`` when present, else backbone dict + linear head.

    The fallback is an mmpretrain ImageClassifier: backbone (with its final LayerNorm), global average
    pooling and a ``LinearClsHead`` (C4 -> 1000), i.e. the layout of the official classification models.
    """
    path = find_cls_config(name)
    if path is not None:
        return path
    from mmengine.config import Config
    return Config(dict(
        default_scope='mmpretrain',
        model=dict(
            type='ImageClassifier',
            backbone=variant_backbone_cfg(name, final_norm=True),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=num_classes, in_channels=-1,
                      loss=dict(type='CrossEntropyLoss')))))
