"""Export a config (classifier, backbone, detector or segmentor) to ONNX and check it with onnxruntime.

    python tools/deployment/export_onnx.py CONFIG [CKPT] [--out FILE] [--shape H W] [--deploy] [--opset 17]
                                [--check-shape H W] [--check-batch 2] [--check-images IMG ...]
                                [--seg-output seg|seg_logits] [--lively-init] [--cfg-options k=v ...]

Classifiers export their logits, backbones their feature tuple; both are checked against PyTorch on random
input at the export size (batch 1) and at ``--check-shape`` with batch ``--check-batch``.

Detectors (one-stage anchor heads: SSDLite, RetinaNet) export ONE graph from the preprocessed image to the
final detections: ``dets`` (N, K, 5: x1 y1 x2 y2 score, input pixels) and ``labels`` (N, K), K = the
config's ``max_per_img``, rows past the detections padded with score 0 / label -1; box decoding, score
threshold, ``nms_pre`` and per-class NMS (ONNX NonMaxSuppression) are in the graph. Segmentors export the
class map ``seg`` (N, H, W) at the input size (``--seg-output seg_logits``: the logits). Batch, height and
width are dynamic for all (SSDLite runs at other sizes too, but was trained at its fixed 320 / 512).
The config's test preprocessing, class names and palette are stored as metadata, so that
``emo_mm.deploy.OnnxModel`` and ``tools/infer.py model.onnx IMAGE`` run images of any size. Detectors and
segmentors are checked on real images (``--check-images``; default: the first two of data/mini), preprocessed
as the config does, against the model's own ``predict``. Random weights detect nothing; ``--lively-init``
gives seeded weights with varied outputs (for checks and benchmarks, see emo_mm.testing.lively_init).
``--deploy`` calls ``switch_to_deploy()`` on the backbone first.

Two-stage detectors (Mask R-CNN, Faster R-CNN: RPNHead + StandardRoIHead) export the same way, RPN, RoIAlign
(opset 16's half-pixel mode), bbox head, NMS and mask head in the one graph (emo_mm.deploy.two_stage), with a
third output ``masks`` (N, K, 28, 28): each detection's mask probabilities at RoI size; ``emo_mm.deploy``
pastes them into the image (mmdet's bilinear paste, ``mask_thr_binary``). The check also compares the pasted
masks of the matched detections pixel by pixel (>= 99.9% equal).
"""
import argparse
import os
import os.path as osp

from mmengine.config import DictAction


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Export a model to ONNX and check it against PyTorch in onnxruntime')
    p.add_argument('config', help='config file path (or a stock one: mmdet::ssd/..., mmseg::...)')
    p.add_argument('checkpoint', nargs='?', default=None, help='checkpoint (optional; random init otherwise)')
    p.add_argument('--out', default=None, help='output .onnx (default: <config name>[_deploy].onnx)')
    p.add_argument('--shape', type=int, nargs=2, default=None, metavar=('H', 'W'),
                   help="export size (default: the config's test size; 224 for classifiers)")
    p.add_argument('--deploy', action='store_true', help='switch_to_deploy() on the backbone before export')
    p.add_argument('--opset', type=int, default=17, help='ONNX opset (>= 17)')
    p.add_argument('--check-shape', type=int, nargs=2, default=[256, 320], metavar=('H', 'W'))
    p.add_argument('--check-batch', type=int, default=2)
    p.add_argument('--check-images', nargs='+', default=None,
                   help='detectors / segmentors: images for the check (default: two of data/mini)')
    p.add_argument('--seg-output', choices=['seg', 'seg_logits'], default='seg',
                   help='segmentors: class map (default) or logits at the input size')
    p.add_argument('--static', action='store_true',
                   help='detectors / segmentors: fixed batch (--batch) and size (--shape): onnxruntime folds the '
                   'shape arithmetic (faster); emo_mm.deploy.OnnxModel pads images to that size')
    p.add_argument('--batch', type=int, default=1, help='batch of a --static export')
    p.add_argument('--lively-init', action='store_true',
                   help='no checkpoint: seeded weights whose outputs vary (random init detects nothing)')
    p.add_argument('--no-check', action='store_true', help='skip the onnxruntime check')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings, key=value')
    return p.parse_args(argv)


REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/deployment/ -> repo
MINI_IMAGES = {'detector': 'data/mini/coco/val2017', 'segmentor': 'data/mini/ade/ADEChallengeData2016/images/validation'}


def default_check_images(kind):
    root = osp.join(REPO_ROOT, MINI_IMAGES[kind])
    files = sorted(f for f in os.listdir(root) if f.lower().endswith(('.jpg', '.png'))) if osp.isdir(root) else []
    if not files:
        raise SystemExit(f'no check images: {root} is missing or empty (python tools/misc/make_mini_data.py, or '
                         f'--check-images IMG ...)')
    return [osp.join(root, f) for f in files[:2]]


def load_weights(model, checkpoint):
    """Load ``checkpoint``; returns its ``dataset_meta`` (classes, palette) when it has one."""
    from mmengine.runner import load_checkpoint
    ckpt = load_checkpoint(model, checkpoint, map_location='cpu')
    meta = ckpt.get('meta', {}) if isinstance(ckpt, dict) else {}
    return meta.get('dataset_meta') or ({'classes': meta['CLASSES']} if meta.get('CLASSES') else None)


