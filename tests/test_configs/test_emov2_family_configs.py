"""The EMOv2 downstream families beyond SSDLite / RetinaNet / DeepLabv3 / PSPNet.

Mask R-CNN (COCO) and the SegFormer head / Semantic FPN (ADE20K, 160k) for EMOv2-1M/2M/5M/20M. (The 20M
SSDLite / RetinaNet / DeepLabv3 / PSPNet configs are rows of the tables in test_det_configs.py / test_seg_configs.py,
which check them like their smaller siblings, params and FLOPs against the papers included.)

* every det / seg config has a metafile entry and back; the new families carry the published numbers
  (box and mask AP / mIoU, aAcc, mAcc, params, FLOPs);
* config values: the EMOv2 backbone as the EMOv2 downstream configs set it, neck / head widths equal to the
  backbone's C1..C4, the official optimizer and schedule (all values: tests/test_configs/);
* converted official weights load into each family; every config trains one iteration and evaluates on the
  mini sets (Mask R-CNN: bbox and segm mAP), and tools/analysis_tools/results_table.py's reader matches the run to the paper;
* params (segmentors: and FLOPs) equal the tables in configs/det/README.md / configs/seg/README.md;
* Mask R-CNN through the tools: ``tools/train.py --mini``, ``tools/test.py --mini``, and ``infer`` draws the
  instance masks.
"""
import math
import re
import time

import numpy as np
import pytest
import torch
from mmengine.config import Config

from emo_mm.datasets.mini import apply_mini
from emo_mm.models.pretrained import build_backbone, convert_official
from emo_mm.analysis.results import build_table, load_metafile, read_work_dir

from tests.utils import ROOT, official_weights, random_official_state_dict, run_tool, shrink_seg

DET_DIR, SEG_DIR = ROOT / 'configs' / 'det', ROOT / 'configs' / 'seg'
SIZES = ('1m', '2m', '5m', '20m')
# Published numbers (the EMOv2 paper's COCO Mask R-CNN and ADE20K SegFormer / Semantic FPN results): the only
# ones it gives for these families.
BOX_AP = dict(zip(SIZES, (37.1, 39.5, 42.3, 44.2)))  # Mask R-CNN box AP
MIOU = {'segformer': dict(zip(SIZES, (37.0, 40.2, 43.0, 47.3))),
        'fpn': dict(zip(SIZES, (37.1, 39.9, 42.4, 46.8)))}
DET_CONFIGS = [f'mask_rcnn_emov2_{s}' for s in SIZES]
SEG_CONFIGS = [f'{head}_emov2_{s}' for head in ('segformer', 'fpn') for s in SIZES]
CONFIGS = DET_CONFIGS + SEG_CONFIGS


def _path(name):
    return (DET_DIR if name.startswith('mask_rcnn') else SEG_DIR) / f'{name}.py'


def _cfg(name):
    return Config.fromfile(str(_path(name)))


def _size(name):
    return name.rsplit('_', 1)[1]


# ----------------------------------------------------------------------------------------------- metafiles
@pytest.mark.parametrize('folder', [DET_DIR, SEG_DIR], ids=['det', 'seg'])
def test_every_config_has_a_metafile_entry_and_back(folder):
    published = load_metafile(str(folder / 'metafile.yml'))
    assert sorted(published) == sorted(p.stem for p in folder.glob('*.py'))
    for name, pub in published.items():
        assert (ROOT / pub.config).is_file(), name


@pytest.mark.parametrize('name', CONFIGS)
def test_metafile_holds_the_published_numbers(name):
    pub = load_metafile(str(_path(name).parent / 'metafile.yml'))[name]
    if name in DET_CONFIGS:
        assert pub.task == 'mmdet' and pub.metrics['AP'] == BOX_AP[_size(name)] and 'mask AP' in pub.metrics
    else:
        assert pub.task == 'mmseg' and pub.metrics['mIoU'] == MIOU[name.split('_')[0]][_size(name)]
        assert set(pub.metrics) == {'mIoU', 'aAcc', 'mAcc'}
    assert pub.params_m is not None and pub.flops_g is not None


