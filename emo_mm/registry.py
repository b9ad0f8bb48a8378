"""emo_mm's registry nodes.

The registries below hang off mmengine's root registries under the scope ``emo_mm``.
mmengine imports ``<scope>.registry`` on demand, so ``type='emo_mm.EMO'`` resolves from any stock
mmdet / mmseg / mmpretrain config run by the stock tools, with no ``custom_imports``; ``locations``
then imports the modules that fill the registry. The hook, transform and model wrapper that
``tools/train.py`` writes into a run's config are scoped the same way (``emo_mm.RandomStateHook``,
``emo_mm.CheckedLoading``, ``emo_mm.CPUDistributedDataParallel``), so a dumped config rebuilds with the
stock tools too.

Bare names (``type='EMO'`` with ``custom_imports=dict(imports=['emo_mm'])``) are looked up in the
caller's registry and then in its ancestors, never in siblings, so each class is also filed under its
bare name in mmengine's root registry.
"""
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='emo_mm', locations=['emo_mm.models'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='emo_mm', locations=['emo_mm.engine.checkpoint'])
TRANSFORMS = Registry('transform', parent=MMENGINE_TRANSFORMS, scope='emo_mm', locations=['emo_mm.datasets.checks'])
MODEL_WRAPPERS = Registry('model_wrapper', parent=MMENGINE_MODEL_WRAPPERS, scope='emo_mm',
                          locations=['emo_mm.engine.distributed'])


def _register_in(registry):
    """Decorator factory: file a class in ``registry`` (scoped name) and in its root parent (bare name)."""

    def register(cls=None, *, name=None):
        def _register(module):
            registry.register_module(name=name, module=module)
            registry.parent.register_module(name=name, module=module)
            return module

        return _register if cls is None else _register(cls)

    return register


register_model = _register_in(MODELS)
register_hook = _register_in(HOOKS)
register_transform = _register_in(TRANSFORMS)
register_model_wrapper = _register_in(MODEL_WRAPPERS)


def scoped(cls):
    """The config ``type`` that rebuilds ``cls`` from any registry without importing emo_mm first."""
    return f'emo_mm.{cls.__name__}'
