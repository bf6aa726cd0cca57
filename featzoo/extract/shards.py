"""Safetensors shards of embeddings: written atomically, recognized as finished only when complete and ours.

A shard holds the tensor ``embeddings`` [rows, dim] and, in the safetensors metadata, the rows' relative paths,
the files of its range that were skipped (with reasons), its index and the digest of the job that made it. Paths
are stored as JSON with ``\\u`` escapes, so every name the OS gives (lone surrogates from names that are not valid
UTF-8 included) is stored and given back exactly.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..fileio import atomic_write, remove_temporaries

__all__ = ['SHARD_FORMAT', 'ShardInfo', 'shard_name', 'write_shard', 'read_shard_info', 'remove_stale_temporaries',
           'TENSOR_NAME', 'ShardWriteError']

SHARD_FORMAT = 'featzoo-embeddings'
TENSOR_NAME = 'embeddings'
remove_stale_temporaries = remove_temporaries


class ShardWriteError(RuntimeError):
    """A shard could not be written; the message names the file, the images it holds and the cause."""


@dataclass(frozen=True)
class ShardInfo:
    """What a finished shard's header says (reading it costs one small read, not the tensor).

    >>> ShardInfo(0, 'abc', ['a.jpg'], [], 1, 0, 1).rows
    1
    """

    index: int
    job: str
    paths: List[str]
    skipped: List[Dict[str, str]]
    rows: int
    first_file: int
    num_files: int
    rank: int = 0
    dim: int = 0
    dtype: str = ''


def shard_name(index: int, num_shards: int) -> str:
    """The file name of shard ``index``; zero-padded so that names sort in row order.

    >>> shard_name(3, 120)
    'shard-00003.safetensors'
    """
    width = max(5, len(str(max(num_shards - 1, 0))))
    return f'shard-{index:0{width}d}.safetensors'


def write_shard(path: str, embeddings: torch.Tensor, *, index: int, job: str, paths: Sequence[str],
                skipped: Sequence[Dict[str, str]], first_file: int, num_files: int, rank: int = 0) -> None:
    """Write a shard to a temporary file beside ``path``, flush it to disk, then rename it into place.

    A process killed at any moment leaves either no file at ``path`` or the complete one.

    >>> import tempfile; p = os.path.join(tempfile.mkdtemp(), shard_name(0, 1))
    >>> write_shard(p, torch.zeros(1, 4), index=0, job='j', paths=['a.jpg'], skipped=[], first_file=0, num_files=1)
    >>> read_shard_info(p).paths
    ['a.jpg']
    """
    if embeddings.ndim != 2 or embeddings.shape[0] != len(paths):
        raise ValueError(f'a shard needs one embedding row per path: got {tuple(embeddings.shape)} for '
                         f'{len(paths)} paths')
    metadata = {
        'format': SHARD_FORMAT, 'shard': str(index), 'job': job, 'first_file': str(first_file),
        'num_files': str(num_files), 'paths': json.dumps(list(paths), ensure_ascii=True),
        'skipped': json.dumps(list(skipped), ensure_ascii=True), 'rank': str(rank),
    }
    tensor = embeddings.detach().cpu().contiguous()
    try:
        atomic_write(path, lambda tmp: save_file({TENSOR_NAME: tensor}, tmp, metadata=metadata))
    except Exception as exc:  # noqa: BLE001 - any cause, named, so that a failing shard is never a mystery
        names = list(paths) + [s['path'] for s in skipped]
        held = f'{min(names)!r} .. {max(names)!r}' if names else 'no rows'
        raise ShardWriteError(f'cannot write shard {path!r} (images {held}): {type(exc).__name__}: {exc}') from exc


def read_shard_info(path: str) -> Optional[ShardInfo]:
    """The header of a finished shard, or None when the file is missing, unreadable or not a featzoo shard.

    >>> read_shard_info('/nonexistent.safetensors') is None
    True
    """
    if not os.path.isfile(path):
        return None
    try:
        with safe_open(path, framework='pt') as fh:
            meta = fh.metadata() or {}
            if meta.get('format') != SHARD_FORMAT or TENSOR_NAME not in fh.keys():
                return None
            piece = fh.get_slice(TENSOR_NAME)
            shape, dtype = piece.get_shape(), piece.get_dtype()
        paths = json.loads(meta['paths'])
        info = ShardInfo(index=int(meta['shard']), job=meta['job'], paths=paths, skipped=json.loads(meta['skipped']),
                         rows=int(shape[0]), first_file=int(meta['first_file']), num_files=int(meta['num_files']),
                         rank=int(meta.get('rank', 0)), dim=int(shape[1]), dtype=_DTYPE_NAMES.get(dtype, dtype))
    except Exception:  # noqa: BLE001 - a damaged file of any kind is simply not a finished shard
        return None
    # safe_open already refuses a file whose size differs from what its header promises (a truncated write).
    if info.rows != len(info.paths) or info.rows + len(info.skipped) != info.num_files:
        return None
    return info


_DTYPE_NAMES = {'F32': 'float32', 'F16': 'float16'}  # safetensors' codes of the storage types extract writes
