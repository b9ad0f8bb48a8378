"""Shared logic of ``tools/get_flops.py``, ``tools/export_onnx.py`` and ``tools/benchmark.py``.

* :func:`build_model` builds the model of any config (a bare backbone dict, an mmpretrain classifier, an
  mmdet detector or an mmseg segmentor) without loading any checkpoint, in eval mode.
* :func:`get_complexity` / :func:`params_and_flops` count parameters and FLOPs the way the EMO / EMOv2
  papers did: fvcore's counter (ported as :class:`mmengine.analysis.FlopAnalyzer`) on the eval-mode model,
  one multiply-add = one FLOP. What that counter includes, checked op by op against the papers' numbers:

  - counted: convolutions, linear layers, ``matmul``/``bmm``/``einsum`` (so the attention ``q @ k^T`` and
    ``attn @ v`` products are counted), BatchNorm (eval: 2 FLOPs per element with affine), LayerNorm /
    GroupNorm (5 per element with affine), adaptive average pooling, bilinear/nearest upsampling;
  - not counted (fvcore's defaults): softmax, activations (SiLU, GELU, sigmoid), elementwise add/mul
    (residuals, SE gating, layer scale), ``mean`` (global pooling, SE squeeze), padding and reshapes.

  With these rules EMO-1M/2M/5M/6M count 0.261/0.439/0.903/0.961 GFLOPs at 224, equal to the papers'
  tables (which were made with fvcore on the eval-mode model; a train-mode trace counts BatchNorm as 5
  FLOPs per element and gives ~1-3% more). ``aten::scaled_dot_product_attention`` (not known to fvcore) is
  given a handle here that counts its two matmuls, so a backbone using SDPA counts the same.
  Downstream configs (input from the config: SSDLite 320/512, RetinaNet 800x1344 after padding to 32,
  seg 512x512) reproduce the papers' params and, within their rounding, FLOPs; known differences: the EMO v1
  det/seg tables were made with mmcv's counter, which does not count the attention matmuls (e.g.
  EMO-5M DeepLabv3: 6.61G here, 5.86G without matmuls, paper 5.8G); the EMOv2 seg params exclude the
  auxiliary head (mmseg 1.x get_flops; ``no_aux_head=True``); the EMOv2 RetinaNet FLOPs (142-220G) were
  averaged over real COCO images, smaller than the 800x1344 used here (166-185G).
* :func:`export_onnx` / :func:`check_onnx` export a backbone or classifier with dynamic batch and spatial
  axes and compare onnxruntime with PyTorch at another size.
* :class:`ThroughputCase` / :func:`fastest_layout_case` time CPU throughput for ``tools/benchmark.py``.
"""
from __future__ import annotations

import copy
import functools
import glob
import os
import os.path as osp
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

# --------------------------------------------------------------------------------------------------
# Variants: what the papers report, and how to build each one without a config file.
# --------------------------------------------------------------------------------------------------
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


def _backbone_out_channels(backbone: nn.Module) -> int:
    """Channels of the last feature map, found by a tiny forward (works for any backbone)."""
    with torch.no_grad():
        feats = backbone(torch.zeros(1, 3, 64, 64))
    if isinstance(feats, (list, tuple)):
        feats = feats[-1]
    return int(feats.shape[1])


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


# --------------------------------------------------------------------------------------------------
# Config loading / model building
# --------------------------------------------------------------------------------------------------
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
    import emo_mm  # noqa: F401  (registers EMO / EMOv2)
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


def disable_pretrained(model_cfg):
    """Recursively drop every checkpoint reference (``pretrained`` paths, ``init_cfg`` of type Pretrained)."""
    if isinstance(model_cfg, dict):
        for key in list(model_cfg.keys()):
            val = model_cfg[key]
            if key == 'pretrained' and isinstance(val, str):
                model_cfg[key] = None
            elif key == 'init_cfg' and _is_pretrained_init(val):
                model_cfg[key] = None
            else:
                disable_pretrained(val)
    elif isinstance(model_cfg, (list, tuple)):
        for v in model_cfg:
            disable_pretrained(v)
    return model_cfg


def _is_pretrained_init(init_cfg) -> bool:
    if isinstance(init_cfg, dict):
        return init_cfg.get('type') == 'Pretrained' or 'checkpoint' in init_cfg
    if isinstance(init_cfg, (list, tuple)):
        return any(_is_pretrained_init(c) for c in init_cfg)
    return False


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
    model_cfg = disable_pretrained(copy.deepcopy(cfg.model))
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


