"""Each task's real config, trained by ``tools/train.py --mini``, memorises a handful of mini images (its own
final validation, on the images it was trained on, passes a threshold), and the same check fails when learning
is switched off (lr 0: AdamW's decoupled weight decay is scaled by the lr too, so the weights never move and
the run evaluates the untrained model). Also: the fit options address pipeline steps by type.

A from-scratch run on the mini sets cannot show a held-out score worth the name (configs/det/README.md, "Mini
COCO check"); it can show that data, loss, gradients, assigner, head and evaluation fit together well enough
to learn what they are trained on. The recipes (tests.utils.TASKS) override only data, input size, schedule
and augmentation (``--mini`` plus ``--cfg-options``); the models are the configs'. Why each is what it is:

* SSDLite-EMO-1M, 8 COCO images, bbox mAP >= 0.5 (CocoMetric scores every image of its ann_file, so train,
  val and metric read a json of only those 8): 192x192, ``Expand`` / ``MinIoURandomCrop`` made the identity
  and ``PhotoMetricDistortion`` off -- the mini classes are told apart by colour, and with hue shifts the fit
  stalls (mAP 0.15 after 300 iterations, 0.84 after 150 without). Schedule and lr:
  ``emo_mm.testing.SSDLITE_FIT_EPOCHS`` / ``SSDLITE_FIT_LR``, chosen to converge under AVX2 and AVX-512
  rounding alike;
* RetinaNet-EMOv2-1M, 4 COCO images (batch 4), bbox mAP >= 0.5 at 128 (max side), ``RandomFlip`` off, AdamW
  lr 1e-3 with a 30-iteration warm-up, 175 iterations: its RetinaHead (4 stacked 256-wide convs per branch,
  no normalisation) blows up with short warm-ups and fits slowly below ~5e-4;
* DeepLabv3-EMO-1M, 8 ADE20K training images, mIoU >= 50 (mmseg's mIoU averages the classes present in
  labels or predictions): 256 crops, ``PhotoMetricDistortion`` off (hue +-1: mmseg's cannot take 0),
  100 iterations at lr 0.004;
* EMO-1M classifier, 32 ImageNet train images (3-4 per class), top-1 >= 90%: 112 crops,
  ``RandomResizedCrop`` scale 0.35-1, ``RandAugment`` magnitude 5, EMA decay 0.9 instead of 0.9998 (an
  average over ~5000 iterations would leave the evaluated weights at their initial values), 40 epochs.

Warm-ups are cut to 5 (RetinaNet: 30) iterations where the configs warm up over 500, and validation runs once,
at the end. The fitted SSDLite and DeepLabv3 runs are shared through the ``learning_runs`` fixture:
tests/test_apis draws and tabulates the SSDLite checkpoint, tests/test_configs evaluates the DeepLabv3 one.
"""
import pytest

from emo_mm.testing import coco_fit_options

from tests.utils import ROOT, TASKS


@pytest.fixture(scope='module')
def runs(learning_runs):
    """The final metric of (task, kind), trained once per session."""
    return lambda task, kind: learning_runs(task, kind)[0]


def _learnt(task, value):
    return value >= TASKS[task]['threshold']


@pytest.mark.parametrize('task', TASKS)
def test_memorises_its_training_subset(task, runs):
    fit, untrained = runs(task, 'fit'), runs(task, 'lr0')
    print(f'{task}: {TASKS[task]["metric"]} untrained (lr 0) {untrained}, fitted {fit}')
    assert _learnt(task, fit), f'{task}: {TASKS[task]["metric"]} {fit} < {TASKS[task]["threshold"]}'
    assert untrained < 0.4 * TASKS[task]['threshold'], untrained


@pytest.mark.parametrize('task', TASKS)
def test_check_fails_when_learning_is_broken(task, runs):
    """The same recipe at lr 0 (weights frozen at their initialisation) does not pass the check."""
    assert not _learnt(task, runs(task, 'lr0'))


# ------------------------------------------------------------------ the fit options address steps by type
def _apply(cfg, options):
    """Merge ``--cfg-options`` strings into ``cfg`` as tools/train.py does (mmengine's DictAction)."""
    import argparse
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    cfg.merge_from_dict(parser.parse_args(['--cfg-options', *options]).cfg_options)
    return cfg


def _by_type(pipeline):
    return {step['type'].split('.')[-1]: step for step in pipeline}


@pytest.mark.parametrize('order', ['stock', 'reordered'])
def test_coco_fit_options_find_pipeline_steps_by_type(order):
    """Each option lands on the step it is meant for, also in a reordered pipeline; other steps are untouched."""
    from mmengine.config import Config
    cfg = Config.fromfile(str(ROOT / TASKS['ssdlite_emo_1m']['config']))
    train = cfg.train_dataloader.dataset.dataset
    if order == 'reordered':
        train.pipeline = train.pipeline[::-1]
        cfg.val_dataloader.dataset.pipeline = cfg.val_dataloader.dataset.pipeline[::-1]
    before = _by_type(train.pipeline)
    _apply(cfg, coco_fit_options(cfg, '/tmp/fit.json', size=160))
    after = _by_type(cfg.train_dataloader.dataset.dataset.pipeline)
    assert after['Expand']['prob'] == 0 and after['MinIoURandomCrop']['min_crop_size'] == 1
    assert after['PhotoMetricDistortion']['hue_delta'] == 0
    assert after['PhotoMetricDistortion']['contrast_range'] == (1, 1)
    assert after['Resize']['scale'] == (160, 160)
    changed = {'Expand', 'MinIoURandomCrop', 'PhotoMetricDistortion', 'Resize'}
    assert {t: s for t, s in after.items() if t not in changed} == {t: s for t, s in before.items() if t not in changed}
    for loader in ('val_dataloader', 'test_dataloader'):
        assert _by_type(cfg[loader].dataset.pipeline)['Resize']['scale'] == (160, 160), loader
    assert cfg.val_evaluator.ann_file == '/tmp/fit.json' and cfg.param_scheduler[0].end == 5


def test_coco_fit_options_name_a_missing_step():
    from mmengine.config import Config
    cfg = Config.fromfile(str(ROOT / TASKS['ssdlite_emo_1m']['config']))
    cfg.val_dataloader.dataset.pipeline = [s for s in cfg.val_dataloader.dataset.pipeline if s.type != 'Resize']
    with pytest.raises(ValueError, match=r'val_dataloader.dataset.pipeline: expected exactly one Resize step, '
                                         r'found 0 in \[.*LoadImageFromFile'):
        coco_fit_options(cfg, '/tmp/fit.json')
