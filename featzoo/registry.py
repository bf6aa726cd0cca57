"""The model registry: every architecture name, its family and capabilities, read from a static index.

Listing and lookup read the JSON files in ``featzoo/index/`` (one per family, generated from the family tables by
``tools/gen_index.py``) and never import family code; a family module is imported the first time one of its models
is built.
"""
from __future__ import annotations

import difflib
import fnmatch
import functools
import json
import re
import threading
import warnings
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from .errors import UnknownModelError

_lock = threading.RLock()
_index: Optional[Dict[str, Dict[str, Any]]] = None  # arch -> entry
_families: Optional[Dict[str, Dict[str, Any]]] = None  # family -> header (module, default_cfg)
_deprecated: Dict[str, str] = {}  # timm's deprecated names -> 'arch.tag' (index/_deprecated.json)

Filter = Union[str, Sequence[str]]


_texts: Optional[Dict[str, str]] = None  # index file name -> its text, read once
_parsed: Dict[str, Dict[str, Any]] = {}  # family file name -> {'header': ..., 'models': arch -> entry}


def _index_texts() -> Dict[str, str]:
    """Every index file's text (reading is cheap; parsing all of them is what a single lookup avoids)."""
    global _texts, _deprecated
    if _texts is None:
        with _lock:
            if _texts is None:
                root = resources.files('featzoo') / 'index'
                texts = {item.name: item.read_text(encoding='utf-8') for item in sorted(root.iterdir(),
                                                                                       key=lambda p: p.name)
                         if item.name.endswith('.json')}
                _deprecated = json.loads(texts.pop('_deprecated.json', '{}'))
                _texts = {name: text for name, text in texts.items() if not name.startswith('_')}
    return _texts


def _parse_family(file: str) -> Dict[str, Any]:
    doc = _parsed.get(file)
    if doc is None:
        with _lock:
            data = json.loads(_index_texts()[file])
            family = data['family']
            doc = {'family': family, 'header': {k: v for k, v in data.items() if k != 'models'},
                   'models': {arch: dict(entry, family=family) for arch, entry in data['models'].items()}}
            _parsed[file] = doc
    return doc


def _load_index() -> Dict[str, Dict[str, Any]]:
    global _index, _families
    if _index is not None:
        return _index
    with _lock:
        if _index is not None:
            return _index
        archs: Dict[str, Dict[str, Any]] = {}
        families: Dict[str, Dict[str, Any]] = {}
        for file in _index_texts():
            doc = _parse_family(file)
            families[doc['family']] = doc['header']
            archs.update(doc['models'])
        _families = families
        _index = archs
    return _index


def _lookup(arch: str) -> Optional[Dict[str, Any]]:
    """The index entry of one architecture, parsing only its family's file: a first ``create_model`` in a fresh
    process then costs one family's JSON, not the whole catalog's (28 ms for 34 families on a 2-core EPYC, and
    growing with the zoo). Each model sits on its own line of its family file (``tools/gen_index.py``)."""
    if _index is not None:
        return _index.get(arch)
    needle = '\n  ' + json.dumps(arch) + ':'
    for file, text in _index_texts().items():
        if needle in text:
            entry = _parse_family(file)['models'].get(arch)
            if entry is not None:
                return entry
    return _load_index().get(arch)  # not found line by line (another layout): the whole index decides


def _natural_key(name: str) -> List[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r'(\d+)', name)]


def resolve_deprecated_name(name: str) -> str:
    """The current ``arch.tag`` of one of timm's deprecated model names (with a FutureWarning, as timm warns);
    any other name unchanged.

    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter('ignore')
    ...     resolve_deprecated_name('resnetv2_50x1_bitm')
    'resnetv2_50x1_bit.goog_in21k_ft_in1k'
    """
    _index_texts()
    current = _deprecated.get(name) if isinstance(name, str) else None
    if current is None:
        return name
    warnings.warn(f'{name!r} is a deprecated model name; it now stands for {current!r}', FutureWarning, stacklevel=3)
    return current


