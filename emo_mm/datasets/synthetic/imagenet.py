"""Synthetic mini ImageNet: 10 classes told apart by colour and pattern, in the ImageNet folder layout."""
import os
import os.path as osp

import numpy as np

from emo_mm.datasets.synthetic.common import _background, _imwrite, _rs, _to_u8

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
