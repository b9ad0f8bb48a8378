"""Run a trained detector or segmentor on image files and draw what it predicts (``tools/infer.py``).

A thin layer over the codebases' own inferencers (mmdet ``DetInferencer``, mmseg ``MMSegInferencer``),
picked by the config's ``default_scope``. What this layer adds:

* images are read here, not by the inferencer, so that any file OpenCV (or Pillow, as a fallback) decodes
  works: grayscale, grayscale + alpha, RGBA and 16-bit files are converted to 8-bit 3-channel BGR first
  (gray -> replicated to 3 channels, alpha -> dropped, 16-bit -> divided by 257), any size and aspect;
* a missing or undecodable file stops the run before the model is built, with a message naming the file;
* class names / palette come from the checkpoint's ``dataset_meta`` (what mmengine saves) and, if the
  checkpoint has none, from the config's test dataset (the inferencers would fall back to COCO / Cityscapes);
* one picture per input is written as ``<out_dir>/<input name>.jpg`` (boxes + labels + scores for
  detectors, and their masks for Mask R-CNN; a colour overlay with class names for segmentors) and its
  path is returned.
"""
import copy
import os
import os.path as osp
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import cv2
import numpy as np

from emo_mm.datasets import apply_mini, unguard_pipelines
from emo_mm.deploy import OnnxModel
from emo_mm.utils.config import dataset_metainfo, drop_pretrained

# the codebases whose inferencers draw predictions (classifiers have no picture to draw)
INFER_CODEBASES = ('mmdet', 'mmseg')


class ImageReadError(ValueError):
    """An input image is missing or cannot be decoded; the message names the file."""


@dataclass
class InferResult:
    """What :func:`infer` did for one input image."""
    image: str
    out_file: str
    shape: tuple  # (H, W) of the input
    converted: Optional[str] = None  # e.g. 'grayscale -> BGR'
    num_instances: Optional[int] = None  # detectors: boxes drawn (score >= thr)
    num_masks: Optional[int] = None  # instance segmentors (Mask R-CNN): non-empty masks drawn with them
    mask_pixels: Optional[int] = None  # instance segmentors: image pixels that the drawn masks cover
    labels: List[str] = field(default_factory=list)  # detectors: names drawn; segmentors: classes present


def read_image_bgr(path: str):
    """Read ``path`` as an 8-bit 3-channel BGR array. Returns ``(img, note)``; note says what was converted.

    Raises :class:`ImageReadError` naming the file when it is missing or not a decodable image.
    """
    if not osp.exists(path):
        raise ImageReadError(f'image not found: {path}')
    if not osp.isfile(path):
        raise ImageReadError(f'not an image file (a directory?): {path}')
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:  # formats OpenCV does not decode (e.g. GIF): try Pillow
        try:
            from PIL import Image
            with Image.open(path) as pil:
                pil.load()
                mode = pil.mode
                if mode == 'P':
                    pil = pil.convert('RGBA' if 'transparency' in pil.info else 'RGB')
                elif mode not in ('L', 'LA', 'RGB', 'RGBA', 'I;16', 'I'):
                    pil = pil.convert('RGB')
                img = np.asarray(pil)
            if img.ndim == 3 and img.shape[2] in (3, 4):  # Pillow is RGB(A), OpenCV BGR(A)
                img = img[..., [2, 1, 0] + ([3] if img.shape[2] == 4 else [])]
        except Exception as err:  # noqa: BLE001  (any decoder error means the same to the user)
            size = osp.getsize(path)
            raise ImageReadError(f'cannot read image {path} ({size} bytes): neither OpenCV nor Pillow can '
                                 f'decode it ({type(err).__name__}: {err})') from err
    notes = []
    if img.dtype != np.uint8:
        if img.dtype == np.uint16 or img.dtype == np.int32:
            img = np.clip(img.astype(np.float64) / 257., 0, 255).astype(np.uint8)
        elif np.issubdtype(img.dtype, np.floating):
            scale = 255. if img.max() <= 1.0 else 1.
            img = np.clip(img * scale, 0, 255).astype(np.uint8)
        else:
            img = np.clip(img, 0, 255).astype(np.uint8)
        notes.append('8-bit')
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        notes.insert(0, 'grayscale -> BGR')
    elif img.ndim == 3 and img.shape[2] == 2:  # gray + alpha
        img = cv2.cvtColor(img[..., 0], cv2.COLOR_GRAY2BGR)
        notes.insert(0, 'grayscale+alpha -> BGR (alpha dropped)')
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
        notes.insert(0, 'BGRA -> BGR (alpha dropped)')
    elif not (img.ndim == 3 and img.shape[2] == 3):
        raise ImageReadError(f'cannot use image {path}: unsupported shape {img.shape}')
    if img.shape[0] < 1 or img.shape[1] < 1:
        raise ImageReadError(f'cannot use image {path}: empty image {img.shape}')
    return np.ascontiguousarray(img), (', '.join(notes) or None)


