"""oneDNN kernels of the deploy (inference-only) convolutions on CPU, used by the blocks in :mod:`.conv`.

Where a batch-1 forward loses time on CPU: F.conv2d hands oneDNN a plain OIHW weight that oneDNN reorders
to its blocked layout on every call, and each oneDNN convolution call costs ~30-40 us of setup, more than
most of EMO's ~60 small convs compute. In deploy mode (inference only) each conv keeps a copy of its weight
in oneDNN's layout, made once (:class:`PackedWeight`); a 1x1 conv on a channels_last map runs as a oneDNN
linear layer on the (pixels, channels) view of the same memory (``torch.ops.mkldnn._linear_pointwise``,
a fraction of the setup cost), every other conv as ``torch.ops.mkldnn._convolution_pointwise``, both with
the activation as a oneDNN post-op: the ops TorchInductor's CPU backend emits for conv/linear + activation
(except a depthwise conv's SiLU, which runs after it in place: faster, see :meth:`PackedWeight.update`).
The backbone hands its deploy-mode CPU inference input over in channels_last. Every case these ops do not
cover takes F.conv2d: non-CPU or non-fp32 tensors, NCHW maps (a block used on its own), autograd, tracing
(ONNX export), torch.compile, PyTorch builds without oneDNN.
"""
import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['PackedWeight', 'deploy_conv', 'deploy_act', 'onednn_inference', 'onednn_conv_usable', 'compiled_conv']

# deploy form of each activation module: in-place functional (None: no in-place form, the module runs) and
# oneDNN post-op name
_DEPLOY_ACTS = {nn.SiLU: (functools.partial(F.silu, inplace=True), 'swish'), nn.ReLU: (F.relu_, 'relu'),
                nn.GELU: (None, 'gelu')}

_MKLDNN_OPS = getattr(torch.ops, 'mkldnn', None)
_CONV_OP = getattr(_MKLDNN_OPS, '_convolution_pointwise', None)
_LINEAR_OP = getattr(_MKLDNN_OPS, '_linear_pointwise', None)
_REORDER_CONV = getattr(torch._C._nn, 'mkldnn_reorder_conv2d_weight', None)
_REORDER_LINEAR = getattr(_MKLDNN_OPS, '_reorder_linear_weight', None)
_ONEDNN_BUILT = (None not in (_CONV_OP, _LINEAR_OP, _REORDER_CONV, _REORDER_LINEAR)
                 and torch.backends.mkldnn.is_available())


def _onednn_post_op(act):
    """``(attr, scalars, algorithm)``: an activation module (or None) as a oneDNN post-op; None if none fits."""
    if act is None or isinstance(act, nn.Identity):
        return 'none', [], ''
    if type(act) not in _DEPLOY_ACTS:
        return None
    return _DEPLOY_ACTS[type(act)][1], [], getattr(act, 'approximate', '')  # GELU: 'none' (exact erf) or 'tanh'


def onednn_inference(x):
    """Whether ``x`` is a CPU inference input that the oneDNN deploy path may take (in channels_last)."""
    # compiling first: Dynamo cannot trace torch._C._get_mkldnn_enabled() (a non-tensor torch op, a graph
    # break per deploy conv) and Inductor wants plain convs it can fuse and pack itself; otherwise cheapest
    # tests first: this runs before every deploy conv (~60 per forward)
    if torch.compiler.is_compiling():
        return False
    return (_ONEDNN_BUILT and not torch.is_grad_enabled() and x.is_cpu and x.dtype == torch.float32
            and x.dim() == 4 and torch._C._get_mkldnn_enabled() and not torch.jit.is_tracing())


def onednn_conv_usable(x):
    """Whether a deploy conv may run ``x`` through the oneDNN path (see the comment above)."""
    return onednn_inference(x) and x.is_contiguous(memory_format=torch.channels_last)


def _is_pointwise(conv):
    return conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.padding == (0, 0) and conv.groups == 1


