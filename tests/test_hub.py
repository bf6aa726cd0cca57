"""Hub and local-dir loading, offline behaviour, save_pretrained / push_to_hub, timm interchange.

Nothing here reaches the network: a Hub is served from 127.0.0.1 (huggingface_hub follows HF_ENDPOINT), caches are
built in temporary folders, and the upload call of push_to_hub is patched.
"""
from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import re
import threading
import time
from typing import Dict, List, Tuple

import pytest
import safetensors.torch
import torch

import featzoo
from featzoo.weights import catalog, hub
from helpers import (PARITY_MAX_BYTES, assert_equal, assert_same_function, by_size, configuration_of, input_side_for,
                     num_params)

ARCH = 'resnet10t'  # small and quick to build: the served files stay small and the tests fast
X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _commit(seed: str) -> str:
    return hashlib.sha1(seed.encode()).hexdigest()


class FakeHub:
    """A minimal Hugging Face Hub: ``/{repo}/resolve/{revision}/{file}`` with the headers huggingface_hub reads,
    HTTP ranges (so that downloads can resume), and switches to break a download off midway."""

    def __init__(self) -> None:
        # repo_id -> revision -> (commit, {filename: bytes})
        self.repos: Dict[str, Dict[str, Tuple[str, Dict[str, bytes]]]] = {}
        self.log: List[Tuple[str, str]] = []
        self.break_at: Dict[str, int] = {}  # filename -> byte offset at which a GET body stops
        self.breaks_left: Dict[str, int] = {}  # filename -> how many GETs still break (absent: all of them)
        self.refuse_resume = False  # answer a resumed (Range) request with 503
        hub_state = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _error(self, status: int, code: str) -> None:
                self.send_response(status)
                self.send_header('X-Error-Code', code)
                self.send_header('Content-Length', '0')
                self.end_headers()

            def _serve(self, body: bool) -> None:
                hub_state.log.append((self.command, self.path))
                match = re.match(r'^/(.+)/resolve/([^/]+)/(.+)$', self.path.split('?')[0])
                if not match:
                    return self._error(404, 'RepoNotFound')
                repo_id, revision, filename = match.groups()
                revisions = hub_state.repos.get(repo_id)
                if revisions is None:
                    return self._error(401, 'RepoNotFound')
                found = revisions.get(revision) or next((v for v in revisions.values() if v[0] == revision), None)
                if found is None:
                    return self._error(404, 'RevisionNotFound')
                commit, files = found
                if filename not in files:
                    return self._error(404, 'EntryNotFound')
                data = files[filename]
                start = 0
                header = self.headers.get('Range')
                if header:
                    if hub_state.refuse_resume:
                        return self._error(503, 'Unavailable')
                    start = int(re.match(r'bytes=(\d+)-', header).group(1))
                self.send_response(206 if header else 200)
                self.send_header('X-Repo-Commit', commit)
                self.send_header('ETag', f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header('Accept-Ranges', 'bytes')
                self.send_header('Content-Length', str(len(data) - start))
                if header:
                    self.send_header('Content-Range', f'bytes {start}-{len(data) - 1}/{len(data)}')
                cut = hub_state.break_at.get(filename) if body else None
                if cut is not None and filename in hub_state.breaks_left:
                    if hub_state.breaks_left[filename] <= 0:
                        cut = None
                    hub_state.breaks_left[filename] -= 1
                if cut is not None:
                    self.send_header('Connection', 'close')
                self.end_headers()
                if not body:
                    return
                if cut is not None:
                    self.wfile.write(data[start:max(start, cut)])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data[start:])

        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.server.daemon_threads = True
        self.url = f'http://127.0.0.1:{self.server.server_address[1]}'
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, repo_id: str, files: Dict[str, bytes], revision: str = 'main') -> str:
        commit = _commit(f'{repo_id}@{revision}')
        self.repos.setdefault(repo_id, {})[revision] = (commit, dict(files))
        return commit

    def requested(self, filename: str, method: str = 'GET') -> int:
        return sum(1 for m, p in self.log if m == method and p.endswith('/' + filename))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _offline_off(monkeypatch) -> None:
    import huggingface_hub.constants as constants
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    monkeypatch.delenv('TRANSFORMERS_OFFLINE', raising=False)
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A private HF home and cache for the test, online mode, no token."""
    _offline_off(monkeypatch)
    monkeypatch.setenv('HF_HOME', str(tmp_path / 'hf_home'))
    monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path / 'hf_cache'))
    monkeypatch.setenv('HF_HUB_DISABLE_TELEMETRY', '1')
    monkeypatch.delenv('HF_TOKEN', raising=False)
    return tmp_path


@pytest.fixture
def fake_hub(env, monkeypatch):
    server = FakeHub()
    monkeypatch.setenv('HF_ENDPOINT', server.url)
    yield server
    server.close()


@pytest.fixture(scope='module')
def source_model():
    """A randomly initialized model standing in for the published weights, with its file bytes."""
    torch.manual_seed(0)
    model = featzoo.create_model(ARCH).eval()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    return model, safetensors.torch.save(state, metadata={'format': 'pt'}), state


def _pickle_bytes(state) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _default_tag() -> str:
    return featzoo.list_pretrained(f'{ARCH}.*')[0]


def _cache_files(cache: str) -> List[str]:
    return sorted(os.path.relpath(os.path.join(d, f), cache) for d, _, fs in os.walk(cache) for f in fs)


def _same_outputs(model, reference) -> None:
    """Identical state (bit for bit) implies identical outputs; one forward pass confirms it."""
    theirs = reference.state_dict()
    ours = model.state_dict()
    assert ours.keys() == theirs.keys()
    for key, value in ours.items():
        assert torch.equal(value, theirs[key]), key
    with torch.no_grad():
        assert_equal(model.eval()(X), reference.eval()(X), 'logits')


# ---------------------------------------------------------------------------------------------------------------
# Hub downloads

def test_pretrained_downloads_from_hub_then_uses_cache_offline(fake_hub, source_model, env, monkeypatch):
    model, blob, _ = source_model
    name = _default_tag()
    fake_hub.add(f'timm/{name}', {'model.safetensors': blob})
    loaded = featzoo.create_model(name, pretrained=True)
    _same_outputs(loaded, model)
    assert fake_hub.requested('model.safetensors') == 1
    cached = _cache_files(str(env / 'hf_cache'))
    assert any(f.endswith('model.safetensors') and 'snapshots' in f for f in cached), cached

    # HF_HUB_OFFLINE set after huggingface_hub was imported is honoured: no request, the cached file is used.
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    before = len(fake_hub.log)
    again = featzoo.create_model(ARCH, pretrained=True)  # the bare architecture means its default tag
    _same_outputs(again, model)
    assert len(fake_hub.log) == before


def test_pickle_fallback_when_repo_has_no_safetensors(fake_hub, source_model):
    model, _, state = source_model
    name = _default_tag()
    fake_hub.add(f'timm/{name}', {'pytorch_model.bin': _pickle_bytes(state)})
    loaded = featzoo.create_model(name, pretrained=True)
    _same_outputs(loaded, model)
    assert fake_hub.requested('model.safetensors', 'HEAD') >= 1
    assert fake_hub.requested('model.safetensors') == 0
    assert fake_hub.requested('pytorch_model.bin') == 1


def test_repo_without_weights_names_repo_and_files(fake_hub):
    fake_hub.add('timm/empty', {'README.md': b'# empty\n'})
    with pytest.raises(FileNotFoundError) as err:
        hub.resolve_pretrained_file({'hf_hub_id': 'timm/empty', 'architecture': ARCH})
    message = str(err.value)
    assert "'timm/empty'" in message and 'model.safetensors' in message and 'pytorch_model.bin' in message


def test_unknown_repo_and_revision_are_clear_errors(fake_hub):
    fake_hub.add('me/known', {'model.safetensors': b'x'})
    with pytest.raises(FileNotFoundError, match="'me/missing' does not exist"):
        hub.download_file('me/missing', 'model.safetensors')
    with pytest.raises(ValueError, match="no revision 'v9'"):
        hub.download_file('me/known', 'model.safetensors', revision='v9')


def test_cache_dir_argument_receives_the_download(fake_hub, source_model, tmp_path, env):
    model, blob, _ = source_model
    name = _default_tag()
    fake_hub.add(f'timm/{name}', {'model.safetensors': blob})
    custom = tmp_path / 'elsewhere'
    loaded = featzoo.create_model(name, pretrained=True, cache_dir=custom)
    _same_outputs(loaded, model)
    assert any(f.endswith('model.safetensors') for f in _cache_files(str(custom)))
    assert not os.path.exists(env / 'hf_cache') or not _cache_files(str(env / 'hf_cache'))


def test_download_broken_off_leaves_no_corrupt_file(fake_hub, source_model, env):
    model, blob, _ = source_model
    name = _default_tag()
    repo = f'timm/{name}'
    fake_hub.add(repo, {'model.safetensors': blob})
    fake_hub.break_at['model.safetensors'] = len(blob) // 2
    fake_hub.refuse_resume = True
    with pytest.raises(RuntimeError) as err:
        featzoo.create_model(name, pretrained=True)
    assert repr(repo) in str(err.value) and 'model.safetensors' in str(err.value)
    cache = str(env / 'hf_cache')
    assert not [f for f in _cache_files(cache) if 'snapshots' in f], _cache_files(cache)
    from huggingface_hub import try_to_load_from_cache
    assert try_to_load_from_cache(repo, 'model.safetensors', cache_dir=cache) is None

    # The connection comes back: the next call completes (resuming the partial file) and finds the right bytes.
    fake_hub.break_at.clear()
    fake_hub.refuse_resume = False
    loaded = featzoo.create_model(name, pretrained=True)
    _same_outputs(loaded, model)
    path = try_to_load_from_cache(repo, 'model.safetensors', cache_dir=cache)
    assert hashlib.sha256(open(path, 'rb').read()).digest() == hashlib.sha256(blob).digest()


def test_download_resumes_after_one_break(fake_hub, source_model, env):
    model, blob, _ = source_model
    name = _default_tag()
    fake_hub.add(f'timm/{name}', {'model.safetensors': blob})
    fake_hub.break_at['model.safetensors'] = len(blob) // 3
    fake_hub.breaks_left['model.safetensors'] = 1
    _same_outputs(featzoo.create_model(name, pretrained=True), model)
    assert fake_hub.requested('model.safetensors') == 2  # the first, broken off, and one resume


# ---------------------------------------------------------------------------------------------------------------
# Offline and unreachable

def _populate_cache(cache: str, repo_id: str, files: Dict[str, bytes], revision: str = 'main') -> str:
    """Lay out files as huggingface_hub's cache does: blobs, a ref, and a snapshot of links."""
    commit = _commit(f'{repo_id}@{revision}')
    root = os.path.join(cache, 'models--' + repo_id.replace('/', '--'))
    os.makedirs(os.path.join(root, 'blobs'), exist_ok=True)
    os.makedirs(os.path.join(root, 'refs'), exist_ok=True)
    snapshot = os.path.join(root, 'snapshots', commit)
    os.makedirs(snapshot, exist_ok=True)
    with open(os.path.join(root, 'refs', revision), 'w') as f:
        f.write(commit)
    for filename, data in files.items():
        blob = os.path.join(root, 'blobs', hashlib.sha256(data).hexdigest())
        with open(blob, 'wb') as f:
            f.write(data)
        os.symlink(os.path.relpath(blob, snapshot), os.path.join(snapshot, filename))
    return commit


