"""Export a backbone or classifier config to ONNX and check it with onnxruntime at another size.

    python tools/export_onnx.py CONFIG [CKPT] [--out FILE] [--shape H W] [--deploy] [--opset 17]
                                [--check-shape H W] [--check-batch 2] [--cfg-options k=v ...]

Classifiers export their logits, backbones their feature tuple. Batch, height and width are dynamic axes.
``--deploy`` calls ``switch_to_deploy()`` on the backbone first. After exporting, the file is run with
onnxruntime at the export size (batch 1) and at ``--check-shape`` with batch ``--check-batch`` (default
256x320, batch 2) and the max abs difference to PyTorch is printed.
"""
import argparse
import os.path as osp
import sys
import warnings

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

from mmengine.config import DictAction  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Export a backbone / classifier to ONNX')
    p.add_argument('config', help='config file path')
    p.add_argument('checkpoint', nargs='?', default=None, help='checkpoint (optional; random init otherwise)')
    p.add_argument('--out', default=None, help='output .onnx (default: <config name>[_deploy].onnx)')
    p.add_argument('--shape', type=int, nargs=2, default=[224, 224], metavar=('H', 'W'), help='export size')
    p.add_argument('--deploy', action='store_true', help='switch_to_deploy() on the backbone before export')
    p.add_argument('--opset', type=int, default=17, help='ONNX opset (>= 17)')
    p.add_argument('--check-shape', type=int, nargs=2, default=[256, 320], metavar=('H', 'W'))
    p.add_argument('--check-batch', type=int, default=2)
    p.add_argument('--no-check', action='store_true', help='skip the onnxruntime check')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings, key=value')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.opset < 17:
        raise SystemExit('--opset must be >= 17')
    from emo_mm.builder import build_model, switch_to_deploy
    from emo_mm.onnx_export import check_onnx, export_onnx
    model, kind, _ = build_model(args.config, args.cfg_options)
    if kind not in ('backbone', 'classifier'):
        raise SystemExit(f'only backbones and classifiers are exported (this config is a {kind})')
    if args.checkpoint:
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, args.checkpoint, map_location='cpu')
    if args.deploy:
        switch_to_deploy(model)
    model.eval()
    out = args.out or osp.splitext(osp.basename(args.config))[0] + ('_deploy' if args.deploy else '') + '.onnx'
    names, tracer = export_onnx(model, kind, out, tuple(args.shape), opset=args.opset)
    print(f'Exported {kind} ({"deploy" if args.deploy else "plain"}) to {out}: outputs {names}, opset '
          f'{args.opset}, dynamic axes batch/height/width')
    for line in tracer:
        print(f'  tracer warning (value frozen into the graph): {line}')
    if args.no_check:
        return
    for shape, batch in ((tuple(args.shape), 1), (tuple(args.check_shape), args.check_batch)):
        try:
            diff, scale = check_onnx(model, kind, out, shape, batch)
        except Exception as e:  # e.g. a Reshape that was frozen to the export size
            print(f'onnxruntime FAILED at batch {batch}, {shape[0]}x{shape[1]}: {str(e).splitlines()[0][:500]}')
            raise SystemExit(1)
        print(f'onnxruntime vs PyTorch at batch {batch}, {shape[0]}x{shape[1]}: max abs diff {diff:.3e} '
              f'(max |output| {scale:.3e}, relative {diff / max(scale, 1e-30):.2e})')


if __name__ == '__main__':
    main()
