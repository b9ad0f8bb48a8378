"""Pretrained weights by URL, as OpenMMLab configs name them: fetched once into $TORCH_HOME/hub/checkpoints,
read with weights_only=True, official layout recognised; failed downloads are one line and leave no file.

No internet: a loopback HTTP server (127.0.0.1, port 0, a thread that stops itself) serves the files.
"""
import argparse
import os
import re
import socket
import threading
from collections import Counter, OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

import emo_mm  # noqa: F401  (registers the checkpoint loaders)
from emo_mm.models.pretrained import build_backbone, load_pretrained
from emo_mm.utils.checkpoint_io import CheckpointError, DownloadError, cached_checkpoint_path, fetch_checkpoint

from tests.utils import ROOT, run_tool

SERVER_LIFETIME_S = 600  # the server shuts itself down after this even if a test never reaches its teardown
EMO_1M_URL_PATH = '/zhangzjn/EMO/raw/main/resources/EMO_1M/net.pth'  # the release's layout: a generic name


class _RunsCode:
    """Pickles to ``os.system(cmd)``."""

    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return os.system, (self.cmd,)


def _official_emo_1m(seed=0):
    """A random-weight EMO-1M ImageNet state_dict in the official layout: flat keys, final norm, ``head.*``
    (small weights and positive BN variances, so that a detector trains on it without overflowing)."""
    gen = torch.Generator().manual_seed(seed)
    state = OrderedDict((k, torch.randn(v.shape, generator=gen) * 0.1 if v.is_floating_point() else v.clone())
                        for k, v in build_backbone('emo-1m', final_norm=True).state_dict().items())
    state.update((k, v.abs() + 0.5) for k, v in state.items() if k.endswith('running_var'))
    state['head.weight'] = torch.randn(1000, 168, generator=gen)
    state['head.bias'] = torch.randn(1000, generator=gen)
    return state


def _file_bytes(obj, tmp_path, name):
    path = tmp_path / name
    torch.save(obj, path)
    return path.read_bytes()


