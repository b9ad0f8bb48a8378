"""Train any mmdet / mmseg / mmpretrain config (ours or a user's) with emo_mm available.

    python tools/train.py configs/det/ssdlite_emo_5m.py
    python tools/train.py configs/det/ssdlite_emo_1m.py --mini          # embedded mini COCO
    python tools/train.py CONFIG --resume [CKPT] --amp --cfg-options k=v

Checkpoints are written atomically and ``--resume`` continues exactly where the last complete checkpoint
left off (docs/cluster.md: what is guaranteed).
"""
import argparse
import sys
import warnings

# mmengine 0.10.7 imports pkg_resources at import time; the deprecation notice is not the user's business
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

import emo_mm  # noqa: F401  (registers models, activates the compatibility layer)
from emo_mm.checkpointing import (enable_atomic_checkpoints, enable_exact_resume, find_resumable_checkpoint,
                                  keep_seed_of_resumed_run, remove_partial_files)
from emo_mm.compat import CheckpointError
from emo_mm.data_checks import exit_on_bad_data, guard_pipelines
from emo_mm.distributed import finish_distributed_run, setup_cpu_distributed
from emo_mm.launch import add_common_args, build_runner, exit_if_checkpoint_unusable, prepare_config


def parse_args():
    parser = argparse.ArgumentParser(description='Train a detector, segmentor or classifier')
    parser.add_argument('config', help='config file (also mmdet::/mmseg::/mmpretrain:: paths)')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from CKPT, or from the latest complete checkpoint in the work dir if no path')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the LR by (total batch / auto_scale_lr.base_batch_size)')
    add_common_args(parser)
    return parser.parse_args()


def main():
    args = parse_args()
    cfg, _ = prepare_config(args, 'tools/train.py', ('train_dataloader', 'val_dataloader'))
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise SystemExit('--auto-scale-lr needs auto_scale_lr.base_batch_size in the config')
        cfg.auto_scale_lr.enable = True
    setup_cpu_distributed(cfg)
    # the loaders this run reads (tools/test.py guards the test pipeline when it runs)
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
    try:
        keep_seed_of_resumed_run(cfg)
    except (OSError, CheckpointError) as err:  # --resume CKPT that is missing or unreadable
        sys.exit(f'--resume: {err}')
    with exit_on_bad_data():
        build_runner(cfg).train()
    finish_distributed_run()


if __name__ == '__main__':
    main()
