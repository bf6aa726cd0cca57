"""FeatureInfo and the feature wrappers: index rules, agreement between wrappers, pruning, state_dict keys."""
from __future__ import annotations

import copy
import itertools
import os
import random
import shutil
from typing import List, Tuple

import pytest
import torch

import featzoo
from featzoo.features.info import FeatureInfo, normalize_out_indices
from helpers import (assert_equal, check_feature_shapes, input_side_of, representatives, save_state, slow_matrix,
                     slow_overrides)

ALL = slow_matrix()  # one architecture per configuration; FEATZOO_SLOW_EVERY_VARIANT=1 for all
LEVELS = [dict(num_chs=c, reduction=r, module=f'l{i}') for i, (c, r) in enumerate([(8, 2), (16, 4), (32, 8)])]


FAMILY_REPS = representatives()


@pytest.mark.parametrize('given,expected', [((2, 0), (0, 2)), ((-1, 0), (0, 2)), (1, (2,)), (3, (0, 1, 2)),
                                            ([1], (1,))])
def test_out_indices_are_normalized(given, expected):
    assert normalize_out_indices(given, 3) == expected
    info = FeatureInfo(LEVELS, given)
    assert info.out_indices == expected
    assert info.module_name() == [f'l{i}' for i in expected]


@pytest.mark.parametrize('bad,error', [((), ValueError), ((0, 0), ValueError), ((-1, 2), ValueError),
                                       ((3,), ValueError), ((-4,), ValueError), (0, ValueError), (4, ValueError),
                                       ('12', TypeError), ((1.0,), TypeError), (True, TypeError)])
def test_bad_out_indices(bad, error):
    with pytest.raises(error, match='out_indices'):
        normalize_out_indices(bad, 3)


def test_feature_info_api():
    info = FeatureInfo(LEVELS, (0, 2))
    assert info.channels() == [8, 32] and info.reduction() == [2, 8]
    assert info.channels(1) == 32 and info.get('module', [0, 1]) == ['l0', 'l2']
    assert info.get_dicts(keys=('num_chs',)) == [{'num_chs': 8}, {'num_chs': 32}]
    assert len(info) == info.len() == 2 and info[1]['num_chs'] == 16
    assert info.from_other(1).channels() == [32]


def test_seed_resnest_like_defaults():
    m = featzoo.create_model('resnet50', features_only=True)
    out = m(torch.randn(2, 3, 224, 224))
    assert [tuple(o.shape) for o in out] == [(2, 64, 112, 112), (2, 256, 56, 56), (2, 512, 28, 28),
                                             (2, 1024, 14, 14), (2, 2048, 7, 7)]


@pytest.mark.parametrize('name', FAMILY_REPS)
def test_every_wrapper_agrees(name):
    caps = featzoo.model_capabilities(name)
    torch.manual_seed(0)
    full = featzoo.create_model(name).eval()
    state = full.state_dict()
    x = torch.randn(1, 3, 64, 64)
    outputs = {}
    for cls in caps.feature_cls:
        if cls == 'fx':
            pytest.importorskip('featzoo.features.fx')
        model = featzoo.create_model(name, features_only=True, feature_cls=cls).eval()
        missing, unexpected = model.load_state_dict(state, strict=False)
        assert not missing, f'{cls}: missing {missing[:3]}'
        kept = set(model.state_dict())
        assert kept <= set(state), f'{cls}: keys not in the full model: {sorted(kept - set(state))[:3]}'
        with torch.no_grad():
            out = model(x)
        outputs[cls] = list(out.values()) if isinstance(out, dict) else list(out)
        check_feature_shapes(model, x)
    reference = outputs[caps.default_feature_cls]
    for cls, feats in outputs.items():
        assert len(feats) == len(reference)
        for a, b in zip(feats, reference):
            assert_equal(a, b, f'{name} {cls}')


def test_dict_wrapper_keys_and_out_map():
    m = featzoo.create_model('resnet18', features_only=True, feature_cls='dict', out_indices=(1, 3))
    assert list(m(torch.randn(1, 3, 64, 64))) == ['layer1', 'layer3']
    m = featzoo.create_model('resnet18', features_only=True, feature_cls='dict', out_indices=(1, 3),
                             out_map=['c2', 'c4'])
    assert list(m(torch.randn(1, 3, 64, 64))) == ['c2', 'c4']
    with pytest.raises(ValueError, match='out_map'):
        featzoo.create_model('resnet18', features_only=True, feature_cls='dict', out_indices=(1, 3), out_map=['a'])


def test_hook_wrapper_dict_and_nhwc():
    m = featzoo.create_model('resnet18', features_only=True, feature_cls='hook', out_as_dict=True,
                             output_fmt='NHWC')
    out = m(torch.randn(1, 3, 64, 64))
    assert list(out) == ['act1', 'layer1', 'layer2', 'layer3', 'layer4']
    assert out['layer4'].shape == (1, 2, 2, 512)


def test_pruning_drops_modules_and_parameters():
    full = featzoo.create_model('resnet50')
    m = featzoo.create_model('resnet50', features_only=True, out_indices=(1, 2))
    names = [n for n, _ in m.named_children()]
    assert names == ['conv1', 'bn1', 'act1', 'maxpool', 'layer1', 'layer2']
    assert not any(k.startswith(('layer3', 'layer4', 'fc')) for k in m.state_dict())
    assert sum(p.numel() for p in m.parameters()) < sum(p.numel() for p in full.parameters()) / 4


