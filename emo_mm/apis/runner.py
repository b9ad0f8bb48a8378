"""What ``tools/train.py`` and ``tools/test.py`` do: flags, config preparation, runner build, train / test.

Both tools take any mmdet / mmseg / mmpretrain config (ours or a user's, ``mmdet::`` paths included) and
behave like the codebase's own tools. On top of them: ``--mini`` (the embedded datasets), a preflight that
names a missing dataset or checkpoint before anything is built, atomic checkpoints and exact resume, the
loading guard that names a broken image, and CPU distributed runs (gloo).
"""
import importlib
import os
import os.path as osp
import sys

import torch
from mmengine.config import Config, DictAction

from emo_mm.apis.preflight import PreflightError, check
from emo_mm.datasets import MINI_ROOT, apply_mini, exit_on_bad_data, guard_pipelines
from emo_mm.engine import (enable_atomic_checkpoints, enable_exact_resume, find_resumable_checkpoint,
                           finish_distributed_run, keep_seed_of_resumed_run, remove_partial_files,
                           setup_cpu_distributed)
from emo_mm.utils import CheckpointError, codebase_of, zip_checkpoint_problem
from emo_mm.utils.checkpoint_io import DownloadError, fetch_checkpoint, is_url

MINI_HINT = ('To try this config on the embedded mini datasets instead:\n'
             '  python tools/misc/make_mini_data.py && python {tool} {config} --mini')


def add_common_args(parser):
    parser.add_argument('--work-dir', help='directory for logs and checkpoints')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config values, key=value (applied after --mini)')
    parser.add_argument('--mini', action='store_true',
                        help=f'run on the embedded mini datasets under {MINI_ROOT}/ with a short schedule '
                             '(model and pipeline unchanged). A smoke test: it shows that the config builds, '
                             'trains (loss falls), checkpoints and evaluates. It cannot show accuracy: the '
                             'mini sets are synthetic shapes, and the run starts from scratch (pretrained weights '
                             'given by URL are not downloaded unless --cfg-options names them), so its held-out '
                             'scores say little (SSDLite-EMO-1M: bbox mAP '
                             '~0.001-0.01); '
                             'docs/learning_evidence.md and `make demo` show that each task learns, by '
                             'memorising a few training images')
    parser.add_argument('--compile', action='store_true',
                        help="torch.compile the model's forward (the same as --cfg-options compile=True, mmengine's "
                             'setting; a dict of torch.compile options also works), in training and testing; the '
                             'first iterations are slow while TorchInductor compiles (minutes on a few CPU cores)')
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
                   iters=_positive_int(opts.get('train_cfg.max_iters')), pretrained_options=list(opts))
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if getattr(args, 'compile', False) and not cfg.get('compile'):
        cfg.compile = True  # a dict of options given with --cfg-options compile.backend=... etc. stays
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
    """Stop with one line, before anything is built, if the checkpoint given as ``option`` is missing or
    damaged (mmengine would raise from deep inside the runner, after building the model and data). An http(s)
    URL is fetched into the torch hub cache now (the runner's load then finds it there)."""
    shown = path
    if is_url(path):
        try:
            path = fetch_checkpoint(path)
        except DownloadError as err:
            sys.exit(f'{option}: {err}')
        shown = f'{shown} (cached as {path}; delete that file to download it again)'
    elif '://' in path:  # s3, open-mmlab ...: mmengine's own loaders
        return
    problem = 'file not found' if not osp.isfile(path) else zip_checkpoint_problem(path)
    if problem:
        sys.exit(f'{option} {shown}: {problem}')


# mmengine 0.10.7's own CheckpointHook warns about its own deprecated FileClient on every run: noise for users
_UPSTREAM_NOISE = ('"FileClient" will be deprecated', '"HardDiskBackend" is the alias of "LocalBackend"')


def _not_upstream_noise(record):
    return not str(record.msg).startswith(_UPSTREAM_NOISE)


