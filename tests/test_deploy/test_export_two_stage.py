"""End-to-end ONNX export of Mask R-CNN (emo_mm.deploy.two_stage), run in onnxruntime against PyTorch.

* every configs/det/mask_rcnn_*.py exports with seeded weights (``lively_init``: random init detects
  nothing) and onnxruntime gives mmdet's own ``predict`` on real mini images: the same detections (label
  equal, box within 1e-3 relative) and, pasted into the image, >= 99.9% of the mask pixels equal for every
  matched detection; the 1M at 96x128, exported at another size than it is run at, as one padded batch
  of 2 (dynamic batch and size), the other variants (same RPN / RoI / mask heads) at 64x64, one image;
* padding rows of ``dets`` / ``labels`` / ``masks`` (score 0, label -1, mask 0);
* ``emo_mm.deploy.runtime.OnnxModel`` and ``tools/infer.py``'s inferencer with the .onnx against the PyTorch
  checkpoint on original mini images: same boxes and the same pasted masks;
* clear errors: unsupported post-processing, a truncated .onnx, a wrong image.
The tests keep fewer proposals and detections than the configs (the RoI and mask heads dominate the time).
"""
import glob
import os.path as osp

import numpy as np
import pytest
import torch

from emo_mm import deploy, models, testing
from emo_mm.deploy import OnnxModel, Preprocess, deploy_metadata
from emo_mm.apis.inference import read_image_bgr

from tests.utils import ROOT

pytestmark = pytest.mark.usefixtures('flush_denormals')  # seeded weights leave denormal activations

CONFIGS = sorted(glob.glob(str(ROOT / 'configs/det/mask_rcnn_*.py')))
# the mask head (~0.7 GMAC per RoI) and the bbox head (~13 MMAC per proposal) dominate the run time: fewer
# proposals and detections in the tests; 1M: a score threshold that leaves padding rows (~10-15 detections)
SMALL_1M = {'model.test_cfg.rpn.max_per_img': 300, 'model.test_cfg.rcnn.max_per_img': 20,
            'model.test_cfg.rcnn.score_thr': 0.15}
# the other variants differ from the 1M in backbone and FPN inputs only: their RoI heads are slimmed (the 1M
# tests the configs' own; fc6 alone has 12.8 M weights, ~13 MMAC per proposal, the mask convs ~0.7 GMAC per RoI)
SMALL_OTHERS = {'model.test_cfg.rpn.max_per_img': 50, 'model.test_cfg.rcnn.max_per_img': 5,
                'model.roi_head.bbox_head.fc_out_channels': 128, 'model.roi_head.mask_head.conv_out_channels': 64}
# a test resize without keep-ratio to a multiple of 32: no batch padding (the graph clips boxes to the padded
# input, mmdet to the image; see emo_mm.deploy.runtime)
RESIZE = dict(scale=[128, 96], keep_ratio=False, interpolation='bilinear', backend='cv2')


def _images(n=2):
    files = sorted(glob.glob(str(ROOT / 'data/mini/coco/val2017/*.jpg')))[:n]
    assert len(files) == n, 'mini COCO val images missing'
    return [read_image_bgr(f)[0] for f in files]


def _batch(cfg, model, imgs, hw):
    prep = deploy_metadata(cfg, model, 'detector')['emo_mm.preprocess']
    prep['resize'] = dict(RESIZE, scale=[hw[1], hw[0]])
    return torch.from_numpy(Preprocess(prep).batch(imgs)[0])


def _assert_same(res):
    """tools/deployment/export_onnx.py's check (emo_mm.deploy.export.disagreements): the same detections but for NMS ties,
    and the matched detections' pasted masks >= 99.9% equal (each >= 99%)."""
    assert sum(r['pytorch'] for r in res) > 0, 'PyTorch predicts no detections: the comparison would be empty'
    assert not deploy.disagreements('detector', res), (deploy.disagreements('detector', res), res)


@pytest.fixture(scope='module')
def mask_rcnn_1m(tmp_path_factory, mini_data):
    """Mask R-CNN-EMOv2-1M, lively weights, exported at 96x128 with metadata resizing images to 96x128."""
    model, kind, cfg = models.build_model(str(ROOT / 'configs/det/mask_rcnn_emov2_1m.py'), SMALL_1M)
    testing.lively_init(model, probe_size=64)
    meta = deploy_metadata(cfg, model, kind)
    meta['emo_mm.preprocess']['resize'] = RESIZE
    f = str(tmp_path_factory.mktemp('two_stage') / 'mask_rcnn.onnx')
    names, _ = deploy.export_end_to_end(model, kind, f, (96, 128), metadata=meta)
    assert names == ['dets', 'labels', 'masks']
    return model, cfg, f


def test_mask_rcnn_1m_matches_pytorch_at_another_size(mask_rcnn_1m):
    """Exported at 96x128, run on a batch of 2 real images at 128x96: detections and pasted masks agree."""
    model, cfg, f = mask_rcnn_1m
    x = _batch(cfg, model, _images(), (128, 96))
    _assert_same(deploy.compare_end_to_end(model, 'detector', f, x))


