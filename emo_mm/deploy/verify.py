"""Checks that an exported ONNX file computes what the PyTorch model computes, in onnxruntime.

Backbones and classifiers: the largest difference of the outputs on a random input (:func:`check_onnx`).
Detectors and segmentors: the graph's final outputs against mmdet's / mmseg's own ``predict``
(:func:`compare_end_to_end`), judged by :func:`disagreements`. Two runtimes that sum in another order differ
by float32 rounding, and NMS can order near-equal candidates differently: the detection check tells such ties
from real differences (:func:`unexplained_detections`).
"""
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from emo_mm.deploy.export import flatten_outputs
from emo_mm.deploy.runtime import ort_session, paste_masks
from emo_mm.models.build import TensorForward

__all__ = ['check_onnx', 'compare_end_to_end', 'disagreements', 'match_detections', 'unexplained_detections',
           'compare_masks', 'OUTRIGHT_SHARE']


def check_onnx(model: nn.Module, kind: str, onnx_file: str, shape: Sequence[int], batch: int = 1,
               seed: int = 0) -> Tuple[float, float]:
    """``(max abs diff, max abs PyTorch output)`` of onnxruntime vs PyTorch (fp32, CPU) on a random input.

    The second number is the output scale: fp32 kernels that sum in another order differ by a few ulps of
    the values involved, so the diff is only meaningful relative to it.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, *shape, generator=g)
    with torch.no_grad():
        ref = flatten_outputs(TensorForward(model, kind)(x))
    sess = ort_session(onnx_file, max(1, torch.get_num_threads()))
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
    sess = ort_session(onnx_file, threads or max(1, torch.get_num_threads()))
    names = [o.name for o in sess.get_outputs()]
    outs = dict(zip(names, sess.run(None, {'input': x.numpy()})))
    ref = _pytorch_predict(model, kind, x)
    if kind == 'detector':
        res = [match_detections(d, l, r.pred_instances) for d, l, r in zip(outs['dets'], outs['labels'], ref)]
        for m, d, l, r in zip(res, outs['dets'], outs['labels'], ref):
            m['unexplained'] = unexplained_detections(d, l, r.pred_instances, m, *nms_settings(model))
        if 'masks' in outs:  # Mask R-CNN: pasted masks of the matched detections, pixel by pixel
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
# wrong box or score in the graph differs everywhere, while a chain of near-equal scores on a uniform image
# region (seeded weights on the synthetic mini images) can move a sizeable minority through NMS ties alone.
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


def compare_masks(results: List[dict], outs: dict, ref, thr: float) -> None:
    """Add the mask agreement of each image to its :func:`match_detections` result:
    the ONNX RoI masks of the matched detections pasted at their ONNX boxes (:func:`emo_mm.deploy.runtime.paste_masks`)
    against mmdet's masks of the reference detections: ``mask_pixels``, ``mask_equal`` (over all matched
    pairs) and ``mask_min_equal`` (the worst pair's fraction of equal pixels; 1.0 without pairs)."""
    for i, res in enumerate(results):
        gt = ref[i].pred_instances.masks.numpy()
        pixels = equal = 0
        worst = 1.0
        for r, j in res['pairs']:
            got = paste_masks(outs['masks'][i, j:j + 1], outs['dets'][i, j:j + 1, :4], gt.shape[1:], thr)[0]
            same = int((got == gt[r]).sum())
            pixels, equal, worst = pixels + got.size, equal + same, min(worst, same / got.size)
        res.update(mask_pixels=pixels, mask_equal=equal, mask_min_equal=worst)