# ------------------------------------------------------------------------------------------- config values
@pytest.mark.parametrize('name', CONFIGS)
def test_config_values(name):
    cfg, size, det = _cfg(name), _size(name), name in DET_CONFIGS
    bb = cfg.model.backbone
    assert (bb.type, bb.arch, bb.window_size, tuple(bb.out_indices)) == ('emo_mm.EMOv2', size, 10, (1, 2, 3, 4))
    assert (bb.frozen_stages, bb.norm_eval) == ((1, True) if det else (-1, False))
    assert bb.init_cfg == dict(type='Pretrained', checkpoint=official_weights('emov2', size), prefix='backbone.')
    channels = list(build_backbone(f'emov2-{size}').channels[1:])  # C1..C4
    opt = cfg.optim_wrapper
    assert (opt.optimizer.type, opt.optimizer.lr, opt.optimizer.weight_decay) == \
        ('AdamW', 2e-4 if det else 1.2e-4, 0.05)
    assert opt.get('clip_grad') == (dict(max_norm=0.1, norm_type=2) if det else None)
    assert opt.paramwise_cfg.custom_keys['norm'] == dict(decay_mult=0.)
    warmup, cosine = cfg.param_scheduler
    assert (warmup.type, warmup.start_factor, warmup.begin, warmup.end, warmup.by_epoch) == \
        (('LinearLR', 1e-5, 0, 500, False) if det else ('LinearLR', 1e-6, 0, 1500, False))
    assert cosine.type == 'CosineAnnealingLR' and cosine.eta_min == 0
    if det:
        assert cfg.model.type == 'MaskRCNN' and list(cfg.model.neck.in_channels) == channels
        load = [t for t in cfg.train_dataloader.dataset.pipeline if t['type'] == 'LoadAnnotations']
        assert load[0]['with_mask'] and 'segm' in cfg.val_evaluator.metric
        assert cfg.train_cfg.max_epochs == 12 and cfg.train_cfg.val_interval == 1
        assert (cosine.begin, cosine.end, cosine.T_max, cosine.by_epoch) == (6, 12, 6, True)
        assert cfg.train_dataloader.batch_size == 4 and cfg.auto_scale_lr.base_batch_size == 16
        return
    head = cfg.model.decode_head
    if name.startswith('segformer'):
        assert head.type == 'SegformerHead' and list(head.in_channels) == channels
        assert (list(head.in_index), head.channels) == ([0, 1, 2, 3], 180 if size == '1m' else 288)
    else:
        assert cfg.model.neck.type == 'FPN' and list(cfg.model.neck.in_channels) == channels
        assert (cfg.model.neck.out_channels, cfg.model.neck.num_outs) == (256, 4)
        assert head.type == 'FPNHead' and list(head.feature_strides) == [4, 8, 16, 32]
    assert head.num_classes == 150 and cfg.model.get('auxiliary_head') is None
    assert cfg.model.pretrained is None and cfg.model.test_cfg.mode == 'whole'
    assert cfg.train_cfg.max_iters == 160000 and cfg.train_cfg.val_interval == 16000
    assert (cosine.begin, cosine.end, cosine.T_max, cosine.by_epoch) == (80000, 160000, 80000, False)
    assert cfg.train_dataloader.batch_size == 8 and cfg.auto_scale_lr.base_batch_size == 32
    assert cfg.train_dataloader.dataset.data_root == 'data/ade/ADEChallengeData2016'


# ----------------------------------------------------------------------------------- weights and training
def _build(cfg):
    from emo_mm.models.build import init_codebase
    init_codebase(cfg.default_scope)
    if cfg.default_scope == 'mmdet':
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    return MODELS.build(cfg.model)


@pytest.mark.parametrize('name', ['mask_rcnn_emov2_1m', 'segformer_emov2_1m', 'fpn_emov2_1m'])
def test_converted_official_weights_load(name, tmp_path):
    """Official classification layout -> tools' converter -> every backbone tensor of the new families."""
    official = random_official_state_dict('emov2-1m')
    src, dst = tmp_path / 'official.pth', tmp_path / 'emov2_1m_in1k.pth'
    torch.save({'net_E': official}, src)
    convert_official(str(src), str(dst), 'emov2-1m')
    cfg = _cfg(name)
    cfg.model.backbone.init_cfg.checkpoint = str(dst)
    model = _build(cfg)
    model.init_weights()
    got = model.backbone.state_dict()
    expected = {k: v for k, v in official.items() if not k.startswith(('head.', 'norm.'))}
    assert sorted(got) == sorted(expected)
    wrong = [k for k, v in expected.items() if not torch.equal(got[k], v)]
    assert not wrong, f'not loaded from the checkpoint: {wrong[:5]}'


def _seg_mini_cfg(name, work_dir):
    """One iteration at batch 2 on 128-pixel crops, then mIoU on one mini val image (short side 128)."""
    cfg = _cfg(name)
    apply_mini(cfg, 'mmseg', iters=1)
    shrink_seg(cfg, 128)
    cfg.train_dataloader.batch_size = 2
    cfg.val_dataloader.dataset.indices = 1
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=-1, save_last=False)
    cfg.work_dir = str(work_dir)
    return cfg


