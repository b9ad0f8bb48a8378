"""CPU throughput timing for ``tools/analysis_tools/benchmark.py``: :class:`ThroughputCase` / :func:`fastest_layout_case`."""
from __future__ import annotations

import statistics
from collections import OrderedDict
from typing import Tuple

import torch
import torch.nn as nn

from emo_mm.models.build import TensorForward, build_model, init_codebase
from emo_mm.models.variants import VARIANTS, variant_cls_cfg

# mmpretrain peers of similar size: name -> model name in mmpretrain's model zoo (built with pretrained=False)
PEERS: 'OrderedDict[str, str]' = OrderedDict([
    ('MobileNetV2-1.0x', 'mobilenet-v2_8xb32_in1k'),
    ('EdgeNeXt-xxsmall', 'edgenext-xxsmall_3rdparty_in1k'),
    ('EdgeNeXt-xsmall', 'edgenext-xsmall_3rdparty_in1k'),
    ('MobileViT-xxsmall', 'mobilevit-xxsmall_3rdparty_in1k'),
    ('MobileViT-xsmall', 'mobilevit-xsmall_3rdparty_in1k'),
])
REFERENCE_PEER = 'EdgeNeXt-xxsmall'
# how a user's process runs inference without gradients: name -> context manager
GRAD_MODES: 'OrderedDict[str, type]' = OrderedDict([('no_grad', torch.no_grad),
                                                    ('inference_mode', torch.inference_mode)])


