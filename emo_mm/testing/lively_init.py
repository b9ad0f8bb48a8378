"""Seeded random weights that make a model's outputs vary over the image, for export checks and benchmarks
that have no trained checkpoint at hand."""
import torch
import torch.nn as nn

from emo_mm.models.build import TensorForward, model_kind

__all__ = ['lively_init', 'live_layer_scales']


def lively_init(model: nn.Module, seed: int = 0, probe_size: int = 128) -> nn.Module:
    """Seeded random weights whose outputs vary over the image (for export checks and benchmarks).

    A freshly built detector has the head's default init and BatchNorm statistics 0 / 1: its features are
    nearly constant over the image, every class scores ~1/C and nothing passes ``score_thr``, so an export
    check would compare empty outputs. Here convs / linears get normal weights and small biases, norm layers
    weights in [0.5, 1.5), and then each conv / linear is scaled so that its output has unit std on a seeded
    random probe image (one pass of LSUV, Mishkin & Matas 2016): class scores spread out without saturating
    (saturated sigmoid scores would tie at 1.0), and detections with real NMS work appear.
    """
    g = torch.Generator().manual_seed(seed)
    if getattr(model, 'roi_head', None) is not None:  # two-stage: see live_layer_scales
        live_layer_scales(model, g)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.weight.data = torch.randn(m.weight.shape, generator=g) / m.weight[0].numel() ** 0.5
            if m.bias is not None:
                m.bias.data = torch.randn(m.bias.shape, generator=g) * 0.1
        elif isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)) and m.weight is not None:
            m.weight.data = torch.rand(m.weight.shape, generator=g) + 0.5
            m.bias.data = torch.randn(m.bias.shape, generator=g) * 0.1
    scaled = set()

    def unit_std(layer, inputs, out):
        if layer in scaled:  # a layer run on several inputs (shared head convs) is scaled on its first
            return None
        scaled.add(layer)
        s = out.std().clamp(min=1e-6)
        layer.weight.data /= s
        if layer.bias is not None:
            layer.bias.data /= s
        return out / s

    handles = [m.register_forward_hook(unit_std) for m in layers]
    # before the scaling, activations of the deep layers can be denormal floats: 10-100x slower on CPU
    flush = torch.set_flush_denormal(True)
    try:
        with torch.no_grad():
            TensorForward(model.eval(), model_kind(model))(torch.randn(1, 3, probe_size, probe_size, generator=g))
    finally:
        for h in handles:
            h.remove()
        if flush:
            torch.set_flush_denormal(False)
    _sharpen_class_scores(model)
    return model


def _sharpen_class_scores(model: nn.Module, softmax_gain: float = 2.0, sigmoid_shift: float = -6.0) -> None:
    """Make a dense head's class scores sparse and far apart, like a trained detector's: with unit-std logits
    thousands of candidates score within float32 rounding of each other (sigmoid heads saturate towards 1),
    and which of them NMS and the top-K keep then flips on rounding differences between two runtimes.
    Sigmoid heads: logits shifted down (few pass ``score_thr``); softmax heads: logits spread by a gain."""
    head = getattr(model, 'bbox_head', None)
    n = getattr(head, 'cls_out_channels', None)
    if head is None or not n:
        return
    for name, m in head.named_modules():
        if isinstance(m, nn.Conv2d) and 'cls' in name and m.out_channels % n == 0 and m.out_channels > n:
            if head.use_sigmoid_cls:
                if m.bias is not None:
                    m.bias.data += sigmoid_shift
            else:
                m.weight.data *= softmax_gain
                if m.bias is not None:
                    m.bias.data *= softmax_gain


def live_layer_scales(model: nn.Module, generator: torch.Generator) -> None:
    """Layer-scale factors (EMO / EMOv2 ``ls.gamma``, initialised to 1e-6) drawn in [0.5, 1.5), as
    :func:`lively_init` draws norm weights. At 1e-6 every block is near identity and
    the backbone's outputs are ~1e-6 and nearly independent of the image; the RPN then scores anchors by
    position only (flat regions and zero padding give equal scores), and which of two equal-scored,
    overlapping proposals NMS keeps is arbitrary in both runtimes: 5-15% of the final detections differed
    between onnxruntime and PyTorch on mini images, 0% with live layer scales."""
    for name, p in model.named_parameters():
        if name.endswith('.gamma'):
            p.data = torch.rand(p.shape, generator=generator) + 0.5
