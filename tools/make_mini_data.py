#!/usr/bin/env python
"""Write the small synthetic datasets the tests, smoke runs and tutorials train on.

    python tools/make_mini_data.py [--out data/mini] [--seed 0] [--only coco|ade|imagenet] [--force]

Three sets, each in the exact on-disk layout the stock OpenMMLab dataset classes read:

* ``coco/``      mmdet ``CocoDataset``: ``annotations/instances_{train,val}2017.json`` plus
                 ``{train,val}2017/*.jpg``. The json carries the full official COCO category list (80 names,
                 ids 1..90 with gaps), so the stock METAINFO applies; the images contain 5 of them, drawn
                 as colour-coded shapes (1-4 per image) with exact bbox / area / polygon segmentation.
* ``ade/ADEChallengeData2016/``  mmseg ``ADE20KDataset`` (reduce_zero_label): ``images/{training,validation}``
                 ``*.jpg`` and ``annotations/{training,validation}/*.png`` (uint8, 0 = other, 1..150 = class).
* ``imagenet/``  mmpretrain ``ImageNet``/``CustomDataset``: ``{train,val}/<wnid>/*.JPEG`` and
                 ``meta/{train,val}.txt`` ("relpath label"), the first 10 ImageNet wnids, labels 0..9.

Everything is a pure function of ``--seed`` (numpy RandomState per image, fixed JPEG quality), so the same
seed gives byte-identical files with the same OpenCV build. A set is generated in a temporary folder and
renamed into place with a ``.complete`` marker last, so an interrupted run leaves nothing that looks
finished: the next run regenerates it. A complete set is skipped unless ``--force``.
Only numpy and OpenCV are needed (no mmdet/mmseg/mmpretrain).
"""
import argparse
import json
import math
import os
import os.path as osp
import shutil
import sys
import time

import cv2
import numpy as np

JPEG_QUALITY = 90
MARKER = '.complete'
SETS = ('coco', 'ade', 'imagenet')

# --------------------------------------------------------------------------------------------------
# COCO
# --------------------------------------------------------------------------------------------------
# The official 80 COCO categories with their (non-contiguous) ids, in the order of instances_*.json.
COCO_CATEGORIES = [
    (1, 'person', 'person'), (2, 'bicycle', 'vehicle'), (3, 'car', 'vehicle'),
    (4, 'motorcycle', 'vehicle'), (5, 'airplane', 'vehicle'), (6, 'bus', 'vehicle'),
    (7, 'train', 'vehicle'), (8, 'truck', 'vehicle'), (9, 'boat', 'vehicle'),
    (10, 'traffic light', 'outdoor'), (11, 'fire hydrant', 'outdoor'), (13, 'stop sign', 'outdoor'),
    (14, 'parking meter', 'outdoor'), (15, 'bench', 'outdoor'), (16, 'bird', 'animal'),
    (17, 'cat', 'animal'), (18, 'dog', 'animal'), (19, 'horse', 'animal'), (20, 'sheep', 'animal'),
    (21, 'cow', 'animal'), (22, 'elephant', 'animal'), (23, 'bear', 'animal'), (24, 'zebra', 'animal'),
    (25, 'giraffe', 'animal'), (27, 'backpack', 'accessory'), (28, 'umbrella', 'accessory'),
    (31, 'handbag', 'accessory'), (32, 'tie', 'accessory'), (33, 'suitcase', 'accessory'),
    (34, 'frisbee', 'sports'), (35, 'skis', 'sports'), (36, 'snowboard', 'sports'),
    (37, 'sports ball', 'sports'), (38, 'kite', 'sports'), (39, 'baseball bat', 'sports'),
    (40, 'baseball glove', 'sports'), (41, 'skateboard', 'sports'), (42, 'surfboard', 'sports'),
    (43, 'tennis racket', 'sports'), (44, 'bottle', 'kitchen'), (46, 'wine glass', 'kitchen'),
    (47, 'cup', 'kitchen'), (48, 'fork', 'kitchen'), (49, 'knife', 'kitchen'), (50, 'spoon', 'kitchen'),
    (51, 'bowl', 'kitchen'), (52, 'banana', 'food'), (53, 'apple', 'food'), (54, 'sandwich', 'food'),
    (55, 'orange', 'food'), (56, 'broccoli', 'food'), (57, 'carrot', 'food'), (58, 'hot dog', 'food'),
    (59, 'pizza', 'food'), (60, 'donut', 'food'), (61, 'cake', 'food'), (62, 'chair', 'furniture'),
    (63, 'couch', 'furniture'), (64, 'potted plant', 'furniture'), (65, 'bed', 'furniture'),
    (67, 'dining table', 'furniture'), (70, 'toilet', 'furniture'), (72, 'tv', 'electronic'),
    (73, 'laptop', 'electronic'), (74, 'mouse', 'electronic'), (75, 'remote', 'electronic'),
    (76, 'keyboard', 'electronic'), (77, 'cell phone', 'electronic'), (78, 'microwave', 'appliance'),
    (79, 'oven', 'appliance'), (80, 'toaster', 'appliance'), (81, 'sink', 'appliance'),
    (82, 'refrigerator', 'appliance'), (84, 'book', 'indoor'), (85, 'clock', 'indoor'),
    (86, 'vase', 'indoor'), (87, 'scissors', 'indoor'), (88, 'teddy bear', 'indoor'),
    (89, 'hair drier', 'indoor'), (90, 'toothbrush', 'indoor'),
]

