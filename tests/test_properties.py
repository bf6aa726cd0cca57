"""Property tests over the registry: random valid requests agree with their feature_info and with the static
capabilities; random invalid requests fail with one of the clear errors; concurrent use is safe.

Examples are bounded (small models, inputs of 1-3 times the model's stride) so the file runs in well under a minute.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from typing import Any, Dict, List, Optional, Tuple

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import featzoo
from featzoo import registry
from featzoo.factory import FEATURE_CLS_ALL

CLEAR_ERRORS = (ValueError, TypeError, KeyError, FileNotFoundError, RuntimeError)
# Building dominates each example: keep to variants that initialize in about a second on one core.
MAX_PARAMS = 30_000_000
ALL = featzoo.list_models()


def _num_params(name: str) -> int:
    return int(registry.get_arch_entry(name).get('num_params') or 0)


def _pool() -> List[str]:
    small = [n for n in ALL if _num_params(n) <= MAX_PARAMS]
    # every family takes part, even one whose smallest variant is over the bound
    smallest = [min(featzoo.list_models(module=f), key=_num_params) for f in featzoo.list_modules()]
    return sorted(set(small) | set(smallest), key=ALL.index)


POOL = _pool()
COMMON = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _default_indices(name: str, num_levels: int) -> Tuple[int, ...]:
    default = registry.get_arch_entry(name).get('default_out_indices')
    if default is None:
        return tuple(range(num_levels))
    if isinstance(default, int):
        return tuple(range(num_levels - default, num_levels))
    return tuple(sorted(i % num_levels for i in default))


def make_request(name: str, stride: Optional[int] = None, feature_cls: Optional[str] = None, out_indices: Any = None,
                 in_chans: int = 3, output_fmt: str = 'NCHW', size: Optional[Tuple[int, int]] = None) -> Dict[str, Any]:
    """A valid create_model request and what it must produce (levels read from the static capabilities)."""
    caps = featzoo.model_capabilities(name)
    natural = max(caps.output_strides)
    stride = stride or natural
    levels = caps.feature_levels_by_stride[stride]
    n = len(levels)
    if out_indices is None:
        expected = _default_indices(name, n)
    elif isinstance(out_indices, int):
        expected = tuple(range(n - out_indices, n))
    else:
        expected = tuple(sorted(i % n for i in out_indices))
    return dict(
        name=name,
        kwargs=dict(features_only=True, out_indices=out_indices, output_stride=None if stride == natural else stride,
                    feature_cls=feature_cls or caps.default_feature_cls, in_chans=in_chans, output_fmt=output_fmt),
        levels=[levels[i] for i in expected],
        size=size or (natural * 2, natural * 2),
    )


@st.composite
def valid_requests(draw) -> Dict[str, Any]:
    name = draw(st.sampled_from(POOL))
    caps = featzoo.model_capabilities(name)
    stride = draw(st.sampled_from(caps.output_strides))
    n = len(caps.feature_levels_by_stride[stride])
    form = draw(st.sampled_from(('default', 'int', 'sequence')))
    out_indices: Any = None
    if form == 'int':
        out_indices = draw(st.integers(1, n))
    elif form == 'sequence':
        chosen = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=min(n, 4), unique=True))
        negative = draw(st.lists(st.booleans(), min_size=len(chosen), max_size=len(chosen)))
        out_indices = tuple(i - n if neg else i for i, neg in zip(chosen, negative))
        if draw(st.booleans()):
            out_indices = list(out_indices)
    # multiples of the model's largest stride (every level's reduction exact on both sides) and of the input
    # multiple its family declares (bat_resnext26ts takes multiples of 256), at least its minimum side
    spec = featzoo.registry.family_spec(caps.family)
    unit = math.lcm(max(caps.output_strides), spec.input_multiple_for(name))
    first = max(1, -(-spec.min_input_size_for(name) // unit))
    extra = 2 if unit <= 64 else 0  # a coarse grid is large already at its first multiple
    size = (unit * draw(st.integers(first, first + extra)), unit * draw(st.integers(first, first + extra)))
    return make_request(name, stride, draw(st.sampled_from(caps.feature_cls)), out_indices,
                        draw(st.integers(1, 4)), draw(st.sampled_from(('NCHW', 'NHWC'))), size)


@settings(max_examples=int(os.environ.get('FEATZOO_PROPERTY_EXAMPLES', 16)), **COMMON)
@given(request=valid_requests())
# a regression case: FX once failed to trace the dilated shortcut of 'd'/'t' ResNets (size-dependent padding)
@example(request=make_request('resnet10t', stride=16, feature_cls='fx', out_indices=(-1, 1)))
def test_feature_info_matches_outputs_and_capabilities(request):
    kwargs = request['kwargs']
    torch.manual_seed(0)
    model = featzoo.create_model(request['name'], **kwargs).eval()
    info = model.feature_info
    assert info.channels() == [level['num_chs'] for level in request['levels']], request
    assert info.reduction() == [level['reduction'] for level in request['levels']], request
    height, width = request['size']
    x = torch.randn(1, kwargs['in_chans'], height, width)
    with torch.no_grad():
        out = model(x)
    feats = list(out.values()) if isinstance(out, dict) else list(out)
    assert len(feats) == len(request['levels']), request
    nhwc = kwargs['output_fmt'] == 'NHWC'
    for i, (feat, chs, red) in enumerate(zip(feats, info.channels(), info.reduction())):
        assert feat.ndim == 4, (i, tuple(feat.shape), request)
        c, h, w = (feat.shape[3], feat.shape[1], feat.shape[2]) if nhwc else tuple(feat.shape[1:])
        assert c == chs, (i, tuple(feat.shape), request)
        assert (math.ceil(height / h), math.ceil(width / w)) == (red, red), (i, tuple(feat.shape), request)


# ---- invalid requests ----------------------------------------------------------------------------------------------

_MUTATIONS = ('out_indices_high', 'out_indices_low', 'out_indices_empty', 'out_indices_duplicate', 'out_indices_int',
              'out_indices_type', 'output_stride', 'feature_cls', 'in_chans', 'num_classes', 'drop_rate', 'name',
              'tag')


@st.composite
def invalid_requests(draw) -> Tuple[str, Dict[str, Any], str]:
    """A model name, create_model arguments with exactly one mistake, and the word the error must name."""
    name = draw(st.sampled_from(ALL))
    caps = featzoo.model_capabilities(name)
    n = len(caps.feature_levels)
    kind = draw(st.sampled_from(_MUTATIONS))
    base: Dict[str, Any] = dict(features_only=True)
    if kind == 'out_indices_high':
        return name, dict(base, out_indices=(draw(st.integers(n, n + 8)),)), 'out_indices'
    if kind == 'out_indices_low':
        return name, dict(base, out_indices=(0, draw(st.integers(-n - 8, -n - 1)))), 'out_indices'
    if kind == 'out_indices_empty':
        return name, dict(base, out_indices=draw(st.sampled_from(((), [])))), 'out_indices'
    if kind == 'out_indices_duplicate':
        i = draw(st.integers(0, n - 1))
        return name, dict(base, out_indices=(i, draw(st.sampled_from((i, i - n))))), 'out_indices'
    if kind == 'out_indices_int':
        return name, dict(base, out_indices=draw(st.one_of(st.integers(-3, 0), st.integers(n + 1, n + 8)))), \
            'out_indices'
    if kind == 'out_indices_type':
        bad = draw(st.sampled_from(('0', 1.5, (0.0,), (None,), True, ('a', 1))))
        return name, dict(base, out_indices=bad), 'out_indices'
    if kind == 'output_stride':
        bad = draw(st.sampled_from([s for s in (1, 2, 4, 6, 8, 12, 14, 16, 24, 32, 64) if s not in caps.output_strides]
                                   + ['16', 8.0, True]))
        return name, dict(output_stride=bad), 'output_stride'
    if kind == 'feature_cls':
        bad = draw(st.sampled_from(sorted(set(FEATURE_CLS_ALL) - set(caps.feature_cls)) + ['pyramid', '', 'lists']))
        return name, dict(base, feature_cls=bad), 'feature_cls'
    if kind == 'in_chans':
        return name, dict(in_chans=draw(st.one_of(st.integers(-4, 0), st.sampled_from((1.0, '3', True))))), 'in_chans'
    if kind == 'num_classes':
        return name, dict(num_classes=draw(st.one_of(st.integers(-100, -1), st.sampled_from((10.0, '10'))))), \
            'num_classes'
    if kind == 'drop_rate':
        return name, dict(drop_rate=draw(st.sampled_from((-0.1, 1.0, 2, '0.1')))), 'drop_rate'
    if kind == 'name':
        typo = draw(st.sampled_from(('x', '_', '0'))) + name[1:]
        if typo in ALL:
            typo = name + 'zz'
        return typo, {}, typo
    tag = draw(st.text(alphabet='abcdefghijklmnopqrstuvwxyz_0123456789', min_size=1, max_size=8))
    if tag in caps.pretrained_tags:
        tag += '_zz'
    return f'{name}.{tag}', {}, tag


@settings(max_examples=int(os.environ.get('FEATZOO_PROPERTY_INVALID_EXAMPLES', 80)), **COMMON)
@given(request=invalid_requests())
def test_invalid_combinations_raise_clear_errors(request):
    name, kwargs, named = request
    try:
        featzoo.create_model(name, **kwargs)
    except Exception as exc:  # noqa: BLE001 - every failure is examined: only the clear kinds may pass
        # RecursionError and NotImplementedError are RuntimeErrors by inheritance, never a deliberate refusal
        clear = isinstance(exc, CLEAR_ERRORS) and not isinstance(exc, (RecursionError, NotImplementedError))
        assert clear, f'{type(exc).__name__} (not a clear error) for {name!r}, {kwargs}: {exc}'
        assert named in str(exc), f'{type(exc).__name__} for {name!r}, {kwargs} does not name {named!r}: {exc}'
    else:
        pytest.fail(f'create_model({name!r}, **{kwargs}) accepted an invalid request')


# ---- concurrency ---------------------------------------------------------------------------------------------------

def test_concurrent_first_use_from_threads():
    """Fresh interpreter: many threads load the index, import families and build models at the same moment."""
    code = textwrap.dedent('''
        import sys, threading, torch, featzoo
        torch.set_num_threads(1)
        jobs = [
            ('resnet10t', dict(features_only=True, out_indices=(1, 3))),
            ('convnext_atto', dict(depths=(1, 1, 1, 1), features_only=True, feature_cls='hook')),
            ('vit_tiny_patch16_224', dict(depth=2, img_size=32, features_only=True, out_indices=(0, 1))),
            ('regnetx_002', dict(features_only=True, output_stride=16)),
            ('mobilenetv3_small_050', dict(num_classes=3)),
            ('resnet10t', dict(num_classes=0)),
        ] * 2
        barrier = threading.Barrier(len(jobs) + 2)
        results, errors = {}, []

        def describe(model):
            info = getattr(model, 'feature_info', None)
            levels = (info.channels(), info.reduction()) if hasattr(info, 'channels') else None
            return sorted(model.state_dict()), levels

        def build(i, name, kwargs):
            try:
                barrier.wait()
                results[i] = describe(featzoo.create_model(name, **kwargs))
            except Exception as exc:
                errors.append(repr(exc))

        def listing(i):
            try:
                barrier.wait()
                results[i] = (featzoo.list_models(supports=('feature_cls=fx',)),
                              featzoo.model_capabilities('resnet50').output_strides, featzoo.is_model('resnet50'))
            except Exception as exc:
                errors.append(repr(exc))

        threads = [threading.Thread(target=build, args=(i, n, kw)) for i, (n, kw) in enumerate(jobs)]
        threads += [threading.Thread(target=listing, args=(len(jobs) + k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise SystemExit(f'errors in threads: {errors}')
        for i, (name, kwargs) in enumerate(jobs):
            if results[i] != describe(featzoo.create_model(name, **kwargs)):
                raise SystemExit(f'thread result differs from a sequential build for {name} {kwargs}')
        expected = (featzoo.list_models(supports=('feature_cls=fx',)), (8, 16, 32), True)
        if results[len(jobs)] != expected or results[len(jobs) + 1] != expected:
            raise SystemExit('concurrent listing differs from a sequential one')
        print('ok')
    ''')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONWARNINGS='ignore'))
    assert out.returncode == 0 and out.stdout.strip() == 'ok', out.stdout + out.stderr


# ---- featzoo's safetensors reader against the safetensors library ----------------------------------------------

_ST_DTYPES = ['F32', 'F16', 'BF16', 'I64', 'BOOL', 'U8', 'F64', 'I8', 'F8_E4M3', 'F4', 'F6_E2M3', 'C64', 'f32', 'X',
              '']


def _real_safetensors() -> Tuple[Dict[str, Any], bytes]:
    """The header (parsed) and data section of a real file with several dtypes, an empty tensor and metadata."""
    import json
    import struct
    import tempfile
    from safetensors.torch import save_file
    gen = torch.Generator().manual_seed(0)
    tensors = {'a': torch.randn(3, 4, generator=gen), 'b': torch.randn(5, generator=gen).half(),
               'c': torch.arange(2), 'd': torch.tensor([True, False, True]),
               'e': torch.empty(0, dtype=torch.bfloat16), 'f': torch.randn(2, 2, generator=gen).double()}
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, 'real.safetensors')
        save_file(tensors, path, metadata={'format': 'pt'})
        raw = open(path, 'rb').read()
    (length,) = struct.unpack('<Q', raw[:8])
    return json.loads(raw[8:8 + length]), raw[8 + length:]


_REAL_HEADER, _REAL_DATA = _real_safetensors()
_NUMBERS = st.one_of(st.integers(0, 80), st.integers(-3, -1), st.just(2 ** 64), st.just(2 ** 64 - 1),
                     st.just(2 ** 40), st.floats(0, 80, allow_nan=False), st.booleans())


@st.composite
def mutated_safetensors(draw) -> bytes:
    """A real safetensors file with a few random mutations of its header, length prefix or data."""
    import copy
    import json
    import struct
    header = copy.deepcopy(_REAL_HEADER)
    data = _REAL_DATA
    names = [k for k in header if k != '__metadata__']
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(('offsets', 'offset', 'shape', 'dtype', 'alias', 'field', 'swap', 'metadata',
                                     'data', 'array', 'dtype_map')))
        name = draw(st.sampled_from(names))
        entry = header.get(name)
        if not isinstance(entry, dict):
            continue
        if kind == 'offsets':
            entry['data_offsets'] = [draw(_NUMBERS), draw(_NUMBERS)]
        elif kind == 'offset' and isinstance(entry.get('data_offsets'), list) and len(entry['data_offsets']) == 2:
            i = draw(st.integers(0, 1))
            entry['data_offsets'][i] = int(entry['data_offsets'][i]) + draw(st.integers(-9, 9))
        elif kind == 'shape':
            entry['shape'] = draw(st.lists(_NUMBERS, max_size=3))
        elif kind == 'dtype':
            entry['dtype'] = draw(st.sampled_from(_ST_DTYPES))
        elif kind == 'alias':  # another name for the same bytes: an overlap
            header[name + '_alias'] = copy.deepcopy(entry)
        elif kind == 'field':
            field = draw(st.sampled_from(('dtype', 'shape', 'data_offsets', 'extra')))
            if field == 'extra':
                entry['extra'] = draw(st.one_of(st.integers(-5, 5), st.text(max_size=3), st.none()))
            else:
                entry.pop(field, None)
        elif kind == 'swap':
            other = header.get(draw(st.sampled_from(names)))
            if isinstance(other, dict) and 'data_offsets' in entry and 'data_offsets' in other:
                entry['data_offsets'], other['data_offsets'] = other['data_offsets'], entry['data_offsets']
        elif kind == 'metadata':
            header['__metadata__'] = draw(st.sampled_from(({'format': 1}, None, {}, [], {'k': None}, 'pt')))
        elif kind == 'data':
            cut = draw(st.integers(-8, 8))
            data = data[:cut] if cut < 0 else data + b'\0' * cut
        elif kind == 'array':  # the library also takes an entry as [dtype, shape, data_offsets]
            header[name] = [entry.get('dtype'), entry.get('shape'), entry.get('data_offsets')][:draw(st.integers(2, 3))]
        elif kind == 'dtype_map' and isinstance(entry.get('dtype'), str):  # serde's other spelling of a dtype
            entry['dtype'] = {entry['dtype']: draw(st.sampled_from((None, [])))}
    text = json.dumps(header).encode()
    if draw(st.booleans()):
        text += b' ' * ((8 - len(text) % 8) % 8)
    if draw(st.integers(0, 9)) == 0:  # a damaged byte in the header
        i = draw(st.integers(0, len(text) - 1))
        text = text[:i] + bytes([draw(st.integers(0, 255))]) + text[i + 1:]
    length = len(text) + (draw(st.integers(-3, 3)) if draw(st.integers(0, 9)) == 0 else 0)
    return struct.pack('<Q', max(0, length)) + text + data


def _library_verdict(path: str) -> Optional[Dict[str, torch.Tensor]]:
    from safetensors import safe_open
    try:
        with safe_open(path, framework='pt') as fh:
            return {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception:  # noqa: BLE001 - the library's refusal, whatever its type, is the verdict
        return None


def _featzoo_verdict(path: str) -> Optional[Dict[str, torch.Tensor]]:
    from featzoo.weights.loading import read_state_dict
    try:
        return read_state_dict(path)
    except RuntimeError:  # featzoo's refusal of a bad file is always a RuntimeError naming it
        return None


def _raw_bytes(t: torch.Tensor) -> bytes:
    return t.contiguous().view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b''


@settings(max_examples=int(os.environ.get('FEATZOO_PROPERTY_SAFETENSORS_EXAMPLES', 300)), **COMMON)
@given(content=mutated_safetensors())
@example(content=b'')
@example(content=b'\x02\x00\x00\x00\x00\x00\x00\x00{}')
def test_safetensors_reader_refuses_what_the_library_refuses(content, tmp_path_factory):
    path = str(tmp_path_factory.mktemp('st') / 'mutated.safetensors')
    with open(path, 'wb') as fh:
        fh.write(content)
    library, ours = _library_verdict(path), _featzoo_verdict(path)
    assert (library is None) == (ours is None), (
        f'library {"refuses" if library is None else "accepts"}, featzoo {"refuses" if ours is None else "accepts"}: '
        f'{content[:400]!r}')
    if ours is not None:
        assert sorted(ours) == sorted(library)
        for key in ours:
            assert ours[key].dtype == library[key].dtype and ours[key].shape == library[key].shape, key
            assert _raw_bytes(ours[key]) == _raw_bytes(library[key]), key
        assert sum(t.numel() * t.element_size() for t in ours.values()) <= len(content)


_F32x2 = '"dtype":"F32","shape":[2],"data_offsets":[0,8]'
# Headers at the edges of the format and of JSON dialects (Python's json accepts more than serde_json), with 8
# bytes of data: each must get the library's verdict.
_EDGE_HEADERS = [
    '{"a":{%s}}' % _F32x2, '{"a":{%s,"x":NaN}}' % _F32x2, '{"a":{%s,"x":Infinity}}' % _F32x2,
    '{"a":{%s,"x":1e400}}' % _F32x2, '{"a":{%s,"x":-5,"y":1e308}}' % _F32x2, '{"\\udce9":{%s}}' % _F32x2,
    '{"\\ud83d\\ude00":{%s}}' % _F32x2, '\ufeff{"a":{%s}}' % _F32x2, ' {"a":{%s}}\t\r\n' % _F32x2,
    '{"a":{%s,"x":%s}}' % (_F32x2, '[' * 125 + ']' * 125), '{"a":{%s,"x":%s}}' % (_F32x2, '[' * 126 + ']' * 126),
    '{"a":{"dtype":"F32","shape":[-0,2],"data_offsets":[0,8]}}', '{"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}}',
    '{"a":{%s,"shape":[2]}}' % _F32x2, '{"a":{%s,"x":1,"x":2}}' % _F32x2,
    '{"__metadata__":{"k":"a"},"__metadata__":null,"a":{%s}}' % _F32x2, '{"__metadata__":{"k":"a","k":"b"},"a":{%s}}' % _F32x2,
    '{"__metadata__":{"k":null},"a":{%s}}' % _F32x2, '{"__metadata__":null,"a":{%s}}' % _F32x2,
    '{"a":{"dtype":{"F32":null},"shape":[2],"data_offsets":[0,8]}}',
    '{"a":{"dtype":{"F32":null,"F16":null},"shape":[2],"data_offsets":[0,8]}}',
    '{"a":["F32",[2],[0,8]]}', '{"a":["F32",[2],[0,8],1]}', '{"a":["F32",[2]]}', '{"a":null}', '[]',
    '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{%s}}' % _F32x2,
    '{"a":{%s},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}' % _F32x2,
    '{"a":{"dtype":"F4","shape":[16],"data_offsets":[0,8]}}', '{"a":{"dtype":"F4","shape":[15],"data_offsets":[0,8]}}',
    '{"a":{"dtype":"F6_E2M3","shape":[8],"data_offsets":[0,6]},"b":{"dtype":"U8","shape":[2],"data_offsets":[6,8]}}',
    '{"a":{"dtype":"F32","shape":[4611686018427387904,8,0],"data_offsets":[0,0]},"b":{"dtype":"U8","shape":[8],'
    '"data_offsets":[0,8]}}',
    '{"a":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}}', '{"a":{"dtype":"F8_E8M0","shape":[8],"data_offsets":[0,8]}}',
    '{"a\x01":{%s}}' % _F32x2, '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,18446744073709551616]}}',
]


@pytest.mark.parametrize('header', _EDGE_HEADERS, ids=range(len(_EDGE_HEADERS)))
def test_safetensors_reader_edge_cases_get_the_librarys_verdict(header, tmp_path):
    import struct
    text = header.encode('utf-8', 'surrogatepass')
    path = str(tmp_path / 'edge.safetensors')
    with open(path, 'wb') as fh:
        fh.write(struct.pack('<Q', len(text)) + text + bytes(range(1, 9)))
    library, ours = _library_verdict(path), _featzoo_verdict(path)
    assert (library is None) == (ours is None), f'library accepts: {library is not None}, featzoo: {ours is not None}'
    if ours is not None:
        assert {k: _raw_bytes(v) for k, v in ours.items()} == {k: _raw_bytes(v) for k, v in library.items()}
