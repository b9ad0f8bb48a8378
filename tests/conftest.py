"""Session fixtures shared by the test packages: the generated mini datasets, the tiny classifier run (a real
mmengine work dir with checkpoints), the memorisation fits, and denormal flushing for seeded-weight exports."""
import pytest
import torch

from tests.utils import CLS_TINY_RUN, learning_run, run_tool


@pytest.fixture(scope='session')
def mini_data():
    """data/mini/{coco,ade,imagenet}, generated once (the generator skips complete sets)."""
    run_tool('tools/misc/make_mini_data.py', timeout=300)
    from tests.utils import ROOT
    return ROOT / 'data' / 'mini'


@pytest.fixture(scope='session')
def cls_reference_run(mini_data, tmp_path_factory):
    """EMO-1M on 16 mini ImageNet images, 3 epochs of 2 iterations, seed 0, uninterrupted: its work dir.

    The reference of the kill / resume tests; its checkpoints are real mmengine checkpoints for the others.
    """
    work = tmp_path_factory.mktemp('cls_reference_run')
    run_tool('tools/train.py', *CLS_TINY_RUN[:2], '--work-dir', work, *CLS_TINY_RUN[2:])
    return work


@pytest.fixture(scope='session')
def learning_runs(mini_data, tmp_path_factory):
    """``(task, kind) -> (final metric, work dir)``: the memorisation runs of tests.utils.TASKS, each trained
    once per session and shared by the modules that evaluate, draw or tabulate the fitted checkpoints."""
    return lambda task, kind: learning_run(tmp_path_factory.getbasetemp(), task, kind)


@pytest.fixture(scope='module')
def flush_denormals():
    """Seeded / random weights leave some activations denormal: CPU kernels run 10-100x slower on them."""
    was = torch.set_flush_denormal(True)
    yield
    if was:
        torch.set_flush_denormal(False)