# The categories that actually occur: COCO id -> (shape, BGR colour). Colour is the main cue; the ids
# span the range (incl. ids > 80) so the id -> contiguous label mapping is exercised.
COCO_USED = {
    37: ('circle', (40, 40, 225)),      # sports ball: red disc
    38: ('triangle', (30, 215, 235)),   # kite: yellow triangle
    61: ('diamond', (215, 50, 205)),    # cake: magenta diamond
    84: ('rectangle', (215, 95, 25)),   # book: blue (rotated) rectangle, striped
    85: ('ellipse', (50, 190, 45)),     # clock: green ellipse
}
COCO_SPLITS = (('train2017', 160, 1), ('val2017', 40, 100001))  # name, #images, first image id


def _rs(seed, *keys):
    """An independent RandomState per (seed, set, split, index): any subset regenerates identically."""
    return np.random.RandomState([int(seed) & 0xFFFFFFFF] + [int(k) for k in keys])


def _background(rs, h, w, base=None, amp=35.0, noise=10.0, cells=None):
    """Low-saturation textured background: smooth low-frequency field + pixel noise (float32 BGR)."""
    if base is None:
        grey = rs.uniform(85, 165)
        base = grey + rs.uniform(-18, 18, size=3)
    cells = cells or (rs.randint(3, 9), rs.randint(3, 9))
    # mostly brightness variation, a little colour variation (objects are told apart by colour)
    low = (rs.uniform(-amp, amp, size=(cells[0], cells[1], 1))
           + rs.uniform(-0.3 * amp, 0.3 * amp, size=(cells[0], cells[1], 3))).astype(np.float32)
    img = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    img += np.asarray(base, np.float32)[None, None]
    # uniform grey pixel noise of standard deviation ~``noise`` (uint8 draws: ~10x faster than normal())
    k = int(round(noise * math.sqrt(3)))
    if k > 0:
        img += rs.randint(0, 2 * k + 1, size=(h, w, 1), dtype=np.uint8).astype(np.float32) - np.float32(k)
    return img