# --------------------------------------------------------------------------------------------------
# Input shapes and the tensor forward
# --------------------------------------------------------------------------------------------------
def _iter_pipelines(cfg):
    for key in ('test_dataloader', 'val_dataloader'):
        dl = cfg.get(key)
        if isinstance(dl, dict):
            ds = dl.get('dataset', {})
            while isinstance(ds, dict) and 'dataset' in ds and 'pipeline' not in ds:
                ds = ds['dataset']
            if isinstance(ds, dict) and isinstance(ds.get('pipeline'), (list, tuple)):
                yield ds['pipeline']
    for key in ('test_pipeline', 'val_pipeline'):
        if isinstance(cfg.get(key), (list, tuple)):
            yield cfg[key]


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
        for pipe in _iter_pipelines(cfg):
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
        for pipe in _iter_pipelines(cfg):
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


# --------------------------------------------------------------------------------------------------
# Complexity
# --------------------------------------------------------------------------------------------------
def _sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """q @ k^T and attn @ v of ``scaled_dot_product_attention`` (fvcore has no handle for it)."""
    from mmengine.analysis.jit_handles import get_shape
    q, k, v = (get_shape(i) for i in inputs[:3])
    batch = 1
    for d in q[:-2]:
        batch *= d
    lq, e = q[-2], q[-1]
    lk, ev = k[-2], v[-1]
    return batch * lq * lk * (e + ev)


def flop_analyzer(module: nn.Module, inputs: tuple):
    from mmengine.analysis import FlopAnalyzer
    fa = FlopAnalyzer(module, inputs)
    fa.set_op_handle('aten::scaled_dot_product_attention', _sdpa_flop_jit)
    fa.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings('none')
    return fa


