"""The pretrained catalog: each architecture's published weights (tags) and the facts that belong to each.

The facts live in the registry index (``featzoo/index/<family>.json``, under ``"pretrained"``, default tag first),
generated from timm's published configurations by ``tools/gen_index.py``; nothing here imports family code or timm.
``arch`` alone means its default (first) tag.
"""
from __future__ import annotations

import fnmatch
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from .. import registry
from ..data.constants import CROP_MODES, INTERPOLATIONS

__all__ = ['pretrained_tags', 'default_tag', 'has_pretrained', 'resolve_tag', 'pretrained_cfg', 'head_is_projection',
           'catalog_rows', 'catalog_problems', 'REQUIRED_KEYS']

# Facts every published tag carries (others, such as test_input_size or license, appear where timm has them).
REQUIRED_KEYS = ('hf_hub_id', 'num_classes', 'input_size', 'interpolation', 'crop_pct', 'crop_mode', 'mean', 'std')
ROW_KEYS = ('name', 'hf_hub_id', 'num_classes', 'input_size', 'test_input_size', 'interpolation', 'crop_pct',
            'crop_mode', 'mean', 'std', 'license')


def _entries(name: str) -> List[Dict[str, Any]]:
    return list(registry.get_arch_entry(name).get('pretrained', ()))


def pretrained_tags(name: str) -> List[str]:
    """Published tags of an architecture (``arch`` or ``arch.tag``), default first; [] when there are none.

    >>> pretrained_tags('resnet50')[0]
    'a1_in1k'
    """
    return [cfg['tag'] for cfg in _entries(name)]


def default_tag(name: str) -> Optional[str]:
    """The tag ``arch`` alone stands for, or None when the architecture has no published weights.

    >>> default_tag('resnet50')
    'a1_in1k'
    """
    tags = pretrained_tags(name)
    return tags[0] if tags else None


def has_pretrained(name: str) -> bool:
    """True when ``name`` (``arch`` or ``arch.tag``) has published weights.

    >>> has_pretrained('resnet50.a1_in1k')
    True
    """
    return bool(_entries(name))


def resolve_tag(name: str) -> str:
    """``arch.tag`` for a name, with the default tag filled in; raises ValueError for an architecture without
    published weights.

    >>> resolve_tag('resnet50')
    'resnet50.a1_in1k'
    """
    registry.get_arch_entry(name)
    arch, tag = registry.split_model_name_tag(name)
    if tag:
        return name
    first = default_tag(arch)
    if first is None:
        raise ValueError(f'{arch!r} has no published pretrained weights; build it with pretrained=False, or pass '
                         f"your own file with checkpoint_path='weights.safetensors'")
    return f'{arch}.{first}'


def pretrained_cfg(name: str, base: Optional[Mapping[str, Any]] = None, overlay: Optional[Mapping[str, Any]] = None,
                   use_published: bool = True) -> Dict[str, Any]:
    """Everything known about a weight, the one resolver every caller uses: the family's defaults, then the tag's
    published facts (unless ``use_published`` is False: a Hub or local config describes its own weights), then
    ``base`` (a config.json's or the caller's ``pretrained_cfg``), then ``overlay``; with ``architecture`` set (and
    ``tag`` for a published tag). An architecture without published weights gets timm's facts for its weightless
    tag ('untrained') over the family defaults.

    >>> cfg = pretrained_cfg('resnet50.a1_in1k')
    >>> cfg['hf_hub_id'], cfg['architecture'], cfg['tag']
    ('timm/resnet50.a1_in1k', 'resnet50', 'a1_in1k')
    """
    entry = registry.get_arch_entry(name)
    arch, tag = registry.split_model_name_tag(name)
    cfg: Dict[str, Any] = dict(registry.get_family_header(entry['family']).get('default_cfg', {}))
    published = entry.get('pretrained', ()) if use_published else ()
    chosen = next((c for c in published if c['tag'] == tag), None) if tag else (published[0] if published else None)
    if chosen is not None:
        cfg.update(chosen)
    else:
        if use_published:
            # a tag timm lists without weights (such as 'untrained'), or an architecture with none published: timm's
            # facts for it (input size, mean, std...), so that weights trained with timm are fed as timm feeds them
            weightless = entry.get('untrained_cfgs', {})
            cfg.update(weightless.get(tag, {}) if tag else next(iter(weightless.values()), {}))
        if tag:
            cfg['tag'] = tag
    cfg['architecture'] = arch
    if base:
        cfg.update(base)
    if overlay is not None:
        if not isinstance(overlay, Mapping):
            raise TypeError(f'pretrained_cfg_overlay must be a dict, got {type(overlay).__name__}')
        cfg.update(overlay)
    for key in ('input_size', 'test_input_size', 'min_input_size', 'mean', 'std', 'pool_size', 'test_pool_size'):
        if isinstance(cfg.get(key), list):
            cfg[key] = tuple(cfg[key])
    return cfg


def head_is_projection(name: str) -> bool:
    """Whether the weights ``name`` resolves to end in an image-text projection (CLIP, SigLIP, EVA-CLIP, ...)
    rather than a classifier: their head's output lives in the space the text tower uses.

    >>> head_is_projection('vit_base_patch16_clip_224.openai'), head_is_projection('resnet50.a1_in1k')
    (True, False)
    """
    return bool(pretrained_cfg(name).get('head_is_projection'))


