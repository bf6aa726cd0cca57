"""featzoo's own safetensors reader: a strict header check, then tensors read straight into aligned memory.

The header is checked completely before a single tensor byte is allocated, and refused exactly where the
``safetensors`` library refuses a file: a header over 100 MB or past the end of the file, invalid UTF-8 or JSON
(serde_json's dialect: no NaN or infinite numbers, no lone surrogate escapes, no BOM, at most 127 levels of
nesting), a malformed entry, an unknown dtype, a shape whose size overflows 64 bits, a byte range that does not
match its dtype and shape, and ranges that overlap, leave gaps, or do not end exactly at the end of the file.
Because the ranges must tile the data section, the tensors of an accepted file never take more memory than the
file's size. ``tests/test_properties.py`` mutates real headers and compares this verdict with the library's.

>>> import tempfile, safetensors.torch
>>> path = os.path.join(tempfile.mkdtemp(), 'w.safetensors')
>>> safetensors.torch.save_file({'w': torch.ones(2, 3)}, path)
>>> read_safetensors(path)['w'].shape
torch.Size([2, 3])
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch

__all__ = ['SafetensorsHeader', 'TensorEntry', 'MAX_HEADER_BYTES', 'DTYPE_BITS', 'read_header', 'parse_header',
           'safetensors_keys', 'read_safetensors', 'PlannedRead']

MAX_HEADER_BYTES = 100_000_000
_USIZE_MAX = 2 ** 64 - 1
_MAX_DEPTH = 127  # serde_json refuses the 128th level of nesting
METADATA_KEY = '__metadata__'

# Every dtype the safetensors format names, with its size in bits (F4 and F6 pack several values per byte).
DTYPE_BITS = {
    'BOOL': 8, 'F4': 4, 'F6_E2M3': 6, 'F6_E3M2': 6, 'U8': 8, 'I8': 8, 'F8_E5M2': 8, 'F8_E4M3': 8, 'F8_E8M0': 8,
    'F8_E4M3FNUZ': 8, 'F8_E5M2FNUZ': 8, 'I16': 16, 'U16': 16, 'F16': 16, 'BF16': 16, 'I32': 32, 'U32': 32,
    'F32': 32, 'C64': 64, 'F64': 64, 'I64': 64, 'U64': 64,
}
# The codes read here directly; any other (valid) code is converted by the safetensors library.
_TORCH_DTYPES = {code: getattr(torch, name) for code, name in (
    ('F64', 'float64'), ('F32', 'float32'), ('F16', 'float16'), ('BF16', 'bfloat16'), ('I64', 'int64'),
    ('I32', 'int32'), ('I16', 'int16'), ('I8', 'int8'), ('U8', 'uint8'), ('BOOL', 'bool'), ('U16', 'uint16'),
    ('U32', 'uint32'), ('U64', 'uint64'), ('F8_E4M3', 'float8_e4m3fn'), ('F8_E5M2', 'float8_e5m2'))
    if hasattr(torch, name)}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of the header: its dtype code, shape and byte range within the data section.

    >>> TensorEntry('F32', (2,), 0, 8).nbytes
    8
    """

    dtype: str
    shape: Tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class SafetensorsHeader:
    """A checked header: the tensors (in file order), the free-form metadata, and where the data starts.

    >>> SafetensorsHeader({}, None, 16, 16).data_size
    0
    """

    tensors: Dict[str, TensorEntry]
    metadata: Optional[Dict[str, str]]
    data_start: int
    file_size: int

    @property
    def data_size(self) -> int:
        return self.file_size - self.data_start


class _Invalid(Exception):
    """A header the format forbids; the caller words it with the file name."""


class _Pairs(list):
    """A JSON object as its (key, value) pairs, duplicates kept: the format allows a repeated tensor name (the last
    wins) but not a repeated field inside one tensor's entry."""


class _Negative:
    """A negative JSON integer: valid inside fields the format ignores, never as a size or an offset."""


