"""Synthetic mini COCO: colour-coded shapes of 5 COCO classes with exact boxes, areas and polygons."""
import json
import math
import os
import os.path as osp

import cv2
import numpy as np

from emo_mm.datasets.synthetic.common import _background, _imwrite, _rs, _to_u8

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
                      contributor='tools/misc/make_mini_data.py', date_created='2026-01-01'),
            licenses=[dict(id=1, name='synthetic', url='')],
            images=images, annotations=annotations, categories=categories)
        with open(osp.join(root, 'annotations', f'instances_{split}.json'), 'w') as f:
            json.dump(coco, f, separators=(',', ':'))
        counts[split] = dict(images=len(images), annotations=len(annotations))
    return counts