def test_offline_cache_populated_by_hand(env, source_model, monkeypatch):
    model, blob, _ = source_model
    name = _default_tag()
    _populate_cache(str(env / 'hf_cache'), f'timm/{name}', {'model.safetensors': blob})
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('HF_ENDPOINT', 'http://127.0.0.1:9')  # would fail if anything were requested
    _same_outputs(featzoo.create_model(name, pretrained=True), model)


def test_offline_miss_fails_fast_naming_repo_file_and_remedies(env, monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    name = _default_tag()
    start = time.monotonic()
    with pytest.raises(hub.PretrainedUnavailableError) as err:
        featzoo.create_model(name, pretrained=True)
    assert time.monotonic() - start < 5
    message = str(err.value)
    for needed in (f"'timm/{name}'", 'model.safetensors', 'HF_HUB_OFFLINE', 'checkpoint_path=', 'local-dir:',
                   'hf download', str(env / 'hf_cache')):
        assert needed in message, (needed, message)
    assert isinstance(err.value, FileNotFoundError)


def test_unreachable_hub_fails_within_seconds_or_uses_cache(env, source_model, monkeypatch):
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        closed_port = s.getsockname()[1]
    monkeypatch.setenv('HF_ENDPOINT', f'http://127.0.0.1:{closed_port}')
    name = _default_tag()
    start = time.monotonic()
    with pytest.raises(hub.PretrainedUnavailableError, match='cannot be reached') as err:
        featzoo.create_model(name, pretrained=True)
    assert time.monotonic() - start < 5
    assert f"'timm/{name}'" in str(err.value)

    model, blob, _ = source_model
    _populate_cache(str(env / 'hf_cache'), f'timm/{name}', {'model.safetensors': blob})
    start = time.monotonic()
    _same_outputs(featzoo.create_model(name, pretrained=True), model)
    assert time.monotonic() - start < 5


def test_corrupt_cached_file_is_reported(env, monkeypatch):
    name = _default_tag()
    _populate_cache(str(env / 'hf_cache'), f'timm/{name}', {'model.safetensors': b'not a safetensors file'})
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    with pytest.raises(RuntimeError, match='corrupt'):
        hub.resolve_pretrained_file({'hf_hub_id': f'timm/{name}'})


def test_weights_at_a_plain_url(fake_hub, source_model, tmp_path):
    model, blob, state = source_model
    fake_hub.add('files/plain', {'w.pth': _pickle_bytes(state)})
    url = f'{fake_hub.url}/files/plain/resolve/main/w.pth'
    path = hub.resolve_pretrained_file({'url': url}, cache_dir=tmp_path / 'urls')
    assert path == str(tmp_path / 'urls' / 'w.pth')
    loaded = featzoo.create_model(ARCH, checkpoint_path=path)
    _same_outputs(loaded, model)
    assert hub.resolve_pretrained_file({'url': url}, cache_dir=tmp_path / 'urls') == path
    assert fake_hub.requested('w.pth') == 1


# ---------------------------------------------------------------------------------------------------------------
# hf-hub: and local-dir:

def test_hf_hub_source_with_revision(fake_hub, tmp_path, monkeypatch):
    torch.manual_seed(1)
    v1 = featzoo.create_model(ARCH, num_classes=7).eval()
    torch.manual_seed(2)
    v2 = featzoo.create_model(ARCH, num_classes=7).eval()
    for revision, model in (('main', v2), ('v1', v1)):
        folder = hub.save_pretrained(model, tmp_path / revision)
        fake_hub.add('me/atto', {f: open(os.path.join(folder, f), 'rb').read() for f in os.listdir(folder)},
                     revision=revision)
    loaded_v1 = featzoo.create_model('hf-hub:me/atto@v1', pretrained=True)
    assert loaded_v1.num_classes == 7
    _same_outputs(loaded_v1, v1)
    _same_outputs(featzoo.create_model('hf-hub:me/atto', pretrained=True), v2)
    assert loaded_v1.pretrained_cfg['hf_hub_id'] == 'me/atto@v1'

    # Both revisions are now cached: offline, config and weights come from the cache without a request.
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    before = len(fake_hub.log)
    _same_outputs(featzoo.create_model('hf-hub:me/atto@v1', pretrained=True), v1)
    assert len(fake_hub.log) == before


def test_hf_hub_without_pretrained_reads_only_the_config(fake_hub, tmp_path):
    model = featzoo.create_model(ARCH, num_classes=5)
    folder = hub.save_pretrained(model, tmp_path / 'saved')
    fake_hub.add('me/cfg-only', {f: open(os.path.join(folder, f), 'rb').read() for f in os.listdir(folder)})
    built = featzoo.create_model('hf-hub:me/cfg-only')
    assert built.num_classes == 5
    assert fake_hub.requested('config.json') == 1
    assert fake_hub.requested('model.safetensors') == 0


def test_local_dir_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        featzoo.create_model(f'local-dir:{tmp_path / "nope"}', pretrained=True)
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='config.json'):
        featzoo.create_model(f'local-dir:{tmp_path / "empty"}', pretrained=True)
    (tmp_path / 'empty' / 'config.json').write_text('{"architecture": ')
    with pytest.raises(ValueError, match='not valid JSON'):
        featzoo.create_model(f'local-dir:{tmp_path / "empty"}', pretrained=True)
    (tmp_path / 'empty' / 'config.json').write_text(json.dumps({'architecture': ARCH, 'pretrained_cfg': {}}))
    with pytest.raises(FileNotFoundError, match='holds no weights file'):
        featzoo.create_model(f'local-dir:{tmp_path / "empty"}', pretrained=True)
    (tmp_path / 'empty' / 'config.json').write_text(json.dumps({'num_classes': 3, 'pretrained_cfg': {}}))
    with pytest.raises(ValueError, match="names no 'architecture'"):
        featzoo.create_model(f'local-dir:{tmp_path / "empty"}')


