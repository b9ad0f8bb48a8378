"""Print the papers' result tables for finished runs: ours beside the published numbers.

    python tools/analysis_tools/results_table.py WORK_DIR [WORK_DIR ...] [--metafile FILE ...] [--no-complexity]

    python tools/analysis_tools/results_table.py work_dirs/ssdlite_emo_1m work_dirs/retinanet_emov2_5m
    python tools/analysis_tools/results_table.py work_dirs/*  --no-complexity

For each work dir (of tools/train.py or tools/test.py) the final evaluation is read from mmengine's logs
(``<timestamp>/vis_data/scalars.json``) and the model is identified by the config the Runner dumped there
(``WORK_DIR/<config name>.py``), which is matched to ``configs/det/metafile.yml`` /
``configs/seg/metafile.yml`` (the only source of published numbers). Detection columns: params, FLOPs,
AP, AP50, AP75, APs, APm, APl (and mask AP for Mask R-CNN runs); segmentation: params, FLOPs, mIoU, aAcc,
mAcc. Each cell reads ``ours (published, difference)``. Our params/FLOPs are counted with
emo_mm.analysis.complexity (as tools/analysis_tools/get_flops.py) at the input size the metafile gives; ``--no-complexity``
skips that. A work dir without a finished evaluation gets a line saying so. Exit status 1 if no work dir had a result.
"""
import argparse
import os.path as osp
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/analysis_tools/ -> repo


def parse_args():
    parser = argparse.ArgumentParser(description='Results of finished runs beside the published numbers',
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('work_dirs', nargs='+', help='work directories of finished runs')
    parser.add_argument('--metafile', nargs='+', default=None,
                        help='metafile(s) with the published numbers '
                             '(default: configs/det/metafile.yml and configs/seg/metafile.yml)')
    parser.add_argument('--no-complexity', action='store_true', help='do not count params / FLOPs')
    return parser.parse_args()


def main():
    args = parse_args()
    from emo_mm.analysis import build_table, default_metafiles, load_metafile, read_work_dir
    metafiles = args.metafile or default_metafiles(REPO_ROOT)
    published = {}
    for path in metafiles:
        if not osp.isfile(path):
            sys.exit(f'error: metafile not found: {path}')
        published.update(load_metafile(path))
    runs = [read_work_dir(w) for w in args.work_dirs]
    if not args.no_complexity and any(r.ok for r in runs):
        import emo_mm  # noqa: F401  (registers the backbones for the complexity count)
    print(build_table(runs, published, complexity=not args.no_complexity))
    for r in runs:
        if not r.ok:
            print(f'{r.work_dir}: no result: {r.problem}')
    if not any(r.ok for r in runs):
        sys.exit(1)


if __name__ == '__main__':
    main()
