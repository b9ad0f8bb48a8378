"""Bad training data stops the run with the file and the problem, not a traceback from a worker.

* :func:`annotation_problem` (run by ``emo_mm.apis.preflight`` before anything is built): an annotation json that
  is not valid json, or a COCO file without images (mmdet would train on an empty set without a word).
* :class:`CheckedLoading` wraps every ``Load*`` transform of the pipelines (``tools/train.py`` and
  ``tools/test.py`` insert it, :func:`guard_pipelines`): a missing file, an empty file, a JPEG / PNG cut short
  (OpenCV decodes those to a partly grey image with a mere warning: silently different results), a file
  that does not decode as an image, a segmentation map whose size differs from its image's. Each raises
  :class:`BadDataError` naming the file; :func:`exit_on_bad_data` turns it into a one-line exit, also when
  it was raised in a dataloader worker.
"""
import contextlib
import json
import os.path as osp
import sys

from mmcv.transforms import BaseTransform
from mmengine.registry import TRANSFORMS

from emo_mm.registry import register_transform, scoped
from emo_mm.utils.config import dataset_pipelines, type_name

# how far from the end of a JPEG the end-of-image marker may be (cameras append data after it)
_JPEG_TAIL = 4096
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
HELP = 'docs/cluster.md "Bad data" explains how to find and fix such files.'


class BadDataError(RuntimeError):
    """A dataset file is missing or broken; the message names it and says what is wrong."""


def image_file_problem(path):
    """Why the image file ``path`` cannot be used as is, or ``None`` (reads its first and last bytes only)."""
    if not osp.isfile(path):
        return 'file not found'
    size = osp.getsize(path)
    if size == 0:
        return 'empty file (0 bytes)'
    with open(path, 'rb') as f:
        head = f.read(8)
        f.seek(max(0, size - _JPEG_TAIL))
        tail = f.read()
    if head.startswith(b'\xff\xd8\xff') and b'\xff\xd9' not in tail:
        return f'truncated JPEG ({size} bytes): no end-of-image marker, the file was cut short'
    if head == _PNG_SIGNATURE and b'IEND' not in tail[-16:]:
        return f'truncated PNG ({size} bytes): no IEND chunk at its end, the file was cut short'
    return None


def _source_paths(results):
    return [(key, results[key]) for key in ('img_path', 'seg_map_path')
            if isinstance(results.get(key), str) and '://' not in results[key]]


@register_transform
class CheckedLoading(BaseTransform):
    """Runs a loading transform (``transform``) after checking the files it reads; see the module doc."""

    def __init__(self, transform):
        self.loader = TRANSFORMS.build(transform)

    def transform(self, results):
        sources = _source_paths(results)
        for _, path in sources:
            problem = image_file_problem(path)
            if problem:
                raise BadDataError(f'{path}: {problem}')
        try:
            out = self.loader(results)
        except BadDataError:
            raise
        except Exception as err:
            names = ', '.join(p for _, p in sources) or '(no file path in the sample)'
            raise BadDataError(f'{names}: {type(self.loader).__name__} failed: '
                               f'{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ""}') from err
        if out is not None and 'gt_seg_map' in out and 'ori_shape' in out:
            seg_shape, img_shape = tuple(out['gt_seg_map'].shape[:2]), tuple(out['ori_shape'][:2])
            if seg_shape != img_shape:
                raise BadDataError(f'{out.get("seg_map_path")}: segmentation map is {seg_shape[0]}x{seg_shape[1]} '
                                   f'(HxW) but its image {out.get("img_path")} is {img_shape[0]}x{img_shape[1]}')
        return out

    def __repr__(self):
        return f'{type(self).__name__}({self.loader!r})'



def _is_checked(step):
    return isinstance(step, dict) and type_name(step) == CheckedLoading.__name__


def guard_pipelines(cfg, loaders=('train_dataloader', 'val_dataloader', 'test_dataloader')):
    """Wrap every ``Load*`` transform of the datasets in ``loaders`` in :class:`CheckedLoading`, in place."""
    for pipeline in dataset_pipelines(cfg, loaders):
        for i, step in enumerate(pipeline):
            if isinstance(step, dict) and type_name(step).startswith('Load') and not _is_checked(step):
                pipeline[i] = dict(type=scoped(CheckedLoading), transform=step)


def unguard_pipelines(cfg, loaders=('test_dataloader',)):
    """Undo :func:`guard_pipelines` in place: the inferencers look for the bare ``LoadImageFromFile``."""
    for pipeline in dataset_pipelines(cfg, loaders):
        pipeline[:] = [step['transform'] if _is_checked(step) else step for step in pipeline]


def annotation_problem(path, dataset_type=''):
    """Why the annotation file ``path`` cannot be used, or ``None``. Only json files are inspected."""
    if not path.endswith('.json') or not osp.isfile(path):
        return None
    try:
        with open(path, 'rb') as f:
            data = json.load(f)
    except UnicodeDecodeError as err:
        return f'not a text (json) file: {err}'
    except json.JSONDecodeError as err:
        return f'not valid json: {err.msg} at line {err.lineno}, column {err.colno} (truncated or hand-edited?)'
    if 'Coco' in (dataset_type or '') or (isinstance(data, dict) and 'annotations' in data):
        if not isinstance(data, dict) or not isinstance(data.get('images'), list):
            keys = sorted(data) if isinstance(data, dict) else type(data).__name__
            return f"has no 'images' list (top-level keys: {keys}); a COCO annotation file needs " \
                   "'images', 'annotations' and 'categories'"
        if not data['images']:
            return "its 'images' list is empty: the dataset would have no samples"
    return None


def bad_data_message(err):
    """The one-line message of a BadDataError, also when a DataLoader worker re-raised it with its traceback."""
    text = str(err)
    marker = f'{BadDataError.__name__}: '
    return text.rsplit(marker, 1)[-1].strip() if marker in text else text


@contextlib.contextmanager
def exit_on_bad_data():
    """Exit with ``bad data: <file>: <problem>`` instead of a traceback when a sample cannot be loaded."""
    try:
        yield
    except BadDataError as err:
        sys.exit(f'bad data: {bad_data_message(err)}\n{HELP}')
