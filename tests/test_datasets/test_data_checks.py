"""Bad data is named before it bites: broken images and segmentation maps in the checked pipelines, broken
annotation files in the preflight, and a truncated image inside a dataloader worker of tools/train.py."""
import json
import shutil

import numpy as np
import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image

import emo_mm  # noqa: F401
from emo_mm.apis.preflight import PreflightError, check
from emo_mm.datasets.checks import BadDataError, annotation_problem, guard_pipelines, image_file_problem

from tests.utils import ROOT, run_tool


def _copy_coco(mini_data, dst, n_images=4):
    """A COCO copy with the first ``n_images`` train images of the mini set (data/mini stays untouched)."""
    src = mini_data / 'coco'
    ann = json.loads((src / 'annotations' / 'instances_train2017.json').read_text())
    ann['images'] = ann['images'][:n_images]
    keep = {im['id'] for im in ann['images']}
    ann['annotations'] = [a for a in ann['annotations'] if a['image_id'] in keep]
    (dst / 'annotations').mkdir(parents=True)
    (dst / 'train2017').mkdir()
    for im in ann['images']:
        shutil.copy(src / 'train2017' / im['file_name'], dst / 'train2017' / im['file_name'])
    (dst / 'annotations' / 'instances_train2017.json').write_text(json.dumps(ann))
    return ann


def _det_dataset(root):
    from mmengine.registry import DATASETS
    cfg = Config.fromfile(str(ROOT / 'configs/det/ssdlite_emo_1m.py'))
    ds = cfg.train_dataloader.dataset.dataset
    ds.update(data_root=str(root) + '/', ann_file='annotations/instances_train2017.json',
              data_prefix=dict(img='train2017/'))
    guard_pipelines(cfg, ('train_dataloader',))
    init_default_scope('mmdet')
    return DATASETS.build(ds)


@pytest.mark.parametrize('damage,problem', [
    ('truncate', 'truncated JPEG'),
    ('text', 'not a decodable image'),
    ('delete', 'file not found'),
])
def test_broken_image_is_named(mini_data, tmp_path, damage, problem):
    ann = _copy_coco(mini_data, tmp_path)
    victim = tmp_path / 'train2017' / ann['images'][2]['file_name']
    if damage == 'truncate':
        victim.write_bytes(victim.read_bytes()[:victim.stat().st_size // 2])
    elif damage == 'text':
        victim.write_text('this is not a JPEG\n')
    else:
        victim.unlink()
    dataset = _det_dataset(tmp_path)
    assert dataset[0]['inputs'].shape[0] == 3  # intact images load through the checked pipeline
    with pytest.raises(BadDataError) as err:
        dataset.prepare_data(2)
    msg = str(err.value)
    assert msg.startswith(f'{victim}: ')
    if problem == 'not a decodable image':  # the header does not look like a JPEG: the decoder says so
        assert 'LoadImageFromFile failed' in msg and 'failed to load image' in msg
    else:
        assert problem in msg


def test_image_checks_accept_intact_files(mini_data):
    for path in list((mini_data / 'coco' / 'train2017').iterdir())[:5] + \
            list((mini_data / 'ade/ADEChallengeData2016/annotations/training').iterdir())[:5]:
        assert image_file_problem(str(path)) is None, path


def test_truncated_image_stops_tools_train_in_worker_with_one_line(mini_data, tmp_path):
    """The real tool, with dataloader workers: the message names the file, no worker traceback."""
    ann = _copy_coco(mini_data, tmp_path / 'coco')
    victim = tmp_path / 'coco' / 'train2017' / ann['images'][1]['file_name']
    victim.write_bytes(victim.read_bytes()[:2000])
    proc = run_tool('tools/train.py', 'configs/det/ssdlite_emo_1m.py', '--mini', '--work-dir', tmp_path / 'w',
                    '--cfg-options', f'train_dataloader.dataset.dataset.data_root={tmp_path}/coco/',
                    'train_dataloader.num_workers=1', 'train_dataloader.batch_size=4', 'train_cfg.max_epochs=1',
                    'train_dataloader.persistent_workers=False', check=False, timeout=600)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-2:] == [
        f'bad data: {victim}: truncated JPEG (2000 bytes): no end-of-image marker, the file was cut short',
        'docs/cluster.md "Bad data" explains how to find and fix such files.']
    assert 'Traceback' not in proc.stderr


def test_seg_map_of_other_size_is_named(mini_data, tmp_path):
    from mmengine.registry import DATASETS
    src = mini_data / 'ade' / 'ADEChallengeData2016'
    for sub in ('images/training', 'annotations/training'):
        (tmp_path / sub).mkdir(parents=True)
    stems = sorted(p.stem for p in (src / 'images/training').glob('*.jpg'))[:2]
    for stem in stems:
        shutil.copy(src / f'images/training/{stem}.jpg', tmp_path / f'images/training/{stem}.jpg')
        shutil.copy(src / f'annotations/training/{stem}.png', tmp_path / f'annotations/training/{stem}.png')
    seg = tmp_path / f'annotations/training/{stems[1]}.png'
    small = Image.open(seg).resize((17, 11), Image.NEAREST)
    small.save(seg)
    h, w = np.asarray(Image.open(tmp_path / f'images/training/{stems[1]}.jpg')).shape[:2]
    cfg = Config.fromfile(str(ROOT / 'configs/seg/deeplabv3_emo_1m.py'))
    cfg.train_dataloader.dataset.data_root = str(tmp_path)
    guard_pipelines(cfg, ('train_dataloader',))
    init_default_scope('mmseg')
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    assert dataset[0]['inputs'].shape[0] == 3
    with pytest.raises(BadDataError) as err:
        dataset.prepare_data(1)
    assert str(err.value) == f'{seg}: segmentation map is 11x17 (HxW) but its image ' \
                             f'{tmp_path}/images/training/{stems[1]}.jpg is {h}x{w}'


@pytest.mark.parametrize('content,problem', [
    ('{"images": [', 'not valid json: Expecting value at line 1, column 13'),
    ('{"annotations": [], "categories": []}', "has no 'images' list (top-level keys: ['annotations', "
                                              "'categories'])"),
    ('{"images": [], "annotations": [], "categories": []}', "its 'images' list is empty"),
])
def test_broken_annotation_file_stops_preflight(mini_data, tmp_path, content, problem):
    _copy_coco(mini_data, tmp_path, n_images=1)
    ann = tmp_path / 'annotations' / 'instances_train2017.json'
    ann.write_text(content)
    assert problem in annotation_problem(str(ann), 'CocoDataset')
    cfg = Config.fromfile(str(ROOT / 'configs/det/ssdlite_emo_1m.py'))
    cfg.train_dataloader.dataset.dataset.data_root = str(tmp_path) + '/'
    cfg.model.backbone.init_cfg = None
    with pytest.raises(PreflightError) as err:
        check(cfg, ('train_dataloader',))
    assert f'train_dataloader: annotation file {ann} {problem}' in str(err.value)
