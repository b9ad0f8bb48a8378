"""Published numbers (``configs/{det,seg}/metafile.yml``) and our finished runs (work dirs), side by side.

Used by ``tools/analysis_tools/results_table.py``; shared by detection and segmentation.

Work dir layout written by mmengine's Runner (train or test)::

    WORK_DIR/<config name>.py                      the config as run (dumped by the Runner)
    WORK_DIR/<timestamp>/vis_data/scalars.json     one JSON object per line (train logs and evals)
    WORK_DIR/<timestamp>/vis_data/<timestamp>.json same lines (older mmengine: only this one)
    WORK_DIR/<timestamp>/<timestamp>.json          test runs of some versions

An evaluation line is a JSON object holding a metric key (``coco/bbox_mAP``, ``mIoU``...). The final
metrics of a work dir are those of the newest evaluation line of the newest run that has one.
"""
import glob
import json
import os.path as osp
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional

# Table columns per task: (column title, metafile metric names (first found wins), work-dir log keys, scale).
# mmdet logs COCO APs as fractions (0.220), the papers as percent (22.0); mmseg logs percent already.
DET_COLUMNS = [
    ('AP', ('box AP', 'AP', 'bbox_mAP'), ('coco/bbox_mAP', 'bbox_mAP'), 100.),
    ('AP50', ('AP50', 'box AP50', 'bbox_mAP_50'), ('coco/bbox_mAP_50', 'bbox_mAP_50'), 100.),
    ('AP75', ('AP75', 'box AP75', 'bbox_mAP_75'), ('coco/bbox_mAP_75', 'bbox_mAP_75'), 100.),
    ('APs', ('APs', 'APS', 'box APs', 'bbox_mAP_s'), ('coco/bbox_mAP_s', 'bbox_mAP_s'), 100.),
    ('APm', ('APm', 'APM', 'box APm', 'bbox_mAP_m'), ('coco/bbox_mAP_m', 'bbox_mAP_m'), 100.),
    ('APl', ('APl', 'APL', 'box APl', 'bbox_mAP_l'), ('coco/bbox_mAP_l', 'bbox_mAP_l'), 100.),
    # instance segmentation (Mask R-CNN): shown only in tables that have a value for it
    ('mask AP', ('mask AP',), ('coco/segm_mAP', 'segm_mAP'), 100.),
]
SEG_COLUMNS = [
    ('mIoU', ('mIoU',), ('mIoU', 'val/mIoU'), 1.),
    ('aAcc', ('aAcc',), ('aAcc', 'val/aAcc'), 1.),
    ('mAcc', ('mAcc',), ('mAcc', 'val/mAcc'), 1.),
]
COLUMNS = {'mmdet': DET_COLUMNS, 'mmseg': SEG_COLUMNS}
TASK_NAMES = {'mmdet': 'Object Detection', 'mmseg': 'Semantic Segmentation'}
PARAM_KEYS = ('Params (M)', 'Parameters (M)', 'Params')
FLOP_KEYS = ('FLOPs (G)', 'FLOPs')
SHAPE_KEYS = ('FLOPs Input', 'FLOPs Input Size', 'Input Size')


@dataclass
class Published:
    """One model of a metafile: what the paper reports for one config."""
    name: str
    config: str
    task: str  # 'mmdet' / 'mmseg' (from the Results' Task)
    metrics: Dict[str, float]  # column title -> value
    params_m: Optional[float] = None
    flops_g: Optional[float] = None
    flops_shape: Optional[tuple] = None  # (H, W) the FLOPs were counted at, if the metafile says
    extra: dict = field(default_factory=dict)


def _first(d: dict, keys, default=None):
    for k in keys:
        if k in d and d[k] is not None:
            return d[k]
    return default


def _num(v) -> Optional[float]:
    if v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v)
    s = str(v).strip().rstrip('MGmg').strip()
    try:
        return float(s)
    except ValueError:
        return None


def parse_shape(v) -> Optional[tuple]:
    """``'800x1333'`` / ``[800, 1333]`` / ``320`` -> (H, W)."""
    if v is None:
        return None
    if isinstance(v, int):
        return v, v
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return int(v[0]), int(v[1])
    parts = str(v).lower().replace(' ', '').split('x')
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        return int(parts[0]), int(parts[1])
    if len(parts) == 1 and parts[0].isdigit():
        return int(parts[0]), int(parts[0])
    return None


def config_key(path: str) -> str:
    """Models are matched by config file name without extension: ``configs/det/x.py`` -> ``x``."""
    return osp.splitext(osp.basename(str(path)))[0]


