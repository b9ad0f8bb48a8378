"""tools/infer.py (detectors and segmentors, any image) and tools/analysis_tools/results_table.py."""
import json
import re

import cv2
import numpy as np
import pytest
import torch

from emo_mm.apis.inference import ImageReadError, read_image_bgr
from emo_mm.analysis.results import load_metafile, read_work_dir

from tests.utils import ROOT, run_length, run_tool, tool_exit_message

COCO = 'data/mini/coco'
FIT_EPOCHS = run_length('ssdlite_emo_1m', 'fit')


@pytest.fixture(scope='session')
def trained(learning_runs):
    """Work dir of SSDLite-EMO-1M fitted to the first 8 mini COCO train images (the memorisation run of
    tests/test_learning, trained once per session): a checkpoint that finds the objects of those images."""
    return learning_runs('ssdlite_emo_1m', 'fit')[1]


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    """RGB, grayscale, RGBA and 16-bit grayscale inputs of odd sizes and aspect ratios, plus broken files."""
    rs = np.random.RandomState(0)
    d = tmp_path_factory.mktemp('images')
    files = {
        'rgb': (d / 'photo.jpg', rs.randint(0, 255, (123, 457, 3), np.uint8)),
        'gray': (d / 'gray.png', rs.randint(0, 255, (301, 77), np.uint8)),
        'rgba': (d / 'logo.png', rs.randint(0, 255, (61, 999, 4), np.uint8)),
        'gray16': (d / 'depth.png', rs.randint(0, 65535, (97, 203), np.uint16)),
    }
    for path, img in files.values():
        assert cv2.imwrite(str(path), img)
    (d / 'broken.jpg').write_bytes(b'this is not a jpeg')
    return {k: v[0] for k, v in files.items()}


# ------------------------------------------------------------------------------------------ image reading
def test_read_image_conversions(images):
    img, note = read_image_bgr(str(images['rgb']))
    assert img.shape == (123, 457, 3) and img.dtype == np.uint8 and note is None
    img, note = read_image_bgr(str(images['gray']))
    assert img.shape == (301, 77, 3) and 'grayscale' in note
    assert np.array_equal(img[..., 0], img[..., 2])
    img, note = read_image_bgr(str(images['rgba']))
    assert img.shape == (61, 999, 3) and 'alpha dropped' in note
    img, note = read_image_bgr(str(images['gray16']))
    assert img.shape == (97, 203, 3) and img.dtype == np.uint8 and '8-bit' in note


def test_read_image_errors_name_the_file(images, tmp_path):
    with pytest.raises(ImageReadError, match='image not found: .*missing.jpg'):
        read_image_bgr(str(tmp_path / 'missing.jpg'))
    broken = str(images['rgb'].parent / 'broken.jpg')
    with pytest.raises(ImageReadError, match=f'cannot read image {broken}'):
        read_image_bgr(broken)


# --------------------------------------------------------------------------------------- tools/infer.py
@pytest.fixture(scope='module')
def det_infer(trained, images, tmp_path_factory):
    """One tools/infer.py run of the fitted SSDLite (score >= 0.3) on the odd inputs and on 2 of the mini COCO
    train images it was fitted to: (out dir, odd inputs, fitted images, stdout, {image: (boxes, class names)}).

    It runs the config as trained (dumped in the work dir: the fit's 192x192 test pipeline); at the config's own
    320x320 the memorised model finds nothing above 0.3."""
    out = tmp_path_factory.mktemp('det_infer')
    odd = [images['rgb'], images['gray'], images['rgba'], images['gray16']]
    fitted = sorted((ROOT / COCO / 'train2017').glob('*.jpg'))[:2]
    proc = run_tool('tools/infer.py', trained / 'ssdlite_emo_1m.py', trained / f'epoch_{FIT_EPOCHS}.pth', *odd,
                    *fitted, '--out-dir', out, '--score-thr', '0.3', '--mini', timeout=300)
    found = re.findall(r'^(\S+) \(\d+x\d+\).*?: (\d+) boxes with score >= \S+ \(([^)]*)\)', proc.stdout, flags=re.M)
    return out, odd, fitted, proc.stdout, {path: (int(n), set(names.split(', ')) - {'-'}) for path, n, names in found}


def _annotated_boxes(file_name):
    """(N, 4) x1, y1, x2, y2 of the objects annotated on a mini COCO train image."""
    coco = json.loads((ROOT / COCO / 'annotations' / 'instances_train2017.json').read_text())
    image_id = next(img['id'] for img in coco['images'] if img['file_name'] == file_name)
    boxes = [a['bbox'] for a in coco['annotations'] if a['image_id'] == image_id]
    return torch.tensor([[x, y, x + w, y + h] for x, y, w, h in boxes], dtype=torch.float32)


def test_infer_draws_boxes_on_fitted_images(det_infer, trained):
    """On the mini COCO train images it was fitted to, tools/infer.py draws the boxes the model predicts, and
    they lie on the annotated objects (IoU >= 0.5 with one of them, whatever the class: which class a
    from-scratch fit names for an object differs between CPUs' float rounding; the fit's class-aware mAP is
    tests/test_learning's)."""
    from mmdet.structures.bbox import bbox_overlaps

    from emo_mm.apis.inference import build_inferencer
    out, _, fitted, stdout, found = det_infer
    inferencer, _ = build_inferencer(str(trained / 'ssdlite_emo_1m.py'), str(trained / f'epoch_{FIT_EPOCHS}.pth'),
                                     device='cpu', mini=True)
    for path in fitted:
        boxes, _ = found[str(path)]
        assert boxes >= 1, (path.name, stdout)
        drawn = cv2.imread(str(out / (path.stem + '.jpg'))).astype(np.int16)
        orig = cv2.imread(str(path)).astype(np.int16)
        assert np.abs(drawn - orig).mean() > 0.5  # boxes and labels were drawn
        pred = inferencer([read_image_bgr(str(path))[0]], return_datasamples=True,
                          no_save_vis=True)['predictions'][0].pred_instances
        kept = pred.bboxes[pred.scores >= 0.3]
        assert len(kept) == boxes, (path.name, len(kept), stdout)  # the tool drew what the model predicts
        iou = bbox_overlaps(kept, _annotated_boxes(path.name))
        on_objects = (iou.max(dim=1).values >= 0.5).float().mean().item()
        assert on_objects >= 0.5, (path.name, iou)


