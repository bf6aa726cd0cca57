"""The files that describe an extraction: ``job.json`` (written first, to resume) and ``manifest.json`` (written last).

``job.json``, the job record (format 2), is one JSON object::

    format_version  2
    job_digest      16 hex digits: sha256 of the canonical JSON of ``job``, stamped into every shard of the job
    num_shards      how many shards the image set is split into
    started         UTC time the job was first started (ISO 8601)
    update          only for a job that replaced an earlier one in the same folder because the image set changed
                    (same settings): {'new', 'changed', 'removed', 'kept'} file counts against the earlier listing
    job             everything that decides the stored numbers; a rerun continues the job only when its own
                    ``job`` is equal (``job_differences`` names what is not):
        model           registered name, or the module's class for a module passed in
        weights         {'source': 'pretrained'|'checkpoint'|'random'|'module', 'sha256': digest of the state_dict,
                         and 'name'/'hf_hub_id' or 'seed'}; a checkpoint's file path is left out (the file may move)
        data_config     the preprocessing: input_size, interpolation, mean, std, crop_pct, crop_mode
        normalize, dtype, fast_decode, autocast, shard_size, embedding_dim
        optimize        whether the model ran through optimize_for_inference (False for a module passed in)
        compile         whether torch.compile was added
        max_pixels      images above this many pixels are skipped (null: no limit)
        output          'head' when the rows are the head's output (image-text projection heads by default, or
                        pre_logits=False); absent for the pooled pre-logits, as every earlier version stored them
        images          {'root': absolute IMAGES folder, 'count': files, 'sha256': image_set_digest of the listing}

Arguments left out of ``job`` decide only how the work runs: batch_size, workers, device, quiet, overwrite.
``images.jsonl`` beside it is the listing the digest was taken over, one ``[path, size, mtime_ns, inode, ctime_ns]``
per line (see :mod:`featzoo.extract.files`). While an update runs, ``previous/<earlier job_digest>/`` holds the
earlier job's shards with copies of its job.json and listing, from which unchanged files take their rows
(:mod:`featzoo.extract.update`); it is deleted with the new manifest. ``manifest.json`` appears only when every
shard is finished (its ``output`` is 'head' or 'pre_logits', what the rows are; its ``inference`` is what
optimize_for_inference chose for the run that finished the job: ``plan`` (dtype, linear kernel...) and, on the CPU,
``cpu`` (vendor, instruction sets), null for a model run as built; shards of an earlier run on another CPU may come
from other kernels, equal to float32 rounding); readers take its presence as "complete". Every JSON file is written atomically (:mod:`featzoo.fileio`), ASCII with ``\\u``
escapes, so that any file name round-trips exactly.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, List, Mapping

from ..fileio import read_json_object
from ..fileio import write_json_atomic as _write_json_atomic

__all__ = ['FORMAT_VERSION', 'READABLE_VERSIONS', 'JOB_FILE', 'MANIFEST_FILE', 'LISTING_FILE', 'SHARD_DIR',
           'LOCK_FILE', 'write_json_atomic', 'read_json', 'job_digest', 'job_differences', 'jsonable']

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # format 1 outputs (no lock, no fingerprints in the listing) still read back
JOB_FILE = 'job.json'
MANIFEST_FILE = 'manifest.json'
LISTING_FILE = 'images.jsonl'
SHARD_DIR = 'shards'
LOCK_FILE = '.featzoo-extract.lock'


def jsonable(value: Any) -> Any:
    """Tuples to lists, recursively, so that a spec compares equal to itself after a JSON round trip.

    >>> jsonable({'input_size': (3, 64, 64)})
    {'input_size': [3, 64, 64]}
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def write_json_atomic(path: str, data: Any) -> None:
    """Write JSON atomically and durably (:func:`featzoo.fileio.write_json_atomic`); tuples become lists.

    >>> import tempfile; p = os.path.join(tempfile.mkdtemp(), 'x.json'); write_json_atomic(p, {'a': (1,)})
    >>> read_json(p)
    {'a': [1]}
    """
    _write_json_atomic(path, jsonable(data))


def read_json(path: str) -> Dict[str, Any]:
    """Read a JSON object; a damaged file is a RuntimeError naming it.

    >>> read_json(os.devnull)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    RuntimeError: '/dev/null' is not valid JSON (...); delete it or rerun with --overwrite
    """
    return read_json_object(path, repr(path), RuntimeError, '; delete it or rerun with --overwrite')


def job_digest(spec: Mapping[str, Any]) -> str:
    """A short sha256 of a job spec in canonical JSON, stamped into every shard of that job.

    >>> job_digest({'a': 1}) == job_digest({'a': 1}), len(job_digest({'a': 1}))
    (True, 16)
    """
    text = json.dumps(jsonable(spec), sort_keys=True, ensure_ascii=True, separators=(',', ':'))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else repr(value)


def job_differences(recorded: Mapping[str, Any], current: Mapping[str, Any], prefix: str = '') -> List[str]:
    """Human-readable differences between two job specs, one entry per differing key (nested keys dotted).

    >>> job_differences({'normalize': False, 'weights': {'sha256': 'a'}},
    ...                 {'normalize': True, 'weights': {'sha256': 'b'}})
    ['normalize: False before, True now', "weights.sha256: 'a' before, 'b' now"]
    """
    recorded, current = jsonable(recorded), jsonable(current)
    out = []
    for key in sorted(set(recorded) | set(current)):
        name = prefix + key
        before, now = recorded.get(key, '<absent>'), current.get(key, '<absent>')
        if isinstance(before, dict) and isinstance(now, dict):
            out.extend(job_differences(before, now, name + '.'))
        elif before != now:
            out.append(f'{name}: {_show(before)} before, {_show(now)} now')
    return out
