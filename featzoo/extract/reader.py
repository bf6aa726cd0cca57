"""Reading an extraction back: all at once (:func:`read_embeddings`) or lazily, shard by shard, memory-mapped
(:func:`open_embeddings`)."""
from __future__ import annotations

import bisect
import os
from typing import Any, Dict, Iterator, List, Sequence, Tuple, Union

import torch
from safetensors import safe_open

from .manifest import JOB_FILE, MANIFEST_FILE, READABLE_VERSIONS, SHARD_DIR, read_json
from .shards import TENSOR_NAME, ShardInfo, read_shard_info, shard_name

_STORAGE_DTYPES = ('float32', 'float16')

__all__ = ['EmbeddingView', 'open_embeddings', 'read_embeddings', 'load_manifest']

PathLike = Union[str, os.PathLike]


def load_manifest(out: PathLike) -> Dict[str, Any]:
    """The manifest of a finished extraction; an unfinished or foreign folder is an error saying which.

    >>> load_manifest('/nonexistent')
    Traceback (most recent call last):
    ...
    FileNotFoundError: embeddings folder '/nonexistent' does not exist
    """
    out = os.fspath(out)
    if not os.path.isdir(out):
        raise FileNotFoundError(f'embeddings folder {out!r} does not exist')
    path = os.path.join(out, MANIFEST_FILE)
    if not os.path.isfile(path):
        if os.path.isfile(os.path.join(out, JOB_FILE)):
            raise RuntimeError(f'{out!r} holds an unfinished extraction (no {MANIFEST_FILE} yet); run the same '
                               f'`featzoo extract` command again to finish it')
        raise FileNotFoundError(f'{out!r} holds no {MANIFEST_FILE}: it is not the output of `featzoo extract`')
    manifest = read_json(path)
    version = manifest.get('format_version')
    if version not in READABLE_VERSIONS:
        raise RuntimeError(f'{path!r} has format_version {version!r}; this featzoo reads versions '
                           f'{", ".join(map(str, READABLE_VERSIONS))}')
    _check_manifest(path, manifest)
    return manifest


def _tampered(path: str, detail: str) -> RuntimeError:
    return RuntimeError(f'{path!r} is not a manifest featzoo wrote ({detail}); rerun the extraction with '
                        f'--overwrite')


def _check_manifest(path: str, manifest: Dict[str, Any]) -> None:
    """The manifest's promises that the reader relies on: shard files named as extract names them (so inside the
    folder, never elsewhere), row counts that add up, a storage dtype and dimension that make sense."""
    shards = manifest.get('shards')
    if not isinstance(shards, list):
        raise _tampered(path, 'it has no list of shards')
    dim, dtype = manifest.get('embedding_dim'), manifest.get('dtype')
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise _tampered(path, f'embedding_dim is {dim!r}')
    if dtype not in _STORAGE_DTYPES:
        raise _tampered(path, f'dtype is {dtype!r}, not one of {", ".join(_STORAGE_DTYPES)}')
    if not isinstance(manifest.get('job_digest'), str):
        raise _tampered(path, 'it names no job_digest')
    total = 0
    for index, shard in enumerate(shards):
        expected = f'{SHARD_DIR}/{shard_name(index, len(shards))}'
        if not isinstance(shard, dict) or shard.get('file') != expected:
            got = shard.get('file') if isinstance(shard, dict) else shard
            raise _tampered(path, f'shard {index} is {got!r}; extract writes it as {expected!r}')
        rows = shard.get('rows')
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
            raise _tampered(path, f'shard {index} has rows={rows!r}')
        total += rows
    if manifest.get('rows') != total:
        raise _tampered(path, f"it promises {manifest.get('rows')!r} rows but its shards add up to {total}")


