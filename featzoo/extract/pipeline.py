"""extract_embeddings: a folder of images in, sharded pre-logit embeddings and a manifest out.

Resumable (finished shards are never redone), distributed over torchrun ranks, and strict about continuing only the
same job in the same output folder.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import math
import os
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_bool, check_choice, check_input_size, check_int
from ..errors import NotAFolderError, WeightsUnavailableError
from ..factory import build_with_weights, parse_model_name
from ..registry import is_model, resolve_deprecated_name
from ..weights import catalog, hub
from ..fileio import is_temporary, remove_temporaries
from .dataset import DEFAULT_MAX_PIXELS, ImageFileDataset, collate_images, fast_decode_size, worker_init
from .distributed import DistContext, init_distributed, split_work
from .files import (
    IMAGE_EXTENSIONS, ImageFile, image_set_digest, list_images, write_listing,
)
from .lock import OutputLock
from .manifest import (
    FORMAT_VERSION, JOB_FILE, LISTING_FILE, LOCK_FILE, MANIFEST_FILE, SHARD_DIR, job_digest, jsonable, read_json,
    write_json_atomic,
)
from .shards import read_shard_info, shard_name, write_shard
from .update import (
    PREVIOUS_DIR, Reuse, describe_update, find_reusable, format_count, load_reused_rows, move_to_previous,
    remove_previous,
)

__all__ = ['extract_embeddings', 'ExtractResult', 'WeightsUnavailableError', 'DTYPES', 'AUTOCAST_MODES',
           'DEFAULT_SHARD_SIZE', 'DEFAULT_MAX_PIXELS', 'RESUMABLE_CHANGES', 'weights_digest', 'build_with_weights',
           'JobMismatchError']

PathLike = Union[str, os.PathLike]
DTYPES = ('float32', 'float16')
AUTOCAST_MODES = ('none', 'bf16', 'fp16')
DEFAULT_SHARD_SIZE = 10000
_AUTOCAST_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}
# The only arguments a resumed run may change: they decide how the work runs, not what it computes (batch size
# and device can move the last bits of floating-point rounding, as any two runs on different hardware do).
RESUMABLE_CHANGES = ('batch_size', 'workers', 'device', 'quiet')

@dataclass
class ExtractResult:
    """What an extraction produced: the folder, its row and skip counts, and this run's speed.

    ``processed`` counts the files read by this call (all ranks); a fully resumed rerun processes none.
    ``update`` says what a run on a grown, shrunk or changed folder did: counts of ``new``, ``changed``, ``removed``
    and ``kept`` files (None when the image set was the one the job was made for).

    >>> ExtractResult('out', rows=3, skipped=1, processed=4, seconds=2.0, shards=1, resumed_shards=0).images_per_s
    2.0
    """

    out: str
    rows: int
    skipped: int
    processed: int
    seconds: float
    shards: int
    resumed_shards: int
    manifest: Dict[str, Any] = field(default_factory=dict, repr=False)
    update: Optional[Dict[str, int]] = None

    @property
    def images_per_s(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line for the end of a run.

        >>> ExtractResult('out', 3, 0, 3, 2.0, 1, 0).summary()
        'featzoo extract: 3 rows, 0 skipped, 2.0 s, 1.5 images/s -> out'
        >>> ExtractResult('out', 3, 1, 0, 0.1, 1, 1).summary()
        'featzoo extract: nothing to do: 3 rows, 1 skipped (reasons in out/manifest.json) -> out'
        """
        counts = f'{format_count(self.rows)} rows, {format_count(self.skipped)} skipped'
        if self.skipped:
            counts += f' (reasons in {os.path.join(self.out, MANIFEST_FILE)})'
        if self.processed == 0 and not self.update:
            # a rate over no work would read as "0.0 images/s", as if something were wrong
            return f'featzoo extract: nothing to do: {counts} -> {self.out}'
        head = f'featzoo extract: {describe_update(self.update)}. ' if self.update else 'featzoo extract: '
        line = f'{head}{counts}, {self.seconds:.1f} s'
        if self.processed:
            line += f', {self.images_per_s:.1f} images/s'
        line += f' -> {self.out}'
        if self.resumed_shards:
            line += f' ({self.resumed_shards} of {self.shards} shards were already done)'
        return line


# ----------------------------------------------------------------------------------------------- option checks


def _resolve_device(device: Optional[str]) -> str:
    if device is None:
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    if not isinstance(device, str):
        raise TypeError(f"device must be a str such as 'cpu', 'cuda' or 'cuda:1', got {device!r}")
    kind, _, number = device.partition(':')
    if kind not in ('cpu', 'cuda') or (number and (kind == 'cpu' or not number.isdigit())):
        raise ValueError(f"device={device!r} is invalid; valid: 'cpu', 'cuda', 'cuda:N'")
    if kind == 'cuda' and not torch.cuda.is_available():
        raise RuntimeError(f'device={device!r} was asked for, but torch sees no CUDA GPU '
                           f'(torch.cuda.is_available() is False); use --device cpu')
    return device


