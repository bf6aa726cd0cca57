"""Every user mistake is a clear error: the right exception type, a message naming the bad value and what is valid.

This file fills the gaps left by the other test files. Coverage of the issue's list (point 1), test by test:

- unknown model names, closest names suggested: test_registry::test_unknown_names_suggest_close_ones,
  test_catalog::test_unknown_names_raise, test_factory::test_bad_model_name_types, here
  test_unknown_names_suggest_close_ones_at_every_entry_point and test_bad_model_name_types
- unknown pretrained tags, closest tags suggested: test_registry::test_unknown_names_suggest_close_ones, here
  test_unknown_tags_suggest_close_ones
- out_indices out of range, empty, duplicated: test_factory::test_bad_arguments (resnet18),
  test_features::test_bad_out_indices (FeatureInfo), here test_bad_out_indices_in_every_family (every family,
  negative aliases, int form, wrong types) and test_out_indices_checked_against_a_resized_model
- output_stride the model cannot do: test_factory::test_bad_arguments (resnet18), here
  test_unsupported_output_stride_in_every_family
- unknown feature_cls, or one the family cannot serve: test_factory::test_bad_arguments (resnet18), here
  test_feature_cls_the_family_cannot_serve (every family and every wrapper it lacks)
- in_chans < 1, num_classes < 0: test_factory::test_bad_arguments, here test_bad_int_arguments (negative, bool,
  float and str values)
- missing files and directories given as weights: test_loading::test_missing_file_and_directory
  (checkpoint_path), test_hub::test_local_dir_errors_name_the_problem (local-dir:), here
  test_missing_weights_through_every_door (pretrained_cfg_overlay file, load_checkpoint, wrong path types)
- corrupt or truncated safetensors: test_loading::test_corrupt_truncated_and_empty_files, here
  test_hostile_or_damaged_files (lying headers, truncation under features_only, tensor-free and foreign-format files)
- weights of another architecture: test_loading::test_weights_of_another_architecture (resnet50 -> resnet18), here
  test_weights_of_another_family (across families, into feature wrappers) and test_weights_of_another_width
- conflicting arguments to create_model: test_factory::test_bad_arguments (feature arguments without
  features_only), test_loading::test_pretrained_and_checkpoint_conflict, here test_conflicting_feature_arguments
- conflicting arguments to the FX functions: test_fx::test_bad_return_node_requests_are_value_errors
  (create_feature_extractor, get_graph_node_names, get_graph_node_info), here test_conflicting_fx_arguments
  (FeatureFxNet through create_model)
- offline Hub names: test_hub::test_offline_miss_fails_fast_naming_repo_file_and_remedies (published tags),
  test_hub::test_malformed_hub_ids, here test_offline_hub_repo_name (hf-hub: names)
- capability filters: test_registry::test_capabilities_from_index (unknown capability), here
  test_capability_filters_reject_impossible_values
- never an assert, validation before any family code runs: here test_no_assert_statements_in_the_package and
  test_errors_survive_python_O_before_family_import
- random invalid combinations across the registry: test_properties::test_invalid_combinations_raise_clear_errors
"""
from __future__ import annotations

import ast
import json
import os
import pathlib
import re
import struct
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file

import featzoo
from featzoo import registry
from featzoo.factory import FEATURE_CLS_ALL

FAMILIES = featzoo.list_modules()
CLEAR_ERRORS = (ValueError, TypeError, KeyError, FileNotFoundError, RuntimeError)


def _first(family: str) -> str:
    """The first registered name of a family: argument validation never builds it, so size does not matter."""
    return featzoo.list_models(module=family)[0]


def _levels(name: str) -> int:
    return len(featzoo.model_capabilities(name).feature_levels)


def _save(model: torch.nn.Module, path: pathlib.Path) -> str:
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


# ---- names -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('typo,expected', [('resnet5O', 'resnet50'), ('convnext_tinny', 'convnext_tiny'),
                                           ('vit_tiny_patch16', 'vit_tiny_patch16_224'),
                                           ('efficientnet-b0', 'efficientnet_b0')])
def test_unknown_names_suggest_close_ones_at_every_entry_point(typo, expected):
    entry_points = (featzoo.create_model, featzoo.model_capabilities, featzoo.get_pretrained_cfg,
                    featzoo.model_entrypoint)
    for call in entry_points:
        with pytest.raises(featzoo.UnknownModelError) as err:
            call(typo)
        assert repr(typo) in str(err.value) and repr(expected) in str(err.value), (call.__name__, str(err.value))
        assert isinstance(err.value, RuntimeError)
    assert not featzoo.is_model(typo)


