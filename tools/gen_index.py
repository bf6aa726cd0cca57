"""Generate featzoo/index/<family>.json from a family module's table (and timm's published pretrained configs).

The index lets the registry list models, check arguments and report capabilities without importing family code.
Run after changing a family's VARIANTS:

    python tools/gen_index.py resnet convnext

Feature levels come from building each variant on the meta device at every supported output stride (no compute).
Pretrained tags and their facts come from timm's published configurations (timm is a development-only
dependency; the package never imports it).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import Any, Dict, List, Optional

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CFG_KEYS = ('hf_hub_id', 'hf_hub_filename', 'num_classes', 'input_size', 'test_input_size', 'fixed_input_size',
            'min_input_size', 'interpolation', 'crop_pct', 'test_crop_pct', 'crop_mode', 'mean', 'std', 'first_conv',
            'classifier', 'license', 'pool_size')


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def pretrained_entries(arch: str, spec: Any = None) -> List[Dict[str, Any]]:
    """timm's published tags for ``arch`` with the facts featzoo needs, default tag first; ``spec`` (default: the
    registered family's) marks the tags whose head is an image-text projection."""
    import timm
    from timm.models import get_pretrained_cfg
    names = timm.list_pretrained(arch + '.*')
    if not names:
        return []
    default = get_pretrained_cfg(arch)
    default_tag = default.tag if default is not None else None
    tags = [n.split('.', 1)[1] for n in names]
    if default_tag in tags:
        tags.remove(default_tag)
        tags.insert(0, default_tag)
    out = []
    for tag in tags:
        cfg = get_pretrained_cfg(f'{arch}.{tag}').to_dict()
        entry = {'tag': tag}
        entry.update({k: _jsonable(cfg[k]) for k in CFG_KEYS if cfg.get(k) is not None})
        if not cfg.get('hf_hub_id') and cfg.get('url'):
            entry['url'] = cfg['url']  # published outside the Hub (I-JEPA)
        out.append(entry)
    if spec is None:
        from featzoo import registry
        if registry.is_model(arch):
            spec = registry.family_spec(registry.get_arch_entry(arch)['family'])
    for entry in out:
        if spec is not None and spec.head_is_projection_for(arch, entry):
            entry['head_is_projection'] = True  # featzoo extract stores the projected vectors by default
    return out


WEIGHTLESS_KEYS = tuple(k for k in CFG_KEYS if k not in ('hf_hub_id', 'hf_hub_filename', 'license'))


def untrained_cfgs(arch: str, untrained: Optional[List[str]] = None) -> Dict[str, Dict[str, Any]]:
    """timm's configuration facts for each tag of ``arch`` without published weights (input size, mean and std,
    crop, classifier...): what ``create_model(arch)`` reports and ``featzoo extract`` preprocesses with when there
    are no published weights, so that weights trained with timm are fed as timm feeds them. ``untrained``: the
    architecture's :func:`untrained_tags`, when already known. Empty for an architecture with published weights and
    no weightless tag."""
    import timm
    from timm.models import get_pretrained_cfg
    out = {}
    # an architecture timm lists with no tag at all (some NFNets) still has its configuration: stored under ''
    tags = (untrained_tags(arch) if untrained is None else untrained) or \
        ([] if timm.list_pretrained(arch + '.*') else [''])
    for tag in tags:
        cfg = get_pretrained_cfg(f'{arch}.{tag}' if tag else arch)
        if cfg is not None:
            facts = cfg.to_dict()
            out[tag] = {k: _jsonable(facts[k]) for k in WEIGHTLESS_KEYS if facts.get(k) is not None}
    return out


def untrained_tags(arch: str) -> List[str]:
    """The tags timm lists for ``arch`` without published weights (mostly 'untrained')."""
    import timm
    published = set(timm.list_pretrained(arch + '.*'))
    return [n.split('.', 1)[1] for n in timm.list_models(arch, include_tags=True)
            if '.' in n and n not in published]


def _levels(model: torch.nn.Module) -> List[Dict[str, Any]]:
    return [dict(num_chs=int(d['num_chs']), reduction=int(d['reduction']), module=str(d['module']))
            for d in model.feature_info]


def static_entry(spec: Any, arch: str) -> Dict[str, Any]:
    """The index fields of ``arch`` that its family's spec states without building anything."""
    entry = dict(default_feature_cls=spec.default_feature_cls_for(arch), feature_cls=list(spec.feature_cls_for(arch)),
                 output_strides=list(spec.output_strides_for(arch)), export=list(spec.export_for(arch)))
    default_out = spec.default_out_indices_for(arch)
    if default_out is not None:
        entry['default_out_indices'] = _jsonable(default_out)
    return entry


def built_entry(spec: Any, arch: str) -> Dict[str, Any]:
    """The index fields of ``arch`` read from meta-device builds: feature levels at every output stride, and the
    parameter count at the natural one."""
    strides = spec.output_strides_for(arch)
    levels, num_params = {}, 0
    for stride in strides:
        with torch.device('meta'):
            model = spec.build(arch, output_stride=stride)
        levels[str(stride)] = _levels(model)
        if stride == max(strides):
            num_params = sum(p.numel() for p in model.parameters())
    return dict(feature_levels=levels, num_params=num_params)


