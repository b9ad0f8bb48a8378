"""Graph pieces shared by the end-to-end ONNX graphs: NMS as the single ONNX op, input size and anchors."""
import torch

__all__ = ['BatchedMultiClassNMS', 'shape_hw', 'grid_priors']


class BatchedMultiClassNMS(torch.autograd.Function):
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


def shape_hw(x: torch.Tensor) -> torch.Tensor:
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