class PackedWeight:
    """How a deploy conv runs on oneDNN: its weight in oneDNN's layout (for the linear op if the conv is 1x1,
    else the conv op), the op's other arguments and the activation post-op, all made once and re-made when
    the weight tensor, its contents or the activation module change.

    Held by the module that owns the conv; never copied or pickled (``copy.deepcopy`` and ``torch.save`` of
    the module get an empty one), so checkpoints and state_dicts are unaffected.
    """
    __slots__ = ('key', 'value', 'pointwise', 'args', 'act_after')

    def __init__(self):
        self.key = self.value = self.pointwise = self.args = self.act_after = None

    def __reduce__(self):
        return PackedWeight, ()

    def update(self, conv, act, x):
        """Make the oneDNN form of ``act(conv(.))`` current for input ``x``; False if oneDNN has no post-op
        for ``act`` (the caller then takes F.conv2d)."""
        params = conv._parameters  # a fifth of ``conv.weight``'s cost (Module.__getattr__)
        if 'weight' not in params or 'bias' not in params:  # parametrized conv: F.conv2d computes it
            return False
        weight = params['weight']
        # _version counts in-place updates (load_state_dict), data_ptr catches `.data` swaps (.to());
        # weights made under inference_mode have no version, so their copy is re-made on every call
        key = None if weight.is_inference() else (id(weight), weight.data_ptr(), weight._version, act)
        if key is not None and key == self.key:
            return True
        post_op = _onednn_post_op(act)
        if post_op is None:
            return False
        w = weight.detach()
        self.pointwise = _is_pointwise(conv)
        self.act_after = None
        if conv.groups > 1 and conv.groups == conv.in_channels and type(act) is nn.SiLU:
            # oneDNN's swish post-op in its depthwise kernel is slower than the conv alone plus PyTorch's
            # in-place SiLU on EMO's depthwise shapes
            post_op, self.act_after = _onednn_post_op(None), _DEPLOY_ACTS[nn.SiLU][0]
        if self.pointwise:
            self.value = _REORDER_LINEAR(w.flatten(1), x.shape[0] * x.shape[2] * x.shape[3])
            self.args = post_op
        else:
            conv_args = list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups
            self.value = _REORDER_CONV(w.to_mkldnn(), *conv_args, list(x.shape))
            self.args = (*conv_args, *post_op)
        self.key = key
        return True


def deploy_conv(x, conv, act=None, packed=None):
    """``act(conv(x))`` for a BN-folded deploy conv (``act``: activation module or None).

    With a :class:`PackedWeight` ``packed``, runs the oneDNN path where it applies (see above); otherwise
    F.conv2d with the activation in place on the fresh conv output.
    """
    if packed is not None and onednn_conv_usable(x) and packed.update(conv, act, x):
        bias = conv._parameters['bias']
        if packed.pointwise:
            # the (pixels, channels) matrix of a channels_last map and back, each as one strided view
            B, C, H, W = x.shape
            y = _LINEAR_OP(x.as_strided((B * H * W, C), (C, 1)), packed.value, bias, *packed.args)
            C_out = y.shape[1]
            return y.as_strided((B, C_out, H, W), (H * W * C_out, 1, W * C_out, C_out))
        y = _CONV_OP(x, packed.value, bias, *packed.args)
        return y if packed.act_after is None else packed.act_after(y)
    if torch.compiler.is_compiling():
        x = compiled_conv(x, conv)
        return x if act is None else act(x)  # Inductor fuses it into the GEMM / conv epilogue
    x = F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    return x if act is None else deploy_act(act)(x)


def compiled_conv(x, conv):
    """``conv(x)`` as TorchInductor compiles it best: a 1x1 conv as a linear layer on the channels-last
    (B, H, W, C) view of the map (as EdgeNeXt writes its pointwise convs), which Inductor turns into one GEMM
    with the bias, activation and residual sums fused after it, where its CPU convolution is an extern oneDNN
    call that reorders the weight on every call and fuses nothing; other convs as F.conv2d. The result is an
    NCHW view with channels-last strides (what a conv on a channels_last map returns)."""
    if x.dim() == 4 and _is_pointwise(conv) and conv.padding_mode == 'zeros':
        return F.linear(x.permute(0, 2, 3, 1), conv.weight.flatten(1), conv.bias).permute(0, 3, 1, 2)
    return conv(x)


def deploy_act(act):
    """``act`` as a callable that may work in place on a fresh tensor."""
    return (_DEPLOY_ACTS.get(type(act), (None, ))[0]) or act
