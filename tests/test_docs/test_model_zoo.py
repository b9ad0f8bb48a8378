"""README.md and docs/ stay true to the repository: the model zoo tables match the metafiles
(tools/misc/gen_model_zoo.py --check), and every config and tool a page names exists."""
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / 'README.md'] + sorted((ROOT / 'docs').glob('*.md'))
# a path as the pages write it in commands and links: configs/det/ssdlite_emo_1m.py, tools/misc/x.py, tools/x.sh
PATH = re.compile(r'(?<![\w/.-])((?:configs|tools)/[\w./-]+?\.(?:py|sh|yml))(?![\w/-])')


def _tool():
    spec = importlib.util.spec_from_file_location('gen_model_zoo', ROOT / 'tools' / 'misc' / 'gen_model_zoo.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_model_zoo_tables_match_the_metafiles(capsys):
    """README.md and docs/reproduce.md, as ``python tools/misc/gen_model_zoo.py --check`` checks them."""
    assert _tool().main(['--check']) == 0, (
        'a model zoo table differs from configs/*/metafile.yml; run python tools/misc/gen_model_zoo.py\n'
        + capsys.readouterr().err)


def test_model_zoo_lists_every_config_of_the_metafiles():
    tool = _tool()
    rows = tool.read_models(tool.default_metafiles(str(ROOT)))
    assert {r['task'] for r in rows} >= {'classification', 'detection', 'segmentation'}
    table = tool.render(rows)
    for r in rows:
        assert f']({r["config"]})' in table


def test_check_fails_when_the_readme_disagrees(tmp_path, capsys):
    tool = _tool()
    readme = (ROOT / 'README.md').read_text(encoding='utf-8')
    first_row = next(ln for ln in readme.splitlines() if ln.startswith('| [') and '](configs/' in ln)
    stale = tmp_path / 'README.md'
    stale.write_text(readme.replace(first_row, first_row.replace('|', '| 0.0 |', 2)), encoding='utf-8')
    assert tool.main(['--check', str(stale)]) == 1
    assert 'disagrees with the metafiles' in capsys.readouterr().err
    no_markers = tmp_path / 'plain.md'
    no_markers.write_text('# no table here\n', encoding='utf-8')
    assert tool.main(['--check', str(no_markers)]) == 1


@pytest.mark.parametrize('page', PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_config_and_tool_named_exists(page):
    named = sorted(set(PATH.findall(page.read_text(encoding='utf-8'))))
    missing = [p for p in named if not (ROOT / p).is_file()]
    assert not missing, f'{page.name} names files that do not exist: {missing}'