@pytest.mark.parametrize('config', [c for c in CONFIGS if not c.endswith('_1m.py')],
                         ids=[osp.basename(c) for c in CONFIGS if not c.endswith('_1m.py')])
def test_other_mask_rcnn_variants_export_and_match(config, tmp_path, mini_data):
    model, kind, cfg = models.build_model(config, SMALL_OTHERS)
    testing.lively_init(model, probe_size=64)  # a 32 probe leaves the 20M's stage 4 at 1x1: badly scaled
    f = str(tmp_path / 'm.onnx')
    deploy.export_end_to_end(model, kind, f, (64, 64))
    _assert_same(deploy.compare_end_to_end(model, kind, f, _batch(cfg, model, _images(1), (64, 64))))


def test_padding_rows(mask_rcnn_1m):
    """Rows past the detections: box and score 0, label -1, mask 0; kept masks are probabilities."""
    import onnxruntime as ort
    model, cfg, f = mask_rcnn_1m
    sess = ort.InferenceSession(f, providers=['CPUExecutionProvider'])
    x = _batch(cfg, model, _images(1), (96, 128)).numpy()
    dets, labels, masks = sess.run(None, {'input': np.concatenate([x, np.zeros_like(x)])})
    k = cfg.model.test_cfg.rcnn.max_per_img
    assert dets.shape == (2, k, 5) and labels.shape == (2, k) and masks.shape == (2, k, 28, 28)
    pad = labels < 0
    assert pad.any() and (~pad).any()
    assert (dets[pad] == 0).all() and (masks[pad] == 0).all()
    kept = masks[~pad]
    assert (kept >= 0).all() and (kept <= 1).all() and kept.std() > 0.01
    assert (dets[~pad, 4] > cfg.model.test_cfg.rcnn.score_thr).all()


def test_onnx_inferencer_draws_what_the_checkpoint_draws(mask_rcnn_1m, tmp_path):
    """tools/infer.py's inferencer with the .onnx vs with the PyTorch checkpoint, on original mini images
    (any size: the config's resize, boxes and masks back in image pixels): same boxes, labels and masks."""
    from emo_mm.apis.inference import build_inferencer, infer
    model, cfg, f = mask_rcnn_1m
    cfg = cfg.copy()
    cfg.test_dataloader.dataset.pipeline[1].update(scale=(128, 96), keep_ratio=False)
    ckpt = str(tmp_path / 'mask_rcnn.pth')
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, ckpt)
    torch_inf, _ = build_inferencer(cfg, ckpt, device='cpu')
    onnx_inf, _ = build_inferencer(f, None)
    imgs = _images()
    n, first = 0, None
    for img, got in zip(imgs, onnx_inf(imgs)['predictions']):
        got = got.pred_instances
        ref = torch_inf([img], return_datasamples=True, no_save_vis=True)['predictions'][0].pred_instances
        n += len(ref)
        assert len(got) == len(ref) and (got.labels == ref.labels).float().mean() >= 0.95
        rb, gb = ref.bboxes.numpy(), got.bboxes.numpy()
        same = np.abs(gb - rb).max(1) <= 1e-3 * np.maximum(np.abs(rb).max(1), 1)
        assert same.mean() >= 0.95, np.abs(gb - rb).max()
        assert got.masks.shape == ref.masks.shape == (len(ref), *img.shape[:2])
        assert (got.masks[same] == ref.masks[same]).float().mean() >= 0.999
        assert ref.masks.any()
        first = first or ref
    assert n > 0
    # tools/infer.py model.onnx IMAGE: the picture, and as many boxes and non-empty masks as PyTorch's
    files = sorted(glob.glob(str(ROOT / 'data/mini/coco/val2017/*.jpg')))[:1]
    res = infer(f, None, files, out_dir=str(tmp_path / 'vis'), score_thr=0.0)[0]
    assert osp.isfile(res.out_file) and res.num_instances == len(first)
    assert res.num_masks == int(first.masks.flatten(1).any(1).sum()) > 0


def test_clear_errors(mask_rcnn_1m, tmp_path):
    """Unsupported post-processing names the key; a truncated .onnx names the file; a wrong image its shape."""
    from emo_mm.deploy.two_stage import TwoStageEndToEnd
    model, cfg, f = mask_rcnn_1m
    nms = model.test_cfg.rcnn.nms
    nms.type = 'soft_nms'
    try:
        with pytest.raises(ValueError, match=r"model.test_cfg.rcnn.nms.type must be 'nms'.*'soft_nms'"):
            TwoStageEndToEnd(model)
    finally:
        nms.type = 'nms'
    broken = tmp_path / 'broken.onnx'
    broken.write_bytes(open(f, 'rb').read()[:4096])
    with pytest.raises(Exception, match='broken.onnx'):
        OnnxModel(str(broken))
    with pytest.raises(ValueError, match=r'expected a BGR uint8 image \(H, W, 3\), got uint8 \(40, 50\)'):
        OnnxModel(f).predict(np.zeros((40, 50), np.uint8))
