"""EMOv2 backbone: "EMOv2: Pushing 5M Vision Model Frontier" (TPAMI 2025), i2RMB with the hybrid
("spanning", SEW-MHSA) window attention.

Numerically equivalent to the official ``model/lib_emo/emo2.py`` (zhangzjn/EMOv2) and its mmdet/mmseg
``EMO2`` wrappers (whose ``conv_local`` is BN+SiLU, as in the released downstream configs), with the official
parameter names.
"""
import torch.nn as nn

from emo_mm.models.backbones.base import EMOBackboneBase
from emo_mm.models.layers import (ConvNormAct, DropPath, LayerScale2d, bn_affine, build_norm, ew_mhsa,
                                  fold_affine_into_next_conv)
from emo_mm.registry import register_model


class ConvEop(nn.Module):
    """Plain 1x1 "efficient operator" (official ``Conv``): ``net`` = ConvNormAct(dim_in -> dim_mid, act)."""

    def __init__(self, dim_in, dim_mid, kernel_size=1, groups=1, bias=True, act='silu'):
        super().__init__()
        self.net = ConvNormAct(dim_in, dim_mid, kernel_size, groups=groups, bias=bias, act=act)

    def forward(self, x):
        return self._modules['net'](x)


class HybridAttention(nn.Module):
    """Official ``EW_MHSA_Hybrid``: one ``qk`` and one ``v`` shared by remote (strided) and close
    (contiguous) window attention on the zero-padded map; the two results are summed (attn_pre=False)."""

    def __init__(self, dim_in, dim_mid, dim_head=32, window_size=7, qkv_bias=True, attn_drop=0.,
                 v_group=False, act='gelu'):
        super().__init__()
        assert dim_in % dim_head == 0, f'dim {dim_in} must be divisible by dim_head {dim_head}'
        self.num_head = dim_in // dim_head
        if dim_mid % self.num_head:
            raise ValueError(f'the expanded width {dim_mid} must be divisible by the {self.num_head} heads '
                             f'(dim {dim_in}, dim_head {dim_head})')
        self.window_size = window_size
        self.attn_drop = attn_drop
        self.deploy = False
        self.qk = ConvNormAct(dim_in, dim_in * 2, 1, bias=qkv_bias)
        self.v = ConvNormAct(dim_in, dim_mid, 1, groups=self.num_head if v_group else 1, bias=qkv_bias, act=act)

    def forward(self, x):
        m = self._modules  # dict lookups instead of Module.__getattr__ (see ConvNormAct.forward)
        return ew_mhsa(x, m['qk'], m['v'], self.num_head, self.window_size, ('remote', 'close'), False,
                       self.attn_drop if self.training else 0., use_sdpa=self.deploy)

    def switch_to_deploy(self):
        self.deploy = True


class I2RMB(nn.Module):
    """Improved Inverted Residual Mobile Block (official class ``iiRMB``).

    pre-norm -> eops.0 (1x1 conv or hybrid attention) -> DW conv (BN+SiLU, stride) [+ skip] -> 1x1 ``proj``
    -> layer scale ``ls`` (also on non-residual blocks) [+ outer residual with drop path].
    """

    def __init__(self, dim_in, dim_out, has_skip=True, exp_ratio=1.0, norm='bn_2d', act='relu', dw_ks=5,
                 stride=1, dim_head=32, window_size=7, attn=False, qkv_bias=True, attn_drop=0., drop=0.,
                 drop_path=0., v_group=False, ls_value=1e-6):
        super().__init__()
        self.norm = build_norm(norm, dim_in)
        dim_mid = int(dim_in * exp_ratio)
        self.has_skip = dim_in == dim_out and stride == 1 and has_skip
        if attn:
            eop = HybridAttention(dim_in, dim_mid, dim_head, window_size, qkv_bias, attn_drop, v_group, act)
        else:
            eop = ConvEop(dim_in, dim_mid, bias=qkv_bias, act=act)
        self.eops = nn.ModuleList([eop])
        self.conv_local = ConvNormAct(dim_mid, dim_mid, dw_ks, stride, groups=dim_mid, norm='bn_2d',
                                      act='silu')
        self.proj_drop = nn.Dropout(drop)
        self.proj = ConvNormAct(dim_mid, dim_out, 1)
        self.ls = LayerScale2d(dim_out, ls_value)
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()
        self.deploy = False

    def forward(self, x):
        if self.deploy and not self.training:
            return self._forward_deploy(x)
        shortcut = x
        x = self.eops[0](self.norm(x))
        x = x + self.conv_local(x) if self.has_skip else self.conv_local(x)
        x = self.ls(self.proj(self.proj_drop(x)))
        return shortcut + self.drop_path(x) if self.has_skip else x

    def _forward_deploy(self, x):
        """Eval-only :meth:`forward` (layer scale folded into ``proj``): same sums, accumulated in place into
        the fresh outputs of ``conv_local`` and ``proj``, saving two full-size allocations; submodules read
        from their dicts and a folded-away norm skipped, not called (Python time counts at batch 1, see
        ``ConvNormAct.forward``)."""
        m = self._modules
        shortcut = x
        if type(m['norm']) is not nn.Identity:
            x = m['norm'](x)
        x = m['eops']._modules['0'](x)
        y = m['conv_local'](x)
        x = m['proj'](y.add_(x) if self.has_skip else y)
        return x.add_(shortcut) if self.has_skip else x

    def switch_to_deploy(self):
        """Fold a pre-norm BatchNorm into a following 1x1 conv eop (exact: no padding in between) and the
        layer scale into ``proj``."""
        eop = self.eops[0]
        if isinstance(self.norm, nn.BatchNorm2d) and isinstance(eop, ConvEop):
            conv = eop.net.conv
            if conv.kernel_size == (1, 1) and conv.groups == 1:
                eop.net.conv = fold_affine_into_next_conv(*bn_affine(self.norm), conv)
                self.norm = nn.Identity()
        if isinstance(self.ls, LayerScale2d):
            self.proj.conv.weight.data.mul_(self.ls.gamma.data.reshape(-1, 1, 1, 1))
            if self.proj.conv.bias is not None:
                self.proj.conv.bias.data.mul_(self.ls.gamma.data.reshape(-1))
            self.ls = nn.Identity()
        self.deploy = True