class EmbeddingView:
    """A lazy, memory-mapped view of an extraction: ``len(view)``, ``view[i]``, ``view[a:b]``,
    ``view[[i, j]]``, ``view.paths``, and :meth:`iter_shards` for one shard at a time.

    Rows are read from the safetensors files through memory maps when asked for, so outputs larger than memory
    can be scanned.

    >>> view = open_embeddings('embeddings/')  # doctest: +SKIP
    >>> len(view), view.dim, view[0].shape  # doctest: +SKIP
    (1000000, 512, torch.Size([512]))
    """

    def __init__(self, out: PathLike) -> None:
        self.out = os.fspath(out)
        self.manifest = load_manifest(self.out)
        self.dim = int(self.manifest['embedding_dim'])
        self.dtype = getattr(torch, self.manifest['dtype'])  # one of _STORAGE_DTYPES, checked by load_manifest
        self._files = [os.path.join(self.out, shard['file']) for shard in self.manifest['shards']]
        counts = [int(shard['rows']) for shard in self.manifest['shards']]
        self._starts = [0]
        for count in counts:
            self._starts.append(self._starts[-1] + count)
        self._handles: Dict[int, Any] = {}
        self._infos: Dict[int, ShardInfo] = {}
        self._paths: Union[List[str], None] = None

    def __len__(self) -> int:
        return self._starts[-1]

    def __repr__(self) -> str:
        return f'EmbeddingView({self.out!r}, rows={len(self)}, dim={self.dim}, dtype={self.manifest["dtype"]})'

    def _info(self, shard: int) -> ShardInfo:
        """The shard's header, checked against the manifest: it must be this shard of this job, with the rows,
        width and storage type the manifest promises (a file swapped in from another job is refused)."""
        info = self._infos.get(shard)
        if info is None:
            path = self._files[shard]
            if not os.path.isfile(path):
                raise FileNotFoundError(f'shard {path!r} listed in the manifest is missing')
            info = read_shard_info(path)
            if info is None:
                raise RuntimeError(f'shard {path!r} listed in the manifest is damaged or not a featzoo shard; rerun '
                                   f'the extraction with --overwrite')
            promised = (self.manifest['job_digest'], shard, self._starts[shard + 1] - self._starts[shard], self.dim,
                        self.manifest['dtype'])
            found = (info.job, info.index, info.rows, info.dim, info.dtype)
            if found != promised:
                names = ('job', 'index', 'rows', 'dim', 'dtype')
                diff = '; '.join(f'{n} {f!r} in the file, {p!r} in the manifest'
                                 for n, f, p in zip(names, found, promised) if f != p)
                raise RuntimeError(f'shard {path!r} does not belong to this extraction ({diff}); it was replaced '
                                   f'or the manifest was edited: rerun the extraction with --overwrite')
            self._infos[shard] = info
        return info

    def _handle(self, shard: int) -> Any:
        handle = self._handles.get(shard)
        if handle is None:
            self._info(shard)
            handle = safe_open(self._files[shard], framework='pt')
            self._handles[shard] = handle
        return handle

    def _rows(self, shard: int, start: int, stop: int) -> torch.Tensor:
        return self._handle(shard).get_slice(TENSOR_NAME)[start:stop]

    def _locate(self, row: int) -> Tuple[int, int]:
        shard = bisect.bisect_right(self._starts, row) - 1
        return shard, row - self._starts[shard]

    def _check_row(self, row: Any) -> int:
        if isinstance(row, bool) or not isinstance(row, int):
            raise TypeError(f'rows are indexed by int, slice or a sequence of ints, got {type(row).__name__}')
        n = len(self)
        if not -n <= row < n:
            raise IndexError(f'row {row} is out of range for {n} rows')
        return row + n if row < 0 else row

    def __getitem__(self, key: Union[int, slice, Sequence[int], torch.Tensor]) -> torch.Tensor:
        if isinstance(key, torch.Tensor):
            if key.dtype == torch.bool:
                key = key.nonzero().flatten()
            key = key.tolist()
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                return self[list(range(start, stop, step))]
            return self._slice(start, max(start, stop))
        if isinstance(key, (list, tuple)):
            rows = [self._check_row(r) for r in key]
            if not rows:
                return torch.empty(0, self.dim, dtype=self.dtype)
            return torch.stack([self._single(r) for r in rows])
        return self._single(self._check_row(key))

    def _single(self, row: int) -> torch.Tensor:
        shard, offset = self._locate(row)
        return self._rows(shard, offset, offset + 1)[0]

    def _slice(self, start: int, stop: int) -> torch.Tensor:
        parts = []
        row = start
        while row < stop:
            shard, offset = self._locate(row)
            take = min(stop, self._starts[shard + 1]) - row
            parts.append(self._rows(shard, offset, offset + take))
            row += take
        if not parts:
            return torch.empty(0, self.dim, dtype=self.dtype)
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    @property
    def paths(self) -> List[str]:
        """Every row's path relative to the image folder, in row order (read from the shard headers once)."""
        if self._paths is None:
            paths: List[str] = []
            for shard in range(len(self._files)):
                paths.extend(self._info(shard).paths)
            self._paths = paths
        return self._paths

    def iter_shards(self) -> Iterator[Tuple[List[str], torch.Tensor]]:
        """Yield ``(paths, embeddings)`` per shard, in row order; one shard is in memory at a time.

        >>> for paths, emb in open_embeddings('embeddings/').iter_shards(): ...  # doctest: +SKIP
        """
        for shard in range(len(self._files)):
            info = self._info(shard)
            yield info.paths, self._rows(shard, 0, info.rows)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for _, rows in self.iter_shards():
            yield from rows


def open_embeddings(out: PathLike) -> EmbeddingView:
    """Open a finished extraction lazily (memory-mapped shards) for outputs larger than memory.

    >>> view = featzoo.open_embeddings('embeddings/')  # doctest: +SKIP
    >>> sims = view[0:1024] @ view[0]  # reads only the shards that hold rows 0..1023  # doctest: +SKIP
    """
    return EmbeddingView(out)


def read_embeddings(out: PathLike) -> Tuple[List[str], torch.Tensor]:
    """All rows of a finished extraction: (paths relative to the image folder, embeddings [N, D]) in row order.

    >>> paths, emb = featzoo.read_embeddings('embeddings/')  # doctest: +SKIP
    >>> len(paths) == emb.shape[0]  # doctest: +SKIP
    True
    """
    view = EmbeddingView(out)
    paths: List[str] = []
    parts = []
    for shard_paths, rows in view.iter_shards():
        paths.extend(shard_paths)
        parts.append(rows)
    embeddings = torch.cat(parts) if parts else torch.empty(0, view.dim, dtype=view.dtype)
    if embeddings.shape[0] != len(view):
        raise RuntimeError(f'{view.out!r}: the shards hold {embeddings.shape[0]} rows but the manifest says '
                           f'{len(view)}; rerun the extraction with --overwrite')
    return paths, embeddings