def test_legacy_single_dict_config_is_read(tmp_path):
    model = featzoo.create_model(ARCH, num_classes=4).eval()
    folder = hub.save_pretrained(model, tmp_path / 'legacy')
    config = json.loads((tmp_path / 'legacy' / 'config.json').read_text())
    legacy = dict(config['pretrained_cfg'], architecture=config['architecture'], num_features=config['num_features'],
                  labels=['a', 'b', 'c', 'd'])
    (tmp_path / 'legacy' / 'config.json').write_text(json.dumps(legacy))
    parsed = hub.load_model_config(f'local-dir:{folder}')
    assert parsed['architecture'] == ARCH and parsed['num_classes'] == 4
    assert parsed['label_names'] == ('a', 'b', 'c', 'd')
    _same_outputs(featzoo.create_model(f'local-dir:{folder}', pretrained=True), model)


@pytest.mark.parametrize('source', ['timm/x@a@b', 'a/b/c', '', 'org/'])
def test_malformed_hub_ids(source):
    with pytest.raises((ValueError, TypeError), match='malformed|non-empty'):
        hub.split_hub_id(source)


# ---------------------------------------------------------------------------------------------------------------
# save_pretrained / push_to_hub / timm interchange

@pytest.mark.parametrize('arch,kwargs,save_args', [
    ('resnet10t', dict(num_classes=10, in_chans=1), None),
    ('mobilenetv3_small_050', dict(num_classes=0, global_pool='max'), None),
    ('vit_tiny_patch16_224', dict(num_classes=3, img_size=64), dict(img_size=64)),
])
def test_timm_loads_featzoo_save_and_featzoo_loads_timm_save(arch, kwargs, save_args, tmp_path):
    timm = pytest.importorskip('timm')
    torch.manual_seed(0)
    model = featzoo.create_model(arch, **kwargs).eval()
    chans = kwargs.get('in_chans', 3)
    x = torch.randn(2, chans, 64, 64, generator=torch.Generator().manual_seed(1))  # ViT patches need 64 px
    folder = featzoo.save_pretrained(model, tmp_path / 'featzoo_save', model_args=save_args)
    assert sorted(os.listdir(folder)) == ['config.json', 'model.safetensors']
    theirs = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
    with torch.no_grad():
        assert_equal(theirs(x), model(x), f'timm loading featzoo save of {arch}')
        assert theirs.num_classes == model.num_classes

    timm.models.save_for_hf(theirs, tmp_path / 'timm_save', safe_serialization='both')
    ours = featzoo.create_model(f'local-dir:{tmp_path / "timm_save"}', pretrained=True).eval()
    with torch.no_grad():
        assert_equal(ours(x), theirs(x), f'featzoo loading timm save of {arch}')
    assert ours.num_classes == theirs.num_classes
    data = featzoo.data.resolve_data_config(model=ours)
    assert data['input_size'][0] == chans and len(data['mean']) == len(data['std']) == chans


