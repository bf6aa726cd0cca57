"""Safetensors shards of embeddings: written atomically, recognized as finished only when complete and ours.

A shard holds the tensor ``embeddings`` [rows, dim] and, in the safetensors metadata, the rows' relative paths,
the files of its range that were skipped (with reasons), its index and the digest of the job that made it.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file

__all__ = ['SHARD_FORMAT', 'ShardInfo', 'shard_name', 'write_shard', 'read_shard_info', 'remove_stale_temporaries',
           'TENSOR_NAME', 'new_temporary']

SHARD_FORMAT = 'featzoo-embeddings'
TENSOR_NAME = 'embeddings'
_TMP_PREFIX = '.tmp-'


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


def shard_name(index: int, num_shards: int) -> str:
    """The file name of shard ``index``; zero-padded so that names sort in row order.

    >>> shard_name(3, 120)
    'shard-00003.safetensors'
    """
    width = max(5, len(str(max(num_shards - 1, 0))))
    return f'shard-{index:0{width}d}.safetensors'


def new_temporary(target: str) -> str:
    """Create an empty temporary file beside ``target`` (same filesystem, so a rename is atomic), with the
    permissions an ordinary new file gets rather than mkstemp's owner-only ones.

    >>> p = new_temporary(os.path.join(tempfile.mkdtemp(), 'x.json')); os.path.basename(p).startswith('.tmp-x.json.')
    True
    """
    directory = os.path.dirname(os.path.abspath(target))
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX + os.path.basename(target) + '.', dir=directory)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return tmp


def _fsync_dir(directory: str) -> None:
    # The rename is durable only once the directory entry is on disk; some filesystems refuse to open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
    directory = os.path.dirname(os.path.abspath(path))
    metadata = {
        'format': SHARD_FORMAT, 'shard': str(index), 'job': job, 'first_file': str(first_file),
        'num_files': str(num_files), 'paths': json.dumps(list(paths), ensure_ascii=False),
        'skipped': json.dumps(list(skipped), ensure_ascii=False), 'rank': str(rank),
    }
    tmp = new_temporary(path)
    try:
        save_file({TENSOR_NAME: embeddings.detach().cpu().contiguous()}, tmp, metadata=metadata)
        with open(tmp, 'rb+') as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


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
            shape = fh.get_slice(TENSOR_NAME).get_shape()
        paths = json.loads(meta['paths'])
        info = ShardInfo(index=int(meta['shard']), job=meta['job'], paths=paths, skipped=json.loads(meta['skipped']),
                         rows=int(shape[0]), first_file=int(meta['first_file']), num_files=int(meta['num_files']),
                         rank=int(meta.get('rank', 0)))
    except Exception:  # noqa: BLE001 - a damaged file of any kind is simply not a finished shard
        return None
    # safe_open already refuses a file whose size differs from what its header promises (a truncated write).
    if info.rows != len(info.paths) or info.rows + len(info.skipped) != info.num_files:
        return None
    return info


def remove_stale_temporaries(directory: str) -> List[str]:
    """Delete temporary files left by killed writers in ``directory``; returns their names.

    >>> remove_stale_temporaries(tempfile.mkdtemp())
    []
    """
    removed = []
    if not os.path.isdir(directory):
        return removed
    for name in sorted(os.listdir(directory)):
        if name.startswith(_TMP_PREFIX):
            try:
                os.unlink(os.path.join(directory, name))
            except FileNotFoundError:
                continue
            removed.append(name)
    return removed
