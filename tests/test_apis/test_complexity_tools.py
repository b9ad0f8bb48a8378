"""Complexity, ONNX export and benchmark tools (tools/analysis_tools/get_flops.py, tools/deployment/export_onnx.py, tools/analysis_tools/benchmark.py).

* params / FLOPs of every classification variant through :func:`emo_mm.analysis.complexity.params_and_flops` (the
  function behind tools/analysis_tools/get_flops.py): params exactly as in the papers' tables, FLOPs within 2%;
* get_flops / export_onnx / benchmark --quick as subprocesses (what a user runs), the benchmark's per-model
  process;
* ONNX (dynamic batch/height/width) vs PyTorch parity with onnxruntime at the export size and at another
  size that needs window padding, plain and deploy, for one EMO and one EMOv2 variant.
"""
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch

from emo_mm import models
from emo_mm.deploy import check_onnx, export_onnx
from emo_mm.analysis import complexity
from emo_mm.models import variants

from tests.utils import ROOT as _ROOT  # noqa: E402

ROOT = str(_ROOT)

# name -> (params in M as printed (3 decimals), FLOPs at 224 in M) from the papers' fvcore tables
PAPER = {name: (v[2], v[3]) for name, v in variants.VARIANTS.items() if v[3] is not None}


def _run(args, timeout=300):
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '2'))
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f'{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
    return proc.stdout


@pytest.mark.parametrize('name', list(PAPER))
def test_cls_params_and_flops_match_papers(name):
    params_m, flops_m = PAPER[name]
    params, flops = complexity.params_and_flops(variants.variant_cls_cfg(name), shape=224)
    assert f'{params / 1e6:.3f}' == f'{params_m:.3f}', (name, params)
    assert abs(flops / 1e6 - flops_m) <= 0.02 * flops_m, (name, flops / 1e6, flops_m)


def test_attention_matmuls_are_counted():
    """The counter must see the attention products (EMO-1M: ~12.4 MFLOPs of matmul at 224, plain path)."""
    res = complexity.get_complexity(variants.variant_backbone_cfg('EMO-1M'), shape=224)
    assert res['kind'] == 'backbone' and res['input_shape'] == (1, 3, 224, 224)
    matmul = res['by_operator'].get('matmul', 0) + res['by_operator'].get('bmm', 0)
    assert 12e6 < matmul < 13e6, res['by_operator']


def test_sdpa_is_counted_like_matmul():
    """Deploy mode runs attention through scaled_dot_product_attention: same count as the two matmuls."""
    model, kind, _ = models.build_model(variants.variant_backbone_cfg('EMOv2-1M'))
    x = torch.randn(1, 3, 224, 224)
    plain = complexity.flop_analyzer(models.TensorForward(model, kind), (x, )).by_operator()
    models.switch_to_deploy(model)
    deploy = complexity.flop_analyzer(models.TensorForward(model, kind), (x, )).by_operator()
    assert deploy.get('scaled_dot_product_attention', 0) == plain['matmul']


def test_default_shapes_and_downstream_params():
    """Detector / segmentor configs: default input from the config, params like the papers' tables (0.1M)."""
    cases = [('configs/det/ssdlite_emo_1m.py', 'detector', (1, 3, 320, 320), 2.3),
             ('configs/seg/deeplabv3_emo_1m.py', 'segmentor', (1, 3, 512, 512), 5.6)]
    for cfg, kind, shape, params_m in cases:
        path = osp.join(ROOT, cfg)
        if not osp.exists(path):
            pytest.skip(f'{cfg} missing')
        res = complexity.get_complexity(path)
        assert res['kind'] == kind and res['input_shape'] == shape, (cfg, res['kind'], res['input_shape'])
        assert abs(res['params'] / 1e6 - params_m) < 0.06, (cfg, res['params'])
        assert res['flops'] > 0


def test_get_flops_cli():
    cfg = variants.find_cls_config('EMO-1M')
    if cfg is None:
        pytest.skip('configs/cls EMO-1M config missing')
    out = _run(['tools/analysis_tools/get_flops.py', osp.relpath(cfg, ROOT), '--detail', '--depth', '1'])
    assert 'Input shape: (1, 3, 224, 224)' in out
    assert 'Params: 1.361 M' in out
    flops = float(re.search(r'FLOPs: ([\d.]+) G', out).group(1))
    assert abs(flops - 0.261) <= 0.02 * 0.261
    assert 'backbone' in out  # per-module table


