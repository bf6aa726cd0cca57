"""The family contract (featzoo/family.py, featzoo/models/CONTRACT.md), checked on every family module.

Parametrized over the family files on disk, so a new family is checked with no new test code. Every check builds
on the meta device (no tensor is allocated), one variant per family: the smallest by parameter count.
"""
from __future__ import annotations

import ast
import importlib
import pathlib

import pytest
import torch

import featzoo
from featzoo import registry
from featzoo.family import FEATURE_CLS_ALL, FamilySpec

MODELS_DIR = pathlib.Path(featzoo.__file__).parent / 'models'
FAMILY_FILES = sorted(p.stem for p in MODELS_DIR.glob('*.py') if not p.stem.startswith('_'))
EXPORT_CLAIMS = {'torch.export', 'dynamic_hw', 'onnx', 'compile'}
# what a family may import from featzoo: shared blocks, the contract, validators, and other families it builds on
ALLOWED_IMPORTS = ('featzoo.layers', 'featzoo.family', 'featzoo.checks', 'featzoo.models', 'featzoo.features.notrace',
                   'featzoo.features.info')
MODEL_METHODS = ('forward_features', 'forward_head', 'reset_classifier', 'get_classifier', 'set_grad_checkpointing',
                 'group_matcher', 'no_weight_decay')


def _smallest(spec: FamilySpec) -> str:
    return min(spec.variants, key=lambda name: registry.get_arch_entry(name)['num_params'])


def test_every_family_file_is_indexed_and_every_index_has_a_file():
    assert FAMILY_FILES == featzoo.list_modules()


@pytest.mark.parametrize('family', FAMILY_FILES)
def test_family_declares_its_spec(family):
    module = importlib.import_module(f'featzoo.models.{family}')
    spec = getattr(module, 'SPEC', None)
    assert isinstance(spec, FamilySpec), f'featzoo/models/{family}.py must end with SPEC = FamilySpec(...)'
    assert spec.name == family
    assert set(spec.variants) == set(featzoo.list_models(module=family))
    for variant in spec.variants:
        assert set(spec.export_for(variant)) <= EXPORT_CLAIMS, (variant, spec.export_for(variant))
    for name, row in spec.variants.items():
        assert isinstance(row, dict) and all(isinstance(k, str) for k in row), name
        wrappers = spec.feature_cls_for(name)
        assert wrappers and set(wrappers) <= set(FEATURE_CLS_ALL), (name, wrappers)
        assert spec.default_feature_cls_for(name) in wrappers, name
        strides = spec.output_strides_for(name)
        assert strides and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in strides), name
        assert spec.input_multiple_for(name) >= 1 and spec.min_input_size_for(name) >= 1, name
        if 'getter' in wrappers:
            assert spec.img_size_arg_for(name) in (None, 'img_size'), name


@pytest.mark.parametrize('family', FAMILY_FILES)
def test_family_imports_nothing_downstream(family):
    """A family knows nothing of the factory, the registry, the weights layer or the wrappers."""
    tree = ast.parse((MODELS_DIR / f'{family}.py').read_text(encoding='utf-8'))
    offending = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                target = node.module or ''
            elif node.level == 1:
                target = f'featzoo.models.{node.module}' if node.module else 'featzoo.models'
            else:
                target = 'featzoo' + (f'.{node.module}' if node.module else '')
            names = [f'{target}.{a.name}' for a in node.names] if target == 'featzoo' else [target]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        offending += [n for n in names if n.split('.')[0] in ('featzoo', 'timm', 'torchvision')
                      and not n.startswith(ALLOWED_IMPORTS)]
    assert not offending, f'featzoo/models/{family}.py imports {offending}'


@pytest.mark.parametrize('family', FAMILY_FILES)
def test_family_model_honours_the_contract(family):
    spec = registry.family_spec(family)
    name = _smallest(spec)
    with torch.device('meta'):
        model = spec.build(name)
        headless = spec.build(name, num_classes=0)
    for method in MODEL_METHODS:
        assert callable(getattr(model, method, None)), f'{name} lacks {method}()'
    if 'getter' in spec.feature_cls_for(name):
        assert callable(getattr(model, 'forward_intermediates', None)), name
        assert callable(getattr(model, 'prune_intermediate_layers', None)), name
    assert model.num_classes == spec.row(name).get('num_classes', 1000) and headless.num_classes == 0
    assert isinstance(model.num_features, int) and isinstance(model.head_hidden_size, int)
    levels = list(model.feature_info)
    assert levels == registry.get_arch_entry(name)['feature_levels'][str(max(spec.output_strides_for(name)))]
    # the list, dict, hook and fx wrappers tap these names; a getter-only family (HRNet) may keep timm's level names
    # for maps that no single module outputs (its branches come out of the last fusion together)
    tapped_by_name = set(spec.feature_cls_for(name)) != {'getter'}
    for level in levels:
        assert set(level) >= {'num_chs', 'reduction', 'module'}, level
        if tapped_by_name:
            model.get_submodule(level['module'])
    assert [lv['reduction'] for lv in levels] == sorted(lv['reduction'] for lv in levels), 'reductions must ascend'


@pytest.mark.parametrize('family', FAMILY_FILES)
def test_common_arguments_are_checked_by_the_shared_build(family):
    spec = registry.family_spec(family)
    name = _smallest(spec)
    with torch.device('meta'):
        with pytest.raises(ValueError, match='num_classes=-1'):
            spec.build(name, num_classes=-1)
        with pytest.raises(ValueError, match='drop_rate=1.5'):
            spec.build(name, drop_rate=1.5)
        with pytest.raises(ValueError, match=r'output_stride=3 .* valid: \('):
            spec.build(name, output_stride=3)
        with pytest.raises(KeyError, match=f'unknown {family} variant'):
            spec.build(name + '_nope')
        with pytest.raises(TypeError, match='colour'):
            spec.build(name, colour='red')
