"""Official checkpoint handling: key layout, unwrapping, conversion, loading and its error messages."""
import logging
import os
import sys
from collections import OrderedDict

import pytest
import torch

from emo_mm.models.backbones import EMO, EMOv2
from emo_mm.models.pretrained import convert_hint, load_pretrained, remap_official_state_dict

from tests.utils import ROOT  # noqa: E402

sys.path.insert(0, str(ROOT / 'tools' / 'model_converters'))  # the CLI, run in-process
import convert_official  # noqa: E402

# the EMO / EMOv2 papers' model settings (depths, widths, expansion ratios; also the official zhangzjn/EMO model
# files), written out independently of the implementation's arch tables
V1 = {'1m': ([2, 2, 8, 3], [32, 48, 80, 168], [2.0, 2.5, 3.0, 3.5]),
      '2m': ([3, 3, 9, 3], [32, 48, 120, 200], [2.0, 2.5, 3.0, 3.5]),
      '5m': ([3, 3, 9, 3], [48, 72, 160, 288], [2.0, 3.0, 4.0, 4.0]),
      '6m': ([3, 3, 9, 3], [48, 72, 160, 320], [2.0, 3.0, 4.0, 5.0])}
V2 = {'1m': ([2, 2, 8, 3], [32, 48, 80, 180], [2.0, 2.5, 3.0, 3.5]),
      '2m': ([3, 3, 9, 3], [32, 48, 120, 200], [2.0, 2.5, 3.0, 3.5]),
      '5m': ([3, 3, 9, 3], [48, 72, 160, 288], [2.0, 3.0, 4.0, 4.0]),
      '20m': ([3, 3, 13, 3], [64, 128, 320, 448], [2.0, 3.0, 4.0, 4.0])}


def official_shapes(version, arch, num_classes=1000):
    """{key: shape} of an official classification checkpoint, from the spec's section 3 description."""
    shapes = OrderedDict()

    def bn(prefix, c):
        for name in ('weight', 'bias', 'running_mean', 'running_var'):
            shapes[f'{prefix}.{name}'] = (c, )
        shapes[f'{prefix}.num_batches_tracked'] = ()

    depths, dims, exps = (V1 if version == 1 else V2)[arch]
    if version == 1:
        stem, dw = 24, [3, 3, 5, 5]
        shapes['stage0.0.convs.0.0.weight'], shapes['stage0.0.convs.0.0.bias'] = (stem, 3, 3, 3), (stem, )
        bn('stage0.0.convs.0.1', stem)
        shapes['stage0.1.conv_local.conv.weight'] = (stem, 1, 3, 3)
        bn('stage0.1.conv_local.norm', stem)
        for name in ('conv_reduce', 'conv_expand'):
            shapes[f'stage0.1.se.{name}.weight'], shapes[f'stage0.1.se.{name}.bias'] = (stem, stem, 1, 1), (stem, )
        shapes['stage0.1.proj.conv.weight'] = (stem, stem, 1, 1)
    else:
        stem, dw = dims[0] // 2, [5, 5, 5, 5]
        shapes['stage0.0.conv.weight'], shapes['stage0.0.conv.bias'] = (stem, 3, 3, 3), (stem, )
        bn('stage0.0.norm', stem)
        shapes['stage0.1.conv.weight'] = (stem, 1, 3, 3)
        bn('stage0.1.norm', stem)
        shapes['stage0.2.conv.weight'] = (stem, stem, 1, 1)
    dim_in = stem
    for s in range(1, 5):
        for b in range(depths[s - 1]):
            p, c = f'stage{s}.{b}', dims[s - 1]
            mid = int(dim_in * exps[s - 1] * (2 if b == 0 else 1))
            if s <= 2:
                bn(f'{p}.norm', dim_in)
            else:
                shapes[f'{p}.norm.norm.weight'], shapes[f'{p}.norm.norm.bias'] = (dim_in, ), (dim_in, )
            attn = s >= 3 and b > 0
            if version == 1:
                if attn:
                    shapes[f'{p}.qk.conv.weight'] = (2 * dim_in, dim_in, 1, 1)
                    shapes[f'{p}.qk.conv.bias'] = (2 * dim_in, )
                shapes[f'{p}.v.conv.weight'], shapes[f'{p}.v.conv.bias'] = (mid, dim_in, 1, 1), (mid, )
            elif attn:
                shapes[f'{p}.eops.0.qk.conv.weight'] = (2 * dim_in, dim_in, 1, 1)
                shapes[f'{p}.eops.0.qk.conv.bias'] = (2 * dim_in, )
                shapes[f'{p}.eops.0.v.conv.weight'], shapes[f'{p}.eops.0.v.conv.bias'] = (mid, dim_in, 1, 1), (mid, )
            else:
                shapes[f'{p}.eops.0.net.conv.weight'] = (mid, dim_in, 1, 1)
                shapes[f'{p}.eops.0.net.conv.bias'] = (mid, )
            shapes[f'{p}.conv_local.conv.weight'] = (mid, 1, dw[s - 1], dw[s - 1])
            bn(f'{p}.conv_local.norm', mid)
            shapes[f'{p}.proj.conv.weight'] = (c, mid, 1, 1)
            if version == 2:
                shapes[f'{p}.ls.gamma'] = (1, c, 1, 1)
            dim_in = c
    shapes['norm.norm.weight'], shapes['norm.norm.bias'] = (dim_in, ), (dim_in, )
    shapes['head.weight'], shapes['head.bias'] = (num_classes, dim_in), (num_classes, )
    return shapes


