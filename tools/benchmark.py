"""CPU throughput (images/s) of the EMO / EMOv2 classifiers and mmpretrain peers of similar size.

    python tools/benchmark.py [--models NAME ...] [--batch 1 16] [--sizes 224 320 512] [--threads N]
                              [--repeats 9] [--min-time 0.2] [--allocator keep|default] [--quick]

Every model runs in eval mode under ``torch.inference_mode()`` in one process, EMO variants both plain and
deploy (``switch_to_deploy()``). For each (model, mode, batch, size) NCHW and channels_last are probed (warm-up,
two timed runs each, in the order A B B A) and the faster layout is kept; then every model is timed
``--repeats`` times round-robin, each run lasting at least ``--min-time`` s, and the median is reported.
Round-robin spreads load changes of a shared machine over all models alike; every other round runs in reverse
order, because a model timed right after another measures a few % apart from the same model timed right before
it. The table gives images/s, the layout used and the ratio to EdgeNeXt-xxsmall at the same batch/size: the
median over rounds of the ratio within each round, with its interquartile range (on a machine whose speed
drifts, per-round ratios cancel the drift that a ratio of two medians keeps). Numbers depend on the machine
and on its load; they are never asserted in tests.
By default glibc is told to keep freed memory (``--allocator keep``, process-wide, so every model alike):
with its defaults each large activation is fresh memory and page faults dominate at batch 16.
"""
import argparse
import statistics
import os.path as osp
import sys
import warnings
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

import torch  # noqa: E402

from emo_mm.benchmarking import (PEERS, REFERENCE_PEER, build_bench_model, fastest_layout_case,  # noqa: E402
                                 keep_freed_memory)
from emo_mm.variants import VARIANTS  # noqa: E402

DEFAULT_MODELS = list(VARIANTS) + list(PEERS)
QUICK_MODELS = ['EMO-1M', 'EMOv2-1M', REFERENCE_PEER]


def paired_ratios(rates, ref_rates):
    """``(median, q1, q3)`` of ``rates[i] / ref_rates[i]``: each repeat's ratio to the reference timed in
    the same round-robin round; NaNs without a reference."""
    if not ref_rates:
        return (float('nan'), ) * 3
    ratios = sorted(a / b for a, b in zip(rates, ref_rates))
    if len(ratios) == 1:
        return ratios * 3
    q1, _, q3 = statistics.quantiles(ratios, n=4, method='inclusive')
    return statistics.median(ratios), q1, q3


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='CPU throughput of EMO / EMOv2 and peers')
    p.add_argument('--models', nargs='+', default=None, help=f'subset of {DEFAULT_MODELS}')
    p.add_argument('--batch', type=int, nargs='+', default=[1, 16])
    p.add_argument('--sizes', type=int, nargs='+', default=[224, 320, 512])
    p.add_argument('--threads', type=int, default=None, help='torch threads (default: torch default)')
    p.add_argument('--repeats', type=int, default=9, help='timed repeats (median reported)')
    p.add_argument('--min-time', type=float, default=0.2, help='seconds per timed repeat (at least)')
    p.add_argument('--no-deploy', action='store_true', help='skip the deploy mode of EMO variants')
    p.add_argument('--allocator', choices=['keep', 'default'], default='keep',
                   help="'keep' (default): glibc keeps freed memory for reuse (no page faults on every "
                   "large activation; see emo_mm.benchmarking.keep_freed_memory); 'default': glibc's defaults")
    p.add_argument('--quick', action='store_true',
                   help=f'smoke test: {QUICK_MODELS}, batch 1, size 224, 2 short repeats')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.quick:
        models = args.models or QUICK_MODELS
        args.batch, args.sizes, args.repeats, args.min_time = [1], [224], 2, 0.05
    else:
        models = args.models or DEFAULT_MODELS
    if REFERENCE_PEER not in models:
        models = models + [REFERENCE_PEER]
    if args.threads:
        torch.set_num_threads(args.threads)
    allocator = 'glibc defaults'
    if args.allocator == 'keep':
        allocator = 'freed memory kept (mallopt)' if keep_freed_memory() else 'not glibc: defaults'
    print(f'torch {torch.__version__}, threads {torch.get_num_threads()}, allocator: {allocator}, '
          f'batches {args.batch}, sizes {args.sizes}, median of {args.repeats} repeats >= {args.min_time}s')

    runs = []  # (name, mode, model, kind, params in M)
    for name in models:
        modes = ['plain'] + (['deploy'] if name in VARIANTS and not args.no_deploy else [])
        for mode in modes:
            try:
                model, kind = build_bench_model(name, deploy=(mode == 'deploy'))
            except Exception as e:  # keep benchmarking the others, say why this one is missing
                print(f'skip {name} ({mode}): {type(e).__name__}: {e}')
                continue
            params = sum(p.numel() for p in model.parameters()) / 1e6
            runs.append((name, mode, model, kind, params))

    rows = []
    t_start = time.time()
    for batch in args.batch:
        for size in args.sizes:
            # pick each model's faster layout, then time round-robin: repeat r of every model, then r+1,
            # every other round in reverse order (a model timed right after another is measured a few % apart
            # from the same model timed right before it; alternating cancels that and linear drift)
            cases = [fastest_layout_case(model, kind, batch, size, args.min_time)
                     for _, _, model, kind, _ in runs]
            rates = [[] for _ in runs]
            for repeat in range(args.repeats):
                order = range(len(cases)) if repeat % 2 == 0 else reversed(range(len(cases)))
                for i in order:
                    rates[i].append(cases[i].time_once())
            ref = next((r for (name, mode, *_), r in zip(runs, rates) if (name, mode) == (REFERENCE_PEER, 'plain')),
                       None)
            for (name, mode, model, _, params), case, r in zip(runs, cases, rates):
                model.to(memory_format=torch.contiguous_format)
                ratios = paired_ratios(r, ref)
                rows.append((batch, size, name, mode, params, case.layout, statistics.median(r), ratios))
                print(f'  batch {batch} size {size} {name} {mode}: {statistics.median(r):.1f} img/s ({case.layout})',
                      flush=True)
            print(f'  ({time.time() - t_start:.0f} s)', flush=True)
    hdr = ('batch', 'size', 'model', 'mode', 'params(M)', 'layout', 'img/s', f'x {REFERENCE_PEER}', 'IQR')
    print(f'\n{"| " + " | ".join(hdr) + " |"}\n|{"---|" * len(hdr)}')
    for b, s, name, mode, params, layout, rate, (ratio, lo, hi) in rows:
        print(f'| {b} | {s} | {name} | {mode} | {params:.3f} | {layout} | {rate:.1f} | {ratio:.2f} '
              f'| {lo:.2f}-{hi:.2f} |')
    print(f'\n{len(rows)} rows in {time.time() - t_start:.0f} s')


if __name__ == '__main__':
    main()
