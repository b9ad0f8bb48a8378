"""Analysis: parameters and FLOPs, CPU throughput side by side, results tables against the papers."""
from emo_mm.analysis.benchmark import (GRAD_MODES, PEERS, REFERENCE_PEER, ModelWorker, ThroughputCase,
                                       build_bench_model, keep_freed_memory, paired_ratios)
from emo_mm.analysis.complexity import format_complexity, get_complexity, params_and_flops
from emo_mm.analysis.results import build_table, default_metafiles, load_metafile, read_work_dir

__all__ = [
    'GRAD_MODES', 'PEERS', 'REFERENCE_PEER', 'ModelWorker', 'ThroughputCase', 'build_bench_model',
    'keep_freed_memory', 'paired_ratios', 'format_complexity', 'get_complexity', 'params_and_flops', 'build_table',
    'default_metafiles', 'load_metafile', 'read_work_dir'
]
