"""Run any config on the embedded mini datasets (``tools/train.py CONFIG --mini``).

The model and the pipelines stay exactly as configured; only where the data comes from and how long the
schedule is change:

* every ``data/coco``, ``data/ade/ADEChallengeData2016`` or ``data/imagenet`` path in the dataloaders and
  evaluators points at the copy under ``data/mini/`` (written by ``tools/make_mini_data.py``);
* dataset repeats are dropped, batches are capped and data loading runs in the main process;
* the schedule is shortened to a few epochs / iterations, every scheduler's milestones are scaled with it;
* a pretrained backbone file that does not exist is skipped (the mini run starts from scratch, with BatchNorm
  statistics learning and nothing frozen: ``norm_eval=False, frozen_stages=-1``) with a warning;
* the random seed is fixed so that runs are repeatable.

``--cfg-options`` are applied after this, so any of the above can still be overridden.
"""
import os.path as osp
import re
import warnings

MINI_ROOT = 'data/mini'
_FULL_ROOT = re.compile(r'^(\./)?data/(coco|ade/ADEChallengeData2016|imagenet)(?=/|$)')

# Per codebase: schedule length (in the unit of its train loop), train batch cap.
MINI_DEFAULTS = {
    'mmdet': dict(epochs=2, iters=40, batch_size=8),
    'mmseg': dict(epochs=2, iters=40, batch_size=4),
    'mmpretrain': dict(epochs=2, iters=40, batch_size=16),
}


def to_mini_path(path, mini_root=MINI_ROOT):
    """``data/coco/annotations/x.json`` -> ``data/mini/coco/annotations/x.json``; others unchanged."""
    if not isinstance(path, str):
        return path
    return _FULL_ROOT.sub(lambda m: f'{mini_root}/{m.group(2)}', path)