def build_bench_model(name: str, deploy: bool = False) -> Tuple[nn.Module, str]:
    """An eval-mode classifier (1000 classes) of an EMO variant or an mmpretrain peer; returns (model, kind)."""
    if name in VARIANTS:
        model, kind, _ = build_model(variant_cls_cfg(name), deploy=deploy)
        return model, kind
    if name in PEERS:
        if deploy:
            raise ValueError(f'{name} has no deploy mode')
        init_codebase('mmpretrain')
        from mmpretrain import get_model
        return get_model(PEERS[name], pretrained=False).eval(), 'classifier'
    raise KeyError(f'unknown model {name}; known: {list(VARIANTS) + list(PEERS)}')


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory in the process instead of returning it to the OS (the
    benchmark's ``--allocator keep``; a plain process, the headline figures, does not do this).

    By default glibc serves blocks over its (dynamic, at most 32 MiB) mmap threshold with fresh ``mmap``
    calls and trims the heap top on free, so every large activation of a forward pass is new memory that
    faults in page by page (EMO's deploy forward avoids this itself, see ``EMOBackboneBase.early_chunk_bytes``;
    its plain forward and other models do not). Raising the mmap threshold to 1 GiB and disabling trimming
    (the same as ``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_``, what jemalloc/tcmalloc do by design) makes
    repeated forwards reuse their buffers. Process-wide, so it applies to every model of a benchmark run
    alike. Returns False where the C library is not glibc (nothing changed).
    """
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


def _run(fn, x, n: int) -> float:
    import time
    t0 = time.perf_counter()
    for _ in range(n):
        fn(x)
    return time.perf_counter() - t0


class ThroughputCase:
    """One model at one batch / size in one memory layout, ready to be timed in eval mode.

    ``calibrate()`` warms up and picks the iterations per timed repeat (at least ``min_time`` s);
    ``time_once(grad_mode)`` returns images/s of one repeat under ``torch.no_grad()`` or
    ``torch.inference_mode()`` (:data:`GRAD_MODES`). Timing several cases round-robin (repeat 1 of every
    model, then repeat 2...) spreads load changes of a shared machine over all models alike.
    """

    def __init__(self, model: nn.Module, kind: str, batch: int, size: int, layout: str = 'nchw'):
        self.model, self.batch, self.layout = model, batch, layout
        self.fwd = TensorForward(model, kind).eval()
        self.x = torch.randn(batch, 3, size, size)
        self.n = 1

    def _set_layout(self):
        fmt = torch.channels_last if self.layout == 'channels_last' else torch.contiguous_format
        self.model.to(memory_format=fmt)
        self.x = self.x.contiguous(memory_format=fmt)

    def calibrate(self, min_time: float = 0.3, warmup: int = 2) -> 'ThroughputCase':
        self._set_layout()
        for grad_mode in GRAD_MODES.values():  # warm up both (the first call packs oneDNN weights)
            with grad_mode():
                for _ in range(warmup):
                    self.fwd(self.x)
        with torch.no_grad():
            dt = _run(self.fwd, self.x, 1)
        self.n = max(1, int(min_time / max(dt, 1e-6)))
        return self

    def time_once(self, grad_mode: str = 'no_grad') -> float:
        self._set_layout()
        with GRAD_MODES[grad_mode]():
            return self.n * self.batch / _run(self.fwd, self.x, self.n)


def compiled_case(model: nn.Module, kind: str, batch: int, size: int, min_time: float = 0.3) -> ThroughputCase:
    """The calibrated case of ``torch.compile(model)`` (default options, what a user's call gets; static
    shapes, one specialisation per batch / size) in channels_last: TorchInductor's CPU convolutions want
    channels_last, and one layout instead of probing two saves a compilation of every graph."""
    case = ThroughputCase(model, kind, batch, size, 'channels_last')
    case.fwd = torch.compile(case.fwd, dynamic=False)
    return case.calibrate(min_time, warmup=2)


def fastest_layout_case(model: nn.Module, kind: str, batch: int, size: int, min_time: float = 0.3
                        ) -> ThroughputCase:
    """Probe NCHW and channels_last under ``no_grad`` (warm-up, then timed in the order A B B A, which
    cancels a linear drift of the machine's speed); the calibrated case of the faster."""
    cases = [ThroughputCase(model, kind, batch, size, lay).calibrate(min_time, warmup=1)
             for lay in ('nchw', 'channels_last')]
    rates = [0.0, 0.0]
    for i in (0, 1, 1, 0):
        rates[i] += cases[i].time_once()
    best = cases[0] if rates[0] >= rates[1] else cases[1]
    best._set_layout()
    return best


class ModelWorker:
    """One benchmarked model in a process of its own, timed on request (``tools/analysis_tools/benchmark.py``).

    What a user's process gets depends on that process's history, not only on the model: glibc sizes its
    mmap threshold from the blocks freed before (see :func:`keep_freed_memory`), so a model timed in a process
    where another model ran earlier inherits that model's allocator state and can run much faster or slower
    than in a user's process. Each model therefore runs in a process of its own, like a user's, and the parent times
    the processes in turn (round-robin, one at a time, the others blocked on their pipe).
    """

    def __init__(self, name: str, deploy: bool = False, threads: int = 0, keep_memory: bool = False,
                 compiled: bool = False):
        ctx = _worker_context()
        self.name, self.deploy, self.compiled = name, deploy, compiled
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve_model, args=(child, name, deploy, threads, keep_memory, compiled),
                                daemon=True)
        self.proc.start()
        child.close()
        self.params = None

    @property
    def mode(self) -> str:
        return ('deploy' if self.deploy else 'plain') + ('+compile' if self.compiled else '')

    def _request(self, *msg):
        self.conn.send(msg)
        try:
            status, value = self.conn.recv()
        except EOFError:
            raise RuntimeError(f'the benchmark process of {self.name} ended (exit code {self.proc.exitcode})')
        if status == 'error':
            raise RuntimeError(value)
        return value

    def ready(self) -> float:
        """Wait until the model is built; returns its parameter count in millions."""
        self.params = self._request('params')
        return self.params

    def prepare(self, batch: int, size: int, min_time: float) -> str:
        """Pick and calibrate the faster layout at ``batch`` / ``size`` (:func:`fastest_layout_case`; compiled:
        :func:`compiled_case`, which compiles for this shape first)."""
        return self._request('case', batch, size, min_time)

    def time_once(self, grad_mode: str = 'no_grad') -> float:
        return self._request('time', grad_mode)

    def close(self):
        if self.proc.is_alive():
            try:
                self.conn.send(('close', ))
            except (BrokenPipeError, OSError):
                pass
            self.proc.join(timeout=10)
            if self.proc.is_alive():
                self.proc.kill()
        self.conn.close()


def _worker_context():
    """Forked from a server process that has imported torch and the codebases but run nothing: no allocator
    or thread-pool history, like a fresh interpreter, without paying the imports once per model."""
    import multiprocessing
    ctx = multiprocessing.get_context('forkserver')
    ctx.set_forkserver_preload([__name__, 'mmpretrain.models'])
    return ctx


def _serve_model(conn, name, deploy, threads, keep_memory, compiled=False):
    """Loop of a :class:`ModelWorker` process: build the model, then answer requests until 'close'."""
    import warnings
    warnings.filterwarnings('ignore', message='pkg_resources is deprecated')
    if keep_memory:
        keep_freed_memory()
    if threads:
        torch.set_num_threads(threads)
    if compiled:
        # every (batch, size, grad mode) is a specialisation of its own; the default limit (8) would send
        # the later ones back to eager without a word
        torch._dynamo.config.recompile_limit = 64
        torch._dynamo.config.accumulated_recompile_limit = 1024
    try:
        model, kind = build_bench_model(name, deploy=deploy)
        params = sum(p.numel() for p in model.parameters()) / 1e6
    except Exception as e:  # the parent reports it and benchmarks the others
        model, error = None, f'{type(e).__name__}: {e}'
    case = None
    while True:
        try:
            cmd, *args = conn.recv()
        except EOFError:  # the parent is gone
            return
        if cmd == 'close':
            return
        if model is None:
            conn.send(('error', error))
            continue
        try:
            if cmd == 'params':
                value = params
            elif cmd == 'case':
                case = (compiled_case if compiled else fastest_layout_case)(model, kind, *args)
                value = case.layout
            elif cmd == 'time':
                value = case.time_once(*args)
            else:
                raise ValueError(f'unknown request {cmd!r}')
            conn.send(('ok', value))
        except Exception as e:
            conn.send(('error', f'{type(e).__name__}: {e}'))


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
