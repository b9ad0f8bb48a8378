"""CPU throughput (images/s) of the EMO / EMOv2 classifiers and mmpretrain peers of similar size.

    python tools/analysis_tools/benchmark.py [--models NAME ...] [--batch 1 16] [--sizes 224 320 512] [--threads N]
                              [--repeats 9] [--min-time 0.2] [--allocator default|keep|both] [--quick]
                              [--no-compile] [--compile-sizes 224]

What a user's own process gets: every model runs in eval mode in a plain process of its own (glibc's default
allocator; a model timed in a process where another ran before inherits that one's allocator state, see
``emo_mm.analysis.benchmark.ModelWorker``), timed under ``torch.no_grad()`` and under ``torch.inference_mode()``
(one row each); EMO variants both plain and deploy (``switch_to_deploy()``). Every model (mode) is also timed
compiled, ``torch.compile(model)`` with default options in a process of its own (rows ``plain+compile`` /
``deploy+compile``; channels_last; at the ``--compile-sizes``, 224 by default, since every batch / size / grad
mode is a compilation of its own). A second table gives each model's best path (per round the fastest of its
eager and compiled modes) and its ratio to EdgeNeXt-xxsmall's best path. For each (model, mode, batch,
size) NCHW and channels_last are probed (warm-up, two timed runs each, in the order A B B A, under no_grad)
and the faster layout is kept; then every model is timed ``--repeats`` times round-robin, each run lasting
at least ``--min-time`` s, and the median is reported. Round-robin spreads load changes of a shared machine
over all models alike; every other round runs in reverse order, because a model timed right after another
measures a few % apart from the same model timed right before it. The table gives images/s, the layout used
and the ratio to EdgeNeXt-xxsmall at the same batch/size and grad mode: the median over rounds of the ratio
within each round, with its interquartile range (on a machine whose speed drifts, per-round ratios cancel the
drift that a ratio of two medians keeps). Numbers depend on the machine and on its load; they are never
asserted in tests.
``--allocator keep`` tells glibc to keep freed memory in each model's process (``mallopt``, process-wide, what
a plain process does not do); ``--allocator both`` measures that in a second process and prints its figures in
extra columns beside the plain-process ones.
"""
import argparse
import json
import os.path as osp
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from emo_mm.analysis import (GRAD_MODES, PEERS, REFERENCE_PEER, ModelWorker, keep_freed_memory,
                                      paired_ratios)
from emo_mm.models import VARIANTS

DEFAULT_MODELS = list(VARIANTS) + list(PEERS)
QUICK_MODELS = ['EMO-1M', 'EMOv2-1M', REFERENCE_PEER]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='CPU throughput of EMO / EMOv2 and peers')
    p.add_argument('--models', nargs='+', default=None, help=f'subset of {DEFAULT_MODELS}')
    p.add_argument('--batch', type=int, nargs='+', default=[1, 16])
    p.add_argument('--sizes', type=int, nargs='+', default=[224, 320, 512])
    p.add_argument('--threads', type=int, default=None, help='torch threads (default: torch default)')
    p.add_argument('--repeats', type=int, default=9, help='timed repeats (median reported)')
    p.add_argument('--min-time', type=float, default=0.2, help='seconds per timed repeat (at least)')
    p.add_argument('--no-deploy', action='store_true', help='skip the deploy mode of EMO variants')
    p.add_argument('--no-compile', action='store_true', help='skip the torch.compile rows')
    p.add_argument('--compile-sizes', type=int, nargs='+', default=None,
                   help='sizes (of --sizes) that also get torch.compile rows; every (batch, size, grad mode) '
                        'is a compilation of its own, a minute or more per model on a few CPU cores '
                        '(default: 224)')
    p.add_argument('--allocator', choices=['default', 'keep', 'both'], default='default',
                   help="'default': glibc's defaults, what a plain process gets; 'keep': glibc keeps freed "
                   "memory for reuse (mallopt in each model's process, see emo_mm.analysis.benchmark.keep_freed_memory); "
                   "'both': the default, with the 'keep' figures of a second process in extra columns")
    p.add_argument('--rows-json', default=None, help=argparse.SUPPRESS)  # 'both': the second process's rows
    p.add_argument('--quick', action='store_true',
                   help=f'smoke test: {QUICK_MODELS}, batch 1, size 224, 2 short repeats, no torch.compile '
                        'rows unless --compile-sizes is given')
    return p.parse_args(argv)