def test_featzoo_loads_timm_pickle_only_save(tmp_path):
    timm = pytest.importorskip('timm')
    theirs = timm.create_model('resnet10t', num_classes=6).eval()
    timm.models.save_for_hf(theirs, tmp_path / 'pickle_only', safe_serialization=False)
    assert sorted(os.listdir(tmp_path / 'pickle_only')) == ['config.json', 'pytorch_model.bin']
    ours = featzoo.create_model(f'local-dir:{tmp_path / "pickle_only"}', pretrained=True)
    _same_outputs(ours, theirs)


def test_save_pretrained_config_layout(tmp_path):
    model = featzoo.create_model(ARCH, num_classes=2)
    folder = featzoo.save_pretrained(model, tmp_path / 'out', model_config={'label_names': ['cat', 'dog']},
                                     data_config={'input_size': (3, 160, 160), 'crop_pct': 1.0},
                                     safe_serialization='both')
    assert sorted(os.listdir(folder)) == ['config.json', 'model.safetensors', 'pytorch_model.bin']
    config = json.loads((tmp_path / 'out' / 'config.json').read_text())
    assert config['architecture'] == ARCH and config['num_classes'] == 2
    assert config['num_features'] == model.num_features and config['label_names'] == ['cat', 'dog']
    assert config['model_args'] == {'in_chans': 3, 'num_classes': 2, 'global_pool': 'avg'}
    cfg = config['pretrained_cfg']
    assert cfg['input_size'] == [3, 160, 160] and cfg['crop_pct'] == 1.0
    assert 'test_input_size' not in cfg and 'test_crop_pct' not in cfg
    assert not {'hf_hub_id', 'file', 'url', 'source'} & set(cfg)
    timm_fields = set(hub.TIMM_PRETRAINED_KEYS)
    assert set(cfg) <= timm_fields
    state = safetensors.torch.load_file(os.path.join(folder, 'model.safetensors'))
    pickled = torch.load(os.path.join(folder, 'pytorch_model.bin'), weights_only=True)
    for key, value in model.state_dict().items():
        assert torch.equal(state[key], value) and torch.equal(pickled[key], value), key