def get_complexity(config, shape: Optional[Sequence[int]] = None, cfg_options: Optional[dict] = None,
                   detail: bool = False, max_depth: int = 3, batch: int = 1, no_aux_head: bool = False
                   ) -> Dict[str, Any]:
    """Params and FLOPs of any config (see the module docstring for what is counted).

    ``shape``: None (the config's default, see :func:`default_input_shape`), ``H`` or ``(H, W)``; the input
    is padded up to the data preprocessor's ``pad_size_divisor`` like a real test batch would be.
    Params are those of the whole model, a segmentor's auxiliary head included (mmcv / mmseg 0.x
    convention, used by the EMO v1 seg table); ``no_aux_head=True`` drops it first, like mmseg 1.x's
    get_flops (EMOv2 seg table). FLOPs never include the auxiliary head (it does not run at test time).
    Returns a dict with params, flops (per image), input_shape (1, 3, H, W), kind, by_operator, table.
    """
    model, kind, cfg = build_model(config, cfg_options)
    if no_aux_head and getattr(model, 'auxiliary_head', None) is not None:
        model.auxiliary_head = None
    if shape is None:
        h, w = default_input_shape(cfg, kind)
    else:
        shape = [shape] if isinstance(shape, int) else list(shape)
        h, w = (shape[0], shape[0]) if len(shape) == 1 else (shape[0], shape[1])
    div = _pad_divisor(model)
    h, w = -(-h // div) * div, -(-w // div) * div
    x = torch.randn(batch, 3, h, w)
    wrapper = TensorForward(model, kind).eval()
    with torch.no_grad():
        fa = flop_analyzer(wrapper, (x,))
        flops = fa.total() / batch
        by_op = {k: v / batch for k, v in fa.by_operator().items()}
        unsupported = dict(fa.unsupported_ops())
    params = sum(p.numel() for p in model.parameters())
    out = dict(params=params, flops=flops, input_shape=(1, 3, h, w), kind=kind, by_operator=by_op,
               unsupported_ops=unsupported, model=model)
    if detail:
        from mmengine.analysis.print_helper import complexity_stats_table
        out['table'] = complexity_stats_table(flops=fa, max_depth=max_depth, show_param_shapes=False)
    return out


def params_and_flops(config, shape: Optional[Sequence[int]] = None, cfg_options: Optional[dict] = None
                     ) -> Tuple[int, float]:
    """``(params, flops)`` of any config: the numbers ``tools/get_flops.py`` prints (README tables, tests)."""
    res = get_complexity(config, shape, cfg_options)
    return res['params'], res['flops']


def format_complexity(res: Dict[str, Any]) -> str:
    lines = [f"Model kind: {res['kind']}",
             f"Input shape: {tuple(res['input_shape'])}",
             f"Params: {res['params'] / 1e6:.3f} M",
             f"FLOPs: {res['flops'] / 1e9:.3f} G",
             'FLOPs by operator: ' + ', '.join(f'{k} {v / 1e6:.2f} M' for k, v in
                                               sorted(res['by_operator'].items(), key=lambda kv: -kv[1]))]
    if res.get('unsupported_ops'):
        lines.append('Not counted (no FLOP rule, as in fvcore): ' +
                     ', '.join(f'{k} x{v}' for k, v in sorted(res['unsupported_ops'].items())))
    if res.get('table'):
        lines += ['', res['table']]
    return '\n'.join(lines)


# --------------------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------------------
def _flatten_outputs(out) -> List[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    res = []
    for o in out:
        res += _flatten_outputs(o)
    return res


class _FlatForward(nn.Module):
    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x):
        outs = _flatten_outputs(self.module(x))
        return outs[0] if len(outs) == 1 else tuple(outs)


def export_onnx(model: nn.Module, kind: str, out_file: str, shape: Sequence[int] = (224, 224), opset: int = 17,
                batch: int = 1) -> Tuple[List[str], List[str]]:
    """Export the tensor forward of ``model`` (classifier: logits; backbone: the feature tuple) to ONNX.

    Batch, height and width are dynamic axes. Uses the TorchScript exporter (``dynamo=False``): it records
    the shape arithmetic of the model (e.g. the attention window padding computed from ``x.shape``) as graph
    ops, so one file runs at any size. (The dynamo exporter, tried with torch 2.14, specialises the padded
    window grid to the export size: a file exported at 224 fails at 256x320 in a Reshape.)
    Returns ``(output names, tracer warnings)``: the warnings name the source lines where a tensor value
    became a Python constant during tracing, i.e. where the graph may be fixed to the export size.
    """
    net = _FlatForward(TensorForward(model, kind)).eval()
    x = torch.randn(batch, 3, *shape)
    with torch.no_grad():
        n_out = len(_flatten_outputs(net(x)))
    out_names = ['output'] if n_out == 1 else [f'feat{i}' for i in range(n_out)]
    dyn = {'input': {0: 'batch', 2: 'height', 3: 'width'}}
    for i, name in enumerate(out_names):
        dyn[name] = {0: 'batch'} if kind == 'classifier' else {0: 'batch', 2: f'h{i}', 3: f'w{i}'}
    os.makedirs(osp.dirname(osp.abspath(out_file)), exist_ok=True)
    import warnings
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        torch.onnx.export(net, (x,), out_file, input_names=['input'], output_names=out_names,
                          opset_version=opset, dynamic_axes=dyn, do_constant_folding=True, dynamo=False)
    # TracerWarnings name the source lines where a tensor value (e.g. a shape) became a Python constant,
    # i.e. where the graph may be specialised to the export size.
    tracer = sorted({f'{osp.relpath(w.filename, REPO_ROOT)}:{w.lineno}: {str(w.message).split(" might ")[0]}'
                     for w in caught if issubclass(w.category, torch.jit.TracerWarning)})
    return out_names, tracer


def check_onnx(model: nn.Module, kind: str, onnx_file: str, shape: Sequence[int], batch: int = 1,
               seed: int = 0) -> Tuple[float, float]:
    """``(max abs diff, max abs PyTorch output)`` of onnxruntime vs PyTorch (fp32, CPU) on a random input.

    The second number is the output scale: fp32 kernels that sum in another order differ by a few ulps of
    the values involved, so the diff is only meaningful relative to it.
    """
    import numpy as np
    import onnxruntime as ort
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, *shape, generator=g)
    with torch.no_grad():
        ref = _flatten_outputs(TensorForward(model, kind)(x))
    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, torch.get_num_threads())
    so.log_severity_level = 3
    sess = ort.InferenceSession(onnx_file, so, providers=['CPUExecutionProvider'])
    outs = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    if len(outs) != len(ref):
        raise AssertionError(f'onnx gave {len(outs)} outputs, PyTorch {len(ref)}')
    diff, scale = 0.0, 0.0
    for o, r in zip(outs, ref):
        if tuple(o.shape) != tuple(r.shape):
            raise AssertionError(f'shape mismatch at {tuple(shape)}: onnx {o.shape} vs torch {tuple(r.shape)}')
        diff = max(diff, float(np.abs(o - r.numpy()).max()))
        scale = max(scale, float(r.abs().max()))
    return diff, scale