# Mask R-CNN on 2 CPU cores: fewer RoIs than the config's (1000 RPN proposals in training and test, 512 sampled
# RoIs, 100 detections; the R-CNN heads dominate the cost of an iteration); the model is unchanged.
MASK_RCNN_FEWER_ROIS = {'model.train_cfg.rpn_proposal.max_per_img': 200, 'model.train_cfg.rcnn.sampler.num': 64,
                        'model.test_cfg.rpn.max_per_img': 100, 'model.test_cfg.rcnn.max_per_img': 20}


def _check_results_row(work_dir, name, det):
    """The work dir read as tools/analysis_tools/results_table.py does: our final metrics beside the published number."""
    res = read_work_dir(str(work_dir))  # the evaluation logged at the end of training
    assert res.ok, res.problem
    keys = ('AP', 'mask AP') if det else ('mIoU', 'aAcc', 'mAcc')
    assert all(0 <= res.metrics[k] <= 100 for k in keys), res.metrics
    published = load_metafile(str(_path(name).parent / 'metafile.yml'))
    row = build_table([res], published, complexity=False)
    expected = BOX_AP[_size(name)] if det else MIOU[name.split('_')[0]][_size(name)]
    assert f'({expected:.1f}, ' in row and '[mini data]' in row, row
    return res


# One size per family (the sizes differ only in widths / depths: tests/test_models covers every size's forward,
# the params tests build every config, tests/test_deploy exports and runs every one); Mask R-CNN-EMOv2-1M
# through tools/train.py --mini below.
@pytest.mark.parametrize('name', ['segformer_emov2_2m', 'fpn_emov2_5m'])
def test_seg_one_iteration_and_eval_on_mini(name, mini_data, tmp_path):
    """In-process, through apply_mini (what --mini does); the work dir is then read as results_table does."""
    from mmengine.runner import Runner
    cfg = _seg_mini_cfg(name, tmp_path)
    assert cfg.model.backbone.init_cfg is None  # no converted weights here: mini starts from scratch
    cfg.log_level = 'WARNING'
    # the stock runtimes name their visualizer 'visualizer': a later runner in this process would reuse the
    # first one, and log into the first run's work dir
    cfg.visualizer.name = f'visualizer_{name}_{time.time_ns()}'
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 1 and math.isfinite(runner.message_hub.get_scalar('train/loss').current())
    _check_results_row(tmp_path, name, det=False)


# ------------------------------------------------------------------------------------------ complexity
def _readme_rows(readme, ncols):
    rows = {}
    for line in readme.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if len(cells) == ncols and cells[0] in CONFIGS:
            rows[cells[0]] = cells
    return rows


@pytest.mark.parametrize('name', DET_CONFIGS)
def test_mask_rcnn_params_equal_readme(name):
    """Params only: a two-stage detector's FLOPs depend on the proposals, i.e. on trained weights."""
    from emo_mm.models.build import build_model
    model, kind, _ = build_model(str(_path(name)))
    # config | backbone | FLOPs at | params ours | params paper | FLOPs ours | FLOPs paper | notes | box / mask AP
    cells = _readme_rows(DET_DIR / 'README.md', 9)[name]
    pub = load_metafile(str(DET_DIR / 'metafile.yml'))[name]
    assert kind == 'detector' and cells[1] == f'EMOv2-{_size(name).upper()}'
    params = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(params - float(cells[3])) < 6e-4
    assert (float(cells[4]), float(cells[6])) == (pub.params_m, pub.flops_g)
    assert pub.params_m <= params < pub.params_m + 0.1  # the paper's count cut off to 0.1 M
    assert float(cells[8].split('/')[0]) == BOX_AP[_size(name)]


@pytest.mark.parametrize('name', SEG_CONFIGS)
def test_segmentor_params_and_flops_equal_readme(name):
    from emo_mm.analysis.complexity import get_complexity
    res = get_complexity(str(_path(name)), (512, 512))
    # config | backbone | head | iters | params ours | params paper | FLOPs ours | FLOPs paper | mIoU paper
    cells = _readme_rows(SEG_DIR / 'README.md', 9)[name]
    params, flops = res['params'] / 1e6, res['flops'] / 1e9
    assert abs(params - float(cells[4])) < 6e-4
    assert abs(flops - float(cells[6])) < 6e-4
    pub = load_metafile(str(SEG_DIR / 'metafile.yml'))[name]
    assert (float(cells[5]), float(cells[7])) == (pub.params_m, pub.flops_g)
    # the paper's counts cut off to one decimal (SegFormer-20M's 20.3998 M printed as 20.4: rounded)
    assert pub.params_m - 5e-4 <= params < pub.params_m + 0.1 and pub.flops_g <= flops < pub.flops_g + 0.1
    assert float(cells[8]) == MIOU[name.split('_')[0]][_size(name)]


