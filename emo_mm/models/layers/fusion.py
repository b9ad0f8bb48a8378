"""Re-parameterisation helpers: fold BatchNorms and affine maps into convolutions (deploy mode)."""
import torch
import torch.nn as nn

__all__ = ['bn_affine', 'fold_bn_into_conv', 'fold_affine_into_next_conv', 'compose_pointwise_convs']


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
