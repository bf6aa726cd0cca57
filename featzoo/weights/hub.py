"""Weights from the Hugging Face Hub or a local directory, and saving models in the layout timm reads.

A model directory (on the Hub or on disk) holds ``config.json`` in timm's format and ``model.safetensors`` (or
``pytorch_model.bin``). Downloads go through ``huggingface_hub`` into the normal HF cache. The environment
(``HF_HUB_OFFLINE``, ``HF_ENDPOINT``, ``HF_HUB_CACHE``, ``HF_HOME``) is read at every call rather than at import, and
an unreachable Hub is detected with one request without retries, so that a missing file fails within seconds with a
message that names the repo, the file and the ways to supply it.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..errors import NotAFolderError
from ..fileio import atomic_write, fsync_dir, fsync_file, read_json_object

_logger = logging.getLogger(__name__)

__all__ = [
    'SAFE_WEIGHTS_NAME', 'PICKLE_WEIGHTS_NAME', 'CONFIG_NAME', 'PretrainedUnavailableError', 'is_offline',
    'hub_endpoint', 'hub_cache_dir', 'split_hub_id', 'download_file', 'resolve_pretrained_file',
    'load_model_config', 'parse_model_config', 'find_local_weights', 'model_config_dict', 'save_pretrained',
    'push_to_hub', 'generate_readme',
]

SAFE_WEIGHTS_NAME = 'model.safetensors'
PICKLE_WEIGHTS_NAME = 'pytorch_model.bin'
CONFIG_NAME = 'config.json'
HUB_PREFIX = 'hf-hub:'
LOCAL_PREFIX = 'local-dir:'

# The weight file names timm looks for in a model directory, most preferred first; then any file by extension.
LOCAL_WEIGHT_FILES = (
    'model.safetensors', 'pytorch_model.bin', 'pytorch_model.pth', 'model.pth', 'open_clip_model.safetensors',
    'open_clip_pytorch_model.safetensors', 'open_clip_pytorch_model.bin', 'open_clip_pytorch_model.pth',
)
LOCAL_WEIGHT_EXTENSIONS = ('.safetensors', '.pth', '.pth.tar', '.bin')

# The fields of timm's PretrainedCfg: timm builds that dataclass from config.json and rejects any other key.
TIMM_PRETRAINED_KEYS = (
    'url', 'file', 'state_dict', 'hf_hub_id', 'hf_hub_filename', 'source', 'architecture', 'tag', 'custom_load',
    'input_size', 'test_input_size', 'min_input_size', 'fixed_input_size', 'interpolation', 'crop_pct',
    'test_crop_pct', 'crop_mode', 'mean', 'std', 'num_classes', 'label_offset', 'label_names', 'label_descriptions',
    'pool_size', 'test_pool_size', 'first_conv', 'classifier', 'license', 'description', 'origin_url', 'paper_name',
    'paper_ids', 'notes',
)
_SOURCE_KEYS = ('url', 'file', 'state_dict', 'hf_hub_id', 'hf_hub_filename', 'source')
_KEEP_WHEN_NULL = ('pool_size', 'first_conv', 'classifier')
# create_model arguments that are not constructor arguments: never written to, nor taken from, model_args.
_NOT_MODEL_ARGS = ('pretrained', 'pretrained_cfg', 'pretrained_cfg_overlay', 'pretrained_model_args', 'features_only',
                   'out_indices', 'feature_cls', 'output_fmt', 'out_map', 'checkpoint_path', 'cache_dir', 'device',
                   'dtype')
# Training-time rates describe how a model was trained, not how to rebuild it: timm leaves them out of saves too.
_TRAINING_ARGS = ('drop_rate', 'drop_path_rate', 'drop_block_rate')


class PretrainedUnavailableError(FileNotFoundError):
    """Weights or a config that cannot be found in the cache and cannot be downloaded (offline or Hub unreachable)."""


def _truthy(value: Optional[str]) -> bool:
    return (value or '').strip().upper() in ('1', 'ON', 'YES', 'TRUE')


def is_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set now, or was set when huggingface_hub loaded.

    >>> isinstance(is_offline(), bool)
    True
    """
    from huggingface_hub import constants
    return (_truthy(os.environ.get('HF_HUB_OFFLINE')) or _truthy(os.environ.get('TRANSFORMERS_OFFLINE'))
            or bool(getattr(constants, 'HF_HUB_OFFLINE', False)))


def hub_endpoint() -> str:
    """The Hub URL: ``HF_ENDPOINT`` as set now, else huggingface_hub's default.

    >>> hub_endpoint().startswith('http')
    True
    """
    from huggingface_hub import constants
    return (os.environ.get('HF_ENDPOINT') or constants.ENDPOINT).rstrip('/')