class _Server:
    """``files``: URL path -> bytes. ``/cut/<name>`` announces the whole file of ``/<name>`` and sends half;
    ``/page/...`` is an HTML page; anything else is a 404. ``hits`` counts the GET requests per path."""

    def __init__(self, files):
        self.files, self.hits = files, Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.hits[self.path] += 1
                if self.path.startswith('/page/'):
                    body, ctype = b'<html><body>a web page</body></html>', 'text/html; charset=utf-8'
                else:
                    body, ctype = server.files.get(self.path.replace('/cut/', '/', 1)), 'application/octet-stream'
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header('Content-Type', ctype)
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                self.wfile.write(body[:len(body) // 2] if self.path.startswith('/cut/') else body)
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f'http://127.0.0.1:{self.httpd.server_port}'
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs=dict(poll_interval=0.1), daemon=True)
        self.timer = threading.Timer(SERVER_LIFETIME_S, self.httpd.shutdown)
        self.timer.daemon = True

    def __enter__(self):
        self.thread.start()
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    home = tmp_path / 'torch_home'
    monkeypatch.setenv('TORCH_HOME', str(home))
    return home


@pytest.fixture
def server(tmp_path):
    official = _official_emo_1m()
    # the official way, wrapped (EMA preferred) and DDP-prefixed, as some official files are
    wrapped = {'net_E': OrderedDict(('module.' + k, v) for k, v in official.items()), 'epoch': 300}
    converted = {'meta': {'arch': 'emo-1m'}, 'state_dict': OrderedDict(
        ('head.fc.' + k[5:] if k.startswith('head.') else 'backbone.' + k, v * 2) for k, v in official.items())}
    files = {EMO_1M_URL_PATH: _file_bytes(official, tmp_path, 'official.pth'),
             '/wrapped/EMO_1M_ema.pth': _file_bytes(wrapped, tmp_path, 'wrapped.pth'),
             '/converted/emo_1m_in1k.pth': _file_bytes(converted, tmp_path, 'converted.pth'),
             '/evil/evil.pth': _file_bytes({'state_dict': official, 'meta': _RunsCode(f'touch {tmp_path}/pwned')},
                                           tmp_path, 'evil.pth')}
    with _Server(files) as srv:
        srv.official, srv.converted = official, converted
        yield srv


def _free_port():
    with socket.socket() as s:  # bound, never listening: connecting is refused
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _cache_files(torch_home):
    cache = torch_home / 'hub' / 'checkpoints'
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def _records(name):
    import logging
    logger, records = logging.getLogger(name), []
    logger.setLevel(logging.INFO)
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger.addHandler(handler)
    return logger, records


# -------------------------------------------------------------------------------------- backbone init_cfg
def test_backbone_url_downloads_once_into_torch_home(server, torch_home):
    from emo_mm.models.backbones import EMO
    url = server.base + EMO_1M_URL_PATH
    logger, records = _records('test_pretrained_urls')
    for _ in range(2):  # second time: from the cache, no request
        model = EMO('1m', out_indices=(1, 2, 3, 4), init_cfg=dict(type='Pretrained', checkpoint=url))
        load_pretrained(model, url, logger=logger)
        assert torch.equal(model.stage4[2].qk.conv.weight, server.official['stage4.2.qk.conv.weight'])
    assert server.hits[EMO_1M_URL_PATH] == 1
    # net.pth says nothing about the weights: the release folder goes in front (EMO_2M/net.pth would collide)
    cached = torch_home / 'hub' / 'checkpoints' / 'EMO_1M_net.pth'
    assert cached_checkpoint_path(url) == str(cached) and _cache_files(torch_home) == ['EMO_1M_net.pth']
    assert len(records) == 2 and all(f"load_pretrained '{url}' (cached as {cached}) (emo-1m): loaded 213 / 213 "
                                     'tensors, missing [], unexpected []; ignored 4' in r for r in records)
    # the mm path: init_weights through the init_cfg, from the cache
    model = EMO('1m', init_cfg=dict(type='Pretrained', checkpoint=url))
    model.init_weights()
    assert torch.equal(model.stage0[0].convs[0][0].weight, server.official['stage0.0.convs.0.0.weight'])
    assert server.hits[EMO_1M_URL_PATH] == 1


def test_wrapped_and_converted_files_by_url(server, torch_home):
    from emo_mm.models.backbones import EMO
    model = EMO('1m')
    report = load_pretrained(model, server.base + '/wrapped/EMO_1M_ema.pth')
    assert report['missing'] == [] and report['unexpected'] == [] and len(report['loaded']) == 213
    report = load_pretrained(model, server.base + '/converted/emo_1m_in1k.pth')
    assert report['missing'] == [] and len(report['loaded']) == 213
    assert torch.equal(model.stage1[0].proj.conv.weight, 2 * server.official['stage1.0.proj.conv.weight'])
    assert _cache_files(torch_home) == ['EMO_1M_ema.pth', 'emo_1m_in1k.pth']


def test_url_of_another_variant_names_key_and_shapes(server, torch_home):
    from emo_mm.models.backbones import EMO
    with pytest.raises(ValueError) as err:
        load_pretrained(EMO('2m'), server.base + EMO_1M_URL_PATH)
    assert f"checkpoint '{server.base}{EMO_1M_URL_PATH}' does not fit emo-2m" in str(err.value)
    assert 'it looks like emo-1m' in str(err.value)


# --------------------------------------------------------------------------------------- failed downloads
@pytest.mark.parametrize('case', ['404', 'truncated', 'refused', 'web page'])
def test_failed_download_is_one_line_and_leaves_no_file(case, server, torch_home):
    url, reason = {
        '404': (server.base + '/nope/EMOv2_1M_224.pth', 'HTTP 404 Not Found'),
        'truncated': (server.base + '/cut' + EMO_1M_URL_PATH,
                      f'the download was cut short after {len(server.files[EMO_1M_URL_PATH]) // 2} of '
                      f'{len(server.files[EMO_1M_URL_PATH])} bytes'),
        'refused': (f'http://127.0.0.1:{_free_port()}/EMOv2_1M_224.pth', 'connection to 127.0.0.1:'),
        'web page': (server.base + '/page/EMOv2_1M_224.pth', 'the server sent a web page (text/html)'),
    }[case]
    for _ in range(2):  # nothing cached: the second try asks the server again
        with pytest.raises(DownloadError) as err:
            fetch_checkpoint(url, option='model.backbone.init_cfg.checkpoint')
        msg = str(err.value)
        assert '\n' not in msg
        assert msg.startswith(f'cannot download checkpoint {url}: {reason}')
        assert (f'To use a local copy instead, download {url} where there is internet access and pass '
                f'--cfg-options model.backbone.init_cfg.checkpoint=PATH, or copy the file to '
                f'{cached_checkpoint_path(url)}') in msg
        assert _cache_files(torch_home) == []  # no partial file, nothing a later run would take as cached
    if case != 'refused':
        assert server.hits[url[len(server.base):]] == 2
    # through the backbone: the same line
    from emo_mm.models.backbones import EMOv2
    with pytest.raises(DownloadError, match=re.escape(f'cannot download checkpoint {url}: {reason}')):
        EMOv2('1m', init_cfg=dict(type='Pretrained', checkpoint=url)).init_weights()


def test_unwritable_cache_is_one_line(server, tmp_path, monkeypatch):
    (tmp_path / 'not_a_dir').write_text('')
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'not_a_dir'))
    url = server.base + EMO_1M_URL_PATH
    with pytest.raises(DownloadError) as err:
        fetch_checkpoint(url)
    assert str(err.value).startswith(f'cannot download checkpoint {url}: cannot write to the cache '
                                     f'{tmp_path}/not_a_dir/hub/checkpoints (Not a directory); set TORCH_HOME')
    assert '\n' not in str(err.value) and server.hits[EMO_1M_URL_PATH] == 0


