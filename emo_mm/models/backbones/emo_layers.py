"""Building blocks shared by the EMO (v1) and EMOv2 backbones.

Every module keeps the submodule names of the official code (``conv``/``norm``/``act``, ``qk``, ``v``,
``se.conv_reduce``...), so official state_dicts load without renaming. Numerics follow the official
implementation exactly (the EMO reference specification, sections 1-2): BN and LN eps 1e-6, exact erf GELU, zero padding
to the window without attention mask, strided ("remote") and contiguous ("close") window partitions.

Deploy support: every module that can fold something exposes ``switch_to_deploy()`` for its own direct
parts (the backbone walks all modules); the window attention can run through
:func:`torch.nn.functional.scaled_dot_product_attention`. The oneDNN kernels that deploy convs run on CPU
live in :mod:`.onednn_deploy`.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks import DropPath
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from .onednn_deploy import PackedWeight, deploy_act, deploy_conv, onednn_inference

__all__ = [
    'DropPath', 'LayerNorm2d', 'ConvNormAct', 'SqueezeExcite', 'LayerScale2d', 'build_norm', 'build_act',
    'fold_bn_into_conv', 'fold_affine_into_next_conv', 'compose_pointwise_convs', 'bn_affine',
    'window_partition', 'window_reverse', 'ew_mhsa', 'EMOBackboneBase',
]

EPS = 1e-6  # official eps for both BatchNorm2d and LayerNorm2d


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of an NCHW map (official layout: the LayerNorm lives in ``.norm``)."""

    def __init__(self, num_channels, eps=EPS):
        super().__init__()
        self.norm = nn.LayerNorm(num_channels, eps=eps)

    def forward(self, x):
        # functional call with direct dict lookups: a module call and three Module.__getattr__ (~0.4 us
        # each) less per norm, which shows at batch 1 (see ConvNormAct.forward)
        n = self._modules['norm']
        p = n._parameters
        x = x.permute(0, 2, 3, 1)
        if 'weight' not in p or 'bias' not in p:  # parametrized affine: the module computes it
            return n(x).permute(0, 3, 1, 2)
        return F.layer_norm(x, n.normalized_shape, p['weight'], p['bias'], n.eps).permute(0, 3, 1, 2)


def build_norm(name, num_channels):
    """``'bn_2d'`` -> BatchNorm2d(eps=1e-6), ``'ln_2d'`` -> LayerNorm2d(eps=1e-6), ``'none'`` -> Identity."""
    if name == 'bn_2d':
        return nn.BatchNorm2d(num_channels, eps=EPS)
    if name == 'ln_2d':
        return LayerNorm2d(num_channels, eps=EPS)
    if name == 'none':
        return nn.Identity()
    raise ValueError(f"unknown norm '{name}' (expected 'bn_2d', 'ln_2d' or 'none')")


_ACTS = {'silu': nn.SiLU, 'gelu': nn.GELU, 'relu': nn.ReLU, 'none': nn.Identity}


def build_act(name):
    """``'silu'``, ``'gelu'`` (exact erf form, like timm's GELU), ``'relu'`` or ``'none'``."""
    if name not in _ACTS:
        raise ValueError(f"unknown activation '{name}' (expected one of {sorted(_ACTS)})")
    return _ACTS[name]()


