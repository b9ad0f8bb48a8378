"""Seeded drawing helpers shared by the synthetic dataset generators."""
import math

import cv2
import numpy as np

JPEG_QUALITY = 90


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


def _imwrite(path, img, ext='.jpg', params=None):
    if params is None:
        params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    ok, buf = cv2.imencode(ext, img, params)
    if not ok:
        raise RuntimeError(f'could not encode {path}')
    with open(path, 'wb') as f:
        f.write(buf.tobytes())
