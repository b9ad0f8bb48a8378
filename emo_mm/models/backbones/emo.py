"""EMO (v1) backbone: "Rethinking Mobile Block for Efficient Attention-based Models" (ICCV 2023).

Numerically equivalent to the official ``model/emo.py`` (zhangzjn/EMO) and its mmdet/mmseg wrappers, with the
official parameter names, so the released ``net.pth`` files load as they are (after
``tools/model_converters/convert_official.py``, which only adds the ``backbone.`` prefix).
"""
import torch.nn as nn

from emo_mm.models.backbones.base import EMOBackboneBase
from emo_mm.models.layers import (ConvNormAct, DropPath, PackedWeight, SqueezeExcite, bn_affine, build_norm, deploy_conv,
                                  ew_mhsa, fold_affine_into_next_conv, fold_bn_into_conv)
from emo_mm.registry import register_model


class MSPatchEmb(nn.Module):
    """Official stem conv (single dilation): ``convs.0`` = Sequential(Conv2d(bias=True), BatchNorm2d)."""

    def __init__(self, dim_in, dim_out, kernel_size=3, stride=2, norm='bn_2d'):
        super().__init__()
        conv = ConvNormAct(dim_in, dim_out, kernel_size, stride, bias=True, norm=norm)
        self.convs = nn.ModuleList([nn.Sequential(conv.conv, conv.norm)])
        self.fused = False  # deploy: BN folded, forward = deploy_conv
        self.packed = PackedWeight()

    def forward(self, x):
        if self.fused:
            return deploy_conv(x, self.convs[0][0], packed=self.packed)
        return self.convs[0](x)

    def switch_to_deploy(self):
        conv, *rest = self.convs[0]
        if rest and isinstance(rest[0], nn.BatchNorm2d):
            self.convs[0] = nn.Sequential(fold_bn_into_conv(conv, rest[0]))
            self.fused = True