def hub_cache_dir(cache_dir: Optional[Union[str, os.PathLike]] = None) -> str:
    """The HF cache to use: ``cache_dir`` if given, else ``HF_HUB_CACHE`` / ``HF_HOME`` as set now.

    >>> hub_cache_dir('/tmp/hf')
    '/tmp/hf'
    """
    if cache_dir is not None:
        if not isinstance(cache_dir, (str, os.PathLike)):
            raise TypeError(f'cache_dir must be a folder path (str or os.PathLike), got {type(cache_dir).__name__}: '
                            f'{cache_dir!r}')
        return os.fspath(cache_dir)
    for var in ('HF_HUB_CACHE', 'HUGGINGFACE_HUB_CACHE'):
        if os.environ.get(var):
            return os.path.expanduser(os.path.expandvars(os.environ[var]))
    if os.environ.get('HF_HOME'):
        return os.path.join(os.path.expanduser(os.path.expandvars(os.environ['HF_HOME'])), 'hub')
    from huggingface_hub import constants
    return constants.HF_HUB_CACHE


def split_hub_id(hub_id: str) -> Tuple[str, Optional[str]]:
    """Split ``'org/repo@revision'`` into the repo id and the revision (None when absent).

    >>> split_hub_id('timm/resnet50.a1_in1k@main')
    ('timm/resnet50.a1_in1k', 'main')
    """
    if not isinstance(hub_id, str) or not hub_id:
        raise TypeError(f"a Hub id must be a non-empty str like 'org/repo' or 'org/repo@revision', got {hub_id!r}")
    repo_id, sep, revision = hub_id.partition('@')
    if '@' in revision or (sep and not revision):
        raise ValueError(f"Hub id {hub_id!r} is malformed: use 'org/repo' or 'org/repo@revision' (one '@')")
    parts = repo_id.split('/')
    if len(parts) > 2 or not all(parts):
        raise ValueError(f"Hub repo id {repo_id!r} is malformed: use 'org/repo' or 'repo'")
    return repo_id, (revision or None)


def _supply_hint(repo_id: str, filename: str) -> str:
    if filename == CONFIG_NAME:
        # an hf-hub: name needs the repo's config before it knows the architecture, so a bare weights file is no help
        return (f"Supply it in one of these ways: copy the repo's files ({CONFIG_NAME} and the weights) into a folder "
                f"and use create_model('local-dir:/path/to/that/folder', pretrained=True); or put the repo in the "
                f"Hugging Face cache (run `hf download {repo_id}` where the Hub is reachable and copy the cache here, "
                f"or pass cache_dir= / set HF_HUB_CACHE to a cache that holds it); or, knowing the architecture, use "
                f"create_model('<architecture>', checkpoint_path='/path/to/model.safetensors').")
    return (f"Supply them in one of these ways: pass the file instead of pretrained=True "
            f"(create_model(name, checkpoint_path='/path/{filename}')); point at a directory holding config.json "
            f"and the weights (create_model('local-dir:/path/to/dir', pretrained=True)); or put the file in the "
            f"Hugging Face cache (run `hf download {repo_id} {filename}` where the Hub is reachable and copy the "
            f"cache here, or pass cache_dir= / set HF_HUB_CACHE to a cache that holds it).")


def _cached(repo_id: str, filename: str, revision: Optional[str], cache: str) -> Optional[str]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import LocalEntryNotFoundError
    try:
        return hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache, local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError):
        return None
    except OSError as exc:  # huggingface_hub raises other OSErrors for malformed cache folders
        _logger.debug('cache lookup of %s/%s failed: %s', repo_id, filename, exc)
        return None