def test_unknown_tags_suggest_close_ones():
    with pytest.raises(featzoo.UnknownModelError, match=r"'a1_in1kk'.*'a1_in1k'"):
        featzoo.create_model('resnet50.a1_in1kk')
    with pytest.raises(featzoo.UnknownModelError, match=r"'augreg_in21k_ft_in1'.*'augreg_in21k_ft_in1k'"):
        featzoo.model_capabilities('vit_tiny_patch16_224.augreg_in21k_ft_in1')
    untagged = [n for n in featzoo.list_models() if not registry.get_arch_entry(n).get('pretrained')]
    if untagged:  # an architecture without published weights says so instead of listing nothing
        with pytest.raises(featzoo.UnknownModelError, match='no published weights'):
            featzoo.create_model(f'{untagged[0]}.in1k')


@pytest.mark.parametrize('name,error', [(None, TypeError), (b'resnet18', TypeError), (['resnet18'], TypeError),
                                        ('', featzoo.UnknownModelError), ('hf-hub:', TypeError),
                                        ('local-dir:', ValueError), ('hf-hub:a/b/c', ValueError)])
def test_bad_model_name_types(name, error):
    with pytest.raises(error):
        featzoo.create_model(name)
    assert not featzoo.is_model(name)


# ---- feature arguments, per family (validation happens before building, so these are cheap) -----------------------

@pytest.mark.parametrize('family', FAMILIES)
def test_bad_out_indices_in_every_family(family):
    name = _first(family)
    n = _levels(name)
    valid = f'{-n} to {n - 1}'
    cases = [
        ((n,), ValueError, rf'entry {n} is out of range .*{n} feature levels; valid: {valid}'),
        ((-n - 1,), ValueError, rf'entry {-n - 1} is out of range .*valid: {valid}'),
        ((), ValueError, 'empty'),
        ((0, 0), ValueError, r'\[0\] more than once'),
        ((0, -n), ValueError, r'\[0\] more than once'),  # a negative alias of a level already named
        (n + 1, ValueError, rf'out_indices={n + 1} .*valid: 1 to {n}'),
        (0, ValueError, rf'out_indices=0 .*valid: 1 to {n}'),
        ('12', TypeError, "got '12'"),
        ((1.0,), TypeError, r'got 1\.0'),
        (True, TypeError, 'got True'),
    ]
    for bad, error, match in cases:
        with pytest.raises(error, match=match):
            featzoo.create_model(name, features_only=True, out_indices=bad)


def test_out_indices_mapping_is_rejected():
    with pytest.raises(TypeError, match='out_indices'):
        featzoo.create_model('resnet10t', features_only=True, out_indices={1: 'layer1'})


def test_out_indices_checked_against_a_resized_model():
    # constructor overrides change the number of levels: the check runs against the model actually built
    with pytest.raises(ValueError, match=r'entry 5 is out of range for a model with 4 feature levels; valid: -4 to 3'):
        featzoo.create_model('vit_tiny_patch16_224', depth=4, features_only=True, out_indices=(5,))


@pytest.mark.parametrize('family', FAMILIES)
def test_unsupported_output_stride_in_every_family(family):
    name = _first(family)
    strides = featzoo.model_capabilities(name).output_strides
    for bad in sorted({4, 8, 12, 64} - set(strides)) + ['16', 16.0, True]:
        with pytest.raises(ValueError) as err:
            featzoo.create_model(name, output_stride=bad)
        message = str(err.value)
        assert f'output_stride={bad!r}' in message and str(tuple(strides)) in message, message


@pytest.mark.parametrize('family', FAMILIES)
def test_feature_cls_the_family_cannot_serve(family):
    name = _first(family)
    allowed = featzoo.model_capabilities(name).feature_cls
    for missing in sorted(set(FEATURE_CLS_ALL) - set(allowed)):
        with pytest.raises(ValueError) as err:
            featzoo.create_model(name, features_only=True, feature_cls=missing)
        assert f"feature_cls={missing!r} cannot serve {name!r}" in str(err.value)
        assert str(tuple(allowed)) in str(err.value)
    with pytest.raises(ValueError, match=r"unknown feature_cls 'pyramid'.*" + re.escape(str(tuple(allowed)))):
        featzoo.create_model(name, features_only=True, feature_cls='pyramid')
    with pytest.raises(TypeError, match='feature_cls must be a str'):
        featzoo.create_model(name, features_only=True, feature_cls=1)