def catalog_rows(filter: Union[str, Sequence[str]] = '') -> List[Dict[str, Any]]:
    """One row per published weight (``arch.tag``) with its main facts, default tags first within each arch.

    >>> catalog_rows('resnet50.a1_in1k')[0]['hf_hub_id']
    'timm/resnet50.a1_in1k'
    """
    patterns = [filter] if isinstance(filter, str) else list(filter)
    patterns = [p for p in patterns if p]
    rows = []
    for arch, entry in registry.iter_entries():
        for cfg in entry.get('pretrained', ()):
            name = f"{arch}.{cfg['tag']}"
            if patterns and not any(fnmatch.fnmatchcase(name, p) for p in patterns):
                continue
            row = {'name': name}
            row.update({k: tuple(v) if isinstance(v, list) else v for k, v in
                        ((k, cfg.get(k)) for k in ROW_KEYS[1:])})
            rows.append(row)
    return rows


def _check_fact(where: str, cfg: Mapping[str, Any], required: Sequence[str]) -> List[str]:
    problems = []
    missing = [k for k in required if k not in cfg]
    if missing:
        problems.append(f'{where}: missing {missing}')
    hub_id = cfg.get('hf_hub_id')
    if hub_id is not None and (not isinstance(hub_id, str) or hub_id.count('/') != 1 or '@' in hub_id):
        problems.append(f"{where}: hf_hub_id {hub_id!r} is not 'org/repo'")
    for key in ('input_size', 'test_input_size', 'min_input_size'):
        size = cfg.get(key)
        if size is not None and (len(size) != 3 or not all(isinstance(v, int) and v > 0 for v in size)):
            problems.append(f'{where}: {key} {size!r} is not (C, H, W)')
    chans = (cfg.get('input_size') or (3,))[0]
    for key in ('mean', 'std'):
        value = cfg.get(key)
        if value is not None and (len(value) != chans or not all(isinstance(v, (int, float)) for v in value)):
            problems.append(f'{where}: {key} {value!r} does not have {chans} numbers')
    if cfg.get('std') is not None and any(v <= 0 for v in cfg['std']):
        problems.append(f"{where}: std {cfg['std']!r} has a value <= 0")
    if cfg.get('interpolation') not in (None,) + INTERPOLATIONS:
        problems.append(f"{where}: interpolation {cfg['interpolation']!r} is not one of {INTERPOLATIONS}")
    if cfg.get('crop_mode') not in (None,) + CROP_MODES:
        problems.append(f"{where}: crop_mode {cfg['crop_mode']!r} is not one of {CROP_MODES}")
    for key in ('crop_pct', 'test_crop_pct'):
        value = cfg.get(key)
        if value is not None and not (isinstance(value, (int, float)) and 0 < value <= 2):
            problems.append(f'{where}: {key} {value!r} is not in (0, 2]')
    num_classes = cfg.get('num_classes')
    if num_classes is not None and not (isinstance(num_classes, int) and num_classes >= 0):
        problems.append(f'{where}: num_classes {num_classes!r} is not an int >= 0')
    return problems


def catalog_problems() -> List[str]:
    """Every inconsistency in the catalog (empty when it is sound): malformed facts, duplicate tags, a Hub repo
    shared by two tags, a family default that does not parse.

    >>> catalog_problems()
    []
    """
    problems: List[str] = []
    repos: Dict[str, str] = {}
    seen_families = set()
    for arch, entry in registry.iter_entries():
        family = entry['family']
        if family not in seen_families:
            seen_families.add(family)
            problems += _check_fact(f'family {family!r} default_cfg',
                                    registry.get_family_header(family).get('default_cfg', {}),
                                    required=('input_size', 'interpolation', 'crop_pct', 'mean', 'std'))
        tags = [cfg.get('tag') for cfg in entry.get('pretrained', ())]
        if len(set(tags)) != len(tags):
            problems.append(f'{arch}: duplicate tags {sorted(t for t in set(tags) if tags.count(t) > 1)}')
        for cfg in entry.get('pretrained', ()):
            tag = cfg.get('tag')
            where = f'{arch}.{tag}'
            if not isinstance(tag, str) or not tag or '.' in tag:
                problems.append(f'{arch}: tag {tag!r} is not a dot-free name')
            # a few tags are published outside the Hub (I-JEPA): their url stands in for the repo
            required = REQUIRED_KEYS if 'url' not in cfg else tuple(k for k in REQUIRED_KEYS if k != 'hf_hub_id')
            problems += _check_fact(where, cfg, required=required)
            hub_id = cfg.get('hf_hub_id')
            if isinstance(hub_id, str):
                # Two tags may share one repo only when they name different files in it, or when they are the same
                # tag of twin architectures (timm's quick-GELU CLIP towers load the plain towers' files).
                key = f"{hub_id}|{cfg.get('hf_hub_filename', '')}"
                other = repos.get(key)
                if other is not None and not (other.split('.', 1)[1] == tag and other.split('.', 1)[0] != arch):
                    problems.append(f'{where}: Hub repo {hub_id!r} is also used by {other}')
                repos[key] = where
    return problems
