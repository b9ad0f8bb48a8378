"""The `make demo` job: SSDLite-EMO-1M on the embedded mini COCO, end to end, with the real tools.

Each step is the command a user would type, printed before it runs:
train (tools/train.py --mini), evaluate (tools/test.py --mini), draw predictions (tools/infer.py).
"""
import argparse
import glob
import os
import re
import shlex
import subprocess
import sys
import time

CONFIG = 'configs/det/ssdlite_emo_1m.py'


def run(cmd):
    print('\n$ ' + ' '.join(shlex.quote(str(c)) for c in cmd), flush=True)
    proc = subprocess.run([sys.executable, *cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env={**os.environ, 'PYTHONUNBUFFERED': '1'})
    if proc.returncode != 0:
        print(proc.stdout[-6000:])
        sys.exit(f'demo step failed (exit {proc.returncode}): {" ".join(map(str, cmd))}')
    return proc.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--config', default=CONFIG)
    parser.add_argument('--epochs', type=int, default=5,
                        help='training epochs on the mini set (20 iterations of 8 images each)')
    parser.add_argument('--work-dir', default='work_dirs/demo_ssdlite_emo_1m')
    args = parser.parse_args()
    start = time.time()

    run(['tools/make_mini_data.py'])
    train_log = run(['tools/train.py', args.config, '--mini', '--work-dir', args.work_dir,
                     '--cfg-options', f'train_cfg.max_epochs={args.epochs}'])
    losses = re.findall(r'\bloss: ([\d.]+)', train_log)
    if losses:
        print(f'training loss: first logged {losses[0]}, last logged {losses[-1]}')
    ckpt = os.path.join(args.work_dir, f'epoch_{args.epochs}.pth')

    test_log = run(['tools/test.py', args.config, ckpt, '--mini', '--work-dir', args.work_dir])
    metrics = re.search(r'coco/bbox_mAP: (\S+) +coco/bbox_mAP_50: (\S+) +coco/bbox_mAP_75: (\S+)', test_log)

    images = sorted(glob.glob('data/mini/coco/val2017/*.jpg'))[:4]
    pictures = os.path.join(args.work_dir, 'predictions')
    # a few minutes from scratch gives low scores: draw what clears 0.05
    run(['tools/infer.py', args.config, ckpt, *images, '--out-dir', pictures, '--score-thr', '0.05'])

    print('\n================ emo_mm demo ================')
    print(f'model       : SSDLite-EMO-1M ({args.config}), {args.epochs} epochs on mini COCO, from scratch')
    if metrics:
        print(f'bbox mAP    : {metrics.group(1)}  (AP50 {metrics.group(2)}, AP75 {metrics.group(3)})')
    else:
        print('bbox mAP    : not found in the test output (see the log above)')
    print(f'checkpoint  : {ckpt}')
    print(f'pictures    : {pictures}/ ({len(images)} val images with detections drawn)')
    print(f'wall time   : {time.time() - start:.0f} s')


if __name__ == '__main__':
    main()