@pytest.mark.parametrize('kwargs,error,match', [
    (dict(in_chans=-1), ValueError, r'in_chans=-1 .*>= 1'),
    (dict(in_chans=True), TypeError, r'in_chans .*got True'),
    (dict(in_chans=3.0), TypeError, r'in_chans .*got 3\.0'),
    (dict(in_chans='3'), TypeError, r"in_chans .*got '3'"),
    (dict(num_classes=-5), ValueError, r'num_classes=-5 .*>= 0'),
    (dict(num_classes=True), TypeError, r'num_classes .*got True'),
    (dict(num_classes=10.0), TypeError, r'num_classes .*got 10\.0'),
    (dict(drop_rate='0.1'), TypeError, 'drop_rate'),
    (dict(drop_path_rate=1.0), ValueError, r'drop_path_rate=1\.0 .*\[0, 1\)'),
    (dict(features_only='yes'), TypeError, "features_only .*'yes'"),
])
def test_bad_int_arguments(kwargs, error, match):
    for name in ('resnet10t', 'vit_tiny_patch16_224'):
        with pytest.raises(error, match=match):
            featzoo.create_model(name, **kwargs)


@pytest.mark.parametrize('kwargs,match', [
    (dict(features_only=True, return_nodes=['layer1']), "needs feature_cls='fx'"),
    (dict(features_only=True, feature_cls='fx', return_nodes=['layer1'], out_indices=(1,)), 'not both'),
    (dict(features_only=True, out_map=['a', 'b', 'c', 'd', 'e']), "use feature_cls='dict'"),
    (dict(features_only=True, feature_cls='dict', out_map=['a', 'b']), 'out_map has 2 names but 5'),
    (dict(features_only=True, feature_cls='hook', out_map=['a', 'a', 'b', 'c', 'd']), 'repeats a name'),
    (dict(features_only=True, feature_pyramid=True), "needs feature_cls='getter', not 'list'"),
    (dict(features_only=True, norm=True), r"\['norm'\] do not apply to feature_cls='list'"),
    (dict(features_only=True, feature_cls='dict', out_as_dict=True), r"\['out_as_dict'\] do not apply"),
    (dict(out_as_dict=True), r"\['out_as_dict'\] only apply with features_only=True"),
    (dict(output_fmt='NHWC'), r"\['output_fmt'\] only apply with features_only=True"),
    (dict(out_map=['a']), r"\['out_map'\] only apply with features_only=True"),
    (dict(features_only=True, feature_cls='hook', output_fmt='NLC'), "unknown output_fmt 'NLC'"),
    (dict(freeze_bn='sometimes'), "unknown freeze_bn 'sometimes'"),
])
def test_conflicting_feature_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        featzoo.create_model('resnet10t', **kwargs)


def test_conflicting_feature_arguments_for_transformers_and_getter_families():
    with pytest.raises(ValueError, match='plain ViT families only'):
        featzoo.create_model('convnext_atto', features_only=True, feature_cls='getter', feature_pyramid=True)
    with pytest.raises(ValueError, match=r"\['out_as_dict'\] do not apply to feature_cls='getter'"):
        featzoo.create_model('vit_tiny_patch16_224', depth=2, features_only=True, out_as_dict=True)
    with pytest.raises(TypeError, match='out_map must be a list or tuple'):
        featzoo.create_model('swin_tiny_patch4_window7_224', features_only=True, out_map='abcd')


def test_conflicting_fx_arguments():
    base = dict(features_only=True, feature_cls='fx')
    with pytest.raises(ValueError, match='out_map names feature levels'):
        featzoo.create_model('resnet10t', return_nodes=['layer1'], out_map=['a'], **base)
    with pytest.raises(ValueError, match='output_fmt applies to feature levels'):
        featzoo.create_model('resnet10t', return_nodes=['layer1'], output_fmt='NHWC', **base)
    with pytest.raises(ValueError, match="needs feature_cls='getter'"):
        featzoo.create_model('vit_tiny_patch16_224', depth=2, feature_pyramid=True, **base)
    with pytest.raises(ValueError, match=r"'layer9' is not present.*closest names"):
        featzoo.create_model('resnet10t', return_nodes=['layer9'], **base)
    with pytest.raises(TypeError, match='out_as_dict must be True or False'):
        featzoo.create_model('resnet10t', out_as_dict='yes', **base)