def _redirect_paths(node, mini_root):
    """Rewrite every full-dataset path string found anywhere below ``node`` (dicts, lists)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str):
                node[key] = to_mini_path(value, mini_root)
            else:
                _redirect_paths(value, mini_root)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            if isinstance(value, str):
                node[i] = to_mini_path(value, mini_root)
            else:
                _redirect_paths(value, mini_root)


def _drop_repeats(dataset_cfg):
    """RepeatDataset(times=5) exists to make COCO epochs long; on 160 images it only slows feedback."""
    if dataset_cfg.get('type') == 'RepeatDataset':
        dataset_cfg['times'] = 1


def _scale_schedulers(schedulers, ratio):
    """Scale begin/end/T_max of schedulers that count in the loop's unit by ``ratio``.

    Iteration-counted warm-ups inside epoch-based loops are scaled by the same ratio, so a warm-up of
    500 iterations over 120 epochs stays the same fraction of a 2-epoch mini run.
    """
    if schedulers is None:
        return
    for sched in schedulers if isinstance(schedulers, list) else [schedulers]:
        for key in ('begin', 'end', 'T_max'):
            if key in sched and sched[key] is not None:
                sched[key] = max(1, int(round(sched[key] * ratio))) if sched[key] else 0
        if sched.get('milestones'):
            sched['milestones'] = [max(1, int(round(m * ratio))) for m in sched['milestones']]
        if 'end' in sched and sched.get('begin', 0) >= sched['end']:
            sched['end'] = sched.get('begin', 0) + 1


def _iter_dataloaders(cfg):
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if cfg.get(name) is not None:
            yield name, cfg[name]


def pretrained_init_cfgs(node):
    """Yield (owner dict, init_cfg dict) for every ``Pretrained`` init_cfg below ``node``."""
    if isinstance(node, dict):
        init = node.get('init_cfg')
        inits = init if isinstance(init, list) else [init]
        for item in inits:
            if isinstance(item, dict) and item.get('type') == 'Pretrained' and \
                    isinstance(item.get('checkpoint'), str):
                yield node, item
        for value in node.values():
            yield from pretrained_init_cfgs(value)
    elif isinstance(node, list):
        for value in node:
            yield from pretrained_init_cfgs(value)


def _drop_unavailable_pretrained(model_cfg):
    """Mini runs must work offline and before the official weights are converted: start from scratch."""
    for owner, init in list(pretrained_init_cfgs(model_cfg)):
        if not osp.isfile(init['checkpoint']):
            warnings.warn(f"--mini: pretrained weights {init['checkpoint']} not available locally; this mini "
                          'run starts from scratch (README: converting the official weights).')
            if isinstance(owner.get('init_cfg'), list):
                owner['init_cfg'] = [i for i in owner['init_cfg'] if i is not init]
            else:
                owner['init_cfg'] = None
            # norm_eval and frozen_stages exist to keep pretrained weights; a random backbone would keep
            # its 0/1 BN statistics (and frozen random stages) forever and barely learn
            if owner.get('norm_eval'):
                owner['norm_eval'] = False
            if owner.get('frozen_stages', -1) >= 0:
                owner['frozen_stages'] = -1
    # mmseg's EncoderDecoder copies model.pretrained (often a URL in stock configs) into the backbone.
    if isinstance(model_cfg.get('pretrained'), str) and not osp.isfile(model_cfg['pretrained']):
        warnings.warn(f"--mini: model.pretrained {model_cfg['pretrained']} not available locally; ignored.")
        model_cfg['pretrained'] = None


def apply_mini(cfg, codebase, mini_root=MINI_ROOT, epochs=None, iters=None):
    """Point ``cfg`` (an mmengine Config) at the mini datasets and shorten its schedule, in place."""
    defaults = MINI_DEFAULTS[codebase]
    for name, loader in _iter_dataloaders(cfg):
        _redirect_paths(loader, mini_root)
        _drop_repeats(loader['dataset'])
        loader['num_workers'] = 0
        loader['persistent_workers'] = False
        if name == 'train_dataloader':
            loader['batch_size'] = min(loader.get('batch_size', 1), defaults['batch_size'])
    for name in ('val_evaluator', 'test_evaluator'):
        if cfg.get(name) is not None:
            _redirect_paths(cfg[name], mini_root)

    train_cfg = cfg.get('train_cfg')
    if train_cfg is not None:
        by_epoch = 'max_epochs' in train_cfg
        key, new = ('max_epochs', epochs or defaults['epochs']) if by_epoch else \
            ('max_iters', iters or defaults['iters'])
        ratio = new / train_cfg[key]
        train_cfg[key] = new
        if 'val_interval' in train_cfg:
            train_cfg['val_interval'] = 1 if by_epoch else new
        if 'val_begin' in train_cfg:
            train_cfg['val_begin'] = 1
        _scale_schedulers(cfg.get('param_scheduler'), ratio)
        # Keep the dynamic_intervals etc. of mmdet loops from pointing past the end.
        train_cfg.pop('dynamic_intervals', None)
        hooks = cfg.get('default_hooks', {})
        if 'checkpoint' in hooks:
            hooks['checkpoint']['interval'] = 1 if by_epoch else new
            hooks['checkpoint'].pop('save_best', None)
        if 'logger' in hooks:
            hooks['logger']['interval'] = 5
    if cfg.get('auto_scale_lr') is not None:
        cfg['auto_scale_lr']['enable'] = False
    _drop_unavailable_pretrained(cfg.get('model', {}))
    # mmpretrain's default runtime sets randomness=dict(seed=None): that is no seed either
    if (cfg.get('randomness') or {}).get('seed') is None:
        cfg['randomness'] = {**(cfg.get('randomness') or {}), 'seed': 0}
    return cfg


def write_coco_subset(ann_file, out_file, num_images):
    """Write a COCO json holding the first ``num_images`` images of ``ann_file`` and only their annotations.

    mmdet's CocoMetric scores every image id of its ``ann_file``: evaluating a model on a few training
    images therefore needs an annotation file that lists exactly those images (``indices=N`` on the dataset
    alone would count the objects of all other images as missed).
    """
    import json
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


def _type_name(step):
    return str(step.get('type', '')).split('.')[-1]


def index_of_type(steps, step_type, where='pipeline'):
    """Index of the one entry of ``steps`` (a pipeline, a ``param_scheduler`` list) whose type is ``step_type``
    (a scope prefix such as ``mmdet.`` is ignored), for ``--cfg-options`` keys like ``...pipeline.<index>.scale``:
    a fixed index would silently change another step of a reordered list."""
    found = [i for i, step in enumerate(steps) if _type_name(step) == step_type]
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

# SSDLite-EMO-1M's memorisation of 8 mini COCO train images (tools/demo.py, tests/test_learning.py): epochs of
# one batch-8 iteration and AdamW's peak lr. 150 epochs at lr 0.01 reached bbox mAP 0.84-0.87 on an AVX-512
# machine but 0.455 on an AVX2-only one (other float rounding, another trajectory; loss still falling when the
# cosine ended); 200 at 0.02 reached 0.90 there (final loss 0.21 against 2.99)
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
    present = {_type_name(step) for step in _node(cfg, pipe)}
    identity = [f'{step_key(cfg, pipe, step)}.{o}' for step, opts in FIT_IDENTITY_STEPS.items() if step in present
                for o in opts]
    sizes = [f'{step_key(cfg, p, "Resize")}.scale=({size},{size})'
             for p in (pipe, 'val_dataloader.dataset.pipeline', 'test_dataloader.dataset.pipeline')]
    return [
        f'{train}.ann_file={subset_json}', f'val_dataloader.dataset.ann_file={subset_json}',
        'val_dataloader.dataset.data_prefix.img=train2017/', f'val_evaluator.ann_file={subset_json}',
        f'train_dataloader.batch_size={batch_size}',
        f'{step_key(cfg, "param_scheduler", "LinearLR")}.end={warmup_iters}', *identity, *sizes]