def split_model_name_tag(name: str) -> Tuple[str, str]:
    """Split ``'arch.tag'`` into ``('arch', 'tag')``; a plain arch gives an empty tag.

    >>> split_model_name_tag('resnet50.a1_in1k')
    ('resnet50', 'a1_in1k')
    """
    arch, _, tag = name.partition('.')
    return arch, tag


def _as_list(value: Filter) -> List[str]:
    if isinstance(value, str):
        return [value] if value else []
    return list(value)


def _pretrained_names(arch: str, entry: Dict[str, Any]) -> List[str]:
    return [f"{arch}.{cfg['tag']}" for cfg in entry.get('pretrained', ())]


def _known_tags(entry: Dict[str, Any]) -> List[str]:
    """Every tag timm names for an architecture: the published ones, then those without weights ('untrained')."""
    return [cfg['tag'] for cfg in entry.get('pretrained', ())] + list(entry.get('untrained_tags', ()))


_CAPABILITY_KEYS = ('output_stride', 'feature_cls', 'export', 'pretrained')
_INDEX_FIELD = {'output_stride': 'output_strides'}  # capability name -> index field, where they differ


def _known_values(index: Dict[str, Dict[str, Any]], key: str) -> List[str]:
    """Every value some registered model has for ``key``: what a ``supports`` filter may sensibly ask for."""
    values = {str(v) for entry in index.values() for v in entry.get(_INDEX_FIELD.get(key, key), ())}
    return sorted(values, key=_natural_key)


def _parse_requirement(index: Dict[str, Dict[str, Any]], requirement: Any) -> Tuple[str, Any]:
    if not isinstance(requirement, str):
        raise TypeError(f"supports entries are strings like 'output_stride=8'; got {type(requirement).__name__}: "
                        f'{requirement!r}')
    key, sep, value = requirement.partition('=')
    if not sep:
        raise ValueError(f"supports entries look like 'output_stride=8', 'feature_cls=fx' or 'export=onnx'; "
                         f'got {requirement!r}')
    key, value = key.strip(), value.strip()
    if key not in _CAPABILITY_KEYS:
        raise ValueError(f"unknown capability {key!r} in {requirement!r}; valid: {', '.join(_CAPABILITY_KEYS)}")
    if key == 'pretrained':
        if value.lower() not in ('1', 'true', 'yes', '0', 'false', 'no'):
            raise ValueError(f'{requirement!r}: pretrained takes true or false, got {value!r}')
        return key, value.lower() in ('1', 'true', 'yes')
    known = _known_values(index, key)
    if value not in known:
        # a misspelt value would otherwise just match nothing, which reads like "no model can do this"
        raise ValueError(f"{requirement!r}: no registered model has {key} {value!r}; valid: {', '.join(known)}")
    return key, int(value) if key == 'output_stride' else value


def _supports(entry: Dict[str, Any], key: str, value: Any) -> bool:
    if key == 'pretrained':
        return bool(entry.get('pretrained')) == value
    return value in entry.get(_INDEX_FIELD.get(key, key), ())


def list_models(filter: Filter = '', module: Filter = '', pretrained: bool = False,
                exclude_filters: Filter = (), name_matches_cfg: bool = False, include_tags: Optional[bool] = None,
                supports: Sequence[str] = ()) -> List[str]:
    """Registered model names, naturally sorted (``resnet18`` before ``resnet101``).

    ``filter`` and ``exclude_filters`` are shell wildcards (a string or a list). ``pretrained=True`` lists only
    names with published weights, as ``arch.tag``. ``supports`` keeps models with every listed capability, e.g.
    ``('output_stride=8', 'feature_cls=fx', 'export=onnx')``.

    >>> list_models('resnet1*')[:2]
    ['resnet10t', 'resnet14t']
    """
    index = _load_index()
    modules = _as_list(module)
    if include_tags is None:
        include_tags = pretrained
    if isinstance(supports, str):
        supports = (supports,)
    requirements = [_parse_requirement(index, req) for req in supports]
    names: List[str] = []
    for arch, entry in index.items():
        if modules and entry['family'] not in modules:
            continue
        if requirements and not all(_supports(entry, key, value) for key, value in requirements):
            continue
        if pretrained and not entry.get('pretrained'):
            continue
        if include_tags:
            tags = [cfg['tag'] for cfg in entry.get('pretrained', ())] if pretrained else _known_tags(entry)
            names.extend([f'{arch}.{tag}' for tag in tags] or [arch])
        else:
            names.append(arch)
    includes = _as_list(filter)
    if includes:
        names = [n for n in names if any(fnmatch.fnmatchcase(n, f) or fnmatch.fnmatchcase(split_model_name_tag(n)[0], f)
                                         for f in includes)]
    excludes = _as_list(exclude_filters)
    if excludes:
        names = [n for n in names if not any(fnmatch.fnmatchcase(n, f) for f in excludes)]
    return sorted(set(names), key=_natural_key)


