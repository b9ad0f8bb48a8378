"""End-to-end ONNX export of every detector / segmentor config, run in onnxruntime against PyTorch.

* every config in configs/det and configs/seg exports (in-process, small input) and onnxruntime gives the
  model's own ``predict`` on two real mini images (one padded batch of 2: dynamic batch and size):
  detectors the same count and the same detections (label equal, coordinates within 1e-3 relative) but for
  NMS ties (two candidates whose scores agree to float32 rounding, and what NMS / the top-K cut differently
  because of them: ``emo_mm.deploy.export.unexplained_detections``), segmentors >= 99.9% equal pixels,
  outright; weights are seeded by ``lively_init`` so that there ARE detections (random init detects nothing);
  Mask R-CNN configs: tests/test_deploy/test_export_two_stage.py;
* the graph runs at another size than the export size, and pads its outputs to max_per_img with label -1;
* ``emo_mm.deploy.runtime.OnnxModel`` (the config's own resize, boxes in original pixels) against mmdet's
  ``inference_detector`` on original mini images; ``tools/deployment/export_onnx.py`` and ``tools/infer.py model.onnx``
  as a user runs them.
"""
import glob
import os.path as osp

import numpy as np
import pytest
import torch

from emo_mm import deploy, models, testing
from emo_mm.deploy import OnnxModel, Preprocess, deploy_metadata
from emo_mm.apis.inference import read_image_bgr

from tests.utils import ROOT, run_tool

ALL_CONFIGS = sorted(c for c in glob.glob(str(ROOT / 'configs/det/*.py')) + glob.glob(str(ROOT / 'configs/seg/*.py'))
                     if not osp.basename(c).startswith('mask_rcnn'))  # tests/test_deploy/test_export_two_stage.py
# An SSDLite _512 config is its 320 twin but for the Resize scales (tests/test_configs/test_det_configs.py): at the
# test's input size it exports the twin's graph; test_512_configs_export_their_twins_graph checks that, and the
# metadata that carries the 512 resize.
TWIN_512 = [c for c in ALL_CONFIGS if c.endswith('_512.py')]
CONFIGS = [c for c in ALL_CONFIGS if c not in TWIN_512]
# small test inputs (H, W): SSDLite's six levels and RetinaNet's P7 (stride 128) still exist at 96;
# exported at SMALL, compared at OTHER (a size baked into the graph fails)
SMALL = {'detector': (96, 128), 'segmentor': (64, 96)}
OTHER = {'detector': (128, 96), 'segmentor': (96, 64)}
pytestmark = pytest.mark.usefixtures('flush_denormals')  # seeded weights leave denormal activations
MINI_DIRS = {'detector': 'data/mini/coco/val2017', 'segmentor': 'data/mini/ade/ADEChallengeData2016/images/validation'}


def _images(mini_data, kind, n=2):
    files = sorted(glob.glob(str(ROOT / MINI_DIRS[kind] / '*.jpg')))[:n]
    assert len(files) == n, f'mini images missing under {MINI_DIRS[kind]}'
    return [read_image_bgr(f)[0] for f in files]


def _small_batch(cfg, model, kind, imgs, hw):
    """Real images, resized (no keep-ratio) to ``hw`` with the config's normalisation, as one batch."""
    prep = deploy_metadata(cfg, model, kind)['emo_mm.preprocess']
    prep['resize'] = dict(scale=[hw[1], hw[0]], keep_ratio=False, interpolation='bilinear', backend='cv2')
    x, _ = Preprocess(prep).batch(imgs)
    return torch.from_numpy(x)


def _assert_same(kind, res):
    """The export check of tools/deployment/export_onnx.py (emo_mm.deploy.export.disagreements): detectors the same
    detections (label, box within 1e-3 relative) but for NMS ties -- two candidates whose scores agree to
    float32 rounding, and what NMS suppressed or the top-K cut because of that, down chains of overlapping
    boxes -- and >= 75% outright (``deploy.OUTRIGHT_SHARE``; measured 0-3 ties in 200-400 detections
    per config, up to 35 of 200 in a chain; a wrong box or score in the graph would differ everywhere);
    segmentors >= 99.9% of the pixels equal outright (measured 99.98-100%)."""
    if kind == 'detector':
        assert sum(r['pytorch'] for r in res) > 0, 'PyTorch predicts no detections: the comparison would be empty'
    assert not deploy.disagreements(kind, res), (deploy.disagreements(kind, res), res)