def load_metafile(path: str) -> 'OrderedDict[str, Published]':
    """Published numbers of every model in a metafile, keyed by config name."""
    from mmengine.fileio import load
    data = load(path)
    models = data.get('Models', []) if isinstance(data, dict) else data
    out = OrderedDict()
    for m in models or []:
        results = m.get('Results') or []
        if isinstance(results, dict):
            results = [results]
        task, metrics = None, {}
        for r in results:
            t = str(r.get('Task', '')).lower()
            task = 'mmseg' if 'segment' in t else 'mmdet' if 'detect' in t else task
            raw = r.get('Metrics', {}) or {}
            for col, meta_names, _, _ in COLUMNS.get(task, []):
                v = _num(_first(raw, meta_names))
                if v is not None:
                    metrics[col] = v
        meta = m.get('Metadata', {}) or {}
        pub = Published(
            name=m.get('Name', config_key(m.get('Config', '?'))), config=m.get('Config', ''), task=task or '',
            metrics=metrics, params_m=_num(_first(meta, PARAM_KEYS)), flops_g=_num(_first(meta, FLOP_KEYS)),
            flops_shape=parse_shape(_first(meta, SHAPE_KEYS)), extra=meta)
        out[config_key(pub.config or pub.name)] = pub
    return out


def default_metafiles(repo_root: str) -> List[str]:
    return [p for p in (osp.join(repo_root, 'configs', 'det', 'metafile.yml'),
                        osp.join(repo_root, 'configs', 'seg', 'metafile.yml')) if osp.isfile(p)]


# ----------------------------------------------------------------------------------------------------------
# Work dirs
@dataclass
class RunResult:
    """What a work dir says about a run."""
    work_dir: str
    config: Optional[str] = None  # the dumped config file
    codebase: Optional[str] = None
    metrics: Dict[str, float] = field(default_factory=dict)  # column title -> value (paper units)
    raw: dict = field(default_factory=dict)  # the evaluation line as logged
    step: Optional[int] = None  # epoch / iteration of that evaluation
    max_step: Optional[int] = None  # max_epochs / max_iters of the config
    log_file: Optional[str] = None
    mini: bool = False  # trained / tested on the embedded mini datasets (data/mini)
    problem: Optional[str] = None  # why there is no result

    @property
    def ok(self) -> bool:
        return self.problem is None and bool(self.metrics)


def _metric_keys(codebase: Optional[str]):
    cols = COLUMNS.get(codebase) if codebase else DET_COLUMNS + SEG_COLUMNS
    return cols


def _read_json_lines(path: str) -> List[dict]:
    out = []
    with open(path, encoding='utf-8') as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            if isinstance(obj, dict):
                out.append(obj)
    return out


def _eval_lines(lines: List[dict], codebase: Optional[str]) -> List[dict]:
    keys = {k for _, _, log_keys, _ in _metric_keys(codebase) for k in log_keys}
    return [ln for ln in lines if keys & set(ln)]


def _scalar_files(work_dir: str) -> List[str]:
    """Scalar JSON files of every run in ``work_dir``, oldest run first (timestamps sort by name)."""
    files = []
    for run in sorted(d for d in glob.glob(osp.join(work_dir, '*')) if osp.isdir(d)):
        ts = osp.basename(run)
        for cand in (osp.join(run, 'vis_data', 'scalars.json'), osp.join(run, 'vis_data', f'{ts}.json'),
                     osp.join(run, f'{ts}.json')):
            if osp.isfile(cand):
                files.append(cand)
                break
    return files


def find_config(work_dir: str) -> Optional[str]:
    """The config the Runner dumped into ``work_dir`` (the newest ``*.py`` at its top level)."""
    cands = [p for p in glob.glob(osp.join(work_dir, '*.py')) if osp.isfile(p)]
    if not cands:  # fall back to a run's vis_data/config.py
        cands = glob.glob(osp.join(work_dir, '*', 'vis_data', 'config.py'))
    return max(cands, key=osp.getmtime) if cands else None