def _parse_int(text: str) -> Any:
    if math.isinf(float(text)):
        raise _Invalid(f'the number {text[:20]}... is out of range')
    return _Negative() if text.startswith('-') else int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _Invalid(f'the number {text[:20]} is out of range')
    return value


def _parse_constant(text: str) -> Any:
    raise _Invalid(f'{text} is not JSON')


# Python's JSON reads '-0' as the integer 0 where serde_json reads a float; only then are integers parsed one by
# one (slower); lone surrogates can only come from \u escapes, so strings are checked only when one is there.
_NEGATIVE_ZERO = re.compile(r'-0(?![0-9.eE])')
_SURROGATE_ESCAPE = re.compile(r'\\u[dD][89a-fA-F]')
_FLOAT_MAX = sys.float_info.max


def _check_value(value: Any, depth: int, strings: bool) -> None:
    """Nesting depth, integers that overflow a double, and (with ``strings``) strings that UTF-8 cannot hold,
    anywhere in ``value`` (a field the format ignores, or the whole header)."""
    if isinstance(value, list):  # objects (_Pairs) and arrays count, scalars do not
        if depth > _MAX_DEPTH:
            raise _Invalid(f'the header nests deeper than {_MAX_DEPTH} levels')
        if isinstance(value, _Pairs):
            for key, item in value:
                if strings:
                    _check_value(key, depth, strings)
                _check_value(item, depth + 1, strings)
        else:
            for item in value:
                _check_value(item, depth + 1, strings)
    elif isinstance(value, int) and not isinstance(value, bool):
        if abs(value) > _FLOAT_MAX:
            raise _Invalid(f'the number {str(value)[:20]}... is out of range')
    elif strings and isinstance(value, str):
        try:
            value.encode('utf-8')
        except UnicodeEncodeError:
            raise _Invalid(f'the header holds a lone surrogate escape in {value!r}') from None


def _usize(value: Any, what: str) -> int:
    if type(value) is not int or not 0 <= value <= _USIZE_MAX:  # not bool, not _Negative
        raise _Invalid(f'{what} must be an integer in [0, 2**64), got {value!r}')
    return value


def _dtype(value: Any, name: str) -> str:
    if isinstance(value, _Pairs):  # serde also takes a unit variant written as {"F32": null}
        if len(value) != 1 or value[0][1] is not None:
            raise _Invalid(f'tensor {name!r} has a malformed dtype {value!r}')
        value = value[0][0]
    if not isinstance(value, str) or value not in DTYPE_BITS:
        raise _Invalid(f'tensor {name!r} has dtype {value!r}, which is none of {", ".join(DTYPE_BITS)}')
    return value


def _entry(name: str, value: Any) -> Tuple[str, Any, Any]:
    if isinstance(value, _Pairs):
        fields: Dict[str, Any] = {}
        for key, item in value:
            if key in ('dtype', 'shape', 'data_offsets'):
                if key in fields:
                    raise _Invalid(f'tensor {name!r} gives {key!r} twice')
                fields[key] = item
            else:  # ignored, but it must still be JSON that serde_json reads
                _check_value(item, 3, False)
        missing = [k for k in ('dtype', 'shape', 'data_offsets') if k not in fields]
        if missing:
            raise _Invalid(f'tensor {name!r} has no {missing[0]!r}')
        return fields['dtype'], fields['shape'], fields['data_offsets']
    if isinstance(value, list) and not isinstance(value, _Pairs) and len(value) == 3:
        return value[0], value[1], value[2]
    raise _Invalid(f'tensor {name!r} has a malformed entry {value!r}')


def parse_header(data: bytes, file_size: int) -> SafetensorsHeader:
    """Check a header (the JSON bytes after the 8-byte length) against a file of ``file_size`` bytes; raises
    ValueError saying what is wrong.

    >>> h = parse_header(b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', 8 + 54 + 8)
    >>> h.tensors['w'].shape
    (2,)
    """
    try:
        return _parse_header(data, file_size)
    except _Invalid as exc:
        raise ValueError(str(exc)) from None