def list_pretrained(filter: Filter = '', exclude_filters: Filter = ()) -> List[str]:
    """``arch.tag`` names with published weights, default tag of each arch first.

    >>> 'resnet50.a1_in1k' in list_pretrained('resnet50.*')
    True
    """
    index = _load_index()
    names = [n for arch in sorted(index, key=_natural_key) for n in _pretrained_names(arch, index[arch])]
    includes = _as_list(filter)
    if includes:
        names = [n for n in names if any(fnmatch.fnmatchcase(n, f) for f in includes)]
    excludes = _as_list(exclude_filters)
    if excludes:
        names = [n for n in names if not any(fnmatch.fnmatchcase(n, f) for f in excludes)]
    return names


def list_modules() -> List[str]:
    """Family module names that hold at least one model.

    >>> 'resnet' in list_modules()
    True
    """
    index = _load_index()
    return sorted({entry['family'] for entry in index.values()})


def is_model(name: str) -> bool:
    """True for a registered ``arch`` or an ``arch.tag`` whose tag timm names for it (published weights, or a tag
    such as ``untrained`` that timm lists for an architecture without them).

    >>> is_model('resnet50'), is_model('resnet50.a1_in1k'), is_model('resnet50.nope')
    (True, True, False)
    """
    if not isinstance(name, str):
        return False
    _index_texts()
    name = _deprecated.get(name, name)
    arch, tag = split_model_name_tag(name)
    entry = _lookup(arch)
    if entry is None:
        return False
    return not tag or tag in _known_tags(entry)


def closest_names(name: str, n: int = 5) -> List[str]:
    """The registered names that look most like ``name`` (for error messages)."""
    index = _load_index()
    arch = split_model_name_tag(name)[0]
    matches = difflib.get_close_matches(arch, list(index), n=n, cutoff=0.5)
    if not matches:
        prefix = re.split(r'[\d_]', arch, maxsplit=1)[0]
        matches = [a for a in sorted(index, key=_natural_key) if prefix and a.startswith(prefix)][:n]
    return matches


def get_arch_entry(name: str) -> Dict[str, Any]:
    """The index entry of ``arch`` or ``arch.tag``; unknown names raise :class:`UnknownModelError`.

    >>> get_arch_entry('resnet50')['family']
    'resnet'
    """
    if not isinstance(name, str):
        raise TypeError(f'model name must be a str, got {type(name).__name__}: {name!r}')
    _index_texts()
    name = _deprecated.get(name, name)
    arch, tag = split_model_name_tag(name)
    entry = _lookup(arch)
    if entry is None:
        hint = closest_names(name)
        raise UnknownModelError(f'unknown model {name!r}' + (f'; closest registered names: {hint}' if hint else '') +
                                '. list_models() gives them all.')
    if tag and tag not in _known_tags(entry):
        published = [cfg['tag'] for cfg in entry.get('pretrained', ())]
        hint = difflib.get_close_matches(tag, published, n=5, cutoff=0.3) or published[:8]
        if published:
            reason = f'closest tags: {hint}'
        else:
            weightless = list(entry.get('untrained_tags', ()))
            reason = f'{arch!r} has no published weights' + (f' (its only tags: {weightless})' if weightless else '')
        raise UnknownModelError(f'unknown pretrained tag {tag!r} for {arch!r}; {reason}')
    return entry