class IRMB(nn.Module):
    """Inverted Residual Mobile Block (official class ``iRMB``).

    pre-norm -> [EW-MHSA (strided "remote" windows) | 1x1 ``v``] -> DW conv (BN+SiLU, stride) [+ skip]
    -> SE -> 1x1 ``proj`` [+ outer residual with drop path].
    """

    def __init__(self, dim_in, dim_out, norm_in=True, has_skip=True, exp_ratio=1.0, norm='bn_2d',
                 act='relu', v_proj=True, dw_ks=3, stride=1, se_ratio=0.0, dim_head=64, window_size=7,
                 attn_s=True, qkv_bias=False, attn_drop=0., drop=0., drop_path=0., v_group=False,
                 attn_pre=False):
        super().__init__()
        self.norm = build_norm(norm, dim_in) if norm_in else nn.Identity()
        dim_mid = int(dim_in * exp_ratio)
        self.has_skip = dim_in == dim_out and stride == 1 and has_skip
        self.attn_s = attn_s
        self.deploy = False
        if attn_s:
            assert dim_in % dim_head == 0, f'dim {dim_in} must be divisible by dim_head {dim_head}'
            self.num_head = dim_in // dim_head
            if not attn_pre and dim_mid % self.num_head:
                # the official code fails here too (einops), e.g. EMO-1M stage 4: 588 channels, 8 heads
                raise ValueError(f'attn_pre=False needs the expanded width {dim_mid} to be divisible by the '
                                 f'{self.num_head} heads (dim {dim_in}, dim_head {dim_head})')
            self.window_size = window_size
            self.attn_pre = attn_pre
            self.attn_drop = attn_drop
            self.qk = ConvNormAct(dim_in, dim_in * 2, 1, bias=qkv_bias)
            self.v = ConvNormAct(dim_in, dim_mid, 1, groups=self.num_head if v_group else 1, bias=qkv_bias,
                                 act=act)
        elif v_proj:
            self.v = ConvNormAct(dim_in, dim_mid, 1, bias=qkv_bias, act=act)
        else:
            self.v = nn.Identity()
        self.conv_local = ConvNormAct(dim_mid, dim_mid, dw_ks, stride, groups=dim_mid, norm='bn_2d',
                                      act='silu')
        self.se = SqueezeExcite(dim_mid, rd_ratio=se_ratio, act=act) if se_ratio > 0 else nn.Identity()
        self.proj_drop = nn.Dropout(drop)
        self.proj = ConvNormAct(dim_mid, dim_out, 1)
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()

    def forward(self, x):
        if self.deploy and not self.training:
            return self._forward_deploy(x)
        shortcut = x
        x = self.norm(x)
        x = self._mixer(x)
        x = x + self.se(self.conv_local(x)) if self.has_skip else self.se(self.conv_local(x))
        x = self.proj(self.proj_drop(x))
        return shortcut + self.drop_path(x) if self.has_skip else x

    def _mixer(self, x):
        m = self._modules  # dict lookups instead of Module.__getattr__ (see ConvNormAct.forward)
        if self.attn_s:
            return ew_mhsa(x, m['qk'], m['v'], self.num_head, self.window_size, ('remote', ), self.attn_pre,
                           self.attn_drop if self.training else 0., use_sdpa=self.deploy)
        return m['v'](x)

    def _forward_deploy(self, x):
        """Eval-only :meth:`forward`: same sums, accumulated in place into the fresh outputs of
        ``conv_local``/``se`` and ``proj`` (dropout and drop path are identities in eval), which saves two
        full-size allocations per block; folded-away norm and absent SE are skipped, not called."""
        m = self._modules
        shortcut = x
        if type(m['norm']) is not nn.Identity:
            x = m['norm'](x)
        x = self._mixer(x)
        y = m['conv_local'](x)
        if type(m['se']) is not nn.Identity:
            y = m['se'](y)
        x = m['proj'](y.add_(x) if self.has_skip else y)
        return x.add_(shortcut) if self.has_skip else x

    def switch_to_deploy(self):
        """Fold a pre-norm BatchNorm into the following 1x1 ``v`` conv (exact: no padding in between;
        not done before attention, whose zero padding comes after the norm) and use SDPA."""
        if isinstance(self.norm, nn.BatchNorm2d) and not self.attn_s and isinstance(self.v, ConvNormAct):
            self.v.conv = fold_affine_into_next_conv(*bn_affine(self.norm), self.v.conv)
            self.norm = nn.Identity()
        self.deploy = True