def _out_names(images: Sequence[str], out_dir: str) -> List[str]:
    """``<out_dir>/<stem>.jpg`` per input, made unique when two inputs share a stem."""
    names, seen = [], set()
    for path in images:
        stem = osp.splitext(osp.basename(path))[0] or 'image'
        name, k = stem, 1
        while name in seen:
            name = f'{stem}_{k}'
            k += 1
        seen.add(name)
        names.append(osp.join(out_dir, name + '.jpg'))
    return names


def build_inferencer(config, checkpoint: Optional[str], device: Optional[str] = None, mini: bool = False):
    """The mmdet / mmseg inferencer for ``config`` (path or Config) with ``checkpoint`` loaded.

    ``config`` may be a ``.onnx`` file from ``tools/deployment/export_onnx.py`` (no checkpoint): it then runs in
    onnxruntime through :class:`OnnxInferencer`.

    Returns ``(inferencer, codebase)``. ``checkpoint=None`` keeps the random init (with a warning).
    ``mini=True`` applies :func:`emo_mm.datasets.mini.apply_mini` first (paths of the mini datasets).
    """
    import torch
    from mmengine.config import Config

    if isinstance(config, str) and config.endswith('.onnx'):  # tools/deployment/export_onnx.py output: onnxruntime
        inferencer = OnnxInferencer(config)
        return inferencer, inferencer.codebase
    cfg = config if isinstance(config, Config) else Config.fromfile(config)
    cfg = copy.deepcopy(cfg)
    codebase = cfg.get('default_scope')
    if codebase not in INFER_CODEBASES:
        raise ValueError(f'tools/infer.py handles detectors and segmentors: config default_scope is '
                         f'{codebase!r}, expected one of {INFER_CODEBASES}')
    if checkpoint is not None and not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint file not found: {checkpoint}')
    if mini:
        apply_mini(cfg, codebase)
    # a config dumped by tools/test.py has its loading steps wrapped in CheckedLoading
    unguard_pipelines(cfg)
    # The inferencer loads the full checkpoint; the backbone's ImageNet file is not needed for that.
    drop_pretrained(cfg.model)
    if device is None:
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    meta = dataset_metainfo(cfg)
    if codebase == 'mmdet':
        from mmdet.apis import DetInferencer
        inferencer = DetInferencer(model=cfg, weights=checkpoint, device=device, show_progress=False)
    else:
        from mmseg.apis import MMSegInferencer
        if cfg.model.get('type') == 'EncoderDecoder' or 'pretrained' in cfg.model:
            cfg.model['pretrained'] = None
        inferencer = MMSegInferencer(model=cfg, weights=checkpoint, device=device)
    model_meta = getattr(inferencer.model, 'dataset_meta', None) or {}
    ckpt_has_classes = checkpoint is not None and _checkpoint_has_classes(checkpoint)
    if meta.get('classes') and not ckpt_has_classes:
        model_meta = dict(model_meta, classes=meta['classes'])
        if meta.get('palette') is not None:
            model_meta['palette'] = meta['palette']
        inferencer.model.dataset_meta = model_meta
    if codebase == 'mmdet':
        inferencer.visualizer.dataset_meta = inferencer.model.dataset_meta
    else:
        m = inferencer.model.dataset_meta
        inferencer.visualizer.set_dataset_meta(m.get('classes'), m.get('palette'))
    return inferencer, codebase


def _checkpoint_has_classes(checkpoint: str) -> bool:
    from mmengine.runner import load_checkpoint  # noqa: F401  (ensures compat loaders are registered)
    from mmengine.runner.checkpoint import _load_checkpoint
    ckpt = _load_checkpoint(checkpoint, map_location='cpu')
    meta = ckpt.get('meta', {}) if isinstance(ckpt, dict) else {}
    return bool(meta.get('dataset_meta', {}).get('classes') or meta.get('CLASSES'))