def build_runner(cfg):
    """The config's runner, its model's forward compiled when ``cfg.compile`` asks for it (see
    :func:`take_compile_options`)."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    options = take_compile_options(cfg)
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    runner.logger.addFilter(_not_upstream_noise)
    compile_model(runner, options)
    return runner


def train(args):
    """``tools/train.py``: ``args`` from a parser with :func:`add_common_args` plus ``config``, ``resume``,
    ``amp`` and ``auto_scale_lr``."""
    cfg, _ = prepare_config(args, 'tools/train.py', ('train_dataloader', 'val_dataloader'))
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise SystemExit('--auto-scale-lr needs auto_scale_lr.base_batch_size in the config')
        cfg.auto_scale_lr.enable = True
    setup_cpu_distributed(cfg)
    # the loaders this run reads (the test run guards the test pipeline when it runs)
    guard_pipelines(cfg, ('train_dataloader', 'val_dataloader'))
    enable_atomic_checkpoints()
    enable_exact_resume(cfg)
    if args.resume == 'auto':
        remove_partial_files(cfg.work_dir)
        cfg.load_from = find_resumable_checkpoint(cfg.work_dir)
        cfg.resume = cfg.load_from is not None  # nothing complete to resume from: start from scratch
    elif args.resume is not None:
        exit_if_checkpoint_unusable(args.resume, '--resume')
        cfg.resume, cfg.load_from = True, args.resume
    elif isinstance(cfg.get('load_from'), str):
        exit_if_checkpoint_unusable(cfg.load_from, 'load_from')
    try:
        keep_seed_of_resumed_run(cfg)
    except (OSError, CheckpointError) as err:  # --resume CKPT that is missing or unreadable
        sys.exit(f'--resume: {err}')
    with exit_on_bad_data():
        build_runner(cfg).train()
    finish_distributed_run()


def test(args):
    """``tools/test.py``: ``args`` from a parser with :func:`add_common_args` plus ``config``, ``checkpoint``,
    ``out`` and ``show_dir``."""
    cfg, codebase = prepare_config(args, 'tools/test.py', ('test_dataloader',))
    exit_if_checkpoint_unusable(args.checkpoint, 'checkpoint')
    cfg.load_from = args.checkpoint
    setup_cpu_distributed(cfg)
    guard_pipelines(cfg, ('test_dataloader',))
    if args.show_dir:
        enable_show_dir(cfg, codebase, args.show_dir)
    if args.out and codebase == 'mmseg':
        configure_seg_out(cfg, args.out)
    runner = build_runner(cfg)
    if args.out and codebase != 'mmseg':
        enable_dump(cfg, runner, codebase, args.out)
    with exit_on_bad_data():
        runner.test()
    finish_distributed_run()


def take_compile_options(cfg):
    """Remove ``cfg.compile`` and return it as torch.compile's keyword arguments (None: not compiled).

    mmengine 0.10's Runner compiles the whole ``train_step`` when ``cfg.compile`` is set (in ``train()``), optimizer
    step included, and Dynamo (torch 2.14) fails inside ``AdamW.step`` on mmengine's param groups
    (``InternalTorchDynamoError: 'UserDefinedDictVariable' object has no attribute 'items'``); it compiles nothing
    for testing. The tools take the setting out of the config before the Runner sees it and compile the model's
    ``forward`` instead (:func:`compile_model`): the network and its losses, in training and testing alike."""
    options = cfg.pop('compile', None)
    if not options:
        return None
    return {} if options is True else dict(options)


def compile_model(runner, options):
    """``torch.compile(model.forward, **options)`` on the runner's model (inside a DDP wrapper, the module)."""
    if options is None:
        return
    model = getattr(runner.model, 'module', runner.model)
    model.forward = torch.compile(model.forward, **options)
    runner.logger.info(f'model.forward compiled with torch.compile({options}): the first iterations are slow')


# What differs between the codebases for the test tool: drawing predictions and dumping them.
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