def read_work_dir(work_dir: str) -> RunResult:
    """Final metrics of the run(s) in ``work_dir``; ``problem`` says why there are none."""
    res = RunResult(work_dir=work_dir)
    if not osp.isdir(work_dir):
        res.problem = 'no such directory'
        return res
    res.config = find_config(work_dir)
    max_step = None
    if res.config:
        try:
            from mmengine.config import Config
            cfg = Config.fromfile(res.config)
            res.codebase = cfg.get('default_scope')
            tc = cfg.get('train_cfg') or {}
            max_step = tc.get('max_epochs', tc.get('max_iters'))
            loaders = [cfg.get(k) for k in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
            res.mini = 'data/mini/' in repr(loaders)
        except Exception as err:  # noqa: BLE001
            res.problem = f'cannot read the dumped config {res.config}: {type(err).__name__}: {err}'
            return res
    files = _scalar_files(work_dir)
    if not files:
        res.problem = ('no mmengine log found (expected <timestamp>/vis_data/scalars.json): '
                       'the run never started or is not an mmengine work dir')
        return res
    for path in reversed(files):
        evals = _eval_lines(_read_json_lines(path), res.codebase)
        if evals:
            last = evals[-1]
            res.raw, res.log_file = last, path
            codebase = res.codebase
            if codebase is None:  # guess from the keys
                codebase = 'mmdet' if any(k for k in last if 'bbox' in k) else 'mmseg'
                res.codebase = codebase
            for col, _, log_keys, scale in COLUMNS[codebase]:
                v = _first(last, log_keys)
                if v is not None and _num(v) is not None:
                    res.metrics[col] = _num(v) * scale
            res.step = last.get('step')
            res.max_step = max_step
            break
    if not res.metrics:
        trained = any(_read_json_lines(p) for p in files)
        res.problem = ('no finished evaluation in the logs (training still running, stopped before its first '
                       'validation, or the evaluation failed)' if trained else 'logs are empty')
    if res.config is None and res.problem is None:
        res.problem = 'no dumped config (*.py) in the work dir: cannot tell which model this is'
    return res


# ----------------------------------------------------------------------------------------------------------
# Table
def _fmt(v, nd=1):
    return '-' if v is None else f'{v:.{nd}f}'


def _cell(ours, pub, nd=1):
    """``ours (pub, +diff)``."""
    if ours is None and pub is None:
        return '-'
    if pub is None:
        return f'{_fmt(ours, nd)} (n/a)'
    if ours is None:
        return f'- ({_fmt(pub, nd)})'
    return f'{_fmt(ours, nd)} ({_fmt(pub, nd)}, {ours - pub:+.{nd}f})'


def complexity_of(config: str, pub: Optional[Published]):
    """(params M, FLOPs G, (H, W)) of ``config`` counted by :mod:`emo_mm.analysis.complexity` at the published shape."""
    from emo_mm.analysis.complexity import params_and_flops
    shape = pub.flops_shape if pub is not None else None
    params, flops = params_and_flops(config, shape=shape)
    return params / 1e6, flops / 1e9, shape


def _column_has_value(col: str, runs: List[RunResult], published: Dict[str, Published]) -> bool:
    """Whether any of ``runs`` or the published numbers of its model has ``col`` (e.g. mask AP)."""
    for run in runs:
        pub = published.get(config_key(run.config)) if run.config else None
        if col in run.metrics or (pub is not None and col in pub.metrics):
            return True
    return False


def build_table(runs: List[RunResult], published: Dict[str, Published], complexity: bool = True) -> str:
    """A markdown table per task: ours (published, difference) for params, FLOPs and every metric."""
    lines = []
    by_task = OrderedDict()
    for run in runs:  # runs without a result are listed by the caller, one line each
        if run.ok:
            by_task.setdefault(run.codebase or 'unknown', []).append(run)
    for task, task_runs in by_task.items():
        cols = [c for c in COLUMNS.get(task, []) if _column_has_value(c[0], task_runs, published)]
        title = TASK_NAMES.get(task, task)
        header = ['model', 'work dir', 'Params (M)', 'FLOPs (G)'] + [c[0] for c in cols]
        lines += [f'### {title}: ours (published, difference)', '',
                  '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
        for run in task_runs:
            key = config_key(run.config) if run.config else None
            pub = published.get(key) if key else None
            name = pub.name if pub else (key or '?')
            params = flops = None
            if complexity and run.config:
                try:
                    params, flops, _ = complexity_of(run.config, pub)
                except Exception as err:  # noqa: BLE001
                    params = flops = None
                    name += f' (complexity failed: {type(err).__name__})'
            row = [name, run.work_dir,
                   _cell(params, pub.params_m if pub else None, 2 if params is not None else 1),
                   _cell(flops, pub.flops_g if pub else None, 2 if flops is not None else 1)]
            row += [_cell(run.metrics.get(c[0]), pub.metrics.get(c[0]) if pub else None) for c in cols]
            status = ''
            if run.step is not None and run.max_step is not None and run.step < run.max_step:
                status = f' (unfinished: last eval at {run.step}/{run.max_step})'
            if run.mini:
                status += ' [mini data]'
            if pub is None:
                status += ' (not in any metafile)'
            row[0] += status
            lines.append('| ' + ' | '.join(row) + ' |')
        lines.append('')
    return '\n'.join(lines)
