"""onnxruntime CPU throughput of the exported SSDLite / DeepLabv3 EMO models against the stock MobileNetV2 ones.

    python tools/analysis_tools/deploy_bench.py [--models NAME ...] [--batch 1 8] [--seg-batch 1] [--threads 2] [--repeats 7]
                                 [--min-time 0.3] [--no-eager] [--as-traced] [--out-dir work_dirs/13_deploy_bench]
                                 [--quick]

Every model is exported by ``tools/deployment/export_onnx.py``'s functions (end-to-end: detectors with box decoding and
per-class NMS in the graph, segmentors to the class map at the input size), SSDLite at its 320x320 and
DeepLabv3 at 512x512, EMO backbones plain and after ``switch_to_deploy()``; each once with dynamic batch /
height / width and once per batch with a fixed input (``--static``: onnxruntime folds the shape arithmetic).
EMO's attention blocks export through their onnxruntime-friendly twins (``emo_mm.deploy.rewrites``, same
outputs); ``--as-traced`` adds the EMO deploy models exported without them (dynamic graph, ratio to the
reference's ``onnxruntime`` row), to show what the twins bring. All models get the same seeded
weights (``emo_mm.testing.lively_init``: random init detects nothing, so NMS would have no work; here
each detector keeps its full ``nms_pre`` candidates, the same post-processing work for every model).
The references are mmdet's stock SSDLite-MobileNetV2 and mmseg's stock DeepLabv3-MobileNetV2 (d8, ADE20K).

Per task and batch, all cases (onnxruntime sessions with ``--threads`` intra-op threads, and the eager
PyTorch forward of the same end-to-end module, plain and deploy, under ``inference_mode``) are timed
round-robin, every other round in reverse order, as tools/analysis_tools/benchmark.py does; the table gives the median
images/s and the median over rounds of the ratio to the reference in the same runtime timed in the same
round (paired ratios cancel the drift of a shared machine that a ratio of medians keeps). Params and
FLOPs (emo_mm.analysis.complexity, fvcore counting, one multiply-add = one FLOP) stand beside them.
``--quick``: batch 1, SSDLite-EMO-1M vs SSDLite-MobileNetV2 only, 3 short rounds (a smoke test).
"""
import argparse
import os
import os.path as osp
import statistics
import time

import torch

from emo_mm.analysis import ThroughputCase, paired_ratios

# name -> (config, task, input (H, W), reference name); the references are stock OpenMMLab configs
MODELS = {
    'SSDLite-EMO-1M': ('configs/det/ssdlite_emo_1m.py', 'det', (320, 320)),
    'SSDLite-EMO-2M': ('configs/det/ssdlite_emo_2m.py', 'det', (320, 320)),
    'SSDLite-EMO-5M': ('configs/det/ssdlite_emo_5m.py', 'det', (320, 320)),
    'SSDLite-EMOv2-1M': ('configs/det/ssdlite_emov2_1m.py', 'det', (320, 320)),
    'SSDLite-MobileNetV2': ('mmdet::ssd/ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py', 'det', (320, 320)),
    'DeepLabv3-EMO-1M': ('configs/seg/deeplabv3_emo_1m.py', 'seg', (512, 512)),
    'DeepLabv3-MobileNetV2': ('mmseg::mobilenet_v2/mobilenet-v2-d8_deeplabv3_4xb4-160k_ade20k-512x512.py', 'seg',
                              (512, 512)),
}
REFERENCE = {'det': 'SSDLite-MobileNetV2', 'seg': 'DeepLabv3-MobileNetV2'}
QUICK_MODELS = ['SSDLite-EMO-1M', 'SSDLite-MobileNetV2']
# EMO exported without emo_mm.deploy.rewrites' twins (--as-traced); its ratio is to the reference's 'onnxruntime' row
AS_TRACED = 'onnxruntime as traced'


class OrtCase:
    """An onnxruntime session at one batch, with ThroughputCase's interface (calibrate / time_once)."""

    def __init__(self, onnx_file: str, batch: int, hw, threads: int, x: torch.Tensor):
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        so.log_severity_level = 3
        self.sess = ort.InferenceSession(onnx_file, so, providers=['CPUExecutionProvider'])
        self.batch, self.layout, self.n = batch, 'onnx', 1
        self.feed = {'input': x.numpy()}

    def _run(self, n):
        t0 = time.perf_counter()
        for _ in range(n):
            self.sess.run(None, self.feed)
        return time.perf_counter() - t0

    def calibrate(self, min_time: float = 0.3, warmup: int = 2) -> 'OrtCase':
        self._run(warmup)
        self.n = max(1, int(min_time / max(self._run(1), 1e-6)))
        return self

    def time_once(self) -> float:
        return self.n * self.batch / self._run(self.n)


class EagerCase(ThroughputCase):
    """tools/analysis_tools/benchmark.py's timing of the eager end-to-end module (the graph that is exported)."""

    def __init__(self, model, kind, batch, x):
        from emo_mm.deploy import end_to_end_module
        super().__init__(model, kind, batch, int(x.shape[2]))
        self.fwd = end_to_end_module(model, kind)[0].eval()
        self.x = x


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='onnxruntime vs eager CPU throughput, EMO vs stock MobileNetV2')
    p.add_argument('--models', nargs='+', default=None, choices=list(MODELS), help='default: all')
    p.add_argument('--batch', type=int, nargs='+', default=[1, 8], help='detector batches')
    p.add_argument('--seg-batch', type=int, nargs='+', default=[1],
                   help='segmentor batches (512x512; batch 8 of the stock d8 DeepLabv3 needs > 24 GB in eager mode)')
    p.add_argument('--threads', type=int, default=2, help='onnxruntime intra-op and torch threads')
    p.add_argument('--repeats', type=int, default=7, help='round-robin rounds (median reported)')
    p.add_argument('--min-time', type=float, default=0.3, help='seconds per timed repeat (at least)')
    p.add_argument('--no-eager', action='store_true', help='onnxruntime only')
    p.add_argument('--as-traced', action='store_true',
                   help="also time EMO deploy models exported without emo_mm.deploy.rewrites' twins (dynamic graph)")
    p.add_argument('--out-dir', default='work_dirs/deploy_bench', help='where the .onnx files go')
    p.add_argument('--quick', action='store_true', help=f'{QUICK_MODELS}, batch 1, 3 short rounds')
    return p.parse_args(argv)