def bn_affine(bn):
    """Per-channel ``(scale, shift)`` such that ``bn(x) == x * scale + shift`` in eval mode."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def _bias_or_zeros(conv):
    """``conv.bias``, or zeros of the output width when the conv has none."""
    return conv.bias if conv.bias is not None else conv.weight.new_zeros(conv.out_channels)


@torch.no_grad()
def fold_bn_into_conv(conv, bn):
    """Return a Conv2d with bias equal to ``bn(conv(x))`` (eval-mode statistics)."""
    scale, shift = bn_affine(bn)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
    fused = fused.to(conv.weight.device, conv.weight.dtype)
    fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    fused.bias.copy_(_bias_or_zeros(conv) * scale + shift)
    return fused


@torch.no_grad()
def fold_affine_into_next_conv(scale, shift, conv):
    """Return a Conv2d equal to ``conv(x * scale + shift)`` for a 1x1, unpadded, ungrouped ``conv``."""
    assert conv.kernel_size == (1, 1) and conv.padding == (0, 0) and conv.groups == 1
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, 1, conv.stride, bias=True)
    fused = fused.to(conv.weight.device, conv.weight.dtype)
    weight = conv.weight[:, :, 0, 0]
    fused.weight.copy_((weight * scale.reshape(1, -1))[:, :, None, None])
    fused.bias.copy_(_bias_or_zeros(conv) + weight @ shift)
    return fused


@torch.no_grad()
def compose_pointwise_convs(first, second):
    """Return one Conv2d equal to ``second(first(x))`` for two 1x1, stride-1, unpadded, ungrouped convs."""
    for conv in (first, second):
        assert conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.padding == (0, 0) and conv.groups == 1
    w1, w2 = first.weight[:, :, 0, 0], second.weight[:, :, 0, 0]
    fused = nn.Conv2d(first.in_channels, second.out_channels, 1, bias=True).to(w2.device, w2.dtype)
    fused.weight.copy_((w2 @ w1)[:, :, None, None])
    fused.bias.copy_(w2 @ _bias_or_zeros(first) + _bias_or_zeros(second))
    return fused


class ConvNormAct(nn.Module):
    """Conv2d -> norm -> act with the official padding ``ceil(((k - 1) * dilation + 1 - stride) / 2)``.

    (EMO v1 writes ``ceil((k - stride) / 2)``; both agree for dilation 1, the only value EMO uses.)
    """

    def __init__(self, dim_in, dim_out, kernel_size, stride=1, dilation=1, groups=1, bias=False,
                 norm='none', act='none'):
        super().__init__()
        padding = math.ceil(((kernel_size - 1) * dilation + 1 - stride) / 2)
        self.conv = nn.Conv2d(dim_in, dim_out, kernel_size, stride, padding, dilation, groups, bias=bias)
        self.norm = build_norm(norm, dim_out)
        self.act = build_act(act)
        self.fused = False  # deploy: norm folded, forward = deploy_conv (one call instead of three modules)
        self.packed = PackedWeight()

    def forward(self, x):
        if self.fused:
            # submodules straight from _modules: Module.__getattr__ costs ~0.4 us a lookup, and at batch 1
            # on CPU a deploy conv's own Python time is a sizeable part of its ~30-60 us
            m = self._modules
            return deploy_conv(x, m['conv'], m['act'], self.packed)
        return self.act(self.norm(self.conv(x)))

    def switch_to_deploy(self):
        """Fold a BatchNorm into the conv (no-op for other norms, idempotent) and run the activation
        in place: it always acts on the fresh conv output, and reusing that buffer instead of allocating
        a second one matters on CPU, where a large free buffer (e.g. EMO stage 1's 96x112x112 map) goes
        back to the OS and every fresh one costs page faults."""
        if isinstance(self.norm, nn.BatchNorm2d):
            self.conv = fold_bn_into_conv(self.conv, self.norm)
            self.norm = nn.Identity()
        if hasattr(self.act, 'inplace'):  # SiLU / ReLU (GELU has no in-place form)
            self.act.inplace = True
        if isinstance(self.norm, nn.Identity):
            self.fused = True


class SqueezeExcite(nn.Module):
    """timm's ``SqueezeExcite`` as used by EMO v1's stem (names ``conv_reduce``/``conv_expand``)."""

    def __init__(self, dim, rd_ratio=1.0, act='silu'):
        super().__init__()
        rd_dim = round(dim * rd_ratio)
        self.conv_reduce = nn.Conv2d(dim, rd_dim, 1, bias=True)
        self.act1 = build_act(act)
        self.conv_expand = nn.Conv2d(rd_dim, dim, 1, bias=True)
        self.deploy = False

    def forward(self, x):
        if self.deploy and not torch.is_grad_enabled():
            return self._forward_inference(x)
        s = x.mean((2, 3), keepdim=True)
        s = self.conv_expand(self.act1(self.conv_reduce(s)))
        return x * s.sigmoid()

    def _forward_inference(self, x):
        """Same values with the 1x1 convs on the pooled (B, C) vector as linear layers (a 1x1 Conv2d on a
        1x1 map takes PyTorch's slow generic conv path)."""
        r, e = self.conv_reduce, self.conv_expand
        s = F.linear(x.mean((2, 3)), r.weight.flatten(1), r.bias)
        s = F.linear(deploy_act(self.act1)(s), e.weight.flatten(1), e.bias)
        return x * s.sigmoid_()[:, :, None, None]

    def switch_to_deploy(self):
        self.deploy = True


class LayerScale2d(nn.Module):
    """Per-channel scale ``gamma`` of shape (1, C, 1, 1) (EMOv2 ``ls``)."""

    def __init__(self, dim, init_value=1e-6):
        super().__init__()
        self.gamma = nn.Parameter(init_value * torch.ones(1, dim, 1, 1))

    def forward(self, x):
        return x * self.gamma


# --------------------------------------------------------------------------------------------------
# Window attention (EW-MHSA)
#
# A map of padded size (H, W) = (wh * n1, ww * n2) is cut into n1 * n2 windows of wh * ww tokens:
#   'remote' (EMO v1 and EMOv2 EW_MHSA_Remote): b c (h1 n1) (w1 n2) -> (b n1 n2) c h1 w1
#            (a window holds tokens spaced n1 / n2 pixels apart across the whole map)
#   'close'  (EMOv2 EW_MHSA_Close):             b c (n1 h1) (n2 w1) -> (b n1 n2) c h1 w1
#            (contiguous ws x ws windows)
# Channels are split as (chunks, heads, dim_head), the official '(qk heads dim_head)' order.

def window_partition(x, window, num_heads, mode, chunks=1):
    """(B, chunks*heads*d, H, W) -> (chunks, B*n1*n2, heads, wh*ww, d) with one reshape+permute."""
    part = _partition_view(x, window, num_heads, mode, chunks)
    return part.reshape(chunks, -1, num_heads, window[0] * window[1], part.shape[-1])


def _partition_view(x, window, num_heads, mode, chunks=1):
    """The windows of :func:`window_partition` as a strided view of ``x``: (chunks, B, n1, n2, heads, wh,
    ww, d)."""
    B, C, H, W = x.shape
    wh, ww = window
    n1, n2 = H // wh, W // ww
    d = C // (chunks * num_heads)
    if mode == 'remote':
        return x.reshape(B, chunks, num_heads, d, wh, n1, ww, n2).permute(1, 0, 5, 7, 2, 4, 6, 3)
    if mode == 'close':
        return x.reshape(B, chunks, num_heads, d, n1, wh, n2, ww).permute(1, 0, 4, 6, 2, 5, 7, 3)
    raise ValueError(f"unknown window partition '{mode}' (expected 'remote' or 'close')")


def window_reverse(x, batch, size, window, mode, channels_last=False):
    """Inverse of :func:`window_partition` for one chunk: (B*n1*n2, heads, wh*ww, d) -> (B, heads*d, H, W).

    ``channels_last``: write the map in NHWC memory order (returned as an NCHW view, like a channels_last
    tensor); the copy then moves runs of ``d`` contiguous values, 4-6x faster than gathering NCHW planes.
    """
    H, W = size
    x = _windows_in_map_order(x, batch, size, window, mode, channels_last)
    if channels_last:
        return x.reshape(batch, H, W, -1).permute(0, 3, 1, 2)
    return x.reshape(batch, -1, H, W)


def _windows_in_map_order(x, batch, size, window, mode, channels_last):
    """The view of windows (B*n1*n2, heads, wh*ww, d) whose memory order, once made dense, is the map's:
    (B, h1, n1, w1, n2, heads, d) (remote, NHWC) / (B, n1, h1, n2, w1, heads, d) (close, NHWC), and
    (B, heads, d, h1, n1, w1, n2) / (B, heads, d, n1, h1, n2, w1) for NCHW."""
    H, W = size
    wh, ww = window
    n1, n2 = H // wh, W // ww
    _, heads, _, d = x.shape
    x = x.reshape(batch, n1, n2, heads, wh, ww, d)
    if channels_last:
        return x.permute(0, 4, 1, 5, 2, 3, 6) if mode == 'remote' else x.permute(0, 1, 4, 2, 5, 3, 6)
    return x.permute(0, 3, 6, 4, 1, 5, 2) if mode == 'remote' else x.permute(0, 3, 6, 1, 4, 2, 5)


# score matrices (fp32 bytes) per slice of windows in :func:`_attend_in_slices`: small enough for L2
ATTENTION_SLICE_BYTES = 512 << 10


def _attend_in_slices(q, k, val, scale):
    """Eval-only softmax(q k^T * scale) val, written out on slices of windows whose score matrices fit in
    L2: the CPU inference form of the deploy attention, same values as SDPA within ~1e-6. PyTorch's CPU
    flash attention needs equal q and value head widths; EMOv2's value heads are wider (expanded), so SDPA
    takes its math kernel, which also makes a masked-softmax pass per call: this form measured 36% (batch 1)
    to 59% (batch 16) faster at EMOv2-1M's stage-3 shapes. For EMO v1's equal widths it costs the same as
    the flash kernel on one thread, but bmm and softmax also use the second thread, flash not (EMO-1M's
    stage-4 shape, batch 1: 49 -> 46 us flash, 52 -> 33-41 us written out, 1 -> 2 threads)."""
    windows, heads, tokens, width = val.shape
    # (windows * heads) matrices as 3-d views (q, k, val are dense window copies): bmm without matmul's
    # broadcasting ops around it, which count at batch 1
    q, k, val = (t.reshape(windows * heads, tokens, t.shape[-1]) for t in (q, k, val))
    k = k.transpose(1, 2)
    step = max(1, ATTENTION_SLICE_BYTES // (tokens * k.shape[2] * 4))
    if step >= q.shape[0]:
        return torch.bmm(torch.bmm(q, k).mul_(scale).softmax(dim=-1), val).view(windows, heads, tokens, width)
    out = val.new_empty(val.shape)
    for i in range(0, q.shape[0], step):
        attn = torch.bmm(q[i:i + step], k[i:i + step]).mul_(scale)
        torch.bmm(attn.softmax(dim=-1), val[i:i + step], out=out[i:i + step])
    return out.view(windows, heads, tokens, width)


def _cpu_inference_attention(x, attn_drop):
    """Whether attention on ``x`` may take the written-out CPU inference forms (:func:`_attend_in_slices`):
    eval, no autograd, no tracing (ONNX export and the FLOP counter see SDPA) or compiling."""
    return (attn_drop == 0 and x.is_cpu and not torch.is_grad_enabled() and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling())


def _attend(q, k, val, attn_drop, use_sdpa):
    """softmax(q k^T / sqrt(d)) val over the last two dims: the official form, or with ``use_sdpa`` SDPA
    (training, tracing, non-CPU tensors) and its written-out CPU inference form."""
    scale = q.shape[-1] ** -0.5
    if use_sdpa:
        if _cpu_inference_attention(q, attn_drop):
            return _attend_in_slices(q, k, val, scale)
        return F.scaled_dot_product_attention(q, k, val, dropout_p=attn_drop, scale=scale)
    attn = ((q @ k.transpose(-2, -1)) * scale).softmax(dim=-1)
    if attn_drop > 0:
        attn = F.dropout(attn, attn_drop)
    return attn @ val


def _attention_map_first(x, qk, v, num_heads, window, modes, attn_pre, attn_drop, use_sdpa, channels_last):
    """Run ``qk`` (and ``v``) on the map, then cut q, k and the values into the windows of every mode."""
    B, _, H, W = x.shape
    qk_map = qk(x)
    values = x if attn_pre else v(x)
    if use_sdpa and len(modes) > 1 and _cpu_inference_attention(x, attn_drop):
        return _attend_modes_together(qk_map, values, num_heads, window, modes, channels_last)
    out = None
    for mode in modes:
        q, k = window_partition(qk_map, window, num_heads, mode, chunks=2)
        val = window_partition(values, window, num_heads, mode)[0]
        o = window_reverse(_attend(q, k, val, attn_drop, use_sdpa), B, (H, W), window, mode, channels_last)
        out = o if out is None else out + o
    return out


def _attend_modes_together(qk_map, values, num_heads, window, modes, channels_last):
    """CPU inference form of the summed attention of several partitions (EMOv2's hybrid): the windows of
    all modes are copied into one buffer and attended by one set of calls (at batch 1 EMOv2-1M's stage 3
    has 16 score matrices per mode, so the per-call cost of bmm / softmax counts), and every other mode's
    result is added into the first one's map in place, without a map-order copy of its own."""
    B, _, H, W = qk_map.shape
    qk_parts = [_partition_view(qk_map, window, num_heads, mode, chunks=2) for mode in modes]
    val_parts = [_partition_view(values, window, num_heads, mode)[0] for mode in modes]
    # (chunks, modes, B, n1, n2, heads, wh, ww, d): q and k of all modes each one dense block
    qk_win = qk_map.new_empty((2, len(modes), *qk_parts[0].shape[1:]))
    val_win = values.new_empty((len(modes), *val_parts[0].shape))
    for i, (qk_part, val_part) in enumerate(zip(qk_parts, val_parts)):
        qk_win[:, i] = qk_part
        val_win[i] = val_part
    heads, tokens = num_heads, window[0] * window[1]
    q, k = (t.view(-1, heads, tokens, t.shape[-1]) for t in qk_win)
    o = _attend_in_slices(q, k, val_win.view(-1, heads, tokens, val_win.shape[-1]), q.shape[-1] ** -0.5)
    o = o.view(len(modes), -1, *o.shape[1:])
    out = window_reverse(o[0], B, (H, W), window, modes[0], channels_last)
    dense = out.permute(0, 2, 3, 1) if channels_last else out  # out's memory, in (B, H, W, C) order for NHWC
    for mode, o_mode in zip(modes[1:], o[1:]):
        part = _windows_in_map_order(o_mode, B, (H, W), window, mode, channels_last)
        dense.view(part.shape).add_(part)
    return out


def _attention_tokens_first(x, qk, v, num_heads, window, mode, attn_pre, attn_drop, use_sdpa, channels_last):
    """Same result for a single mode with one window copy instead of three: the input's tokens are put in
    window order once, and since a 1x1 conv is the same map on every token, ``qk`` (and ``v``) on them give
    q, k and the values already in window order, split into heads by views."""
    B, _, H, W = x.shape
    tokens = window_partition(x, window, 1, mode)[0]  # (windows, 1, tokens, C), contiguous
    N, _, L, C = tokens.shape
    token_map = tokens.view(N, L, 1, C).permute(0, 3, 1, 2)  # an (N, C, L, 1) channels_last map
    q, k = qk(token_map).permute(0, 2, 3, 1).reshape(N, L, 2, num_heads, -1).permute(2, 0, 3, 1, 4)
    values = token_map if attn_pre else v(token_map)
    val = values.permute(0, 2, 3, 1).reshape(N, L, num_heads, -1).transpose(1, 2)
    return window_reverse(_attend(q, k, val, attn_drop, use_sdpa), B, (H, W), window, mode, channels_last)


def ew_mhsa(x, qk, v, num_heads, window_size, modes=('remote',), attn_pre=False, attn_drop=0.,
            use_sdpa=False):
    """Window multi-head self-attention of EMO / EMOv2 on a pre-normed map ``x`` (B, C, H, W).

    ``qk`` (C -> 2C) and ``v`` (C -> C_mid, with activation) are the block's 1x1 ConvNormAct modules.
    ``x`` is zero-padded right/bottom to multiples of ``window_size`` (the whole map is one window when
    ``window_size <= 0``); ``qk`` (and ``v`` when ``attn_pre`` is False) run on the padded map, padded
    tokens are not masked. The attention of every partition in ``modes`` is computed with the same q, k, v
    and the results are summed (EMOv2 hybrid = ('remote', 'close')), then cropped back to H, W.
    ``attn_pre=True`` (EMO v1 release) attends over the normed input split into heads and applies ``v``
    afterwards. Scale is ``dim_head ** -0.5`` with ``dim_head = C // num_heads``. ``attn_drop`` is the
    dropout probability to apply now (the caller passes 0 in eval mode). ``use_sdpa`` (deploy mode) runs
    the attention through ``scaled_dot_product_attention`` (in CPU inference through its written-out form,
    all modes in one set of calls; see :func:`_attend_in_slices`) and, with a single mode, cuts the windows
    before the 1x1 convs (:func:`_attention_tokens_first`).
    """
    B, C, H, W = x.shape
    wh, ww = (window_size, window_size) if window_size > 0 else (H, W)
    pad_r, pad_b = (ww - W % ww) % ww, (wh - H % wh) % wh
    # When tracing (ONNX export) always pad and crop: a Python `if` on the sizes would freeze the
    # export-size decision into the graph and break dynamic height/width.
    padded = bool(pad_r or pad_b) or torch.jit.is_tracing()
    # keep the memory layout of the input (channels_last after a LayerNorm2d) for the output map
    channels_last = x.is_contiguous(memory_format=torch.channels_last)
    if padded:
        x = F.pad(x, (0, pad_r, 0, pad_b))
    repeats = 1
    if use_sdpa and len(modes) > 1 and x.shape[-2:] == (wh, ww) and not torch.jit.is_tracing():
        # one window covers the map (EMOv2's stage 4 at 224): every partition is the same, attend once
        repeats, modes = len(modes), modes[:1]
    if use_sdpa and len(modes) == 1:
        out = _attention_tokens_first(x, qk, v, num_heads, (wh, ww), modes[0], attn_pre, attn_drop, use_sdpa,
                                      channels_last)
    else:
        out = _attention_map_first(x, qk, v, num_heads, (wh, ww), modes, attn_pre, attn_drop, use_sdpa,
                                   channels_last)
    if repeats > 1:
        out = out.mul_(repeats)  # a fresh map; n * o is exactly the sum of n equal terms
    if padded:
        out = out[:, :, :H, :W]
        if channels_last:  # the crop is a strided view; a dense map keeps the next conv on the fast path
            out = out.contiguous(memory_format=torch.channels_last)
    if attn_pre:
        out = v(out)  # 1x1 conv + act: pointwise, so applying it after un-partition and crop is exact
    return out


# --------------------------------------------------------------------------------------------------
# Backbone scaffolding shared by EMO and EMOv2


class EMOBackboneBase(BaseModule):
    """Stage layout, outputs, freezing, checkpointing and pretrained loading shared by EMO and EMOv2.

    Subclasses define ``arch_settings`` (name -> dict of ``depths``, ``embed_dims``, ``exp_ratios``,
    ``dim_heads``, ``drop_path_rate``), ``arch_defaults`` (optional keys of a custom arch), ``arch_prefix``
    (``'emo'``/``'emov2'``, used in names like ``emo-1m``), ``_make_stem(in_channels)`` returning
    ``(stage0, stem_channels)`` and ``_make_block(stage, index, dim_in, dim_out, drop_path)``.

    Outputs are numbered like the official downstream wrappers: 0 = stem (stride 2), 1..4 = stages 1..4
    (strides 4, 8, 16, 32); negative indices count from the end (-1 = stage 4).
    """
    arch_settings = {}
    arch_defaults = {}
    arch_prefix = ''
    required_arch_keys = ('depths', 'embed_dims', 'exp_ratios', 'dim_heads')
    num_outs = 5

    def __init__(self, arch='1m', in_channels=3, out_indices=(4, ), frozen_stages=-1, norm_eval=False,
                 drop_path_rate=None, window_size=7, with_cp=False, final_norm=False, pretrained=None,
                 init_cfg=None):
        if pretrained is not None:
            if not isinstance(pretrained, str):
                raise TypeError(f'pretrained must be a checkpoint path (str) or None, got {type(pretrained)}')
            if init_cfg is not None:
                raise ValueError(f'got both pretrained={pretrained!r} and init_cfg={init_cfg!r}; set either, not '
                                 "both (mmseg's EncoderDecoder passes model.pretrained to the backbone: set "
                                 'model.pretrained=None when the backbone has an init_cfg)')
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        super().__init__(init_cfg=init_cfg)

        self.arch_name, settings = self._resolve_arch(arch)
        self.settings = settings
        depths = settings['depths']
        if drop_path_rate is None:
            drop_path_rate = settings['drop_path_rate']
        self.in_channels = in_channels
        self.window_size = window_size
        self.with_cp = with_cp
        self.norm_eval = norm_eval
        self.deploy = False

        if isinstance(out_indices, int):
            out_indices = (out_indices, )
        indices = []
        for index in out_indices:
            if not -self.num_outs <= index < self.num_outs:
                raise ValueError(f'out_indices entries must be in [-{self.num_outs}, {self.num_outs - 1}] '
                                 f'(0 = stem, 1..4 = stages), got {index}')
            indices.append(index % self.num_outs)
        if not indices:
            raise ValueError('out_indices must not be empty')
        self.out_indices = tuple(indices)
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f'frozen_stages must be in [-1, 4] (k freezes stage0..stage k), got {frozen_stages}')
        self.frozen_stages = frozen_stages

        self.stage0, stem_channels = self._make_stem(in_channels)
        dprs = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        dim_in, k = stem_channels, 0
        for i, (depth, dim_out) in enumerate(zip(depths, settings['embed_dims'])):
            blocks = []
            for j in range(depth):
                blocks.append(self._make_block(i, j, dim_in, dim_out, dprs[k]))
                dim_in, k = dim_out, k + 1
            self.add_module(f'stage{i + 1}', nn.ModuleList(blocks))
        self.channels = (stem_channels, *settings['embed_dims'])
        self.final_norm = final_norm
        if final_norm:
            self.norm = build_norm(settings['norm_layers'][-1], self.channels[-1])
        self._freeze_stages()

    @classmethod
    def _resolve_arch(cls, arch):
        """Return ``(name, settings)`` for an arch key (``'1m'``, ``'EMO-1M'``...) or a custom dict."""
        if isinstance(arch, str):
            key = arch.lower()
            if key.startswith(cls.arch_prefix + '-'):
                key = key[len(cls.arch_prefix) + 1:]
            if key not in cls.arch_settings:
                raise ValueError(f"unknown {cls.__name__} arch '{arch}', expected one of "
                                 f'{sorted(cls.arch_settings)} or a dict')
            return f'{cls.arch_prefix}-{key}', {**cls.arch_defaults, **cls.arch_settings[key]}
        if isinstance(arch, dict):
            missing = [k for k in cls.required_arch_keys if k not in arch]
            unknown = [k for k in arch if k not in cls.required_arch_keys and k not in cls.arch_defaults]
            if missing or unknown:
                raise ValueError(f'custom {cls.__name__} arch: missing keys {missing}, unknown keys {unknown} '
                                 f'(required {list(cls.required_arch_keys)}, optional {sorted(cls.arch_defaults)})')
            settings = {**cls.arch_defaults, **arch}
            for key in ('depths', 'embed_dims', 'exp_ratios', 'dim_heads'):
                if len(settings[key]) != 4:
                    raise ValueError(f'custom {cls.__name__} arch: {key} needs 4 entries, got {settings[key]}')
            return f'{cls.arch_prefix}-custom', settings
        raise TypeError(f'arch must be a str or a dict, got {type(arch)}')

    def _make_stem(self, in_channels):
        raise NotImplementedError

    def _make_block(self, stage, index, dim_in, dim_out, drop_path):
        raise NotImplementedError

    def forward(self, x):
        if x.shape[1] != self.in_channels:
            raise ValueError(f'{type(self).__name__} expects {self.in_channels}-channel images (N, '
                             f'{self.in_channels}, H, W) but got {x.shape[1]} channels (input shape '
                             f'{tuple(x.shape)}); convert grayscale / RGBA images to RGB first')
        chunk = 0
        if self.deploy and onednn_inference(x):
            # the oneDNN deploy path works on channels_last maps; one copy of the image puts the whole
            # backbone on it (outputs come back channels_last, equal values)
            x = x.contiguous(memory_format=torch.channels_last)
            chunk = self._early_chunk(x)
        last = max(self.out_indices)
        outs = {}
        first = 0
        if chunk:
            first = min(self.early_stages, last + 1)
            x = self._run_stages_chunked(x, first, chunk, outs)
        self._run_stages(x, range(first, last + 1), outs)
        return tuple(outs[i] for i in sorted(outs))  # stage order, like mmpretrain

    # Deploy-mode CPU inference runs the high-resolution stages (stem and stages 1-2, strides 2-8) on slices
    # of the batch whose widest map takes at most ``early_chunk_bytes``: at batch 16, 224 EMO-1M's stage-1
    # expansion (96 x 112 x 112) is 77 MB, above glibc's mmap threshold (at most 32 MiB), so a whole-batch
    # pass gets it as fresh memory from the OS on every forward (~19,000 page faults, a third of the run
    # time); slices of a few images reuse freed heap memory and stay in the L3 cache. Every layer works per
    # image in eval mode, so the outputs are the same.
    early_chunk_bytes = 16 << 20
    early_stages = 3

    def _early_chunk(self, x):
        """Images per slice of the high-resolution stages for input ``x``; 0: the whole batch at once."""
        batch, _, h, w = x.shape
        if batch < 2:
            return 0
        per_image = x.element_size() * self._widest_early_map(h, w)
        if batch * per_image <= self.early_chunk_bytes:
            return 0
        return max(1, self.early_chunk_bytes // per_image)

    def _widest_early_map(self, h, w):
        """Values per image of the widest map stages 0..early_stages-1 make (an upper bound): the stem's
        maps at stride 2, and the first block of each stage, which expands its input (twice the stage's
        expansion ratio) at the previous stage's resolution."""
        widest = self.channels[0] * math.ceil(h / 2) * math.ceil(w / 2)
        for i in range(1, self.early_stages):
            stride = 2 ** i
            mid = int(self.channels[i - 1] * self.settings['exp_ratios'][i - 1] * 2)
            widest = max(widest, mid * math.ceil(h / stride) * math.ceil(w / stride))
        return widest

    def _run_stages_chunked(self, x, num_stages, chunk, outs):
        """Stages ``0..num_stages-1`` on slices of ``chunk`` images; the slices' outputs are concatenated."""
        parts = []
        for xc in x.split(chunk):
            part_outs = {}
            parts.append((self._run_stages(xc, range(num_stages), part_outs), part_outs))
        for i in parts[0][1]:
            outs[i] = torch.cat([p[1][i] for p in parts])
        if num_stages - 1 in outs:  # the last early stage is an output itself: one copy of it serves both
            return outs[num_stages - 1]
        return torch.cat([p[0] for p in parts])

    def _run_stages(self, x, stages, outs):
        """Stages ``stages`` in order from ``x``; the outputs whose index is in ``out_indices`` go into
        ``outs``; returns the last stage's map."""
        for i in stages:
            for block in self._modules[f'stage{i}']:
                if self.with_cp and self.training:
                    x = checkpoint(block, x, use_reentrant=False)
                else:
                    x = block(x)
            if i in self.out_indices:
                outs[i] = self.norm(x) if i == 4 and self.final_norm else x
        return x

    def _freeze_stages(self):
        for i in range(self.frozen_stages + 1):
            stage = getattr(self, f'stage{i}')
            stage.eval()
            for param in stage.parameters():
                param.requires_grad = False

    def train(self, mode=True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def init_weights(self):
        """Pretrained init_cfg -> :func:`emo_mm.models.checkpoint.load_pretrained`; otherwise PyTorch's
        default init (what the official code ends up with)."""
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            from ..checkpoint import load_pretrained
            load_pretrained(self, cfg['checkpoint'], prefix=cfg.get('prefix', 'backbone.'))
            self._is_init = True
        else:
            super().init_weights()

    def _stem_to_stage1_pointwise(self):
        """``(stem, index, conv)``: ``stem[index]`` is the stem's last module, a plain 1x1 ConvNormAct whose
        output feeds ``conv`` (a 1x1 ConvNormAct of stage 1's first block) with nothing in between in
        deploy mode; ``None`` when the architecture has no such pair."""
        return None

    def switch_to_deploy(self):
        """Fold every BatchNorm (and EMOv2 layer scale) into convolutions and run attention through
        ``scaled_dot_product_attention``. When the stem is not an output, its last 1x1 conv is composed with
        stage 1's first 1x1 conv (one 112x112 pass less at 224). In CPU inference the backbone then runs in
        channels_last with its convs on oneDNN and packed weights (see :func:`deploy_conv`). Eval-mode
        equivalent to the plain model; idempotent."""
        if self.deploy:
            return
        for m in list(self.modules()):
            if m is not self and hasattr(m, 'switch_to_deploy'):
                m.switch_to_deploy()
        pair = self._stem_to_stage1_pointwise()
        if pair is not None and 0 not in self.out_indices:
            owner, name, nxt = pair
            last = getattr(owner, name)
            if last.fused and isinstance(last.act, nn.Identity) and nxt.fused and nxt.conv.kernel_size == (1, 1):
                nxt.conv = compose_pointwise_convs(last.conv, nxt.conv)
                setattr(owner, name, nn.Identity())
        self.deploy = True
