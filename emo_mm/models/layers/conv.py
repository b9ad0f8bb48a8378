"""Norms, activations and the conv blocks shared by EMO and EMOv2.

Every module keeps the submodule names of the official code (``conv``/``norm``/``act``, ``se.conv_reduce``...),
so official state_dicts load without renaming. BN and LN eps are 1e-6 and GELU is the exact erf form, as in the
official implementation. Each module that can fold something exposes ``switch_to_deploy()`` for its own parts.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks import DropPath

from emo_mm.models.layers.fusion import fold_bn_into_conv
from emo_mm.models.layers.onednn import PackedWeight, compiled_conv, deploy_act, deploy_conv

__all__ = ['DropPath', 'EPS', 'LayerNorm2d', 'build_norm', 'build_act', 'ConvNormAct', 'SqueezeExcite', 'LayerScale2d']


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
        if torch.compiler.is_compiling():
            return self.act(self.norm(compiled_conv(x, self.conv)))
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
