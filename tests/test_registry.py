"""Registry: listing, lookup, natural sort, wildcards, lazy family import, index freshness, capabilities."""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import threading

import pytest
import torch

import featzoo
from featzoo import registry

ALL = featzoo.list_models()


def test_natural_sort_and_filters():
    names = featzoo.list_models('resnet*')
    assert names.index('resnet18') < names.index('resnet101')
    assert featzoo.list_models(['resnet18', 'resnet34']) == ['resnet18', 'resnet34']
    assert 'resnet18d' not in featzoo.list_models('resnet18*', exclude_filters=['*d'])
    assert featzoo.list_models(module='resnet') == [n for n in ALL if registry.get_arch_entry(n)['family'] == 'resnet']


def test_pretrained_listing_uses_tags():
    tagged = featzoo.list_models('resnet50*', pretrained=True)
    assert 'resnet50.a1_in1k' in tagged and all('.' in n for n in tagged)
    assert featzoo.list_pretrained('resnet50.*')[0] == 'resnet50.' + registry.get_pretrained_cfg('resnet50')['tag']


def test_is_model_and_tags():
    assert featzoo.is_model('resnet50')
    assert featzoo.is_model('resnet50.a1_in1k')
    assert not featzoo.is_model('resnet50.not_a_tag')
    assert not featzoo.is_model('resnet5000')
    assert not featzoo.is_model(None)


def test_unknown_names_suggest_close_ones():
    with pytest.raises(featzoo.UnknownModelError, match='resnet50'):
        featzoo.create_model('resnet05')
    with pytest.raises(RuntimeError, match='closest tags'):
        featzoo.create_model('resnet50.a1_in1kk')


def test_model_entrypoint_and_modules():
    assert 'resnet' in featzoo.list_modules()
    model = featzoo.model_entrypoint('resnet18')(num_classes=3)
    assert model.num_classes == 3


def test_listing_does_not_import_families():
    code = ('import featzoo, sys; featzoo.list_models(); featzoo.is_model("resnet50"); '
            'featzoo.model_capabilities("resnet50"); '
            'print([m for m in sys.modules if m.startswith("featzoo.models.")])')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == '[]'


def test_first_create_reads_one_family_and_no_pillow():
    """A fresh process that builds one model parses that family's index file only and does not import Pillow
    (together 44 ms of a 104 ms first create_model('resnet50') on a 2-core EPYC); the whole catalog still answers
    listing, and lookups agree with it."""
    code = ('import featzoo, sys, json; from featzoo import registry; '
            'featzoo.create_model("resnet18"); '
            'featzoo.is_model("convnext_tiny.fb_in1k"); '
            'print(json.dumps(dict(parsed=sorted(registry._parsed), whole=registry._index is not None, '
            'pil="PIL" in sys.modules)))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == {'parsed': ['convnext.json', 'resnet.json'], 'whole': False, 'pil': False}
    registry._reset_index_cache()
    try:
        lazy = {name: registry.get_arch_entry(name) for name in ('resnet50', 'vit_base_patch16_224', 'convnext_tiny')}
        assert registry._index is None
        assert all(registry._load_index()[name] == entry for name, entry in lazy.items())
    finally:
        registry._reset_index_cache()


_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _gen_index():
    # tools/ is a package of the repository, not of featzoo: importable once the repository root is on the path
    if _REPO_ROOT not in sys.path:
        sys.path.insert(0, _REPO_ROOT)
    return importlib.import_module('tools.gen_index')


@pytest.mark.parametrize('family', featzoo.list_modules())
def test_index_matches_family_tables(family):
    """The static index agrees with the family tables: names, wrappers, strides, export claims (no build needed).
    The built fields are checked by the next test and, at the natural stride for every architecture, by
    test_parity_timm's meta-device keys test."""
    gen = _gen_index()
    spec = registry.family_spec(family)
    for arch in spec.variants:
        stored, expected = registry.get_arch_entry(arch), gen.static_entry(spec, arch)
        for key in ('default_feature_cls', 'feature_cls', 'output_strides', 'export', 'default_out_indices'):
            assert stored.get(key) == expected.get(key), f'{arch}: index {key} is stale; run tools/gen_index.py {family}'
    listed = set(featzoo.list_models(module=family))
    assert listed == set(spec.variants), f'{family}: index and VARIANTS list different names'


def _built_rows() -> list:
    """One architecture per configuration in the default suite (each family's rows of one configuration share their
    code), every architecture under ``-m slow``."""
    from helpers import configurations
    representatives = set(configurations())
    return [pytest.param(arch, id=arch, marks=[pytest.mark.family(registry.get_arch_entry(arch)['family'])]
                         + ([] if arch in representatives else [pytest.mark.slow])) for arch in ALL]


@pytest.mark.parametrize('arch', _built_rows())
def test_index_levels_match_meta_builds(arch):
    """Feature levels at every output stride and the parameter count, as stored, equal a meta-device build's."""
    family = registry.get_arch_entry(arch)['family']
    built = _gen_index().built_entry(registry.family_spec(family), arch)
    stored = registry.get_arch_entry(arch)
    for key, value in built.items():
        assert stored.get(key) == value, f'{arch}: index {key} is stale; run tools/gen_index.py {family}'


def test_pretrained_tags_match_timm():
    timm = pytest.importorskip('timm')
    for arch in ALL:
        if not timm.is_model(arch):
            continue
        ours = [c['tag'] for c in registry.get_arch_entry(arch).get('pretrained', ())]
        theirs = [n.split('.', 1)[1] for n in timm.list_pretrained(arch + '.*')]
        assert sorted(ours) == sorted(theirs), arch
        from timm.models import get_pretrained_cfg
        for cfg in registry.get_arch_entry(arch).get('pretrained', ()):
            if 'hf_hub_id' in cfg:
                # the repository timm publishes the tag from (timm/ for most; a few, e.g. LingBot, elsewhere)
                assert cfg['hf_hub_id'] == get_pretrained_cfg(f"{arch}.{cfg['tag']}").hf_hub_id, cfg


def test_capabilities_from_index():
    caps = featzoo.model_capabilities('resnet50.a1_in1k')
    assert caps.family == 'resnet' and caps.default_feature_cls == 'list'
    assert caps.output_strides == (8, 16, 32)
    assert [lvl['num_chs'] for lvl in caps.feature_levels] == [64, 256, 512, 1024, 2048]
    assert 'a1_in1k' in caps.pretrained_tags
    assert 'resnet50' in featzoo.list_models(supports=('output_stride=8', 'feature_cls=hook'))
    with pytest.raises(ValueError, match='capability'):
        featzoo.list_models(supports=('colour=blue',))


# test_index_matches_family_tables compares every architecture's index entry with its build; this reads the same
# levels through the public capabilities API, for each family's smallest architecture
FAMILY_SMALLEST = [min(featzoo.list_models(module=f), key=lambda n: registry.get_arch_entry(n)['num_params'])
                   for f in featzoo.list_modules()]


@pytest.mark.parametrize('name', FAMILY_SMALLEST)
def test_capability_levels_match_built_model(name):
    caps = featzoo.model_capabilities(name)
    for stride, levels in caps.feature_levels_by_stride.items():
        with torch.device('meta'):
            model = featzoo.create_model(name, output_stride=stride)
        got = [dict(num_chs=d['num_chs'], reduction=d['reduction'], module=d['module']) for d in model.feature_info]
        assert got == list(levels)


def test_registry_is_thread_safe():
    registry._reset_index_cache()
    results, errors = [], []

    def work():
        try:
            results.append(len(featzoo.list_models()))
            featzoo.create_model('resnet18', num_classes=2)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
