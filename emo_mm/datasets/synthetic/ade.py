"""Synthetic mini ADE20K: textured regions of 5 ADE20K classes with their label maps."""
import os
import os.path as osp

import cv2
import numpy as np

from emo_mm.datasets.synthetic.common import _background, _imwrite, _rs, _to_u8

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
