"""Parameters and FLOPs of any config, counted the way the EMO / EMOv2 papers did.

:func:`get_complexity` / :func:`params_and_flops`: fvcore's counter (ported as
:class:`mmengine.analysis.FlopAnalyzer`) on the eval-mode model, one multiply-add = one FLOP. What that
counter includes, checked op by op against the papers' numbers:

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
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from emo_mm.models.build import TensorForward, _pad_divisor, build_model, default_input_shape


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
    """``(params, flops)`` of any config: the numbers ``tools/analysis_tools/get_flops.py`` prints (README tables, tests)."""
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
