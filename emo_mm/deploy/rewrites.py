"""Export-time twins of EMO's blocks: the same computation written in the ops onnxruntime runs fastest.

The eager forward of an EMO v1 attention block (``IRMB`` with ``attn_s``) is tuned for PyTorch (NCHW / channels_last
maps, SDPA, oneDNN); traced as it is, its window attention becomes ~37 onnxruntime nodes per block: window
partitions of q, k and the values with Split / Squeeze / Gather around them, the 1x1 ``qk`` conv with a layout
reorder on each side, a window reverse that moves every value alone (NCHW, neighbouring pixels lie in different
windows), a crop in two Slices. The twin :class:`WindowAttentionIRMB` (~30 nodes, every copy moving runs of
``dim_head`` values) computes the attention on the channels-last (B, H, W, C) map:

    NCHW -> NHWC (onnxruntime folds it into the previous conv's layout reorder), LayerNorm, zero pad to the grid
    q (scaled) and k: ONE Gemm on the padded map, cut into windows by one Reshape + Transpose, split
    values: the padded map (``attn_pre``, the released EMO weights) or ``v`` on it, cut the same way
    softmax(q k^T) v (k^T folded into the MatMul), windows back to the padded NHWC map (one Reshape + Transpose),
    crop (one Slice), NHWC -> NCHW (folded into the next conv's layout reorder)
    ``v`` after the attention (``attn_pre``) and the rest of the block: the block's own NCHW modules, so that
    onnxruntime keeps ``v``, the depthwise conv, the skip sum and ``proj`` in its blocked NCHWc layout

Measured (SSDLite-EMO-1M deploy at 320x320, onnxruntime 1.32 CPU, 1 thread, CPU time, interleaved): +10-19% over
the graph as traced (0.80-0.83x -> 0.90-0.94x stock SSDLite-MobileNetV2).

It computes what the block computes (same padding, unmasked padded tokens, same scale; the block's own
``conv_local``, ``se`` and ``proj`` modules run after it); only float32 rounding differs (~1e-6 relative).
``export_twin(module)`` returns the twin of a module it knows, else None; :mod:`emo_mm.deploy.export` swaps the
twins in while exporting end-to-end graphs and puts the originals back afterwards.
"""
import contextlib
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['WindowAttentionIRMB', 'export_twin', 'as_traced']


def _pointwise(module: nn.Module):
    """``(weight (C_in, C_out), bias, activation)`` of a 1x1 ungrouped ConvNormAct without norm (deploy or a
    plain ``qk`` / ``v``, whose norm is 'none'); None when the module is anything else."""
    conv, norm, act = (getattr(module, k, None) for k in ('conv', 'norm', 'act'))
    if not isinstance(conv, nn.Conv2d) or not isinstance(norm, nn.Identity):
        return None
    if conv.kernel_size != (1, 1) or conv.stride != (1, 1) or conv.padding != (0, 0) or conv.groups != 1:
        return None
    bias = conv.bias if conv.bias is not None else conv.weight.new_zeros(conv.out_channels)
    return conv.weight[:, :, 0, 0].t(), bias, act


class _CropLike(torch.autograd.Function):
    """The NHWC map ``x`` cut to the (H, W) of the NCHW map ``like``, exported as ONE Slice over both axes
    (the tracer writes a Slice per axis, each with its own shape arithmetic in a dynamic graph)."""

    @staticmethod
    def forward(ctx, x, like):
        return x[:, :like.shape[2], :like.shape[3]].clone()

    @staticmethod
    def symbolic(g, x, like):
        ends = g.op('Gather', g.op('Shape', like), g.op('Constant', value_t=torch.tensor([2, 3])), axis_i=0)
        return g.op('Slice', x, g.op('Constant', value_t=torch.tensor([0, 0])), ends,
                    g.op('Constant', value_t=torch.tensor([1, 2])))


def _crop(x, like):
    """The top-left (H, W) of ``like`` (NCHW) of the NHWC map ``x``: a view in eager mode, one Slice when
    exported."""
    if torch.jit.is_tracing():
        return _CropLike.apply(x, like)
    return x[:, :like.shape[2], :like.shape[3]]