def test_save_pretrained_rejects_feature_wrappers_and_bad_arguments(tmp_path):
    backbone = featzoo.create_model(ARCH, features_only=True)
    with pytest.raises(ValueError, match='features_only'):
        featzoo.save_pretrained(backbone, tmp_path / 'x')
    with pytest.raises(ValueError, match='safe_serialization'):
        featzoo.save_pretrained(featzoo.create_model(ARCH), tmp_path / 'y', safe_serialization='yes')
    with pytest.raises(TypeError, match='nn.Module'):
        featzoo.save_pretrained({'a': 1}, tmp_path / 'z')


class _Captured:
    def __init__(self) -> None:
        self.calls: List[Tuple[str, dict]] = []
        self.files: Dict[str, bytes] = {}


@pytest.mark.parametrize('has_readme', [False, True])
def test_push_to_hub_hands_exactly_the_saved_folder_to_upload(has_readme, env, monkeypatch):
    from huggingface_hub import HfApi
    captured = _Captured()

    def create_repo(self, repo_id, **kwargs):
        captured.calls.append(('create_repo', dict(repo_id=repo_id, **kwargs)))
        return type('RepoUrl', (), {'repo_id': repo_id})()

    def file_exists(self, repo_id, filename, **kwargs):
        captured.calls.append(('file_exists', dict(repo_id=repo_id, filename=filename, **kwargs)))
        return has_readme

    def upload_folder(self, **kwargs):
        captured.calls.append(('upload_folder', kwargs))
        folder = kwargs['folder_path']
        captured.files = {f: open(os.path.join(folder, f), 'rb').read() for f in sorted(os.listdir(folder))}
        return 'commit-info'

    monkeypatch.setattr(HfApi, 'create_repo', create_repo)
    monkeypatch.setattr(HfApi, 'file_exists', file_exists)
    monkeypatch.setattr(HfApi, 'upload_folder', upload_folder)
    monkeypatch.setenv('HF_ENDPOINT', 'http://127.0.0.1:9')

    model = featzoo.create_model(ARCH, num_classes=3).eval()
    result = featzoo.push_to_hub(model, 'me/my-backbone', commit_message='first', revision='dev', private=True,
                                 create_pr=True, model_card={'license': 'mit', 'description': 'test model'})
    assert result == 'commit-info'
    names = [c[0] for c in captured.calls]
    assert names == ['create_repo', 'file_exists', 'upload_folder']
    assert captured.calls[0][1] == {'repo_id': 'me/my-backbone', 'private': True, 'exist_ok': True}
    assert captured.calls[1][1] == {'repo_id': 'me/my-backbone', 'filename': 'README.md', 'revision': 'dev'}
    upload = dict(captured.calls[2][1])
    assert os.path.basename(upload.pop('folder_path'))
    assert upload == {'repo_id': 'me/my-backbone', 'revision': 'dev', 'create_pr': True, 'commit_message': 'first'}

    expected = ['config.json', 'model.safetensors', 'pytorch_model.bin'] + ([] if has_readme else ['README.md'])
    assert sorted(captured.files) == sorted(expected)
    assert json.loads(captured.files['config.json']) == json.loads(json.dumps(hub.model_config_dict(model)))
    tensors = safetensors.torch.load(captured.files['model.safetensors'])
    assert tensors.keys() == model.state_dict().keys()
    assert all(torch.equal(tensors[k], v) for k, v in model.state_dict().items())
    pickled = torch.load(io.BytesIO(captured.files['pytorch_model.bin']), weights_only=True)
    assert all(torch.equal(pickled[k], v) for k, v in model.state_dict().items())
    if not has_readme:
        readme = captured.files['README.md'].decode()
        assert readme.startswith('---\n') and 'license: mit' in readme and '# Model card for my-backbone' in readme
        assert 'test model' in readme