@pytest.mark.parametrize('config', CONFIGS, ids=[osp.relpath(c, ROOT / 'configs') for c in CONFIGS])
def test_every_config_exports_and_matches_pytorch(config, mini_data, tmp_path):
    model, kind, cfg = models.build_model(config)
    assert kind in ('detector', 'segmentor')
    testing.lively_init(model, probe_size=64)
    f = str(tmp_path / 'm.onnx')
    meta = deploy_metadata(cfg, model, kind)
    assert meta['emo_mm.classes'], 'class names missing from the metadata'
    deploy.export_end_to_end(model, kind, f, SMALL[kind], metadata=meta)
    x = _small_batch(cfg, model, kind, _images(mini_data, kind), OTHER[kind])
    _assert_same(kind, deploy.compare_end_to_end(model, kind, f, x))


@pytest.mark.parametrize('config', TWIN_512, ids=[osp.basename(c) for c in TWIN_512])
def test_512_configs_export_their_twins_graph(config):
    """The _512 model is its twin's (same modules, same tensors once seeded alike): the exported graph at a
    given input size is the same; the metadata differ only in the resize, 512x512."""
    twin = config.replace('_512.py', '.py')
    assert twin in CONFIGS
    built = {}
    for path in (config, twin):
        torch.manual_seed(0)  # the same default init for the same modules
        model, kind, cfg = models.build_model(path)
        built[path] = model, kind, cfg, deploy_metadata(cfg, model, kind)
    (big, kind, _, meta_big), (small, kind_twin, _, meta_twin) = built[config], built[twin]
    assert kind == kind_twin == 'detector' and repr(big) == repr(small)
    assert big.state_dict().keys() == small.state_dict().keys()
    assert all(torch.equal(v, small.state_dict()[k]) for k, v in big.state_dict().items())
    assert list(meta_big['emo_mm.preprocess'].pop('resize')['scale']) == [512, 512]
    assert list(meta_twin['emo_mm.preprocess'].pop('resize')['scale']) == [320, 320]
    assert meta_big == meta_twin


@pytest.fixture(scope='module')
def ssdlite(tmp_path_factory):
    """SSDLite-EMO-1M with lively weights, exported (deploy backbone) at its 320x320 with metadata."""
    config = str(ROOT / 'configs/det/ssdlite_emo_1m.py')
    model, kind, cfg = models.build_model(config)
    testing.lively_init(model)
    models.switch_to_deploy(model)
    f = str(tmp_path_factory.mktemp('onnx') / 'ssdlite.onnx')
    deploy.export_end_to_end(model, kind, f, (320, 320), metadata=deploy_metadata(cfg, model, kind))
    return model, cfg, f


def test_detector_graph_other_size_and_padding(ssdlite, mini_data):
    """Exported at 320x320, run at 256x384 (dynamic H, W); rows past the detections are score 0, label -1."""
    model, cfg, f = ssdlite
    x = _small_batch(cfg, model, 'detector', _images(mini_data, 'detector', 1), (256, 384))
    _assert_same('detector', deploy.compare_end_to_end(model, 'detector', f, x))
    import onnxruntime as ort
    sess = ort.InferenceSession(f, providers=['CPUExecutionProvider'])
    dets, labels = sess.run(None, {'input': np.zeros((3, 3, 320, 320), np.float32)})
    k = cfg.model.test_cfg.max_per_img
    assert dets.shape == (3, k, 5) and labels.shape == (3, k)
    pad = labels < 0
    assert (labels[pad] == -1).all() and (dets[pad] == 0).all()
    assert (dets[~pad, 4] > cfg.model.test_cfg.score_thr).all()


def test_onnx_model_matches_mmdet_inference_on_original_images(ssdlite, mini_data):
    """OnnxModel (config's resize to 320x320, normalisation, boxes back in image pixels) vs mmdet."""
    from mmdet.apis import inference_detector
    model, cfg, f = ssdlite
    model.cfg = cfg
    onnx = OnnxModel(f)
    assert onnx.task == 'detector' and len(onnx.classes) == 80
    res = []
    for img in _images(mini_data, 'detector'):
        got = onnx.predict(img)
        ref = inference_detector(model, img).pred_instances
        dets = np.concatenate([got['bboxes'], got['scores'][:, None]], 1)
        res.append(deploy.match_detections(dets, got['labels'], ref))
        res[-1]['unexplained'] = deploy.unexplained_detections(dets, got['labels'], ref, res[-1],
                                                                    *deploy.verify.nms_settings(model))
        assert got['bboxes'][:, 2].max() <= img.shape[1] and got['bboxes'][:, 3].max() <= img.shape[0]
    _assert_same('detector', res)


