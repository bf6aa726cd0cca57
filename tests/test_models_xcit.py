"""XCiT against timm: what is particular to the family.

Keys, shapes and numerics of every architecture are tests/test_parity_timm.py's, the intermediates and the model
contract tests/test_models.py's. Here: inputs of other (non-square) sizes, where the Fourier position encoding and
the local patch interaction follow the grid (timm's model takes them too); the model without a position encoding;
the checkpoint filter of the original release (``pos_embeder.``, fused class-attention ``qkv``); the simple pyramid on
the convolutional patch embedding; argument and input-size errors. Models are depth-reduced.
"""
from __future__ import annotations

import pytest
import torch

import featzoo
from featzoo.models import xcit
from helpers import assert_equal, build_timm_reference, check_feature_shapes, save_state

timm = pytest.importorskip('timm')

FAMILY = 'xcit'
NAMES = featzoo.list_models(module=FAMILY)


def _input(height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(seed))


def test_every_timm_architecture_and_tag_is_registered():
    assert set(NAMES) == set(timm.list_models(module=FAMILY))
    assert set(featzoo.list_models(module=FAMILY, pretrained=True)) == set(timm.list_models(module=FAMILY,
                                                                                           pretrained=True))


@pytest.mark.parametrize('name,kwargs', [('xcit_nano_12_p8_224', dict(depth=2)),
                                         ('xcit_tiny_12_p16_224', dict(depth=2, use_pos_embed=False))])
def test_other_input_sizes_equal_timm(name, kwargs):
    ref = build_timm_reference(name, **kwargs)
    path = save_state(ref.state_dict())
    model = featzoo.create_model(name, checkpoint_path=path, **kwargs).eval()
    patch = xcit.SPEC.input_multiple_for(name)
    x = _input(3 * patch, 5 * patch)
    with torch.no_grad():
        assert_equal(model.forward_features(x), ref.forward_features(x), f'{name} forward_features')
        assert_equal(model(x), ref(x), f'{name} logits')
        refs = ref.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
    backbone = featzoo.create_model(name, features_only=True, out_indices=(0, 1), checkpoint_path=path, **kwargs)
    for i, (a, b) in enumerate(zip(check_feature_shapes(backbone.eval(), x), refs)):
        assert_equal(a, b, f'{name} feature level {i}')


def test_fourier_position_encoding_equals_timms():
    from timm.models.xcit import PositionalEncodingFourier
    theirs = PositionalEncodingFourier(dim=64)
    ours = xcit.FourierPositionEncoding(dim=64)
    ours.load_state_dict(theirs.state_dict())
    for height, width in ((1, 1), (3, 7), (14, 14)):
        with torch.no_grad():
            expected = theirs(2, height, width).reshape(2, 64, -1).permute(0, 2, 1)[:1]
            assert_equal(ours(height, width), expected, f'{height}x{width}')


def test_checkpoint_filter_converts_the_original_layout_as_timm():
    from timm.models.xcit import checkpoint_filter_fn as timm_filter
    name = 'xcit_nano_12_p16_224'
    ref = build_timm_reference(name, depth=1)
    original = {}
    for key, value in ref.state_dict().items():
        original[key.replace('pos_embed.', 'pos_embeder.')] = value
    for prefix in ('cls_attn_blocks.0.attn.', 'cls_attn_blocks.1.attn.'):
        for kind in ('weight', 'bias'):
            original[f'{prefix}qkv.{kind}'] = torch.cat([original.pop(f'{prefix}{p}.{kind}') for p in 'qkv'])
    with torch.device('meta'):
        model = featzoo.create_model(name, depth=1)
    got = xcit.checkpoint_filter_fn({'model': dict(original)}, model)
    expected = timm_filter({'model': dict(original)}, ref)
    assert sorted(got) == sorted(expected) == sorted(ref.state_dict())
    for key, value in expected.items():
        assert torch.equal(got[key], value), key
    with torch.device('meta'):
        bare = featzoo.create_model(name, depth=1, use_pos_embed=False)
    assert not any(k.startswith('pos_embed') for k in xcit.checkpoint_filter_fn(dict(original), bare))


@pytest.mark.parametrize('name', ['xcit_nano_12_p8_224', 'xcit_nano_12_p16_224'])
def test_simple_pyramid_reads_the_patch_size(name):
    backbone = featzoo.create_model(name, features_only=True, feature_pyramid=True).eval()
    assert backbone.feature_info.reduction() == [4, 8, 16, 32]
    check_feature_shapes(backbone, _input(64, 96))


def test_bad_arguments_and_sizes_name_the_value():
    with pytest.raises(ValueError, match='patch_size=4 .*8, 16'):
        featzoo.create_model('xcit_nano_12_p16_224', depth=1, patch_size=4)
    with pytest.raises(ValueError, match='embed_dim=100 must be a multiple of 8'):
        featzoo.create_model('xcit_nano_12_p16_224', depth=1, embed_dim=100, num_heads=4)
    with pytest.raises(ValueError, match="global_pool='max'"):
        featzoo.create_model('xcit_nano_12_p16_224', depth=1, global_pool='max')
    model = featzoo.create_model('xcit_nano_12_p8_224', depth=1)
    with pytest.raises(ValueError, match='multiples of 8'):
        model.set_input_size((64, 60))
    model.set_input_size((64, 48))
    assert model.patch_embed.num_patches == 48