def test_push_to_hub_refuses_offline_and_bad_repo_ids(monkeypatch):
    model = featzoo.create_model(ARCH)
    with pytest.raises(ValueError, match='revision'):
        featzoo.push_to_hub(model, 'me/repo@dev')
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    with pytest.raises(RuntimeError, match='HF_HUB_OFFLINE'):
        featzoo.push_to_hub(model, 'me/repo')


def test_adaptation_when_loading_published_weights(env, source_model, monkeypatch):
    model, blob, state = source_model
    name = _default_tag()
    _populate_cache(str(env / 'hf_cache'), f'timm/{name}', {'model.safetensors': blob})
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    fewer = featzoo.create_model(name, pretrained=True, num_classes=5).eval()
    with torch.no_grad():
        assert_equal(fewer.forward_features(X), model.forward_features(X), 'backbone with a new head')
    assert fewer.get_classifier().weight.shape[0] == 5
    gray = featzoo.create_model(name, pretrained=True, in_chans=1)
    first = fewer.pretrained_cfg['first_conv']
    assert_equal(gray.state_dict()[f'{first}.weight'], state[f'{first}.weight'].sum(dim=1, keepdim=True), 'in_chans=1')
    backbone = featzoo.create_model(name, pretrained=True, features_only=True, out_indices=(1, 2))
    kept = backbone.state_dict()
    assert kept and set(kept) < set(state)
    assert all(torch.equal(value, state[key]) for key, value in kept.items())