def family_index(family: str, with_pretrained: bool = True) -> Dict[str, Any]:
    """The index document of one family, read from its :class:`featzoo.family.FamilySpec`."""
    spec = importlib.import_module(f'featzoo.models.{family}').SPEC
    if spec.name != family:
        raise SystemExit(f'featzoo/models/{family}.py declares SPEC.name={spec.name!r}; it must be {family!r}')
    models: Dict[str, Any] = {}
    for arch in spec.variants:
        static, built = static_entry(spec, arch), built_entry(spec, arch)
        order = ('default_feature_cls', 'feature_cls', 'output_strides', 'feature_levels', 'export', 'num_params',
                 'default_out_indices')  # the order of the stored rows, so regenerating changes no unchanged line
        entry = {key: {**static, **built}[key] for key in order if key in {**static, **built}}
        entry['pretrained'] = pretrained_entries(arch, spec) if with_pretrained else []
        untrained = untrained_tags(arch) if with_pretrained else []
        if untrained:
            entry['untrained_tags'] = untrained
        weightless = untrained_cfgs(arch, untrained) if with_pretrained else {}
        if weightless:
            entry['untrained_cfgs'] = weightless
        models[arch] = entry
    return dict(family=family, module=f'featzoo.models.{family}', default_cfg=_jsonable(dict(spec.default_cfg)),
                models=models)


def format_index(doc: Dict[str, Any]) -> str:
    """JSON with one line per model, so a changed row shows as a one-line diff."""
    head = {k: v for k, v in doc.items() if k != 'models'}
    lines = ['{']
    for key, value in head.items():
        lines.append(f' {json.dumps(key)}: {json.dumps(value)},')
    lines.append(' "models": {')
    rows = [f'  {json.dumps(arch)}: {json.dumps(entry, separators=(",", ":"))}' for arch, entry in doc['models'].items()]
    lines.append(',\n'.join(rows))
    lines.append(' }')
    lines.append('}')
    return '\n'.join(lines) + '\n'


DEPRECATED_FILE = os.path.join(ROOT, 'featzoo', 'index', '_deprecated.json')


def deprecated_names() -> Dict[str, str]:
    """timm's deprecated model names whose target architecture featzoo registers: old name -> 'arch.tag'."""
    from timm.models._registry import _deprecated_models
    known = set()  # every arch and arch.tag featzoo can serve
    index_dir = os.path.join(ROOT, 'featzoo', 'index')
    for file in os.listdir(index_dir):
        if file.endswith('.json') and not file.startswith('_'):
            with open(os.path.join(index_dir, file), encoding='utf-8') as f:
                for arch, entry in json.load(f)['models'].items():
                    known.add(arch)
                    known.update(f"{arch}.{tag}" for tag in [c['tag'] for c in entry.get('pretrained', ())]
                                 + list(entry.get('untrained_tags', ())))
    # timm still maps a few old names to tags it no longer publishes: those stay unknown names here
    return {old: new for old, new in sorted(_deprecated_models.items()) if new in known}


def _deprecated_text() -> str:
    return json.dumps(deprecated_names(), indent=1, sort_keys=True) + '\n'


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('families', nargs='*', help='family module names (default: every featzoo/models/*.py)')
    parser.add_argument('--no-pretrained', action='store_true', help='leave pretrained tags empty (no timm needed)')
    parser.add_argument('--check', action='store_true', help='exit 1 if a file would change, write nothing')
    args = parser.parse_args(argv)
    families = args.families or sorted(
        f[:-3] for f in os.listdir(os.path.join(ROOT, 'featzoo', 'models')) if f.endswith('.py') and f[0] != '_')
    stale = []
    for family in families:
        doc = family_index(family, with_pretrained=not args.no_pretrained)
        text = format_index(doc)
        path = os.path.join(ROOT, 'featzoo', 'index', f'{family}.json')
        old = open(path, encoding='utf-8').read() if os.path.exists(path) else None
        if args.check:
            if old != text:
                stale.append(family)
            continue
        with open(path, 'w', encoding='utf-8') as f:
            f.write(text)
        print(f'{path}: {len(doc["models"])} models')
    if not args.no_pretrained:  # the deprecated names follow what is registered, so they are rewritten every run
        text = _deprecated_text()
        old = open(DEPRECATED_FILE, encoding='utf-8').read() if os.path.exists(DEPRECATED_FILE) else None
        if args.check and old != text:
            stale.append('_deprecated')
        elif not args.check and old != text:
            with open(DEPRECATED_FILE, 'w', encoding='utf-8') as f:
                f.write(text)
            print(f'{DEPRECATED_FILE}: {text.count(":")} deprecated names')
    if stale:
        print(f'index out of date for: {stale}; run python tools/gen_index.py {" ".join(stale)}')
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