def _parse_header(data: bytes, file_size: int) -> SafetensorsHeader:
    try:
        text = data.decode('utf-8')
    except UnicodeDecodeError as exc:
        raise _Invalid(f'the header is not UTF-8 ({exc})') from None
    hooks: Dict[str, Any] = dict(object_pairs_hook=_Pairs, parse_float=_parse_float, parse_constant=_parse_constant)
    if _NEGATIVE_ZERO.search(text):
        hooks['parse_int'] = _parse_int
    try:
        root = json.loads(text, **hooks)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise _Invalid(f'the header is not JSON ({exc})') from None
    if not isinstance(root, _Pairs):
        raise _Invalid('the header is not a JSON object')
    if _SURROGATE_ESCAPE.search(text):
        _check_value(root, 1, True)
    metadata: Optional[Dict[str, str]] = None
    seen_metadata = False
    raw: Dict[str, Any] = {}
    for key, value in root:
        if key == METADATA_KEY:
            if seen_metadata:
                raise _Invalid(f'the header gives {METADATA_KEY!r} twice')
            seen_metadata = True
            if value is not None:
                if not isinstance(value, _Pairs) or not all(isinstance(v, str) for _, v in value):
                    raise _Invalid(f'{METADATA_KEY} must map strings to strings, got {value!r}'[:200])
                metadata = dict(value)
        else:
            raw[key] = value  # a repeated name: the last entry wins, as in the library
    entries = []
    for name, value in raw.items():
        dtype, shape, offsets = _entry(name, value)
        dtype = _dtype(dtype, name)
        if not isinstance(shape, list) or isinstance(shape, _Pairs):
            raise _Invalid(f'tensor {name!r} has shape {shape!r}, not a list of sizes')
        shape = tuple(_usize(d, f'each size of tensor {name!r}') for d in shape)
        if not isinstance(offsets, list) or isinstance(offsets, _Pairs) or len(offsets) != 2:
            raise _Invalid(f'tensor {name!r} has data_offsets {offsets!r}, not [begin, end]')
        begin, end = (_usize(o, f'data_offsets of tensor {name!r}') for o in offsets)
        entries.append((name, dtype, shape, begin, end))
    entries.sort(key=lambda e: (e[3], e[4]))
    position = 0
    tensors: Dict[str, TensorEntry] = {}
    for name, dtype, shape, begin, end in entries:
        if begin != position or end < begin:
            raise _Invalid(f'tensor {name!r} claims bytes {begin}..{end}, but the previous tensor ends at byte '
                           f'{position} (tensors must tile the data section without overlaps or gaps)')
        position = end
        count = 1
        for size in shape:
            count *= size
            if count > _USIZE_MAX:
                raise _Invalid(f'tensor {name!r} has shape {list(shape)}, whose size overflows 64 bits')
        bits = count * DTYPE_BITS[dtype]
        if bits > _USIZE_MAX:
            raise _Invalid(f'tensor {name!r} has shape {list(shape)}, whose size overflows 64 bits')
        if bits % 8:
            raise _Invalid(f'tensor {name!r} ({dtype}{list(shape)}) does not end on a byte boundary')
        if end - begin != bits // 8:
            raise _Invalid(f'tensor {name!r} claims {end - begin} bytes for {bits // 8} bytes of '
                           f'{dtype}{list(shape)}')
        tensors[name] = TensorEntry(dtype, shape, begin, end)
    data_start = 8 + len(data)
    available = file_size - data_start
    if position > available:
        name = next(n for n, e in tensors.items() if e.end > available)
        raise _Invalid(f'tensor {name!r} claims bytes {tensors[name].begin}..{tensors[name].end} of a data section '
                       f'that holds only {available} bytes')
    if position < available:
        raise _Invalid(f'{available - position} bytes after the last tensor belong to none (the tensors cover '
                       f'{position} of {available} bytes of data)')
    return SafetensorsHeader(tensors, metadata, data_start, file_size)


def _corrupt(path: str, detail: str) -> RuntimeError:
    return RuntimeError(f'cannot read safetensors file {path!r} (corrupt or truncated?): {detail}')