def _levels_inside_blocks():
    """(name, level) for every family representative whose hook level sits inside a block rather than after it."""
    cases = []
    for name in FAMILY_REPS:
        caps = featzoo.model_capabilities(name)
        if 'hook' not in caps.feature_cls:
            continue
        for i, level in enumerate(caps.feature_levels):
            with torch.device('meta'):
                net = featzoo.create_model(name, features_only=True, feature_cls='hook', out_indices=(i,))
            if net.steps[-1] != level['module']:
                cases.append((name, i))
    return cases


@pytest.mark.parametrize('name,level', _levels_inside_blocks() or [pytest.param('xception41', 0, marks=pytest.mark.skip)])
def test_hook_net_stops_at_a_level_inside_a_block(name, level):
    """Nothing after the last tapped module runs: every kept parameter gets a gradient and outputs stay equal."""
    torch.manual_seed(0)
    full = featzoo.create_model(name, features_only=True, feature_cls='hook').eval()
    cut = featzoo.create_model(name, features_only=True, feature_cls='hook', out_indices=(level,)).eval()
    cut.load_state_dict({k: v for k, v in full.state_dict().items() if k in cut.state_dict()})
    assert cut.dropped_modules, 'a level inside a block leaves part of the block to drop'
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert_equal(cut(x)[0], full(x)[level], f'{name} level {level}')
    cut.train()
    cut(x)[0].square().mean().backward()
    missing = [n for n, p in cut.named_parameters() if p.grad is None]
    assert not missing, f'parameters after the last tapped module still in {name}: {missing[:5]}'


def test_wrapper_train_eval_and_deepcopy():
    m = featzoo.create_model('resnet18', features_only=True, feature_cls='hook')
    m.eval()
    assert not m.training and not m.layer1.training and not m.model_ref().training
    m.train()
    assert m.layer1[0].bn1.training and m.model_ref().training
    m2 = copy.deepcopy(m).eval()
    m.eval()
    x = torch.randn(1, 3, 64, 64)
    for a, b in zip(m(x), m2(x)):
        assert_equal(a, b, 'deepcopy')


def test_wrapper_follows_to_and_load():
    m = featzoo.create_model('resnet18', features_only=True).eval()
    m.to(torch.float64)
    assert m.model_ref().layer1[0].conv1.weight.dtype == torch.float64
    assert m(torch.randn(1, 3, 64, 64, dtype=torch.float64))[0].dtype == torch.float64


def test_grad_checkpointing_wrapper_gradients_equal():
    """A pruned wrapper's checkpointing recomputes its steps in the backward pass and gives the same gradients."""
    from test_finetune import backward_with_recompute_count
    torch.manual_seed(0)
    m = featzoo.create_model('resnet18', features_only=True, out_indices=(2, 4)).train()
    for module in m.modules():  # batch statistics would change between the two passes
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
    x = torch.randn(2, 3, 64, 64)
    assert backward_with_recompute_count(m, x) == 0
    ref = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad(set_to_none=True)
    m.set_grad_checkpointing(True)
    assert backward_with_recompute_count(m, x) > 0, 'set_grad_checkpointing(True) recomputed nothing'
    for n, p in m.named_parameters():
        assert_equal(p.grad, ref[n], n)


def _out_indices_cases(levels: int, exhaustive_up_to: int = 6, samples: int = 20) -> List[Tuple[int, ...]]:
    """Every non-empty subset of the levels when there are few; for transformers with a level per block (12 or 24,
    i.e. 4095 or 16.7 million subsets) every single level, every adjacent pair, first and last, all of them, and a
    fixed random sample of larger subsets."""
    if levels <= exhaustive_up_to:
        return [c for r in range(1, levels + 1) for c in itertools.combinations(range(levels), r)]
    cases = {(i,) for i in range(levels)} | {(i, i + 1) for i in range(levels - 1)}
    cases |= {(0, levels - 1), tuple(range(levels))}
    rng = random.Random(levels)
    wanted = len(cases) + samples
    while len(cases) < wanted:
        cases.add(tuple(sorted(rng.sample(range(levels), rng.randint(3, levels - 1)))))
    return sorted(cases, key=lambda c: (len(c), c))


@pytest.mark.slow
@pytest.mark.parametrize('name', ALL)
def test_every_out_indices_combination(name):
    caps = featzoo.model_capabilities(name)
    overrides = slow_overrides(name)
    # one random initialization, saved; each combination loads only what its pruned backbone keeps (random init
    # of the big variants 100+ times took most of an hour)
    full = featzoo.create_model(name, **overrides)
    levels = list(full.feature_info)  # the shallow build's levels (a ViT has one per block)
    n = len(levels)
    path = save_state(full.state_dict())
    del full
    side = input_side_of(name, max(level['reduction'] for level in levels))
    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    reference = {}
    try:
        for combo in _out_indices_cases(n):
            for cls in caps.feature_cls:
                if cls == 'fx':
                    continue
                m = featzoo.create_model(name, features_only=True, out_indices=combo, feature_cls=cls,
                                         checkpoint_path=path, **overrides).eval()
                assert m.feature_info.out_indices == combo
                out = check_feature_shapes(m, x)
                # the same level is the same tensor whichever other levels are requested, in every wrapper
                for index, tensor in zip(combo, out):
                    assert_equal(tensor, reference.setdefault(index, tensor), f'{name} level {index} {cls}')
    finally:
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)