@register_model
class EMO(EMOBackboneBase):
    """EMO (v1) backbone.

    Args:
        arch (str | dict): ``'1m'``, ``'2m'``, ``'5m'``, ``'6m'`` (also ``'emo-1m'``...) or a dict with keys
            ``depths``, ``embed_dims``, ``exp_ratios``, ``dim_heads`` (4 entries each) and optionally
            ``stem_dim``, ``dw_kss``, ``attn_ss``, ``norm_layers``, ``act_layers``, ``drop_path_rate``.
        in_channels (int): input channels. Defaults to 3.
        out_indices (Sequence[int] | int): outputs to return, 0 = stem (stride 2), 1..4 = stages 1..4
            (strides 4..32); negative values count from the end. Defaults to (4, ).
        frozen_stages (int): freeze stage0..stage{k} (eval mode, no grad); -1 freezes nothing.
        norm_eval (bool): keep BatchNorm layers in eval mode while training (LayerNorm unaffected).
        drop_path_rate (float, optional): stochastic depth, linear over all stage1-4 blocks.
            None = the arch's value (0.04036 for 1m, 0.05 otherwise).
        window_size (int): attention window (official: 7 for classification; <= 0: one window per map).
        with_cp (bool): gradient checkpointing per block.
        final_norm (bool): build the classifier's final LayerNorm (``norm``) and apply it to output 4.
        attn_pre (bool): official released behaviour (True): attend over the normed input, then ``v``.
            False = the paper's formulation (``v`` first). Same weights, different outputs.
        pretrained (str, optional): checkpoint path (mmseg passes ``model.pretrained`` here).
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=..., prefix='backbone.')`` loads a
            converted checkpoint through :func:`emo_mm.models.pretrained.load_pretrained`.
    """
    arch_prefix = 'emo'
    arch_settings = {
        '1m': dict(depths=[2, 2, 8, 3], embed_dims=[32, 48, 80, 168], exp_ratios=[2.0, 2.5, 3.0, 3.5],
                   dim_heads=[16, 16, 20, 21], drop_path_rate=0.04036),
        '2m': dict(depths=[3, 3, 9, 3], embed_dims=[32, 48, 120, 200], exp_ratios=[2.0, 2.5, 3.0, 3.5],
                   dim_heads=[16, 16, 20, 20], drop_path_rate=0.05),
        '5m': dict(depths=[3, 3, 9, 3], embed_dims=[48, 72, 160, 288], exp_ratios=[2.0, 3.0, 4.0, 4.0],
                   dim_heads=[24, 24, 32, 32], drop_path_rate=0.05),
        '6m': dict(depths=[3, 3, 9, 3], embed_dims=[48, 72, 160, 320], exp_ratios=[2.0, 3.0, 4.0, 5.0],
                   dim_heads=[16, 24, 20, 32], drop_path_rate=0.05),
    }
    arch_defaults = dict(stem_dim=24, dw_kss=[3, 3, 5, 5], attn_ss=[False, False, True, True],
                         norm_layers=['bn_2d', 'bn_2d', 'ln_2d', 'ln_2d'],
                         act_layers=['silu', 'silu', 'gelu', 'gelu'], drop_path_rate=0.0)

    def __init__(self, arch='1m', in_channels=3, out_indices=(4, ), frozen_stages=-1, norm_eval=False,
                 drop_path_rate=None, window_size=7, with_cp=False, final_norm=False, attn_pre=True,
                 pretrained=None, init_cfg=None):
        self.attn_pre = attn_pre
        super().__init__(arch, in_channels, out_indices, frozen_stages, norm_eval, drop_path_rate,
                         window_size, with_cp, final_norm, pretrained, init_cfg)

    def _make_stem(self, in_channels):
        s = self.settings
        dim = s['stem_dim']
        stem = nn.ModuleList([
            MSPatchEmb(in_channels, dim, kernel_size=s['dw_kss'][0], stride=2, norm=s['norm_layers'][0]),
            IRMB(dim, dim, norm_in=False, has_skip=False, exp_ratio=1, norm=s['norm_layers'][0],
                 act=s['act_layers'][0], v_proj=False, dw_ks=s['dw_kss'][0], stride=1, se_ratio=1,
                 attn_s=False, qkv_bias=True),
        ])
        return stem, dim

    def _stem_to_stage1_pointwise(self):
        # stem iRMB ends with the linear ``proj``; stage 1's first block has no skip, and its BN norm is
        # folded into ``v`` in deploy mode
        first = self.stage1[0]
        if isinstance(first.norm, nn.Identity) and isinstance(first.v, ConvNormAct):
            return self.stage0[1], 'proj', first.v
        return None

    def _make_block(self, stage, index, dim_in, dim_out, drop_path):
        s = self.settings
        first = index == 0
        return IRMB(dim_in, dim_out, norm_in=True, has_skip=not first,
                    exp_ratio=s['exp_ratios'][stage] * (2 if first else 1), norm=s['norm_layers'][stage],
                    act=s['act_layers'][stage], v_proj=True, dw_ks=s['dw_kss'][stage], stride=2 if first else 1,
                    se_ratio=0, dim_head=s['dim_heads'][stage], window_size=self.window_size,
                    attn_s=s['attn_ss'][stage] and not first, qkv_bias=True, drop_path=drop_path,
                    attn_pre=self.attn_pre)
