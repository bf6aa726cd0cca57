"""BEiT / BEiT v2 against timm: what is particular to the family.

Keys, shapes and numerics of every architecture are tests/test_parity_timm.py's, the intermediates and the model
contract tests/test_models.py's. Here: the relative-position tables at another input size (featzoo resamples them in
the forward; timm's reference is its ``set_input_size``), per block and shared, with an absolute table; gradients
through the resampling; ``set_input_size``; the checkpoint filter; computed buffers after a meta build; the class
token of the intermediates; input-size errors. Models are depth-reduced.
"""
from __future__ import annotations

from typing import Any, Dict

import pytest
import torch

import featzoo
from featzoo.models import beit
from helpers import assert_equal, build_timm_reference, check_feature_shapes, save_state

timm = pytest.importorskip('timm')

FAMILY = 'beit'
NAMES = featzoo.list_models(module=FAMILY)
NAME = 'beitv2_base_patch16_224'
SMALL = dict(depth=2, img_size=64)  # a 4 x 4 grid: tables of 52 rows
# the variants timm builds but publishes none of: a table shared by all blocks, and an absolute position table
SHARED = dict(SMALL, use_rel_pos_bias=False, use_shared_rel_pos_bias=True, use_abs_pos_emb=True)


def _input(height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(seed))


def _pair(kwargs: Dict[str, Any], name: str = NAME):
    ref = build_timm_reference(name, **kwargs)
    with torch.device('meta'):
        model = featzoo.create_model(name, **kwargs)
    model.load_state_dict(ref.state_dict(), strict=True, assign=True)
    model.blocks.apply(lambda m: m.init_non_persistent_buffers() if isinstance(m, beit.BeitAttention) else None)
    if model.rel_pos_bias is not None:
        model.rel_pos_bias.init_non_persistent_buffers()
    return ref, model.eval()


def _check_outputs(ref, model, x: torch.Tensor, what: str) -> None:
    with torch.no_grad():
        assert_equal(model.forward_features(x), ref.forward_features(x), f'{what} forward_features')
        assert_equal(model(x), ref(x), f'{what} logits')


def test_every_timm_architecture_and_tag_is_registered():
    assert set(NAMES) == set(timm.list_models(module=FAMILY))
    assert set(featzoo.list_models(module=FAMILY, pretrained=True)) == set(timm.list_models(module=FAMILY,
                                                                                           pretrained=True))


@pytest.mark.parametrize('kwargs', [SMALL, SHARED], ids=['per_block', 'shared_and_absolute'])
def test_tables_at_another_input_size_equal_timms_set_input_size(kwargs):
    ref, model = _pair(kwargs)
    x = _input(96, 48)  # a 6 x 3 grid, neither square nor the built one
    ref.set_input_size(img_size=(96, 48))
    _check_outputs(ref, model, x, 'resampled in the forward')
    path = save_state(model.state_dict())
    backbone = featzoo.create_model(NAME, features_only=True, out_indices=(0, 1), checkpoint_path=path, **kwargs).eval()
    feats = check_feature_shapes(backbone, x)
    with torch.no_grad():
        refs = ref.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
    for i, (a, b) in enumerate(zip(feats, refs)):
        assert_equal(a, b, f'feature level {i}')


def test_set_input_size_resamples_the_tables_as_timm():
    ref, model = _pair(SMALL)
    ref.set_input_size(img_size=(32, 80))
    model.set_input_size((32, 80))
    for ours, theirs in zip(model.blocks, ref.blocks):
        assert ours.attn.window_size == tuple(theirs.attn.window_size) == (2, 5)
        assert_equal(ours.attn.relative_position_bias_table, theirs.attn.relative_position_bias_table, 'table')
        assert torch.equal(ours.attn.relative_position_index, theirs.attn.relative_position_index)
    _check_outputs(ref, model, _input(32, 80), 'after set_input_size')
    with pytest.raises(ValueError, match='multiples of 16'):
        model.set_input_size((32, 72))


def test_gradients_reach_the_table_through_the_resampling():
    model = featzoo.create_model(NAME, **SMALL)
    model(_input(48, 80)).sum().backward()
    grad = model.blocks[0].attn.relative_position_bias_table.grad
    assert grad is not None and grad[:-3].abs().sum() > 0 and grad[-3:].abs().sum() > 0


def test_checkpoint_filter_resamples_tables_learned_on_another_grid():
    # weights learned at 224 px (14 x 14) into a model built for 64 px, as timm's filter does
    source = build_timm_reference(NAME, depth=2)
    target = build_timm_reference(NAME, **SMALL)
    from timm.models.beit import checkpoint_filter_fn as timm_filter
    expected = timm_filter(source.state_dict(), target)
    with torch.device('meta'):
        model = featzoo.create_model(NAME, **SMALL)
    got = beit.checkpoint_filter_fn({'model': source.state_dict()}, model)
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        assert_equal(got[key], value, key)
    path = save_state(source.state_dict())
    loaded = featzoo.create_model(NAME, checkpoint_path=path, **SMALL).eval()
    target.load_state_dict(expected)
    _check_outputs(target.eval(), loaded, _input(64, 64), 'loaded through the filter')


def test_intermediates_carry_the_class_token_and_take_nhwc():
    ref, model = _pair(SMALL)
    x = _input(64, 64)
    with torch.no_grad():
        ours = model.forward_intermediates(x, indices=[0, 1], return_prefix_tokens=True, norm=True)
        theirs = ref.forward_intermediates(x, indices=[0, 1], return_prefix_tokens=True, norm=True)
        assert_equal(ours[0], theirs[0], 'final')
        for (a_map, a_cls), (b_map, b_cls) in zip(ours[1], theirs[1]):
            assert_equal(a_map, b_map, 'map')
            assert_equal(a_cls, b_cls, 'class token')
        nhwc = model.forward_intermediates(x, indices=[1], output_fmt='NHWC', intermediates_only=True)
        assert_equal(nhwc[0], theirs[1][1][0].permute(0, 2, 3, 1), 'NHWC')
    with pytest.raises(ValueError, match="output_fmt='NCL'"):
        model.forward_intermediates(x, output_fmt='NCL')


def test_relative_position_index_is_timms():
    from timm.models.beit import gen_relative_position_index
    for window in ((1, 1), (2, 5), (4, 4), (14, 14)):
        assert torch.equal(beit.relative_position_index_with_class(window), gen_relative_position_index(window))


def test_bad_sizes_and_pools_name_the_value():
    with pytest.raises(ValueError, match=r'img_size=\(100, 100\) .*multiples of 16'):
        featzoo.create_model(NAME, depth=1, img_size=100)
    with pytest.raises(ValueError, match="global_pool='max'"):
        featzoo.create_model(NAME, depth=1, global_pool='max')
    with pytest.raises(ValueError, match='num_heads=5'):
        featzoo.create_model(NAME, depth=1, num_heads=5)


def test_a_pruned_backbone_loads_tables_of_another_grid():
    # the checkpoint holds tables of blocks the features-only backbone pruned; the filter must let them pass
    source = featzoo.create_model(NAME, depth=2).eval()  # a 14 x 14 grid
    path = save_state(source.state_dict())
    backbone = featzoo.create_model(NAME, features_only=True, out_indices=(0,), checkpoint_path=path, **SMALL).eval()
    table = source.blocks[0].attn.relative_position_bias_table
    assert_equal(backbone.blocks[0].attn.relative_position_bias_table,
                 beit.resample_relative_position_table(table.detach(), (4, 4)), 'table of the kept block')
    assert check_feature_shapes(backbone, _input(64, 64))[0].shape == (1, 768, 4, 4)
