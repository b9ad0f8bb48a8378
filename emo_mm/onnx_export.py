"""ONNX export of a backbone or classifier with dynamic batch and spatial axes, checked with onnxruntime."""
from __future__ import annotations

import os
import os.path as osp
from typing import List, Sequence, Tuple

import torch
import torch.nn as nn

from .builder import TensorForward
from .variants import REPO_ROOT

def _flatten_outputs(out) -> List[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    res = []
    for o in out:
        res += _flatten_outputs(o)
    return res


class _FlatForward(nn.Module):
    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x):
        outs = _flatten_outputs(self.module(x))
        return outs[0] if len(outs) == 1 else tuple(outs)


def export_onnx(model: nn.Module, kind: str, out_file: str, shape: Sequence[int] = (224, 224), opset: int = 17,
                batch: int = 1) -> Tuple[List[str], List[str]]:
    """Export the tensor forward of ``model`` (classifier: logits; backbone: the feature tuple) to ONNX.

    Batch, height and width are dynamic axes. Uses the TorchScript exporter (``dynamo=False``): it records
    the shape arithmetic of the model (e.g. the attention window padding computed from ``x.shape``) as graph
    ops, so one file runs at any size. (The dynamo exporter, tried with torch 2.14, specialises the padded
    window grid to the export size: a file exported at 224 fails at 256x320 in a Reshape.)
    Returns ``(output names, tracer warnings)``: the warnings name the source lines where a tensor value
    became a Python constant during tracing, i.e. where the graph may be fixed to the export size.
    """
    net = _FlatForward(TensorForward(model, kind)).eval()
    x = torch.randn(batch, 3, *shape)
    with torch.no_grad():
        n_out = len(_flatten_outputs(net(x)))
    out_names = ['output'] if n_out == 1 else [f'feat{i}' for i in range(n_out)]
    dyn = {'input': {0: 'batch', 2: 'height', 3: 'width'}}
    for i, name in enumerate(out_names):
        dyn[name] = {0: 'batch'} if kind == 'classifier' else {0: 'batch', 2: f'h{i}', 3: f'w{i}'}
    os.makedirs(osp.dirname(osp.abspath(out_file)), exist_ok=True)
    import warnings
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        torch.onnx.export(net, (x,), out_file, input_names=['input'], output_names=out_names,
                          opset_version=opset, dynamic_axes=dyn, do_constant_folding=True, dynamo=False)
    # TracerWarnings name the source lines where a tensor value (e.g. a shape) became a Python constant,
    # i.e. where the graph may be specialised to the export size.
    tracer = sorted({f'{osp.relpath(w.filename, REPO_ROOT)}:{w.lineno}: {str(w.message).split(" might ")[0]}'
                     for w in caught if issubclass(w.category, torch.jit.TracerWarning)})
    return out_names, tracer


def check_onnx(model: nn.Module, kind: str, onnx_file: str, shape: Sequence[int], batch: int = 1,
               seed: int = 0) -> Tuple[float, float]:
    """``(max abs diff, max abs PyTorch output)`` of onnxruntime vs PyTorch (fp32, CPU) on a random input.

    The second number is the output scale: fp32 kernels that sum in another order differ by a few ulps of
    the values involved, so the diff is only meaningful relative to it.
    """
    import numpy as np
    import onnxruntime as ort
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, *shape, generator=g)
    with torch.no_grad():
        ref = _flatten_outputs(TensorForward(model, kind)(x))
    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, torch.get_num_threads())
    so.log_severity_level = 3
    sess = ort.InferenceSession(onnx_file, so, providers=['CPUExecutionProvider'])
    outs = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    if len(outs) != len(ref):
        raise AssertionError(f'onnx gave {len(outs)} outputs, PyTorch {len(ref)}')
    diff, scale = 0.0, 0.0
    for o, r in zip(outs, ref):
        if tuple(o.shape) != tuple(r.shape):
            raise AssertionError(f'shape mismatch at {tuple(shape)}: onnx {o.shape} vs torch {tuple(r.shape)}')
        diff = max(diff, float(np.abs(o - r.numpy()).max()))
        scale = max(scale, float(r.abs().max()))
    return diff, scale