def _autocast_mode(value: Optional[str], device: str) -> Optional[str]:
    if value is None or value == 'none':
        return None
    aliases = {'bfloat16': 'bf16', 'float16': 'fp16', 'half': 'fp16'}
    mode = aliases.get(value, value) if isinstance(value, str) else value
    check_choice('autocast', mode, AUTOCAST_MODES)
    if mode == 'fp16' and not device.startswith('cuda'):
        raise _two_ways(ValueError(f"autocast='fp16' runs on CUDA only and device={device!r}; on CPU pass "
                                   f"autocast='bf16' (or device='cuda' where a GPU is)"),
                        f'--precision fp16 (--autocast fp16) runs on CUDA only and the device is {device}; on CPU use '
                        f'--precision bf16 or float32 (or --device cuda where a GPU is)')
    return mode


def _two_ways(exc: Exception, cli_text: str) -> Exception:
    """``exc`` (worded in Python arguments) with the same message in command-line flags, which the ``featzoo``
    command prints instead (see :func:`featzoo.cli.main`).

    >>> _two_ways(ValueError('pass dtype=...'), 'use --dtype ...').cli_text
    'use --dtype ...'
    """
    exc.cli_text = cli_text  # type: ignore[attr-defined]
    return exc


# -------------------------------------------------------------------------------------------------- the model


def weights_digest(model: nn.Module) -> str:
    """sha256 over a model's state_dict (names, dtypes, shapes and bytes): equal digests mean equal weights.

    >>> weights_digest(nn.Linear(2, 2)) == weights_digest(nn.Linear(2, 2))
    False
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f'{name}|{tensor.dtype}|{tuple(tensor.shape)}\n'.encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _prepare_for_inference(model: nn.Module, device: str, optimize: bool, compile: bool,
                           input_size: Sequence[int], dtype: torch.dtype = torch.float32) -> nn.Module:
    """The model as the extraction loop runs it.

    Inference-path rewrites (``featzoo.inference.optimize_for_inference``: batch-norm folding, oneDNN linear layers,
    channels_last, optionally torch.compile) belong here and nowhere else: the probe forward and every batch go
    through what this returns, while the weights digest of the job is taken before it, from the weights as loaded.
    """
    model = model.eval().to(device)
    if not optimize:
        return model
    from ..inference import optimize_for_inference
    return optimize_for_inference(model, compile=compile, input_size=tuple(input_size), dtype=dtype)


def _stores_head_output(model: Union[str, nn.Module], pre_logits: Optional[bool]) -> bool:
    """Whether the rows are the head's output (True) or the pooled pre-logits (False).

    ``pre_logits=None`` decides by the weights: the head's output where the head is an image-text projection (CLIP,
    SigLIP, EVA-CLIP, Perception Encoder, MobileCLIP towers), so that the vectors live in the space the matching
    text tower uses; the pre-logits elsewhere (a classifier's logits are no embedding).
    """
    if pre_logits is not None:
        return not pre_logits
    if isinstance(model, nn.Module):
        return bool((getattr(model, 'pretrained_cfg', None) or {}).get('head_is_projection'))
    source, rest = parse_model_name(model)
    if not source:
        return catalog.head_is_projection(resolve_deprecated_name(rest))
    # A Hub or local config describes its own weights; timm's published repos name their architecture and tag.
    cfg = hub.load_model_config(model, download_weights=False)['pretrained_cfg']
    if 'head_is_projection' in cfg:
        return bool(cfg['head_is_projection'])
    arch, tag = cfg.get('architecture'), cfg.get('tag')
    known = bool(arch and tag and is_model(arch) and tag in catalog.pretrained_tags(arch))
    return known and catalog.head_is_projection(f'{arch}.{tag}')


def _embed_fn(model: nn.Module, device: str, autocast: Optional[str],
              head_output: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    has_head = hasattr(model, 'forward_features') and hasattr(model, 'forward_head')
    device_type = 'cuda' if device.startswith('cuda') else 'cpu'

    def embed(x: torch.Tensor) -> torch.Tensor:
        ctx = (torch.autocast(device_type, dtype=_AUTOCAST_DTYPES[autocast]) if autocast
               else contextlib.nullcontext())
        with torch.inference_mode(), ctx:
            x = x.to(device, non_blocking=True)
            if has_head and not head_output:
                out = model.forward_head(model.forward_features(x), pre_logits=True)
            else:
                out = model(x)
        return out.float()
    return embed


# --------------------------------------------------------------------------------------------- the output folder


def _own_entry(name: str) -> bool:
    return name in (JOB_FILE, MANIFEST_FILE, LISTING_FILE, SHARD_DIR, LOCK_FILE, PREVIOUS_DIR) or is_temporary(name)


def _clear_output(out: str) -> None:
    """Remove this package's files from ``out`` (and nothing else; the lock file stays, held by this run)."""
    for name in (MANIFEST_FILE, JOB_FILE, LISTING_FILE):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(out, name))
    shard_dir = os.path.join(out, SHARD_DIR)
    if os.path.isdir(shard_dir):
        for name in os.listdir(shard_dir):
            if name.startswith('shard-') or is_temporary(name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(shard_dir, name))
        with contextlib.suppress(OSError):
            os.rmdir(shard_dir)
    remove_previous(out)
    remove_temporaries(out)


