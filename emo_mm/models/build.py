"""Build the model of any config without a checkpoint, and run it as a plain tensor function.

* :func:`build_model` builds the model of any config (a bare backbone dict, an mmpretrain classifier, an
  mmdet detector or an mmseg segmentor) without loading any checkpoint, in eval mode.
* :class:`TensorForward` is ``forward(x) -> tensors`` for any of them: what is counted, exported and timed.
"""
from __future__ import annotations

import copy
from typing import Optional, Tuple

import torch
import torch.nn as nn

from emo_mm.utils.config import drop_pretrained, test_pipelines


def _backbone_out_channels(backbone: nn.Module) -> int:
    """Channels of the last feature map, found by a tiny forward (works for any backbone)."""
    with torch.no_grad():
        feats = backbone(torch.zeros(1, 3, 64, 64))
    if isinstance(feats, (list, tuple)):
        feats = feats[-1]
    return int(feats.shape[1])


def load_config(config, cfg_options: Optional[dict] = None):
    """Config from a path, a ``Config`` or a dict. A dict with a ``type`` (and no ``model``) is a model dict."""
    from mmengine.config import Config
    if isinstance(config, str):
        cfg = Config.fromfile(config)
    elif isinstance(config, Config):
        cfg = copy.deepcopy(config)
    elif isinstance(config, dict):
        config = copy.deepcopy(config)
        cfg = Config(dict(model=config) if 'type' in config and 'model' not in config else config)
    else:
        raise TypeError(f'config must be a path, Config or dict, got {type(config)}')
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if 'model' not in cfg:
        raise ValueError('the config has no `model`')
    return cfg


def _scope_of(cfg) -> Optional[str]:
    scope = cfg.get('default_scope', None)
    if scope is None:
        t = cfg.model.get('type', '')
        if isinstance(t, str) and '.' in t:
            scope = t.split('.')[0]
    return scope


def init_codebase(scope: Optional[str]) -> None:
    """Import the codebase named by ``default_scope`` and register its modules (sets the default scope)."""
    if scope == 'mmdet':
        from mmdet.utils import register_all_modules
        register_all_modules(init_default_scope=True)
    elif scope == 'mmseg':
        from mmseg.utils import register_all_modules
        register_all_modules(init_default_scope=True)
    elif scope == 'mmpretrain':
        from mmpretrain.utils import register_all_modules
        register_all_modules(init_default_scope=True)
    elif scope not in (None, 'emo_mm', 'mmengine'):
        from mmengine.registry import init_default_scope
        init_default_scope(scope)


def _models_registry(scope: Optional[str]):
    if scope == 'mmdet':
        from mmdet.registry import MODELS
    elif scope == 'mmseg':
        from mmseg.registry import MODELS
    elif scope == 'mmpretrain':
        from mmpretrain.registry import MODELS
    else:
        from emo_mm.registry import MODELS
    return MODELS


def model_kind(model: nn.Module) -> str:
    """'detector', 'segmentor', 'classifier' or 'backbone'."""
    for kind, mod, cls in (('detector', 'mmdet.models.detectors', 'BaseDetector'),
                           ('segmentor', 'mmseg.models.segmentors', 'BaseSegmentor'),
                           ('classifier', 'mmpretrain.models.classifiers', 'BaseClassifier')):
        try:
            base = getattr(__import__(mod, fromlist=[cls]), cls)
        except Exception:
            continue
        if isinstance(model, base):
            return kind
    return 'backbone'


def _fill_head_in_channels(model_cfg, registry) -> None:
    """``in_channels=-1`` in a classifier head means "the backbone's last width" (used by the fallback cfgs)."""
    head = model_cfg.get('head')
    if isinstance(head, dict) and head.get('in_channels') == -1:
        bb = registry.build(copy.deepcopy(model_cfg['backbone'])).eval()
        head['in_channels'] = _backbone_out_channels(bb)


