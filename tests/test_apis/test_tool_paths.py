"""Tools that find repository files from their own location still find them from their subfolder."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(relpath):
    spec = importlib.util.spec_from_file_location(Path(relpath).stem, ROOT / relpath)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_table_finds_the_metafiles():
    tool = _load('tools/analysis_tools/results_table.py')
    from emo_mm.analysis import default_metafiles
    assert Path(tool.REPO_ROOT) == ROOT
    assert sorted(Path(p).relative_to(ROOT).as_posix() for p in default_metafiles(tool.REPO_ROOT)) == [
        'configs/det/metafile.yml', 'configs/seg/metafile.yml']  # the tool compares det / seg runs


@pytest.mark.parametrize('kind', ['detector', 'segmentor'])
def test_export_onnx_finds_its_default_check_images(kind, mini_data):
    tool = _load('tools/deployment/export_onnx.py')
    images = tool.default_check_images(kind)
    assert len(images) == 2 and all(Path(p).is_file() and Path(p).is_relative_to(mini_data) for p in images)
