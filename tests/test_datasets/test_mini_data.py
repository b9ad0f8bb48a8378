"""The synthetic mini datasets (emo_mm.datasets.synthetic, tools/misc/make_mini_data.py): determinism, annotation
validity, and that the stock OpenMMLab datasets read them."""
import filecmp
import importlib
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest

from emo_mm.datasets import synthetic as mmd
from emo_mm.datasets.synthetic.ade import ADE_CLASSES
from emo_mm.datasets.synthetic.coco import COCO_CATEGORIES, COCO_USED
from emo_mm.datasets.synthetic.imagenet import IMAGENET_WNIDS

from tests.utils import ROOT as _ROOT  # noqa: E402

ROOT = str(_ROOT)
SCRIPT = osp.join(ROOT, 'tools', 'misc', 'make_mini_data.py')

ADE_ROOT = ('ade', 'ADEChallengeData2016')


@pytest.fixture(scope='session')
def mini(tmp_path_factory):
    """All three sets, generated once with seed 0."""
    out = tmp_path_factory.mktemp('mini')
    mmd.generate(str(out), seed=0, verbose=False)
    return str(out)


def _tree(root):
    files = []
    for d, _, fs in os.walk(root):
        files += [osp.relpath(osp.join(d, f), root) for f in fs]
    return sorted(files)


def _cv2():
    import cv2
    return cv2


# ---------------------------------------------------------------------------------------------- determinism
def test_same_seed_is_byte_identical(mini, tmp_path):
    mmd.generate(str(tmp_path), seed=0, verbose=False)
    for name in mmd.SETS:
        a, b = osp.join(mini, name), osp.join(str(tmp_path), name)
        files = _tree(a)
        assert files == _tree(b)
        match, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
        assert not mismatch and not errors, (name, mismatch[:5], errors[:5])


def test_other_seed_differs(mini, tmp_path):
    mmd.generate(str(tmp_path), seed=1, only='imagenet', verbose=False)
    assert sorted(os.listdir(str(tmp_path))) == ['imagenet']
    a, b = osp.join(mini, 'imagenet'), osp.join(str(tmp_path), 'imagenet')
    assert _tree(a) == _tree(b)  # same layout ...
    jpgs = [f for f in _tree(a) if f.endswith('.JPEG')]
    _, mismatch, _ = filecmp.cmpfiles(a, b, jpgs, shallow=False)
    assert len(mismatch) == len(jpgs)  # ... different pixels


def test_only_one_set_matches_full_run(mini, tmp_path):
    mmd.generate(str(tmp_path), seed=0, only='coco', verbose=False)
    for rel in ('annotations/instances_val2017.json', 'val2017/000000100001.jpg'):
        assert filecmp.cmp(osp.join(mini, 'coco', rel), osp.join(str(tmp_path), 'coco', rel), shallow=False)


# ---------------------------------------------------------------------------------------------- CLI, skip, recovery
def test_cli_skip_force_and_interrupted_run(tmp_path, capsys):
    out = str(tmp_path / 'mini')
    # the real command line once ...
    first = subprocess.run([sys.executable, SCRIPT, '--out', out, '--only', 'imagenet'],
                           capture_output=True, text=True, check=True, timeout=120).stdout
    assert 'imagenet: wrote' in first and 'train: 200 images' in first and 'done in' in first, first
    assert sorted(os.listdir(out)) == ['imagenet']  # no temp folders left behind
    marker = json.load(open(osp.join(out, 'imagenet', mmd.MARKER)))
    assert marker['seed'] == 0 and marker['files'] == 252

    def run(*a):  # ... then main() in-process (same code path, no interpreter start-up)
        assert mmd.main(['--out', out, '--only', 'imagenet', *a]) == 0
        return capsys.readouterr().out

    skipped = run()
    assert 'complete' in skipped and 'skipped' in skipped and 'wrote' not in skipped
    # an interrupted run (marker missing, or files missing) is regenerated
    os.remove(osp.join(out, 'imagenet', mmd.MARKER))
    assert 'imagenet: wrote' in run()
    lost = osp.join(out, 'imagenet', 'train', 'n01440764', 'n01440764_3.JPEG')
    os.remove(lost)
    assert 'imagenet: wrote' in run() and osp.exists(lost)
    # a temp folder of a dead process is cleaned up
    os.makedirs(osp.join(out, '.coco.tmp999999999', 'train2017'))
    assert 'skipped' in run()
    assert sorted(os.listdir(out)) == ['imagenet']
    # --force regenerates (here with another seed), and a different seed is reported on skip
    assert 'imagenet: wrote' in run('--force', '--seed', '3')
    assert json.load(open(osp.join(out, 'imagenet', mmd.MARKER)))['seed'] == 3
    assert 'made with seed 3' in run()


