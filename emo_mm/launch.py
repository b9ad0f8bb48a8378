"""Config handling shared by ``tools/train.py`` and ``tools/test.py``.

Both tools take any mmdet / mmseg / mmpretrain config (ours or a user's, ``mmdet::`` paths included) and
behave like the codebase's own tools; this module holds the common flags and the config preparation.
"""
import importlib
import os
import os.path as osp
import sys

import torch
from mmengine.config import Config, DictAction

from .codebase import codebase_of
from .compat import zip_checkpoint_problem
from .mini import MINI_ROOT, apply_mini
from .preflight import PreflightError, check

MINI_HINT = ('To try this config on the embedded mini datasets instead:\n'
             '  python tools/make_mini_data.py && python {tool} {config} --mini')


def add_common_args(parser):
    parser.add_argument('--work-dir', help='directory for logs and checkpoints')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config values, key=value (applied after --mini)')
    parser.add_argument('--mini', action='store_true',
                        help=f'run on the embedded mini datasets under {MINI_ROOT}/ with a short schedule '
                             '(model and pipeline unchanged). A smoke test: it shows that the config builds, '
                             'trains (loss falls), checkpoints and evaluates. It cannot show accuracy: the '
                             'mini sets are synthetic shapes, and without converted ImageNet weights the run '
                             'starts from scratch, so its held-out scores say little (SSDLite-EMO-1M: bbox mAP '
                             '~0.001-0.01); '
                             'tests/test_learning.py and `make demo` show that each task learns, by '
                             'memorising a few training images')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def resolve_config_path(path):
    """``mmdet::ssd/x.py`` -> the file shipped inside the installed mmdet package (like ``_base_`` does)."""
    if '::' not in path:
        return path
    package, relative = path.split('::', 1)
    module = importlib.import_module(package)
    return osp.join(osp.dirname(module.__file__), '.mim', 'configs', relative)


def _positive_int(value):
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def prepare_config(args, tool, loaders):
    """Load ``args.config`` and apply --mini, --cfg-options, --work-dir, launcher; run the preflight checks.

    Returns ``(cfg, codebase)``. Exits with a readable message (no traceback) if inputs are missing.
    """
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    path = resolve_config_path(args.config)
    if not osp.isfile(path):
        sys.exit(f'config file not found: {args.config}')
    cfg = Config.fromfile(path)
    codebase = codebase_of(cfg)
    if args.mini:
        # a schedule length given with --cfg-options is the one the mini schedulers are scaled to (a bare
        # override after apply_mini would leave e.g. the cosine ending at the 2nd of 12 epochs)
        opts = args.cfg_options or {}
        apply_mini(cfg, codebase, epochs=_positive_int(opts.get('train_cfg.max_epochs')),
                   iters=_positive_int(opts.get('train_cfg.max_iters')))
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    if args.launcher != 'none' and not torch.cuda.is_available():
        # default_runtime asks for nccl, which needs GPUs; gloo runs the same job on CPUs.
        cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    if args.work_dir:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        name = osp.splitext(osp.basename(args.config.split('::')[-1]))[0]
        cfg.work_dir = osp.join('work_dirs', name + ('_mini' if args.mini else ''))
    try:
        check(cfg, loaders, None if args.mini else MINI_HINT.format(tool=tool, config=args.config))
    except PreflightError as err:
        sys.exit(str(err))
    return cfg, codebase


def exit_if_checkpoint_unusable(path, option):
    """Stop with one line, before anything is built, if the local checkpoint given as ``option`` is missing
    or damaged (mmengine would raise from deep inside the runner, after building the model and data)."""
    if '://' in path:  # http(s), s3 ...: mmengine's own loaders
        return
    problem = 'file not found' if not osp.isfile(path) else zip_checkpoint_problem(path)
    if problem:
        sys.exit(f'{option} {path}: {problem}')


def build_runner(cfg):
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    return RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
