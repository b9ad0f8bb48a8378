"""The `make demo` job: SSDLite-EMO-1M on the embedded mini COCO, end to end, with the real tools.

From scratch, a few CPU minutes cannot train EMO into a detector that generalises (docs/learning_evidence.md:
the reference EMO-1M gives the same near-zero mAP). What they can show is that the whole
loop learns: the demo trains on 8 mini COCO train images until it has memorised them, then evaluates and
draws twice, clearly apart: on those 8 training images (the fit) and on the 40 held-out val images.

Each step is the command a user would type, printed before it runs: train (tools/train.py --mini), evaluate
(tools/test.py --mini), draw predictions (tools/infer.py).
"""
import argparse
import glob
import os
import re
import shlex
import subprocess
import sys
import time

from emo_mm.testing import SSDLITE_FIT_EPOCHS, SSDLITE_FIT_LR, coco_fit_options, write_coco_subset

CONFIG = 'configs/det/ssdlite_emo_1m.py'
COCO = 'data/mini/coco'
FIT_IMAGES = 8
SIZE = 192


def run(cmd):
    print('\n$ ' + ' '.join(shlex.quote(str(c)) for c in ['python', *cmd]), flush=True)
    proc = subprocess.run([sys.executable, *cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env={**os.environ, 'PYTHONUNBUFFERED': '1'})
    if proc.returncode != 0:
        print(proc.stdout[-6000:])
        sys.exit(f'demo step failed (exit {proc.returncode}): {" ".join(map(str, cmd))}')
    return proc.stdout


def coco_metrics(log):
    """(mAP, AP50) of the last COCO evaluation in a tool's output; (0, 0) when no box cleared the threshold."""
    found = re.findall(r'coco/bbox_mAP: (\S+) +coco/bbox_mAP_50: (\S+)', log)
    if found:
        return tuple(map(float, found[-1]))
    if 'The testing results of the whole dataset is empty' in log:
        return 0., 0.
    sys.exit('no COCO evaluation found in the output above')


def draw(config, ckpt, images, out_dir, score_thr):
    log = run(['tools/infer.py', config, ckpt, *images, '--out-dir', out_dir, '--score-thr', str(score_thr)])
    return re.findall(r'^(\S+) \(\d+x\d+\).*?: (\d+) boxes', log, flags=re.M)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', default=CONFIG,
                        help='an SSDLite config (the fit options find its pipeline steps by type)')
    parser.add_argument('--epochs', type=int, default=SSDLITE_FIT_EPOCHS,
                        help='epochs over the 8 training images (one iteration of batch 8 each)')
    parser.add_argument('--lr', type=float, default=SSDLITE_FIT_LR, help='AdamW peak learning rate')
    parser.add_argument('--score-thr', type=float, default=0.3, help='draw boxes scoring at least this')
    parser.add_argument('--work-dir', default='work_dirs/demo_ssdlite_emo_1m')
    args = parser.parse_args()
    start = time.time()
    work = args.work_dir

    run(['tools/misc/make_mini_data.py'])
    os.makedirs(work, exist_ok=True)
    subset = write_coco_subset(f'{COCO}/annotations/instances_train2017.json',  # absolute: not under data_root
                               os.path.abspath(f'{work}/instances_fit{FIT_IMAGES}.json'), FIT_IMAGES)
    print(f'\nwrote {subset}: the first {FIT_IMAGES} mini COCO train images, the only ones trained on')
    fit = coco_fit_options(args.config, subset, SIZE)
    schedule = [f'train_cfg.max_epochs={args.epochs}', f'train_cfg.val_interval={args.epochs}',
                f'default_hooks.checkpoint.interval={args.epochs}', f'optim_wrapper.optimizer.lr={args.lr}']
    train_log = run(['tools/train.py', args.config, '--mini', '--work-dir', work, '--cfg-options', *fit, *schedule])
    losses = re.findall(r'\bloss: ([\d.]+)', train_log)
    ckpt = os.path.join(work, f'epoch_{args.epochs}.pth')
    on_subset = [f'test_dataloader.dataset.ann_file={subset}', 'test_dataloader.dataset.data_prefix.img=train2017/',
                 f'test_evaluator.ann_file={subset}']
    test = ['tools/test.py', args.config, ckpt, '--mini', '--cfg-options', *fit]
    fit_map = coco_metrics(run([*test, *on_subset, '--work-dir', f'{work}/test_fit']))
    val_map = coco_metrics(run([*test, '--work-dir', f'{work}/test_val']))
    # the config as trained (mini paths, 192x192 test pipeline), dumped by the Runner
    trained_config = os.path.join(work, os.path.basename(args.config))

    pictures = {'fitted train images': (f'{work}/predictions/fitted_train_images',
                                        sorted(glob.glob(f'{COCO}/train2017/*.jpg'))[:4]),
                'held-out val images': (f'{work}/predictions/held_out_val_images',
                                        sorted(glob.glob(f'{COCO}/val2017/*.jpg'))[:4])}
    drawn = {title: draw(trained_config, ckpt, images, out, args.score_thr)
             for title, (out, images) in pictures.items()}

    print('\n================ emo_mm demo ================')
    print(f'model    : SSDLite-EMO-1M ({args.config}), from scratch (no ImageNet weights), {SIZE}x{SIZE} input')
    print(f'training : {args.epochs} iterations on the first {FIT_IMAGES} mini COCO train images ONLY '
          f'(batch {FIT_IMAGES}, AdamW lr {args.lr}, cosine; Expand, MinIoURandomCrop and PhotoMetricDistortion '
          'off); loss ' + (f'{losses[0]} -> {losses[-1]}' if losses else 'not found in the log'))
    print(f'FIT      : bbox mAP {fit_map[0]:.3f} (AP50 {fit_map[1]:.3f}) on those same {FIT_IMAGES} training images'
          ' = memorisation: the pipeline learns what it is shown')
    print(f'HELD-OUT : bbox mAP {val_map[0]:.3f} (AP50 {val_map[1]:.3f}) on the 40 mini COCO val images it never saw'
          f' = low: {FIT_IMAGES} images from scratch do not generalise (README: "make demo")')
    for title, (out, _) in pictures.items():
        boxes = ', '.join(f'{os.path.basename(img)} {n}' for img, n in drawn[title])
        print(f'pictures : {out}/ ({title}; boxes scoring >= {args.score_thr}: {boxes})')
    print('           fitted: each box on its shape with the right class; held-out: boxes missing, misplaced or '
          'mislabelled (open the pictures)')
    print(f'checkpoint: {ckpt}')
    print(f'wall time : {time.time() - start:.0f} s')


if __name__ == '__main__':
    main()