def infer(config, checkpoint: Optional[str], images: Sequence[str], out_dir: str = 'outputs/infer',
          score_thr: float = 0.3, device: Optional[str] = None, mini: bool = False,
          opacity: float = 0.5) -> List[InferResult]:
    """Predict on every file of ``images`` and write one picture each into ``out_dir``.

    All images are read (and checked) before the model is built, so a bad path fails fast.
    """
    loaded = [(path,) + read_image_bgr(path) for path in images]
    if not loaded:
        raise ValueError('no input images given')
    inferencer, codebase = build_inferencer(config, checkpoint, device=device, mini=mini)
    os.makedirs(out_dir, exist_ok=True)
    results = []
    for (path, img, note), out_file in zip(loaded, _out_names(images, out_dir)):
        rgb = np.ascontiguousarray(img[..., ::-1])
        name = osp.basename(path)
        res = InferResult(image=path, out_file=out_file, shape=img.shape[:2], converted=note)
        if codebase == 'mmdet':
            pred = inferencer([img], return_datasamples=True, no_save_vis=True)['predictions'][0]
            inst = pred.pred_instances
            keep = inst.scores >= score_thr
            classes = inferencer.model.dataset_meta.get('classes') or ()
            res.num_instances = int(keep.sum())
            if 'masks' in inst:  # mmdet's visualizer fills each kept instance's mask in its box colour
                res.num_masks = int(inst.masks[keep].flatten(1).any(1).sum())
                res.mask_pixels = int(inst.masks[keep].any(0).sum())
            res.labels = [classes[i] if i < len(classes) else str(i) for i in inst.labels[keep].tolist()]
            inferencer.visualizer.add_datasample(name, rgb, pred, draw_gt=False, draw_pred=True,
                                                 pred_score_thr=score_thr, out_file=out_file)
        else:
            pred = inferencer([img], return_datasamples=True)
            pred = pred[0] if isinstance(pred, list) else pred
            inferencer.visualizer.alpha = opacity
            seg = pred.pred_sem_seg.data.cpu().numpy().reshape(-1)
            classes = inferencer.model.dataset_meta.get('classes') or ()
            present, counts = np.unique(seg, return_counts=True)
            order = np.argsort(-counts)
            res.labels = [classes[i] if i < len(classes) else str(i) for i in present[order].tolist()]
            inferencer.visualizer.add_datasample(name, rgb, pred, draw_gt=False, draw_pred=True,
                                                 out_file=out_file, with_labels=True)
        if not osp.isfile(out_file):
            raise RuntimeError(f'the visualizer did not write {out_file}')
        results.append(res)
    return results


class OnnxInferencer:
    """The part of mmdet's ``DetInferencer`` / mmseg's ``MMSegInferencer`` that :func:`infer`
    uses (call, ``model.dataset_meta``, ``visualizer``), over an :class:`OnnxModel`: the same pictures."""

    _count = 0

    def __init__(self, onnx_file: str, threads: Optional[int] = None):
        from types import SimpleNamespace
        self.onnx = OnnxModel(onnx_file, threads)
        self.codebase = 'mmdet' if self.onnx.task == 'detector' else 'mmseg'
        meta = dict(classes=self.onnx.classes)
        if self.onnx.palette is not None:
            meta['palette'] = [tuple(p) for p in self.onnx.palette]
        self.model = SimpleNamespace(dataset_meta=meta)
        OnnxInferencer._count += 1
        name = f'emo_mm_onnx_{OnnxInferencer._count}'
        if self.codebase == 'mmdet':
            from mmdet.visualization import DetLocalVisualizer
            self.visualizer = DetLocalVisualizer(name=name)
            self.visualizer.dataset_meta = meta
        else:
            from mmseg.visualization import SegLocalVisualizer
            self.visualizer = SegLocalVisualizer(name=name)
            self.visualizer.set_dataset_meta(meta['classes'], meta.get('palette'))

    def __call__(self, imgs, return_datasamples: bool = True, **kwargs):
        import torch
        from mmengine.structures import InstanceData, PixelData
        samples = []
        for img, res in zip(imgs, self.onnx.predict_batch(imgs)):
            if self.codebase == 'mmdet':
                from mmdet.structures import DetDataSample
                s = DetDataSample(metainfo=dict(ori_shape=img.shape[:2]))
                s.pred_instances = InstanceData(**{k: torch.from_numpy(v) for k, v in res.items()})
            else:
                from mmseg.structures import SegDataSample
                s = SegDataSample(metainfo=dict(ori_shape=img.shape[:2]))
                s.pred_sem_seg = PixelData(data=torch.from_numpy(res['sem_seg'])[None])
            samples.append(s)
        return dict(predictions=samples) if self.codebase == 'mmdet' else samples
