"""Parameters and FLOPs of any emo_mm / OpenMMLab config, counted as the EMO papers did.

    python tools/analysis_tools/get_flops.py CONFIG [--shape H [W]] [--cfg-options k=v ...] [--detail [--depth N]]

CONFIG may be an mmpretrain classifier, an mmdet detector, an mmseg segmentor, or a config whose ``model``
is a bare backbone dict (e.g. ``model = dict(type='emo_mm.EMO', arch='1m')``). No checkpoint is loaded.
FLOPs follow fvcore (mmengine.analysis): one multiply-add = one FLOP, eval-mode model, attention matmuls
counted, activations / softmax / elementwise ops not counted (see emo_mm/analysis/complexity.py).
"""
import argparse

from mmengine.config import DictAction

from emo_mm.analysis import format_complexity, get_complexity


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Params and FLOPs of a config (fvcore-style counting)')
    p.add_argument('config', help='config file path')
    p.add_argument('--shape', type=int, nargs='+', default=None,
                   help='input H [W]; default: from the config (cls 224, SSDLite 320, seg 512, det 800x1333)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings, key=value')
    p.add_argument('--no-aux-head', action='store_true',
                   help="segmentors: drop the auxiliary head before counting params (mmseg 1.x get_flops; "
                        "default counts it, like mmseg 0.x)")
    p.add_argument('--detail', action='store_true', help='print the per-module breakdown')
    p.add_argument('--depth', type=int, default=3, help='module depth of the --detail table')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.shape is not None and len(args.shape) not in (1, 2):
        raise SystemExit('--shape takes H or H W')
    res = get_complexity(args.config, args.shape, args.cfg_options, detail=args.detail, max_depth=args.depth,
                         no_aux_head=args.no_aux_head)
    print('=' * 40)
    print(format_complexity(res))
    print('=' * 40)


if __name__ == '__main__':
    main()