def _tags_per_configuration_and_class_count() -> List[str]:
    """One published tag for each (configuration, class count) whose float32 weights are under 1.5 GB: the smallest
    architecture's first such tag, so that every head size a configuration is published with is loaded once."""
    chosen: Dict[Tuple, str] = {}
    for arch in by_size(featzoo.list_models()):
        if num_params(arch) * 4 >= PARITY_MAX_BYTES:
            continue
        for tag in catalog.pretrained_tags(arch):
            cfg = catalog.pretrained_cfg(f'{arch}.{tag}')
            chosen.setdefault((configuration_of(arch), cfg.get('num_classes')), f'{arch}.{tag}')
    return sorted(chosen.values())


@pytest.mark.slow
@pytest.mark.parametrize('name', _tags_per_configuration_and_class_count())
def test_published_tags_load_timm_format_weights_from_the_hub(name, fake_hub):
    """Serve timm's own (randomly initialized) state_dict under the tag's Hub repo, as timm publishes it."""
    timm = pytest.importorskip('timm')
    theirs = timm.create_model(name).eval()
    state = {k: v.contiguous() for k, v in theirs.state_dict().items()}
    cfg = catalog.pretrained_cfg(name)
    fake_hub.add(cfg['hf_hub_id'], {'model.safetensors': safetensors.torch.save(state)})
    ours = featzoo.create_model(name, pretrained=True).eval()
    side = input_side_for(name.split('.')[0])
    size = cfg['input_size'] if cfg.get('fixed_input_size') else (cfg['input_size'][0], side, side)
    x = torch.randn(1, *size, generator=torch.Generator().manual_seed(0))
    loaded = ours.state_dict()
    for key, value in theirs.state_dict().items():
        assert torch.equal(loaded[key], value), f'{name}: {key} was not loaded as published'
    assert_same_function(ours, theirs, x, name)