def check_end_to_end(model, kind, out, images, batch_size):
    """Compare onnxruntime with the model's predict on real images, one at a time and as one padded batch."""
    import torch
    from emo_mm.apis import read_image_bgr
    from emo_mm.deploy import OnnxModel, compare_end_to_end, disagreements
    onnx = OnnxModel(out)
    fixed = onnx.meta.get('fixed_input')  # --static: one batch of exactly that size
    imgs = [read_image_bgr(f)[0] for f in images]
    groups = [(imgs * fixed[0])[:fixed[0]]] if fixed else \
        [[img] for img in imgs] + [(imgs * batch_size)[:max(batch_size, 2)]]
    failed = False
    for group in groups:
        x, _ = onnx.preprocess.batch(group, fixed[1:] if fixed else None)
        res = compare_end_to_end(model, kind, out, torch.from_numpy(x))
        where = f'batch {x.shape[0]}, {x.shape[2]}x{x.shape[3]}'
        if kind == 'detector':
            n, m = sum(r['pytorch'] for r in res), sum(r['matched'] for r in res)
            o = sum(r['onnx'] for r in res)
            err = max(r['box_rel_err'] for r in res)
            u = sum(r['unexplained'] for r in res)
            print(f'onnxruntime vs PyTorch predict at {where}: {o} / {n} detections, {m} matched (same label, '
                  f'box within 1e-3 relative; max rel diff {err:.1e}), {n - m} unmatched, {u} of them not '
                  f'explained by an NMS tie')
            if 'mask_pixels' in res[0] and m:  # Mask R-CNN: the matched detections' pasted masks
                px, eq = sum(r['mask_pixels'] for r in res), sum(r['mask_equal'] for r in res)
                worst = min(r['mask_min_equal'] for r in res)
                print(f'  masks of the {m} matched detections: {100 * eq / max(px, 1):.4f}% of pasted pixels equal '
                      f'(worst detection {100 * worst:.3f}%)')
        else:
            n = sum(r['pixels'] for r in res)
            eq = sum(r['equal'] for r in res) / n
            print(f'onnxruntime vs PyTorch predict at {where}: {100 * eq:.3f}% of pixels equal')
        for problem in disagreements(kind, res):
            print(f'  {problem}')
            failed = True
    if failed:
        print('MISMATCH: onnxruntime and PyTorch disagree beyond the tolerance (NMS ties aside)')
        raise SystemExit(1)


def main(argv=None):
    args = parse_args(argv)
    if args.opset < 17:
        raise SystemExit('--opset must be >= 17')
    from emo_mm.apis import resolve_config_path
    from emo_mm.deploy import check_onnx, export_end_to_end, export_onnx
    from emo_mm.models import build_model, default_input_shape, switch_to_deploy
    from emo_mm.testing import lively_init
    model, kind, cfg = build_model(resolve_config_path(args.config), args.cfg_options)
    dataset_meta = None
    if args.checkpoint:
        dataset_meta = load_weights(model, args.checkpoint)
    elif args.lively_init:
        lively_init(model)
    if args.deploy:
        switch_to_deploy(model)
    model.eval()
    shape = tuple(args.shape) if args.shape else default_input_shape(cfg, kind)
    out = args.out or osp.splitext(osp.basename(args.config))[0] + ('_deploy' if args.deploy else '') + '.onnx'
    if kind in ('detector', 'segmentor'):
        from emo_mm.deploy import deploy_metadata
        try:
            meta = deploy_metadata(cfg, model, kind, dataset_meta, config=osp.basename(args.config),
                                   deploy=bool(args.deploy))
            names, tracer = export_end_to_end(model, kind, out, shape, opset=args.opset, metadata=meta,
                                              seg_output=args.seg_output, static=args.static, batch=args.batch)
        except NotImplementedError as e:
            raise SystemExit(f'cannot export {args.config}: {e}')
    else:
        names, tracer = export_onnx(model, kind, out, shape, opset=args.opset)
    print(f'Exported {kind} ({"deploy" if args.deploy else "plain"}) to {out}: outputs {names}, opset '
          f'{args.opset}, exported at {shape[0]}x{shape[1]}, ' +
          (f'fixed input {args.batch}x3x{shape[0]}x{shape[1]}' if args.static else 'dynamic axes batch/height/width'))
    for line in tracer:
        print(f'  tracer warning (value frozen into the graph): {line}')
    if args.no_check:
        return
    if kind in ('detector', 'segmentor'):
        check_end_to_end(model, kind, out, args.check_images or default_check_images(kind), args.check_batch)
        return
    for shape, batch in ((shape, 1), (tuple(args.check_shape), args.check_batch)):
        try:
            diff, scale = check_onnx(model, kind, out, shape, batch)
        except Exception as e:  # e.g. a Reshape that was frozen to the export size
            print(f'onnxruntime FAILED at batch {batch}, {shape[0]}x{shape[1]}: {str(e).splitlines()[0][:500]}')
            raise SystemExit(1)
        print(f'onnxruntime vs PyTorch at batch {batch}, {shape[0]}x{shape[1]}: max abs diff {diff:.3e} '
              f'(max |output| {scale:.3e}, relative {diff / max(scale, 1e-30):.2e})')


if __name__ == '__main__':
    main()
