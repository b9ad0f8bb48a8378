"""Draw what a trained detector or segmentor predicts on your own images.

    python tools/infer.py CONFIG CHECKPOINT IMAGE [IMAGE ...] [--out-dir DIR] [--score-thr 0.3] [--mini]

    python tools/infer.py configs/det/ssdlite_emo_1m.py work_dirs/ssdlite_emo_1m/epoch_120.pth demo.jpg
    python tools/infer.py configs/seg/deeplabv3_emo_1m.py work_dirs/.../iter_80000.pth a.png b.jpg
    python tools/infer.py ssdlite_emo_1m.onnx demo.jpg      # a tools/deployment/export_onnx.py file, in onnxruntime

Detectors (config default_scope 'mmdet') get boxes with class names and scores drawn (Mask R-CNN:
the instance masks too), segmentors ('mmseg') a colour overlay of the predicted classes. One picture
per input is written as ``<out-dir>/<input name>.jpg`` and its path printed. Inputs may have any size and aspect ratio;
grayscale, grayscale+alpha, RGBA and 16-bit files are converted to 8-bit 3-channel BGR first (alpha is
dropped) and the conversion is printed. A missing or unreadable image stops the run with its name.
"""
import argparse
import sys


def parse_args():
    parser = argparse.ArgumentParser(description='Run a detector / segmentor on image files and draw the result',
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('config', help='config file (detector or segmentor), or a .onnx from tools/deployment/export_onnx.py')
    # optional for argparse only: after a .onnx the second positional is the first image
    parser.add_argument('checkpoint', nargs='?', help="trained checkpoint (.pth); 'none' = random weights "
                        "(smoke test); no checkpoint after a .onnx")
    parser.add_argument('images', nargs='*', help='image files')
    parser.add_argument('--out-dir', default='outputs/infer', help='where the pictures go (default: %(default)s)')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='detectors: draw boxes with score >= this (default: %(default)s)')
    parser.add_argument('--opacity', type=float, default=0.5,
                        help='segmentors: opacity of the colour overlay (default: %(default)s)')
    parser.add_argument('--device', default=None, help="'cpu', 'cuda', 'cuda:1' (default: cuda if available)")
    parser.add_argument('--mini', action='store_true',
                        help='use the config as tools/train.py --mini does (mini dataset paths and metadata)')
    return parser.parse_args()


def main():
    args = parse_args()
    if args.config.endswith('.onnx'):  # MODEL.onnx IMAGE...: the second positional is an image
        args.images = [args.checkpoint, *args.images] if args.checkpoint else []
        args.checkpoint = 'none'
        if not args.images:
            sys.exit(f'error: no image files given after {args.config} (MODEL.onnx IMAGE [IMAGE ...])')
    elif args.checkpoint is None:
        sys.exit(f"error: no checkpoint given after {args.config} (CONFIG CHECKPOINT IMAGE [IMAGE ...]; "
                 "'none' = random weights)")
    elif not args.images:
        sys.exit('error: no image files given (CONFIG CHECKPOINT IMAGE [IMAGE ...])')
    from emo_mm.apis import ImageReadError, infer
    ckpt = None if args.checkpoint.lower() == 'none' else args.checkpoint
    try:
        results = infer(args.config, ckpt, args.images, out_dir=args.out_dir, score_thr=args.score_thr,
                        device=args.device, mini=args.mini, opacity=args.opacity)
    except (ImageReadError, FileNotFoundError) as err:
        sys.exit(f'error: {err}')
    for res in results:
        conv = f' [converted: {res.converted}]' if res.converted else ''
        h, w = res.shape
        if res.num_instances is not None:
            names = ', '.join(sorted(set(res.labels))) or '-'
            what = f'{res.num_instances} boxes with score >= {args.score_thr} ({names})'
            if res.num_masks is not None:
                what += f', {res.num_masks} instance masks'
        else:
            what = 'classes: ' + (', '.join(res.labels[:8]) + (' ...' if len(res.labels) > 8 else ''))
        print(f'{res.image} ({w}x{h}){conv}: {what}\n  -> {res.out_file}')
    print(f'wrote {len(results)} picture(s) to {args.out_dir}')


if __name__ == '__main__':
    main()