def _probe(repo_id: str, filename: str, revision: Optional[str], endpoint: str, timeout: float) -> str:
    """One HEAD request without retries: 'ok', 'missing' (no such file), or raises for repo-level problems.

    Network failures are returned as 'unreachable: <reason>' so that the caller can fall back to the cache quickly.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import (
        EntryNotFoundError, GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError,
    )
    url = hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint)
    try:
        get_hf_file_metadata(url, timeout=timeout)
        return 'ok'
    except EntryNotFoundError:
        return 'missing'
    except GatedRepoError as exc:
        raise PermissionError(f'Hub repo {repo_id!r} is gated: accept its terms on the Hub and log in '
                              f'(`hf auth login` or HF_TOKEN) to download {filename!r}') from exc
    except RevisionNotFoundError as exc:
        raise ValueError(f'Hub repo {repo_id!r} has no revision {revision!r}: use a branch, tag or commit that '
                         f'exists (or none for main)') from exc
    except RepositoryNotFoundError as exc:
        raise FileNotFoundError(f'Hub repo {repo_id!r} does not exist at {endpoint} or is private '
                                f'(log in with `hf auth login` or set HF_TOKEN for private repos)') from exc
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, 'response', None), 'status_code', None)
        if status is not None and status < 500 and status not in (408, 429):
            raise RuntimeError(f'the Hub refused {filename!r} of {repo_id!r} (HTTP {status}): {exc}') from exc
        return f'unreachable: HTTP {status}'
    except Exception as exc:  # connection refused, DNS failure, timeout: httpx/requests/OS errors alike
        return f'unreachable: {exc.__class__.__name__}: {exc}'


def _is_valid_download(path: str) -> bool:
    if not path.endswith('.safetensors'):
        return os.path.getsize(path) > 0
    from .loading import safetensors_keys
    try:
        safetensors_keys(path)
        return True
    except RuntimeError:
        return False


def _forget_cached(path: str) -> None:
    """Remove a bad cache entry: the snapshot link and the blob it points to."""
    real = os.path.realpath(path)
    for p in (path, real):
        try:
            os.remove(p)
        except FileNotFoundError:
            pass


def download_file(repo_id: str, filenames: Union[str, Sequence[str]], revision: Optional[str] = None,
                  cache_dir: Optional[Union[str, os.PathLike]] = None, what: str = 'weights',
                  etag_timeout: float = 10.0) -> str:
    """Path of the first of ``filenames`` that the Hub repo has, downloaded into (or found in) the HF cache.

    Offline (``HF_HUB_OFFLINE``) or with the Hub unreachable, only the cache is searched and a miss raises
    :class:`PretrainedUnavailableError` at once. A download that breaks off never leaves a file in the cache
    (huggingface_hub writes to ``.incomplete`` and renames on success; the next call resumes).

    >>> download_file('timm/resnet18.a1_in1k', ['model.safetensors', 'pytorch_model.bin'])  # doctest: +SKIP
    '/root/.cache/huggingface/hub/models--timm--resnet18.a1_in1k/snapshots/.../model.safetensors'
    """
    from huggingface_hub import hf_hub_download
    names = [filenames] if isinstance(filenames, str) else list(filenames)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f'filenames must be non-empty file names, got {filenames!r}')
    cache = hub_cache_dir(cache_dir)
    endpoint = hub_endpoint()
    wanted = ' or '.join(repr(n) for n in names)
    where = f'Hub repo {repo_id!r}' + (f' (revision {revision!r})' if revision else '')

    reason = 'HF_HUB_OFFLINE is set' if is_offline() else ''
    missing: List[str] = []
    if not reason:
        for name in names:
            state = _probe(repo_id, name, revision, endpoint, etag_timeout)
            if state == 'missing':
                missing.append(name)
                continue
            if state.startswith('unreachable'):
                reason = f'the Hub at {endpoint} cannot be reached ({state[len("unreachable: "):]})'
                break
            try:
                path = hf_hub_download(repo_id, name, revision=revision, cache_dir=cache, endpoint=endpoint,
                                       etag_timeout=etag_timeout)
            except Exception as exc:
                raise RuntimeError(f'downloading {name!r} from {where} failed: {exc}. The partial download was '
                                   f'kept out of the cache ({cache}); run again to resume it.') from exc
            if not _is_valid_download(path):
                _forget_cached(path)
                path = hf_hub_download(repo_id, name, revision=revision, cache_dir=cache, endpoint=endpoint,
                                       etag_timeout=etag_timeout, force_download=True)
                if not _is_valid_download(path):
                    _forget_cached(path)
                    raise RuntimeError(f'{name!r} downloaded from {where} is corrupt twice in a row; it was removed '
                                       f'from the cache ({cache})')
            # huggingface_hub renames a finished download into the cache without flushing it; a power cut could
            # otherwise leave a cache entry whose blob is empty
            fsync_file(path)
            fsync_dir(os.path.dirname(os.path.abspath(path)))
            return path
        if not reason:
            raise FileNotFoundError(f'cannot get the {what}: {where} at {endpoint} has no {wanted}')

    for name in names:
        if name in missing:
            continue
        path = _cached(repo_id, name, revision, cache)
        if path is not None:
            if not _is_valid_download(path):
                raise RuntimeError(f'the cached {name!r} of {where} at {path!r} is corrupt; delete it (or the '
                                   f'whole {os.path.dirname(os.path.dirname(os.path.dirname(path)))!r} folder) '
                                   f'and download it again')
            _logger.info('%s: using cached %s (%s)', repo_id, name, reason)
            return path
    raise PretrainedUnavailableError(
        f'cannot get the {what}: {wanted} of {where} is not in the Hugging Face cache ({cache}) and cannot be '
        f'downloaded because {reason}. ' + _supply_hint(repo_id, names[0]))


def _weight_candidates(cfg: Mapping[str, Any]) -> List[str]:
    filename = cfg.get('hf_hub_filename')
    if not filename:
        return [SAFE_WEIGHTS_NAME, PICKLE_WEIGHTS_NAME]
    if filename == PICKLE_WEIGHTS_NAME:
        return [SAFE_WEIGHTS_NAME, PICKLE_WEIGHTS_NAME]
    if filename.endswith('.bin'):
        return [filename[:-len('.bin')] + '.safetensors', filename]
    return [filename]


def _download_url(url: str, cache_dir: Optional[Union[str, os.PathLike]]) -> str:
    """Weights published at a plain URL: cached under the torch hub checkpoints folder (or ``cache_dir``)."""
    from urllib.parse import urlparse
    filename = os.path.basename(urlparse(url).path)
    folder = os.fspath(cache_dir) if cache_dir else os.path.join(torch.hub.get_dir(), 'checkpoints')
    path = os.path.join(folder, filename)
    if os.path.exists(path):
        return path
    if is_offline():
        raise PretrainedUnavailableError(
            f'weights {filename!r} (from {url}) are not cached at {path!r} and HF_HUB_OFFLINE is set. Supply them '
            f"with checkpoint_path='/path/{filename}', or copy the file to {path!r}.")
    os.makedirs(folder, exist_ok=True)
    try:
        # into a temporary beside the target, flushed and renamed: a crash never leaves half a file in the cache
        atomic_write(path, lambda tmp: torch.hub.download_url_to_file(url, tmp, progress=True))
    except Exception as exc:
        raise PretrainedUnavailableError(f'cannot download weights from {url}: {exc}. Supply them with '
                                         f"checkpoint_path='/path/{filename}' or copy the file to {path!r}.") from exc
    return path


def resolve_pretrained_file(pretrained_cfg: Mapping[str, Any],
                            cache_dir: Optional[Union[str, os.PathLike]] = None) -> str:
    """Local path of the weights a pretrained config points at: its ``file``, else its Hub repo, else its ``url``.

    From the Hub, ``model.safetensors`` is preferred and ``pytorch_model.bin`` the fallback.

    >>> resolve_pretrained_file({'hf_hub_id': 'timm/resnet18.a1_in1k'})  # doctest: +SKIP
    '/root/.cache/huggingface/hub/models--timm--resnet18.a1_in1k/snapshots/.../model.safetensors'
    """
    if not isinstance(pretrained_cfg, Mapping):
        raise TypeError(f'pretrained_cfg must be a dict, got {type(pretrained_cfg).__name__}')
    name = pretrained_cfg.get('architecture') or 'this model'
    if pretrained_cfg.get('tag'):
        name = f"{name}.{pretrained_cfg['tag']}"
    file = pretrained_cfg.get('file')
    if file:
        file = os.fspath(file)
        if os.path.isdir(file):
            found = find_local_weights(file)
            if found is None:
                raise FileNotFoundError(f'directory {file!r} holds no weights file; expected one of '
                                        f'{list(LOCAL_WEIGHT_FILES[:2])} or any *.safetensors / *.pth / *.bin')
            return found
        if not os.path.isfile(file):
            raise FileNotFoundError(f'pretrained file {file!r} for {name} does not exist')
        return file
    hub_id = pretrained_cfg.get('hf_hub_id')
    if hub_id:
        repo_id, revision = split_hub_id(hub_id)
        try:
            return download_file(repo_id, _weight_candidates(pretrained_cfg), revision=revision, cache_dir=cache_dir,
                                 what=f'weights of {name}')
        except PretrainedUnavailableError:
            raise
        except FileNotFoundError:
            # The repo exists but lacks the files: a plain URL, when the config has one, is the other source.
            if pretrained_cfg.get('url'):
                return _download_url(pretrained_cfg['url'], cache_dir)
            raise
    if pretrained_cfg.get('url'):
        return _download_url(pretrained_cfg['url'], cache_dir)
    raise ValueError(f'{name} has no pretrained weights to load (its config names no file, Hub repo or url); '
                     f"use pretrained=False, or pass checkpoint_path='weights.safetensors'")


def find_local_weights(directory: Union[str, os.PathLike]) -> Optional[str]:
    """The weights file in a model directory, by timm's preference: ``model.safetensors``, ``pytorch_model.bin``,
    other known names, then the first file by extension (.safetensors, .pth, .pth.tar, .bin). None if there is none.

    >>> find_local_weights(tempfile.mkdtemp()) is None
    True
    """
    directory = Path(directory)
    for name in LOCAL_WEIGHT_FILES:
        if (directory / name).is_file():
            return str(directory / name)
    for ext in LOCAL_WEIGHT_EXTENSIONS:
        files = sorted(p for p in directory.glob(f'*{ext}') if p.is_file())
        if files:
            if len(files) > 1:
                _logger.warning('several %s files in %s: using %s', ext, directory, files[0].name)
            return str(files[0])
    return None


def _read_json(path: str, origin: str) -> Dict[str, Any]:
    return read_json_object(path, f'{CONFIG_NAME} of {origin} ({path})')


def _tuples(value: Any) -> Any:
    """JSON lists back to tuples (timm's configs hold tuples), recursively."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def parse_model_config(config: Mapping[str, Any], origin: str = 'the model config') -> Dict[str, Any]:
    """Normalize a timm-format ``config.json`` (current or legacy single-dict layout).

    Returns ``architecture`` (without tag), ``num_classes``, ``num_features``, ``global_pool``, ``label_names``,
    ``label_descriptions``, ``model_args`` (constructor arguments to rebuild the saved model) and ``pretrained_cfg``.

    >>> parse_model_config({'architecture': 'resnet18', 'num_classes': 10, 'pretrained_cfg': {}})['architecture']
    'resnet18'
    """
    config = dict(config)
    if 'pretrained_cfg' not in config:
        # The legacy layout keeps everything in one dict.
        legacy = dict(config)
        config = {'architecture': legacy.pop('architecture', None), 'num_features': legacy.pop('num_features', None),
                  'pretrained_cfg': legacy}
        if 'labels' in legacy:
            legacy['label_names'] = legacy.pop('labels')
    if not isinstance(config.get('pretrained_cfg'), dict):
        raise ValueError(f"{origin}: 'pretrained_cfg' must be a JSON object, got {config.get('pretrained_cfg')!r}")
    cfg = {k: _tuples(v) for k, v in config['pretrained_cfg'].items()}
    architecture = config.get('architecture') or cfg.get('architecture')
    if not isinstance(architecture, str) or not architecture:
        raise ValueError(f"{origin} names no 'architecture' (the model name, such as 'resnet50'); "
                         f'keys present: {sorted(config)}')
    arch, _, tag = architecture.partition('.')
    cfg['architecture'] = arch
    if tag and not cfg.get('tag'):
        cfg['tag'] = tag
    for key in ('num_classes', 'label_names', 'label_descriptions'):
        if config.get(key) is not None:
            cfg[key] = _tuples(config[key]) if key != 'label_descriptions' else config[key]
    model_args = config.get('model_args') or {}
    if not isinstance(model_args, dict):
        raise ValueError(f"{origin}: 'model_args' must be a JSON object, got {model_args!r}")
    model_args = {k: _tuples(v) for k, v in model_args.items() if k not in _NOT_MODEL_ARGS}
    # A saved model's channels and fixed image size describe the weights, so the data config follows them.
    if model_args.get('in_chans') is not None:
        chans = int(model_args['in_chans'])
        cfg['input_size'] = (chans, *tuple(cfg.get('input_size', (3, 224, 224)))[1:])
        for key in ('test_input_size', 'min_input_size'):
            if cfg.get(key):
                cfg[key] = (chans, *tuple(cfg[key])[1:])
    if model_args.get('img_size') is not None and cfg.get('fixed_input_size'):
        size = model_args['img_size']
        size = (size, size) if isinstance(size, int) else tuple(size)
        cfg['input_size'] = (tuple(cfg.get('input_size', (3, 224, 224)))[0], *size)
    num_classes = config.get('num_classes', cfg.get('num_classes'))
    return dict(
        architecture=arch, num_classes=num_classes, num_features=config.get('num_features'),
        global_pool=config.get('global_pool'), label_names=cfg.get('label_names'),
        label_descriptions=cfg.get('label_descriptions'), model_args=model_args, pretrained_cfg=cfg)


def load_model_config(source: str, cache_dir: Optional[Union[str, os.PathLike]] = None,
                      download_weights: bool = True) -> Dict[str, Any]:
    """Read ``config.json`` (timm's format) of ``'hf-hub:org/repo[@revision]'`` or ``'local-dir:/path'``.

    Returns :func:`parse_model_config`'s dict plus ``file`` (the weights path: downloaded for the Hub when
    ``download_weights``, found on disk for a local dir; else None) and ``config_file``. ``pretrained_cfg`` carries
    the source (``hf_hub_id`` or ``file``) so that the weights can be fetched later.

    >>> load_model_config('hf-hub:timm/resnet18.a1_in1k')['architecture']  # doctest: +SKIP
    'resnet18'
    """
    if not isinstance(source, str):
        raise TypeError(f"source must be a str like 'hf-hub:org/repo' or 'local-dir:/path', got {source!r}")
    if source.startswith(HUB_PREFIX):
        hub_id = source[len(HUB_PREFIX):]
        repo_id, revision = split_hub_id(hub_id)
        config_file = download_file(repo_id, CONFIG_NAME, revision=revision, cache_dir=cache_dir,
                                    what=f'config of {source}')
        parsed = parse_model_config(_read_json(config_file, source), origin=source)
        parsed['pretrained_cfg'].update(hf_hub_id=hub_id, source='hf-hub')
        parsed['pretrained_cfg'].pop('file', None)
        parsed['pretrained_cfg'].pop('url', None)
        weights = None
        if download_weights:
            weights = download_file(repo_id, _weight_candidates(parsed['pretrained_cfg']), revision=revision,
                                    cache_dir=cache_dir, what=f'weights of {source}')
    elif source.startswith(LOCAL_PREFIX):
        directory = os.path.expanduser(source[len(LOCAL_PREFIX):])
        if not directory:
            raise ValueError(f"{source!r} names no directory: use 'local-dir:/path/to/model_dir'")
        if os.path.isfile(directory):
            raise NotAFolderError(f'{source!r}: {directory!r} is a file, but local-dir: wants the folder that holds '
                                  f'{CONFIG_NAME} and the weights; to load a single weights file use '
                                  f"create_model('<architecture>', checkpoint_path={directory!r})")
        if not os.path.isdir(directory):
            raise FileNotFoundError(f'{source!r}: directory {directory!r} does not exist')
        config_file = os.path.join(directory, CONFIG_NAME)
        if not os.path.isfile(config_file):
            raise FileNotFoundError(f'{source!r}: {config_file!r} does not exist; a model directory holds '
                                    f'{CONFIG_NAME} (as written by featzoo.save_pretrained or timm save_for_hf) '
                                    f'and {SAFE_WEIGHTS_NAME} or {PICKLE_WEIGHTS_NAME}')
        parsed = parse_model_config(_read_json(config_file, source), origin=source)
        weights = find_local_weights(directory)
        if weights is None and download_weights:
            raise FileNotFoundError(f'{source!r} holds no weights file; expected {SAFE_WEIGHTS_NAME} or '
                                    f'{PICKLE_WEIGHTS_NAME} (or any *.safetensors / *.pth / *.bin) in {directory!r}; '
                                    f'found {sorted(os.listdir(directory))}')
        for key in _SOURCE_KEYS:
            parsed['pretrained_cfg'].pop(key, None)
        parsed['pretrained_cfg']['source'] = 'local-dir'
        if weights is not None:
            parsed['pretrained_cfg']['file'] = weights
    else:
        raise ValueError(f"model source {source!r} is not understood: use 'hf-hub:org/repo[@revision]' or "
                         f"'local-dir:/path/to/dir'")
    parsed['file'] = weights
    parsed['config_file'] = config_file
    return parsed


def _whole_model(model: nn.Module) -> nn.Module:
    # Feature wrappers have dropped the head and later modules; a pruned state_dict is no checkpoint timm can load.
    if hasattr(model, 'model_ref') and not hasattr(model, 'forward_head'):
        raise ValueError(
            f'save_pretrained needs a whole model, but this is a features_only wrapper ({type(model).__name__}) '
            f'whose head and later modules are gone, so timm could not load it. Save the model before wrapping '
            f'it, or build it with features_only=False and load your state_dict into it.')
    return model


def _global_pool(model: nn.Module) -> Optional[str]:
    head = getattr(model, 'head', None)
    for candidate in (getattr(head, 'global_pool', None), getattr(head, 'pool_type', None),
                      getattr(model, 'global_pool', None)):
        candidate = getattr(candidate, 'pool_type', candidate)
        if isinstance(candidate, str):
            return candidate
    return None


def _first_conv_channels(model: nn.Module, first_conv: Any) -> Optional[int]:
    names = [first_conv] if isinstance(first_conv, str) else list(first_conv or ())
    for name in names:
        try:
            weight = model.get_submodule(name).weight
        except AttributeError:
            continue
        if weight is not None and weight.ndim >= 3:
            return int(weight.shape[1])
    return None


def _jsonable(value: Any, what: str) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f'{what} = {value!r} cannot be written to {CONFIG_NAME}; pass a JSON-serializable '
                         f'replacement in model_args') from exc
    return value


