"""EMO / EMOv2 backbones: structure, parameter counts, attention numerics, deploy path, training options."""
import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from emo_mm.models.backbones import EMO, EMOv2
from emo_mm.models.layers import conv as emo_layers, onednn as onednn_deploy, window_attention
from emo_mm.models.backbones.emo import IRMB
from emo_mm.models.backbones.emov2 import HybridAttention
from emo_mm.registry import MODELS

VARIANTS = [(EMO, '1m'), (EMO, '2m'), (EMO, '5m'), (EMO, '6m'),
            (EMOv2, '1m'), (EMOv2, '2m'), (EMOv2, '5m'), (EMOv2, '20m')]
IDS = [f'{cls.__name__}-{arch}' for cls, arch in VARIANTS]
# the papers' model settings (official zhangzjn/EMO model files): stem width and C1..C4
CHANNELS = {
    ('EMO', '1m'): (24, 32, 48, 80, 168), ('EMO', '2m'): (24, 32, 48, 120, 200),
    ('EMO', '5m'): (24, 48, 72, 160, 288), ('EMO', '6m'): (24, 48, 72, 160, 320),
    ('EMOv2', '1m'): (16, 32, 48, 80, 180), ('EMOv2', '2m'): (16, 32, 48, 120, 200),
    ('EMOv2', '5m'): (24, 48, 72, 160, 288), ('EMOv2', '20m'): (32, 64, 128, 320, 448),
}
# classifier params (backbone + final LN + Linear(C4, 1000)) in thousands, as the papers' ImageNet tables print them
CLS_PARAMS_K = {('EMO', '1m'): 1361, ('EMO', '2m'): 2377, ('EMO', '5m'): 5109, ('EMO', '6m'): 6168,
                ('EMOv2', '1m'): 1461, ('EMOv2', '2m'): 2384, ('EMOv2', '5m'): 5126, ('EMOv2', '20m'): 20195}
