"""Walking OpenMMLab configs: dataset wrappers, pipelines, step types and pretrained references.

Every part of emo_mm that inspects or rewrites a config (the tools' preflight, ``--mini``, the loading
guard, model building for export and analysis, inference) walks it with these helpers.
"""
import copy

__all__ = ['type_name', 'leaf_datasets', 'dataset_pipelines', 'test_pipelines', 'pretrained_init_cfgs',
           'drop_pretrained', 'dataset_metainfo']

DATALOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def type_name(step):
    """The bare type of a config dict: ``'mmdet.Resize'`` and ``Resize`` (a class) both give ``'Resize'``."""
    t = step.get('type', '')
    return (t if isinstance(t, str) else getattr(t, '__name__', '')).split('.')[-1]


def leaf_datasets(dataset_cfg):
    """Unwrap RepeatDataset / ClassBalancedDataset / ConcatDataset to the datasets that read files."""
    if 'dataset' in dataset_cfg:
        yield from leaf_datasets(dataset_cfg['dataset'])
    elif 'datasets' in dataset_cfg:
        for sub in dataset_cfg['datasets']:
            yield from leaf_datasets(sub)
    else:
        yield dataset_cfg


def dataset_pipelines(cfg, loaders=DATALOADERS):
    """Every pipeline list of the datasets in ``loaders`` (wrappers such as MultiImageMixDataset can have one
    of their own), each once, in loader order."""
    seen = {}
    for name in loaders:
        loader = cfg.get(name)
        if not loader:
            continue
        for ds in (loader['dataset'], *leaf_datasets(loader['dataset'])):
            if isinstance(ds.get('pipeline'), (list, tuple)):
                seen.setdefault(id(ds['pipeline']), ds['pipeline'])
    return list(seen.values())


def test_pipelines(cfg):
    """The pipelines that prepare inference inputs: the test / val datasets', then ``test_pipeline`` /
    ``val_pipeline`` when the config defines them at top level."""
    pipelines = dataset_pipelines(cfg, ('test_dataloader', 'val_dataloader'))
    pipelines += [cfg[key] for key in ('test_pipeline', 'val_pipeline') if isinstance(cfg.get(key), (list, tuple))]
    return pipelines


def pretrained_init_cfgs(node):
    """Yield ``(owner dict, init_cfg dict)`` for every ``Pretrained`` init_cfg below ``node``."""
    if isinstance(node, dict):
        init = node.get('init_cfg')
        for item in init if isinstance(init, list) else [init]:
            if isinstance(item, dict) and item.get('type') == 'Pretrained' and isinstance(item.get('checkpoint'), str):
                yield node, item
        for value in node.values():
            yield from pretrained_init_cfgs(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from pretrained_init_cfgs(value)


def drop_pretrained(model_cfg, keep=lambda checkpoint: False):
    """Remove, in place, every ``Pretrained`` init_cfg and ``pretrained`` path below ``model_cfg`` whose
    checkpoint ``keep`` rejects (all of them by default); returns the dropped ``(owner, checkpoint)`` pairs.

    mmseg's EncoderDecoder copies ``model.pretrained`` (a ResNet URL in stock bases) into the backbone, so
    those paths count as pretrained references too.
    """
    dropped = []
    for owner, init in list(pretrained_init_cfgs(model_cfg)):
        if keep(init['checkpoint']):
            continue
        if isinstance(owner.get('init_cfg'), list):
            owner['init_cfg'] = [i for i in owner['init_cfg'] if i is not init]
        else:
            owner['init_cfg'] = None
        dropped.append((owner, init['checkpoint']))
    stack = [model_cfg]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get('pretrained'), str) and not keep(node['pretrained']):
                dropped.append((node, node['pretrained']))
                node['pretrained'] = None
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
    return dropped


def dataset_metainfo(cfg):
    """metainfo (classes, palette) of the config's test dataset, without reading any annotation file."""
    from mmengine.registry import DATASETS
    ds_cfg = copy.deepcopy(cfg.test_dataloader.dataset)
    while 'dataset' in ds_cfg and type_name(ds_cfg) in ('RepeatDataset', 'ClassBalancedDataset'):
        ds_cfg = ds_cfg['dataset']
    ds_cfg['lazy_init'] = True
    try:
        return DATASETS.build(ds_cfg).metainfo
    except Exception:  # noqa: BLE001  (a dataset class that cannot lazy-init: keep the inferencer's default)
        return {}
