"""End-to-end ONNX graph of a two-stage detector (Mask R-CNN, Faster R-CNN): RPN, RoI heads, mask head.

One graph from the preprocessed image (N, 3, H, W) to ``dets`` (N, K, 5), ``labels`` (N, K) and, with a mask
head, ``masks`` (N, K, M, M): each kept detection's mask probabilities (sigmoid) at RoI size, M = 28 for
mmdet's FCNMaskHead. Pasting a mask into the image (bilinear, then ``mask_thr_binary``) belongs to the
runtime, as in mmdeploy: :func:`emo_mm.deploy.runtime.paste_masks`. Batch, height and width are dynamic.

The graph reproduces mmdet 3.3's ``TwoStageDetector.predict`` with ``rescale=False``:

* RPN (``RPNHead._predict_by_feat_single``): per level the ``nms_pre`` best anchors (sigmoid score), boxes
  decoded and clipped to the input, boxes not wider / higher than ``min_bbox_size`` dropped, NMS per level
  (``batched_nms`` with the level as class: ONNX NonMaxSuppression with one class per level), the
  ``max_per_img`` best proposals of each image;
* RoIs to FPN levels by scale (``SingleRoIExtractor.map_roi_levels``), ONNX ``RoiAlign`` per level (opset 16's
  ``coordinate_transformation_mode='half_pixel'`` is mmcv's ``aligned=True``);
* bbox head: softmax, class-wise box decoding clipped to the input, score > ``score_thr``, NMS per image and
  class (``multiclass_nms``), the ``max_per_img`` best (K);
* mask head on the kept boxes, the channel of each box's label.

As for the one-stage graphs, boxes are clipped to the (padded) input, where mmdet clips to ``img_shape``.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from emo_mm.deploy.ops import BatchedMultiClassNMS, grid_priors, shape_hw


class _RoIAlign(torch.autograd.Function):
    """mmcv's ``roi_align`` (average pooling) when run, ONNX ``RoiAlign`` (opset >= 16) when exported.

    ``rois`` (R, 5): batch index, x1 y1 x2 y2 in input pixels. opset 16's ``half_pixel`` mode shifts the
    RoI by -0.5 pixel and does not stretch RoIs shorter than one pixel, which is mmcv's ``aligned=True``;
    ``output_half_pixel`` is the legacy ``aligned=False``. (mmcv's own symbolic emulates ``aligned`` with
    opset 10's op, which stretches small RoIs to one pixel: different features for them.)
    """

    @staticmethod
    def forward(ctx, feat, rois, out_h: int, out_w: int, spatial_scale: float, sampling_ratio: int,
                aligned: bool):
        from mmcv.ops import roi_align

        # contiguous: mmcv's kernel reads NCHW memory (a deploy-mode backbone gives channels-last maps)
        return roi_align(feat.contiguous(), rois, (out_h, out_w), spatial_scale, sampling_ratio, 'avg', aligned)

    @staticmethod
    def symbolic(g, feat, rois, out_h, out_w, spatial_scale, sampling_ratio, aligned):
        index = g.op('Cast', g.op('Gather', rois, g.op('Constant', value_t=torch.tensor(0)), axis_i=1), to_i=7)
        boxes = g.op('Gather', rois, g.op('Constant', value_t=torch.tensor([1, 2, 3, 4])), axis_i=1)
        return g.op('RoiAlign', feat, boxes, index, output_height_i=out_h, output_width_i=out_w,
                    spatial_scale_f=spatial_scale, sampling_ratio_i=max(0, sampling_ratio), mode_s='avg',
                    coordinate_transformation_mode_s='half_pixel' if aligned else 'output_half_pixel')


def _check_extractor(extractor, name: str) -> None:
    from mmcv.ops import RoIAlign
    from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
    if not isinstance(extractor, SingleRoIExtractor):
        raise NotImplementedError(f'roi_head.{name}: only SingleRoIExtractor is exported, got '
                                  f'{type(extractor).__name__}')
    bad = [type(layer).__name__ for layer in extractor.roi_layers
           if not isinstance(layer, RoIAlign) or layer.pool_mode != 'avg']
    if bad:
        raise NotImplementedError(f"roi_head.{name}: only mmcv RoIAlign with pool_mode='avg' is exported, "
                                  f'got {bad[0]}')


def roi_features(extractor, feats, rois: torch.Tensor) -> torch.Tensor:
    """``SingleRoIExtractor.forward`` as graph ops: each RoI pooled from its FPN level (by its scale).

    Each level pools only its own RoIs (NonZero + Gather); the outputs are put back in RoI order."""
    layers = extractor.roi_layers

    def align(level, r):
        layer = layers[level]
        return _RoIAlign.apply(feats[level], r, layer.output_size[0], layer.output_size[1],
                               layer.spatial_scale, layer.sampling_ratio, layer.aligned)

    if len(layers) == 1:
        return align(0, rois)
    target = extractor.map_roi_levels(rois, len(layers))
    parts, order = [], []
    for level in range(len(layers)):
        inds = torch.nonzero(target == level).reshape(-1)
        parts.append(align(level, rois[inds]))
        order.append(inds)
    return torch.cat(parts)[torch.argsort(torch.cat(order))]


def best_per_image(batch_index: torch.Tensor, scores: torch.Tensor, n_images: torch.Tensor, k: int):
    """The ``k`` best-scoring rows of each image among rows with ``scores > 0``: ``(pick, keep)``, both
    (N, k); ``pick`` indexes the rows followed by k padding rows (index >= len(scores) where ``keep`` is False).
    ``n_images`` is a tensor with N rows (its first dimension stays a graph value)."""
    own = batch_index[None, :] == torch.arange(n_images.shape[0], device=scores.device)[:, None]
    table = torch.where(own, scores[None, :], torch.full_like(scores[None, :], -1.))
    table = torch.cat([table, n_images.flatten(1)[:, :1].to(scores.dtype).expand(-1, k) * 0 - 1], dim=1)
    top, pick = table.topk(k, dim=1)
    return pick, top > 0


def _padded(rows: torch.Tensor, k: int, value=0) -> torch.Tensor:
    """``rows`` followed by ``k`` rows filled with ``value`` (targets of :func:`best_per_image`'s padding)."""
    return torch.cat([rows, torch.full((k, ) + tuple(rows.shape[1:]), value, dtype=rows.dtype, device=rows.device)], 0)


class TwoStageEndToEnd(nn.Module):
    """Preprocessed images (N, 3, H, W) -> ``dets`` (N, K, 5), ``labels`` (N, K)[, ``masks`` (N, K, M, M)].

    Rows past the kept detections: box 0, score 0, label -1, mask 0. See the module docstring."""

    def __init__(self, model: nn.Module):
        super().__init__()
        from mmdet.models.dense_heads import RPNHead
        from mmdet.models.roi_heads import StandardRoIHead
        rpn, roi = getattr(model, 'rpn_head', None), getattr(model, 'roi_head', None)
        if not isinstance(rpn, RPNHead) or type(roi) is not StandardRoIHead:
            raise NotImplementedError(f'two-stage export supports RPNHead + StandardRoIHead (Faster / Mask '
                                      f'R-CNN); {type(model).__name__} has {type(rpn).__name__} + '
                                      f'{type(roi).__name__}')
        rpn_cfg, rcnn_cfg = model.test_cfg.rpn, model.test_cfg.rcnn
        for where, cfg, keys in (('rpn', rpn_cfg, ('nms_pre', 'nms', 'max_per_img')),
                                 ('rcnn', rcnn_cfg, ('score_thr', 'nms', 'max_per_img'))):
            missing = [k for k in keys if k not in cfg]
            if missing:
                raise ValueError(f'model.test_cfg.{where} lacks {missing} (needed for the exported post-processing)')
            if cfg.nms.get('type', 'nms') != 'nms':
                raise ValueError(f"model.test_cfg.{where}.nms.type must be 'nms' for export (ONNX "
                                 f"NonMaxSuppression), got {cfg.nms.get('type')!r}")
        if int(rpn_cfg.nms_pre) <= 0:
            raise ValueError(f'model.test_cfg.rpn.nms_pre must be > 0 for export, got {rpn_cfg.nms_pre}')
        if roi.bbox_head.custom_cls_channels:
            raise NotImplementedError(f'bbox head {type(roi.bbox_head).__name__}: custom class activations '
                                      f'(e.g. Seesaw loss) are not exported')
        _check_extractor(roi.bbox_roi_extractor, 'bbox_roi_extractor')
        if roi.with_mask:
            _check_extractor(roi.mask_roi_extractor, 'mask_roi_extractor')
            if roi.share_roi_extractor:
                raise NotImplementedError('roi_head.share_roi_extractor=True is not exported')
        self.model, self.rpn, self.roi = model, rpn, roi
        self.rpn_cfg, self.rcnn_cfg = rpn_cfg, rcnn_cfg
        self.with_mask = bool(roi.with_mask)

    def forward(self, x):
        feats = self.model.extract_feat(x)
        rois = self._proposals(x, feats)
        dets, labels = self._detections(x, feats, rois)
        if not self.with_mask:
            return dets, labels
        return dets, labels, self._masks(feats, dets, labels)

    def _clip(self, boxes: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.minimum(boxes.clamp(min=0), shape_hw(x))

    def _proposals(self, x, feats) -> torch.Tensor:
        """The RPN's proposals of every image as RoIs (R, 5): batch index, x1 y1 x2 y2."""
        head, cfg = self.rpn, self.rpn_cfg
        cls_scores, bbox_preds = head(feats)
        n, nms_pre = x.shape[0], int(cfg.nms_pre)
        scores, boxes, levels = [], [], []
        for level, (cls, reg) in enumerate(zip(cls_scores, bbox_preds)):
            priors = grid_priors(head.prior_generator, level, cls)
            cls = cls.permute(0, 2, 3, 1).reshape(n, -1)  # cls_out_channels == 1 (sigmoid)
            reg = reg.permute(0, 2, 3, 1).reshape(n, -1, 4)
            score = cls.sigmoid() if head.use_sigmoid_cls else cls.reshape(n, -1, 2).softmax(-1)[..., 0]
            # the nms_pre best anchors; zero-score padding so that k <= length at any input size (a score
            # of exactly 0 is never selected by the NMS below: its threshold is > 0)
            score = torch.cat([score, score[:, :1].expand(-1, nms_pre) * 0], dim=1)
            top, idx = score.topk(nms_pre, dim=1)
            anchor = torch.where(top > 0, idx, torch.zeros_like(idx))
            deltas = torch.gather(reg, 1, anchor[..., None].expand(-1, -1, 4))
            decoded = head.bbox_coder.decode(priors[anchor.reshape(-1)], deltas.reshape(-1, 4), max_shape=None)
            scores.append(top)
            boxes.append(decoded.reshape(n, -1, 4))
            levels.append(torch.full_like(idx, level))
        scores, boxes, levels = torch.cat(scores, 1), self._clip(torch.cat(boxes, 1), x), torch.cat(levels, 1)
        if cfg.get('min_bbox_size', -1) >= 0:
            big = ((boxes[..., 2:] - boxes[..., :2]) > float(cfg.min_bbox_size)).all(-1)
            scores = torch.where(big, scores, torch.zeros_like(scores))
        # NMS per level (mmdet: batched_nms with the level ids): one NMS class per level
        one_hot = levels[:, None, :] == torch.arange(len(cls_scores), device=x.device)[None, :, None]
        level_scores = torch.where(one_hot, scores[:, None, :], torch.zeros_like(scores[:, None, :]))
        k = int(cfg.max_per_img)
        sel = BatchedMultiClassNMS.apply(boxes, level_scores, k, float(cfg.nms.iou_threshold), 0.0)
        m = scores.shape[1]
        b, i = sel[:, 0], sel[:, 2]
        pick, keep = best_per_image(b, scores.reshape(-1)[b * m + i], x, k)
        rows = torch.nonzero(keep.reshape(-1)).reshape(-1)
        pick = pick.reshape(-1)[rows]
        image = torch.div(rows, k, rounding_mode='floor').to(boxes.dtype)
        return torch.cat([image[:, None], _padded(boxes.reshape(-1, 4)[b * m + i], k)[pick]], 1)

    def _detections(self, x, feats, rois):
        """bbox head on the proposals -> ``dets`` (N, K, 5), ``labels`` (N, K) (mmdet's multiclass_nms)."""
        head, cfg, roi = self.roi.bbox_head, self.rcnn_cfg, self.roi
        cls_score, bbox_pred = head(roi_features(roi.bbox_roi_extractor, feats[:roi.bbox_roi_extractor.num_inputs],
                                                 rois))
        scores = cls_score.softmax(-1)[:, :-1]
        n_cls = head.num_classes
        per_roi = 1 if head.reg_class_agnostic else n_cls
        priors = rois[:, None, 1:].expand(-1, per_roi, 4).reshape(-1, 4)
        boxes = head.bbox_coder.decode(priors, bbox_pred.reshape(-1, 4), max_shape=None).reshape(-1, per_roi, 4)
        boxes = self._clip(boxes.expand(-1, n_cls, 4), x)
        # candidates (RoI, class) above score_thr, then NMS per image and class
        cand = torch.nonzero(scores > float(cfg.score_thr))
        r, c = cand[:, 0], cand[:, 1]
        flat = r * n_cls + c
        cand_scores, cand_boxes = scores.reshape(-1)[flat], boxes.reshape(-1, 4)[flat]
        image = rois[:, 0].long()[r]
        n = torch.arange(x.shape[0], device=x.device)
        # (N, C, Q) scores: a candidate scores only in its own image and class
        own = (image[None, None, :] == n[:, None, None]) & \
            (c[None, None, :] == torch.arange(n_cls, device=x.device)[None, :, None])
        nms_scores = torch.where(own, cand_scores[None, None, :], torch.zeros_like(cand_scores[None, None, :]))
        k = int(cfg.max_per_img)
        sel = BatchedMultiClassNMS.apply(cand_boxes[None].expand(x.shape[0], -1, 4), nms_scores, k,
                                          float(cfg.nms.iou_threshold), float(cfg.score_thr))
        b, label, q = sel[:, 0], sel[:, 1], sel[:, 2]
        pick, keep = best_per_image(b, cand_scores[q], x, k)
        det_boxes = _padded(cand_boxes[q], k)[pick] * keep[..., None]  # padding rows: box 0, score 0
        det_scores = _padded(cand_scores[q], k)[pick] * keep
        det_labels = torch.where(keep, _padded(label, k, -1)[pick], torch.full_like(pick, -1))
        return torch.cat([det_boxes, det_scores[..., None]], -1), det_labels

    def _masks(self, feats, dets, labels):
        """Mask head on the kept detections: (N, K, M, M) probabilities of each box's class, 0 on padding."""
        roi, head = self.roi, self.roi.mask_head
        n, k = labels.shape[0], labels.shape[1]
        keep = labels.reshape(-1) >= 0
        rows = torch.nonzero(keep).reshape(-1)
        image = torch.div(rows, k, rounding_mode='floor').to(dets.dtype)
        rois = torch.cat([image[:, None], dets.reshape(-1, 5)[rows, :4]], 1)
        logits = head(roi_features(roi.mask_roi_extractor, feats[:roi.mask_roi_extractor.num_inputs], rois))
        if not head.class_agnostic:
            cls = labels.reshape(-1)[rows]
            logits = torch.gather(logits, 1, cls[:, None, None, None].expand(-1, 1, *logits.shape[2:]))
        probs = logits[:, 0].sigmoid()
        # kept rows come first in each image (sorted by score): row j of the flat (N * K) list is mask
        # cumsum(keep)[j] - 1; padding rows read an appended zero mask
        probs = torch.cat([probs, probs.new_zeros((1, ) + tuple(probs.shape[1:]))], 0)
        index = torch.where(keep, torch.cumsum(keep.long(), 0) - 1, keep.long().sum())
        return probs[index].reshape(n, k, *probs.shape[1:])