def test_unknown_constructor_arguments_in_every_family():
    for family in FAMILIES:
        with pytest.raises(TypeError, match='colour'):
            featzoo.create_model(_first(family), colour='blue')


# ---- capabilities --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('supports,match', [
    (('output_stride8',), "look like 'output_stride=8'"),
    (('colour=blue',), "unknown capability 'colour'"),
])
def test_capability_filters_reject_malformed_requests(supports, match):
    with pytest.raises(ValueError, match=match):
        featzoo.list_models(supports=supports)


@pytest.mark.parametrize('supports', ['output_stride=eight', 'feature_cls=pyramid', 'export=tflite'])
def test_capability_filters_reject_impossible_values(supports):
    with pytest.raises(ValueError, match=supports.split('=')[1]):
        featzoo.list_models(supports=(supports,))


# ---- weights -------------------------------------------------------------------------------------------------------

def test_missing_weights_through_every_door(tmp_path):
    missing = tmp_path / 'nope.safetensors'
    with pytest.raises(FileNotFoundError, match='nope.safetensors'):
        featzoo.create_model('resnet10t', pretrained=True, pretrained_cfg_overlay=dict(file=str(missing)))
    with pytest.raises(IsADirectoryError, match=f"'local-dir:{tmp_path}'"):
        featzoo.create_model('resnet10t', pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path)))
    model = featzoo.create_model('resnet10t')
    with pytest.raises(FileNotFoundError, match='nope.safetensors'):
        featzoo.load_checkpoint(model, missing)
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        featzoo.load_checkpoint(model, tmp_path)
    with pytest.raises(TypeError, match='checkpoint path must be a str or path, got int: 5'):
        featzoo.load_checkpoint(model, 5)
    with pytest.raises(TypeError, match='checkpoint path must be a str or path, got int: 5'):
        featzoo.create_model('resnet10t', checkpoint_path=5)


def test_hostile_or_damaged_files(tmp_path):
    good = _save(featzoo.create_model('resnet10t'), tmp_path / 'good.safetensors')
    data = pathlib.Path(good).read_bytes()
    header_len = struct.unpack('<Q', data[:8])[0]
    header = json.loads(data[8:8 + header_len])
    bad = {}
    # a header that claims an absurd size, and one whose tensor points far past the end of the file
    bad['huge_header.safetensors'] = struct.pack('<Q', 2 ** 60) + b'{}'
    lying = dict(header, **{'conv1.0.weight': dict(header['conv1.0.weight'], data_offsets=[0, 10 ** 12])})
    lying_bytes = json.dumps(lying).encode()
    bad['lying_offsets.safetensors'] = struct.pack('<Q', len(lying_bytes)) + lying_bytes + data[8 + header_len:]
    bad['text.safetensors'] = b'hello'
    bad['zeros.pth'] = bytes(64)
    bad['safetensors_named_bin.bin'] = data  # right bytes, wrong name: not unpickled, not silently accepted
    for file_name, content in bad.items():
        (tmp_path / file_name).write_bytes(content)
        with pytest.raises(RuntimeError, match=file_name):
            featzoo.create_model('resnet10t', checkpoint_path=str(tmp_path / file_name))
    # truncation is found even when features_only would read only the first tensors
    (tmp_path / 'truncated.safetensors').write_bytes(data[:-1000])
    with pytest.raises(RuntimeError, match='truncated.safetensors'):
        featzoo.create_model('resnet10t', features_only=True, out_indices=(0,),
                             checkpoint_path=str(tmp_path / 'truncated.safetensors'))
    torch.save({'epoch': 3, 'lr': 0.1}, tmp_path / 'no_tensors.pth')
    with pytest.raises(RuntimeError, match=r"no_tensors.pth' holds no tensors \(top-level keys: \['epoch', 'lr'\]\)"):
        featzoo.create_model('resnet10t', checkpoint_path=str(tmp_path / 'no_tensors.pth'))
    torch.save([torch.ones(1)], tmp_path / 'a_list.pth')
    with pytest.raises(RuntimeError, match="a_list.pth' is a list, not a state_dict"):
        featzoo.create_model('resnet10t', checkpoint_path=str(tmp_path / 'a_list.pth'))
    save_file({}, str(tmp_path / 'empty_header.safetensors'))
    with pytest.raises(RuntimeError, match=r"empty_header.safetensors' lacks \d+ key\(s\)"):
        featzoo.create_model('resnet10t', checkpoint_path=str(tmp_path / 'empty_header.safetensors'))


