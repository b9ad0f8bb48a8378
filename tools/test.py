"""Evaluate a checkpoint of any mmdet / mmseg / mmpretrain config.

    python tools/test.py configs/det/ssdlite_emo_5m.py work_dirs/ssdlite_emo_5m/epoch_120.pth
    python tools/test.py CONFIG CKPT --mini --show-dir vis --out preds.pkl
"""
import argparse
import warnings

# mmengine 0.10.7 imports pkg_resources at import time; the deprecation notice is not the user's business
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

import emo_mm  # noqa: F401  (registers models, activates the compatibility layer)
from emo_mm.codebase import configure_seg_out, enable_dump, enable_show_dir
from emo_mm.data_checks import exit_on_bad_data, guard_pipelines
from emo_mm.distributed import finish_distributed_run, setup_cpu_distributed
from emo_mm.launch import add_common_args, build_runner, exit_if_checkpoint_unusable, prepare_config


def parse_args():
    parser = argparse.ArgumentParser(description='Test (evaluate) a checkpoint')
    parser.add_argument('config', help='config file (also mmdet::/mmseg::/mmpretrain:: paths)')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='dump predictions: .pkl file (det/cls) or directory of PNGs (seg)')
    parser.add_argument('--show-dir', help='draw predictions into this directory (relative to the work dir)')
    add_common_args(parser)
    return parser.parse_args()


def main():
    args = parse_args()
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


if __name__ == '__main__':
    main()
