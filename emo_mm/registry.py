"""emo_mm's registry node.

The registries below hang off mmengine's root registries under the scope ``emo_mm``.
mmengine imports ``<scope>.registry`` on demand, so ``type='emo_mm.EMO'`` resolves from any stock
mmdet / mmseg / mmpretrain config run by the stock tools, with no ``custom_imports``; ``locations``
then imports the modules that fill the registry.

Bare names (``type='EMO'`` with ``custom_imports=dict(imports=['emo_mm'])``) are looked up in the
caller's registry and then in its ancestors, never in siblings, so :func:`register_model` also files
each class in mmengine's root ``MODELS``.
"""
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='emo_mm', locations=['emo_mm.models'])


def register_model(cls=None, *, name=None):
    """Register ``cls`` in emo_mm's ``MODELS`` (scoped name) and in mmengine's root (bare name)."""

    def _register(module):
        MODELS.register_module(name=name, module=module)
        MMENGINE_MODELS.register_module(name=name, module=module)
        return module

    return _register if cls is None else _register(cls)
