"""Train any mmdet / mmseg / mmpretrain config (ours or a user's) with emo_mm available.

    python tools/train.py configs/det/ssdlite_emo_5m.py
    python tools/train.py configs/det/ssdlite_emo_1m.py --mini          # embedded mini COCO
    python tools/train.py CONFIG --resume [CKPT] --amp --cfg-options k=v

Checkpoints are written atomically and ``--resume`` continues exactly where the last complete checkpoint
left off (docs/cluster.md: what is guaranteed).
"""
import argparse

from emo_mm.apis import add_common_args, train


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


if __name__ == '__main__':
    train(parse_args())
