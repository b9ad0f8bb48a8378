"""Training support: atomic checkpoints and exact resume, CPU distributed runs (gloo, SyncBN)."""
from emo_mm.engine.checkpoint import (TEMP_SUFFIX, AtomicLocalBackend, RandomStateHook, checkpoint_problem,
                                      enable_atomic_checkpoints, enable_exact_resume, find_resumable_checkpoint,
                                      keep_seed_of_resumed_run, remove_partial_files)
from emo_mm.engine.distributed import (CPUDistributedDataParallel, CPUSyncBatchNorm, finish_distributed_run,
                                       setup_cpu_distributed, use_cpu_sync_batchnorm)

__all__ = [
    'TEMP_SUFFIX', 'AtomicLocalBackend', 'RandomStateHook', 'checkpoint_problem', 'enable_atomic_checkpoints',
    'enable_exact_resume', 'find_resumable_checkpoint', 'keep_seed_of_resumed_run', 'remove_partial_files',
    'CPUDistributedDataParallel', 'CPUSyncBatchNorm', 'finish_distributed_run', 'setup_cpu_distributed',
    'use_cpu_sync_batchnorm'
]