def _randomize(model, seed=0):
    """Non-trivial BN statistics / affine and layer-scale values, so that parity is tested on outputs of
    order 1 (fresh EMOv2 blocks are scaled by 1e-6 and BN statistics are identity at init)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
        for name, p in model.named_parameters():
            if name.endswith('gamma'):
                p.copy_(torch.rand(p.shape, generator=g) * 0.5 + 0.5)


# fp32 parity: onnxruntime and PyTorch use different conv / GEMM kernels (other summation order, other
# erf/exp approximations), so outputs differ by a few float32 ulps per layer, accumulated over ~20 blocks:
# we allow 1e-5 of the output scale (~100 ulps of float32, eps = 1.2e-7); measured ~1e-6.
REL_TOL = 1e-5


@pytest.mark.parametrize('name,kind', [('EMO-1M', 'classifier'), ('EMOv2-1M', 'backbone')])
@pytest.mark.parametrize('deploy', [False, True], ids=['plain', 'deploy'])
def test_onnx_dynamic_export_parity(tmp_path, name, kind, deploy):
    if kind == 'classifier':
        cfg = variants.variant_cls_cfg(name)
    else:
        cfg = variants.variant_backbone_cfg(name, out_indices=(1, 2, 3, 4))
    model, got_kind, _ = models.build_model(cfg)
    assert got_kind == kind
    _randomize(model)
    if deploy:
        models.switch_to_deploy(model)
    f = str(tmp_path / 'model.onnx')
    names, _ = export_onnx(model, kind, f, (224, 224), opset=17)
    assert len(names) == (1 if kind == 'classifier' else 4)
    # export size, then a size whose stage-3/4 maps (16x20, 8x10) need window padding, at batch 2
    for shape, batch in (((224, 224), 1), ((256, 320), 2)):
        diff, scale = check_onnx(model, kind, f, shape, batch)
        assert scale > 1e-2, scale  # the outputs are not degenerate
        assert diff <= REL_TOL * max(1.0, scale), (name, deploy, shape, diff, scale)


def test_export_onnx_cli(tmp_path):
    cfg = variants.find_cls_config('EMO-1M')
    if cfg is None:
        pytest.skip('configs/cls EMO-1M config missing')
    out = _run(['tools/deployment/export_onnx.py', osp.relpath(cfg, ROOT), '--out', str(tmp_path / 'emo.onnx'), '--deploy'])
    assert osp.exists(tmp_path / 'emo.onnx')
    diffs = [float(d) for d in re.findall(r'max abs diff ([\d.e+-]+)', out)]
    assert len(diffs) == 2 and max(diffs) < 1e-3, out
    assert 'batch 2, 256x320' in out


def test_benchmark_worker_times_its_model_in_a_process_of_its_own():
    from emo_mm.analysis.benchmark import ModelWorker, build_bench_model
    worker, unknown = ModelWorker('EMO-1M', deploy=True, threads=1), ModelWorker('NoSuchNet')
    try:
        model, _ = build_bench_model('EMO-1M', deploy=True)
        assert worker.ready() == sum(p.numel() for p in model.parameters()) / 1e6  # the deploy model, built there
        assert worker.proc.pid != os.getpid() and worker.proc.is_alive()
        assert worker.prepare(2, 64, 0.01) in ('nchw', 'channels_last')
        assert worker.time_once('inference_mode') > 0 and worker.time_once('no_grad') > 0
        with pytest.raises(RuntimeError, match='unknown model NoSuchNet'):
            unknown.ready()  # the reason reaches the parent, which goes on with the others
    finally:
        worker.close()
        unknown.close()
    assert not worker.proc.is_alive() and not unknown.proc.is_alive()


def test_benchmark_quick_smoke():
    out = _run(['tools/analysis_tools/benchmark.py', '--quick', '--threads', '1'])
    rows = [line for line in out.splitlines() if line.startswith('| 1 | 224 |')]
    found = {tuple(c.strip() for c in r.strip('|').split('|')[2:5]) for r in rows}
    # every model under both ways a user's process runs without gradients
    models = [('EMO-1M', 'plain'), ('EMO-1M', 'deploy'), ('EMOv2-1M', 'plain'), ('EMOv2-1M', 'deploy'),
              ('EdgeNeXt-xxsmall', 'plain')]
    expected = {(model, mode, grad) for model, mode in models for grad in ('no_grad', 'inference_mode')}
    assert expected <= found, out
    assert 'allocator: glibc defaults' in out, out  # the headline is a plain process
    for row in rows:  # ratio to EdgeNeXt-xxsmall = median of per-repeat ratios, inside its IQR
        ratio, iqr = [c.strip() for c in row.strip().strip('|').split('|')[-2:]]
        lo, hi = map(float, iqr.split('-'))
        assert lo <= float(ratio) <= hi, row
    ref = [r for r in rows if '| EdgeNeXt-xxsmall |' in r][0]
    assert ref.rstrip('| ').endswith('| 1.00 | 1.00-1.00'), ref