# --------------------------------------------------------------------------------------------------
# CPU throughput
# --------------------------------------------------------------------------------------------------
# mmpretrain peers of similar size: name -> model name in mmpretrain's model zoo (built with pretrained=False)
PEERS: 'OrderedDict[str, str]' = OrderedDict([
    ('MobileNetV2-1.0x', 'mobilenet-v2_8xb32_in1k'),
    ('EdgeNeXt-xxsmall', 'edgenext-xxsmall_3rdparty_in1k'),
    ('EdgeNeXt-xsmall', 'edgenext-xsmall_3rdparty_in1k'),
    ('MobileViT-xxsmall', 'mobilevit-xxsmall_3rdparty_in1k'),
    ('MobileViT-xsmall', 'mobilevit-xsmall_3rdparty_in1k'),
])
REFERENCE_PEER = 'EdgeNeXt-xxsmall'


def build_bench_model(name: str, deploy: bool = False) -> Tuple[nn.Module, str]:
    """An eval-mode classifier (1000 classes) of an EMO variant or an mmpretrain peer; returns (model, kind)."""
    if name in VARIANTS:
        model, kind, _ = build_model(variant_cls_cfg(name), deploy=deploy)
        return model, kind
    if name in PEERS:
        if deploy:
            raise ValueError(f'{name} has no deploy mode')
        init_codebase('mmpretrain')
        from mmpretrain import get_model
        return get_model(PEERS[name], pretrained=False).eval(), 'classifier'
    raise KeyError(f'unknown model {name}; known: {list(VARIANTS) + list(PEERS)}')


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory in the process instead of returning it to the OS.

    By default glibc serves blocks over its (dynamic, at most 32 MiB) mmap threshold with fresh ``mmap``
    calls and trims the heap top on free, so every large activation of a forward pass is new memory that
    faults in page by page: measured ~37,600 minor faults per EMO-1M forward at batch 16 (224), a third of
    its run time in the kernel. Raising the mmap threshold to 1 GiB and disabling trimming (the same as
    ``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_``, what jemalloc/tcmalloc do by design) makes
    repeated forwards reuse their buffers. Process-wide, so it applies to every model of a benchmark run
    alike. Returns False where the C library is not glibc (nothing changed).
    """
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


def _run(fn, x, n: int) -> float:
    import time
    t0 = time.perf_counter()
    for _ in range(n):
        fn(x)
    return time.perf_counter() - t0


class ThroughputCase:
    """One model at one batch / size in one memory layout, ready to be timed (eval, inference_mode).

    ``calibrate()`` warms up and picks the iterations per timed repeat (at least ``min_time`` s);
    ``time_once()`` returns images/s of one repeat. Timing several cases round-robin (repeat 1 of every
    model, then repeat 2...) spreads load changes of a shared machine over all models alike.
    """

    def __init__(self, model: nn.Module, kind: str, batch: int, size: int, layout: str = 'nchw'):
        self.model, self.batch, self.layout = model, batch, layout
        self.fwd = TensorForward(model, kind).eval()
        self.x = torch.randn(batch, 3, size, size)
        self.n = 1

    def _set_layout(self):
        fmt = torch.channels_last if self.layout == 'channels_last' else torch.contiguous_format
        self.model.to(memory_format=fmt)
        self.x = self.x.contiguous(memory_format=fmt)

    def calibrate(self, min_time: float = 0.3, warmup: int = 2) -> 'ThroughputCase':
        self._set_layout()
        with torch.inference_mode():
            for _ in range(warmup):
                self.fwd(self.x)
            dt = _run(self.fwd, self.x, 1)
        self.n = max(1, int(min_time / max(dt, 1e-6)))
        return self

    def time_once(self) -> float:
        self._set_layout()
        with torch.inference_mode():
            return self.n * self.batch / _run(self.fwd, self.x, self.n)


def fastest_layout_case(model: nn.Module, kind: str, batch: int, size: int, min_time: float = 0.3
                        ) -> ThroughputCase:
    """Probe NCHW and channels_last (warm-up, then timed in the order A B B A, which cancels a linear
    drift of the machine's speed); the calibrated case of the faster."""
    cases = [ThroughputCase(model, kind, batch, size, lay).calibrate(min_time, warmup=1)
             for lay in ('nchw', 'channels_last')]
    rates = [0.0, 0.0]
    for i in (0, 1, 1, 0):
        rates[i] += cases[i].time_once()
    best = cases[0] if rates[0] >= rates[1] else cases[1]
    best._set_layout()
    return best