def measure(args, models):
    """Rows ``(batch, size, name, mode, grad_mode, params, layout, img/s, (ratio, q1, q3))``."""
    keep = args.allocator == 'keep'
    workers = []  # one process per (model, mode): what a user's own process gets (see ModelWorker)
    compiled = [False] + ([True] if not args.no_compile and set(args.compile_sizes) & set(args.sizes) else [])
    for name in models:
        for mode in ['plain'] + (['deploy'] if name in VARIANTS and not args.no_deploy else []):
            for comp in compiled:
                workers.append(ModelWorker(name, mode == 'deploy', args.threads or 0, keep, compiled=comp))
    try:
        return _measure_workers(args, _ready(workers))
    finally:
        for w in workers:
            w.close()


def _ready(workers):
    """The workers whose model was built; the others are skipped with the reason."""
    ready = []
    for w in workers:
        try:
            w.ready()
            ready.append(w)
        except RuntimeError as e:  # keep benchmarking the others, say why this one is missing
            print(f'skip {w.name} ({w.mode}): {e}')
            w.close()
    return ready


def _measure_workers(args, workers):
    rows, best = [], []
    t_start = time.time()
    ref = next((i for i, w in enumerate(workers) if w.name == REFERENCE_PEER and w.mode == 'plain'), None)
    for batch in args.batch:
        for size in args.sizes:
            active = [i for i, w in enumerate(workers) if not w.compiled or size in args.compile_sizes]
            timed = [(i, g) for i in active for g in GRAD_MODES]
            # pick each model's faster layout, then time round-robin: repeat r of every model (each grad
            # mode), then r+1, every other round in reverse order (a model timed right after another is
            # measured a few % apart from the same model timed right before it; alternating cancels that and
            # linear drift)
            layouts = {i: workers[i].prepare(batch, size, args.min_time) for i in active}
            rates = {key: [] for key in timed}
            for repeat in range(args.repeats):
                for i, g in (timed if repeat % 2 == 0 else timed[::-1]):
                    rates[i, g].append(workers[i].time_once(g))
            for i in active:
                w = workers[i]
                for g in GRAD_MODES:
                    r = rates[i, g]
                    ratios = paired_ratios(r, rates[ref, g] if ref is not None else None)
                    rows.append((batch, size, w.name, w.mode, g, w.params, layouts[i], statistics.median(r), ratios))
                    print(f'  batch {batch} size {size} {w.name} {w.mode} {g}: {statistics.median(r):.1f} img/s '
                          f'({layouts[i]})', flush=True)
            best_paths(batch, size, workers, rates, ref, best)
            print(f'  ({time.time() - t_start:.0f} s)', flush=True)
    return rows, best


def best_paths(batch, size, workers, rates, ref, out):
    """Each model's best path (eager or compiled, plain or deploy) beside the reference's best path: for every
    round, the fastest of each model's modes, and its ratio to the reference's fastest in that round; appends
    ``(batch, size, name, grad_mode, best mode (most rounds), median img/s, (ratio, q1, q3))`` to ``out``."""
    by_name = {}
    for (i, g) in rates:
        by_name.setdefault((workers[i].name, g), []).append(i)
    ref_best = {}
    for (name, g), idx in by_name.items():
        per_round = [max((rates[i, g][r], workers[i].mode) for i in idx) for r in range(len(rates[idx[0], g]))]
        if ref is not None and name == workers[ref].name:
            ref_best[g] = [r for r, _ in per_round]
        by_name[name, g] = per_round
    for (name, g), per_round in by_name.items():
        modes = [m for _, m in per_round]
        r = [v for v, _ in per_round]
        out.append((batch, size, name, g, max(set(modes), key=modes.count), statistics.median(r),
                    paired_ratios(r, ref_best.get(g))))


