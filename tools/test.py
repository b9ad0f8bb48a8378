"""Evaluate a checkpoint of any mmdet / mmseg / mmpretrain config.

    python tools/test.py configs/det/ssdlite_emo_5m.py work_dirs/ssdlite_emo_5m/epoch_120.pth
    python tools/test.py CONFIG CKPT --mini --show-dir vis --out preds.pkl
"""
import argparse

from emo_mm.apis import add_common_args, test


def parse_args():
    parser = argparse.ArgumentParser(description='Test (evaluate) a checkpoint')
    parser.add_argument('config', help='config file (also mmdet::/mmseg::/mmpretrain:: paths)')
    parser.add_argument('checkpoint', help='checkpoint file (a path or a URL)')
    parser.add_argument('--out', help='dump predictions: .pkl file (det/cls) or directory of PNGs (seg)')
    parser.add_argument('--show-dir', help='draw predictions into this directory (relative to the work dir)')
    add_common_args(parser)
    return parser.parse_args()


if __name__ == '__main__':
    test(parse_args())