# ---------------------------------------------------------------------------------------------- COCO
def _coco_json(mini, split):
    with open(osp.join(mini, 'coco', 'annotations', f'instances_{split}.json')) as f:
        return json.load(f)


@pytest.mark.parametrize('split,n_img', [('train2017', 160), ('val2017', 40)])
def test_coco_annotations(mini, split, n_img):
    cv2 = _cv2()
    d = _coco_json(mini, split)
    official = {i: n for i, n, _ in COCO_CATEGORIES}
    assert len(official) == 80 and max(official) == 90
    assert [(c['id'], c['name']) for c in d['categories']] == list(official.items())
    assert len(d['images']) == n_img
    assert len({im['id'] for im in d['images']}) == n_img
    assert len({a['id'] for a in d['annotations']}) == len(d['annotations'])
    sizes = set()
    per_img = {im['id']: 0 for im in d['images']}
    for im in d['images']:
        img = cv2.imread(osp.join(mini, 'coco', split, im['file_name']))
        assert img is not None and img.shape == (im['height'], im['width'], 3)
        sizes.add((im['width'], im['height']))
    assert len(sizes) > n_img // 2  # varied sizes and aspect ratios
    imgs = {im['id']: im for im in d['images']}
    cats = set()
    for a in d['annotations']:
        im = imgs[a['image_id']]
        x, y, w, h = a['bbox']
        assert x >= 0 and y >= 0 and w > 0 and h > 0
        assert x + w <= im['width'] and y + h <= im['height']
        assert a['area'] > 0 and a['iscrowd'] == 0
        poly = np.array(a['segmentation'][0]).reshape(-1, 2)
        assert len(poly) >= 3
        assert np.allclose(poly.min(0), [x, y]) and np.allclose(poly.max(0), [x + w, y + h])
        assert a['category_id'] in official
        cats.add(a['category_id'])
        per_img[a['image_id']] += 1
    assert cats == set(COCO_USED)
    assert min(per_img.values()) >= 1 and max(per_img.values()) <= 4


def test_coco_classes_separable_by_colour(mini):
    """Learnability proxy: each object's mean colour alone classifies val objects (train centroids)."""
    cv2 = _cv2()

    def feats(split):
        d = _coco_json(mini, split)
        imgs = {im['id']: im for im in d['images']}
        cache, X, y = {}, [], []
        for a in d['annotations']:
            im = imgs[a['image_id']]
            if im['id'] not in cache:
                cache[im['id']] = cv2.imread(osp.join(mini, 'coco', split, im['file_name'])).astype(np.float32)
            m = np.zeros((im['height'], im['width']), np.uint8)
            cv2.fillPoly(m, [np.array(a['segmentation'][0]).reshape(-1, 2).astype(np.int32)], 1)
            X.append(cache[im['id']][m.astype(bool)].mean(0))
            y.append(a['category_id'])
        return np.array(X), np.array(y)

    Xt, yt = feats('train2017')
    Xv, yv = feats('val2017')
    cats = sorted(set(yt))
    cent = np.stack([Xt[yt == c].mean(0) for c in cats])
    pred = np.array(cats)[np.argmin(((Xv[:, None] - cent[None]) ** 2).sum(-1), 1)]
    assert (pred == yv).mean() > 0.97


def test_coco_pycocotools(mini):
    pytest.importorskip('pycocotools')
    from pycocotools import mask as mask_util
    from pycocotools.coco import COCO
    for split in ('train2017', 'val2017'):
        coco = COCO(osp.join(mini, 'coco', 'annotations', f'instances_{split}.json'))
        assert len(coco.getCatIds()) == 80
        assert sorted(coco.getCatIds(catNms=['sports ball', 'kite', 'cake', 'book', 'clock'])) == sorted(COCO_USED)
        areas = []
        for img_id in coco.getImgIds():
            info = coco.loadImgs(img_id)[0]
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
            assert anns
            for a in anns:
                m = coco.annToMask(a)
                assert m.shape == (info['height'], info['width'])
                rle = mask_util.encode(np.asfortranarray(m))
                # polygon area and rasterised mask area agree; the box is the mask's box (a few px: sharp tips)
                assert abs(float(mask_util.area(rle)) - a['area']) <= 0.15 * a['area'] + 40
                assert np.allclose(mask_util.toBbox(rle), a['bbox'], atol=3)
                areas.append(a['area'])
        # sizes from small (< 32^2) to large (> 96^2) objects
        assert min(areas) < 32 ** 2 or split == 'val2017'
        assert max(areas) > 96 ** 2