def _read_header_from(fh: Any, path: str) -> SafetensorsHeader:
    size = os.fstat(fh.fileno()).st_size
    head = fh.read(8)
    if len(head) < 8:
        raise _corrupt(path, f'{size} bytes is too short for a header')
    length = int.from_bytes(head, 'little')
    if length > MAX_HEADER_BYTES:
        raise _corrupt(path, f'the header claims {length} bytes, more than the format allows ({MAX_HEADER_BYTES})')
    if length > size - 8:
        raise _corrupt(path, f'the header claims {length} bytes but the file has {size - 8} after its length')
    data = fh.read(length)
    if len(data) != length:
        raise _corrupt(path, 'the file ended inside its header')
    try:
        return _parse_header(data, size)
    except _Invalid as exc:
        raise _corrupt(path, str(exc)) from None


def read_header(path: str) -> SafetensorsHeader:
    """The checked header of a safetensors file (nothing else is read); RuntimeError naming the file and the
    problem when the library would refuse it.

    >>> import tempfile, safetensors.torch
    >>> p = os.path.join(tempfile.mkdtemp(), 'w.safetensors'); safetensors.torch.save_file({'w': torch.ones(1)}, p)
    >>> list(read_header(p).tensors)
    ['w']
    """
    with open(path, 'rb') as fh:
        return _read_header_from(fh, path)


def safetensors_keys(path: str) -> List[str]:
    """Tensor names of a safetensors file, in file order (header only, fully checked).

    >>> import tempfile, safetensors.torch
    >>> p = os.path.join(tempfile.mkdtemp(), 'w.safetensors'); safetensors.torch.save_file({'a': torch.ones(1)}, p)
    >>> safetensors_keys(p)
    ['a']
    """
    return list(read_header(path).tensors)


def _aligned(tensor: torch.Tensor) -> torch.Tensor:
    # Parameters kept in memory at a file's 8-byte offsets make some CPU kernels take other code paths and round
    # differently from the same weights in torch-allocated memory; a copy to a 64-byte aligned buffer does not.
    return tensor if tensor.data_ptr() % 64 == 0 else tensor.clone()


class PlannedRead:
    """The tensors of (the ``keys`` subset of) a safetensors file, allocated, with the reads that fill them planned.

    Planning (header check, allocation, buffer views) is Python and runs on the caller's thread; the reads are
    ``os.preadv`` system calls that give up the GIL, so they can run on other threads while the caller goes on
    building a model. Each tensor is read once from the page cache into its own torch allocation: no intermediate
    copy, 64-byte aligned memory, and resident memory of exactly the tensors read. Keys are the model's: a DDP
    ``module.`` prefix is removed.

    >>> import tempfile, safetensors.torch
    >>> p = os.path.join(tempfile.mkdtemp(), 'w.safetensors'); safetensors.torch.save_file({'a': torch.ones(2)}, p)
    >>> plan = PlannedRead(p, None); plan.read_part(0); plan.close(); plan.state['a']
    tensor([1., 1.])
    """

    def __init__(self, path: str, keys: Optional[Iterable[str]]) -> None:
        self.path = path
        self.state: Dict[str, torch.Tensor] = {}
        self.parts: List[List[Any]] = []  # per thread: [(file offset, [buffer views back to back]), ...]
        self.file = open(path, 'rb', buffering=0)
        try:
            header = _read_header_from(self.file, path)
            tensors = header.tensors
            strip = bool(tensors) and all(k.startswith('module.') for k in tensors)
            by_key = {(k[len('module.'):] if strip else k): k for k in tensors}
            names = list(by_key) if keys is None else [k for k in dict.fromkeys(keys) if k in by_key]
            entries = [tensors[by_key[k]] for k in names]
            if sys.byteorder != 'little' or any(e.dtype not in _TORCH_DTYPES for e in entries):
                # a dtype this torch build cannot name, or a big-endian host: the safetensors library converts
                from safetensors import safe_open
                try:
                    with safe_open(path, framework='pt', device='cpu') as lib:
                        self.state = {name: _aligned(lib.get_tensor(by_key[name])) for name in names}
                except Exception as exc:  # safetensors raises its own error type
                    raise _corrupt(path, str(exc)) from exc
                return
            jobs = []
            for name, entry in zip(names, entries):
                buffer = torch.empty(entry.nbytes, dtype=torch.uint8)
                jobs.append((header.data_start + entry.begin, buffer))
                self.state[name] = buffer.view(_TORCH_DTYPES[entry.dtype]).reshape(entry.shape)
            self.parts = [_preadv_calls(part) for part in _split_for_threads(jobs)]
        except BaseException:
            self.close()
            raise

    def corrupt(self, detail: str) -> RuntimeError:
        return _corrupt(self.path, detail)

    def read_part(self, index: int) -> None:
        """Run the reads of one part (any thread; the GIL is given up inside each system call)."""
        fd = self.file.fileno()
        positional = hasattr(os, 'preadv')
        for position, views in self.parts[index]:
            views = list(views)
            while views:  # a short read (rare; over 2 GB per call on Linux) continues where it stopped
                if positional:
                    got = os.preadv(fd, views, position)
                else:
                    self.file.seek(position)
                    got = self.file.readinto(views[0])
                if not got:
                    raise self.corrupt('the file ended inside a tensor')
                position += got
                while views and got >= len(views[0]):
                    got -= len(views[0])
                    views.pop(0)
                if got:
                    views[0] = views[0][got:]

    def close(self) -> None:
        self.file.close()