def _open_output(out: str, overwrite: bool) -> OutputLock:
    """Rank 0: refuse a file or a folder of other things, then create ``out`` and take its lock (at once, or an
    error naming the run that holds it). Nothing in ``out`` is touched before the lock is held."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise NotAFolderError(f'output {out!r} is a file; give a folder (it is created if missing)')
    if os.path.isdir(out) and not overwrite and not os.path.isfile(os.path.join(out, JOB_FILE)):
        foreign = sorted(e for e in os.listdir(out) if not _own_entry(e))
        if foreign:
            raise FileExistsError(f'output folder {out!r} already holds other files ({", ".join(foreign[:3])}'
                                  f'{", ..." if len(foreign) > 3 else ""}) and no featzoo extraction; choose a new '
                                  f'or empty folder, or pass --overwrite to write beside them')
    return OutputLock(out).acquire()


class JobMismatchError(ValueError):
    """OUT holds a job made with settings that change the stored numbers: ``differences`` lists
    ``(key, before, now)`` (nested keys dotted, e.g. ``weights.seed``); :meth:`for_cli` words it in flags.

    >>> str(JobMismatchError('out', [('normalize', False, True)]))  # doctest: +ELLIPSIS
    "'out' holds an extraction made with other settings: normalize: False before, True now. To continue it, pass normalize=False; ..."
    """

    def __init__(self, out: str, differences: List[Tuple[str, Any, Any]]) -> None:
        self.out, self.differences = out, differences
        super().__init__(self._message(cli=False))

    @property
    def cli_text(self) -> str:
        """The message in ``featzoo extract`` flags, which the command prints instead."""
        return self.for_cli()

    def for_cli(self) -> str:
        """The same message in ``featzoo extract`` flags.

        >>> JobMismatchError('out', [('normalize', False, True)]).for_cli()  # doctest: +ELLIPSIS
        "'out' holds an extraction made with other settings: --normalize: off before, on now. To continue it, use --no-normalize; ..."
        """
        return self._message(cli=True)

    def _message(self, cli: bool) -> str:
        said = '; '.join(_difference(key, before, now, cli) for key, before, now in self.differences)
        fixes = [f for f in (_fix(key, before, cli) for key, before, _ in self.differences) if f]
        resumable = (', '.join('--' + n.replace('_', '-') for n in RESUMABLE_CHANGES) if cli
                     else ', '.join(RESUMABLE_CHANGES))
        fix = f'To continue it, {"use" if cli else "pass"} {" ".join(fixes) if cli else ", ".join(fixes)}; ' \
            if fixes else 'To continue it, rerun with the original arguments; '
        overwrite = '--overwrite' if cli else 'overwrite=True'
        return (f'{self.out!r} holds an extraction made with other settings: {said}. {fix}or choose another '
                f'output folder, or pass {overwrite} to start over (only {resumable} may change when resuming; '
                f'added, removed and changed images are picked up by themselves)')


# How each recorded setting is spelled on the command line, for messages: (flag, flag when False) for switches.
_SWITCHES = {'normalize': ('--normalize', '--no-normalize'), 'fast_decode': ('--fast-decode', '--no-fast-decode'),
             'optimize': ('--optimize', '--no-optimize'), 'compile': ('--compile', '--no-compile')}
_VALUED = {'dtype': '--dtype', 'autocast': '--autocast', 'shard_size': '--shard-size', 'max_pixels': '--max-pixels',
           'weights.seed': '--seed', 'model': 'MODEL', 'data_config.input_size': '--input-size', 'images': 'IMAGES'}


def _output_words(value: Any) -> str:
    return "the head's output" if value == 'head' else 'the pre-logits'


def _difference(key: str, before: Any, now: Any, cli: bool) -> str:
    if key == 'output':
        return f'rows are {_output_words(before)} before, {_output_words(now)} now'
    if key == 'weights.sha256':
        return f'the weights differ (sha256 {str(before)[:12]}... before, {str(now)[:12]}... now)'
    if cli and key in _SWITCHES:
        return f'{_SWITCHES[key][0]}: {"on" if before else "off"} before, {"on" if now else "off"} now'
    if cli and key in _VALUED:
        return f'{_VALUED[key]}: {_cli_value(key, before)} before, {_cli_value(key, now)} now'
    return f'{key}: {before!r} before, {now!r} now'


def _cli_value(key: str, value: Any) -> str:
    if key == 'data_config.input_size' and isinstance(value, list):
        return ' '.join(str(v) for v in value[-2:])
    return str(value)


def _fix(key: str, before: Any, cli: bool) -> Optional[str]:
    """The argument that continues the recorded job, in the interface the user typed; None where there is none
    (the weights' content or the model's own preprocessing changed)."""
    if key in _SWITCHES:
        return _SWITCHES[key][0 if before else 1] if cli else f'{key}={before!r}'
    if key == 'output':
        head = before == 'head'
        return ('--no-pre-logits' if head else '--pre-logits') if cli else f'pre_logits={not head!r}'
    if key == 'weights.source':
        if cli:
            return {'random': '--no-pretrained', 'checkpoint': '--checkpoint FILE (the same file)',
                    'pretrained': '--pretrained without --checkpoint'}.get(before)
        return {'random': 'pretrained=False', 'checkpoint': 'checkpoint= (the same file)',
                'pretrained': 'pretrained=True without checkpoint'}.get(before)
    if key == 'data_config.input_size':
        return f'--input-size {_cli_value(key, before)}' if cli else f'input_size={tuple(before[-2:])!r}'
    if key in _VALUED:
        name = key.split('.')[-1]
        if cli:
            return f'{_VALUED[key]} {before}' if key != 'model' else f'the model {before!r}'
        return f'{name}={before!r}'
    return None


def _flat_differences(before: Any, now: Any, prefix: str = '') -> List[Tuple[str, Any, Any]]:
    out: List[Tuple[str, Any, Any]] = []
    for key in sorted(set(before) | set(now)):
        b, n = before.get(key, '<absent>'), now.get(key, '<absent>')
        if isinstance(b, dict) and isinstance(n, dict):
            out.extend(_flat_differences(b, n, f'{prefix}{key}.'))
        elif b != n:
            out.append((prefix + key, b, n))
    return out


def _check_existing(out: str, spec: Dict[str, Any], overwrite: bool) -> Optional[Dict[str, Any]]:
    """Refuse to mix two jobs in one folder, naming what differs; ``overwrite`` starts over instead. Returns the
    recorded job record when only its image set differs (the caller updates the job incrementally), else None."""
    job_path = os.path.join(out, JOB_FILE)
    if overwrite:
        _clear_output(out)
        return None
    if not os.path.isfile(job_path):
        return None
    recorded = read_json(job_path)
    if recorded.get('format_version') != FORMAT_VERSION:
        raise RuntimeError(f'{job_path!r} has format_version {recorded.get("format_version")!r}, this featzoo writes '
                           f'{FORMAT_VERSION}; pass --overwrite to start over')
    old_images = recorded.get('job', {}).get('images', {})
    before = {k: v for k, v in recorded.get('job', {}).items() if k != 'images'}
    now = {k: v for k, v in jsonable(spec).items() if k != 'images'}
    problems = _flat_differences(before, now)
    if any(k.startswith('weights.') and k != 'weights.sha256' for k, _, _ in problems):
        # another seed, tag or source explains the other digest: naming it too would bury the fix
        problems = [p for p in problems if p[0] != 'weights.sha256']
    if old_images.get('root') != spec['images']['root']:
        problems.append(('images', old_images.get('root'), spec['images']['root']))
    if problems:
        raise JobMismatchError(out, problems)
    return recorded if old_images != jsonable(spec['images']) else None


def _shard_range(index: int, shard_size: int, total: int) -> Tuple[int, int]:
    start = index * shard_size
    return start, min(start + shard_size, total)


def _prepare_output(out: str, spec: Dict[str, Any], digest: str, files: List[ImageFile], shard_size: int,
                    overwrite: bool) -> Dict[str, Any]:
    """Rank 0, holding the lock: validate, start or update the job in ``out``. Returns the plan's parts: the shards
    still to do (``pending``), how many were done (``resumed``), what a changed image set brought (``update``) and
    where the pending files' rows can be taken from an earlier job (``reuse``)."""
    outdated = _check_existing(out, spec, overwrite)
    shard_dir = os.path.join(out, SHARD_DIR)
    os.makedirs(shard_dir, exist_ok=True)
    # safe only because this run holds the folder's lock: no other writer can own these temporaries
    remove_temporaries(shard_dir)
    remove_temporaries(out)
    num_shards = math.ceil(len(files) / shard_size)
    job_path = os.path.join(out, JOB_FILE)
    update: Optional[Dict[str, int]] = None
    if outdated is not None:
        # Same settings, another image set: keep the old rows aside (featzoo.extract.update) and start the new job.
        update = move_to_previous(out, outdated, files)
    if outdated is not None or not os.path.isfile(job_path):
        # The listing goes first: job.json existing means the listing beside it is complete.
        write_listing(os.path.join(out, LISTING_FILE), files)
        record = {'format_version': FORMAT_VERSION, 'job_digest': digest, 'job': spec, 'num_shards': num_shards,
                  'started': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}
        if update is not None:
            record['update'] = update
        write_json_atomic(job_path, record)
    else:
        update = read_json(job_path).get('update')
    pending = []
    for index in range(num_shards):
        start, stop = _shard_range(index, shard_size, len(files))
        info = read_shard_info(os.path.join(shard_dir, shard_name(index, num_shards)))
        done = (info is not None and info.job == digest and info.index == index and info.first_file == start
                and info.num_files == stop - start)
        if not done:
            pending.append(index)
    if pending:
        # A manifest promises a complete folder; it comes back, rewritten, when the missing shards are done.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(out, MANIFEST_FILE))
    else:
        update = None  # a finished job: the update it was made by is history, not this run's work
    wanted = [i for index in pending for i in range(*_shard_range(index, shard_size, len(files)))]
    reuse = find_reusable(out, spec, files, wanted)
    return dict(pending=pending, resumed=num_shards - len(pending), update=update, reuse=reuse)


