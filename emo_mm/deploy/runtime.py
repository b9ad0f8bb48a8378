"""Run an exported detector / segmentor (``tools/deployment/export_onnx.py``) in onnxruntime on a user's images.

    from emo_mm.deploy import OnnxModel
    model = OnnxModel('ssdlite_emo_1m.onnx')
    res = model.predict(cv2.imread('demo.jpg'))   # BGR uint8, any size
    res['bboxes'], res['scores'], res['labels']    # detectors: boxes in the image's own pixels
    res['masks']                                   # Mask R-CNN: (K, H, W) bool, pasted into the image
    res['sem_seg']                                 # segmentors: (H, W) class map of the image

The export stores what inference needs in the file's ``metadata_props`` (see :func:`emo_mm.deploy.metadata.deploy_metadata`): the
config's test-time resize, the data preprocessor's normalisation and padding, the class names and palette.
This module repeats mmdet's / mmseg's test preprocessing with the same functions (``mmcv.imresize`` /
``mmcv.imrescale``), so no model code and no config are needed at run time; only numpy, OpenCV, mmcv's image
functions and onnxruntime.

Two differences to the PyTorch predict, both only where the config pads a batch (RetinaNet: to a multiple
of 32): the exported graph clips boxes to the padded input instead of the unpadded image (mmdet clips to
``img_shape``) before NMS, so a box reaching into the padding may be kept or suppressed differently; boxes are
clipped to the image afterwards. Segmentors exported with the class map (``seg``, the default) are resized
to the image by nearest neighbour; mmseg resizes the logits bilinearly and takes the argmax afterwards, which
can move class boundaries by a pixel. Export with ``--seg-output seg_logits`` for mmseg's exact procedure.

Mask R-CNN graphs output each detection's mask probabilities at RoI size (28 x 28); :func:`paste_masks` puts
them into the original image as mmdet does (bilinear ``grid_sample`` at the box rescaled to the image, then
``>= mask_thr_binary`` from the config, stored in the metadata), with numpy.
"""
from __future__ import annotations

import json
import os.path as osp
from typing import List, Optional, Sequence, Tuple

import numpy as np


