"""Hiera: what the generic parity suite does not cover (the unroll / reroll token orders, inputs of other sizes than
the model was built for, against timm built for them, input-size errors, the original checkpoint layout)."""
from __future__ import annotations

import pytest
import torch

import featzoo
from featzoo.models import hiera
from helpers import assert_equal, randomize_state, save_state

timm = pytest.importorskip('timm')

FAMILY = 'hiera'
TINY = 'hiera_tiny_224'
ABSWIN = 'hiera_small_abswin_256'
SHALLOW = dict(stages=(1, 1, 2, 1))


def test_every_timm_architecture_is_registered():
    assert sorted(featzoo.list_models(module=FAMILY)) == sorted(timm.list_models(module=FAMILY))
    assert sorted(featzoo.list_models(module=FAMILY, pretrained=True)) == \
        sorted(timm.list_models(module=FAMILY, pretrained=True))


@pytest.mark.parametrize('grid,steps', [((8, 8), 1), ((8, 16), 3), ((16, 8), 2)])
def test_unroll_matches_timm_and_reroll_inverts_it(grid, steps):
    from timm.models.hiera import Unroll
    tokens = torch.randn(2, grid[0] * grid[1], 5)
    ref = Unroll([g * 4 for g in grid], [4, 4], [[2, 2]] * steps)(tokens)
    unrolled = hiera.unroll(tokens, grid, steps)
    assert torch.equal(unrolled, ref)
    assert torch.equal(hiera.reroll(unrolled, grid, steps), tokens.reshape(2, *grid, 5))


def _pair(name: str, img_size: int, **kwargs):
    ref = timm.create_model(name, img_size=img_size, **kwargs).eval()
    randomize_state(ref, seed=3)
    path = save_state(ref.state_dict())
    return ref, path


@pytest.mark.parametrize('name', [TINY, ABSWIN])
def test_a_model_built_at_224_runs_at_other_sizes_as_timm_built_for_them(name):
    """The position table learned at one grid is resampled for another (abswin tiles its window table), so a model
    built at the default size equals timm's model built for the input's size, with the table resized the same way."""
    side = (96, 160)
    ref, path = _pair(name, side, **SHALLOW)
    state = {k: v for k, v in ref.state_dict().items()}
    model = featzoo.create_model(name, **SHALLOW).eval()
    if name == TINY:  # the featzoo model keeps the 224 px table and resamples it at run time
        state['pos_embed'] = hiera.resample_abs_pos_embed(state['pos_embed'], (56, 56), (24, 40), num_prefix_tokens=0)
    model.load_state_dict(state)
    x = torch.randn(1, 3, *side)
    with torch.no_grad():
        if name == TINY:  # timm's table is the one resampled back from 224 px
            ref.pos_embed.copy_(hiera.resample_abs_pos_embed(model.pos_embed, (24, 40), (56, 56),
                                                             num_prefix_tokens=0))
        assert_equal(model(x), ref(x), 'logits')
        feats = model.forward_intermediates(x, intermediates_only=True)
        ref_feats = ref.forward_intermediates(x, intermediates_only=True)
    assert [tuple(f.shape[-2:]) for f in feats] == [(24, 40), (12, 20), (6, 10), (3, 5)]
    for i, (a, b) in enumerate(zip(feats, ref_feats)):
        assert_equal(a, b, f'level {i}')


def test_set_input_size_resamples_the_table_once():
    model = featzoo.create_model(TINY, **SHALLOW).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        dynamic = model(x)
        model.set_input_size((64, 96))
        assert model.pos_embed.shape == (1, 16 * 24, 96)
        assert_equal(model(x), dynamic, 'after set_input_size')


def test_backbone_levels_are_row_major_maps():
    backbone = featzoo.create_model(TINY, features_only=True, **SHALLOW).eval()
    assert backbone.feature_info.reduction() == [4, 8, 16, 32]
    with torch.no_grad():
        feats = backbone(torch.randn(2, 3, 64, 128))
    assert [tuple(f.shape) for f in feats] == [(2, 96, 16, 32), (2, 192, 8, 16), (2, 384, 4, 8), (2, 768, 2, 4)]


@pytest.mark.parametrize('img_size', [200, (224, 100), 16, 0])
def test_sizes_hiera_cannot_take_are_refused_naming_the_multiple(img_size):
    with pytest.raises(ValueError, match='multiple of 32'):
        featzoo.create_model(TINY, img_size=img_size)
    model = featzoo.create_model(TINY, **SHALLOW)
    with pytest.raises(ValueError, match='multiple of 32'):
        model.set_input_size(img_size)


def test_bad_arguments_name_what_is_valid():
    with pytest.raises(ValueError, match="global_pool='token'"):
        featzoo.create_model(TINY, global_pool='token')
    with pytest.raises(ValueError, match='norm=True'):
        featzoo.create_model(TINY, **SHALLOW).forward_intermediates(torch.randn(1, 3, 64, 64), norm=True)
    with pytest.raises(ValueError, match="output_fmt='NLC'"):
        featzoo.create_model(TINY, **SHALLOW).forward_intermediates(torch.randn(1, 3, 64, 64), output_fmt='NLC')


def test_original_checkpoint_layout_is_converted():
    model = featzoo.create_model(TINY, **SHALLOW)
    state = model.state_dict()
    original = {('norm.' + k[len('head.norm.'):] if k.startswith('head.norm.') else
                 k.replace('head.fc.', 'head.projection.')): v for k, v in state.items()}
    converted = hiera.checkpoint_filter_fn({'model_state': original}, model)
    assert sorted(converted) == sorted(state)
