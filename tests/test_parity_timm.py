"""Parity with timm over the whole registry, in layers whose cost grows slowly with the number of architectures.

Every architecture timm also has (parametrized over ``featzoo.list_models()``; a new family needs no test code):

1. keys and shapes of the state_dict, and the feature levels at the natural output stride, against timm, both built
   on the meta device without weight initialization (milliseconds each); the dilated strides for one architecture
   per configuration (every architecture with ``-m slow``);
2. numerics (logits, forward_features, pre-logits, every feature level of the default wrapper) for one architecture
   per configuration: a family spec's row minus the keys that only scale it (``FamilySpec.configuration``), on its
   smallest row, batch 1, at the smallest input >= 64 px it takes (cut to two blocks per stage above 25 M parameters,
   where timm's builder takes the cut);
3. the same numerics for a per-commit sample of ``SAMPLE_SIZE`` other architectures under 100 M parameters, drawn by
   a seed printed in the test ids and the run's summary (``FEATZOO_SAMPLE_SEED=<seed>`` reruns a red sample);
4. with ``-m slow``: numerics for every architecture at every output stride timm takes and through every wrapper it
   claims; ``--family NAME[,NAME]`` runs the part of one or a few families. Architectures whose float32 weights
   exceed 1.5 GB compute on a depth-reduced instance (the same cut on both sides); their full size is checked by 1.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

import pytest
import timm

import featzoo
from featzoo import registry
from helpers import (CONFIGURATION_MAX_PARAMS, SAMPLE_MAX_PARAMS, assert_same_keys_and_shapes, by_size,
                     configurations, family_of, meta_device, natural_stride, num_params, numeric_parity, sample_seed,
                     sampled_architectures, state_shapes, timm_on_meta)

ALL = featzoo.list_models()
IN_TIMM = [name for name in ALL if timm.is_model(name)]
CONFIGURATIONS = configurations(IN_TIMM)  # each configuration's smallest architecture -> all of its architectures
SEED = sample_seed()
SAMPLE = sampled_architectures(SEED, [n for n in IN_TIMM
                                      if n not in CONFIGURATIONS and num_params(n) < SAMPLE_MAX_PARAMS])


def _dilated(name: str) -> List[int]:
    return sorted((s for s in featzoo.model_capabilities(name).output_strides if s != natural_stride(name)),
                  reverse=True)


def _param(name: str, *values: Any, id: str, slow: bool = False):
    marks = [pytest.mark.family(family_of(name))] + ([pytest.mark.slow] if slow else [])
    return pytest.param(name, *values, id=id, marks=marks)


def _levels(feature_info: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [dict(num_chs=d['num_chs'], reduction=d['reduction'], module=d['module']) for d in feature_info]


# ---- 1. keys, shapes and levels of every architecture, on the meta device ------------------------------------------

@pytest.mark.parametrize('name', [_param(n, id=n) for n in IN_TIMM])
def test_keys_shapes_and_levels_match_timm(name):
    ref = timm_on_meta(name)
    with meta_device():
        model = featzoo.create_model(name)
    assert_same_keys_and_shapes(state_shapes(model), state_shapes(ref), name)
    assert _levels(model.feature_info) == _levels(ref.feature_info), f'{name}: feature levels differ from timm'
    stored = registry.get_arch_entry(name)  # the index answers listing and capability queries without a build
    assert stored['feature_levels'][str(natural_stride(name))] == _levels(model.feature_info), f'{name}: stale index'
    assert stored['num_params'] == sum(p.numel() for p in model.parameters()), f'{name}: stale index num_params'


def _dilated_rows(names: Sequence[str], slow_unless: Sequence[str]) -> list:
    return [_param(n, s, id=f'{n}-os{s}', slow=n not in slow_unless) for n in names for s in _dilated(n)]


@pytest.mark.parametrize('name,output_stride', _dilated_rows(IN_TIMM, CONFIGURATIONS))
def test_dilated_keys_and_levels_match_timm(name, output_stride):
    """At every output stride the model claims: the stride-32 parameters and timm's levels (where timm's constructor
    takes the stride; families whose timm classifier does not check their dilated levels in their own file)."""
    ref = timm_on_meta(name, output_stride=output_stride)
    if ref is None:
        pytest.skip(f"timm's {name} takes no output_stride")
    with meta_device():
        model = featzoo.create_model(name, output_stride=output_stride)
        natural = featzoo.create_model(name)
    assert state_shapes(model) == state_shapes(natural), f'output_stride={output_stride} changed the parameters'
    assert _levels(model.feature_info) == _levels(ref.feature_info), f'{name} os{output_stride}: levels differ'


# ---- 2.-4. numerics -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('name', [_param(n, id=n) for n in CONFIGURATIONS])
def test_configuration_parity(name):
    """One architecture (the smallest) per configuration; ``CONFIGURATIONS[name]`` lists what it stands for. Above
    CONFIGURATION_MAX_PARAMS on its depth-reduced instance: the counts only scale a configuration."""
    numeric_parity(name, cut_above=CONFIGURATION_MAX_PARAMS)


@pytest.mark.parametrize('name', [_param(n, id=f'{n}-seed{SEED}') for n in SAMPLE])
def test_sampled_parity(name):
    """A different sample at every commit: over many commits every architecture gets computed in the default suite."""
    numeric_parity(name)


def _every_stride(name: str) -> list:
    return [_param(name, s, id=f'{name}-os{s}', slow=True) for s in [natural_stride(name)] + _dilated(name)]


@pytest.mark.parametrize('name,output_stride', [row for n in IN_TIMM for row in _every_stride(n)])
def test_parity_every_stride_and_wrapper(name, output_stride):
    numeric_parity(name, output_stride, feature_classes=featzoo.model_capabilities(name).feature_cls)


def test_the_layers_cover_the_registry():
    """Every architecture timm has is in exactly one configuration; the sample is drawn from the rest."""
    members = [n for group in CONFIGURATIONS.values() for n in group]
    assert sorted(members) == sorted(IN_TIMM)
    assert all(group[0] == rep and by_size(group) == group for rep, group in CONFIGURATIONS.items())
    assert not set(SAMPLE) & set(CONFIGURATIONS)
    assert all(num_params(n) < SAMPLE_MAX_PARAMS for n in SAMPLE)
    assert sampled_architectures(SEED, IN_TIMM) == sampled_architectures(SEED, list(reversed(IN_TIMM)))