# ---------------------------------------------------------------------------------------------- ADE20K
@pytest.mark.parametrize('split,stem,n_img', [('training', 'train', 80), ('validation', 'val', 20)])
def test_ade_masks(mini, split, stem, n_img):
    cv2 = _cv2()
    base = osp.join(mini, *ADE_ROOT)
    imgs = sorted(os.listdir(osp.join(base, 'images', split)))
    anns = sorted(os.listdir(osp.join(base, 'annotations', split)))
    assert imgs == ['ADE_%s_%08d.jpg' % (stem, i) for i in range(1, n_img + 1)]
    assert anns == [f[:-4] + '.png' for f in imgs]
    allowed = {0} | set(ADE_CLASSES)
    seen, sizes = set(), set()
    for f in imgs:
        img = cv2.imread(osp.join(base, 'images', split, f), cv2.IMREAD_UNCHANGED)
        seg = cv2.imread(osp.join(base, 'annotations', split, f[:-4] + '.png'), cv2.IMREAD_UNCHANGED)
        assert seg.dtype == np.uint8 and seg.ndim == 2  # single-channel uint8
        assert seg.shape == img.shape[:2]
        vals = set(np.unique(seg).tolist())
        assert vals <= allowed, vals
        assert 0 in vals  # the thin "other" band
        assert (seg == 0).mean() < 0.05
        assert (seg == 1).mean() + (seg == 4).mean() > 0.3
        seen |= vals
        sizes.add((img.shape[1], img.shape[0]))
    assert seen == allowed
    assert all(w != h for w, h in sizes)
    assert all(320 <= w <= 640 for w, h in sizes)
    awkward = [(w, h) for w, h in sizes if all(w % k and h % k for k in (7, 10, 16, 32))]
    assert len(awkward) >= 3


# ---------------------------------------------------------------------------------------------- ImageNet
@pytest.mark.parametrize('split,per_class', [('train', 20), ('val', 5)])
def test_imagenet_meta(mini, split, per_class):
    cv2 = _cv2()
    root = osp.join(mini, 'imagenet')
    assert sorted(os.listdir(osp.join(root, split))) == IMAGENET_WNIDS == sorted(IMAGENET_WNIDS)
    with open(osp.join(root, 'meta', f'{split}.txt')) as f:
        lines = [ln.split() for ln in f.read().splitlines()]
    assert len(lines) == 10 * per_class
    listed = set()
    for rel, label in lines:
        wnid = rel.split('/')[0]
        assert int(label) == IMAGENET_WNIDS.index(wnid)  # sorted-wnid order
        img = cv2.imread(osp.join(root, split, rel))
        assert img is not None and 96 <= img.shape[0] <= 160 and 96 <= img.shape[1] <= 160
        listed.add(rel)
    on_disk = {osp.relpath(p, osp.join(root, split)) for p in _tree_abs(osp.join(root, split))}
    assert listed == on_disk
    assert sorted({int(lb) for _, lb in lines}) == list(range(10))


def _tree_abs(root):
    return [osp.join(d, f) for d, _, fs in os.walk(root) for f in fs]


# ---------------------------------------------------------------------------------------------- stock datasets
def _import_or_skip(module):
    return importlib.import_module(module)  # the suite runs in the environment of `make env`: no skip


def test_stock_mmdet_coco_dataset(mini):
    _import_or_skip('mmdet.datasets')
    from mmengine.registry import init_default_scope
    from mmdet.datasets import CocoDataset
    init_default_scope('mmdet')
    for split, n_img in (('train2017', 160), ('val2017', 40)):
        ds = CocoDataset(
            data_root=osp.join(mini, 'coco'), ann_file=f'annotations/instances_{split}.json',
            data_prefix=dict(img=f'{split}/'), filter_cfg=dict(filter_empty_gt=True, min_size=32),
            pipeline=[dict(type='LoadImageFromFile'),
                      dict(type='LoadAnnotations', with_bbox=True, with_mask=True)])
        assert ds.metainfo['classes'] == CocoDataset.METAINFO['classes']  # stock METAINFO
        assert len(ds) == n_img
        names = ds.metainfo['classes']
        d = _coco_json(mini, split)
        id2name = {c['id']: c['name'] for c in d['categories']}
        first = d['images'][0]
        sample = ds[0]
        assert sample['img'].shape == (first['height'], first['width'], 3)
        anns = [a for a in d['annotations'] if a['image_id'] == first['id']]
        assert len(sample['gt_bboxes']) == len(anns)
        xyxy = [[x, y, x + w, y + h] for x, y, w, h in (a['bbox'] for a in anns)]
        assert np.allclose(sample['gt_bboxes'].numpy(), xyxy)
        assert [names[k] for k in sample['gt_bboxes_labels']] == [id2name[a['category_id']] for a in anns]
        assert sample['gt_masks'].masks.shape == (len(anns), first['height'], first['width'])