BACKBONE_PARAMS_K = {'1m': 1192, '2m': 2176, '5m': 4819, '6m': 5847}


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def randomize(model, seed=0):
    """Non-trivial BN statistics, norm affines and layer scales, so that folding is really exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.2)
        elif isinstance(m, nn.LayerNorm):
            m.weight.data.copy_(torch.rand(m.normalized_shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.normalized_shape, generator=g) * 0.2)
    for name, p in model.named_parameters():
        if name.endswith('ls.gamma'):
            p.data.copy_(torch.rand(p.shape, generator=g) * 0.5 + 0.25)
    return model


@pytest.mark.parametrize('cls,arch', VARIANTS, ids=IDS)
def test_param_counts(cls, arch):
    model = cls(arch, final_norm=True)
    c4 = model.channels[-1]
    total = n_params(model) + n_params(nn.Linear(c4, 1000))
    assert round(total / 1e3) == CLS_PARAMS_K[(cls.__name__, arch)]
    if cls is EMO:
        assert round(n_params(cls(arch)) / 1e3) == BACKBONE_PARAMS_K[arch]


@pytest.mark.parametrize('cls,arch', VARIANTS, ids=IDS)
def test_output_shapes(cls, arch):
    chans = CHANNELS[(cls.__name__, arch)]
    model = cls(arch, out_indices=(0, 1, 2, 3, 4)).eval()
    assert model.channels == chans
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
        assert [tuple(o.shape) for o in outs] == [(1, c, 64 // s, 64 // s) for c, s in zip(chans, (2, 4, 8, 16, 32))]
        # default (4,), negative index, stem only, and a size that is not a multiple of 32
        assert [o.shape[1] for o in cls(arch).eval()(torch.randn(1, 3, 64, 64))] == [chans[4]]
        out, = cls(arch, out_indices=-1).eval()(torch.randn(1, 3, 50, 70))
        assert tuple(out.shape) == (1, chans[4], 2, 3)
        out, = cls(arch, out_indices=(0, )).eval()(torch.randn(2, 3, 50, 70))
        assert tuple(out.shape) == (2, chans[0], 25, 35)


def test_out_indices_order_and_validation():
    model = EMO('1m', out_indices=(-2, 1)).eval()
    assert model.out_indices == (3, 1)
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [32, 80]  # stage order, like mmpretrain
    with pytest.raises(ValueError, match='out_indices'):
        EMO('1m', out_indices=(5, ))
    with pytest.raises(ValueError, match='frozen_stages'):
        EMO('1m', frozen_stages=5)
    with pytest.raises(ValueError, match="unknown EMO arch '3m'"):
        EMO('3m')


def test_registry_arch_names_and_custom_arch():
    assert MODELS.get('EMO') is EMO and MODELS.get('EMOv2') is EMOv2
    model = MODELS.build(dict(type='EMOv2', arch='EMOv2-1M'))
    assert model.arch_name == 'emov2-1m'
    custom = EMO(dict(depths=[1, 1, 2, 1], embed_dims=[16, 24, 40, 64], exp_ratios=[2, 2, 2, 2],
                      dim_heads=[8, 8, 8, 16]), out_indices=(1, 2, 3, 4)).eval()
    assert custom.arch_name == 'emo-custom'
    assert [o.shape[1] for o in custom(torch.randn(1, 3, 64, 64))] == [16, 24, 40, 64]
    with pytest.raises(ValueError, match='missing keys'):
        EMO(dict(depths=[1, 1, 1, 1]))


def test_grayscale_input_error():
    with pytest.raises(ValueError, match='expects 3-channel.*got 1 channels'):
        EMO('1m')(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match='expects 3-channel.*got 1 channels'):
        EMOv2('1m')(torch.randn(1, 1, 64, 64))


def test_numerics_details():
    """eps 1e-6 everywhere, exact GELU, conv_local BN+SiLU, v1 stem SE, v2 layer scale everywhere."""
    for model in (EMO('1m', final_norm=True), EMOv2('1m', final_norm=True)):
        eps = {m.eps for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm))}
        assert eps == {1e-6}
        assert all(m.approximate == 'none' for m in model.modules() if isinstance(m, nn.GELU))
        for name, m in model.named_modules():
            if name.endswith('conv_local'):
                assert isinstance(m.norm, nn.BatchNorm2d) and isinstance(m.act, nn.SiLU)
    v1 = EMO('1m')
    assert isinstance(v1.stage0[1].se.act1, nn.SiLU) and v1.stage0[1].se.conv_reduce.out_channels == 24
    v2 = EMOv2('1m')
    gammas = [p for n, p in v2.named_parameters() if n.endswith('ls.gamma')]
    assert len(gammas) == sum(v2.settings['depths']) and all(torch.all(g == 1e-6) for g in gammas)
    # attention only in blocks >= 1 of stages 3 and 4
    assert [n for n, m in v1.named_modules() if isinstance(m, IRMB) and m.attn_s] == \
        [f'stage3.{i}' for i in range(1, 8)] + ['stage4.1', 'stage4.2']


# --------------------------------------------------------------------------------------------------
# Window attention against a naive reference (python loops over windows, explicit token gather)

def naive_window_attention(x, qk_layer, v_layer, num_heads, ws, modes, attn_pre):
    B, C, H, W = x.shape
    Hp, Wp = math.ceil(H / ws) * ws, math.ceil(W / ws) * ws
    xp = x.new_zeros(B, C, Hp, Wp)
    xp[:, :, :H, :W] = x  # zero padding right/bottom, after the norm, no mask
    qk = qk_layer(xp)
    values = xp if attn_pre else v_layer(xp)
    n1, n2 = Hp // ws, Wp // ws
    d, dv = C // num_heads, values.shape[1] // num_heads
    out = values.new_zeros(B, values.shape[1], Hp, Wp)
    for mode in modes:
        for b in range(B):
            for i in range(n1):
                for j in range(n2):
                    if mode == 'remote':  # tokens spaced n1 / n2 apart over the whole map
                        pos = [(i + n1 * a, j + n2 * c) for a in range(ws) for c in range(ws)]
                    else:  # contiguous window
                        pos = [(i * ws + a, j * ws + c) for a in range(ws) for c in range(ws)]
                    rows = torch.tensor([p[0] for p in pos])
                    cols = torch.tensor([p[1] for p in pos])
                    tok_qk = qk[b][:, rows, cols]  # (2C, N)
                    tok_v = values[b][:, rows, cols]
                    for h in range(num_heads):
                        q = tok_qk[h * d:(h + 1) * d].T
                        k = tok_qk[C + h * d:C + (h + 1) * d].T
                        v = tok_v[h * dv:(h + 1) * dv].T
                        attn = torch.softmax(q @ k.T / math.sqrt(d), dim=-1)
                        out[b, h * dv:(h + 1) * dv, rows, cols] += (attn @ v).T
    out = out[:, :, :H, :W]
    return v_layer(out) if attn_pre else out


def irmb_reference(block, x):
    """Whole v1 attention block with the naive attention (other parts taken from the block)."""
    xn = block.norm(x)
    y = naive_window_attention(xn, block.qk, block.v, block.num_head, block.window_size, ('remote', ),
                               block.attn_pre)
    y = y + block.conv_local(y)
    return x + block.proj(y)


ATTN_SIZES = [(1, 21, 33), (3, 11, 17), (3, 4, 4), (1, 2, 2), (1, 7, 14)]  # 333x517 /16 and /32, 64x64 /16, /32


@pytest.mark.parametrize('attn_pre', [True, False])
@pytest.mark.parametrize('batch,h,w', ATTN_SIZES)
def test_v1_remote_attention_matches_naive(batch, h, w, attn_pre):
    torch.manual_seed(0)
    block = IRMB(40, 40, exp_ratio=3.0, norm='ln_2d', act='gelu', dw_ks=5, dim_head=20, window_size=7,
                 attn_s=True, qkv_bias=True, attn_pre=attn_pre).eval()
    randomize(block)
    x = torch.randn(batch, 40, h, w)
    with torch.no_grad():
        ref = irmb_reference(block, x)
        torch.testing.assert_close(block(x), ref, atol=1e-5, rtol=1e-5)
        block.switch_to_deploy()  # SDPA path
        torch.testing.assert_close(block(x), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('layout', [torch.contiguous_format, torch.channels_last], ids=['nchw', 'nhwc'])
@pytest.mark.parametrize('batch,h,w', ATTN_SIZES)
def test_v2_hybrid_attention_matches_naive(batch, h, w, layout):
    """Both partitions; the output map is rebuilt in the input's memory layout (two code paths)."""
    torch.manual_seed(0)
    attn = HybridAttention(40, 120, dim_head=20, window_size=7, act='gelu').eval()
    x = torch.randn(batch, 40, h, w).contiguous(memory_format=layout)
    with torch.no_grad():
        ref = naive_window_attention(x, attn.qk, attn.v, attn.num_head, 7, ('remote', 'close'), False)
        torch.testing.assert_close(attn(x), ref, atol=1e-5, rtol=1e-5)
        attn.switch_to_deploy()
        torch.testing.assert_close(attn(x), ref, atol=1e-5, rtol=1e-5)