def _to_u8(img):
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _shape_polygon(rs, shape, cx, cy, size):
    """Integer polygon (N, 2) for a shape of about ``size`` pixels centred on (cx, cy)."""
    ang = rs.uniform(0, 2 * math.pi)
    if shape == 'circle':
        r = size / 2
        t = np.linspace(0, 2 * math.pi, 32, endpoint=False)
        pts = np.stack([r * np.cos(t), r * np.sin(t)], 1)
    elif shape == 'ellipse':
        a, b = size / 2, size / 2 * rs.uniform(0.45, 0.7)
        t = np.linspace(0, 2 * math.pi, 32, endpoint=False)
        pts = np.stack([a * np.cos(t), b * np.sin(t)], 1)
    elif shape == 'triangle':
        r = size / 2
        t = ang + np.array([0, 2 * math.pi / 3, 4 * math.pi / 3])
        pts = np.stack([r * np.cos(t), r * np.sin(t)], 1)
        ang = 0.0
    elif shape == 'diamond':
        a, b = size / 2, size / 2 * rs.uniform(0.55, 0.8)
        pts = np.array([[a, 0], [0, b], [-a, 0], [0, -b]], np.float64)
        ang = rs.uniform(-0.3, 0.3)
    elif shape == 'rectangle':
        a, b = size / 2, size / 2 * rs.uniform(0.5, 0.85)
        pts = np.array([[a, b], [-a, b], [-a, -b], [a, -b]], np.float64)
        ang = rs.uniform(-0.35, 0.35)
    else:
        raise ValueError(shape)
    c, s = math.cos(ang), math.sin(ang)
    pts = pts @ np.array([[c, s], [-s, c]])
    return np.rint(pts + [cx, cy]).astype(np.int32)