def official_state_dict(version, arch, seed=0):
    g = torch.Generator().manual_seed(seed)
    return OrderedDict((k, torch.randint(0, 100, s, generator=g) if k.endswith('num_batches_tracked')
                        else torch.randn(s, generator=g)) for k, s in official_shapes(version, arch).items())


ALL = [(1, a) for a in V1] + [(2, a) for a in V2]


@pytest.mark.parametrize('version,arch', ALL, ids=[f'v{v}-{a}' for v, a in ALL])
def test_model_keys_equal_official_layout(version, arch):
    model = (EMO if version == 1 else EMOv2)(arch, final_norm=True)
    want = {k: s for k, s in official_shapes(version, arch).items() if not k.startswith('head.')}
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == want
    dense = (EMO if version == 1 else EMOv2)(arch)
    assert set(dense.state_dict()) == {k for k in want if not k.startswith('norm.')}


def test_official_file_loads_with_no_missing_or_unexpected(tmp_path, capsys):
    official = official_state_dict(1, '1m')
    src, dst = tmp_path / 'net.pth', tmp_path / 'emo_1m.pth'
    torch.save(official, src)
    assert convert_official.main([str(src), str(dst), '--arch', 'emo-1m']) == 0
    assert 'emo-1m' in capsys.readouterr().out
    ckpt = torch.load(dst, weights_only=True)
    assert ckpt['meta']['arch'] == 'emo-1m' and ckpt['meta']['source'].endswith('net.pth')
    assert set(ckpt['state_dict']) == {('head.fc.' + k[5:]) if k.startswith('head.') else 'backbone.' + k
                                       for k in official}

    model = EMO('1m', final_norm=True, init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    model.init_weights()
    report = load_pretrained(model, str(dst))
    assert report['missing'] == [] and report['unexpected'] == []
    assert sorted(report['ignored']) == ['head.fc.bias', 'head.fc.weight']
    for k, v in model.state_dict().items():
        assert torch.equal(v, official[k]), k

    # a dense backbone (no final norm): the final norm is ignored, not reported as unexpected
    dense = EMO('1m', out_indices=(1, 2, 3, 4), pretrained=str(dst))
    dense.init_weights()
    report = load_pretrained(dense, str(dst))
    assert report['missing'] == [] and report['unexpected'] == []
    assert sorted(report['ignored']) == ['head.fc.bias', 'head.fc.weight', 'norm.norm.bias', 'norm.norm.weight']
    assert torch.equal(dense.stage4[2].qk.conv.weight, official['stage4.2.qk.conv.weight'])


def test_summary_is_logged(tmp_path):
    path = tmp_path / 'raw.pth'
    torch.save(official_state_dict(2, '1m'), path)  # an unconverted official file loads too
    records = []
    logger = logging.getLogger('test_emo_checkpoint')
    logger.setLevel(logging.INFO)
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger.addHandler(handler)
    load_pretrained(EMOv2('1m'), str(path), logger=logger)
    logger.removeHandler(handler)
    assert len(records) == 1
    assert 'loaded 224 / 224 tensors, missing [], unexpected []; ignored 4' in records[0]


def test_wrapped_module_prefixed_file_converts(tmp_path):
    official = official_state_dict(2, '1m')
    src, dst = tmp_path / 'EMOv2_1M_224.pth', tmp_path / 'out' / 'emov2_1m.pth'
    torch.save({'net': OrderedDict(('module.' + k, v) for k, v in official.items()), 'epoch': 300}, src)
    assert convert_official.main([str(src), str(dst), '--arch', 'emov2-1m']) == 0
    state = torch.load(dst, weights_only=True)['state_dict']
    assert torch.equal(state['backbone.stage4.2.eops.0.qk.conv.weight'], official['stage4.2.eops.0.qk.conv.weight'])
    assert torch.equal(state['head.fc.weight'], official['head.weight'])
    assert not any('module.' in k for k in state)


def test_remap_unwrapping():
    sd = OrderedDict([('stage0.0.conv.weight', torch.ones(1)), ('head.weight', torch.ones(1)),
                      ('head.bias', torch.ones(1)), ('norm.norm.weight', torch.ones(1))])
    flat = remap_official_state_dict(sd)
    assert list(flat) == ['backbone.stage0.0.conv.weight', 'head.fc.weight', 'head.fc.bias',
                          'backbone.norm.norm.weight']
    ema = OrderedDict((k, v * 2) for k, v in sd.items())
    assert torch.equal(remap_official_state_dict({'net': sd, 'net_E': ema})['head.fc.weight'], ema['head.weight'])
    assert list(remap_official_state_dict({'state_dict': {'model': sd}})) == list(flat)
    assert list(remap_official_state_dict({'model': OrderedDict(('module.' + k, v) for k, v in sd.items())})) == \
        list(flat)
    assert list(remap_official_state_dict(flat)) == list(flat)  # already converted: unchanged
    with pytest.raises(ValueError, match='no state_dict'):
        remap_official_state_dict({'epoch': 3})


def test_wrong_variant_fails_with_key_and_shapes(tmp_path, capsys):
    src = tmp_path / 'net.pth'
    torch.save(official_state_dict(1, '2m'), src)
    assert convert_official.main([str(src), str(tmp_path / 'o.pth'), '--arch', 'emo-1m']) == 1
    err = capsys.readouterr().err
    expected = ("'stage3.0.proj.conv.weight' has shape (120, 288, 1, 1) in the checkpoint but (80, 288, 1, 1) "
                'in the model; it looks like emo-2m')
    assert expected in err
    assert not (tmp_path / 'o.pth').exists()
    with pytest.raises(ValueError) as e:
        load_pretrained(EMO('1m'), str(src))
    assert expected in str(e.value) and str(src) in str(e.value)
    # EMOv2 weights into EMO: named as such
    torch.save(official_state_dict(2, '1m'), src)
    with pytest.raises(ValueError, match='it looks like emov2-1m'):
        load_pretrained(EMO('1m'), str(src))
    assert convert_official.main([str(src), str(tmp_path / 'o.pth'), '--arch', 'emo-1m']) == 1
    assert 'it looks like emov2-1m' in capsys.readouterr().err
    # another network altogether: nothing to load is an error, not a silent no-op
    torch.save({'state_dict': {'backbone.conv1.weight': torch.ones(64, 3, 7, 7)}}, src)
    with pytest.raises(ValueError, match='no tensor for EMO'):
        load_pretrained(EMO('1m'), str(src))


def test_truncated_file_fails_naming_the_file(tmp_path, capsys):
    good = tmp_path / 'good.pth'
    torch.save(official_state_dict(1, '1m'), good)
    bad = tmp_path / 'truncated.pth'
    bad.write_bytes(good.read_bytes()[:100_000])
    with pytest.raises(RuntimeError, match='truncated.pth'):
        load_pretrained(EMO('1m'), str(bad))
    assert convert_official.main([str(bad), str(tmp_path / 'o.pth'), '--arch', 'emo-1m']) == 1
    assert 'truncated.pth' in capsys.readouterr().err


def test_missing_file_gives_convert_command(tmp_path):
    path = str(tmp_path / 'checkpoints' / 'emov2_5m.pth')
    model = EMOv2('5m', init_cfg=dict(type='Pretrained', checkpoint=path, prefix='backbone.'))
    with pytest.raises(FileNotFoundError) as e:
        model.init_weights()
    assert f'python tools/model_converters/convert_official.py <official .pth> {path} --arch emov2-5m' in str(e.value)
    with pytest.raises(ValueError, match='URL'):
        EMO('1m', pretrained='open-mmlab://resnet50_v1c').init_weights()


def test_no_pretrained_keeps_default_init():
    torch.manual_seed(0)
    a = EMO('1m')
    torch.manual_seed(0)
    b = EMO('1m')
    b.init_weights()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_convert_hint_names_the_arch():
    cmd = 'python tools/model_converters/convert_official.py <official .pth> ck.pth --arch '
    assert cmd + 'emov2-5m' in convert_hint('ck.pth', 'emo_mm.EMOv2', '5m')
    assert cmd + 'emo-1m' in convert_hint('ck.pth', 'EMO', 'EMO-1M')
    assert cmd + 'emo-2m' in convert_hint('ck.pth', arch='emo-2m')
    assert cmd + '<arch>' in convert_hint('ck.pth', 'EMO', dict(depths=[1, 1, 1, 1]))


# ----------------------------------------------------------------------------------------------------------
# what mmengine writes loads; nothing else runs code
def test_allow_list_loads_every_state_mmengine_writes(tmp_path):
    """Message hub (empty and filled buffers), log processor, optimizer and scheduler states of a real run."""
    import numpy as np
    from mmengine.logging import HistoryBuffer, MessageHub
    from mmengine.optim import CosineAnnealingLR, OptimWrapper
    from emo_mm.utils.checkpoint_io import load_local_checkpoint
    hub = MessageHub.get_instance('emo_mm_test_allow_list')
    hub.update_scalar('train/loss', 1.5)
    hub.update_scalar('train/lr', np.float64(0.01))
    hub.update_info('iter', 7)
    hub.update_info('keep_ckpt_ids', [1, 2])
    model = torch.nn.Linear(2, 2)
    optim = OptimWrapper(torch.optim.AdamW(model.parameters()))
    model(torch.ones(1, 2)).sum().backward()
    optim.step()
    sched = CosineAnnealingLR(optim, T_max=4)
    ckpt = {'message_hub': hub.state_dict(), 'empty_buffer': HistoryBuffer(), 'optimizer': optim.state_dict(),
            'param_schedulers': [sched.state_dict()], 'meta': {'seed': 3, 'np_scalar': np.int64(4)}}
    torch.save(ckpt, tmp_path / 'c.pth')
    loaded = load_local_checkpoint(str(tmp_path / 'c.pth'))
    assert loaded['message_hub']['log_scalars']['train/loss'].current() == 1.5
    assert len(loaded['empty_buffer']._log_history) == 0
    assert loaded['param_schedulers'][0]['T_max'] == 4 and loaded['meta']['np_scalar'] == 4


def test_bytes_from_a_checkpoint_cannot_allocate(tmp_path):
    import zipfile
    from emo_mm.utils.checkpoint_io import CheckpointError, load_local_checkpoint
    torch.save({'x': 1}, tmp_path / 'c.pth')
    with zipfile.ZipFile(tmp_path / 'c.pth') as zf:
        records = {n: zf.read(n) for n in zf.namelist()}
    pkl = next(n for n in records if n.endswith('data.pkl'))
    records[pkl] = b'\x80\x02c__builtin__\nbytes\nJ\x00\x00\x00\x7f\x85R.'  # bytes(2**31 - 2**24)
    with zipfile.ZipFile(tmp_path / 'bomb.pth', 'w') as zf:
        for name, data in records.items():
            zf.writestr(name, data)
    with pytest.raises(CheckpointError, match=r'bomb.pth: .*bytes\(int\)'):
        load_local_checkpoint(str(tmp_path / 'bomb.pth'))


@pytest.fixture
def real_checkpoint(cls_reference_run):
    """Written by mmengine in a real tools/train.py run: weights, EMA, AdamW, scheduler, message hub."""
    return cls_reference_run / 'epoch_2.pth'


FUZZ_CHILD = r'''
import io, json, os, pickle, pickletools, random, sys, zipfile
import emo_mm
from emo_mm.utils.checkpoint_io import CheckpointError, load_local_checkpoint
src, work, canary, report, stride = sys.argv[1:6]
raw = open(src, 'rb').read()
with zipfile.ZipFile(io.BytesIO(raw)) as zf:
    records = [(info, zf.read(info.filename)) for info in zf.infolist()]
pkl_index = next(i for i, (info, _) in enumerate(records) if info.filename.endswith('data.pkl'))
pkl = records[pkl_index][1]
ops = [(op.name, pos) for op, arg, pos in pickletools.genops(pkl)]
globals_at = [pos for name, pos in ops if name == 'GLOBAL']
opcodes = sorted({bytes([pkl[pos]]) for _, pos in ops})
EVIL = [f'os\nsystem\n', f'posix\nsystem\n', 'builtins\neval\n', 'builtins\nexec\n', 'subprocess\ncall\n',
        'builtins\n__import__\n', 'torch\nload\n', 'numpy\nload\n', 'builtins\nopen\n', 'nt\nsystem\n']
PAYLOADS = [b'\x80\x02c' + e.encode() + b'X' + len(cmd).to_bytes(4, 'little') + cmd + b'\x85R.'
            for e in EVIL for cmd in [f'touch {canary}'.encode(), f'open({canary!r}, "w")'.encode()]] + [
    # getattr through the allowed HistoryBuffer to the module globals, then to os.system
    b'\x80\x02cbuiltins\ngetattr\ncmmengine.logging.history_buffer\nHistoryBuffer\nX\x08\x00\x00\x00__init__\x86R.',
    b'\x80\x02cbuiltins\ngetattr\ncbuiltins\ngetattr\nX\x0b\x00\x00\x00__globals__\x86R.',
    b'\x80\x02cbuiltins\nbytes\nJ\x00\x00\x00\x40\x85R.',
]

def rezip(new_pkl):
    out = io.BytesIO()
    with zipfile.ZipFile(out, 'w') as zf:
        for i, (info, data) in enumerate(records):
            zf.writestr(info, new_pkl if i == pkl_index else data)
    return out.getvalue()

rng = random.Random(14)
cases = []
for i in range(40):  # byte flips anywhere in the file
    b = bytearray(raw); pos = rng.randrange(len(b)); b[pos] ^= 1 << rng.randrange(8)
    cases.append(('flip', bytes(b)))
for i in range(30):  # truncations
    cases.append(('truncate', raw[:rng.randrange(len(raw))]))
for i in range(40):  # byte flips inside data.pkl (zip intact, so the unpickler sees them)
    b = bytearray(pkl); pos = rng.randrange(len(b)); b[pos] = rng.randrange(256)
    cases.append(('pkl-byte', rezip(bytes(b))))
for i in range(30):  # one opcode replaced by another
    name, pos = rng.choice(ops); b = bytearray(pkl); b[pos] = rng.choice(opcodes)[0]
    cases.append(('opcode', rezip(bytes(b))))
for i in range(37):  # a GLOBAL pointing at something dangerous
    pos = rng.choice(globals_at); end = pkl.index(b'\n', pkl.index(b'\n', pos) + 1) + 1
    cases.append(('global', rezip(pkl[:pos + 1] + rng.choice(EVIL).encode() + pkl[end:])))
assert len(cases) == 177, len(cases)
cases = cases[::int(stride)]  # every stride-th mutation (all kinds keep their share), every payload
for p in PAYLOADS:  # whole pickles that would run code
    cases.append(('payload', rezip(p)))
path = os.path.join(work, 'mutated.pth')
original = load_local_checkpoint(src)


def same(a, b):
    import numpy as np
    import torch
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if hasattr(a, '__dict__'):  # e.g. mmengine's HistoryBuffer: equal when all its attributes are
        return type(a) is type(b) and same(vars(a), vars(b))
    return type(a) is type(b) and a == b


with open(report, 'w') as rep:
    for i, (kind, data) in enumerate(cases):
        with open(path, 'wb') as f:
            f.write(data)
        rep.write(json.dumps({'case': i, 'kind': kind, 'started': True}) + '\n'); rep.flush()
        try:
            got = load_local_checkpoint(path)
            outcome = 'loaded' if same(got, original) else 'loaded, different'
        except CheckpointError as err:
            outcome = 'CheckpointError' if path in str(err) else 'CheckpointError without the file name'
        except BaseException as err:
            outcome = f'{type(err).__name__}: {str(err)[:200]}'
        rep.write(json.dumps({'case': i, 'kind': kind, 'outcome': outcome}) + '\n'); rep.flush()
'''


@pytest.mark.parametrize('stride', [pytest.param(1, marks=pytest.mark.slow), 4], ids=['200_files', '68_files'])
def test_fuzzed_checkpoints_never_run_code_nor_crash(real_checkpoint, tmp_path, stride):
    """Mutations of a checkpoint written by mmengine, loaded in a child process (a crash must show): all 200
    in ``make test-slow``, every 4th mutation and all 23 code-running payloads in ``make test``."""
    import json
    import subprocess
    import tempfile
    canary = tmp_path / 'CANARY'
    report = tmp_path / 'report.jsonl'
    # up to 200 x 22 MB of writes: in memory where there is a tmpfs
    with tempfile.TemporaryDirectory(dir='/dev/shm' if os.path.isdir('/dev/shm') else None) as scratch:
        proc = subprocess.run([sys.executable, '-c', FUZZ_CHILD, str(real_checkpoint), scratch, str(canary),
                               str(report), str(stride)], capture_output=True, text=True, timeout=600)
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    done = [r for r in lines if 'outcome' in r]
    assert proc.returncode == 0, f'child died at case {lines[-1]}: {proc.stderr[-3000:]}'
    assert len(done) == len(range(0, 177, stride)) + 23
    assert not canary.exists()
    outcomes = {}
    for r in done:
        outcomes.setdefault(r['outcome'], []).append(r['kind'])
    # a rewritten pickle may load as other values (its zip is intact: nothing can tell), never as code
    allowed = {'loaded', 'loaded, different', 'CheckpointError'}
    assert set(outcomes) <= allowed, {k: v for k, v in outcomes.items() if k not in allowed}
    # damage to the file itself (bit flips, truncation) never loads as different weights: the CRCs catch it
    assert not {'flip', 'truncate'} & set(outcomes.get('loaded, different', []))
    refused = [r['kind'] for r in done if r['outcome'] == 'CheckpointError']
    assert refused.count('payload') == sum(r['kind'] == 'payload' for r in done)  # every payload refused
    assert refused.count('global') == sum(r['kind'] == 'global' for r in done)
    assert refused.count('truncate') == sum(r['kind'] == 'truncate' for r in done) > 0
