"""The files that describe an extraction: ``job.json`` (written first, to resume) and ``manifest.json`` (written last).

``job.json`` pins everything that changes the embeddings (model, weights digest, preprocessing, options, the image
set and the shard plan), so a rerun can tell whether it continues the same job. ``manifest.json`` appears only when
every shard is finished; readers take its presence as "complete".
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, List, Mapping

__all__ = ['FORMAT_VERSION', 'JOB_FILE', 'MANIFEST_FILE', 'LISTING_FILE', 'SHARD_DIR', 'write_json_atomic',
           'read_json', 'job_digest', 'job_differences', 'jsonable']

FORMAT_VERSION = 1
JOB_FILE = 'job.json'
MANIFEST_FILE = 'manifest.json'
LISTING_FILE = 'images.jsonl'
SHARD_DIR = 'shards'


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
    """Write JSON to a temporary file and rename it over ``path``: readers never see half a file.

    >>> import tempfile; p = os.path.join(tempfile.mkdtemp(), 'x.json'); write_json_atomic(p, {'a': 1})
    >>> read_json(p)
    {'a': 1}
    """
    from .shards import new_temporary
    tmp = new_temporary(path)
    try:
        with open(tmp, 'w', encoding='utf-8') as fh:
            json.dump(jsonable(data), fh, indent=2, ensure_ascii=False)
            fh.write('\n')
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_json(path: str) -> Dict[str, Any]:
    """Read a JSON object; a damaged file is a RuntimeError naming it.

    >>> read_json(os.devnull)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    RuntimeError: '/dev/null' is not valid JSON (...); delete it or rerun with --overwrite
    """
    try:
        with open(path, encoding='utf-8') as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise RuntimeError(f'{path!r} is not valid JSON ({exc}); delete it or rerun with --overwrite') from None
    if not isinstance(data, dict):
        raise RuntimeError(f'{path!r} does not hold a JSON object; delete it or rerun with --overwrite')
    return data


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
