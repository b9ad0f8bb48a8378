"""Official EMO / EMOv2 checkpoints: unwrap, remap to the mm layout, validate, load.

Official classification checkpoints are flat state_dicts (``stage0.0...``, ``norm.norm.*``, ``head.*``),
sometimes wrapped (``{'net': ...}``, ``{'net_E': ...}``, ``{'state_dict': ...}``, ``{'model': ...}``) or
with DDP ``module.`` prefixes. The converted layout is mmpretrain's ``ImageClassifier``:
``backbone.<official key>`` and ``head.fc.{weight,bias}``; the backbones keep the official submodule names,
so no key is renamed.

Checkpoints are local paths or http(s) URLs; a URL is fetched once into the torch hub cache (see
:func:`emo_mm.utils.checkpoint_io.fetch_checkpoint`) and then read like a local file. The loaders registered
here with mmengine's ``CheckpointLoader`` (plain paths and http(s)) also serve ``load_from`` / ``tools/test.py
CONFIG CHECKPOINT``: an official classification file comes back as ``{'state_dict': <converted layout>}``, so
the ImageNet configs evaluate the official weights directly; every other checkpoint comes back unchanged.
"""
import logging
import os
from collections import OrderedDict

import torch
from mmengine.logging import print_log

from emo_mm.registry import MODELS
from mmengine.runner.checkpoint import CheckpointLoader

from emo_mm.utils.checkpoint_io import (HTTP_PREFIXES, fetch_checkpoint, is_url, load_local_checkpoint,
                                        load_url_checkpoint)

WRAPPER_KEYS = ('state_dict', 'net_E', 'net', 'model')
BACKBONE_PREFIX = 'backbone.'
HEAD_PREFIX = 'head.fc.'
ARCH_NAMES = ('emo-1m', 'emo-2m', 'emo-5m', 'emo-6m', 'emov2-1m', 'emov2-2m', 'emov2-5m', 'emov2-20m')
OFFICIAL_PREFIXES = ('stage', 'norm.', 'head.')  # every key of an official classification state_dict


def convert_hint(path='<converted .pth>', backbone_type=None, arch=None):
    """How to get the weights for ``path``: its official URL or file directly, or a converted copy; one line.

    ``arch`` is a full name (``'emov2-5m'``) or an arch key (``'5m'``, ``'EMOv2-5M'``) of ``backbone_type``
    (``'EMO'``, ``'emo_mm.EMOv2'``...); anything else shows ``<arch>``.
    """
    name = '<arch>'
    if isinstance(arch, str):
        name = arch.lower()
        if name not in ARCH_NAMES and backbone_type is not None:
            family = str(backbone_type).split('.')[-1].lower()
            name = name if name.startswith(family + '-') else f'{family}-{name}'
        if name not in ARCH_NAMES:
            name = '<arch>'
    return ('set the checkpoint to the official release URL or a downloaded official file (see '
            'docs/pretrained_weights.md; both load as they are), or convert the official weights with: '
            f'python tools/model_converters/convert_official.py <official .pth> {path} --arch {name}')


def remap_official_state_dict(obj, prefix=BACKBONE_PREFIX, head_prefix=HEAD_PREFIX):
    """Official (or already converted) checkpoint object -> ``OrderedDict`` in the converted layout.

    Unwraps ``'state_dict'`` / ``'net_E'`` (EMA, preferred over ``'net'``) / ``'net'`` / ``'model'`` (nested
    wrappers too), strips DDP ``module.`` prefixes, then maps ``head.*`` -> ``head.fc.*`` and every other key
    ``k`` -> ``backbone.k``. A dict that already has ``backbone.`` keys (converted or mm-trained) is returned
    unwrapped and unprefixed but otherwise unchanged.
    """
    state = _unwrap(obj)
    if state is None:
        raise ValueError('no state_dict of tensors found in the checkpoint (looked inside the wrapper keys '
                         f'{list(WRAPPER_KEYS)})')
    if any(k.startswith(prefix) for k in state):
        return state
    return OrderedDict((head_prefix + k[len('head.'):] if k.startswith('head.') else prefix + k, v)
                       for k, v in state.items())


def _unwrap(obj):
    """The tensors of the state_dict inside ``obj`` (wrappers unwrapped, ``module.`` stripped), or None."""
    while isinstance(obj, dict):
        key = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if key is None:
            break
        obj = obj[key]
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        return None
    return OrderedDict((k[len('module.'):] if k.startswith('module.') else k, v) for k, v in obj.items()
                       if isinstance(v, torch.Tensor))


