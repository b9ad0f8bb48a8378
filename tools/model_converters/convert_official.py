"""Convert an official EMO / EMOv2 ImageNet checkpoint to emo_mm's layout.

    python tools/model_converters/convert_official.py OFFICIAL.pth OUT.pth --arch emo-1m

The official file (flat or wrapped in 'net'/'net_E'/'state_dict'/'model', optional 'module.' prefixes) is
checked against the variant (keys and shapes, fails on another variant) and written as
{'meta': {'arch', 'source'}, 'state_dict': {'backbone.<official key>': ..., 'head.fc.weight/bias': ...}},
usable by mmpretrain's ImageClassifier and by the backbones' init_cfg=dict(type='Pretrained', checkpoint=OUT).
"""
import argparse
import sys

from emo_mm.models import ARCH_NAMES, convert_official


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('official', help='official checkpoint (.pth)')
    parser.add_argument('out', help='converted checkpoint to write')
    parser.add_argument('--arch', required=True, choices=ARCH_NAMES, type=str.lower, help='model variant')
    args = parser.parse_args(argv)
    try:
        summary = convert_official(args.official, args.out, args.arch)
    except (OSError, RuntimeError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    print(f"converted {args.official} -> {args.out} ({summary['arch']}): {summary['tensors']} tensors "
          f"({summary['backbone_tensors']} backbone, {summary['head_tensors']} head), "
          f"{summary['params'] / 1e6:.3f}M parameters")
    return 0


if __name__ == '__main__':
    sys.exit(main())