def measure_in_child(argv, path):
    """Rows of this benchmark run in a second process with ``--allocator keep``, keyed by
    ``(batch, size, name, mode, grad_mode)``."""
    argv = list(argv if argv is not None else sys.argv[1:])
    cmd = [sys.executable, osp.abspath(__file__), *argv, '--allocator', 'keep', '--rows-json', path]
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f'the --allocator keep process failed (exit code {proc.returncode})')
    with open(path) as f:
        return {tuple(r[:5]): r for r in json.load(f)}


def main(argv=None):
    args = parse_args(argv)
    if args.quick:
        models = args.models or QUICK_MODELS
        args.batch, args.sizes, args.repeats, args.min_time = [1], [224], 2, 0.05
        args.no_compile = args.no_compile or args.compile_sizes is None
    else:
        models = args.models or DEFAULT_MODELS
    if REFERENCE_PEER not in models:
        models = models + [REFERENCE_PEER]
    if args.compile_sizes is None:
        args.compile_sizes = [224]
    if args.threads:
        torch.set_num_threads(args.threads)
    kept = {}
    if args.allocator == 'both':
        with tempfile.TemporaryDirectory() as tmp:
            print('measuring --allocator keep in a second process first', flush=True)
            kept = measure_in_child(argv, osp.join(tmp, 'rows.json'))
    allocator = 'glibc defaults (a plain process per model)'
    if args.allocator == 'keep':
        allocator = 'freed memory kept (mallopt)' if keep_freed_memory() else 'not glibc: defaults'
    # the vector ISA matters: the ratios to EdgeNeXt differ between AVX-512 and AVX2-only CPUs
    print(f'torch {torch.__version__}, CPU {torch.backends.cpu.get_cpu_capability()}, threads '
          f'{torch.get_num_threads()}, allocator: {allocator}, '
          f'batches {args.batch}, sizes {args.sizes}, median of {args.repeats} repeats >= {args.min_time}s')
    t_start = time.time()
    rows, best = measure(args, models)
    if args.rows_json:
        with open(args.rows_json, 'w') as f:
            json.dump(rows, f)
        return
    hdr = ['batch', 'size', 'model', 'mode', 'grad', 'params(M)', 'layout', 'img/s', f'x {REFERENCE_PEER}', 'IQR']
    if kept:
        hdr += ['img/s (keep)', 'x (keep)', 'IQR (keep)']
    print(f'\n{"| " + " | ".join(hdr) + " |"}\n|{"---|" * len(hdr)}')
    for b, s, name, mode, g, params, layout, rate, (ratio, lo, hi) in rows:
        line = (f'| {b} | {s} | {name} | {mode} | {g} | {params:.3f} | {layout} | {rate:.1f} | {ratio:.2f} '
                f'| {lo:.2f}-{hi:.2f} |')
        k = kept.get((b, s, name, mode, g))
        if kept:
            line += (f' {k[7]:.1f} | {k[8][0]:.2f} | {k[8][1]:.2f}-{k[8][2]:.2f} |' if k else ' - | - | - |')
        print(line)
    hdr = ['batch', 'size', 'model', 'grad', 'best path', 'img/s', f'x {REFERENCE_PEER} best', 'IQR']
    print(f'\nbest path of each model (per round, the fastest of its modes)\n'
          f'{"| " + " | ".join(hdr) + " |"}\n|{"---|" * len(hdr)}')
    for b, s, name, g, mode, rate, (ratio, lo, hi) in best:
        print(f'| {b} | {s} | {name} | {g} | {mode} | {rate:.1f} | {ratio:.2f} | {lo:.2f}-{hi:.2f} |')
    print(f'\n{len(rows)} rows in {time.time() - t_start:.0f} s')


if __name__ == '__main__':
    main()
