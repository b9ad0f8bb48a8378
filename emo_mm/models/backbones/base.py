"""Backbone scaffolding shared by EMO and EMOv2: arch tables, stage layout, outputs, freezing, deploy switch."""
import math

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from emo_mm.models.layers import build_norm, compose_pointwise_convs, onednn_inference
from emo_mm.models.pretrained import load_pretrained


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
    # pass gets it as fresh memory from the OS, page fault by page fault, on every forward; slices of a few
    # images reuse freed heap memory and stay in the L3 cache. Every layer works per image in eval mode, so
    # the outputs are the same.
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
        """Pretrained init_cfg -> :func:`emo_mm.models.pretrained.load_pretrained`; otherwise PyTorch's
        default init (what the official code ends up with)."""
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
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
