"""Checkpoint reads with errors that name the file and the problem.

Local files go through :func:`load_local_checkpoint` (mmengine reaches it through emo_mm.models.pretrained): it
names the file in its errors (a truncated download otherwise reports "failed finding central directory" and
nothing else), checks the zip's CRCs (torch does not: a flipped bit in a tensor loads as a different weight)
and explains a refused pickle instead of suggesting ``weights_only=False``. ``torch.load`` always runs with
``weights_only=True``; :mod:`emo_mm.utils.compat` allows what mmengine itself writes.

Checkpoints given by http(s) URL are fetched once into the torch hub cache (``$TORCH_HOME/hub/checkpoints``,
where mmengine puts them too) by :func:`fetch_checkpoint`, then read by :func:`load_local_checkpoint`.
mmengine's own http loader ends in ``torch.load(weights_only=False)`` (torch.hub's default), which runs any
code pickled into the file: it is replaced for ``http://`` / ``https://`` and for mmengine's
``torchvision://`` / ``open-mmlab://`` loaders, which call it. A failed download leaves nothing in the
cache and raises :class:`DownloadError` with one line: the URL, what went wrong, how to use a local copy.
"""
import http.client
import os
import os.path as osp
import pickle
import posixpath
import re
import socket
import sys
import tempfile
import zipfile
from urllib.error import HTTPError, URLError
from urllib.parse import unquote, urlparse
from urllib.request import Request, urlopen

import mmengine.runner.checkpoint as mmengine_checkpoint
import torch

__all__ = ['CheckpointError', 'DownloadError', 'zip_checkpoint_problem', 'load_local_checkpoint', 'is_url',
           'checkpoint_cache_dir', 'cached_checkpoint_path', 'fetch_checkpoint', 'load_url_checkpoint']

HTTP_PREFIXES = ('http://', 'https://')
# file names that say nothing about the weights: EMO's release is resources/EMO_{1M,2M,5M,6M}/net.pth, four
# different files that would overwrite each other in the cache under their bare name
GENERIC_NAMES = frozenset({'net.pth', 'model.pth', 'checkpoint.pth', 'weights.pth', 'best.pth', 'latest.pth'})
DOWNLOAD_TIMEOUT_S = 60
_GITHUB_BLOB = re.compile(r'^(https?://github\.com/[^/]+/[^/]+)/blob/')


class CheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be used; the message names the file and the reason."""


class DownloadError(CheckpointError):
    """A checkpoint URL could not be fetched; one line naming the URL, the reason and the local way out."""


def _pickle_reason(err):
    """The line of torch's long weights_only message that says what was refused."""
    boilerplate = ('Weights only load failed', 'Please file an issue', 'Check the documentation')
    for line in str(err).splitlines():
        line = line.replace('WeightsUnpickler error:', '').strip()
        if line and not line.startswith(boilerplate):
            return line
    return type(err).__name__


def _first_line(err):
    return (str(err).splitlines() or [''])[0]


def zip_checkpoint_problem(filename):
    """Why the zip container of a checkpoint is damaged, or ``None``. torch.load does not check the CRCs, so a
    flipped bit in tensor data would load as silently different weights. Pre-zip (legacy) files: ``None``."""
    if not zipfile.is_zipfile(filename):
        with open(filename, 'rb') as f:  # a zip cut short has lost its directory: no longer "a zip file"
            return 'truncated zip (no central directory)' if f.read(4) == b'PK\x03\x04' else None
    try:
        with zipfile.ZipFile(filename) as zf:
            bad = zf.testzip()  # reads every record and checks its CRC
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        return f'damaged zip ({err})'
    return f'corrupt record {bad} (CRC mismatch)' if bad is not None else None


def load_local_checkpoint(filename, map_location=None):
    """``torch.load(filename, weights_only=True)`` with clear errors for missing, truncated, corrupt or unsafe
    files."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint file not found: {filename}')
    problem = zip_checkpoint_problem(filename)
    if problem:
        raise CheckpointError(f'cannot read checkpoint {filename} ({osp.getsize(filename)} bytes): {problem}. '
                              'Re-download or re-save it.')
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f'refusing to load {filename}: it contains objects outside the allow-list for checkpoints '
            f'(torch weights_only=True plus what mmengine itself writes). Loading it would run code from '
            f'the file. Details: {_pickle_reason(err)}') from err
    except Exception as err:  # noqa: B902  a corrupt pickle surfaces as Key/Index/Type/...Error of the unpickler
        size = osp.getsize(filename)
        raise CheckpointError(
            f'cannot read checkpoint {filename} ({size} bytes): the file is truncated, corrupt or not a PyTorch '
            f'checkpoint ({type(err).__name__}: {_first_line(err)}). Re-download or re-save it.') from err


# ------------------------------------------------------------------------------------------ URLs
def is_url(path):
    """True for an ``http://`` / ``https://`` checkpoint (what :func:`fetch_checkpoint` downloads)."""
    return isinstance(path, str) and path.lower().startswith(HTTP_PREFIXES)


def checkpoint_cache_dir():
    """``$TORCH_HOME/hub/checkpoints`` (torch's default ``~/.cache/torch/hub/checkpoints``), read at each call
    like torch.hub and mmengine do."""
    return osp.join(torch.hub.get_dir(), 'checkpoints')