def test_remote_and_close_partitions_differ():
    """Guard against a test that passes for any partition: remote != close on a multi-window map."""
    torch.manual_seed(0)
    attn = HybridAttention(40, 80, dim_head=20, window_size=3).eval()
    x = torch.randn(1, 40, 9, 9)
    with torch.no_grad():
        remote = naive_window_attention(x, attn.qk, attn.v, 2, 3, ('remote', ), False)
        close = naive_window_attention(x, attn.qk, attn.v, 2, 3, ('close', ), False)
        assert (remote - close).abs().max() > 1e-3
        torch.testing.assert_close(attn(x), remote + close, atol=1e-5, rtol=1e-5)


def test_attn_pre_flag_changes_outputs_not_weights():
    a, b = EMO('2m', attn_pre=True).eval(), EMO('2m', attn_pre=False).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (a(x)[0] - b(x)[0]).abs().max() > 1e-4
    with pytest.raises(ValueError, match='588.*8 heads'):  # EMO-1M stage 4 (the official code fails too)
        EMO('1m', attn_pre=False)


def test_window_size_leq_zero_is_one_window():
    torch.manual_seed(0)
    block = IRMB(40, 40, exp_ratio=2.0, norm='ln_2d', act='gelu', dim_head=20, window_size=0,
                 attn_s=True, qkv_bias=True, attn_pre=False).eval()
    x = torch.randn(2, 40, 6, 6)
    with torch.no_grad():
        block.window_size = 6
        ref = block(x)
        block.window_size = 0
        torch.testing.assert_close(block(x), ref, atol=1e-6, rtol=1e-6)
        assert block(torch.randn(1, 40, 5, 9)).shape == (1, 40, 5, 9)  # no padding needed either


