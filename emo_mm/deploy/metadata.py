"""What an exported detector / segmentor needs at run time, stored in the ONNX file's ``metadata_props``:
task, the config's test-time resize, the data preprocessor's normalisation and padding, classes, palette."""
from typing import Dict, Optional

from emo_mm.utils.config import dataset_metainfo, test_pipelines, type_name

__all__ = ['deploy_metadata', 'METADATA_VERSION']

# test pipeline steps that do not change the image (data loading / packing)
_PASSIVE_STEPS = ('LoadImageFromFile', 'LoadImageFromNDArray', 'InferencerLoader', 'LoadAnnotations',
                  'PackDetInputs', 'PackSegInputs', 'PackInputs')
METADATA_VERSION = 1


def _resize_step(cfg) -> Optional[dict]:
    """The one ``Resize`` of the config's test pipeline (None if it has none); anything else that would
    change the image is refused by name."""
    pipe = next(iter(test_pipelines(cfg)), None)
    if pipe is None:
        raise ValueError('the config has no test pipeline (test_dataloader.dataset.pipeline / test_pipeline)')
    resize = None
    for step in pipe:
        name = type_name(step)
        if name in _PASSIVE_STEPS:
            continue
        if name != 'Resize' or resize is not None:
            raise NotImplementedError(f'test pipeline step {name!r} is not supported by emo_mm.deploy '
                                      f'(supported: one Resize; {", ".join(_PASSIVE_STEPS)})')
        if step.get('scale') is None:
            raise NotImplementedError(f'test Resize without a `scale` is not supported: {dict(step)}')
        resize = dict(scale=list(step['scale']) if not isinstance(step['scale'], int) else step['scale'],
                      keep_ratio=bool(step.get('keep_ratio', False)),
                      interpolation=step.get('interpolation', 'bilinear'), backend=step.get('backend', 'cv2'))
    return resize


def _normalisation(model) -> dict:
    dp = model.data_preprocessor
    norm = getattr(dp, '_enable_normalize', False)
    conv = getattr(dp, '_channel_conversion', getattr(dp, 'channel_conversion', False))
    meta = dict(mean=dp.mean.reshape(-1).tolist() if norm else None,
                std=dp.std.reshape(-1).tolist() if norm else None, bgr_to_rgb=bool(conv))
    if hasattr(dp, 'pad_size_divisor'):  # mmdet / mmengine: pad the batch to a multiple, after normalising
        meta.update(pad_size_divisor=int(dp.pad_size_divisor or 1), pad_value=float(dp.pad_value))
    else:  # mmseg: padding at test time only through data_preprocessor.test_cfg
        test_cfg = getattr(dp, 'test_cfg', None) or {}
        if test_cfg.get('size'):
            raise NotImplementedError(f'data_preprocessor.test_cfg.size={test_cfg["size"]} is not supported')
        meta.update(pad_size_divisor=int(test_cfg.get('size_divisor') or 1), pad_value=float(dp.pad_val))
    return meta


def deploy_metadata(cfg, model, kind: str, dataset_meta: Optional[dict] = None, **extra) -> Dict[str, object]:
    """What :class:`OnnxModel` needs, as JSON-able values: task, preprocessing, classes, palette."""
    meta = dataset_meta or {}
    if not meta.get('classes'):
        meta = dataset_metainfo(cfg)
    palette = meta.get('palette')
    out = {'emo_mm.version': METADATA_VERSION, 'emo_mm.task': kind,
           'emo_mm.preprocess': dict(resize=_resize_step(cfg), **_normalisation(model)),
           'emo_mm.classes': list(meta.get('classes') or []),
           'emo_mm.palette': [list(map(int, p)) for p in palette] if palette is not None else None}
    if kind == 'segmentor':  # mmseg resizes the logits to the image with the decode head's setting
        out['emo_mm.align_corners'] = bool(model.decode_head.align_corners)
    roi_head = getattr(model, 'roi_head', None)
    if kind == 'detector' and getattr(roi_head, 'with_mask', False):  # pasted masks are thresholded here
        out['emo_mm.mask_thr_binary'] = float(roi_head.test_cfg.mask_thr_binary)
    out.update({f'emo_mm.{k}': v for k, v in extra.items()})
    return out