def cached_checkpoint_path(url):
    """Where ``url`` is cached: the URL's file name, as torch.hub / mmengine name it, except a name that does
    not identify the weights (``net.pth``...) gets its folder in front: ``.../EMO_1M/net.pth`` ->
    ``EMO_1M_net.pth``."""
    path = unquote(urlparse(url).path)
    name = posixpath.basename(path)
    if name.lower() in GENERIC_NAMES and posixpath.basename(posixpath.dirname(path)):
        name = f'{posixpath.basename(posixpath.dirname(path))}_{name}'
    if not name:
        raise ValueError(f'checkpoint URL {url} does not end in a file name')
    return osp.join(checkpoint_cache_dir(), name)


def local_copy_hint(url, option=None):
    """How to do without the download: a local path (through ``option`` when given) or a pre-seeded cache."""
    how = f'--cfg-options {option}=PATH' if option else 'its path instead of the URL'
    return (f'To use a local copy instead, download {url} where there is internet access and pass {how}, '
            f'or copy the file to {cached_checkpoint_path(url)}')


def _reason(err, url, timeout):
    """A few words on why a download failed."""
    host = urlparse(url).netloc
    if isinstance(err, HTTPError):
        return f'HTTP {err.code} {err.reason}'
    if isinstance(err, http.client.IncompleteRead):
        return (f'the download was cut short after {len(err.partial)} bytes'
                + (f' of {len(err.partial) + err.expected}' if err.expected else ''))
    if isinstance(err, URLError):
        err = err.reason if isinstance(err.reason, BaseException) else OSError(str(err.reason))
    if isinstance(err, (TimeoutError, socket.timeout)):
        return f'no answer from {host} within {timeout} s'
    if isinstance(err, socket.gaierror):
        return f'cannot resolve host {host} (no network or DNS?)'
    if isinstance(err, ConnectionRefusedError):
        return f'connection to {host} refused'
    if isinstance(err, OSError) and not isinstance(err, _Failed):
        return f'cannot reach {host} ({err.strerror or err})'
    return str(err)


class _Failed(OSError):
    """A download that completed at the HTTP level but did not deliver a checkpoint."""


def _download(url, dst, timeout):
    """Stream ``url`` into the open binary file ``dst``; raise on anything short of a whole checkpoint."""
    match = _GITHUB_BLOB.match(url)  # the web page of a file; /raw/ is the file itself
    request_url = match.group(1) + '/raw/' + url[match.end():] if match else url
    with urlopen(Request(request_url, headers={'User-Agent': 'emo_mm'}), timeout=timeout) as resp:
        if resp.headers.get_content_type() == 'text/html':
            raise _Failed('the server sent a web page (text/html), not a checkpoint file')
        length = resp.headers.get('Content-Length')
        expected = int(length) if length and length.isdigit() else None
        got = 0
        while True:
            chunk = resp.read(1 << 20)
            if not chunk:
                break
            dst.write(chunk)
            got += len(chunk)
    if expected is not None and got != expected:  # urllib reports a short body as a normal end
        raise _Failed(f'the download was cut short after {got} of {expected} bytes')
    if got == 0:
        raise _Failed('the server sent an empty file')


def fetch_checkpoint(url, option=None, timeout=DOWNLOAD_TIMEOUT_S):
    """The local path of ``url`` in the torch hub cache, downloaded first if it is not there.

    The body goes to a temporary name beside the cache entry and is renamed only when it is complete and its
    zip container intact, so a failed download never leaves a file that a later run would take as cached.
    Raises :class:`DownloadError` (one line: URL, reason, :func:`local_copy_hint` with ``option``).
    """
    dst = cached_checkpoint_path(url)
    if osp.isfile(dst):
        return dst
    cache = osp.dirname(dst)
    try:
        os.makedirs(cache, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=osp.basename(dst) + '.', suffix='.partial', dir=cache)
    except OSError as err:
        raise DownloadError(f'cannot download checkpoint {url}: cannot write to the cache {cache} '
                            f'({err.strerror or err}); set TORCH_HOME to a writable folder. '
                            f'{local_copy_hint(url, option)}') from err
    try:
        sys.stderr.write(f'Downloading: "{url}" to {dst}\n')
        try:
            with os.fdopen(fd, 'wb') as f:
                _download(url, f, timeout)
            problem = zip_checkpoint_problem(tmp)
            if problem:
                raise _Failed(f'the downloaded file is not a whole checkpoint ({problem})')
        except (OSError, http.client.HTTPException, ValueError) as err:
            raise DownloadError(f'cannot download checkpoint {url}: {_reason(err, url, timeout)}; nothing was '
                                f'saved in {cache}. {local_copy_hint(url, option)}') from err
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a shared cache's files from other users
        os.replace(tmp, dst)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    return dst


def load_url_checkpoint(filename, map_location=None):
    """:func:`fetch_checkpoint` then :func:`load_local_checkpoint` (``weights_only=True``)."""
    path = fetch_checkpoint(filename)
    try:
        return load_local_checkpoint(path, map_location=map_location)
    except CheckpointError as err:
        raise CheckpointError(f'{err} (cached copy of {filename}: delete it to download it again)') from err


# mmengine's loaders for plain paths and http(s) are registered once, by emo_mm.models.pretrained (these
# readers plus the official -> mm key remap); importing emo_mm always imports both modules.
# torchvision:// and open-mmlab:// resolve to URLs and call this module global of mmengine directly
def _safe_load_from_http(filename, map_location=None, model_dir=None, progress=None):  # mmengine's signature
    return load_url_checkpoint(filename, map_location)


mmengine_checkpoint.load_from_http = _safe_load_from_http