@register_model
class EMOv2(EMOBackboneBase):
    """EMOv2 backbone.

    Args:
        arch (str | dict): ``'1m'``, ``'2m'``, ``'5m'``, ``'20m'`` (also ``'emov2-1m'``...) or a dict with keys
            ``depths``, ``embed_dims``, ``exp_ratios``, ``dim_heads`` (4 entries each) and optionally
            ``stem_dim`` (default embed_dims[0] // 2), ``dw_kss``, ``attn_ss``, ``norm_layers``,
            ``act_layers``, ``ls_value``, ``drop_path_rate``.
        in_channels, out_indices, frozen_stages, norm_eval, drop_path_rate, window_size, with_cp, final_norm,
        pretrained, init_cfg: as for :class:`~emo_mm.models.backbones.EMO` (outputs 0 = stem, 1..4 = stages).
            Official window size: 7 for classification at 224, 10 in all det/seg configs.
    """
    arch_prefix = 'emov2'
    arch_settings = {
        '1m': dict(depths=[2, 2, 8, 3], embed_dims=[32, 48, 80, 180], exp_ratios=[2.0, 2.5, 3.0, 3.5],
                   dim_heads=[16, 16, 20, 20], drop_path_rate=0.04036),
        '2m': dict(depths=[3, 3, 9, 3], embed_dims=[32, 48, 120, 200], exp_ratios=[2.0, 2.5, 3.0, 3.5],
                   dim_heads=[16, 16, 20, 20], drop_path_rate=0.05),
        '5m': dict(depths=[3, 3, 9, 3], embed_dims=[48, 72, 160, 288], exp_ratios=[2.0, 3.0, 4.0, 4.0],
                   dim_heads=[16, 24, 32, 32], drop_path_rate=0.05),
        '20m': dict(depths=[3, 3, 13, 3], embed_dims=[64, 128, 320, 448], exp_ratios=[2.0, 3.0, 4.0, 4.0],
                    dim_heads=[16, 32, 32, 32], drop_path_rate=0.1),
    }
    arch_defaults = dict(stem_dim=None, dw_kss=[5, 5, 5, 5], attn_ss=[False, False, True, True],
                         norm_layers=['bn_2d', 'bn_2d', 'ln_2d', 'ln_2d'],
                         act_layers=['silu', 'silu', 'gelu', 'gelu'], ls_value=1e-6, drop_path_rate=0.0)

    def _make_stem(self, in_channels):
        dim = self.settings['stem_dim'] or self.settings['embed_dims'][0] // 2
        stem = nn.ModuleList([
            ConvNormAct(in_channels, dim, 3, stride=2, bias=True, norm='bn_2d', act='silu'),
            ConvNormAct(dim, dim, 3, groups=dim, norm='bn_2d', act='silu'),
            ConvNormAct(dim, dim, 1),
        ])
        return stem, dim

    def _stem_to_stage1_pointwise(self):
        # the stem ends with a plain 1x1 conv; stage 1's first block has no skip, and its BN norm is folded
        # into the 1x1 eop in deploy mode
        first = self.stage1[0]
        if isinstance(first.norm, nn.Identity) and isinstance(first.eops[0], ConvEop):
            return self.stage0, '2', first.eops[0].net
        return None

    def _make_block(self, stage, index, dim_in, dim_out, drop_path):
        s = self.settings
        first = index == 0
        return I2RMB(dim_in, dim_out, has_skip=not first, exp_ratio=s['exp_ratios'][stage] * (2 if first else 1),
                     norm=s['norm_layers'][stage], act=s['act_layers'][stage], dw_ks=s['dw_kss'][stage],
                     stride=2 if first else 1, dim_head=s['dim_heads'][stage], window_size=self.window_size,
                     attn=s['attn_ss'][stage] and not first, qkv_bias=True, drop_path=drop_path,
                     ls_value=s['ls_value'])