class WindowAttentionIRMB(nn.Module):
    """EMO v1 ``IRMB`` with window attention ('remote' windows), eval mode, channels-last inside (see the module
    docstring). Built by :func:`export_twin` from a block; shares the block's parameters."""

    def __init__(self, block: nn.Module):
        super().__init__()
        ln = block.norm.norm
        self.ln_shape, self.ln_eps = ln.normalized_shape, ln.eps
        self.ln_weight, self.ln_bias = ln.weight, ln.bias
        self.heads, self.window, self.attn_pre = block.num_head, block.window_size, block.attn_pre
        w_qk, b_qk, _ = _pointwise(block.qk)
        dim = w_qk.shape[0]
        self.dim_head = dim // self.heads
        # the attention scale applied to q's weights: one Mul of the (N, heads, L, L) scores less (onnxruntime
        # would fold it into the score MatMul anyway); float32 rounding of the scaled weights only
        scale = torch.cat([w_qk.new_full((dim, ), self.dim_head ** -0.5), w_qk.new_ones(dim)])
        self.register_buffer('w_qk', w_qk * scale, persistent=False)
        self.register_buffer('b_qk', b_qk * scale, persistent=False)
        w_v, b_v, self.v_act = _pointwise(block.v)
        self.dim_value = w_v.shape[1] // self.heads  # values after ``v`` (not ``attn_pre``)
        self.register_buffer('w_v', w_v.contiguous(), persistent=False)
        self.register_buffer('b_v', b_v.clone(), persistent=False)
        self.v, self.conv_local, self.se, self.proj = block.v, block.conv_local, block.se, block.proj
        self.has_skip = block.has_skip

    def _windows(self, m, n1, n2, d, parts=1):
        """(B, ws*n1, ws*n2, parts*heads*d) -> (parts, B*n1*n2, heads, ws*ws, d) (no parts axis for one part):
        'remote' windows (a window holds every n1-th row and n2-th column), one Reshape + Transpose that moves
        runs of d values. Widths are Python ints, so that only n1, n2 are shape arithmetic in a dynamic graph."""
        ws = self.window
        m = m.reshape(-1, ws, n1, ws, n2, parts, self.heads, d).permute(5, 0, 2, 4, 6, 1, 3, 7)
        return m.reshape(-1, self.heads, ws * ws, d) if parts == 1 else m.reshape(parts, -1, self.heads, ws * ws, d)

    def _unwindow(self, o, n1, n2, d):
        """Inverse of :meth:`_windows` as in NHWC map (B, ws*n1, ws*n2, heads*d): runs of d values again (to
        NCHW, every value would move alone: neighbouring pixels lie in different windows)."""
        ws = self.window
        o = o.reshape(-1, n1, n2, self.heads, ws, ws, d).permute(0, 4, 1, 5, 2, 3, 6)
        return o.reshape(-1, ws * n1, ws * n2, self.heads * d)

    def forward(self, x):
        shortcut = x
        H, W = x.shape[2], x.shape[3]
        t = F.layer_norm(x.permute(0, 2, 3, 1), self.ln_shape, self.ln_weight, self.ln_bias, self.ln_eps)
        ws = self.window
        pad_b, pad_r = (ws - H % ws) % ws, (ws - W % ws) % ws
        t = F.pad(t, (0, 0, 0, pad_r, 0, pad_b))
        n1, n2 = (H + pad_b) // ws, (W + pad_r) // ws
        d, dv = self.dim_head, (self.dim_head if self.attn_pre else self.dim_value)
        q, k = self._windows(torch.matmul(t, self.w_qk) + self.b_qk, n1, n2, d, parts=2)
        values = t if self.attn_pre else self.v_act(torch.matmul(t, self.w_v) + self.b_v)
        # k^T as a Transpose of the last two axes: onnxruntime folds it into the MatMul (transB)
        o = torch.matmul(torch.matmul(q, k.transpose(-2, -1)).softmax(-1), self._windows(values, n1, n2, dv))
        # back to NCHW before ``v``, for onnxruntime's NCHWc convolutions (one layout reorder for v, the
        # depthwise conv and the skip sum; from NHWC each would need its own), on fewer channels than after v
        o = _crop(self._unwindow(o, n1, n2, dv), x).permute(0, 3, 1, 2)
        if self.attn_pre:  # pointwise, so after the crop: fewer pixels than the padded map
            o = self.v(o)
        y = self.se(self.conv_local(o))
        y = self.proj(y + o if self.has_skip else y)
        return y + shortcut if self.has_skip else y