def is_official_layout(obj):
    """True when ``obj`` holds an official EMO / EMOv2 classification state_dict: every key under
    ``stage<n>.``, ``norm.`` or ``head.``, stem included. Converted files, mmengine checkpoints (``backbone.``
    keys) and other networks' weights are not."""
    state = _unwrap(obj)
    return bool(state) and any(k.startswith('stage0.') for k in state) and all(
        k.startswith(OFFICIAL_PREFIXES) for k in state)


def _for_mmengine(obj, source):
    """What mmengine's ``load_from`` gets: an official file in the converted (mmpretrain) layout."""
    if not is_official_layout(obj):
        return obj
    print_log(f'{source}: official EMO/EMOv2 classification weights, keys mapped to the mmpretrain layout '
              '(backbone.*, head.fc.*)', logger='current')
    return {'state_dict': remap_official_state_dict(obj)}


def load_from_local(filename, map_location=None):
    """mmengine's loader for plain paths: :func:`load_local_checkpoint`, official layout remapped."""
    return _for_mmengine(load_local_checkpoint(filename, map_location=map_location), filename)


def load_from_http(filename, map_location=None):
    """mmengine's loader for http(s): fetched once into the cache, read with ``weights_only=True``, official
    layout remapped."""
    return _for_mmengine(load_url_checkpoint(filename, map_location=map_location), filename)


# Longer prefixes win in mmengine's lookup, so s3:// etc. keep their own loaders.
CheckpointLoader.register_scheme(prefixes='', loader=load_from_local, force=True)
CheckpointLoader.register_scheme(prefixes=HTTP_PREFIXES, loader=load_from_http, force=True)


def build_backbone(arch, **kwargs):
    """``'emo-1m'`` ... ``'emov2-20m'`` -> the backbone (``kwargs`` go to its constructor)."""
    family, _, size = arch.lower().partition('-')
    # looked up in the registry, not imported: the backbones import this module for load_pretrained
    cls = MODELS.get({'emo': 'EMO', 'emov2': 'EMOv2'}.get(family, ''))
    if cls is None or size not in cls.arch_settings:
        raise ValueError(f"unknown arch '{arch}', expected one of {list(ARCH_NAMES)}")
    return cls(size, **kwargs)


def guess_arch(state, prefix=BACKBONE_PREFIX):
    """Name of the official variant whose backbone keys and shapes all equal ``state``'s, else None."""
    def shapes(items):  # final norm excluded: dense checkpoints may lack it
        return {k: tuple(v.shape) for k, v in items if not k.startswith('norm.')}

    got = shapes((k[len(prefix):], v) for k, v in state.items() if k.startswith(prefix))
    for arch in ARCH_NAMES:
        if shapes(build_backbone(arch).state_dict().items()) == got:
            return arch
    return None


def check_shapes(state, model_state, source, arch, prefix=BACKBONE_PREFIX):
    """Raise ``ValueError`` naming key and both shapes for the first tensor whose shape differs."""
    for key, value in state.items():
        target = model_state.get(key)
        if target is not None and target.shape != value.shape:
            guessed = guess_arch({prefix + k: v for k, v in state.items()}, prefix)
            hint = f'it looks like {guessed}' if guessed else 'it is probably for another variant'
            raise ValueError(f"checkpoint '{source}' does not fit {arch}: '{key}' has shape {tuple(value.shape)} in "
                             f'the checkpoint but {tuple(target.shape)} in the model; {hint} - check the arch '
                             '(e.g. 1m vs 2m, EMO vs EMOv2).')