# ---------------------------------------------------------------------------------------------------- the loop


class _ShardBuffer:
    """Rows of one shard as they arrive; complete when every file of its range has a row or a skip reason."""

    def __init__(self, index: int, start: int, stop: int) -> None:
        self.index, self.start, self.stop = index, start, stop
        self.rows: Dict[int, torch.Tensor] = {}
        self.skipped: Dict[int, str] = {}

    def complete(self) -> bool:
        return len(self.rows) + len(self.skipped) == self.stop - self.start


def _run_shards(shards: Sequence[int], *, paths: List[str], root: str, out: str, num_shards: int, shard_size: int,
                digest: str, transform: Callable, mode: str, draft_size: Optional[int], max_pixels: Optional[int],
                embed: Callable[[torch.Tensor], torch.Tensor], dim: int, normalize: bool, dtype: torch.dtype,
                batch_size: int, workers: int, pin_memory: bool, progress: Any, rank: int,
                reuse: Dict[int, Reuse]) -> int:
    """Extract ``shards`` in order, writing each as soon as it is complete; returns the files processed (rows
    and skip reasons taken from an earlier job through ``reuse`` are copied, not processed)."""
    from torch.utils.data import DataLoader

    buffers: 'OrderedDict[int, _ShardBuffer]' = OrderedDict()
    indices: List[int] = []
    for index in shards:
        start, stop = _shard_range(index, shard_size, len(paths))
        buffers[index] = _ShardBuffer(index, start, stop)
        indices.extend(range(start, stop))
    reused_rows, reused_skips = load_reused_rows(out, reuse, indices, dim, dtype)
    for index, row in reused_rows.items():
        buffers[index // shard_size].rows[index] = row
    for index, reason in reused_skips.items():
        buffers[index // shard_size].skipped[index] = reason
    indices = [i for i in indices if i not in reused_rows and i not in reused_skips]
    shard_dir = os.path.join(out, SHARD_DIR)

    def flush() -> None:
        while buffers and next(iter(buffers.values())).complete():
            _, buf = buffers.popitem(last=False)
            order = sorted(buf.rows)
            rows = torch.stack([buf.rows[i] for i in order]) if order else torch.empty(0, dim, dtype=dtype)
            write_shard(os.path.join(shard_dir, shard_name(buf.index, num_shards)), rows, index=buf.index, job=digest,
                        paths=[paths[i] for i in order],
                        skipped=[{'path': paths[i], 'reason': buf.skipped[i]} for i in sorted(buf.skipped)],
                        first_file=buf.start, num_files=buf.stop - buf.start, rank=rank)

    flush()  # shards made only of kept rows are written before any decoding
    if not indices:
        return 0
    dataset = ImageFileDataset(root, paths, indices, transform, mode=mode, draft_size=draft_size,
                               max_pixels=max_pixels)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=collate_images, pin_memory=pin_memory,
                        worker_init_fn=worker_init if workers else None,
                        prefetch_factor=4 if workers else None)
    processed = 0
    for good, batch, bad in loader:
        if batch is not None:
            emb = embed(batch)
            if normalize:
                emb = F.normalize(emb, dim=1)
            emb = emb.to('cpu', dtype)
            for index, row in zip(good, emb):
                buffers[index // shard_size].rows[index] = row
        for index, reason in bad:
            buffers[index // shard_size].skipped[index] = reason
        processed += len(good) + len(bad)
        progress.update(len(good) + len(bad))
        flush()
    return processed


def _write_manifest(out: str, num_shards: int, digest: str, base: Dict[str, Any]) -> Dict[str, Any]:
    shards, skipped, rows = [], [], 0
    for index in range(num_shards):
        name = shard_name(index, num_shards)
        info = read_shard_info(os.path.join(out, SHARD_DIR, name))
        if info is None or info.job != digest:
            raise RuntimeError(f'shard {name} of {out!r} is missing or damaged after the run; run the same '
                               f'command again to redo it')
        shards.append({'file': f'{SHARD_DIR}/{name}', 'rows': info.rows, 'files': info.num_files})
        skipped.extend(info.skipped)
        rows += info.rows
    manifest = dict(base, rows=rows, shards=shards, skipped=skipped,
                    finished=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'))
    write_json_atomic(os.path.join(out, MANIFEST_FILE), manifest)
    return manifest


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool, ctx: DistContext) -> Any:
    if not enabled or total == 0:
        return _NoProgress()
    from tqdm import tqdm
    desc = 'extract' if not ctx.distributed else f'extract (rank 0 of {ctx.world_size})'
    return tqdm(total=total, unit='img', desc=desc, file=sys.stderr, dynamic_ncols=True, smoothing=0.1)


# ------------------------------------------------------------------------------------------------------ the API


def extract_embeddings(
        model: Union[str, nn.Module],
        images: PathLike,
        out: PathLike,
        *,
        checkpoint: Optional[PathLike] = None,
        pretrained: bool = True,
        batch_size: int = 32,
        workers: Optional[int] = None,
        device: Optional[str] = None,
        normalize: bool = False,
        dtype: str = 'float32',
        fast_decode: bool = False,
        overwrite: bool = False,
        input_size: Optional[Union[int, Sequence[int]]] = None,
        shard_size: int = DEFAULT_SHARD_SIZE,
        autocast: Optional[str] = None,
        seed: int = 0,
        quiet: bool = False,
        data_config: Optional[Dict[str, Any]] = None,
        optimize: bool = True,
        compile: bool = False,
        max_pixels: Optional[int] = DEFAULT_MAX_PIXELS,
        pre_logits: Optional[bool] = None,
) -> ExtractResult:
    """Embed every image under ``images`` into sharded safetensors files and a manifest in ``out``.

    Each row is the model's pooled pre-logits, ``forward_head(forward_features(x), pre_logits=True)``, on the
    model's eval preprocessing; where the weights' head is an image-text projection (CLIP, SigLIP, EVA-CLIP,
    Perception Encoder, MobileCLIP towers) it is the head's output instead, so that the vectors live in the space the
    matching text tower uses. ``pre_logits=True`` always stores the pre-logits, ``pre_logits=False`` always the
    head's output; the manifest's ``output`` says which ('pre_logits' or 'head'). ``model`` is a registered name (weights: ``checkpoint``, else the default
    pretrained tag unless ``pretrained=False``, which uses random weights seeded by ``seed``) or a module.
    Unreadable files are skipped and listed in the manifest. Running the same call again after an interruption
    finishes the job without redoing finished shards; under ``torchrun`` the shards are split across ranks.
    ``input_size`` ((H, W) or (C, H, W)) overrides the preprocessing size; ``autocast`` is 'bf16' (CPU, CUDA) or
    'fp16' (CUDA); ``dtype`` ('float32' or 'float16') is the storage type. A model given by name runs through
    :func:`featzoo.optimize_for_inference` (``optimize=False`` runs it eagerly as built; ``compile=True`` adds
    ``torch.compile``); a module you pass runs as given, so optimize it yourself if you want that. Images whose
    header promises more than ``max_pixels`` pixels (default: Pillow's default limit, 89,478,485; None: no limit)
    are skipped, with the reason in the manifest, before they are decoded.

    ``out`` is locked while the job runs: a second run on the same folder fails at once naming the first. Every
    argument that changes the stored numbers is recorded in ``out/job.json``; a resumed run may change only
    ``batch_size``, ``workers``, ``device`` and ``quiet`` (anything else is an error naming it, unless ``overwrite``).
    Any file name the OS allows is stored and given back exactly by :func:`read_embeddings`.

    >>> result = extract_embeddings('resnet18', 'photos/', 'emb/', pretrained=False, normalize=True)  # doctest: +SKIP
    >>> paths, emb = read_embeddings('emb/')  # doctest: +SKIP
    """
    started = time.perf_counter()
    images = os.path.abspath(os.fspath(images))
    out = os.path.abspath(os.fspath(out))
    if not isinstance(model, (str, nn.Module)):
        raise TypeError(f'model must be a registered model name or an nn.Module, got {type(model).__name__}')
    for name, value in (('pretrained', pretrained), ('normalize', normalize), ('fast_decode', fast_decode),
                        ('overwrite', overwrite), ('quiet', quiet), ('optimize', optimize), ('compile', compile)):
        check_bool(name, value)
    check_int('batch_size', batch_size, 1)
    check_int('shard_size', shard_size, 1)
    check_int('seed', seed, 0)
    if max_pixels is not None:
        check_int('max_pixels', max_pixels, 1)
    if pre_logits is not None:
        check_bool('pre_logits', pre_logits)
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    check_int('workers', workers, 0)
    check_choice('dtype', dtype, DTYPES)
    size = check_input_size(input_size)
    device = _resolve_device(device)
    autocast = _autocast_mode(autocast, device)
    if checkpoint is not None:
        if not isinstance(model, str):
            raise ValueError('checkpoint applies to a model given by name; load the weights into your module instead')
        checkpoint = os.fspath(checkpoint)
        if not os.path.isfile(checkpoint):
            raise FileNotFoundError(f'checkpoint file {checkpoint!r} does not exist')
    if not os.path.isdir(images):
        if os.path.exists(images):
            raise NotAFolderError(f'{images!r} is a file; IMAGES must be a folder of images')
        raise FileNotFoundError(f'image folder {images!r} does not exist')
    if data_config is not None and not isinstance(data_config, dict):
        raise TypeError(f'data_config must be a dict, got {type(data_config).__name__}')
    arguments = dict(model=model if isinstance(model, str) else type(model).__name__, images=images, out=out,
                     checkpoint=checkpoint, pretrained=pretrained, batch_size=batch_size, workers=workers,
                     device=device, normalize=normalize, dtype=dtype, fast_decode=fast_decode, overwrite=overwrite,
                     input_size=size, shard_size=shard_size, autocast=autocast or 'none', seed=seed, quiet=quiet,
                     optimize=optimize, compile=compile, max_pixels=max_pixels, pre_logits=pre_logits)

    ctx = init_distributed(device)
    held: List[OutputLock] = []
    try:
        if ctx.distributed and device.startswith('cuda'):
            device = f'cuda:{ctx.local_rank}'
        return _extract(model, images, out, ctx=ctx, started=started, arguments=arguments, checkpoint=checkpoint,
                        pretrained=pretrained, batch_size=batch_size, workers=workers, device=device,
                        normalize=normalize, dtype=dtype, fast_decode=fast_decode, overwrite=overwrite, size=size,
                        shard_size=shard_size, autocast=autocast, seed=seed, quiet=quiet, data_config=data_config,
                        optimize=optimize, compile=compile, max_pixels=max_pixels, pre_logits=pre_logits, held=held)
    finally:
        for lock in held:
            lock.release()
        ctx.close()


def _extract(model: Union[str, nn.Module], images: str, out: str, *, ctx: DistContext, started: float,
             arguments: Dict[str, Any], checkpoint: Optional[str], pretrained: bool, batch_size: int, workers: int,
             device: str, normalize: bool, dtype: str, fast_decode: bool, overwrite: bool,
             size: Optional[Tuple[int, ...]], shard_size: int, autocast: Optional[str], seed: int, quiet: bool,
             data_config: Optional[Dict[str, Any]], optimize: bool, compile: bool, max_pixels: Optional[int],
             pre_logits: Optional[bool], held: List[OutputLock]) -> ExtractResult:
    from ..data import create_transform, resolve_data_config

    head_output = _stores_head_output(model, pre_logits)
    if isinstance(model, str):
        name = model
        # Without the head, num_classes=0: the classifier is never used, and checkpoints fine-tuned to any class
        # count still load.
        net, weights = build_with_weights(model, checkpoint, pretrained, seed,
                                          **({} if head_output else {'num_classes': 0}))
    else:
        name = f'{type(model).__module__}.{type(model).__qualname__}'
        net, weights = model, {'source': 'module'}
    weights = dict(weights, sha256=weights_digest(net))

    cfg = resolve_data_config(dict(data_config or {}), model=net)
    if size is not None:
        # (H, W) keeps the channel count the model's preprocessing has (1 for grayscale models).
        channels = size[0] if len(size) == 3 else cfg['input_size'][0]
        cfg = resolve_data_config(dict(data_config or {}, input_size=(channels,) + tuple(size[-2:])), model=net)
    transform = create_transform(**cfg)
    mode = 'L' if cfg['input_size'][0] == 1 else 'RGB'

    # only a model this function built is rewritten in place; a caller's module is theirs to keep as it is
    optimize = optimize and isinstance(model, str)
    compile = compile and optimize
    # bf16 on the CPU: optimize_for_inference's own bfloat16 path (native bf16 only; elsewhere one warning and
    # float32), not autocast, which emulates bf16 on CPUs without it (4.7x slower than float32 on an AVX2 EPYC)
    cpu_bf16 = optimize and autocast == 'bf16' and device == 'cpu'
    net = _prepare_for_inference(net, device, optimize=optimize, compile=compile, input_size=cfg['input_size'],
                                 dtype=torch.bfloat16 if cpu_bf16 else torch.float32)
    embed = _embed_fn(net, device, None if cpu_bf16 else autocast, head_output=head_output)
    inference = _inference_record(net, device)
    # One zero image through the whole path before any work: a model that cannot take this input size, or whose
    # pre-logits are not one vector per image, fails here rather than after a listing of a million files.
    probe = embed(torch.zeros((1,) + tuple(cfg['input_size'])))
    if probe.ndim != 2:
        what = "its head's output" if head_output else 'pre-logits'
        raise ValueError(f'{name!r} gives {what} of shape {tuple(probe.shape)} for one image, not one vector '
                         f'([1, dim]); build it with global pooling')
    dim = int(probe.shape[1])

    # The job record (schema in featzoo.extract.manifest): everything that decides the rows. Only the arguments of
    # RESUMABLE_CHANGES (and overwrite) decide how the work runs, so only they may differ when a run resumes.
    spec: Dict[str, Any] = jsonable({
        'model': name, 'weights': {k: v for k, v in weights.items() if k != 'file'}, 'data_config': cfg,
        'normalize': normalize, 'dtype': dtype, 'fast_decode': fast_decode, 'autocast': autocast or 'none',
        'shard_size': shard_size, 'embedding_dim': dim, 'optimize': optimize, 'compile': compile,
        'max_pixels': max_pixels})
    if head_output:
        # absent = the pooled pre-logits, which every earlier version stored, so their jobs still resume
        spec['output'] = 'head'

    plan: Any = None
    error: Optional[BaseException] = None
    if ctx.is_main:
        try:
            files = list_images(images)
            if not files:
                raise FileNotFoundError(f'found no image files under {images!r} (extensions: '
                                        f'{", ".join(IMAGE_EXTENSIONS)}, any case)')
            spec['images'] = {'root': images, 'count': len(files), 'sha256': image_set_digest(files)}
            digest = job_digest(spec)
            held.append(_open_output(out, overwrite))
            plan = dict(_prepare_output(out, spec, digest, files, shard_size, overwrite),
                        paths=[f.path for f in files], digest=digest, images=spec['images'])
        except Exception as exc:  # noqa: BLE001 - handed to every rank, then raised here as it was
            error = exc
    ctx.share_outcome(error)
    plan = ctx.broadcast(plan)
    spec['images'] = plan['images']
    if job_digest(spec) != plan['digest']:
        raise RuntimeError(f'rank {ctx.rank} prepared a different job than rank 0 (model, weights or preprocessing '
                           f'differ between processes); every rank must run the same command')

    paths: List[str] = plan['paths']
    num_shards = math.ceil(len(paths) / shard_size)
    mine = split_work(plan['pending'], ctx.rank, ctx.world_size)
    my_files = sum(stop - start for start, stop in (_shard_range(i, shard_size, len(paths)) for i in mine))
    my_shards = set(mine)
    my_files -= sum(1 for i in plan['reuse'] if i // shard_size in my_shards)
    progress = _progress(my_files, not quiet and ctx.is_main, ctx)
    try:
        processed = _run_shards(
            mine, paths=paths, root=images, out=out, num_shards=num_shards, shard_size=shard_size,
            digest=plan['digest'], transform=transform, mode=mode,
            draft_size=fast_decode_size(cfg) if fast_decode else None, max_pixels=max_pixels, embed=embed, dim=dim,
            normalize=normalize,
            dtype=getattr(torch, dtype), batch_size=batch_size, workers=workers,
            pin_memory=device.startswith('cuda'), progress=progress, rank=ctx.rank, reuse=plan['reuse'])
    finally:
        progress.close()
    processed = sum(ctx.gather(processed))

    manifest: Optional[Dict[str, Any]] = None
    error = None
    if ctx.is_main:
        base = {
            'format_version': FORMAT_VERSION, 'model': name, 'weights': weights, 'data_config': cfg,
            'arguments': arguments, 'embedding_dim': dim, 'dtype': dtype, 'images': plan['images'],
            'output': 'head' if head_output else 'pre_logits',
            'job_digest': plan['digest'], 'world_size': ctx.world_size, 'inference': inference,
            'versions': {'featzoo': _featzoo_version(), 'torch': torch.__version__},
        }
        try:
            manifest = _write_manifest(out, num_shards, plan['digest'], base)
            remove_previous(out)  # the rows kept from earlier jobs now live in this job's shards
        except Exception as exc:  # noqa: BLE001 - handed to every rank, then raised here as it was
            error = exc
    ctx.share_outcome(error)
    manifest = ctx.broadcast(manifest)
    result = ExtractResult(out=out, rows=manifest['rows'], skipped=len(manifest['skipped']), processed=processed,
                           seconds=time.perf_counter() - started, shards=num_shards, resumed_shards=plan['resumed'],
                           manifest=manifest, update=plan['update'])
    if ctx.is_main and not quiet:
        print(result.summary(), file=sys.stderr, flush=True)
    return result


def _inference_record(net: Any, device: str) -> Optional[Dict[str, Any]]:
    """What optimize_for_inference chose for this run (its plan, and on the CPU the processor it chose for), for the
    manifest; None for a model run as built."""
    from ..inference import InferenceModel, cpu_features
    if not isinstance(net, InferenceModel):
        return None
    record: Dict[str, Any] = {'plan': net.plan.as_dict()}
    if device == 'cpu':
        features = cpu_features()
        record['cpu'] = {'vendor': features.vendor, 'flags': features.flags()}
    return record


def _featzoo_version() -> str:
    from .. import __version__
    return __version__

