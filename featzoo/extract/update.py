"""Incremental extraction: a rerun on a folder that gained, lost or changed images embeds only what is new.

When the settings of a job are unchanged but its image set is not, the finished shards of the old job are moved
into ``OUT/previous/<old job digest>/`` together with a copy of the old job record and listing, and a new job is
started over the current listing. Every file of the new job whose fingerprint (:mod:`featzoo.extract.files`)
equals the one its row was computed from takes that row, bit for bit, from the moved shards (or its skip reason,
for a file that was skipped); only new and changed files are decoded and embedded. ``previous/`` is deleted once
the new job's manifest is written.

Each step leaves a folder the next run can continue from (SIGKILL at any moment included):

1. the manifest is deleted (it would promise a complete folder while shards move);
2. ``previous/<old>/job.json`` and ``images.jsonl`` are written (atomically), then the old shards are renamed into
   ``previous/<old>/`` one by one; a run killed here still has the old job.json, sees the same change again and
   finishes the move;
3. the new listing and then the new job.json are written: from here on the new job is the one resumed, and its
   pending shards keep taking rows from ``previous/``.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from collections import defaultdict
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from safetensors import safe_open

from ..fileio import fsync_dir, remove_temporaries
from .files import Fingerprint, ImageFile, changed_paths, read_listing, write_listing
from .manifest import JOB_FILE, LISTING_FILE, MANIFEST_FILE, SHARD_DIR, job_differences, read_json, write_json_atomic
from .shards import TENSOR_NAME, read_shard_info

__all__ = ['PREVIOUS_DIR', 'Reuse', 'ImageSetUpdate', 'move_to_previous', 'find_reusable', 'load_reused_rows',
           'remove_previous', 'format_count']

PREVIOUS_DIR = 'previous'
# What a file of the new job takes from an earlier one: (shard file relative to OUT, row) or (None, skip reason).
Reuse = Tuple[Optional[str], Any]
ImageSetUpdate = Dict[str, int]


def format_count(n: int) -> str:
    """A count with thousands separators, as people read it.

    >>> format_count(10412)
    '10,412'
    """
    return f'{n:,}'


def describe_update(update: Mapping[str, int]) -> str:
    """The line that says what an incremental run did.

    >>> describe_update({'new': 3, 'changed': 1, 'removed': 2, 'kept': 10412})
    '3 new, 1 changed, 2 removed; 10,412 kept'
    """
    return (f"{format_count(update['new'])} new, {format_count(update['changed'])} changed, "
            f"{format_count(update['removed'])} removed; {format_count(update['kept'])} kept")


def move_to_previous(out: str, recorded: Mapping[str, Any], files: Sequence[ImageFile]) -> ImageSetUpdate:
    """Steps 1 and 2 of the module docstring for the job ``recorded`` (its job.json) in ``out``; returns the counts
    of new, changed, removed and kept files between its listing and ``files``. The caller holds OUT's lock.

    >>> move_to_previous  # doctest: +ELLIPSIS
    <function move_to_previous at ...>
    """
    old_digest = str(recorded['job_digest'])
    target = os.path.join(out, PREVIOUS_DIR, old_digest)
    kept_listing = os.path.join(target, LISTING_FILE)
    # A move that was killed may have gone on to write the new job's listing over the old one (step 3): the copy
    # in previous/ (written first, atomically) is then the only true record of what the old rows were made from.
    listing = kept_listing if os.path.isfile(kept_listing) else os.path.join(out, LISTING_FILE)
    old_files = read_listing(listing) if os.path.isfile(listing) else []
    new, removed, changed = changed_paths(old_files, files)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(out, MANIFEST_FILE))
    os.makedirs(target, exist_ok=True)
    remove_temporaries(target)
    # The record and listing first: a shard in previous/ is usable only with the fingerprints it was made from.
    if not os.path.isfile(kept_listing):
        write_listing(kept_listing, old_files)
    write_json_atomic(os.path.join(target, JOB_FILE), recorded)
    shard_dir = os.path.join(out, SHARD_DIR)
    if os.path.isdir(shard_dir):
        for name in sorted(os.listdir(shard_dir)):
            info = read_shard_info(os.path.join(shard_dir, name))
            if info is not None and info.job == old_digest:
                os.replace(os.path.join(shard_dir, name), os.path.join(target, name))
        fsync_dir(shard_dir)
        fsync_dir(target)
    return {'new': len(new), 'changed': len(changed), 'removed': len(removed),
            'kept': len(files) - len(new) - len(changed)}


def _settings(job: Mapping[str, Any]) -> Dict[str, Any]:
    """A job without its image set's fingerprint: what must be equal for a row to be reused (the image folder
    itself included, so that rows never travel between two folders that happen to share file names)."""
    settings = {k: v for k, v in job.items() if k != 'images'}
    settings['images_root'] = (job.get('images') or {}).get('root')
    return settings


def find_reusable(out: str, job: Mapping[str, Any], files: Sequence[ImageFile],
                  wanted: Sequence[int]) -> Dict[int, Reuse]:
    """For each index in ``wanted`` (into ``files``) whose row an earlier job in ``out/previous`` computed from the
    file as it is now (same fingerprint, same settings), where to take that row or skip reason from.

    >>> find_reusable('/nonexistent', {}, [], [])
    {}
    """
    root = os.path.join(out, PREVIOUS_DIR)
    if not wanted or not os.path.isdir(root):
        return {}
    settings = _settings(job)
    found: Dict[str, Tuple[Fingerprint, Reuse]] = {}
    for digest in sorted(os.listdir(root)):
        folder = os.path.join(root, digest)
        job_path, listing_path = os.path.join(folder, JOB_FILE), os.path.join(folder, LISTING_FILE)
        if not (os.path.isfile(job_path) and os.path.isfile(listing_path)):
            continue
        try:
            recorded = read_json(job_path)
        except (OSError, RuntimeError):
            continue  # a damaged copy only costs recomputing its rows
        if recorded.get('job_digest') != digest or job_differences(_settings(recorded.get('job', {})), settings):
            continue
        prints = {f.path: f.fingerprint for f in read_listing(listing_path)}
        for name in sorted(os.listdir(folder)):
            info = read_shard_info(os.path.join(folder, name))
            if info is None or info.job != digest:
                continue
            rel = f'{PREVIOUS_DIR}/{digest}/{name}'
            for row, path in enumerate(info.paths):
                if path in prints:
                    found[path] = (prints[path], (rel, row))
            for skip in info.skipped:
                if skip['path'] in prints:
                    found[skip['path']] = (prints[skip['path']], (None, skip['reason']))
    reuse: Dict[int, Reuse] = {}
    for index in wanted:
        hit = found.get(files[index].path)
        if hit is not None and hit[0] == files[index].fingerprint:
            reuse[index] = hit[1]
    return reuse


def load_reused_rows(out: str, reuse: Mapping[int, Reuse], indices: Sequence[int], dim: int,
                     dtype: torch.dtype) -> Tuple[Dict[int, torch.Tensor], Dict[int, str]]:
    """The rows and skip reasons that ``reuse`` promises for ``indices``, read once per shard file; a shard that
    holds rows of another width or type (never written by a job with equal settings) is an error.

    >>> load_reused_rows('out', {}, [0, 1], 4, torch.float32)
    ({}, {})
    """
    rows: Dict[int, torch.Tensor] = {}
    skipped: Dict[int, str] = {}
    by_file: Dict[str, List[Tuple[int, int]]] = defaultdict(list)
    for index in indices:
        source = reuse.get(index)
        if source is None:
            continue
        if source[0] is None:
            skipped[index] = source[1]
        else:
            by_file[source[0]].append((index, source[1]))
    for rel, wanted in by_file.items():
        path = os.path.join(out, rel)
        with safe_open(path, framework='pt') as fh:
            table = fh.get_tensor(TENSOR_NAME)
        if table.ndim != 2 or table.shape[1] != dim or table.dtype != dtype:
            raise RuntimeError(f'{path!r} holds rows of shape {tuple(table.shape)} and type {table.dtype}, not '
                               f'[*, {dim}] {dtype}; delete {os.path.dirname(path)!r} or rerun with --overwrite')
        for index, row in wanted:
            rows[index] = table[row].clone()
    return rows, skipped


def remove_previous(out: str) -> None:
    """Delete ``out/previous`` once the job that took rows from it is complete (or is started over).

    >>> remove_previous('/nonexistent')
    """
    shutil.rmtree(os.path.join(out, PREVIOUS_DIR), ignore_errors=True)