def test_stock_mmdet_coco_metric_gt_is_perfect(mini):
    _import_or_skip('mmdet.evaluation')
    import torch
    from mmdet.datasets import CocoDataset
    from mmdet.evaluation import CocoMetric
    ds = CocoDataset(data_root=osp.join(mini, 'coco'), ann_file='annotations/instances_val2017.json',
                     data_prefix=dict(img='val2017/'), test_mode=True, pipeline=[])
    metric = CocoMetric(ann_file=osp.join(mini, 'coco', 'annotations', 'instances_val2017.json'),
                        metric='bbox')
    metric.dataset_meta = ds.metainfo
    samples = []
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        boxes = torch.tensor([inst['bbox'] for inst in info['instances']], dtype=torch.float32)
        labels = torch.tensor([inst['bbox_label'] for inst in info['instances']])
        samples.append(dict(img_id=info['img_id'], ori_shape=(info['height'], info['width']),
                            pred_instances=dict(bboxes=boxes, labels=labels, scores=torch.ones(len(boxes)))))
    metric.process({}, samples)
    res = metric.compute_metrics(metric.results)
    assert res['bbox_mAP'] > 0.99, res
    assert res['bbox_mAP_l'] > 0.99 and res['bbox_mAP_m'] > 0.99


def test_stock_mmseg_ade20k_dataset(mini):
    _import_or_skip('mmseg.datasets')
    cv2 = _cv2()
    from mmengine.registry import init_default_scope
    from mmseg.datasets import ADE20KDataset
    init_default_scope('mmseg')
    base = osp.join(mini, *ADE_ROOT)
    for split, n_img in (('training', 80), ('validation', 20)):
        ds = ADE20KDataset(
            data_root=base, data_prefix=dict(img_path=f'images/{split}', seg_map_path=f'annotations/{split}'),
            pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations')])
        assert len(ds) == n_img and ds.reduce_zero_label
        assert len(ds.metainfo['classes']) == 150
        for k, name in ADE_CLASSES.items():
            assert ds.metainfo['classes'][k - 1] == name
        sample = ds[0]
        raw = cv2.imread(sample['seg_map_path'], cv2.IMREAD_UNCHANGED)
        gt = sample['gt_seg_map']
        assert gt.shape == raw.shape == sample['img'].shape[:2]
        assert (gt[raw == 0] == 255).all() and (raw == 0).any()
        for k in ADE_CLASSES:
            assert (gt[raw == k] == k - 1).all()
        assert set(np.unique(gt).tolist()) <= {255} | {k - 1 for k in ADE_CLASSES}


def test_stock_mmpretrain_datasets(mini):
    _import_or_skip('mmpretrain.datasets')
    from mmengine.registry import init_default_scope
    from mmpretrain.datasets import CustomDataset, ImageNet
    init_default_scope('mmpretrain')
    root = osp.join(mini, 'imagenet')
    pipeline = [dict(type='LoadImageFromFile')]
    for split, n in (('train', 200), ('val', 50)):
        # ann_file + explicit classes (the way the configs use it)
        ds = CustomDataset(data_root=root, data_prefix=split, ann_file=f'meta/{split}.txt',
                           classes=IMAGENET_WNIDS, pipeline=pipeline)
        assert len(ds) == n and list(ds.metainfo['classes']) == IMAGENET_WNIDS
        assert sorted({ds.get_gt_labels()[i] for i in range(n)}) == list(range(10))
        sample = ds[n - 1]
        assert sample['img'].ndim == 3 and sample['gt_label'] == 9
        # folder scan (no ann_file): mmpretrain's own sorted-folder labels equal ours
        scan = CustomDataset(data_root=root, data_prefix=split, pipeline=pipeline)
        assert list(scan.metainfo['classes']) == IMAGENET_WNIDS
        lab = {osp.relpath(info['img_path'], osp.join(root, split)): int(info['gt_label'])
               for info in (scan.get_data_info(i) for i in range(len(scan)))}
        with open(osp.join(root, 'meta', f'{split}.txt')) as f:
            assert lab == {rel: int(label) for rel, label in (ln.split() for ln in f.read().splitlines())}
        # the ImageNet class with split= and explicit classes
        inet = ImageNet(data_root=root, split=split, classes=IMAGENET_WNIDS, pipeline=pipeline)
        assert len(inet) == n and int(inet.get_data_info(0)['gt_label']) == 0