def _is_emo_attention_block(module: nn.Module) -> bool:
    from emo_mm.models.backbones.emo import IRMB
    from emo_mm.models.layers.conv import LayerNorm2d
    return (type(module) is IRMB and module.attn_s and not module.training and module.window_size > 0
            and type(module.norm) is LayerNorm2d and _pointwise(module.qk) is not None
            and _pointwise(module.v) is not None)


_ENABLED = [True]


@contextlib.contextmanager
def as_traced():
    """Within this block :func:`export_twin` gives no twins: the blocks export as traced (to measure what the
    twins bring, e.g. ``tools/analysis_tools/deploy_bench.py --as-traced``)."""
    _ENABLED.append(False)
    try:
        yield
    finally:
        _ENABLED.pop()


def export_twin(module: nn.Module) -> Optional[nn.Module]:
    """The onnxruntime-friendly twin of ``module`` (same outputs), or None when there is none for it."""
    if _ENABLED[-1] and _is_emo_attention_block(module):
        return WindowAttentionIRMB(module)
    return None


class _AdaptiveAvgPool2dAnySize(nn.Module):
    """``nn.AdaptiveAvgPool2d`` written as two pooling matrices built from the input's size, so that it
    exports with a dynamic height and width (torch's ONNX exporter supports only output size 1 there; PSPNet's
    pyramid pooling uses 1, 2, 3, 6). Bin i of an axis of length n averages ``[floor(i n / s), ceil((i+1) n / s))``,
    PyTorch's definition."""

    def __init__(self, output_size):
        super().__init__()
        self.out_hw = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)

    @staticmethod
    def _matrix(n, s: int, like: torch.Tensor) -> torch.Tensor:
        i = torch.arange(s, device=like.device)
        start = torch.div(i * n, s, rounding_mode='floor')
        end = torch.div((i + 1) * n + s - 1, s, rounding_mode='floor')
        pos = torch.arange(n, device=like.device)
        m = ((pos[None, :] >= start[:, None]) & (pos[None, :] < end[:, None])).to(like.dtype)
        return m / m.sum(1, keepdim=True)

    def forward(self, x):
        mh = self._matrix(x.shape[2], self.out_hw[0], x)
        mw = self._matrix(x.shape[3], self.out_hw[1], x)
        return torch.matmul(torch.matmul(mh, x), mw.transpose(0, 1))


class _UpsampleAnySize(nn.Module):
    """mmseg's ``Upsample`` by a scale factor, without its ``int(size * factor)`` (frozen when traced):
    ``F.interpolate`` with the factor gives the same output size and, for the integer factors used, the same
    sampling positions."""

    def __init__(self, up: nn.Module):
        super().__init__()
        self.scale_factor, self.mode, self.align_corners = up.scale_factor, up.mode, up.align_corners

    def forward(self, x):
        return F.interpolate(x, scale_factor=self.scale_factor, mode=self.mode, align_corners=self.align_corners)


def _exportable_twin(module: nn.Module) -> Optional[nn.Module]:
    """The dynamic-size twin of a module whose forward freezes the input size when traced, or the
    onnxruntime-friendly twin of an EMO block (:mod:`emo_mm.deploy.rewrites`), else None."""
    twin = export_twin(module)
    if twin is not None:
        return twin
    if isinstance(module, nn.AdaptiveAvgPool2d) and module.output_size not in (1, (1, 1)):
        return _AdaptiveAvgPool2dAnySize(module.output_size)
    if type(module).__name__ == 'Upsample' and type(module).__module__.startswith('mmseg') and not module.size:
        return _UpsampleAnySize(module)
    return None


class ExportableModules:
    """Context manager: swap modules that freeze the input size (adaptive average pools with output size > 1,
    mmseg's ``Upsample``) for their dynamic twins while exporting, and put the originals back afterwards."""

    def __init__(self, model: nn.Module):
        self.swaps = [(parent, name, child, twin) for parent in model.modules()
                      for name, child in parent.named_children() if (twin := _exportable_twin(child)) is not None]

    def __enter__(self):
        for parent, name, _, twin in self.swaps:
            setattr(parent, name, twin)

    def __exit__(self, *exc):
        for parent, name, child, _ in self.swaps:
            setattr(parent, name, child)
