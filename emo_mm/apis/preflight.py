"""Checks run by ``tools/train.py`` / ``tools/test.py`` before anything is built.

A new user's first run usually lacks the dataset or the backbone weights. Without these checks
the run gets minutes in (model built, dataloader half started) and dies in a deep traceback; with them it
stops at once with one message that says what is missing, where it is expected and how to get it.
"""
import os.path as osp

from emo_mm.datasets.checks import annotation_problem
from emo_mm.utils.config import leaf_datasets, pretrained_init_cfgs

# Dataset type -> (human name, expected layout) for the messages.
_DATASETS = {
    'CocoDataset': ('COCO2017', 'annotations/instances_{train,val}2017.json, train2017/, val2017/'),
    'ADE20KDataset': ('ADE20K', 'images/{training,validation}/, annotations/{training,validation}/'),
    'ImageNet': ('ImageNet-1k', 'train/, val/, meta/{train,val}.txt'),
}


class PreflightError(RuntimeError):
    """Raised with a message meant for the user, not a traceback."""


def _ann_path(dataset_cfg):
    root, ann_file = dataset_cfg.get('data_root') or '', dataset_cfg.get('ann_file')
    return (ann_file if osp.isabs(ann_file) else osp.join(root, ann_file)) if ann_file else None


def _missing_dataset_paths(dataset_cfg):
    root = dataset_cfg.get('data_root') or ''
    paths = [p for p in (root, _ann_path(dataset_cfg)) if p]
    return [p for p in paths if not osp.exists(p)]


def dataset_problems(cfg, loaders=('train_dataloader', 'val_dataloader')):
    """One message per dataset in ``loaders`` whose root or annotation file is missing or unreadable."""
    problems = []
    for name in loaders:
        loader = cfg.get(name)
        if not loader:
            continue
        for ds in leaf_datasets(loader['dataset']):
            missing = _missing_dataset_paths(ds)
            if not missing:
                problem = annotation_problem(_ann_path(ds) or '', str(ds.get('type', '')))
                msg = f'{name}: annotation file {_ann_path(ds)} {problem}.' if problem else None
                if msg and msg not in problems:
                    problems.append(msg)
                continue
            title, layout = _DATASETS.get(ds.get('type'), (ds.get('type', 'dataset'), None))
            msg = f'{name}: {title} not found: missing {", ".join(missing)}.'
            if layout:
                msg += f'\n  Expected {title} at {ds.get("data_root")} with {layout}' \
                       f' (put it there, symlink it, or pass --cfg-options with your path).'
            if msg not in problems:
                problems.append(msg)
    return problems


def _option_of(node, target, key='model'):
    """The ``--cfg-options`` key of ``target``'s init_cfg checkpoint below ``node`` (at ``key``), or None."""
    if node is target:
        return f'{key}.init_cfg.checkpoint'
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, (list, tuple)) else ()
    for name, value in items:
        found = _option_of(value, target, f'{key}.{name}')
        if found:
            return found
    return None


def pretrained_problems(cfg, fetch=True):
    """One message per ``Pretrained`` checkpoint that cannot be had: a local file that does not exist (with how
    to get it), a URL whose download fails (one line: URL, reason, how to use a local copy).

    A URL is fetched here (``fetch``), into the torch hub cache: that is the download mmengine would do when
    the model is initialised, which then finds the file cached.
    """
    from emo_mm.models.pretrained import convert_hint  # lazy: keeps `--help` fast
    from emo_mm.utils.checkpoint_io import DownloadError, fetch_checkpoint, is_url
    problems = []
    model = cfg.get('model', {})
    for owner, init in pretrained_init_cfgs(model):
        path = init['checkpoint']
        if is_url(path):
            if not fetch:
                continue
            try:
                fetch_checkpoint(path, option=_option_of(model, owner))
            except DownloadError as err:
                problems.append(str(err))
        elif '://' not in path and not osp.isfile(path):
            problems.append(f'pretrained backbone weights not found: {path}\n  '
                            + convert_hint(path, owner.get('type'), owner.get('arch')))
    return problems


def check(cfg, loaders, mini_hint=None):
    """Raise :class:`PreflightError` listing every missing or unreadable input of ``cfg``."""
    problems = dataset_problems(cfg, loaders)
    # no download for a run that cannot start anyway (and none, then, in the tests of a missing dataset)
    problems += pretrained_problems(cfg, fetch=not problems)
    if problems:
        text = 'Cannot start, inputs are missing or unreadable:\n- ' + '\n- '.join(problems)
        if mini_hint:
            text += f'\n\n{mini_hint}'
        raise PreflightError(text)
