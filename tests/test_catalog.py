"""The pretrained catalog: same tags, Hub repos and facts as timm publishes, default tag first, sound data."""
from __future__ import annotations

import importlib.util
import os

import pytest

import featzoo
from featzoo import registry
from featzoo.weights import catalog

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FACTS = ('hf_hub_id', 'num_classes', 'input_size', 'test_input_size', 'interpolation', 'crop_pct', 'test_crop_pct',
         'crop_mode', 'mean', 'std', 'license', 'first_conv', 'classifier')


def _gen_index():
    spec = importlib.util.spec_from_file_location('gen_index', os.path.join(ROOT, 'tools', 'gen_index.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _as_list(value):
    return list(value) if isinstance(value, (tuple, list)) else value


def test_catalog_equals_timm_published_configs():
    timm = pytest.importorskip('timm')
    from timm.models import get_pretrained_cfg
    archs = [a for a in featzoo.list_models() if timm.is_model(a)]
    assert archs, 'no architecture shared with timm'
    for arch in archs:
        tags = catalog.pretrained_tags(arch)
        published = [n.split('.', 1)[1] for n in timm.list_pretrained(f'{arch}.*')]
        assert sorted(tags) == sorted(published), arch
        if tags:
            assert tags[0] == get_pretrained_cfg(arch).tag, f'{arch}: default tag'
        for tag in tags:
            theirs = get_pretrained_cfg(f'{arch}.{tag}').to_dict()
            ours = catalog.pretrained_cfg(f'{arch}.{tag}')
            for key in FACTS:
                if theirs.get(key) is not None:
                    assert _as_list(ours.get(key)) == _as_list(theirs[key]), f'{arch}.{tag}: {key}'


WEIGHTLESS_FACTS = tuple(k for k in FACTS if k not in ('hf_hub_id', 'license')) + ('fixed_input_size', 'pool_size')


def test_weightless_configs_equal_timm():
    """An architecture without published weights (and each of its 'untrained' tags) reports timm's input size,
    mean, std, crop and head names, not the family's defaults: weights trained with timm for it are then fed as timm
    feeds them (eca_nfnet_l3 is 352 px, mobilenetv4_conv_small_035 takes mean 0.5)."""
    timm = pytest.importorskip('timm')
    from timm.models import get_pretrained_cfg
    checked = 0
    for arch in featzoo.list_models():
        if not timm.is_model(arch):
            continue
        names = [arch] if not catalog.pretrained_tags(arch) else []
        names += [f'{arch}.{tag}' for tag in registry.get_arch_entry(arch).get('untrained_tags', ())]
        for name in names:
            theirs, ours = get_pretrained_cfg(name).to_dict(), catalog.pretrained_cfg(name)
            for key in WEIGHTLESS_FACTS:
                if theirs.get(key) is not None:
                    assert _as_list(ours.get(key)) == _as_list(theirs[key]), f'{name}: {key}'
            checked += 1
    assert checked > 100
    assert catalog.pretrained_cfg('eca_nfnet_l3')['input_size'] == (3, 352, 352)


def test_catalog_is_what_the_generator_writes():
    pytest.importorskip('timm')
    gen = _gen_index()
    for arch, entry in registry.iter_entries():
        assert entry.get('pretrained', []) == gen.pretrained_entries(arch), \
            f'{arch}: stale pretrained tags; run python tools/gen_index.py {entry["family"]}'
        assert entry.get('untrained_cfgs', {}) == gen.untrained_cfgs(arch), \
            f'{arch}: stale untrained_cfgs; run python tools/gen_index.py {entry["family"]}'


def test_catalog_facts_are_sound():
    assert catalog.catalog_problems() == []


def test_catalog_problems_are_found(monkeypatch):
    entry = registry.get_arch_entry('resnet10t')
    first = dict(entry['pretrained'][0])
    broken = [dict(first, mean=[0.5, 0.5], interpolation='cubic'), dict(first), dict(first, tag='x.y')]
    broken[1].pop('crop_pct')
    monkeypatch.setitem(entry, 'pretrained', broken)
    problems = '\n'.join(catalog.catalog_problems())
    for expected in ('does not have 3 numbers', "'cubic'", "missing ['crop_pct']", 'duplicate tags',
                     "tag 'x.y'", 'is also used by'):
        assert expected in problems, (expected, problems)


def test_default_tag_and_names():
    name = featzoo.list_pretrained('resnet50.*')[0]
    assert name == 'resnet50.a1_in1k'
    assert catalog.pretrained_cfg('resnet50.a1_in1k')['hf_hub_id'] == 'timm/resnet50.a1_in1k'
    assert catalog.default_tag('resnet50') == 'a1_in1k'
    assert catalog.resolve_tag('resnet50') == 'resnet50.a1_in1k'
    assert catalog.resolve_tag('resnet50.a2_in1k') == 'resnet50.a2_in1k'
    # The bare architecture means its default tag.
    assert catalog.pretrained_cfg('resnet50') == catalog.pretrained_cfg('resnet50.a1_in1k')
    assert registry.get_pretrained_cfg('resnet50')['tag'] == 'a1_in1k'
    cfg = catalog.pretrained_cfg('resnet50.a1_in1k', overlay={'crop_pct': 1.0})
    assert cfg['crop_pct'] == 1.0 and cfg['architecture'] == 'resnet50' and cfg['input_size'] == (3, 224, 224)


def test_listing_pretrained_names():
    with_weights = featzoo.list_models(pretrained=True)
    assert with_weights and all('.' in n for n in with_weights)
    assert set(with_weights) == set(featzoo.list_pretrained())
    for name in featzoo.list_pretrained('resnet1*'):
        arch, tag = name.split('.', 1)
        assert tag in catalog.pretrained_tags(arch) and featzoo.is_model(name)
    rows = catalog.catalog_rows('resnet50.a1*')
    assert [r['name'] for r in rows] == ['resnet50.a1_in1k', 'resnet50.a1h_in1k']
    assert rows[0]['hf_hub_id'] == 'timm/resnet50.a1_in1k' and rows[0]['license'] == 'apache-2.0'


def test_architecture_without_weights(monkeypatch):
    monkeypatch.setitem(registry.get_arch_entry('resnet10t'), 'pretrained', [])
    assert not catalog.has_pretrained('resnet10t') and catalog.default_tag('resnet10t') is None
    assert 'resnet10t' in featzoo.list_models('resnet10t')
    assert not featzoo.list_models('resnet10t', pretrained=True)
    featzoo.create_model('resnet10t')  # still buildable
    with pytest.raises(ValueError, match='no published pretrained weights') as err:
        featzoo.create_model('resnet10t', pretrained=True)
    assert 'checkpoint_path' in str(err.value)
    with pytest.raises(ValueError, match='no published pretrained weights'):
        catalog.resolve_tag('resnet10t')
    cfg = catalog.pretrained_cfg('resnet10t')
    assert 'hf_hub_id' not in cfg and cfg['input_size'] == (3, 224, 224)


def test_unknown_names_raise():
    with pytest.raises(RuntimeError, match='resnet5O'):
        catalog.pretrained_tags('resnet5O')
    with pytest.raises(RuntimeError, match="'nope'"):
        catalog.pretrained_cfg('resnet50.nope')
    with pytest.raises(TypeError, match='overlay'):
        catalog.pretrained_cfg('resnet50', overlay=[('crop_pct', 1.0)])