def test_infer_missing_or_broken_image_is_a_clear_error(images, tmp_path, monkeypatch):
    missing = tmp_path / 'nope.png'
    message = tool_exit_message(monkeypatch, 'tools/infer.py', 'configs/det/ssdlite_emo_1m.py', 'none', images['rgb'], missing,
                              '--out-dir', tmp_path / 'x')
    assert message == f'error: image not found: {missing}'
    broken = images['rgb'].parent / 'broken.jpg'
    message = tool_exit_message(monkeypatch, 'tools/infer.py', 'configs/det/ssdlite_emo_1m.py', 'none', broken,
                              '--out-dir', tmp_path / 'x')
    assert message.startswith(f'error: cannot read image {broken}'), message
    assert not (tmp_path / 'x').exists()  # every image is read before anything is built or written


@pytest.mark.parametrize('args, message', [
    (['model.onnx'], 'no image files given after model.onnx (MODEL.onnx IMAGE'),
    (['configs/det/ssdlite_emo_1m.py'], 'no checkpoint given after configs/det/ssdlite_emo_1m.py'),
    (['configs/det/ssdlite_emo_1m.py', 'none'], 'no image files given (CONFIG CHECKPOINT IMAGE')])
def test_infer_missing_positionals_name_what_is_missing(args, message, monkeypatch):
    assert message in tool_exit_message(monkeypatch, 'tools/infer.py', *args)


def test_infer_segmentor(images, tmp_path):
    """A segmentor config: colour overlay per input (random weights saved as a plain checkpoint)."""
    seg_cfgs = sorted((ROOT / 'configs' / 'seg').glob('deeplabv3_emo_1m*.py'))
    if not seg_cfgs:
        pytest.skip('no configs/seg/deeplabv3_emo_1m*.py')
    from mmengine.config import Config
    from mmseg.registry import MODELS
    import mmseg.models  # noqa: F401
    cfg = Config.fromfile(str(seg_cfgs[0]))
    cfg.model.backbone.init_cfg = None
    cfg.model.pop('pretrained', None)
    from mmengine.registry import init_default_scope
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    ckpt = tmp_path / 'seg_random.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, ckpt)
    out = tmp_path / 'seg_out'
    inputs = [images['rgb'], images['gray'], images['rgba']]
    proc = run_tool('tools/infer.py', seg_cfgs[0], ckpt, *inputs, '--out-dir', out, timeout=300)
    for path in inputs:
        pic = out / (path.stem + '.jpg')
        assert pic.is_file(), proc.stdout
        assert cv2.imread(str(pic)).shape[:2] == cv2.imread(str(path), cv2.IMREAD_UNCHANGED).shape[:2]
    assert 'classes:' in proc.stdout


# ---------------------------------------------------------------------------------- tools/analysis_tools/results_table.py
def test_results_table_parses_finished_work_dir(trained):
    work = trained
    res = read_work_dir(str(work))
    assert res.ok, res.problem
    assert res.codebase == 'mmdet' and res.step == FIT_EPOCHS and res.max_step == FIT_EPOCHS
    assert set(res.metrics) == {'AP', 'AP50', 'AP75', 'APs', 'APm', 'APl'}
    pub = load_metafile(str(ROOT / 'configs' / 'det' / 'metafile.yml'))['ssdlite_emo_1m']
    proc = run_tool('tools/analysis_tools/results_table.py', work, timeout=300)
    row = next(ln for ln in proc.stdout.splitlines() if ln.startswith('| ssdlite_emo_1m'))
    ap = res.metrics['AP']
    assert f'{ap:.1f} ({pub.metrics["AP"]:.1f}, {ap - pub.metrics["AP"]:+.1f})' in row, proc.stdout
    assert '(2.30, ' in row  # published params 2.3 M, ours beside it
    assert 'Params (M)' in proc.stdout and 'APl' in proc.stdout


def test_results_table_unfinished_work_dir(tmp_path):
    """A work dir whose run never evaluated gets a clear line (and exit 1 when nothing has a result)."""
    work = tmp_path / 'ssdlite_emo_2m'
    (work / '20260101_000000' / 'vis_data').mkdir(parents=True)
    (work / 'ssdlite_emo_2m.py').write_text((ROOT / 'configs' / 'det' / 'ssdlite_emo_2m.py').read_text()
                                            .replace("'./_base_/", f"'{ROOT}/configs/det/_base_/"))
    lines = [{'lr': 1e-3, 'loss': 5.0, 'epoch': 1, 'iter': 10, 'step': 10}]
    (work / '20260101_000000' / 'vis_data' / 'scalars.json').write_text(
        '\n'.join(json.dumps(x) for x in lines) + '\n')
    empty = tmp_path / 'empty'
    empty.mkdir()
    proc = run_tool('tools/analysis_tools/results_table.py', work, empty, '--no-complexity', check=False, timeout=120)
    assert proc.returncode == 1
    assert f'{work}: no result: no finished evaluation in the logs' in proc.stdout
    assert f'{empty}: no result: no mmengine log found' in proc.stdout