def build_model(config, cfg_options: Optional[dict] = None, deploy: bool = False):
    """Build the model of ``config`` in eval mode with no checkpoint loaded. Returns ``(model, kind, cfg)``."""
    from mmengine.model import revert_sync_batchnorm
    cfg = load_config(config, cfg_options)
    scope = _scope_of(cfg)
    init_codebase(scope)
    registry = _models_registry(scope)
    model_cfg = copy.deepcopy(cfg.model)
    drop_pretrained(model_cfg)
    if scope == 'mmseg' or model_cfg.get('type') == 'EncoderDecoder':
        model_cfg['pretrained'] = None  # EncoderDecoder pushes it into the backbone
    _fill_head_in_channels(model_cfg, registry)
    model = registry.build(model_cfg)
    model = revert_sync_batchnorm(model)
    model.eval()
    if deploy:
        switch_to_deploy(model)
    return model, model_kind(model), cfg


def get_backbone(model: nn.Module) -> nn.Module:
    return model.backbone if hasattr(model, 'backbone') and isinstance(model.backbone, nn.Module) else model


def switch_to_deploy(model: nn.Module) -> nn.Module:
    """Call ``switch_to_deploy()`` on the backbone (the only part of these models that re-parameterizes)."""
    bb = get_backbone(model)
    if not hasattr(bb, 'switch_to_deploy'):
        raise AttributeError(f'{type(bb).__name__} has no switch_to_deploy()')
    bb.switch_to_deploy()
    model.eval()
    return model


def _hw(v) -> Optional[Tuple[int, int]]:
    if isinstance(v, int):
        return v, v
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) for x in v):
        return int(v[0]), int(v[1])
    return None


def default_input_shape(cfg, kind: str) -> Tuple[int, int]:
    """(H, W) of the dummy input: from the test pipeline when it is obvious, else the usual per-task size.

    classifier: CenterCrop crop_size (default 224); segmentor: data_preprocessor size / crop (default 512);
    detector: the test Resize scale (mmdet's scale is (W, H)), default 800x1333 (H x W); backbone: 224.
    """
    if kind == 'classifier':
        for pipe in test_pipelines(cfg):
            for t in pipe:
                if t.get('type', '').endswith('CenterCrop') and _hw(t.get('crop_size')):
                    return _hw(t['crop_size'])
        return 224, 224
    if kind == 'segmentor':
        dp = cfg.model.get('data_preprocessor') or cfg.get('data_preprocessor') or {}
        if _hw(dp.get('size')):
            return _hw(dp['size'])
        if _hw(cfg.get('crop_size')):
            return _hw(cfg['crop_size'])
        return 512, 512
    if kind == 'detector':
        for pipe in test_pipelines(cfg):
            for t in pipe:
                if t.get('type', '').split('.')[-1] == 'Resize':
                    wh = _hw(t.get('scale', t.get('img_scale')))
                    if wh:
                        return wh[1], wh[0]
        return 800, 1333
    return 224, 224


def _pad_divisor(model: nn.Module) -> int:
    dp = getattr(model, 'data_preprocessor', None)
    return int(getattr(dp, 'pad_size_divisor', 1) or 1)


class TensorForward(nn.Module):
    """``forward(x)`` -> tensors, for any kind of model (what is counted and exported).

    backbone: the backbone's outputs; classifier: ``extract_feat`` + head (logits); detector: backbone + neck
    + head forward (mmdet's ``mode='tensor'``, with minimal data samples for detectors that need them);
    segmentor: backbone + decode head (mmseg's ``_forward``, the auxiliary head does not run).
    """

    def __init__(self, model: nn.Module, kind: str):
        super().__init__()
        self.model = model
        self.kind = kind

    def forward(self, x):
        if self.kind == 'backbone':
            return self.model(x)
        if self.kind == 'classifier':
            return self.model(x, mode='tensor')
        if self.kind == 'detector':
            return self.model(x, self._det_samples(x), mode='tensor')
        if self.kind == 'segmentor':
            return self.model._forward(x)
        raise ValueError(self.kind)

    @staticmethod
    def _det_samples(x):
        from mmdet.structures import DetDataSample
        h, w = int(x.shape[-2]), int(x.shape[-1])
        samples = []
        for _ in range(x.shape[0]):
            s = DetDataSample()
            s.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), batch_input_shape=(h, w),
                                scale_factor=(1., 1.)))
            samples.append(s)
        return samples