@pytest.mark.parametrize('source,target,kwargs', [
    ('vit_tiny_patch16_224', 'resnet10t', dict(features_only=True, out_indices=(1,))),
    ('resnet10t', 'vit_tiny_patch16_224', dict(features_only=True)),
    ('resnet10t', 'convnext_atto', {}),
    ('convnext_atto', 'swin_tiny_patch4_window7_224', dict(features_only=True)),
])
def test_weights_of_another_family(tmp_path, source, target, kwargs):
    small = dict(depth=1) if source.startswith('vit') else {}
    path = _save(featzoo.create_model(source, **small), tmp_path / f'{source}.safetensors')
    with pytest.raises(RuntimeError, match=rf"{source}.safetensors' does not fit this model: unexpected keys .*"
                                           'another architecture'):
        featzoo.create_model(target, checkpoint_path=path, **kwargs)


def test_weights_of_another_width(tmp_path):
    path = _save(featzoo.create_model('vit_tiny_patch16_224', depth=1), tmp_path / 'tiny.safetensors')
    with pytest.raises(RuntimeError, match=r"'[\w.]+' has shape \([\d, ]+\) in the file but \([\d, ]+\) in the model"):
        featzoo.create_model('deit_small_patch16_224', depth=1, checkpoint_path=path)
    with pytest.raises(RuntimeError, match=r"tiny.safetensors' lacks \d+ key\(s\) .*'blocks.1."):
        featzoo.create_model('vit_tiny_patch16_224', depth=2, features_only=True, out_indices=(0, 1),
                             checkpoint_path=path)


def test_offline_hub_repo_name(tmp_path, monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('HF_HOME', str(tmp_path / 'hf_home'))
    monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path / 'hf_home' / 'hub'))
    monkeypatch.setenv('HF_ENDPOINT', 'http://127.0.0.1:9')  # nothing may be requested
    for name in ('hf-hub:someone/backbone', 'hf-hub:someone/backbone@v2'):
        with pytest.raises(FileNotFoundError) as err:
            featzoo.create_model(name, pretrained=True)
        message = str(err.value)
        assert "'someone/backbone'" in message and 'config.json' in message and 'HF_HUB_OFFLINE' in message, message
        assert isinstance(err.value, featzoo.PretrainedUnavailableError)


# ---- no asserts, validation before family code --------------------------------------------------------------------

def test_no_assert_statements_in_the_package():
    root = pathlib.Path(featzoo.__file__).parent
    found = []
    for path in sorted(root.rglob('*.py')):
        tree = ast.parse(path.read_text(encoding='utf-8'), filename=str(path))
        found += [f'{path.relative_to(root)}:{node.lineno}' for node in ast.walk(tree) if isinstance(node, ast.Assert)]
    assert not found, f'assert statements vanish under python -O; raise a clear error instead: {found}'


def test_errors_survive_python_O_before_family_import():
    code = textwrap.dedent('''
        import sys, featzoo
        calls = [
            dict(model_name='convnext_atto', output_stride=4),
            dict(model_name='convnext_atto', features_only=True, out_indices=(9,)),
            dict(model_name='convnext_atto', features_only=True, out_indices=(1, -3)),
            dict(model_name='convnext_atto', in_chans=0),
            dict(model_name='convnext_atto', num_classes=-1),
            dict(model_name='convnext_atto', features_only=True, feature_cls='pyramid'),
            dict(model_name='vit_tiny_patch16_224', features_only=True, feature_cls='list'),
            dict(model_name='convnext_atto', checkpoint_path='/nonexistent/weights.safetensors'),
            dict(model_name='convnext_atoo'),
        ]
        for kwargs in calls:
            try:
                featzoo.create_model(**kwargs)
            except Exception as exc:
                print(type(exc).__name__)
            else:
                print('accepted')
        print(sorted(m for m in sys.modules if m.startswith('featzoo.models.')))
    ''')
    out = subprocess.run([sys.executable, '-O', '-c', code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONWARNINGS='ignore'))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    assert lines[:9] == ['ValueError'] * 7 + ['FileNotFoundError', 'UnknownModelError'], out.stdout
    assert lines[9:] == ['[]'], f'a family module was imported before validation: {out.stdout}'