def test_github_page_link_fetches_the_file(torch_home, monkeypatch):
    """README links are /blob/ pages; the file is at /raw/. Nothing leaves this machine: urlopen is replaced."""
    from urllib.error import HTTPError

    import emo_mm.utils.checkpoint_io as checkpoint_io
    asked = []

    def fake_urlopen(request, timeout):
        asked.append(request.full_url)
        raise HTTPError(request.full_url, 404, 'Not Found', {}, None)

    monkeypatch.setattr(checkpoint_io, 'urlopen', fake_urlopen)
    url = 'https://github.com/zhangzjn/data/blob/main/emov2_pretrained_weights/EMOv2_1M_224.pth'
    with pytest.raises(DownloadError, match=re.escape(f'cannot download checkpoint {url}: HTTP 404 Not Found')):
        fetch_checkpoint(url)
    assert asked == ['https://github.com/zhangzjn/data/raw/main/emov2_pretrained_weights/EMOv2_1M_224.pth']
    assert cached_checkpoint_path(url) == str(torch_home / 'hub' / 'checkpoints' / 'EMOv2_1M_224.pth')


@pytest.mark.parametrize('error, reason', [
    (socket.gaierror(-3, 'Temporary failure in name resolution'),
     'cannot resolve host example.invalid (no network or DNS?)'),
    (TimeoutError('timed out'), 'no answer from example.invalid within 60 s')], ids=['dns', 'timeout'])
def test_offline_reasons(error, reason, torch_home, monkeypatch):
    """No network here: what DNS failure and a silent host say (urlopen replaced, nothing leaves the machine)."""
    from urllib.error import URLError

    import emo_mm.utils.checkpoint_io as checkpoint_io

    def fake_urlopen(request, timeout):
        raise URLError(error)

    monkeypatch.setattr(checkpoint_io, 'urlopen', fake_urlopen)
    url = 'https://example.invalid/w/EMOv2_1M_224.pth'
    with pytest.raises(DownloadError, match=re.escape(f'cannot download checkpoint {url}: {reason}; nothing')):
        fetch_checkpoint(url)
    assert _cache_files(torch_home) == []


def test_malicious_file_by_url_is_refused_by_every_mmengine_entry(server, torch_home, tmp_path):
    """mmengine's http loader ends in torch.load(weights_only=False); ours, and torchvision:// / open-mmlab://,
    which call it, read with weights_only=True."""
    import mmengine.runner.checkpoint as ckpt
    url = server.base + '/evil/evil.pth'
    with pytest.raises(CheckpointError, match='refusing to load'):
        ckpt._load_checkpoint(url)
    with pytest.raises(CheckpointError, match='refusing to load'):
        ckpt.load_from_http(url)  # the module global that load_from_torchvision / load_from_openmmlab call
    assert not (tmp_path / 'pwned').exists()


