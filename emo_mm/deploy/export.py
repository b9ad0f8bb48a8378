"""ONNX export: backbones and classifiers (tensor outputs), detectors and segmentors (end to end), with dynamic
batch and spatial axes; :mod:`emo_mm.deploy.verify` checks the files in onnxruntime."""
from __future__ import annotations

import json
import os
import os.path as osp
import warnings
from typing import List, Sequence, Tuple

import torch
import torch.nn as nn

from emo_mm.deploy.graphs import DetectorEndToEnd, SegmentorEndToEnd
from emo_mm.deploy.rewrites import ExportableModules
from emo_mm.deploy.two_stage import TwoStageEndToEnd
from emo_mm.models.build import TensorForward

_PACKAGE_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _tracer_warnings(caught) -> List[str]:
    """The TracerWarnings of an export as ``file:line: message``: the source lines where a tensor value (e.g. a
    shape) became a Python constant, i.e. where the graph may be specialised to the export size."""
    return sorted({f'{osp.relpath(w.filename, _PACKAGE_ROOT)}:{w.lineno}: {str(w.message).split(" might ")[0]}'
                   for w in caught if issubclass(w.category, torch.jit.TracerWarning)})


def flatten_outputs(out) -> List[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    res = []
    for o in out:
        res += flatten_outputs(o)
    return res


class _FlatForward(nn.Module):
    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x):
        outs = flatten_outputs(self.module(x))
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
        n_out = len(flatten_outputs(net(x)))
    out_names = ['output'] if n_out == 1 else [f'feat{i}' for i in range(n_out)]
    dyn = {'input': {0: 'batch', 2: 'height', 3: 'width'}}
    for i, name in enumerate(out_names):
        dyn[name] = {0: 'batch'} if kind == 'classifier' else {0: 'batch', 2: f'h{i}', 3: f'w{i}'}
    os.makedirs(osp.dirname(osp.abspath(out_file)), exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        torch.onnx.export(net, (x,), out_file, input_names=['input'], output_names=out_names,
                          opset_version=opset, dynamic_axes=dyn, do_constant_folding=True, dynamo=False)
    tracer = _tracer_warnings(caught)
    return out_names, tracer


def end_to_end_module(model: nn.Module, kind: str, seg_output: str = 'seg') -> Tuple[nn.Module, List[str], dict]:
    """``(module, output names, dynamic axes of the outputs)`` of the exported graph of ``model``."""
    if kind == 'detector' and getattr(model, 'roi_head', None) is not None:  # Faster / Mask R-CNN
        net = TwoStageEndToEnd(model)
        names = ['dets', 'labels'] + (['masks'] if net.with_mask else [])
        return net, names, {name: {0: 'batch'} for name in names}
    if kind == 'detector':
        return DetectorEndToEnd(model), ['dets', 'labels'], {'dets': {0: 'batch'}, 'labels': {0: 'batch'}}
    if kind == 'segmentor':
        axes = {0: 'batch', 1: 'height', 2: 'width'} if seg_output == 'seg' else \
            {0: 'batch', 2: 'height', 3: 'width'}
        return SegmentorEndToEnd(model, seg_output), [seg_output], {seg_output: axes}
    raise ValueError(f'no end-to-end graph for a {kind}')


def export_end_to_end(model: nn.Module, kind: str, out_file: str, shape: Sequence[int], opset: int = 17,
                      metadata: dict = None, seg_output: str = 'seg', batch: int = 1, static: bool = False
                      ) -> Tuple[List[str], List[str]]:
    """Export a detector / segmentor from the preprocessed image to its final outputs (see the classes above).

    ``static=True`` fixes batch, height and width to ``batch`` x ``shape``: onnxruntime then folds the shape
    arithmetic of the dynamic graph (EMO's window padding: ~1000 Shape / Gather / Unsqueeze / Concat nodes,
    half the nodes of SSDLite-EMO-1M after optimisation) into constants. (A dynamic batch alone keeps them all:
    they start from the input's Shape.) The fixed input is recorded in the metadata (``fixed_input``).

    ``metadata`` (str -> JSON-able) is stored as the model's ``metadata_props`` (JSON strings), which
    :mod:`emo_mm.deploy.runtime` reads back. Returns ``(output names, tracer warnings)`` as :func:`export_onnx`.
    """
    net, out_names, out_axes = end_to_end_module(model, kind, seg_output)
    x = torch.randn(batch, 3, *shape)
    dyn = {} if static else dict({'input': {0: 'batch', 2: 'height', 3: 'width'}}, **out_axes)
    if static and metadata is not None:
        metadata = dict(metadata, **{'emo_mm.fixed_input': [batch, *shape]})
    os.makedirs(osp.dirname(osp.abspath(out_file)), exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught, ExportableModules(model):
        warnings.simplefilter('always')
        torch.onnx.export(net.eval(), (x,), out_file, input_names=['input'], output_names=out_names,
                          opset_version=opset, dynamic_axes=dyn, do_constant_folding=True, dynamo=False)
    if metadata:
        set_metadata(out_file, metadata)
    tracer = _tracer_warnings(caught)
    return out_names, tracer


def set_metadata(onnx_file: str, metadata: dict) -> None:
    """Store ``metadata`` (values JSON-encoded) as ``metadata_props`` of ``onnx_file``."""
    import onnx
    proto = onnx.load(onnx_file)
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save(proto, onnx_file)