# --------------------------------------------------------------------------------------------------
# Deploy path

# every size without a stem output (the stem's last conv composed into stage 1's first); with the stem output
# (no composition) on one size per family: the stem's composition does not depend on the size
DEPLOY_CASES = [(cls, arch, (1, 2, 3, 4)) for cls, arch in VARIANTS] + \
    [(cls, '1m', (0, 1, 2, 3, 4)) for cls in (EMO, EMOv2)]


@pytest.mark.parametrize('cls,arch,out_indices', DEPLOY_CASES,
                         ids=[f'{c.__name__}-{a}-{"with_stem" if 0 in o else "no_stem"}' for c, a, o in DEPLOY_CASES])
def test_deploy_equivalence(cls, arch, out_indices):
    torch.manual_seed(0)
    model = randomize(cls(arch, out_indices=out_indices, window_size=3, final_norm=True)).eval()
    x = torch.randn(1, 3, 72, 56)
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    with torch.no_grad():
        ref = model(x)
        model.switch_to_deploy()
        assert model.deploy
        assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        # without a stem output, the stem's last 1x1 conv is composed into stage 1's first one
        assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == convs - (0 not in out_indices)
        out = model(x)
        model.switch_to_deploy()  # idempotent
        again = model(x)
    for r, o, a in zip(ref, out, again):
        assert (r - o).abs().max() <= 1e-4
        assert torch.equal(o, a)
    if cls is EMOv2:
        assert not any(n.endswith('ls.gamma') for n, _ in model.named_parameters())


def test_deploy_large_input_emo1m():
    torch.manual_seed(0)
    model = randomize(EMO('1m', out_indices=(1, 2, 3, 4))).eval()
    x = torch.randn(1, 3, 333, 517)
    with torch.no_grad():
        ref = model(x)
        model.switch_to_deploy()
        out = model(x)
    assert [tuple(o.shape[2:]) for o in out] == [(84, 130), (42, 65), (21, 33), (11, 17)]
    for r, o in zip(ref, out):
        assert (r - o).abs().max() <= 1e-4


# --------------------------------------------------------------------------------------------------
# Training options

def bn_state(module):
    return {n: b.clone() for n, b in module.named_buffers() if 'running' in n}


def test_frozen_stages():
    model = EMO('1m', frozen_stages=1, out_indices=(1, 2, 3, 4))
    model.train()
    for i in range(5):
        stage = getattr(model, f'stage{i}')
        frozen = i <= 1
        assert all(p.requires_grad != frozen for p in stage.parameters())
        assert all(m.training != frozen for m in stage.modules())
    before = bn_state(model)
    outs = model(torch.randn(2, 3, 64, 64))
    sum(o.sum() for o in outs).backward()
    after = bn_state(model)
    for name in before:
        changed = not torch.equal(before[name], after[name])
        assert changed == (not name.startswith(('stage0.', 'stage1.'))), name
    assert all(p.grad is None for p in model.stage0.parameters())
    assert all(p.grad is None for p in model.stage1.parameters())
    assert model.stage2[0].v.conv.weight.grad is not None


