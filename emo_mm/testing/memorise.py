"""Recipes that make a detector memorise a few mini COCO images: the learning evidence of the tests and the
demo (a toolkit that trains correctly drives the loss down and scores its training images near mAP 1).

The options are ``--cfg-options`` strings for ``tools/train.py``; pipeline steps are found by type, never
by position, so the recipe follows the configs when their pipelines change.
"""
import json

from emo_mm.utils.config import type_name

__all__ = ['write_coco_subset', 'index_of_type', 'step_key', 'coco_fit_options', 'NO_PHOTOMETRIC_DISTORTION',
           'SSDLITE_FIT_EPOCHS', 'SSDLITE_FIT_LR']


def write_coco_subset(ann_file, out_file, num_images):
    """Write a COCO json holding the first ``num_images`` images of ``ann_file`` and only their annotations.

    mmdet's CocoMetric scores every image id of its ``ann_file``: evaluating a model on a few training
    images therefore needs an annotation file that lists exactly those images (``indices=N`` on the dataset
    alone would count the objects of all other images as missed).
    """
    with open(ann_file) as f:
        coco = json.load(f)
    if len(coco['images']) < num_images:
        raise ValueError(f'{ann_file} holds {len(coco["images"])} images, fewer than the {num_images} asked for')
    coco['images'] = coco['images'][:num_images]
    kept = {img['id'] for img in coco['images']}
    coco['annotations'] = [a for a in coco['annotations'] if a['image_id'] in kept]
    with open(out_file, 'w') as f:
        json.dump(coco, f)
    return out_file


def index_of_type(steps, step_type, where='pipeline'):
    """Index of the one entry of ``steps`` (a pipeline, a ``param_scheduler`` list) whose type is ``step_type``
    (a scope prefix such as ``mmdet.`` is ignored), for ``--cfg-options`` keys like ``...pipeline.<index>.scale``:
    a fixed index would silently change another step of a reordered list."""
    found = [i for i, step in enumerate(steps) if type_name(step) == step_type]
    if len(found) != 1:
        types = [str(step.get('type')) for step in steps]
        raise ValueError(f'{where}: expected exactly one {step_type} step, found {len(found)} in {types}')
    return found[0]


def _load_config(config):
    from mmengine.config import Config
    return Config.fromfile(config) if isinstance(config, str) else config


def _node(cfg, dotted_key):
    for part in dotted_key.split('.'):
        cfg = cfg[part]
    return cfg


def step_key(cfg, list_key, step_type):
    """``'<list_key>.<index>'``: the --cfg-options prefix of the ``step_type`` entry of the list at the dotted
    ``list_key`` of ``cfg`` (e.g. ``step_key(cfg, 'val_dataloader.dataset.pipeline', 'Resize')``)."""
    return f'{list_key}.{index_of_type(_node(cfg, list_key), step_type, where=list_key)}'


# PhotoMetricDistortion keys that make it the identity
NO_PHOTOMETRIC_DISTORTION = ['brightness_delta=0', 'contrast_range=(1.0,1.0)', 'saturation_range=(1.0,1.0)',
                             'hue_delta=0']
# Train augmentations a memorisation run makes the identity, by step type: Expand never expands, the only crop
# MinIoURandomCrop can draw is the whole image, no photometric change (the mini classes differ by colour).
FIT_IDENTITY_STEPS = {'Expand': ['prob=0.0'], 'MinIoURandomCrop': ['min_crop_size=1.0'],
                      'PhotoMetricDistortion': NO_PHOTOMETRIC_DISTORTION}

# SSDLite-EMO-1M's memorisation of 8 mini COCO train images (tools/demo.py, the learning tests): epochs of one
# batch-8 iteration and AdamW's peak lr. Float rounding differs between CPUs (AVX2 vs AVX-512 kernels) and so
# does the trajectory of a from-scratch fit; this recipe leaves the loss near its floor on both
SSDLITE_FIT_EPOCHS, SSDLITE_FIT_LR = 200, 0.02


def coco_fit_options(config, subset_json, size=192, batch_size=8, warmup_iters=5):
    """``--cfg-options`` that make a detector config (a path or Config) memorise the images of ``subset_json``
    (a COCO json of mini COCO train images, see :func:`write_coco_subset`) and evaluate on the same images.

    Used by tests/test_learning.py and tools/demo.py. Besides data, batch size and a ``size`` x ``size``
    input, the config's LinearLR warm-up is cut to ``warmup_iters`` iterations (the configs warm up over 500)
    and each step of ``FIT_IDENTITY_STEPS`` in the train pipeline is made the identity (with PhotoMetricDistortion's
    hue shifts SSDLite's fit took several times longer). Steps are found by type, never by position.
    Schedule and optimizer keys are the caller's.
    """
    cfg = _load_config(config)
    train = 'train_dataloader.dataset'
    if 'dataset' in _node(cfg, train):  # SSDLite's RepeatDataset
        train += '.dataset'
    pipe = f'{train}.pipeline'
    present = {type_name(step) for step in _node(cfg, pipe)}
    identity = [f'{step_key(cfg, pipe, step)}.{o}' for step, opts in FIT_IDENTITY_STEPS.items() if step in present
                for o in opts]
    sizes = [f'{step_key(cfg, p, "Resize")}.scale=({size},{size})'
             for p in (pipe, 'val_dataloader.dataset.pipeline', 'test_dataloader.dataset.pipeline')]
    return [
        f'{train}.ann_file={subset_json}', f'val_dataloader.dataset.ann_file={subset_json}',
        'val_dataloader.dataset.data_prefix.img=train2017/', f'val_evaluator.ann_file={subset_json}',
        f'train_dataloader.batch_size={batch_size}',
        f'{step_key(cfg, "param_scheduler", "LinearLR")}.end={warmup_iters}', *identity, *sizes]
