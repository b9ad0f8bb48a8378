"""What differs between mmdet, mmseg and mmpretrain for the train/test tools, in one place.

The tools read ``default_scope`` from the config; every codebase-specific step dispatches on it.
"""
import importlib

CODEBASES = ('mmdet', 'mmseg', 'mmpretrain')


def codebase_of(cfg):
    """The codebase that runs ``cfg``: its ``default_scope`` (emo_mm configs always set one)."""
    scope = cfg.get('default_scope')
    if scope not in CODEBASES:
        raise ValueError(f"config default_scope is {scope!r}; expected one of {CODEBASES} "
                         "(set default_scope='mmdet' / 'mmseg' / 'mmpretrain' in the config)")
    importlib.import_module(scope)
    return scope
