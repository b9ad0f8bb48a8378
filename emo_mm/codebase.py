"""What differs between mmdet, mmseg and mmpretrain for the train/test tools, in one place.

The tools read ``default_scope`` from the config and ask this module for the few codebase-specific steps:
turning on the visualisation hook for ``--show-dir`` and dumping predictions for ``--out``.
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


def enable_show_dir(cfg, codebase, show_dir):
    """Make the test run draw its predictions into ``show_dir``."""
    hooks = cfg.default_hooks
    if codebase == 'mmpretrain':
        hooks['visualization'] = dict(type='VisualizationHook', enable=True, out_dir=show_dir)
        return
    if 'visualization' not in hooks:
        raise ValueError('--show-dir needs default_hooks.visualization in the config')
    hooks['visualization']['draw'] = True
    if codebase == 'mmdet':
        hooks['visualization']['test_out_dir'] = show_dir
    else:  # mmseg writes through the visualizer's save_dir
        cfg.visualizer['save_dir'] = show_dir


def enable_dump(cfg, runner, codebase, out):
    """Save raw predictions to ``out`` the way each codebase's own ``tools/test.py`` does."""
    if codebase == 'mmdet':
        from mmdet.evaluation import DumpDetResults
        if not out.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out must be a .pkl file for detection, got {out}')
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=out))
    elif codebase == 'mmpretrain':
        from mmengine.evaluator import DumpResults
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=out))
    # mmseg: handled in the config before the runner is built (see configure_seg_out).


def configure_seg_out(cfg, out):
    """mmseg writes prediction PNGs from its IoUMetric when given an output_dir."""
    cfg.test_evaluator['output_dir'] = out
    cfg.test_evaluator['keep_results'] = True
