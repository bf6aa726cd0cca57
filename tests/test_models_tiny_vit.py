"""TinyViT: what the generic parity suite does not cover (inputs whose maps are not window multiples, the LeViT
offset index, bias tables of another window size, computed buffers after a meta build)."""
from __future__ import annotations

import pytest
import torch

import featzoo
from featzoo.models import tiny_vit
from helpers import assert_equal, randomize_state, save_state

timm = pytest.importorskip('timm')

FAMILY = 'tiny_vit'
SMALLEST = 'tiny_vit_5m_224'
SHALLOW = dict(depths=(1, 1, 2, 1))


def test_every_timm_architecture_is_registered():
    assert sorted(featzoo.list_models(module=FAMILY)) == sorted(timm.list_models(module=FAMILY))
    assert sorted(featzoo.list_models(module=FAMILY, pretrained=True)) == \
        sorted(timm.list_models(module=FAMILY, pretrained=True))


@pytest.fixture(scope='module')
def pair():
    ref = timm.create_model(SMALLEST, **SHALLOW).eval()
    randomize_state(ref, seed=5)
    path = save_state(ref.state_dict())
    return ref, featzoo.create_model(SMALLEST, checkpoint_path=path, **SHALLOW).eval(), path


# the native size (maps equal to the windows), non-square maps padded to whole windows, odd sides before merging
@pytest.mark.parametrize('size', [(224, 224), (96, 160), (200, 136)])
def test_any_input_size_matches_timm(pair, size):
    ref, model, path = pair
    x = torch.randn(1, 3, *size)
    backbone = featzoo.create_model(SMALLEST, features_only=True, checkpoint_path=path, **SHALLOW).eval()
    with torch.no_grad():
        assert_equal(model(x), ref(x), 'logits')
        feats = backbone(x)
        ref_feats = ref.forward_intermediates(x, intermediates_only=True)
    for i, (a, b) in enumerate(zip(feats, ref_feats)):
        assert_equal(a, b, f'level {i}')


def test_offset_index_is_levits():
    from timm.models.tiny_vit import Attention
    ref = Attention(16, 8, 2, attn_ratio=1, resolution=(5, 3))
    assert torch.equal(tiny_vit.offset_index((5, 3)), ref.attention_bias_idxs)


def test_offset_index_is_rebuilt_after_a_meta_build():
    with torch.device('meta'):
        model = featzoo.create_model(SMALLEST, **SHALLOW)
    model = model.to_empty(device='cpu')
    attn = model.stages[1].blocks[0].attn
    attn.init_non_persistent_buffers()
    assert torch.equal(attn.attention_bias_idxs, tiny_vit.offset_index((7, 7)))


def test_bias_tables_of_another_window_are_resampled_as_timm():
    from timm.models.tiny_vit import checkpoint_filter_fn as timm_filter
    source = featzoo.create_model(SMALLEST, **SHALLOW)
    randomize_state(source, seed=2)
    target = featzoo.create_model(SMALLEST, window_sizes=(12, 12, 24, 12), **SHALLOW)
    ref_target = timm.create_model(SMALLEST, window_sizes=(12, 12, 24, 12), **SHALLOW)
    ours = tiny_vit.checkpoint_filter_fn(source.state_dict(), target)
    theirs = timm_filter(source.state_dict(), ref_target)
    key = 'stages.2.blocks.0.attn.attention_biases'
    assert ours[key].shape == (5, 24 * 24)
    assert_equal(ours[key], theirs[key], key)
    target.load_state_dict(ours)


def test_output_stride_other_than_32_is_refused():
    with pytest.raises(ValueError, match=r'output_stride=16 .* valid: \(32,\)'):
        featzoo.create_model(SMALLEST, output_stride=16)


def test_bad_arguments_name_what_is_valid():
    with pytest.raises(ValueError, match='depths must have 4 entries'):
        featzoo.create_model(SMALLEST, depths=(1, 1, 1))
    with pytest.raises(ValueError, match="output_fmt='NHWC'"):
        featzoo.create_model(SMALLEST, **SHALLOW).forward_intermediates(torch.randn(1, 3, 64, 64), output_fmt='NHWC')
