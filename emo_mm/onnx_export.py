"""ONNX export of a backbone or classifier with dynamic batch and spatial axes, checked with onnxruntime."""
from __future__ import annotations

import os
import os.path as osp
from typing import List, Optional, Sequence, Tuple

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


# ---------------------------------------------------------------------------------------------------------------
# End-to-end graphs of detectors and segmentors
# ---------------------------------------------------------------------------------------------------------------

class _BatchedMultiClassNMS(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` (per batch item and per class, like mmdet's ``batched_nms``).

    ``boxes`` (N, M, 4) x1y1x2y2, ``scores`` (N, C, M) -> selected ``(S, 3)`` int64 rows ``[batch, class, box]``.
    The eager forward (run while tracing and in PyTorch checks) gives the same selection with torchvision's
    NMS; the exported graph holds the single ONNX op, which onnxruntime runs natively.
    """

    @staticmethod
    def forward(ctx, boxes, scores, max_per_class: int, iou_thr: float, score_thr: float):
        from torchvision.ops import batched_nms
        rows = []
        for b in range(scores.shape[0]):
            cls, box = torch.nonzero(scores[b] > score_thr, as_tuple=True)
            keep = batched_nms(boxes[b, box], scores[b, cls, box], cls, iou_thr)  # sorted by score
            cls, box = cls[keep], box[keep]
            # at most max_per_class per class: rank of each box within its class in score order
            order = torch.argsort(cls * (keep.numel() + 1) + torch.arange(keep.numel()), stable=True)
            first = torch.searchsorted(cls[order], cls[order], right=False)
            rank = torch.empty_like(order)
            rank[order] = torch.arange(keep.numel()) - first
            ok = rank < max_per_class
            rows.append(torch.stack([torch.full_like(box[ok], b), cls[ok], box[ok]], dim=1))
        return torch.cat(rows)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class, iou_thr, score_thr):
        return g.op('NonMaxSuppression', boxes, scores,
                    g.op('Constant', value_t=torch.tensor([max_per_class], dtype=torch.long)),
                    g.op('Constant', value_t=torch.tensor([iou_thr], dtype=torch.float)),
                    g.op('Constant', value_t=torch.tensor([score_thr], dtype=torch.float)))


def lively_init(model: nn.Module, seed: int = 0, probe_size: int = 128) -> nn.Module:
    """Seeded random weights whose outputs vary over the image (for export checks and benchmarks).

    A freshly built detector has the head's default init and BatchNorm statistics 0 / 1: its features are
    nearly constant over the image, every class scores ~1/C and nothing passes ``score_thr``, so an export
    check would compare empty outputs. Here convs / linears get normal weights and small biases, norm layers
    weights in [0.5, 1.5), and then each conv / linear is scaled so that its output has unit std on a seeded
    random probe image (one pass of LSUV, Mishkin & Matas 2016): class scores spread out without saturating
    (saturated sigmoid scores would tie at 1.0), and detections with real NMS work appear.
    """
    from .builder import model_kind
    g = torch.Generator().manual_seed(seed)
    if getattr(model, 'roi_head', None) is not None:  # two-stage: see live_layer_scales
        from .onnx_two_stage import live_layer_scales
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


def _shape_hw(x: torch.Tensor) -> torch.Tensor:
    """(W, H, W, H) of ``x`` (N, C, H, W) as a float tensor that stays a graph value when traced."""
    shape = torch._shape_as_tensor(x)
    return shape[[3, 2, 3, 2]].to(torch.float32)


def grid_priors(gen, level: int, feat: torch.Tensor) -> torch.Tensor:
    """mmdet's ``single_level_grid_priors`` of anchor generator ``gen`` from the traced feature size
    (row-major y, x, then anchor)."""
    stride_w, stride_h = gen.strides[level]
    base = gen.base_anchors[level].to(feat)
    shift_x = torch.arange(feat.shape[3], device=feat.device).to(feat.dtype) * stride_w
    shift_y = torch.arange(feat.shape[2], device=feat.device).to(feat.dtype) * stride_h
    xx = shift_x[None, :] + shift_y[:, None] * 0
    yy = shift_y[:, None] + shift_x[None, :] * 0
    shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)
    return (shifts + base[None]).reshape(-1, 4)


class DetectorEndToEnd(nn.Module):
    """Preprocessed images (N, 3, H, W) -> ``dets`` (N, K, 5: x1 y1 x2 y2 score), ``labels`` (N, K).

    Reproduces mmdet's ``BaseDenseHead.predict_by_feat`` for anchor heads (SSDHead, RetinaHead): per level
    the (anchor, class) pairs with score > ``score_thr``, the ``nms_pre`` best of them; box decoding by the
    head's coder, clipped to the input (mmdet clips to ``img_shape``, i.e. the image before batch padding);
    boxes with width or height <= ``min_bbox_size`` dropped; NMS per class; the ``max_per_img`` (= K) best.
    Rows past the kept detections are padding: box 0, score 0, label -1. Anchors are computed in the graph
    from the feature map sizes, so batch, height and width are all dynamic. Boxes are in input pixels
    (the caller divides by its resize scale, as mmdet's ``rescale=True`` does).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        head = getattr(model, 'bbox_head', None)
        from mmdet.models.dense_heads import AnchorHead
        if head is None or not isinstance(head, AnchorHead):
            parts = [type(getattr(model, k)).__name__ for k in ('rpn_head', 'roi_head', 'bbox_head')
                     if getattr(model, k, None) is not None]
            raise NotImplementedError(
                f'end-to-end ONNX export supports one-stage anchor detectors (SSDHead, RetinaHead: '
                f'AnchorHead subclasses); {type(model).__name__} has {", ".join(parts) or "no bbox_head"} '
                f'(two-stage RoI heads and mask heads are not exported)')
        cfg = head.test_cfg
        missing = [k for k in ('nms_pre', 'score_thr', 'nms', 'max_per_img') if k not in cfg]
        if missing:
            raise ValueError(f'model.test_cfg lacks {missing} (needed for the exported post-processing)')
        if int(cfg.nms_pre) <= 0:
            raise ValueError(f'model.test_cfg.nms_pre must be > 0 for export, got {cfg.nms_pre}')
        if cfg.nms.get('type', 'nms') != 'nms':
            raise ValueError(f"model.test_cfg.nms.type must be 'nms' for export (ONNX NonMaxSuppression), "
                             f"got {cfg.nms.get('type')!r}")
        self.model, self.head = model, head
        self.nms_pre, self.score_thr = int(cfg.nms_pre), float(cfg.score_thr)
        self.iou_thr, self.max_per_img = float(cfg.nms.iou_threshold), int(cfg.max_per_img)
        self.min_bbox_size = float(cfg.get('min_bbox_size', -1))
        self.clip = bool(getattr(head.bbox_coder, 'clip_border', True))

    def _level_priors(self, level: int, feat: torch.Tensor) -> torch.Tensor:
        return grid_priors(self.head.prior_generator, level, feat)

    def forward(self, x):
        head = self.head
        cls_scores, bbox_preds = head(self.model.extract_feat(x))
        n_cls = head.num_classes
        cand_scores, cand_labels, cand_boxes = [], [], []
        for level, (cls, reg) in enumerate(zip(cls_scores, bbox_preds)):
            priors = self._level_priors(level, cls)
            cls = cls.permute(0, 2, 3, 1).reshape(x.shape[0], -1, head.cls_out_channels)
            reg = reg.permute(0, 2, 3, 1).reshape(x.shape[0], -1, 4)
            scores = cls.sigmoid() if head.use_sigmoid_cls else cls.softmax(-1)[..., :-1]
            flat = scores.reshape(x.shape[0], -1)
            # the nms_pre best (anchor, class) pairs above score_thr (mmdet: threshold, then top-k; the same set
            # as top-k, then threshold); zeros appended so that k <= length at any input size
            flat = torch.cat([flat, flat[:, :1].expand(-1, self.nms_pre) * 0], dim=1)
            top, idx = flat.topk(self.nms_pre, dim=1)
            valid = top > self.score_thr
            anchor = torch.where(valid, torch.div(idx, n_cls, rounding_mode='floor'), torch.zeros_like(idx))
            cand_scores.append(torch.where(valid, top, torch.zeros_like(top)))
            cand_labels.append(idx % n_cls)
            deltas = torch.gather(reg, 1, anchor[..., None].expand(-1, -1, 4))
            boxes = head.bbox_coder.decode(priors[anchor.reshape(-1)], deltas.reshape(-1, 4), max_shape=None)
            cand_boxes.append(boxes.reshape(x.shape[0], -1, 4))
        scores, labels, boxes = torch.cat(cand_scores, 1), torch.cat(cand_labels, 1), torch.cat(cand_boxes, 1)
        if self.clip:
            boxes = torch.minimum(boxes.clamp(min=0), _shape_hw(x))
        if self.min_bbox_size >= 0:
            wh = boxes[..., 2:] - boxes[..., :2]
            big = (wh > self.min_bbox_size).all(-1)
            scores = torch.where(big, scores, torch.zeros_like(scores))
        # (N, C, M) scores for the per-class NMS: a candidate scores only in its own class
        one_hot = labels[:, None, :] == torch.arange(n_cls, device=x.device)[None, :, None]
        class_scores = torch.where(one_hot, scores[:, None, :], torch.zeros_like(scores[:, None, :]))
        sel = _BatchedMultiClassNMS.apply(boxes, class_scores, self.max_per_img, self.iou_thr, self.score_thr)
        m = scores.shape[1]
        b, c, i = sel[:, 0], sel[:, 1], sel[:, 2]
        sel_scores = scores.reshape(-1)[b * m + i]
        sel_boxes = boxes.reshape(-1, 4)[b * m + i]
        # the K best of each image: (N, S) score table masked to the image's own rows, K padding columns added
        own = b[None, :] == torch.arange(x.shape[0], device=x.device)[:, None]
        table = torch.where(own, sel_scores[None, :], torch.full_like(sel_scores[None, :], -1.))
        table = torch.cat([table, scores[:, :1].expand(-1, self.max_per_img) * 0 - 1], dim=1)
        top, pick = table.topk(self.max_per_img, dim=1)
        keep = top > 0
        pad_boxes = torch.cat([sel_boxes, boxes.new_zeros((self.max_per_img, 4))], 0)
        pad_labels = torch.cat([c, c.new_full((self.max_per_img, ), -1)], 0)
        det_boxes = torch.where(keep[..., None], pad_boxes[pick], torch.zeros_like(pad_boxes[pick]))
        det_scores = torch.where(keep, top, torch.zeros_like(top))
        det_labels = torch.where(keep, pad_labels[pick], torch.full_like(pick, -1))
        return torch.cat([det_boxes, det_scores[..., None]], -1), det_labels


class SegmentorEndToEnd(nn.Module):
    """Preprocessed images (N, 3, H, W) -> ``seg`` (N, H, W) int64 class map, or ``seg_logits`` (N, C, H, W).

    mmseg's whole-image inference: backbone + decode head (the auxiliary head does not run), logits resized
    bilinearly to the input size with the head's ``align_corners`` (``BaseDecodeHead.predict_by_feat``), then
    argmax. Batch, height and width are dynamic.
    """

    def __init__(self, model: nn.Module, output: str = 'seg'):
        super().__init__()
        if output not in ('seg', 'seg_logits'):
            raise ValueError(f"output must be 'seg' or 'seg_logits', got {output!r}")
        mode = (getattr(model, 'test_cfg', None) or {}).get('mode', 'whole')
        if mode != 'whole':
            raise NotImplementedError(f"model.test_cfg.mode={mode!r}: only 'whole' inference is exported "
                                      f"(use --cfg-options model.test_cfg.mode=whole)")
        if getattr(model.decode_head, 'out_channels', 2) == 1:
            raise NotImplementedError('binary decode heads (out_channels=1, sigmoid + threshold) are not '
                                      'exported')
        self.model, self.output = model, output

    def forward(self, x):
        import torch.nn.functional as F
        logits = self.model._forward(x)
        logits = F.interpolate(logits, size=x.shape[2:], mode='bilinear',
                               align_corners=self.model.decode_head.align_corners)
        return logits if self.output == 'seg_logits' else logits.argmax(1)


class _AdaptiveAvgPool2dAnySize(nn.Module):
    """``nn.AdaptiveAvgPool2d`` written as two pooling matrices built from the input's size, so that it
    exports with a dynamic height and width (torch's ONNX exporter supports only output size 1 there; PSPNet's
    pyramid pooling uses 1, 2, 3, 6). Bin i of an axis of length n averages ``[floor(i n / s), ceil((i+1) n / s))``,
    PyTorch's definition."""

    def __init__(self, output_size):
        super().__init__()
        self.out_hw = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)

    @staticmethod
    def _matrix(n, s: int, like: torch.Tensor) -> torch.Tensor:
        i = torch.arange(s, device=like.device)
        start = torch.div(i * n, s, rounding_mode='floor')
        end = torch.div((i + 1) * n + s - 1, s, rounding_mode='floor')
        pos = torch.arange(n, device=like.device)
        m = ((pos[None, :] >= start[:, None]) & (pos[None, :] < end[:, None])).to(like.dtype)
        return m / m.sum(1, keepdim=True)

    def forward(self, x):
        mh = self._matrix(x.shape[2], self.out_hw[0], x)
        mw = self._matrix(x.shape[3], self.out_hw[1], x)
        return torch.matmul(torch.matmul(mh, x), mw.transpose(0, 1))


class _UpsampleAnySize(nn.Module):
    """mmseg's ``Upsample`` by a scale factor, without its ``int(size * factor)`` (frozen when traced):
    ``F.interpolate`` with the factor gives the same output size and, for the integer factors used, the same
    sampling positions."""

    def __init__(self, up: nn.Module):
        super().__init__()
        self.scale_factor, self.mode, self.align_corners = up.scale_factor, up.mode, up.align_corners

    def forward(self, x):
        import torch.nn.functional as F
        return F.interpolate(x, scale_factor=self.scale_factor, mode=self.mode, align_corners=self.align_corners)


def _exportable_twin(module: nn.Module) -> Optional[nn.Module]:
    """The dynamic-size twin of a module whose forward freezes the input size when traced, or the
    onnxruntime-friendly twin of an EMO block (:mod:`emo_mm.onnx_rewrites`), else None."""
    from .onnx_rewrites import export_twin
    twin = export_twin(module)
    if twin is not None:
        return twin
    if isinstance(module, nn.AdaptiveAvgPool2d) and module.output_size not in (1, (1, 1)):
        return _AdaptiveAvgPool2dAnySize(module.output_size)
    if type(module).__name__ == 'Upsample' and type(module).__module__.startswith('mmseg') and not module.size:
        return _UpsampleAnySize(module)
    return None


class _exportable_modules:
    """Context manager: swap modules that freeze the input size (adaptive average pools with output size > 1,
    mmseg's ``Upsample``) for their dynamic twins while exporting, and put the originals back afterwards."""

    def __init__(self, model: nn.Module):
        self.swaps = [(parent, name, child, twin) for parent in model.modules()
                      for name, child in parent.named_children() if (twin := _exportable_twin(child)) is not None]

    def __enter__(self):
        for parent, name, _, twin in self.swaps:
            setattr(parent, name, twin)

    def __exit__(self, *exc):
        for parent, name, child, _ in self.swaps:
            setattr(parent, name, child)


def end_to_end_module(model: nn.Module, kind: str, seg_output: str = 'seg') -> Tuple[nn.Module, List[str], dict]:
    """``(module, output names, dynamic axes of the outputs)`` of the exported graph of ``model``."""
    if kind == 'detector' and getattr(model, 'roi_head', None) is not None:  # Faster / Mask R-CNN
        from .onnx_two_stage import TwoStageEndToEnd
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
    :mod:`emo_mm.deploy` reads back. Returns ``(output names, tracer warnings)`` as :func:`export_onnx`.
    """
    net, out_names, out_axes = end_to_end_module(model, kind, seg_output)
    x = torch.randn(batch, 3, *shape)
    dyn = {} if static else dict({'input': {0: 'batch', 2: 'height', 3: 'width'}}, **out_axes)
    if static and metadata is not None:
        metadata = dict(metadata, **{'emo_mm.fixed_input': [batch, *shape]})
    os.makedirs(osp.dirname(osp.abspath(out_file)), exist_ok=True)
    import warnings
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught, _exportable_modules(model):
        warnings.simplefilter('always')
        torch.onnx.export(net.eval(), (x,), out_file, input_names=['input'], output_names=out_names,
                          opset_version=opset, dynamic_axes=dyn, do_constant_folding=True, dynamo=False)
    if metadata:
        set_metadata(out_file, metadata)
    tracer = sorted({f'{osp.relpath(w.filename, REPO_ROOT)}:{w.lineno}: {str(w.message).split(" might ")[0]}'
                     for w in caught if issubclass(w.category, torch.jit.TracerWarning)})
    return out_names, tracer


def set_metadata(onnx_file: str, metadata: dict) -> None:
    """Store ``metadata`` (values JSON-encoded) as ``metadata_props`` of ``onnx_file``."""
    import json
    import onnx
    proto = onnx.load(onnx_file)
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save(proto, onnx_file)


def _pytorch_predict(model: nn.Module, kind: str, x: torch.Tensor):
    """mmdet / mmseg ``predict`` on a preprocessed batch whose every image fills the whole input."""
    h, w = int(x.shape[2]), int(x.shape[3])
    meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), batch_input_shape=(h, w),
                scale_factor=(1., 1.))
    if kind == 'detector':
        from mmdet.structures import DetDataSample
        samples = [DetDataSample(metainfo=meta) for _ in range(x.shape[0])]
    else:
        from mmseg.structures import SegDataSample
        samples = [SegDataSample(metainfo=meta) for _ in range(x.shape[0])]
    with torch.no_grad():
        return model.predict(x, samples) if kind == 'segmentor' else model.predict(x, samples, rescale=False)


def match_detections(dets, labels, ref, rtol: float = 1e-3) -> dict:
    """Match one image's ONNX detections (``dets`` (K, 5), ``labels`` (K,), padding label -1) to mmdet's
    ``ref`` InstanceData: each reference box to an unused ONNX box of the same label whose coordinates agree
    within ``rtol`` relative (of max(|coordinate|, 1)). Returns the counts, the matched ``pairs`` and the
    worst differences of the matched pairs; what is left over is judged by :func:`unexplained_detections`."""
    import numpy as np
    keep = labels >= 0
    boxes, scores, labels = dets[keep, :4], dets[keep, 4], labels[keep]
    rb, rs, rl = (ref.bboxes.numpy(), ref.scores.numpy(), ref.labels.numpy())
    used = np.zeros(len(boxes), bool)
    matched, box_err, score_err, pairs = 0, 0.0, 0.0, []
    for r, (b, s, l) in enumerate(zip(rb, rs, rl)):
        err = np.abs(boxes - b).max(1) / np.maximum(np.abs(b).max(), 1.0)
        ok = np.nonzero((labels == l) & ~used & (err <= rtol))[0]
        if len(ok):
            j = ok[np.argmin(err[ok])]
            used[j] = True
            matched += 1
            pairs.append((r, int(np.nonzero(keep)[0][j])))  # (reference row, ONNX row)
            box_err, score_err = max(box_err, float(err[j])), max(score_err, float(abs(scores[j] - s)))
    return dict(onnx=int(keep.sum()), pytorch=len(rb), matched=matched, box_rel_err=box_err,
                score_abs_err=score_err, pairs=pairs)


def _box_iou(box, boxes):
    """IoU of one x1y1x2y2 box with each row of ``boxes`` (numpy)."""
    import numpy as np
    lt, rb = np.maximum(boxes[:, :2], box[:2]), np.minimum(boxes[:, 2:], box[2:])
    inter = np.clip(rb - lt, 0, None).prod(1)
    area = lambda b: np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)  # noqa: E731
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-12)


def unexplained_detections(dets, labels, ref, match: dict, iou_thr: float, max_dets: int,
                           iou_tol: float = 1e-4) -> int:
    """Detections of one image that differ between ONNX and PyTorch beyond an NMS tie; 0 = the check passes.

    ``match`` is :func:`match_detections`' result: its pairs agree (same label, box within 1e-3). Any other
    detection must come from an NMS tie, two candidates whose scores the runtimes order differently because
    they agree to float32 rounding:

    * the tie: an unmatched reference and an unmatched ONNX detection (one each) of the same label whose scores
      agree within twice the largest score difference of the matched pairs (at least 1e-6) (neighbouring
      anchors on a uniform image region; their boxes may overlap almost entirely);
    * or an IoU tie: a detection whose IoU with another of the same label in its list is ``iou_thr`` within
      ``iou_tol`` (NMS suppresses it in one runtime and keeps it in the other);
    * the cascade: a detection of the same label that overlaps a tied one, or one explained by the cascade,
      with IoU > ``iou_thr``: NMS suppresses it in one runtime and keeps it in the other, and that decides
      the fate of its own neighbours in turn (neighbouring anchors on a uniform region form chains of
      boxes a stride apart, each overlapping the next, whose scores agree to ~1e-6);
    * the tail: where a list holds ``max_dets`` detections, the other side's cascade pushes as many of its
      lowest-scored detections out, and its last place goes to any candidate (of any label) whose score ties
      with the K-th.
    """
    import numpy as np
    keep = labels >= 0
    rows = np.nonzero(keep)[0]
    ob, osc, ol = dets[keep, :4], dets[keep, 4], labels[keep]
    rb, rs, rl = ref.bboxes.numpy(), ref.scores.numpy(), ref.labels.numpy()
    onnx_pos = {int(row): i for i, row in enumerate(rows)}
    ur = sorted(set(range(len(rb))) - {r for r, _ in match['pairs']}, key=lambda r: -rs[r])
    uo = sorted(set(range(len(ob))) - {onnx_pos[o] for _, o in match['pairs']})
    tol = max(2 * match['score_abs_err'], 1e-6)
    tie_r, tie_o = [], []
    for r in ur:
        cands = [o for o in uo if o not in tie_o and ol[o] == rl[r] and abs(osc[o] - rs[r]) <= tol]
        if cands:
            tie_r.append(r)
            tie_o.append(min(cands, key=lambda o: abs(osc[o] - rs[r])))

    def iou_tie(box, label, boxes, labels):  # NMS suppresses it in one runtime, not in the other
        return bool((np.abs(_box_iou(box, boxes[labels == label]) - iou_thr) <= iou_tol).any())

    iou_r = [r for r in ur if r not in tie_r and iou_tie(rb[r], rl[r], rb, rl)]
    iou_o = [o for o in uo if o not in tie_o and iou_tie(ob[o], ol[o], ob, ol)]
    roots = [(rb[r], rl[r]) for r in tie_r + iou_r] + [(ob[o], ol[o]) for o in tie_o + iou_o]
    left_r = [r for r in ur if r not in tie_r + iou_r]
    left_o = [o for o in uo if o not in tie_o + iou_o]

    def cascade(box, label):
        return any(lab == label and _box_iou(box, b[None])[0] > iou_thr for b, lab in roots)

    while True:  # the cascade to its fixed point: what it explains explains its own overlapping neighbours
        new_r = [r for r in left_r if cascade(rb[r], rl[r])]
        new_o = [o for o in left_o if cascade(ob[o], ol[o])]
        if not new_r and not new_o:
            break
        roots += [(rb[r], rl[r]) for r in new_r] + [(ob[o], ol[o]) for o in new_o]
        left_r = [r for r in left_r if r not in new_r]
        left_o = [o for o in left_o if o not in new_o]
    extra_r = len(ur) - len(tie_r) - len(left_r)  # explained detections one side has and the other lacks
    extra_o = len(uo) - len(tie_o) - len(left_o)
    # both lists are sorted by score: the tail are the last rows, and the K-th place may go to any candidate
    # whose score ties with the K-th score
    if len(rb) >= max_dets:
        left_r = [r for r in left_r if r < len(rb) - extra_o and rs[r] > rs.min() + tol]
    if len(ob) >= max_dets:
        left_o = [o for o in left_o if o < len(ob) - extra_r and osc[o] > osc.min() + tol]
    return len(left_r) + len(left_o)


def nms_settings(model: nn.Module) -> Tuple[float, int]:
    """``(NMS IoU threshold, max_per_img)`` of a one-stage head or of a two-stage detector's RoI head."""
    head = getattr(model, 'roi_head', None) or model.bbox_head
    cfg = head.test_cfg
    return float(cfg.nms.iou_threshold), int(cfg.max_per_img)


def compare_end_to_end(model: nn.Module, kind: str, onnx_file: str, x: torch.Tensor,
                       threads: Optional[int] = None) -> List[dict]:
    """Run ``onnx_file`` in onnxruntime and the model's own ``predict`` on the preprocessed batch ``x``.

    Detectors: :func:`match_detections` per image, with ``unexplained`` (:func:`unexplained_detections`).
    Segmentors: ``dict(pixels, equal)`` per image, the ONNX class map against mmseg's ``pred_sem_seg``
    (logits outputs are compared after their argmax). :func:`disagreements` judges the result.
    """
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or max(1, torch.get_num_threads())
    so.log_severity_level = 3
    sess = ort.InferenceSession(onnx_file, so, providers=['CPUExecutionProvider'])
    names = [o.name for o in sess.get_outputs()]
    outs = dict(zip(names, sess.run(None, {'input': x.numpy()})))
    ref = _pytorch_predict(model, kind, x)
    if kind == 'detector':
        res = [match_detections(d, l, r.pred_instances) for d, l, r in zip(outs['dets'], outs['labels'], ref)]
        for m, d, l, r in zip(res, outs['dets'], outs['labels'], ref):
            m['unexplained'] = unexplained_detections(d, l, r.pred_instances, m, *nms_settings(model))
        if 'masks' in outs:  # Mask R-CNN: pasted masks of the matched detections, pixel by pixel
            from .onnx_two_stage import compare_masks
            compare_masks(res, outs, ref, float(model.roi_head.test_cfg.mask_thr_binary))
        return res
    seg = outs['seg'] if 'seg' in outs else outs['seg_logits'].argmax(1)
    res = []
    for s, r in zip(seg, ref):
        r = r.pred_sem_seg.data[0].numpy()
        if s.shape != r.shape:
            raise AssertionError(f'class map shape: onnx {s.shape} vs mmseg {r.shape}')
        res.append(dict(pixels=int(r.size), equal=int((s == r).sum())))
    return res


# Share of a detector's detections that must match outright, the backstop behind the tie explanations: a
# wrong box or score in the graph differs everywhere. Ties usually touch 0-3 of 200-400 detections, but a
# chain of near-equal scores on a uniform region can move many: RetinaNet-EMOv2-20M (seeded weights, two
# mini images at 128x96) matched 165 of 200 outright on an AVX2-only CPU, every other one explained by such
# chains (the runtimes' scores differ by up to 2.5e-6 there).
OUTRIGHT_SHARE = 0.75


def disagreements(kind: str, res: List[dict]) -> List[str]:
    """Why :func:`compare_end_to_end`'s result ``res`` fails the export check; empty when it passes.

    Detectors: the same number of detections per image, and no detection that differs (label, box within
    1e-3 relative) other than through an NMS tie (:func:`unexplained_detections`), and at least
    :data:`OUTRIGHT_SHARE` matching outright. Mask R-CNN also: >= 99.9% of the matched detections' pasted mask pixels
    equal (each detection >= 99%). Segmentors: >= 99.9% of the pixels equal outright.
    """
    bad = []
    if kind == 'detector':
        n, m = sum(r['pytorch'] for r in res), sum(r['matched'] for r in res)
        counts = [r['onnx'] for r in res], [r['pytorch'] for r in res]
        if counts[0] != counts[1]:
            bad.append(f'detections per image: onnxruntime {counts[0]}, PyTorch {counts[1]}')
        unexplained = sum(r['unexplained'] for r in res)
        if unexplained:
            bad.append(f'{unexplained} detections differ other than through an NMS tie')
        if m < OUTRIGHT_SHARE * n:
            bad.append(f'{m} of {n} detections match outright (< {100 * OUTRIGHT_SHARE:.0f}%)')
        if res and 'mask_pixels' in res[0]:
            px, eq = sum(r['mask_pixels'] for r in res), sum(r['mask_equal'] for r in res)
            worst = min(r['mask_min_equal'] for r in res)
            if eq < 0.999 * px or worst < 0.99:
                bad.append(f'pasted masks: {100 * eq / max(px, 1):.3f}% of pixels equal (< 99.9%), worst '
                           f'detection {100 * worst:.2f}% (< 99%)')
    else:
        n, eq = sum(r['pixels'] for r in res), sum(r['equal'] for r in res)
        if eq < 0.999 * n:
            bad.append(f'{100 * eq / n:.3f}% of pixels equal (< 99.9%)')
    return bad
