"""--mini shortens every schedule; the learning rate must still reach its configured value after the warm-up."""
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import PARAM_SCHEDULERS

from emo_mm.datasets import apply_mini
from emo_mm.utils import codebase_of

CONFIGS = ['configs/seg/segformer_emov2_1m.py', 'configs/seg/deeplabv3_emov2_1m.py', 'configs/det/ssdlite_emov2_1m.py']


@pytest.mark.parametrize('config', CONFIGS)
def test_mini_warmup_ends_at_the_base_lr(config):
    cfg = Config.fromfile(config)
    apply_mini(cfg, codebase_of(cfg))
    base_lr = cfg.optim_wrapper.optimizer.lr
    optimizer = dict(cfg.optim_wrapper.optimizer)
    wrapper = build_optim_wrapper(torch.nn.Linear(2, 2), dict(type='OptimWrapper', optimizer=optimizer))
    # the warm-up counts iterations whatever the loop's unit; step it like an iteration-based loop would
    warmup = [s for s in cfg.param_scheduler if s['type'].split('.')[-1] == 'LinearLR'][0]
    sched = PARAM_SCHEDULERS.build(dict(warmup, by_epoch=False), default_args=dict(optimizer=wrapper))
    assert warmup['end'] - warmup.get('begin', 0) >= 2
    for _ in range(warmup['end'] + 1):
        wrapper.optimizer.step()
        sched.step()
    assert wrapper.param_groups[0]['lr'] == pytest.approx(base_lr, rel=1e-6)