def get_family_header(family: str) -> Dict[str, Any]:
    """Family-level facts from the index: its module path and default data config."""
    if _families is None and f'{family}.json' in _index_texts():
        return _parse_family(f'{family}.json')['header']
    _load_index()
    return _families[family]


def get_pretrained_cfg(name: str) -> Optional[Dict[str, Any]]:
    """The catalog facts for ``arch.tag`` (or the default tag of ``arch``); None when nothing is published.

    >>> get_pretrained_cfg('resnet50.a1_in1k')['hf_hub_id']
    'timm/resnet50.a1_in1k'
    """
    entry = get_arch_entry(name)
    arch, tag = split_model_name_tag(name)
    cfgs = entry.get('pretrained', ())
    if not cfgs:
        return None
    if not tag:
        return dict(cfgs[0], architecture=arch)
    for cfg in cfgs:
        if cfg['tag'] == tag:
            return dict(cfg, architecture=arch)
    return None


def model_entrypoint(name: str) -> Callable[..., Any]:
    """The builder of ``arch`` (importing its family module): call it with constructor keyword arguments.

    >>> model_entrypoint('resnet18')(num_classes=10).num_classes
    10
    """
    entry = get_arch_entry(name)
    arch = split_model_name_tag(name)[0]
    return functools.partial(family_spec(entry['family']).build, arch)


def import_family(family: str):
    """Import a family's module (once; thread-safe through featzoo's import lock)."""
    from . import _import_module
    header = get_family_header(family)
    return _import_module(header['module'])


def family_spec(family: str):
    """The :class:`featzoo.family.FamilySpec` of a family (importing its module on first use).

    >>> family_spec('resnet').default_feature_cls_for('resnet50')
    'list'
    """
    return import_family(family).SPEC


@dataclass(frozen=True)
class ModelCapabilities:
    """What a model can do, known without importing or building it."""

    name: str
    family: str
    default_feature_cls: str
    feature_cls: Tuple[str, ...]
    output_strides: Tuple[int, ...]
    feature_levels: Tuple[Dict[str, Any], ...]
    export: Tuple[str, ...]
    pretrained_tags: Tuple[str, ...]
    feature_levels_by_stride: Dict[int, Tuple[Dict[str, Any], ...]] = field(default_factory=dict, repr=False)


def model_capabilities(name: str) -> ModelCapabilities:
    """Capabilities of ``name`` read from the static index (nothing is imported or built).

    >>> model_capabilities('resnet50').output_strides
    (8, 16, 32)
    """
    entry = get_arch_entry(name)
    arch = split_model_name_tag(_deprecated.get(name, name))[0]
    by_stride = {int(k): tuple(dict(level) for level in v) for k, v in entry['feature_levels'].items()}
    natural = max(by_stride)
    return ModelCapabilities(
        name=arch,
        family=entry['family'],
        default_feature_cls=entry['default_feature_cls'],
        feature_cls=tuple(entry['feature_cls']),
        output_strides=tuple(entry['output_strides']),
        feature_levels=by_stride[natural],
        export=tuple(entry.get('export', ())),
        pretrained_tags=tuple(cfg['tag'] for cfg in entry.get('pretrained', ())),
        feature_levels_by_stride=by_stride,
    )


def _reset_index_cache() -> None:
    """Forget the loaded index (tests that regenerate index files call this)."""
    global _index, _families, _deprecated, _texts
    with _lock:
        _index = None
        _families = None
        _deprecated = {}
        _texts = None
        _parsed.clear()


def iter_entries() -> Iterable[Tuple[str, Dict[str, Any]]]:
    """(arch, entry) pairs for every registered architecture, naturally sorted."""
    index = _load_index()
    for arch in sorted(index, key=_natural_key):
        yield arch, index[arch]