@pytest.fixture
def flushed(monkeypatch):
    """The paths that os.fsync is called on, in order (resolved from the file descriptors)."""
    seen = []
    real = os.fsync

    def recording(fd):
        seen.append(os.path.realpath(f'/proc/self/fd/{fd}'))
        return real(fd)

    if not os.path.isdir('/proc/self/fd'):
        pytest.skip('needs /proc/self/fd to name what is flushed')
    monkeypatch.setattr(os, 'fsync', recording)
    return seen


def _flushed_then_renamed(seen, final):
    """The temporary of ``final`` was flushed, then the folder that now names ``final``."""
    folder, name = os.path.split(os.path.realpath(final))
    temps = [i for i, p in enumerate(seen) if os.path.basename(p).startswith(f'.tmp-{name}.')]
    return bool(temps) and folder in seen[temps[-1] + 1:]


def test_saves_and_downloads_are_flushed_with_their_folder(fake_hub, source_model, tmp_path, env, flushed):
    """Durability: every file featzoo writes reaches the disk, and so does the folder entry of its rename; outputs
    follow the umask."""
    model, blob, state = source_model
    old = os.umask(0o027)
    try:
        folder = featzoo.save_pretrained(model, tmp_path / 'saved', safe_serialization='both')
        fake_hub.add('files/plain', {'w.pth': _pickle_bytes(state)})
        url_path = hub.resolve_pretrained_file({'url': f'{fake_hub.url}/files/plain/resolve/main/w.pth'},
                                               cache_dir=tmp_path / 'urls')
    finally:
        os.umask(old)
    for name in ('model.safetensors', 'pytorch_model.bin', 'config.json'):
        path = os.path.join(folder, name)
        assert _flushed_then_renamed(flushed, path), (name, flushed)
        assert oct(os.stat(path).st_mode & 0o777) == oct(0o640), name
    assert _flushed_then_renamed(flushed, url_path), flushed
    assert oct(os.stat(url_path).st_mode & 0o777) == oct(0o640)
    name = _default_tag()
    fake_hub.add(f'timm/{name}', {'model.safetensors': blob})
    flushed.clear()
    cached = hub.download_file(f'timm/{name}', 'model.safetensors')
    blob_path = os.path.realpath(cached)
    assert blob_path in flushed and os.path.dirname(blob_path) in flushed[flushed.index(blob_path):], flushed