def test_onnx_model_refuses_files_without_metadata(tmp_path):
    """A .onnx without emo_mm metadata (a classifier export) is refused with a message naming the file."""
    model, kind, _ = models.build_model(dict(type='emo_mm.EMO', arch='1m'))
    f = str(tmp_path / 'backbone.onnx')
    deploy.export_onnx(model, kind, f, (64, 64))
    with pytest.raises(ValueError, match='backbone.onnx has no emo_mm metadata'):
        OnnxModel(f)


def test_export_and_infer_cli(tmp_path, mini_data):
    """tools/deployment/export_onnx.py (check on real images) then tools/infer.py model.onnx draws the pictures."""
    onnx = tmp_path / 'ssd.onnx'
    img = sorted(glob.glob(str(ROOT / MINI_DIRS['detector'] / '*.jpg')))[0]
    out = run_tool('tools/deployment/export_onnx.py', 'configs/det/ssdlite_emo_1m.py', '--lively-init', '--out', onnx,
                   '--check-images', img, '--check-batch', '2').stdout
    assert 'onnxruntime vs PyTorch predict at batch 2, 320x320' in out, out
    assert 'MISMATCH' not in out
    out = run_tool('tools/infer.py', onnx, img, '--out-dir', tmp_path / 'vis', '--score-thr', '0.1').stdout
    pic = tmp_path / 'vis' / (osp.splitext(osp.basename(img))[0] + '.jpg')
    assert pic.is_file(), out
    assert 'boxes with score >= 0.1' in out and ' 0 boxes' not in out, out


def test_deploy_bench_quick_smoke(tmp_path):
    """tools/analysis_tools/deploy_bench.py --quick: every runtime row of both models, the reference at ratio 1, plain process."""
    proc = run_tool('tools/analysis_tools/deploy_bench.py', '--quick', '--threads', '1', '--out-dir', tmp_path, timeout=600)
    out = proc.stdout
    assert 'glibc default allocator (a plain process)' in out, out
    rows = [[c.strip() for c in line.strip().strip('|').split('|')] for line in out.splitlines()
            if line.startswith('| SSDLite-')]
    found = {(r[0], r[1], r[2]) for r in rows}
    runtimes = ('onnxruntime', 'onnxruntime static', 'eager')
    expected = {('SSDLite-EMO-1M', mode, rt) for mode in ('plain', 'deploy') for rt in runtimes}
    expected |= {('SSDLite-MobileNetV2', 'plain', rt) for rt in runtimes}
    assert expected <= found, out
    for r in rows:
        ratio, (lo, hi) = float(r[7]), map(float, r[8].split('-'))
        assert lo <= ratio <= hi and float(r[6]) > 0, r
        if r[0] == 'SSDLite-MobileNetV2':
            assert r[7:9] == ['1.00', '1.00-1.00'], r


def _dets(rows):
    """(K, 5) dets and (K,) labels of rows (x1, y1, x2, y2, score, label), padded with 2 rows of label -1."""
    rows = np.array(rows + [(0, 0, 0, 0, 0, -1)] * 2, np.float32)
    return rows[:, :5], rows[:, 5].astype(np.int64)


def _verdict(onnx_rows, ref_rows, iou_thr=0.5, max_dets=4):
    from types import SimpleNamespace
    dets, labels = _dets(onnx_rows)
    r = np.array(ref_rows, np.float32)
    ref = SimpleNamespace(bboxes=torch.from_numpy(r[:, :4]), scores=torch.from_numpy(r[:, 4]),
                          labels=torch.from_numpy(r[:, 5].astype(np.int64)))
    m = deploy.match_detections(dets, labels, ref)
    return m['matched'], deploy.unexplained_detections(dets, labels, ref, m, iou_thr, max_dets)