# ------------------------------------------------------------------------- Mask R-CNN through the tools
MASK_CFG = 'configs/det/mask_rcnn_emov2_1m.py'
# 1 iteration of 2 images, evaluation on 2 images, 1333x800 -> 333x200 (same transforms); every R-CNN box kept
MASK_OPTIONS = ['train_cfg.max_epochs=1', 'train_dataloader.batch_size=2', 'train_dataloader.dataset.indices=2',
                'val_dataloader.dataset.indices=2', 'test_dataloader.dataset.indices=2',
                'train_dataloader.dataset.pipeline.2.scale=(333,200)',
                'val_dataloader.dataset.pipeline.1.scale=(333,200)',
                'test_dataloader.dataset.pipeline.1.scale=(333,200)', 'model.test_cfg.rcnn.score_thr=0',
                *(f'{k}={v}' for k, v in MASK_RCNN_FEWER_ROIS.items())]


@pytest.fixture(scope='module')
def mask_rcnn_mini(mini_data, tmp_path_factory):
    work = tmp_path_factory.mktemp('mask_rcnn_mini')
    run_tool('tools/train.py', MASK_CFG, '--mini', '--work-dir', work, '--cfg-options', *MASK_OPTIONS, timeout=600)
    return work


def test_tools_train_and_test_mini_report_bbox_and_segm(mask_rcnn_mini):
    trained = _check_results_row(mask_rcnn_mini, 'mask_rcnn_emov2_1m', det=True)
    with open(trained.log_file) as f:
        assert any('"loss_mask"' in line for line in f)  # the mask head trained
    ckpt = mask_rcnn_mini / 'epoch_1.pth'
    proc = run_tool('tools/test.py', MASK_CFG, ckpt, '--mini', '--work-dir', mask_rcnn_mini / 'test',
                    '--cfg-options', *MASK_OPTIONS, timeout=600)
    out = proc.stdout + proc.stderr
    tested = {k: float(v) * 100 for k, v in re.findall(r'coco/(bbox_mAP|segm_mAP): (-?[\d.]+)', out)}
    # same weights, same images, same pipeline: the test run reproduces the evaluation after training
    assert tested.keys() == {'bbox_mAP', 'segm_mAP'}, out[-3000:]
    assert abs(tested['bbox_mAP'] - trained.metrics['AP']) < 0.051
    assert abs(tested['segm_mAP'] - trained.metrics['mask AP']) < 0.051


def _with_mask_bias(src, dst, bias):
    """A copy of checkpoint ``src`` whose mask logits are pushed to ``bias``: every mask full (+) or empty (-)."""
    ckpt = torch.load(src, map_location='cpu', weights_only=True)
    ckpt['state_dict']['roi_head.mask_head.conv_logits.bias'].fill_(bias)
    torch.save({'state_dict': ckpt['state_dict'], 'meta': ckpt['meta']}, dst)
    return dst


def test_infer_draws_instance_masks(mask_rcnn_mini, tmp_path):
    """Same boxes drawn twice, once with every mask full and once with every mask empty: the masks show."""
    import cv2

    from emo_mm.apis.inference import infer
    image = sorted((ROOT / 'data' / 'mini' / 'coco' / 'val2017').glob('*.jpg'))[0]
    cfg = Config.fromfile(str(ROOT / MASK_CFG))
    cfg.model.test_cfg.rcnn.score_thr = 0.  # a 1-iteration model's class scores are all near 1 / 81
    cfg.merge_from_dict(MASK_RCNN_FEWER_ROIS)
    pictures, covered = {}, {}
    for tag, bias in (('full', 20.), ('empty', -20.)):
        ckpt = _with_mask_bias(mask_rcnn_mini / 'epoch_1.pth', tmp_path / f'{tag}.pth', bias)
        res, = infer(cfg, str(ckpt), [str(image)], out_dir=str(tmp_path / tag), score_thr=0., mini=True)
        assert res.num_instances > 0
        assert res.num_masks == (res.num_instances if bias > 0 else 0), (res.num_masks, res.num_instances)
        pictures[tag] = cv2.imread(res.out_file).astype(np.float32)
        covered[bias] = res.mask_pixels
    # boxes and labels are the same in both; the mask fill (alpha 0.8, box colours) recolours the pixels that
    # the full masks cover (each full mask is its box; without mask drawing nothing would change)
    diff = np.abs(pictures['full'] - pictures['empty']).max(axis=2)
    assert covered[20.] > 0 and covered[-20.] == 0, covered
    assert (diff > 30).sum() >= 0.5 * covered[20.], ((diff > 30).sum(), covered)
