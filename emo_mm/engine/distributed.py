"""Multi-process training on CPUs (gloo), as ``tools/dist_train.sh`` runs it without CUDA.

mmengine 0.10.7 assumes one GPU per process in three places, all fixed here without touching it:

* its ``init_dist`` calls ``torch.cuda.set_device(LOCAL_RANK)``, which fails without a GPU; the process
  group is initialised here first (mmengine skips its own then);
* it wraps the model as ``DistributedDataParallel(device_ids=[LOCAL_RANK])``, which torch refuses for a
  CPU model; :class:`CPUDistributedDataParallel` is the same wrapper without ``device_ids``;
* ``sync_bn='torch'`` converts BatchNorm to ``torch.nn.SyncBatchNorm``, whose forward raises for CPU
  tensors (its CUDA kernels have no CPU version); the wrapper switches those layers to
  :class:`CPUSyncBatchNorm`, which computes the same statistics over all processes with ``all_reduce``.

:func:`setup_cpu_distributed` does both; ``tools/train.py`` and ``tools/test.py`` call it (it does nothing
when the launcher is ``none`` or there is a GPU; ``emo_mm.apis.runner`` has already chosen gloo then).
"""
import torch
import torch.distributed as dist
from mmengine.model import MMDistributedDataParallel
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from emo_mm.registry import register_model_wrapper, scoped


class _SyncBatchNormFunction(torch.autograd.Function):
    """Training-mode batch norm whose mean / variance (and their gradients) span every process."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, eps, momentum, group):
        channels = x.shape[1]
        dims = [d for d in range(x.dim()) if d != 1]
        x64 = x.double()  # E[x^2] - E[x]^2 in float32 loses digits when |mean| >> std
        stats = torch.cat([x64.sum(dims), (x64 * x64).sum(dims),
                           x64.new_tensor([x.numel() // max(channels, 1)])])
        dist.all_reduce(stats, group=group)
        count = stats[-1]
        mean = stats[:channels] / count
        var = (stats[channels:2 * channels] / count - mean * mean).clamp_min(0)
        if running_mean is not None:
            with torch.no_grad():
                running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
                unbiased = var * count / (count - 1).clamp_min(1)
                running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)
        shape = [1, channels] + [1] * (x.dim() - 2)
        invstd = (var + eps).rsqrt().to(x.dtype).view(shape)
        x_hat = (x - mean.to(x.dtype).view(shape)) * invstd
        ctx.save_for_backward(x_hat, invstd, weight)
        ctx.group, ctx.count, ctx.dims = group, count.item(), dims
        out = x_hat
        if weight is not None:
            out = out * weight.view(shape)
        if bias is not None:
            out = out + bias.view(shape)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x_hat, invstd, weight = ctx.saved_tensors
        channels, dims = x_hat.shape[1], ctx.dims
        shape = [1, channels] + [1] * (x_hat.dim() - 2)
        sum_dy = grad_out.sum(dims)
        sum_dy_xhat = (grad_out * x_hat).sum(dims)
        # the parameters' gradients stay local: DistributedDataParallel averages them like any other
        grad_weight, grad_bias = sum_dy_xhat.clone(), sum_dy.clone()
        both = torch.cat([sum_dy, sum_dy_xhat])
        dist.all_reduce(both, group=ctx.group)
        mean_dy = (both[:channels] / ctx.count).view(shape)
        mean_dy_xhat = (both[channels:] / ctx.count).view(shape)
        scale = invstd if weight is None else invstd * weight.view(shape)
        grad_in = scale * (grad_out - mean_dy - x_hat * mean_dy_xhat)
        return (grad_in, grad_weight if weight is not None else None, grad_bias if weight is not None else None,
                None, None, None, None, None)


class CPUSyncBatchNorm(_BatchNorm):
    """``torch.nn.SyncBatchNorm`` for CPU tensors (over gloo): same state, statistics over all processes.

    Not a subclass of ``nn.SyncBatchNorm``: DistributedDataParallel refuses those in a CPU model.
    """

    process_group = None

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f'expected at least 2D input (got {x.dim()}D input)')

    def forward(self, x):
        sync = (self.training and x.device.type == 'cpu' and dist.is_available() and dist.is_initialized()
                and dist.get_world_size(self.process_group) > 1)
        if not sync:
            return super().forward(x)
        self._check_input_dim(x)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as in nn.BatchNorm
                momentum = 1.0 / self.num_batches_tracked.item()
        running = (self.running_mean, self.running_var) if self.track_running_stats else (None, None)
        return _SyncBatchNormFunction.apply(x, self.weight, self.bias, *running, self.eps, momentum,
                                            self.process_group or dist.group.WORLD)


def use_cpu_sync_batchnorm(module):
    """Switch every ``torch.nn.SyncBatchNorm`` below ``module`` to :class:`CPUSyncBatchNorm` in place."""
    count = 0
    for m in module.modules():
        if type(m) is nn.SyncBatchNorm:
            m.__class__ = CPUSyncBatchNorm  # same state, only forward differs
            count += 1
    return count


@register_model_wrapper
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` for CPU processes: no ``device_ids``, SyncBN over gloo."""

    def __init__(self, module, device_ids=None, **kwargs):
        # mmengine passes device_ids=[LOCAL_RANK] to every DistributedDataParallel; torch refuses them on CPU
        use_cpu_sync_batchnorm(module)
        super().__init__(module=module, **kwargs)


def setup_cpu_distributed(cfg):
    """Join the process group and wrap the model in :class:`CPUDistributedDataParallel` (CPU processes)."""
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or torch.cuda.is_available():
        return
    if launcher != 'pytorch':
        raise SystemExit(f'--launcher {launcher} needs GPUs with mmengine 0.10.7; on CPUs start the processes '
                         'with torchrun (tools/dist_train.sh) and --launcher pytorch (docs/cluster.md)')
    if not dist.is_initialized():
        dist_cfg = dict(cfg.get('env_cfg', {}).get('dist_cfg', {}))
        dist_cfg.pop('backend', None)
        if 'timeout' in dist_cfg:  # mmengine's init_dist takes seconds
            import datetime
            dist_cfg['timeout'] = datetime.timedelta(seconds=dist_cfg['timeout'])
        dist.init_process_group(backend='gloo', **dist_cfg)
    if cfg.get('model_wrapper_cfg') is None:
        # the settings of mmengine's default wrapper
        cfg.model_wrapper_cfg = dict(type=scoped(CPUDistributedDataParallel), broadcast_buffers=False,
                                     find_unused_parameters=cfg.get('find_unused_parameters', False))


def finish_distributed_run():
    """End a finished distributed run's process here, without the interpreter's teardown. A no-op in a single
    process (no process group).

    Left to interpreter shutdown, threads of the gloo / c10d stack can be destroyed while still joinable: a
    finished 2-process DeepLabv3 run ended with rank 0 aborting ('terminate called without an active
    exception', exit -6) after its last validation, and so did a 2-process ``dist_test.sh`` on another machine
    even with the process group destroyed first. Everything the run writes is on disk by then (checkpoints
    are fsynced when written), so the process group is destroyed, logs and standard streams are flushed, and
    the process exits with status 0 at once."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    import logging
    import os
    import sys
    dist.destroy_process_group()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