# ------------------------------------------------------------------------------- load_from / tools/test.py
def test_load_from_official_url_fills_the_classifier(server, torch_home, tmp_path):
    """An official flat file as load_from: mapped to backbone.* / head.fc.*, every tensor of an ImageNet
    classifier loaded; an mmengine-written checkpoint comes back unchanged."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner.checkpoint import _load_checkpoint, load_checkpoint
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    model = MODELS.build(Config.fromfile(str(ROOT / 'configs/cls/emo_1m_8xb256_in1k.py')).model)
    ckpt = load_checkpoint(model, server.base + EMO_1M_URL_PATH, map_location='cpu', strict=True)
    assert set(ckpt['state_dict']) == set(model.state_dict())
    assert torch.equal(model.head.fc.weight, server.official['head.weight'])
    assert torch.equal(model.backbone.norm.norm.weight, server.official['norm.norm.weight'])
    written = {'meta': {'epoch': 3}, 'state_dict': OrderedDict(model.state_dict()), 'message_hub': {}}
    torch.save(written, tmp_path / 'epoch_3.pth')
    again = _load_checkpoint(str(tmp_path / 'epoch_3.pth'))
    assert list(again) == list(written) and list(again['state_dict']) == list(written['state_dict'])
    assert list(_load_checkpoint(server.base + '/converted/emo_1m_in1k.pth')) == ['meta', 'state_dict']
    assert server.hits[EMO_1M_URL_PATH] == 1


def test_tools_test_evaluates_official_url(server, torch_home, mini_data, tmp_path):
    url = server.base + EMO_1M_URL_PATH
    proc = run_tool('tools/test.py', 'configs/cls/emo_1m_8xb256_in1k.py', url, '--mini', '--work-dir',
                    tmp_path / 'work', '--cfg-options', 'test_dataloader.dataset.indices=8', timeout=600)
    out = proc.stdout + proc.stderr
    assert f'{url}: official EMO/EMOv2 classification weights, keys mapped' in out
    assert 'do not match exactly' not in out and 'missing keys' not in out, out[-3000:]
    assert re.search(r'accuracy/top1: [\d.]+', out)
    assert server.hits[EMO_1M_URL_PATH] == 1 and _cache_files(torch_home) == ['EMO_1M_net.pth']


def test_tools_stop_with_one_line_before_building(server, torch_home):
    from emo_mm.apis.runner import exit_if_checkpoint_unusable
    url = server.base + '/nope/EMOv2_9M_224.pth'
    with pytest.raises(SystemExit) as exit_:
        exit_if_checkpoint_unusable(url, 'checkpoint')
    assert str(exit_.value.code).startswith(f'checkpoint: cannot download checkpoint {url}: HTTP 404 Not Found;')
    assert '\n' not in str(exit_.value.code)
    exit_if_checkpoint_unusable(server.base + EMO_1M_URL_PATH, 'checkpoint')  # fetched now, into the cache
    assert _cache_files(torch_home) == ['EMO_1M_net.pth']
    # a damaged file someone put into the cache: named, with the way out
    cut = torch_home / 'hub' / 'checkpoints' / 'EMOv2_2M_224.pth'
    cut.write_bytes(server.files[EMO_1M_URL_PATH][:5000])
    url = server.base + '/nope/EMOv2_2M_224.pth'
    with pytest.raises(SystemExit) as exit_:
        exit_if_checkpoint_unusable(url, 'checkpoint')
    assert exit_.value.code == (f'checkpoint {url} (cached as {cut}; delete that file to download it again): '
                                'truncated zip (no central directory)')


def test_pre_seeded_cache_needs_no_network(server, torch_home, tmp_path):
    """Offline use: the file copied to $TORCH_HOME/hub/checkpoints/<name> serves the URL config unchanged."""
    from emo_mm.models.backbones import EMO
    seeded = torch_home / 'hub' / 'checkpoints' / 'EMO_1M_net.pth'
    seeded.parent.mkdir(parents=True)
    seeded.write_bytes(server.files[EMO_1M_URL_PATH])
    url = f'http://127.0.0.1:{_free_port()}/zhangzjn/EMO/raw/main/resources/EMO_1M/net.pth'  # nobody listens
    report = load_pretrained(EMO('1m'), url)
    assert len(report['loaded']) == 213 and report['missing'] == []


# ------------------------------------------------------------------------------------ --mini and preflight
def _prepare(config, *argv):
    from emo_mm.apis.runner import add_common_args, prepare_config
    parser = argparse.ArgumentParser()
    parser.add_argument('config')
    add_common_args(parser)
    return prepare_config(parser.parse_args([config, *argv]), 'tools/train.py',
                          ('train_dataloader', 'val_dataloader'))[0]


def test_mini_keeps_an_explicit_url_and_the_backbone_as_configured(server, torch_home, mini_data):
    url = server.base + EMO_1M_URL_PATH
    with pytest.warns(UserWarning, match='starts from scratch'):  # the config's own checkpoint: dropped
        cfg = _prepare('configs/det/ssdlite_emo_1m.py', '--mini')
    assert cfg.model.backbone.init_cfg is None and cfg.model.backbone.norm_eval is False
    assert server.hits[EMO_1M_URL_PATH] == 0
    cfg = _prepare('configs/det/retinanet_emo_1m.py', '--mini', '--cfg-options',
                   f'model.backbone.init_cfg.checkpoint={url}')
    bb = cfg.model.backbone
    assert (bb.init_cfg.type, bb.init_cfg.checkpoint, bb.norm_eval, bb.frozen_stages) == ('Pretrained', url, True, 1)
    assert server.hits[EMO_1M_URL_PATH] == 1  # fetched by the preflight
    bad = server.base + '/nope/EMOv2_9M_224.pth'  # a name not in the cache (the cache is keyed by file name)
    with pytest.raises(SystemExit) as exit_:
        _prepare('configs/det/retinanet_emo_1m.py', '--mini', '--cfg-options',
                 f'model.backbone.init_cfg.checkpoint={bad}')
    assert (f'- cannot download checkpoint {bad}: HTTP 404 Not Found; nothing was saved in '
            f'{torch_home}/hub/checkpoints. To use a local copy instead, download {bad} where there is internet '
            'access and pass --cfg-options model.backbone.init_cfg.checkpoint=PATH') in str(exit_.value.code)


def test_no_download_when_the_dataset_is_missing(server, torch_home, tmp_path):
    """The preflight fetches URL weights only for a run that can start."""
    from mmengine.config import Config

    from emo_mm.apis.preflight import PreflightError, check
    cfg = Config.fromfile(str(ROOT / 'configs/det/retinanet_emo_1m.py'))
    cfg.model.backbone.init_cfg.checkpoint = server.base + EMO_1M_URL_PATH
    cfg.train_dataloader.dataset.data_root = str(tmp_path / 'nowhere') + '/'
    with pytest.raises(PreflightError, match='COCO2017 not found'):
        check(cfg, ('train_dataloader', ))
    assert server.hits[EMO_1M_URL_PATH] == 0 and _cache_files(torch_home) == []


def test_det_mini_iteration_from_url_weights(server, torch_home, mini_data, tmp_path):
    """tools/train.py with the URL after --mini: the preflight downloads, the backbone init reads the cache,
    every backbone tensor loaded, norm_eval kept."""
    url = server.base + EMO_1M_URL_PATH
    work = tmp_path / 'work'
    proc = run_tool('tools/train.py', 'configs/det/ssdlite_emo_1m.py', '--mini', '--work-dir', work,
                    '--cfg-options', f'model.backbone.init_cfg.checkpoint={url}', 'train_cfg.max_epochs=1',
                    'train_dataloader.dataset.dataset.indices=2', 'train_dataloader.batch_size=2',
                    'val_dataloader.dataset.indices=1', 'default_hooks.logger.interval=1', timeout=600)
    out = proc.stdout + proc.stderr
    cached = torch_home / 'hub' / 'checkpoints' / 'EMO_1M_net.pth'
    assert out.count(f'Downloading: "{url}" to {cached}') == 1
    assert (f"load_pretrained '{url}' (cached as {cached}) (emo-1m): loaded 213 / 213 tensors, missing [], "
            'unexpected []') in out, out[-3000:]
    assert 'starts from scratch' not in out and server.hits[EMO_1M_URL_PATH] == 1
    assert re.search(r'Epoch\(train\) \[1\]\[1/1\].*loss: [\d.]+', out)
    assert "norm_eval=True" in (work / 'ssdlite_emo_1m.py').read_text()