def load_pretrained(module, path, prefix=BACKBONE_PREFIX, logger=None):
    """Load the ``prefix`` part of a converted (or official) checkpoint into ``module`` and log a summary.

    ``path`` is a local file or an http(s) URL (fetched into the torch hub cache unless it is there already;
    a failed download -> :class:`emo_mm.utils.checkpoint_io.DownloadError`, one line). Missing file ->
    FileNotFoundError with how to get the weights; unreadable file ->
    :class:`emo_mm.utils.compat.CheckpointError` (a RuntimeError) naming it;
    wrong shapes -> ValueError naming key and shapes; no matching key at all -> ValueError. Keys outside
    ``prefix`` (the classifier head) and the final ``norm.*`` of a backbone built without it are reported as
    ignored, not as a problem.
    """
    arch = getattr(module, 'arch_name', '<arch>')
    source, cached = path, ''
    if is_url(path):
        path = fetch_checkpoint(source, option='model.backbone.init_cfg.checkpoint')
        cached = f' (cached as {path})'
    elif '://' in str(path):
        raise ValueError(f"pretrained '{path}' is a URL of a scheme {type(module).__name__} does not read "
                         '(http(s) URLs and local files only). If it comes from a stock mmseg/mmdet base config '
                         '(e.g. a ResNet URL), set model.pretrained=None and use init_cfg=dict(type="Pretrained", '
                         f'checkpoint=...); {convert_hint(arch=arch)}')
    elif not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained checkpoint '{path}' not found; {convert_hint(path, arch=arch)}")
    obj = load_url_checkpoint(source, 'cpu') if cached else load_local_checkpoint(path, map_location='cpu')
    state = remap_official_state_dict(obj, prefix=prefix)
    selected = OrderedDict((k[len(prefix):], v) for k, v in state.items() if k.startswith(prefix))
    model_state = module.state_dict()
    check_shapes(selected, model_state, source, arch, prefix)
    loaded = [k for k in selected if k in model_state]
    if not loaded:
        raise ValueError(f"checkpoint '{source}' has no tensor for {type(module).__name__} under prefix '{prefix}' "
                         f'({len(state)} keys, e.g. {list(state)[:3]}); if it holds official weights, '
                         f'{convert_hint(path, arch=arch)}')
    missing = [k for k in model_state if k not in selected]
    extra = [k for k in selected if k not in model_state]
    ignored = [k for k in extra if k.startswith('norm.')] + [k for k in state if not k.startswith(prefix)]
    unexpected = [k for k in extra if not k.startswith('norm.')]
    module.load_state_dict({k: selected[k] for k in loaded}, strict=False)
    print_log(f"load_pretrained '{source}'{cached} ({arch}): loaded {len(loaded)} / {len(model_state)} tensors, "
              f'missing {missing}, unexpected {unexpected}; ignored {len(ignored)} keys not used by this '
              f'backbone (classifier head / final norm): {ignored}',
              logger=logger or 'current', level=logging.WARNING if missing or unexpected else logging.INFO)
    return dict(loaded=loaded, missing=missing, unexpected=unexpected, ignored=ignored)


def convert_official(src, dst, arch):
    """Validate an official checkpoint against ``arch`` and save it in the converted layout.

    Returns a summary dict. Raises ``ValueError`` if keys or shapes do not match the variant.
    """
    state = remap_official_state_dict(load_local_checkpoint(src, map_location='cpu'))
    model = build_backbone(arch, final_norm=True)
    model_state = model.state_dict()
    backbone = OrderedDict((k[len(BACKBONE_PREFIX):], v) for k, v in state.items() if k.startswith(BACKBONE_PREFIX))
    check_shapes(backbone, model_state, src, arch)
    missing = [k for k in model_state if k not in backbone]
    unexpected = [k for k in state if not k.startswith((BACKBONE_PREFIX, HEAD_PREFIX))]
    unexpected += [BACKBONE_PREFIX + k for k in backbone if k not in model_state]
    if missing or unexpected:
        raise ValueError(f"checkpoint '{src}' does not match {arch}: missing {missing[:10]}"
                         f"{' ...' if len(missing) > 10 else ''} ({len(missing)}), unexpected {unexpected[:10]}"
                         f"{' ...' if len(unexpected) > 10 else ''} ({len(unexpected)})")
    head = {k: v for k, v in state.items() if k.startswith(HEAD_PREFIX)}
    if HEAD_PREFIX + 'weight' in head and head[HEAD_PREFIX + 'weight'].shape[1] != model.channels[-1]:
        raise ValueError(f"checkpoint '{src}' does not fit {arch}: head.weight has shape "
                         f"{tuple(head[HEAD_PREFIX + 'weight'].shape)}, expected (num_classes, {model.channels[-1]})")
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    torch.save({'meta': {'arch': arch, 'source': os.path.abspath(src)}, 'state_dict': state}, dst)
    return dict(arch=arch, tensors=len(state), backbone_tensors=len(backbone), head_tensors=len(head),
                params=sum(v.numel() for k, v in state.items() if not k.endswith(('running_mean', 'running_var',
                                                                                 'num_batches_tracked'))))
