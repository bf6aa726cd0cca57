"""CaiT against timm: what is particular to the family, and the class-attention blocks it shares with XCiT.

Keys, shapes and numerics of every architecture are tests/test_parity_timm.py's, the intermediates and the model
contract tests/test_models.py's. Here: the position table at another input size (featzoo resamples it in the forward;
timm's model is fixed-size, so its reference is a model built for that size holding the table resampled by timm's
own function), ``set_input_size``, the checkpoint filter, the class-attention blocks of featzoo/layers against
timm's, the wrappers CaiT declares, input-size errors. Models are depth-reduced.
"""
from __future__ import annotations

import pytest
import torch

import featzoo
from featzoo.layers.class_attention import CaitClassAttentionBlock, XcitClassAttentionBlock
from featzoo.models import cait
from helpers import assert_equal, build_timm_reference, check_feature_shapes, randomize_state, save_state

timm = pytest.importorskip('timm')

FAMILY = 'cait'
NAMES = featzoo.list_models(module=FAMILY)
NAME = 'cait_xxs24_224'
SMALL = dict(depth=2, img_size=64)


def _input(height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(seed))


def _resized_reference(ref: torch.nn.Module, size) -> torch.nn.Module:
    """timm's CaiT built for ``size`` with ``ref``'s weights, its position table resampled by timm."""
    from timm.layers import resample_abs_pos_embed as timm_resample
    other = build_timm_reference(NAME, depth=2, img_size=size)
    state = dict(ref.state_dict())
    grid = (size[0] // 16, size[1] // 16)
    state['pos_embed'] = timm_resample(state['pos_embed'], grid, (4, 4), num_prefix_tokens=0)
    other.load_state_dict(state)
    return other.eval()


def test_every_timm_architecture_and_tag_is_registered():
    assert set(NAMES) == set(timm.list_models(module=FAMILY))
    assert set(featzoo.list_models(module=FAMILY, pretrained=True)) == set(timm.list_models(module=FAMILY,
                                                                                           pretrained=True))


def test_position_table_at_another_input_size():
    ref = build_timm_reference(NAME, **SMALL)
    path = save_state(ref.state_dict())
    model = featzoo.create_model(NAME, checkpoint_path=path, **SMALL).eval()
    x = _input(96, 48)
    other = _resized_reference(ref, (96, 48))
    with torch.no_grad():
        assert_equal(model.forward_features(x), other.forward_features(x), 'forward_features')
        assert_equal(model(x), other(x), 'logits')
        refs = other.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
    backbone = featzoo.create_model(NAME, features_only=True, out_indices=(0, 1), checkpoint_path=path, **SMALL)
    for i, (a, b) in enumerate(zip(check_feature_shapes(backbone.eval(), x), refs)):
        assert_equal(a, b, f'feature level {i}')
    model.set_input_size((96, 48))
    assert_equal(model.pos_embed, other.pos_embed, 'set_input_size table')
    with torch.no_grad():
        assert_equal(model(x), other(x), 'logits after set_input_size')
    with pytest.raises(ValueError, match='multiples of 16'):
        model.set_input_size((96, 40))


def test_checkpoint_filter_unwraps_and_resamples():
    source = build_timm_reference(NAME, depth=2)  # learned at 224 px: a 14 x 14 table
    original = {'model': {f'module.{k}': v for k, v in source.state_dict().items()}}
    with torch.device('meta'):
        model = featzoo.create_model(NAME, **SMALL)
    got = cait.checkpoint_filter_fn(original, model)
    assert sorted(got) == sorted(source.state_dict())
    from timm.layers import resample_abs_pos_embed as timm_resample
    assert_equal(got['pos_embed'], timm_resample(source.pos_embed, (4, 4), (14, 14), num_prefix_tokens=0), 'table')
    with pytest.raises(ValueError, match='not square'):
        cait.checkpoint_filter_fn({'pos_embed': torch.zeros(1, 12, 192)}, model)


def test_class_attention_blocks_equal_timms():
    from timm.models.cait import LayerScaleBlockClassAttn
    from timm.models.xcit import ClassAttentionBlock
    torch.manual_seed(0)
    x, cls_token = torch.randn(2, 9, 32), torch.randn(2, 1, 32)
    ours, theirs = CaitClassAttentionBlock(32, 4, qkv_bias=True), LayerScaleBlockClassAttn(32, 4, qkv_bias=True)
    randomize_state(theirs)
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    with torch.no_grad():
        assert_equal(ours(x, cls_token), theirs(x, cls_token), 'CaiT block')
    for eta, tokens_norm in ((1.0, True), (1.0, False), (None, False)):
        ours = XcitClassAttentionBlock(32, 4, qkv_bias=True, eta=eta, tokens_norm=tokens_norm)
        theirs = ClassAttentionBlock(32, 4, qkv_bias=True, eta=eta, tokens_norm=tokens_norm)
        randomize_state(theirs)
        assert sorted(ours.state_dict()) == sorted(theirs.state_dict())
        ours.load_state_dict(theirs.state_dict())
        with torch.no_grad():
            assert_equal(ours(x), theirs(x), f'XCiT block eta={eta} tokens_norm={tokens_norm}')


def test_wrappers_and_errors_name_what_is_valid():
    # the fx wrapper would strip a class token that CaiT's blocks do not carry: only the getter is declared
    with pytest.raises(ValueError, match='getter'):
        featzoo.create_model(NAME, features_only=True, feature_cls='fx', depth=2)
    with pytest.raises(ValueError, match=r'img_size=\(72, 72\) .*multiples of 16'):
        featzoo.create_model(NAME, depth=1, img_size=72)
    with pytest.raises(ValueError, match="global_pool='max'"):
        featzoo.create_model(NAME, depth=1, global_pool='max')
    model = featzoo.create_model(NAME, depth=2, img_size=64)
    model.prune_intermediate_layers([0])
    with pytest.raises(ValueError, match="global_pool='token' needs the class token"):
        model.reset_classifier(3, 'token')
    model.reset_classifier(3, 'avg')
    assert model(_input(64, 64)).shape == (1, 3)
