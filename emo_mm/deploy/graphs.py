"""End-to-end ONNX graphs of one-stage detectors (SSDLite, RetinaNet) and segmentors.

Each module maps the preprocessed image batch to the final outputs, so that the exported file needs no
mmdet / mmseg post-processing at run time. Two-stage detectors: :mod:`emo_mm.deploy.two_stage`.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from emo_mm.deploy.ops import BatchedMultiClassNMS, grid_priors, shape_hw

__all__ = ['DetectorEndToEnd', 'SegmentorEndToEnd']


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
            boxes = torch.minimum(boxes.clamp(min=0), shape_hw(x))
        if self.min_bbox_size >= 0:
            wh = boxes[..., 2:] - boxes[..., :2]
            big = (wh > self.min_bbox_size).all(-1)
            scores = torch.where(big, scores, torch.zeros_like(scores))
        # (N, C, M) scores for the per-class NMS: a candidate scores only in its own class
        one_hot = labels[:, None, :] == torch.arange(n_cls, device=x.device)[None, :, None]
        class_scores = torch.where(one_hot, scores[:, None, :], torch.zeros_like(scores[:, None, :]))
        sel = BatchedMultiClassNMS.apply(boxes, class_scores, self.max_per_img, self.iou_thr, self.score_thr)
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
        logits = self.model._forward(x)
        logits = F.interpolate(logits, size=x.shape[2:], mode='bilinear',
                               align_corners=self.model.decode_head.align_corners)
        return logits if self.output == 'seg_logits' else logits.argmax(1)