def test_norm_eval():
    model = EMOv2('1m', norm_eval=True, final_norm=True)
    model.train()
    assert model.training
    assert all(not m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert all(m.training for m in model.modules() if isinstance(m, nn.LayerNorm))
    before = bn_state(model)
    model(torch.randn(2, 3, 64, 64))
    after = bn_state(model)
    assert all(torch.equal(before[n], after[n]) for n in before)


@pytest.mark.parametrize('cls', [EMO, EMOv2])
def test_with_cp_same_gradients(cls):
    torch.manual_seed(0)
    plain = cls('1m', out_indices=(2, 4), drop_path_rate=0.1)
    cp = cls('1m', out_indices=(2, 4), drop_path_rate=0.1, with_cp=True)
    cp.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    grads = []
    for model in (plain, cp):
        model.train()
        torch.manual_seed(1)
        outs = model(x)
        sum((o * o).mean() for o in outs).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize('cls', [EMO, EMOv2])
def test_drop_path_rates_linear(cls):
    model = cls('2m', drop_path_rate=0.2)
    rates = [getattr(b.drop_path, 'drop_prob', 0.0) for i in range(1, 5) for b in getattr(model, f'stage{i}')]
    expected = torch.linspace(0, 0.2, sum(model.settings['depths'])).tolist()
    assert rates == pytest.approx(expected)
    default = cls('1m')
    last = default.stage4[-1].drop_path.drop_prob
    assert last == pytest.approx(0.04036)


def test_pretrained_kwarg_becomes_init_cfg():
    model = EMO('1m', pretrained='checkpoints/x.pth')
    assert model.init_cfg == dict(type='Pretrained', checkpoint='checkpoints/x.pth')
    assert EMO('1m', pretrained=None).init_cfg is None
    with pytest.raises(ValueError, match='either'):
        EMO('1m', pretrained='a.pth', init_cfg=dict(type='Pretrained', checkpoint='b.pth'))


def test_sdpa_scale_is_dim_head():
    """Deploy attention uses the official scale dim_head ** -0.5 (also for 21-dim heads of EMO-1M st4)."""
    torch.manual_seed(0)
    block = IRMB(168, 168, exp_ratio=3.5, norm='ln_2d', act='gelu', dw_ks=5, dim_head=21, window_size=7,
                 attn_s=True, qkv_bias=True, attn_pre=True).eval()
    x = torch.randn(1, 168, 3, 5)
    with torch.no_grad():
        ref = irmb_reference(block, x)
        block.switch_to_deploy()
        torch.testing.assert_close(block(x), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('layout', [torch.contiguous_format, torch.channels_last], ids=['nchw', 'nhwc'])
@pytest.mark.parametrize('cls', [EMO, EMOv2])
def test_deploy_in_place_ops_are_safe(cls, layout):
    """Deploy uses in-place activations and residual sums: the input (NCHW or channels_last) and every
    returned feature map must stay untouched, and train() after switch_to_deploy falls back to the
    out-of-place path."""
    torch.manual_seed(0)
    model = randomize(cls('1m', out_indices=(0, 1, 2, 3, 4))).eval()
    model.switch_to_deploy()
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=layout)
    x_copy = x.clone()
    with torch.no_grad():
        outs = model(x)
        copies = [o.clone() for o in outs]
        again = model(x)
    assert torch.equal(x, x_copy)
    for o, c, a in zip(outs, copies, again):
        assert torch.equal(o, c) and torch.equal(o, a)
    acts = [m.act for m in model.modules() if type(m).__name__ == 'ConvNormAct' and isinstance(m.act, nn.SiLU)]
    assert acts and all(a.inplace for a in acts)
    model.train()
    out = model(x)  # autograd path still works after deploy (in-place SiLU on fresh conv outputs)
    sum(o.sum() for o in out).backward()


# --------------------------------------------------------------------------------------------------
# Deploy on CPU through oneDNN (packed weights; 1x1 convs as linear layers)

def packed_weights(model):
    """The oneDNN weight copies a deploy model holds: (1x1 convs as linear layers, other convs)."""
    packs = [m.packed.value for m in model.modules()
             if isinstance(getattr(m, 'packed', None), onednn_deploy.PackedWeight) and m.packed.value is not None]
    return sum(p.dim() == 2 for p in packs), sum(p.dim() == 4 for p in packs)


def fused_convs(model):
    return [m.conv if hasattr(m, 'act') else m.convs[0][0] for m in model.modules()
            if isinstance(getattr(m, 'packed', None), onednn_deploy.PackedWeight) and m.fused]


needs_onednn = pytest.mark.skipif(not onednn_deploy._ONEDNN_BUILT, reason='this PyTorch build has no oneDNN')


@needs_onednn
@pytest.mark.parametrize('cls', [EMO, EMOv2])
def test_deploy_onednn_path_matches_plain(cls):
    """CPU inference in deploy mode runs every BN-folded conv through oneDNN (1x1 convs as linear layers on
    the pixel x channel view, the others as convs; NCHW input is handed over in channels_last) with the
    plain path's outputs, at a size that needs window padding (the cropped attention output is made dense
    again for the next conv); autograd stays on F.conv2d."""
    torch.manual_seed(0)
    model = randomize(cls('1m', out_indices=(0, 1, 2, 3, 4), window_size=3)).eval()
    x = torch.randn(2, 3, 72, 56)
    with torch.no_grad():
        ref = model(x)
    model.switch_to_deploy()
    out = model(x)  # grad enabled: F.conv2d
    assert packed_weights(model) == (0, 0) and out[-1].requires_grad
    for layout in (torch.contiguous_format, torch.channels_last):
        with torch.inference_mode():
            out = model(x.contiguous(memory_format=layout))
        assert packed_weights(model)[0] > 0
        for r, o in zip(ref, out):
            assert o.is_contiguous(memory_format=torch.channels_last)
            assert (r - o).abs().max() <= 1e-4
        convs = fused_convs(model)
        pointwise = sum(c.kernel_size == (1, 1) for c in convs)
        assert packed_weights(model) == (pointwise, len(convs) - pointwise) and 0 < pointwise < len(convs)


@needs_onednn
@pytest.mark.parametrize('act', [None, nn.SiLU(inplace=True), nn.ReLU(inplace=True), nn.GELU()],
                         ids=['none', 'silu', 'relu', 'gelu'])
def test_deploy_conv_equals_conv_then_act(act):
    """deploy_conv on the oneDNN path (1x1 as linear, depthwise with SiLU applied after the conv, dense
    strided conv) gives act(conv(x)) and leaves its input untouched."""
    torch.manual_seed(0)
    convs = [nn.Conv2d(16, 24, 1), nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.Conv2d(16, 16, 5, 2, 2, groups=16),
             nn.Conv2d(16, 8, 3, 2, 1)]
    x = torch.randn(2, 16, 13, 11).contiguous(memory_format=torch.channels_last)
    x_before = x.clone()
    for conv in convs:
        with torch.no_grad():
            ref = conv(x) if act is None else type(act)()(conv(x))
        packed = onednn_deploy.PackedWeight()
        with torch.inference_mode():
            for _ in range(2):  # packing, then the packed weight
                out = onednn_deploy.deploy_conv(x, conv, act, packed)
                torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        assert packed.value is not None
        torch.testing.assert_close(x, x_before, atol=0, rtol=0)


@needs_onednn
def test_deploy_packed_weights_follow_weight_updates():
    """The oneDNN weight copies are re-made when the weights change (load_state_dict, .to()), never enter the
    state_dict, and a deep copy of a deploy model runs like the original."""
    a, b = (randomize(EMO('1m'), seed=s).eval() for s in (0, 1))
    for m in (a, b):
        m.switch_to_deploy()
        m.to(memory_format=torch.channels_last)  # weights replaced: packing must follow
    keys = set(a.state_dict())
    x = torch.randn(1, 3, 96, 96).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        out_a = a(x)[0]
        assert packed_weights(a)[0] > 0 and set(a.state_dict()) == keys
        a.load_state_dict(b.state_dict())
        torch.testing.assert_close(a(x)[0], b(x)[0], rtol=0, atol=1e-6)
        assert (a(x)[0] - out_a).abs().max() > 1e-2
        clone = copy.deepcopy(a)
        assert packed_weights(clone) == (0, 0)
        torch.testing.assert_close(clone(x)[0], a(x)[0], rtol=0, atol=1e-6)


@needs_onednn
def test_deploy_parametrized_weights_are_computed():
    """A deploy conv whose weight is computed by a parametrization (not a plain parameter) is not packed
    and gives the parametrized result; so does a LayerNorm2d with a parametrized weight."""
    from torch.nn.utils import parametrize

    class Double(nn.Module):
        def forward(self, w):
            return 2 * w

    torch.manual_seed(0)
    block = emo_layers.ConvNormAct(8, 16, 1, act='silu')
    block.switch_to_deploy()
    x = torch.randn(1, 8, 5, 5).contiguous(memory_format=torch.channels_last)
    parametrize.register_parametrization(block.conv, 'weight', Double())
    with torch.inference_mode():
        out = block(x)
    assert block.packed.value is None
    w = block.conv.parametrizations.weight.original
    torch.testing.assert_close(out, F.silu(F.conv2d(x, 2 * w, block.conv.bias)), rtol=0, atol=1e-6)

    norm = emo_layers.LayerNorm2d(8)
    parametrize.register_parametrization(norm.norm, 'weight', Double())
    expected = F.layer_norm(x.permute(0, 2, 3, 1), (8, ), 2 * norm.norm.parametrizations.weight.original,
                            norm.norm.bias, 1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(norm(x), expected, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# Deploy CPU inference: high-resolution stages on batch slices; attention written out on window slices

def count_calls(module):
    calls = []
    module.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    return calls


@pytest.mark.parametrize('cls', [EMO, EMOv2])
def test_widest_early_map_is_the_widest_map_of_stages_0_to_2(cls):
    """The slice size rests on this bound: it must be the largest per-image map the stem and stages 1-2
    actually make (every submodule's output measured), at an odd input size."""
    model = cls('1m').eval()
    widest = []
    for i in range(model.early_stages):
        for m in getattr(model, f'stage{i}').modules():
            m.register_forward_hook(lambda m, a, out: widest.append(out.numel() // out.shape[0]))
    with torch.no_grad():
        model(torch.randn(2, 3, 66, 50))
    assert model._widest_early_map(66, 50) == max(widest)


@needs_onednn
@pytest.mark.parametrize('cls', [EMO, EMOv2])
def test_deploy_runs_high_resolution_stages_on_batch_slices(cls):
    """Above ``early_chunk_bytes`` the stem and stages 1-2 run on slices of the batch (an odd batch: slices
    2, 2, 1), stages 3-4 on the whole batch, with the plain model's outputs (every stage an output, so the
    slices' outputs are concatenated too); batch 1, autograd and a plain model in train mode run whole."""
    torch.manual_seed(0)
    model = randomize(cls('1m', out_indices=(0, 1, 2, 3, 4))).eval()
    x = torch.randn(5, 3, 48, 40)
    with torch.no_grad():
        ref = model(x)
    trained = copy.deepcopy(model).train()  # (a train-mode forward updates BN statistics)
    plain_calls = count_calls(trained.stage1[0])
    with torch.no_grad():
        trained(x)
    assert plain_calls == [5]  # never sliced outside deploy
    model.switch_to_deploy()
    model.early_chunk_bytes = 2 * 4 * model._widest_early_map(48, 40)
    early, late = count_calls(model.stage1[0]), count_calls(model.stage3[0])
    with torch.no_grad():
        out = model(x)
    assert early == [2, 2, 1] and late == [5]
    for r, o in zip(ref, out):
        assert o.shape == r.shape and o.is_contiguous(memory_format=torch.channels_last)
        assert (r - o).abs().max() <= 1e-4
    early.clear()
    with torch.no_grad():
        model(x[:1])
        model.early_chunk_bytes = 1 << 40
        model(x)
    assert early == [1, 5]
    early.clear()
    model.early_chunk_bytes = 1
    x = x[:3].requires_grad_()
    out = model(x)  # autograd: whole batch, gradients flow to the input
    out[-1].sum().backward()
    assert early == [3] and x.grad is not None and x.grad.abs().sum() > 0


def test_deploy_attention_in_window_slices(monkeypatch):
    """EMOv2's deploy attention (value heads wider than q/k) written out on slices of windows: uneven
    slices give the naive attention; with autograd it takes SDPA and gives the same gradients as the plain
    block."""
    monkeypatch.setattr(window_attention, 'ATTENTION_SLICE_BYTES', 3 * 49 * 49 * 4)  # 3 score matrices a slice
    torch.manual_seed(0)
    attn = HybridAttention(40, 120, dim_head=20, window_size=7, act='gelu').eval()
    x = torch.randn(2, 40, 11, 17)  # 2 x 2 x 3 windows x 2 heads = 24 matrices per mode: 8 slices
    with torch.no_grad():
        ref = naive_window_attention(x, attn.qk, attn.v, attn.num_head, 7, ('remote', 'close'), False)
    xg = x.clone().requires_grad_()
    attn(xg).square().sum().backward()
    attn.switch_to_deploy()
    with torch.no_grad():
        torch.testing.assert_close(attn(x), ref, atol=1e-5, rtol=1e-5)
    xd = x.clone().requires_grad_()
    attn(xd).square().sum().backward()
    torch.testing.assert_close(xd.grad, xg.grad, atol=1e-5, rtol=1e-4)