def test_detection_verdict_allows_nms_ties_only():
    """The detection check: same detections pass; two candidates whose scores agree to float32 rounding may
    swap (and what the swapped one suppresses, and the top-K tail, may differ); anything else is reported."""
    a, b = (10, 10, 50, 50, .6, 3), (10, 18, 50, 58, .6000002, 3)  # overlapping, tied scores
    c = (10, 26, 50, 66, .5, 3)  # suppressed by b (IoU > 0.5), not by a (IoU 0.43)
    d, e = (60, 60, 90, 90, .4, 1), (0, 0, 5, 5, .3, 7)
    assert _verdict([a, d, e], [a, d, e]) == (3, 0)
    assert _verdict([b, d, e], [a, d, e]) == (2, 0)  # the tie swapped
    assert _verdict([a, c, d], [b, d, e], max_dets=3) == (1, 0)  # tie, its cascade, the tail cut
    assert _verdict([a, c, d], [b, d, e], max_dets=4) == (1, 1)  # list not full: e has no excuse
    assert _verdict([a, d, e], [a, d, (0, 0, 5, 5, .3, 6)]) == (2, 2)  # another label
    assert _verdict([a, d, e], [a, d, (0, 0, 5, 5.1, .3001, 7)]) == (2, 2)  # box off by 2%, score by 1e-4
    assert _verdict([a, d, e], [a, d, (70, 0, 75, 5, .3, 7)]) == (2, 0)  # top-K tie far away
    assert _verdict([a, d, e], [a, d, (70, 0, 75, 5, .3, 2)], max_dets=3) == (2, 0)  # the K-th place: any label
    assert _verdict([a, d, e], [a, d, (70, 0, 75, 5, .3, 2)]) == (2, 2)  # ... only where the list is full
    f = (10 + 40 / 3, 10, 50 + 40 / 3, 50, .5, 3)  # IoU with a: 0.5, the NMS threshold
    assert _verdict([a, f, d, e], [a, d, e]) == (3, 0)  # kept by one runtime's NMS, not the other's
    assert _verdict([a, (17, 10, 57, 50, .5, 3), d, e], [a, d, e]) == (3, 1)  # IoU 0.7: no tie
    assert _verdict([(10, 18, 50, 58, .61, 3), d, e], [a, d, e]) == (2, 2)  # scores too far apart for a tie
    g = (10, 34, 50, 74, .45, 3)  # overlaps c (IoU 0.67), not a or b (0.25, 0.43): explained through c
    assert _verdict([a, c, g, d, e], [b, d, e], max_dets=6) == (2, 0)
    assert _verdict([a, c, (10, 44, 50, 84, .45, 3), d, e], [b, d, e], max_dets=6) == (2, 1)  # IoU 0.38 with c


@pytest.mark.parametrize('attn_pre', [True, False], ids=['attn_pre', 'v_first'])
def test_onnx_attention_twin_equals_block(attn_pre):
    """emo_mm.deploy.rewrites' export twin of an EMO attention block computes what the block computes (plain
    and deploy, map a multiple of the window and not), and the end-to-end export swaps it in."""
    from emo_mm.models.backbones import EMO
    from emo_mm.deploy.rewrites import WindowAttentionIRMB, as_traced, export_twin
    torch.manual_seed(0)
    arch, blocks = ('1m', 7 + 2) if attn_pre else ('2m', 8 + 2)  # EMO-1M's stage 4 needs attn_pre (588 / 8 heads)
    net = testing.lively_init(EMO(arch, out_indices=(3, 4), attn_pre=attn_pre, window_size=7), probe_size=64)
    for deploy_mode in (False, True):
        if deploy_mode:
            net.switch_to_deploy()
        for block in (net.stage3[1], net.stage4[2]):
            twin = export_twin(block)
            assert isinstance(twin, WindowAttentionIRMB)
            for hw in ((14, 21), (9, 12)):
                x = torch.randn(2, block.qk.conv.in_channels, *hw)
                with torch.no_grad():
                    ref, got = block(x), twin(x)
                assert (got - ref).abs().max() <= 1e-5 * ref.abs().max(), (deploy_mode, hw)
    assert export_twin(net.stage3[0]) is None  # no attention: exported as it is
    with as_traced():
        assert export_twin(net.stage3[1]) is None
    swapped = [t for *_, t in deploy.rewrites.ExportableModules(net).swaps if isinstance(t, WindowAttentionIRMB)]
    assert len(swapped) == blocks  # every attention block of stages 3 and 4
