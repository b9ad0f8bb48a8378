"""CPU throughput timing for ``tools/benchmark.py``: :class:`ThroughputCase` / :func:`fastest_layout_case`."""
from __future__ import annotations

from collections import OrderedDict
from typing import Tuple

import torch
import torch.nn as nn

from .builder import TensorForward, build_model, init_codebase
from .variants import VARIANTS, variant_cls_cfg

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