_IOV_MAX = 1024  # buffers per preadv call (Linux's IOV_MAX)
_PARALLEL_READ_BYTES = 32 << 20


def _split_for_threads(jobs: List[Any]) -> List[List[Any]]:
    """Jobs (file offset, buffer) in file order, in two halves by bytes for a large file on a multi-core host.

    Copying from the page cache into fresh pages is bound by one core (page faults and memcpy), so a large file
    is read by two threads, each with its own half of the bytes.
    """
    jobs = sorted(jobs, key=lambda job: job[0])
    total = sum(buffer.numel() for _, buffer in jobs)
    if total < _PARALLEL_READ_BYTES or (os.cpu_count() or 1) < 2 or not hasattr(os, 'preadv'):
        return [jobs]
    acc = 0
    for i, (_, buffer) in enumerate(jobs):
        acc += buffer.numel()
        if acc >= total // 2:
            return [jobs[:i + 1], jobs[i + 1:]]
    return [jobs]


def _preadv_calls(jobs: List[Any]) -> List[Any]:
    """Group jobs sorted by offset into read calls: one per run of back-to-back tensors (at most ``_IOV_MAX``).

    One scattering call per run gives up the GIL once per run rather than once per tensor (a thread that keeps
    taking the GIL back waits behind one that runs Python, e.g. a model being built meanwhile).
    """
    calls: List[Any] = []
    end = -1
    for offset, buffer in jobs:
        view = memoryview(buffer.numpy())
        if not len(view):
            continue
        if calls and offset == end and len(calls[-1][1]) < _IOV_MAX:
            calls[-1][1].append(view)
        else:
            calls.append((offset, [view]))
        end = offset + len(view)
    return calls


def read_safetensors(path: str, keys: Optional[Iterable[str]] = None) -> Dict[str, torch.Tensor]:
    """Read (the ``keys`` subset of) a safetensors file straight into aligned tensors (see :class:`PlannedRead`).

    >>> import tempfile, safetensors.torch
    >>> p = os.path.join(tempfile.mkdtemp(), 'w.safetensors'); safetensors.torch.save_file({'a': torch.ones(1)}, p)
    >>> read_safetensors(p)
    {'a': tensor([1.])}
    """
    plan = PlannedRead(path, keys)
    try:
        if len(plan.parts) > 1:
            from concurrent.futures import ThreadPoolExecutor
            with ThreadPoolExecutor(len(plan.parts) - 1) as pool:
                others = [pool.submit(plan.read_part, i) for i in range(1, len(plan.parts))]
                plan.read_part(0)
                for other in others:
                    other.result()
        elif plan.parts:
            plan.read_part(0)
    finally:
        plan.close()
    return plan.state