def ort_session(onnx_file: str, threads: Optional[int] = None, **options):
    """An onnxruntime CPU session of ``onnx_file`` with ``threads`` intra-op threads (None: onnxruntime's
    default) and quiet logging; ``options`` set further ``SessionOptions`` attributes."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.log_severity_level = 3
    for key, value in options.items():
        setattr(so, key, value)
    return ort.InferenceSession(onnx_file, so, providers=['CPUExecutionProvider'])


class Preprocess:
    """mmdet / mmseg test preprocessing of BGR uint8 images from the stored metadata."""

    def __init__(self, meta: dict):
        self.resize = meta.get('resize')
        self.mean = None if meta.get('mean') is None else np.asarray(meta['mean'], np.float32)
        self.std = None if meta.get('std') is None else np.asarray(meta['std'], np.float32)
        self.bgr_to_rgb = bool(meta.get('bgr_to_rgb'))
        self.divisor = int(meta.get('pad_size_divisor') or 1)
        self.pad_value = float(meta.get('pad_value') or 0.)

    def one(self, img: np.ndarray) -> Tuple[np.ndarray, dict]:
        """(3, h, w) float32 normalised image and its ``dict(ori_shape, img_shape, scale_factor=(sx, sy))``."""
        import mmcv
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f'expected a BGR uint8 image (H, W, 3), got {img.dtype} {img.shape}')
        h0, w0 = img.shape[:2]
        if self.resize:
            scale = self.resize['scale']
            scale = tuple(scale) if isinstance(scale, list) else scale
            kw = dict(interpolation=self.resize['interpolation'], backend=self.resize['backend'])
            img = mmcv.imrescale(img, scale, **kw) if self.resize['keep_ratio'] else mmcv.imresize(img, scale, **kw)
        h, w = img.shape[:2]
        x = img.astype(np.float32)
        if self.bgr_to_rgb:
            x = x[..., ::-1]
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return np.ascontiguousarray(x.transpose(2, 0, 1)), dict(ori_shape=(h0, w0), img_shape=(h, w),
                                                                scale_factor=(w / w0, h / h0))

    def batch(self, imgs: Sequence[np.ndarray], size: Optional[Sequence[int]] = None
              ) -> Tuple[np.ndarray, List[dict]]:
        """Images padded (bottom / right, with ``pad_value``) to one size: a multiple of the divisor, or
        ``size`` (H, W) for a graph exported with a fixed input."""
        ones = [self.one(img) for img in imgs]
        hs, ws = [x.shape[1] for x, _ in ones], [x.shape[2] for x, _ in ones]
        d = self.divisor
        H, W = -(-max(hs) // d) * d, -(-max(ws) // d) * d
        if size is not None:
            if H > size[0] or W > size[1]:
                raise ValueError(f'preprocessed image {H}x{W} does not fit the fixed input {size[0]}x{size[1]} '
                                 f'of the .onnx (export it without --static)')
            H, W = size
        out = np.full((len(ones), 3, H, W), self.pad_value, np.float32)
        for i, (x, _) in enumerate(ones):
            out[i, :, :x.shape[1], :x.shape[2]] = x
        return out, [info for _, info in ones]


class OnnxModel:
    """An exported detector / segmentor in onnxruntime; :meth:`predict` takes BGR uint8 images of any size."""

    def __init__(self, onnx_file: str, threads: Optional[int] = None):
        if not osp.isfile(onnx_file):
            raise FileNotFoundError(f'ONNX file not found: {onnx_file}')
        self.session = ort_session(onnx_file, threads)
        props = self.session.get_modelmeta().custom_metadata_map
        if 'emo_mm.task' not in props:
            raise ValueError(f'{onnx_file} has no emo_mm metadata: export it with tools/deployment/export_onnx.py '
                             f'(detectors and segmentors)')
        self.meta = {k[len('emo_mm.'):]: json.loads(v) for k, v in props.items() if k.startswith('emo_mm.')}
        self.task = self.meta['task']
        if self.task not in ('detector', 'segmentor'):
            raise ValueError(f'{onnx_file} is a {self.task} export; OnnxModel runs detectors and segmentors')
        self.preprocess = Preprocess(self.meta['preprocess'])
        self.classes = tuple(self.meta.get('classes') or ())
        self.palette = self.meta.get('palette')
        self.output_names = [o.name for o in self.session.get_outputs()]

    def predict(self, img: np.ndarray) -> dict:
        """One image: ``dict(bboxes (K, 4), scores (K,), labels (K,))`` in the image's pixels, or
        ``dict(sem_seg=(H, W) int64)``."""
        return self.predict_batch([img])[0]

    def predict_batch(self, imgs: Sequence[np.ndarray]) -> List[dict]:
        fixed = self.meta.get('fixed_input')  # [N, H, W] of a --static export: chunks of N, zero-filled
        if fixed and len(imgs) != fixed[0]:
            chunks = [list(imgs[i:i + fixed[0]]) for i in range(0, len(imgs), fixed[0])]
            return [r for c in chunks for r in self.predict_batch(c + [np.zeros_like(c[0])] * (fixed[0] - len(c)))
                    ][:len(imgs)]
        x, infos = self.preprocess.batch(imgs, fixed[1:] if fixed else None)
        outs = dict(zip(self.output_names, self.session.run(None, {'input': x})))
        if self.task == 'detector':
            res = [_rescale_dets(d, l, info) for d, l, info in zip(outs['dets'], outs['labels'], infos)]
            thr = float(self.meta.get('mask_thr_binary', 0.5))
            for i, (r, info) in enumerate(zip(res, infos)):
                unclipped = r.pop('unclipped')
                if 'masks' in outs:  # Mask R-CNN: RoI masks pasted into the image at mmdet's (unclipped) boxes
                    kept = outs['masks'][i][outs['labels'][i] >= 0]
                    r['masks'] = paste_masks(kept, unclipped, info['ori_shape'], thr)
            return res
        align = bool(self.meta.get('align_corners', False))
        return [_rescale_seg(outs, i, info, align) for i, info in enumerate(infos)]


def _rescale_dets(dets: np.ndarray, labels: np.ndarray, info: dict) -> dict:
    keep = labels >= 0  # padding rows have label -1
    sx, sy = info['scale_factor']
    h0, w0 = info['ori_shape']
    unclipped = dets[keep, :4] / np.array([sx, sy, sx, sy], np.float32)
    boxes = np.clip(unclipped, 0, np.array([w0, h0, w0, h0], np.float32))
    return dict(bboxes=boxes, scores=dets[keep, 4], labels=labels[keep].astype(np.int64), unclipped=unclipped)


def _paste_weights(lo: float, hi: float, start: int, stop: int, m: int) -> np.ndarray:
    """(stop - start, m) bilinear weights of ``grid_sample(align_corners=False)`` with zero padding at the
    pixel centres ``start + 0.5, ...`` of one image axis, for a mask of size ``m`` spanning [lo, hi)."""
    with np.errstate(divide='ignore', invalid='ignore'):
        grid = ((np.arange(start, stop, dtype=np.float32) + np.float32(0.5)) - lo) / (hi - lo) * 2 - 1
    grid[np.isinf(grid)] = 0  # a zero-width box: mmdet samples the mask centre
    pos = ((grid + 1) * m - 1) / 2  # mask pixel coordinate
    left = np.floor(pos)[:, None]
    frac = (pos[:, None] - left)
    cols = np.arange(m)[None, :]
    return ((cols == left) * (1 - frac) + (cols == left + 1) * frac).astype(np.float32)


def paste_masks(masks: np.ndarray, boxes: np.ndarray, shape: Sequence[int], thr: float = 0.5) -> np.ndarray:
    """RoI mask probabilities (K, M, M) pasted into an image of ``shape`` (H, W) at ``boxes`` (K, 4, image
    pixels): (K, H, W) bool of ``probability >= thr``.

    mmdet's ``_do_paste_mask`` (CPU, one box at a time): bilinear ``grid_sample`` (``align_corners=False``,
    zero padding) of the mask over the pixels of the box grown by one pixel and rounded out; pixels
    further out are False. Bilinear sampling is separable, so each mask is ``Wy @ mask @ Wx.T``."""
    h, w = int(shape[0]), int(shape[1])
    out = np.zeros((len(masks), h, w), bool)
    for k, (mask, (x0, y0, x1, y1)) in enumerate(zip(masks.astype(np.float32), boxes.astype(np.float32))):
        xa, ya = max(int(np.floor(x0)) - 1, 0), max(int(np.floor(y0)) - 1, 0)
        xb, yb = min(int(np.ceil(x1)) + 1, w), min(int(np.ceil(y1)) + 1, h)
        if xb <= xa or yb <= ya:
            continue
        wy = _paste_weights(y0, y1, ya, yb, mask.shape[0])
        wx = _paste_weights(x0, x1, xa, xb, mask.shape[1])
        out[k, ya:yb, xa:xb] = (wy @ mask @ wx.T) >= thr
    return out


def _rescale_seg(outs: dict, i: int, info: dict, align_corners: bool) -> dict:
    import cv2
    h, w = info['img_shape']
    h0, w0 = info['ori_shape']
    if 'seg' in outs:
        seg = outs['seg'][i, :h, :w].astype(np.int32)
        if (h, w) != (h0, w0):
            seg = cv2.resize(seg, (w0, h0), interpolation=cv2.INTER_NEAREST)
        return dict(sem_seg=seg.astype(np.int64))
    import torch  # mmseg's own resize (bilinear on the logits, then argmax)
    import torch.nn.functional as F
    logits = torch.from_numpy(outs['seg_logits'][i:i + 1, :, :h, :w])
    logits = F.interpolate(logits, size=(h0, w0), mode='bilinear', align_corners=align_corners)
    return dict(sem_seg=logits.argmax(1)[0].numpy().astype(np.int64))