def prepare(name, out_dir, eager, batches, as_traced=False):
    """Build (seeded weights), count, export plain (+ deploy for EMO); returns the runs of this model."""
    from emo_mm.analysis import get_complexity
    from emo_mm.apis import resolve_config_path
    from emo_mm.deploy import export_end_to_end, rewrites
    from emo_mm.models import build_model, get_backbone, switch_to_deploy
    from emo_mm.testing import lively_init
    config, task, hw = MODELS[name]
    config = resolve_config_path(config)
    res = get_complexity(config, shape=hw, no_aux_head=True)
    params, flops = res['params'] / 1e6, res['flops'] / 1e9
    modes = ['plain'] + (['deploy'] if hasattr(get_backbone(res['model']), 'switch_to_deploy') else [])
    runs = []
    for mode in modes:
        model, kind, _ = build_model(config)
        lively_init(model)
        if mode == 'deploy':
            switch_to_deploy(model)
        base = dict(name=name, task=task, mode=mode, hw=hw, params=params, flops=flops, model=model, kind=kind)
        f = osp.join(out_dir, f'{name}_{mode}.onnx')
        export_end_to_end(model, kind, f, hw)
        runs.append(dict(base, runtime='onnxruntime', file=f))
        if as_traced and mode == 'deploy':
            f = osp.join(out_dir, f'{name}_{mode}_as_traced.onnx')
            with rewrites.as_traced():
                export_end_to_end(model, kind, f, hw)
            runs.append(dict(base, runtime=AS_TRACED, file=f))
        for b in batches:  # --static: one file per batch
            f = osp.join(out_dir, f'{name}_{mode}_static_b{b}.onnx')
            export_end_to_end(model, kind, f, hw, batch=b, static=True)
            runs.append(dict(base, runtime='onnxruntime static', file=f, batch=b))
        if eager:
            runs.append(dict(base, runtime='eager'))
    return runs


def main(argv=None):
    args = parse_args(argv)
    if args.quick:
        names, args.batch, args.repeats, args.min_time = args.models or QUICK_MODELS, [1], 3, 0.1
        args.seg_batch = [1]
    else:
        names = args.models or list(MODELS)
    tasks = {MODELS[n][1] for n in names}
    names += [REFERENCE[t] for t in sorted(tasks) if REFERENCE[t] not in names]
    batches = {'det': args.batch, 'seg': args.seg_batch}
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # identical for all; seeded weights must not hit slow denormal paths
    os.makedirs(args.out_dir, exist_ok=True)
    import onnxruntime as ort
    print(f'onnxruntime {ort.__version__}, torch {torch.__version__}, {args.threads} threads, batches '
          f'{args.batch} (seg {args.seg_batch}), glibc default allocator (a plain process), median of '
          f'{args.repeats} round-robin rounds >= {args.min_time}s each')
    runs = []
    for name in names:
        runs += prepare(name, args.out_dir, not args.no_eager, batches[MODELS[name][1]], args.as_traced)
        print(f'  exported {name}', flush=True)
    rows, t_start = [], time.time()
    g = torch.Generator().manual_seed(0)
    for task in sorted(tasks):
        for batch in batches[task]:
            group = [r for r in runs if r['task'] == task and r.get('batch', batch) == batch]
            x = torch.randn(batch, 3, *group[0]['hw'], generator=g)
            cases = [OrtCase(r['file'], batch, r['hw'], args.threads, x) if r['runtime'] != 'eager'
                     else EagerCase(r['model'], r['kind'], batch, x) for r in group]
            cases = [c.calibrate(args.min_time) for c in cases]
            rates = [[] for _ in cases]
            for repeat in range(args.repeats):
                order = range(len(cases)) if repeat % 2 == 0 else reversed(range(len(cases)))
                for i in order:
                    rates[i].append(cases[i].time_once())
            for r, rate in zip(group, rates):
                runtime = 'onnxruntime' if r['runtime'] == AS_TRACED else r['runtime']
                ref = next(rr for rr in group if rr['name'] == REFERENCE[task] and rr['runtime'] == runtime)
                ref_rate = rates[group.index(ref)]
                rows.append((r, batch, statistics.median(rate), paired_ratios(rate, ref_rate)))
            print(f'  {task} batch {batch} done ({time.time() - t_start:.0f} s)', flush=True)
    hdr = ('model', 'backbone', 'runtime', 'batch', 'params (M)', 'FLOPs (G)', 'img/s', 'x stock MobileNetV2',
           'IQR')
    print(f'\n| {" | ".join(hdr)} |\n|{"---|" * len(hdr)}')
    for r, batch, rate, (ratio, lo, hi) in rows:
        print(f'| {r["name"]} | {r["mode"]} | {r["runtime"]} | {batch} | {r["params"]:.2f} | {r["flops"]:.2f} '
              f'| {rate:.1f} | {ratio:.2f} | {lo:.2f}-{hi:.2f} |')
    inputs = ', '.join(sorted({str(r['hw']) for r in runs}))
    print(f'\n{len(rows)} rows in {time.time() - t_start:.0f} s (inputs {inputs})')


if __name__ == '__main__':
    main()