def _make_coco_image(seed, split_idx, idx):
    rs = _rs(seed, 1, split_idx, idx)
    w = int(rs.randint(256, 481))
    h = int(np.clip(round(w * rs.uniform(0.6, 1.45)), 200, 480))
    img = _background(rs, h, w)
    cat_ids = sorted(COCO_USED)
    n_obj = int(rs.choice([1, 2, 2, 3, 3, 4]))
    boxes, objs = [], []
    for _ in range(n_obj):
        cat = int(cat_ids[rs.randint(len(cat_ids))])
        shape, colour = COCO_USED[cat]
        for _attempt in range(30):
            # mostly medium/large objects, some small ones (COCO "small" is < 32x32)
            frac = rs.uniform(0.09, 0.22) if rs.rand() < 0.15 else rs.uniform(0.22, 0.6)
            size = max(14.0, frac * min(w, h))
            cx = rs.uniform(size / 2 + 2, w - size / 2 - 3)
            cy = rs.uniform(size / 2 + 2, h - size / 2 - 3)
            poly = _shape_polygon(rs, shape, cx, cy, size)
            poly[:, 0] = np.clip(poly[:, 0], 0, w - 1)
            poly[:, 1] = np.clip(poly[:, 1], 0, h - 1)
            x0, y0 = poly.min(0)
            x1, y1 = poly.max(0)
            # no overlap with earlier objects (with a margin), so masks/boxes are exact
            if all(x0 > bx1 + 3 or x1 < bx0 - 3 or y0 > by1 + 3 or y1 < by0 - 3
                   for bx0, by0, bx1, by1 in boxes):
                break
        else:
            continue
        boxes.append((x0, y0, x1, y1))
        objs.append((cat, shape, colour, poly))
    if not objs:  # cannot happen for the first object, kept as a guard
        raise RuntimeError('no object placed')
    for cat, shape, colour, poly in objs:
        x0, y0 = poly.min(0)
        x1, y1 = poly.max(0)
        ch, cw = int(y1 - y0 + 1), int(x1 - x0 + 1)
        mask = np.zeros((ch, cw), np.uint8)
        cv2.fillPoly(mask, [poly - [x0, y0]], 1)
        jitter = rs.uniform(-18, 18, size=3) + rs.uniform(0.85, 1.1) * np.asarray(colour, np.float32)
        tex = _background(rs, ch, cw, base=jitter, amp=8, noise=8, cells=(2, 2))
        if shape == 'rectangle':  # book: dark horizontal stripes
            period = rs.randint(5, 10)
            tex[((np.arange(ch) + y0) % period) < 2] *= 0.7
        m = mask.astype(bool)
        img[y0:y1 + 1, x0:x1 + 1][m] = tex[m]
    anns = []
    for cat, shape, colour, poly in objs:
        x0, y0 = poly.min(0).tolist()
        x1, y1 = poly.max(0).tolist()
        xs, ys = poly[:, 0].astype(np.float64), poly[:, 1].astype(np.float64)
        area = 0.5 * abs(float(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))))
        anns.append(dict(category_id=cat, bbox=[float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                         area=round(area, 2), iscrowd=0,
                         segmentation=[[float(v) for v in poly.reshape(-1).tolist()]]))
    return _to_u8(img), anns


def _imwrite(path, img, ext='.jpg', params=None):
    if params is None:
        params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    ok, buf = cv2.imencode(ext, img, params)
    if not ok:
        raise RuntimeError(f'could not encode {path}')
    with open(path, 'wb') as f:
        f.write(buf.tobytes())


def _gen_coco(root, seed):
    os.makedirs(osp.join(root, 'annotations'))
    counts = {}
    categories = [dict(id=i, name=n, supercategory=s) for i, n, s in COCO_CATEGORIES]
    ann_id = 1
    for split_idx, (split, n_img, first_id) in enumerate(COCO_SPLITS):
        os.makedirs(osp.join(root, split))
        images, annotations = [], []
        for i in range(n_img):
            img_id = first_id + i
            img, anns = _make_coco_image(seed, split_idx, i)
            fname = '%012d.jpg' % img_id
            _imwrite(osp.join(root, split, fname), img)
            images.append(dict(id=img_id, file_name=fname, width=int(img.shape[1]), height=int(img.shape[0]),
                               license=1, date_captured='2026-01-01 00:00:00'))
            for a in anns:
                annotations.append(dict(id=ann_id, image_id=img_id, **a))
                ann_id += 1
        coco = dict(
            info=dict(description=f'emo_mm synthetic mini COCO (seed {seed})', version='1.0', year=2026,
                      contributor='tools/make_mini_data.py', date_created='2026-01-01'),
            licenses=[dict(id=1, name='synthetic', url='')],
            images=images, annotations=annotations, categories=categories)
        with open(osp.join(root, 'annotations', f'instances_{split}.json'), 'w') as f:
            json.dump(coco, f, separators=(',', ':'))
        counts[split] = dict(images=len(images), annotations=len(annotations))
    return counts


# --------------------------------------------------------------------------------------------------
# ADE20K
# --------------------------------------------------------------------------------------------------
# label id (ADE20K 1-based, before reduce_zero_label) -> name. 0 = "other" (ignored after reduction).
ADE_CLASSES = {1: 'wall', 4: 'floor', 9: 'windowpane', 16: 'table', 18: 'plant'}
ADE_SPLITS = (('training', 'train', 80), ('validation', 'val', 20))
# a few fixed awkward sizes (w, h): no side is a multiple of 7, 10, 16 or 32
ADE_FIXED_SIZES = [(331, 487), (509, 353), (617, 443), (443, 389), (621, 337)]


def _make_ade_image(seed, split_idx, idx):
    rs = _rs(seed, 2, split_idx, idx)
    if idx < len(ADE_FIXED_SIZES):
        w, h = ADE_FIXED_SIZES[idx]
    else:
        w = int(rs.randint(320, 641))
        h = int(np.clip(round(w * rs.uniform(0.55, 1.4)), 240, 640))
        if h == w:
            h -= 1
    yy, xx = np.ogrid[0:h, 0:w]
    # wall above a wavy horizon, floor below
    horizon = (rs.uniform(0.45, 0.7) * h
               + rs.uniform(3, 12) * np.sin(xx / rs.uniform(30, 90) + rs.uniform(0, 6)))  # (1, w)
    is_wall = yy < horizon
    label = np.where(is_wall, np.uint8(1), np.uint8(4))
    # wall: beige with a faint vertical grain; floor: brown planks (dark horizontal seams)
    wall = np.array([150 + rs.uniform(-15, 15), 190 + rs.uniform(-15, 15), 215], np.float32)
    floor = np.array([40 + rs.uniform(-10, 10), 80 + rs.uniform(-10, 10), 125], np.float32)
    img = _background(rs, h, w, base=(0, 0, 0), amp=12, noise=8)
    img += np.where(is_wall[..., None], wall, floor)
    grain = np.where((xx % int(rs.randint(14, 26))) < 2, np.float32(0.93), np.float32(1))
    seams = np.where((yy % int(rs.randint(10, 20))) < 2, np.float32(0.6), np.float32(1))
    img *= np.where(is_wall, grain, seams)[..., None]
    # a thin band of "other" (label 0): a dark skirting board along the horizon, 3-6 px
    band = (yy >= horizon - rs.randint(3, 7)) & is_wall
    label[band] = 0
    img[band] = (35, 35, 35)
    # window panes (on the wall), tables (on the floor), plants (anywhere); textures on the crop only
    for _ in range(int(rs.randint(2, 6))):
        kind = int(rs.choice([9, 16, 18]))
        size = rs.uniform(0.12, 0.35) * min(w, h)
        cx = rs.uniform(size / 2, w - size / 2)
        if kind == 9:
            cy = rs.uniform(size / 2, max(size / 2 + 1, horizon.min() - size / 2))
            a, b = size / 2, size / 2 * rs.uniform(0.8, 1.3)
        elif kind == 16:
            cy = rs.uniform(min(h - size / 2 - 1, horizon.max() + size / 4), h - size / 4)
            a, b = size / 2, size / 4
        else:
            cy = rs.uniform(size / 2, h - size / 2)
            a = b = size / 2 * 1.18
        x0, x1 = max(0, int(cx - a)), min(w, int(cx + a) + 2)
        y0, y1 = max(0, int(cy - b)), min(h, int(cy + b) + 2)
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        ys, xs = yy[y0:y1], xx[:, x0:x1]
        ch, cw = y1 - y0, x1 - x0
        if kind == 9:
            m = (np.abs(xs - cx) <= a) & (np.abs(ys - cy) <= b)
            tex = _background(rs, ch, cw, base=(225, 160, 90), amp=10, noise=6)  # light-blue glass
            frame = m & ((np.abs(xs - cx) < 2) | (np.abs(ys - cy) < 2))  # dark cross frame, (ch, cw)
            tex[frame] = (70, 70, 70)
        elif kind == 16:
            m = (np.abs(xs - cx) <= a) & (np.abs(ys - cy) <= b)
            tex = _background(rs, ch, cw, base=(20, 120, 200), amp=10, noise=6)  # orange wood
            tex[:, (xs[0] % 9) < 3] *= 0.85
        else:
            r = size / 2 * (1 + 0.18 * np.sin(5 * np.arctan2(ys - cy, xs - cx) + rs.uniform(0, 6)))
            m = (xs - cx) ** 2 + (ys - cy) ** 2 <= r ** 2
            tex = _background(rs, ch, cw, base=(50, 160, 40), amp=25, noise=14)  # leafy green
        label[y0:y1, x0:x1][m] = kind
        img[y0:y1, x0:x1][m] = tex[m]
    return _to_u8(img), label


def _gen_ade(root, seed):
    base = osp.join(root, 'ADEChallengeData2016')
    counts = {}
    for split_idx, (split, stem, n_img) in enumerate(ADE_SPLITS):
        img_dir = osp.join(base, 'images', split)
        ann_dir = osp.join(base, 'annotations', split)
        os.makedirs(img_dir)
        os.makedirs(ann_dir)
        for i in range(n_img):
            img, label = _make_ade_image(seed, split_idx, i)
            name = 'ADE_%s_%08d' % (stem, i + 1)
            _imwrite(osp.join(img_dir, name + '.jpg'), img)
            _imwrite(osp.join(ann_dir, name + '.png'), label, '.png', [cv2.IMWRITE_PNG_COMPRESSION, 6])
        counts[split] = dict(images=n_img)
    return counts


# --------------------------------------------------------------------------------------------------
# ImageNet
# --------------------------------------------------------------------------------------------------
IMAGENET_WNIDS = ['n01440764', 'n01443537', 'n01484850', 'n01491361', 'n01494475',
                  'n01496331', 'n01498041', 'n01514668', 'n01514859', 'n01518878']
# per class: (BGR colour, pattern). Distinct hues and patterns; label = index in the sorted wnid list.
IMAGENET_STYLE = [
    ((40, 40, 220), 'disc'), ((40, 200, 40), 'hstripes'), ((220, 60, 40), 'vstripes'),
    ((30, 210, 230), 'checker'), ((200, 40, 200), 'dots'), ((210, 200, 40), 'ring'),
    ((30, 120, 240), 'diagonal'), ((240, 240, 240), 'cross'), ((30, 30, 30), 'square'),
    ((130, 60, 120), 'triangle'),
]
IMAGENET_SPLITS = (('train', 20), ('val', 5))


def _make_imagenet_image(seed, split_idx, label, idx):
    rs = _rs(seed, 3, split_idx, label, idx)
    w, h = int(rs.randint(96, 161)), int(rs.randint(96, 161))
    img = _background(rs, h, w, amp=30, noise=12)
    colour, pattern = IMAGENET_STYLE[label]
    colour = np.asarray(colour, np.float32) * rs.uniform(0.85, 1.1) + rs.uniform(-15, 15, size=3)
    yy, xx = np.mgrid[0:h, 0:w]
    cx, cy = rs.uniform(0.35, 0.65) * w, rs.uniform(0.35, 0.65) * h
    r = rs.uniform(0.25, 0.42) * min(w, h)
    p = int(rs.randint(8, 15))
    off = int(rs.randint(0, p))
    if pattern == 'disc':
        m = (xx - cx) ** 2 + (yy - cy) ** 2 <= r ** 2
    elif pattern == 'hstripes':
        m = ((yy + off) % p) < p // 2
    elif pattern == 'vstripes':
        m = ((xx + off) % p) < p // 2
    elif pattern == 'checker':
        m = (((xx + off) // p) + ((yy + off) // p)) % 2 == 0
    elif pattern == 'dots':
        m = ((xx + off) % p - p / 2) ** 2 + ((yy + off) % p - p / 2) ** 2 <= (p / 3.2) ** 2
    elif pattern == 'ring':
        d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
        m = (d <= r) & (d >= 0.6 * r)
    elif pattern == 'diagonal':
        m = ((xx + yy + off) % p) < p // 2
    elif pattern == 'cross':
        t = max(4, r / 3)
        m = ((np.abs(xx - cx) <= t) & (np.abs(yy - cy) <= r)) | ((np.abs(yy - cy) <= t) & (np.abs(xx - cx) <= r))
    elif pattern == 'square':
        m = (np.abs(xx - cx) <= r) & (np.abs(yy - cy) <= r)
    else:  # triangle
        m = (yy - cy <= r) & (yy - cy >= -r) & (np.abs(xx - cx) <= (yy - cy + r) / 2)
    img[m] = colour + rs.randint(-14, 15, size=(int(m.sum()), 3)).astype(np.float32)
    return _to_u8(img)


def _gen_imagenet(root, seed):
    os.makedirs(osp.join(root, 'meta'))
    counts = {}
    assert IMAGENET_WNIDS == sorted(IMAGENET_WNIDS)  # label index == sorted-wnid position (mmpretrain)
    for split_idx, (split, per_class) in enumerate(IMAGENET_SPLITS):
        lines = []
        for label, wnid in enumerate(IMAGENET_WNIDS):
            os.makedirs(osp.join(root, split, wnid))
            for i in range(per_class):
                img = _make_imagenet_image(seed, split_idx, label, i)
                rel = f'{wnid}/{wnid}_{i + 1}.JPEG'
                _imwrite(osp.join(root, split, rel), img)
                lines.append(f'{rel} {label}\n')
        with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as f:
            f.writelines(lines)
        counts[split] = dict(images=len(lines), classes=len(IMAGENET_WNIDS))
    return counts


# --------------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------------
GENERATORS = {'coco': _gen_coco, 'ade': _gen_ade, 'imagenet': _gen_imagenet}


def _dir_stats(path):
    n, size = 0, 0
    for d, _, files in os.walk(path):
        for f in files:
            n += 1
            size += osp.getsize(osp.join(d, f))
    return n, size


def _read_marker(path):
    try:
        with open(osp.join(path, MARKER)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def is_complete(path):
    """A set is complete when its marker exists and the file count it recorded is still there."""
    marker = _read_marker(path)
    if not marker:
        return False
    n, _ = _dir_stats(path)
    return n - 1 == marker.get('files')


def generate(out='data/mini', seed=0, only=None, force=False, verbose=True):
    """Generate the requested sets under ``out``; returns {set: info}."""
    log = print if verbose else (lambda *a, **k: None)
    names = SETS if only is None else ((only,) if isinstance(only, str) else tuple(only))
    for name in names:
        if name not in GENERATORS:
            raise ValueError(f'unknown set {name!r}, choose from {SETS}')
    os.makedirs(out, exist_ok=True)
    results = {}
    for name in names:
        dst = osp.join(out, name)
        if not force and is_complete(dst):
            marker = _read_marker(dst)
            note = '' if marker.get('seed') == seed else f' (made with seed {marker.get("seed")}; --force to remake)'
            log(f'[mini data] {name}: complete at {dst}, skipped{note}')
            results[name] = dict(marker, skipped=True, path=dst)
            continue
        t0 = time.time()
        tmp = osp.join(out, f'.{name}.tmp{os.getpid()}')
        if osp.exists(tmp):
            shutil.rmtree(tmp)
        os.makedirs(tmp)
        try:
            counts = GENERATORS[name](tmp, seed)
            n_files, size = _dir_stats(tmp)
            marker = dict(seed=seed, counts=counts, files=n_files, bytes=size)
            with open(osp.join(tmp, MARKER), 'w') as f:
                json.dump(marker, f, indent=1, sort_keys=True)
            if osp.lexists(dst):  # incomplete leftover or --force: move away, then swap in
                old = osp.join(out, f'.{name}.old{os.getpid()}')
                os.rename(dst, old)
                os.rename(tmp, dst)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, dst)
        finally:
            if osp.exists(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
        dt = time.time() - t0
        split_txt = ', '.join(f'{s}: ' + ' '.join(f'{v} {k}' for k, v in c.items()) for s, c in counts.items())
        log(f'[mini data] {name}: wrote {split_txt}; {n_files} files, {size / 2 ** 20:.1f} MiB '
            f'in {dt:.1f}s -> {dst}')
        results[name] = dict(marker, skipped=False, path=dst, seconds=dt)
    # clean leftovers of interrupted runs of other processes (dead temp folders)
    for entry in os.listdir(out):
        if entry.startswith('.') and ('.tmp' in entry or '.old' in entry):
            pid = entry.rsplit('.tmp', 1)[-1] if '.tmp' in entry else entry.rsplit('.old', 1)[-1]
            if pid.isdigit() and not _pid_alive(int(pid)):
                shutil.rmtree(osp.join(out, entry), ignore_errors=True)
    return results


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', default='data/mini', help='output root (default: data/mini)')
    p.add_argument('--seed', type=int, default=0, help='random seed (default: 0)')
    p.add_argument('--only', choices=SETS, help='generate only this set')
    p.add_argument('--force', action='store_true', help='regenerate sets that already exist')
    args = p.parse_args(argv)
    t0 = time.time()
    cv2.setNumThreads(1)
    generate(args.out, args.seed, args.only, args.force)
    print(f'[mini data] done in {time.time() - t0:.1f}s under {osp.abspath(args.out)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
