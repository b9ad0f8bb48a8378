"""Run any config on the embedded mini datasets (``tools/train.py CONFIG --mini``).

The model and the pipelines stay exactly as configured; only where the data comes from and how long the
schedule is change:

* every ``data/coco``, ``data/ade/ADEChallengeData2016`` or ``data/imagenet`` path in the dataloaders and
  evaluators points at the copy under ``data/mini/`` (written by ``tools/misc/make_mini_data.py``);
* dataset repeats are dropped, batches are capped and data loading runs in the main process;
* the schedule is shortened to a few epochs / iterations, every scheduler's milestones are scaled with it;
* a pretrained backbone given by URL or as a file that does not exist is skipped (the mini run needs no
  download and starts from scratch, with BatchNorm statistics learning and nothing frozen:
  ``norm_eval=False, frozen_stages=-1``) with a warning; one that ``--cfg-options`` names explicitly
  (``model.backbone.init_cfg.checkpoint=URL``) is kept, the backbone as configured;
* the random seed is fixed so that runs are repeatable.

``--cfg-options`` are applied after this, so any of the above can still be overridden.
"""
import os.path as osp
import re
import warnings

from emo_mm.utils.config import drop_pretrained

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
        # mmengine steps a scheduler only while begin <= step < end: a warm-up squeezed to one step would
        # set its start factor and never raise the lr again, so every scheduler keeps at least two steps
        if 'end' in sched and sched['end'] - sched.get('begin', 0) < 2:
            sched['end'] = sched.get('begin', 0) + 2


def _iter_dataloaders(cfg):
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if cfg.get(name) is not None:
            yield name, cfg[name]


def _owners_set_by(model_cfg, options):
    """The model parts whose pretrained checkpoint an option names (``model.backbone.init_cfg.checkpoint``,
    ``model.pretrained``): keys of ``--cfg-options``."""
    owners = []
    for key in options:
        parts = str(key).split('.')
        if parts[0] != 'model' or not (parts[-2:] == ['init_cfg', 'checkpoint'] or parts[-1] == 'pretrained'):
            continue
        node = model_cfg
        for part in parts[1:-2 if parts[-1] == 'checkpoint' else -1]:
            if isinstance(node, dict):
                node = node.get(part)
            elif isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                node = None
        if isinstance(node, dict):
            owners.append(node)
    return owners


def _drop_unavailable_pretrained(model_cfg, pretrained_options=()):
    """Mini runs work offline and without the official weights: a backbone whose pretrained checkpoint is a
    URL or a missing local file starts from scratch, unless ``pretrained_options`` (the ``--cfg-options``
    keys) set that checkpoint explicitly: then the option's checkpoint is loaded and the backbone stays as
    configured (norm_eval, frozen_stages)."""
    explicit = {id(owner): {k: owner[k] for k in ('init_cfg', 'pretrained') if k in owner}
                for owner in _owners_set_by(model_cfg, pretrained_options)}
    for owner, checkpoint in drop_pretrained(model_cfg, keep=lambda ckpt: '://' not in ckpt and osp.isfile(ckpt)):
        if id(owner) in explicit:
            owner.update(explicit[id(owner)])
            continue
        warnings.warn(f'--mini: pretrained weights {checkpoint} not used (the mini runs need no download); '
                      'this mini run starts from scratch.')
        # norm_eval and frozen_stages exist to keep pretrained weights; a random backbone would keep
        # its 0/1 BN statistics (and frozen random stages) forever and barely learn
        if owner.get('norm_eval'):
            owner['norm_eval'] = False
        if owner.get('frozen_stages', -1) >= 0:
            owner['frozen_stages'] = -1


def apply_mini(cfg, codebase, mini_root=MINI_ROOT, epochs=None, iters=None, pretrained_options=()):
    """Point ``cfg`` (an mmengine Config) at the mini datasets and shorten its schedule, in place.

    ``pretrained_options``: the ``--cfg-options`` keys of the run; a pretrained checkpoint they set (a URL
    included) is kept, see :func:`_drop_unavailable_pretrained`."""
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
    _drop_unavailable_pretrained(cfg.get('model', {}), pretrained_options)
    # mmpretrain's default runtime sets randomness=dict(seed=None): that is no seed either
    if (cfg.get('randomness') or {}).get('seed') is None:
        cfg['randomness'] = {**(cfg.get('randomness') or {}), 'seed': 0}
    return cfg
