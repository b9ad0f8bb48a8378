"""torch.compile of the EMO / EMOv2 backbones: one graph (fullgraph=True) plain and in deploy mode at any input
size, and TorchInductor's outputs equal to the plain eager model's.

Graph capture is checked with Dynamo's ``eager`` backend (no code generation, seconds); the code Inductor
generates is checked once per family in deploy mode (the mode users compile for inference), at a small input,
because a CPU Inductor compilation of a whole backbone takes a minute or more on a few cores.
"""
import pytest
import torch

from emo_mm.models.backbones import EMO, EMOv2

TOL = 1e-4
FAMILIES = {'EMO': EMO, 'EMOv2': EMOv2}
# sizes whose stage-3/4 maps are padded to the 7x7 window, odd sizes included (the stride-2 convs round up)
SIZES = [(72, 100), (64, 64), (97, 131)]


def _pair(family, deploy, window_size=7):
    torch.manual_seed(0)
    plain = FAMILIES[family]('1m', out_indices=(0, 1, 2, 3, 4), window_size=window_size).eval()
    # non-trivial BatchNorm statistics and LayerScale, so that folding them has something to get wrong
    for m in plain.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
        if hasattr(m, 'gamma'):
            m.gamma.data.uniform_(0.5, 1.5)
    model = FAMILIES[family]('1m', out_indices=(0, 1, 2, 3, 4), window_size=window_size).eval()
    model.load_state_dict(plain.state_dict())
    if deploy:
        model.switch_to_deploy()
    return plain, model


def _assert_close(outs, refs):
    assert len(outs) == len(refs)
    for o, r in zip(outs, refs):
        assert o.shape == r.shape
        diff = (o - r).abs().max().item()
        assert diff <= TOL * max(1.0, r.abs().max().item()), diff


@pytest.mark.parametrize('deploy', [False, True], ids=['plain', 'deploy'])
@pytest.mark.parametrize('family', FAMILIES)
def test_one_graph_at_any_size(family, deploy):
    """fullgraph=True captures the whole backbone (no graph break) at every size, padded windows and odd sizes
    included, NCHW and channels_last; outputs equal the plain model's. (One static trace per size: Dynamo's
    symbolic-shape trace of a whole backbone takes minutes, see test_one_graph_with_dynamic_shapes.)"""
    plain, model = _pair(family, deploy)
    torch._dynamo.reset()
    static = torch.compile(model, backend='eager', fullgraph=True, dynamic=False)
    for i, (h, w) in enumerate(SIZES):
        x = torch.randn(2, 3, h, w)
        if i % 2:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            _assert_close(static(x), plain(x))


@pytest.mark.slow
@pytest.mark.parametrize('family', FAMILIES)
def test_one_graph_with_dynamic_shapes(family):
    """dynamic=True: one symbolic-shape graph of the deploy backbone serves every size (make test-slow)."""
    plain, model = _pair(family, deploy=True)
    torch._dynamo.reset()
    dynamic = torch.compile(model, backend='eager', fullgraph=True, dynamic=True)
    for h, w in SIZES:
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            _assert_close(dynamic(x), plain(x))


@pytest.mark.parametrize('family', FAMILIES)
def test_one_graph_when_training(family):
    """The plain model's training forward and backward (drop path off) in one graph, gradients as eager's."""
    torch.manual_seed(0)
    model = FAMILIES[family]('1m', out_indices=(2, 4), drop_path_rate=0.).train()
    x = torch.randn(2, 3, 72, 100)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend='aot_eager', fullgraph=True)
    grads = []
    for fn in (model, compiled):
        model.zero_grad()
        sum(o.square().mean() for o in fn(x)).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('family', FAMILIES)
def test_inductor_deploy_matches_plain(family):
    """TorchInductor's code for the deploy model (plain convs, linear 1x1 convs and SDPA, see
    ``emo_mm.models.layers.onednn``) gives the plain eager model's outputs within 1e-4, padded windows
    included (72x100: stages 3 and 4 pad)."""
    plain, model = _pair(family, deploy=True)
    x = torch.randn(1, 3, 72, 100).contiguous(memory_format=torch.channels_last)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, dynamic=False)
    with torch.no_grad():
        _assert_close(compiled(x), plain(x))