def model_config_dict(model: nn.Module, model_config: Optional[Mapping[str, Any]] = None,
                      model_args: Optional[Mapping[str, Any]] = None,
                      data_config: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The ``config.json`` content (timm's layout) describing ``model`` as it is now.

    ``model_args`` are the constructor arguments needed to rebuild it (recorded by create_model; the current
    ``num_classes``, ``in_chans`` and ``global_pool`` are always filled in). ``data_config`` overrides the
    preprocessing (same keys as :func:`featzoo.data.resolve_data_config` args).

    >>> import featzoo
    >>> model_config_dict(featzoo.create_model('resnet18', num_classes=10))['num_classes']
    10
    """
    from ..data.config import resolve_data_config
    model = _whole_model(model)
    model_config = dict(model_config or {})
    source_cfg = dict(getattr(model, 'pretrained_cfg', None) or {})
    cfg = {k: v for k, v in source_cfg.items()
           if k in TIMM_PRETRAINED_KEYS and k not in _SOURCE_KEYS and (v is not None or k in _KEEP_WHEN_NULL)}
    cfg.update(model_config.pop('pretrained_cfg', {}) or {})
    architecture = model_config.pop('architecture', None) or cfg.pop('architecture', None)
    cfg.pop('architecture', None)
    if not architecture:
        raise ValueError("the model carries no architecture name (model.pretrained_cfg['architecture']); pass "
                         "model_config={'architecture': 'resnet50'}")
    num_classes = getattr(model, 'num_classes', None)
    if not isinstance(num_classes, int):
        raise ValueError(f'{type(model).__name__} has no int num_classes attribute; it is not a featzoo/timm model')

    recorded = dict(getattr(model, '_model_args', None) or {})
    recorded.update(model_args or {})
    args = {k: v for k, v in recorded.items()
            if k not in _NOT_MODEL_ARGS and k not in _TRAINING_ARGS and not k.endswith('_drop_rate')}
    chans = _first_conv_channels(model, cfg.get('first_conv'))
    if chans is None:
        chans = int(args.get('in_chans', tuple(cfg.get('input_size', (3,)))[0]))
    args['in_chans'] = chans
    args['num_classes'] = num_classes
    pool = _global_pool(model)
    if pool is not None:
        args['global_pool'] = pool
    for key, value in args.items():
        _jsonable(value, f'model argument {key!r}')

    data_args = dict(data_config or {})
    data_args.setdefault('in_chans', chans)
    for key in ('mean', 'std'):
        published = cfg.get(key)
        if data_args.get(key) is None and published is not None and len(published) != chans:
            # Weights adapted to other channels keep the published statistic's average on every channel.
            data_args[key] = (sum(published) / len(published),)
    data = resolve_data_config(data_args, pretrained_cfg={k: v for k, v in cfg.items() if k != 'num_classes'})
    cfg.update(data)
    cfg['input_size'] = (chans, *tuple(cfg['input_size'])[1:])
    for key in ('test_input_size', 'min_input_size'):
        if cfg.get(key):
            cfg[key] = (chans, *tuple(cfg[key])[1:])
    if data_args.get('input_size') is not None or data_args.get('img_size') is not None:
        cfg.pop('test_input_size', None)
        cfg.pop('test_pool_size', None)
    if data_args.get('crop_pct') is not None:
        cfg.pop('test_crop_pct', None)
    if num_classes != source_cfg.get('num_classes', num_classes):
        for key in ('label_names', 'label_descriptions', 'label_offset'):
            cfg.pop(key, None)
    cfg['num_classes'] = num_classes
    cfg['custom_load'] = False
    cfg.pop('label_offset', None)  # the saved classifier already has the label layout the file describes
    for key in _KEEP_WHEN_NULL:
        cfg.setdefault(key, None)

    config: Dict[str, Any] = {'architecture': architecture, 'num_classes': num_classes}
    num_features = model_config.pop('num_features', getattr(model, 'num_features', None))
    if num_features is not None:
        config['num_features'] = num_features
    if pool:
        config['global_pool'] = pool
    if 'labels' in model_config:
        model_config.setdefault('label_names', model_config.pop('labels'))
    for key in ('label_names', 'label_descriptions'):
        value = model_config.pop(key, None)
        if value:
            if key == 'label_names' and not isinstance(value, (list, tuple, dict)):
                raise TypeError(f'label_names must be a list (index -> name) or a dict, got {type(value).__name__}')
            if key == 'label_descriptions' and not isinstance(value, dict):
                raise TypeError(f'label_descriptions must be a dict (name -> description), got {type(value).__name__}')
            config[key] = value
    config['model_args'] = args
    config['pretrained_cfg'] = cfg
    config.update(model_config)
    _jsonable(config, 'the config')
    return config


def _state_dict_for_save(model: nn.Module) -> Dict[str, torch.Tensor]:
    state = model.state_dict()
    meta = [k for k, v in state.items() if v.is_meta]
    if meta:
        raise ValueError(f'cannot save a model with tensors still on the meta device: {meta[:5]}')
    out: Dict[str, torch.Tensor] = {}
    storages = set()
    for key, value in state.items():
        value = value.detach().to('cpu')
        if value.numel():
            ptr = value.untyped_storage().data_ptr()
            # safetensors refuses tensors that share memory (tied weights): give each its own copy.
            if ptr in storages:
                value = value.clone()
            storages.add(value.untyped_storage().data_ptr())
        out[key] = value.contiguous()
    return out


def save_pretrained(model: nn.Module, save_directory: Union[str, os.PathLike],
                    model_config: Optional[Mapping[str, Any]] = None, model_args: Optional[Mapping[str, Any]] = None,
                    data_config: Optional[Mapping[str, Any]] = None,
                    safe_serialization: Union[bool, str] = True) -> str:
    """Write ``config.json`` and the weights in the layout timm and featzoo load (``local-dir:`` or the Hub).

    ``safe_serialization``: True writes ``model.safetensors``, False ``pytorch_model.bin``, ``'both'`` both.
    Returns the directory.

    >>> import featzoo, tempfile
    >>> d = save_pretrained(featzoo.create_model('resnet18', num_classes=10), tempfile.mkdtemp())
    >>> featzoo.create_model(f'local-dir:{d}', pretrained=True).num_classes
    10
    """
    if safe_serialization not in (True, False, 'both'):
        raise ValueError(f"safe_serialization must be True, False or 'both', got {safe_serialization!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f'model must be a torch.nn.Module, got {type(model).__name__}')
    config = model_config_dict(model, model_config=model_config, model_args=model_args, data_config=data_config)
    state = _state_dict_for_save(model)
    directory = Path(save_directory)
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(f'save_directory {str(directory)!r} exists and is not a directory')
    directory.mkdir(parents=True, exist_ok=True)
    if safe_serialization in (True, 'both'):
        import safetensors.torch
        atomic_write(directory / SAFE_WEIGHTS_NAME,
                     lambda p: safetensors.torch.save_file(state, p, metadata={'format': 'pt'}))
    if safe_serialization in (False, 'both'):
        atomic_write(directory / PICKLE_WEIGHTS_NAME, lambda p: torch.save(state, p))
    atomic_write(directory / CONFIG_NAME, json.dumps(config, indent=2) + '\n')
    return str(directory)


def generate_readme(model_card: Optional[Mapping[str, Any]], model_name: str,
                    task_name: str = 'image-classification') -> str:
    """A model card (README.md with YAML front matter) for a pushed model.

    >>> print(generate_readme({'license': 'mit'}, 'my-backbone').splitlines()[0])
    ---
    """
    card = dict(model_card or {})
    tags = list(card.get('tags') or [task_name, 'featzoo', 'timm'])
    lines = ['---', 'tags:'] + [f'- {t}' for t in tags]
    lines += [f'pipeline_tag: {task_name}', f"library_name: {card.get('library_name', 'timm')}",
              f"license: {card.get('license', 'apache-2.0')}"]
    for key in ('license_name', 'license_link'):
        if key in card:
            lines.append(f'{key}: {card[key]}')
    details = dict(card.get('details') or {})
    datasets: List[str] = []
    for key in ('Dataset', 'Pretrain Dataset'):
        value = details.get(key)
        if value:
            datasets += [str(v).lower() for v in (value if isinstance(value, (list, tuple)) else [value])]
    if datasets:
        lines += ['datasets:'] + [f'- {d}' for d in datasets]
    lines += ['---', f'# Model card for {model_name}']
    if card.get('description'):
        lines += ['', str(card['description'])]
    if details:
        lines += ['', '## Model Details']
        for key, value in details.items():
            if isinstance(value, (list, tuple)):
                lines.append(f'- **{key}:**')
                lines += [f'  - {v}' for v in value]
            elif isinstance(value, dict):
                lines.append(f'- **{key}:**')
                lines += [f'  - {k}: {v}' for k, v in value.items()]
            else:
                lines.append(f'- **{key}:** {value}')
    for key, title in (('usage', 'Model Usage'), ('comparison', 'Model Comparison')):
        if card.get(key):
            lines += ['', f'## {title}', str(card[key])]
    citations = card.get('citation')
    if citations:
        lines += ['', '## Citation']
        for citation in (citations if isinstance(citations, (list, tuple)) else [citations]):
            lines += ['```bibtex', str(citation), '```']
    return '\n'.join(lines) + '\n'


def push_to_hub(model: nn.Module, repo_id: str, commit_message: str = 'Add model', token: Optional[str] = None,
                revision: Optional[str] = None, private: bool = False, create_pr: bool = False,
                model_config: Optional[Mapping[str, Any]] = None, model_card: Optional[Mapping[str, Any]] = None,
                model_args: Optional[Mapping[str, Any]] = None, task_name: str = 'image-classification',
                safe_serialization: Union[bool, str] = 'both',
                data_config: Optional[Mapping[str, Any]] = None) -> Any:
    """Save ``model`` with :func:`save_pretrained` and upload it to the Hub repo ``repo_id`` (created if needed).

    A README.md model card is added when the repo has none. Returns huggingface_hub's commit info.

    >>> push_to_hub(model, 'me/my-backbone')  # doctest: +SKIP
    CommitInfo(commit_url='https://huggingface.co/me/my-backbone/commit/...', ...)
    """
    from huggingface_hub import HfApi
    from .. import __version__
    if not isinstance(repo_id, str) or not repo_id:
        raise TypeError(f"repo_id must be a str like 'me/my-backbone', got {repo_id!r}")
    split_hub_id(repo_id)
    if '@' in repo_id:
        raise ValueError(f"repo_id {repo_id!r} must not carry a revision; pass revision='...' instead")
    if is_offline():
        raise RuntimeError(f'cannot push to {repo_id!r}: HF_HUB_OFFLINE is set; unset it, or use save_pretrained() '
                           f'to write the files locally')
    api = HfApi(token=token, library_name='featzoo', library_version=__version__, endpoint=hub_endpoint())
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
    repo_id = getattr(repo_url, 'repo_id', None) or repo_id
    has_readme = api.file_exists(repo_id=repo_id, filename='README.md', revision=revision)
    with tempfile.TemporaryDirectory() as folder:
        save_pretrained(model, folder, model_config=model_config, model_args=model_args, data_config=data_config,
                        safe_serialization=safe_serialization)
        if not has_readme:
            Path(folder, 'README.md').write_text(
                generate_readme(model_card, repo_id.split('/')[-1], task_name=task_name), encoding='utf-8')
        return api.upload_folder(repo_id=repo_id, folder_path=folder, revision=revision, create_pr=create_pr,
                                 commit_message=commit_message)
