"""Swin Transformer V2: what the generic parity suite does not cover (other input sizes against timm's dynamic-mask
model, fine-tuned windows with pre-training coordinates, computed buffers after a meta build, the checkpoint filter,
arguments that name what is valid)."""
from __future__ import annotations

import pytest
import torch

import featzoo
from featzoo.models import swin_transformer_v2 as v2
from helpers import assert_equal, randomize_state, save_state

timm = pytest.importorskip('timm')

FAMILY = 'swin_transformer_v2'
TINY = 'swinv2_tiny_window8_256'
FINETUNED = 'swinv2_base_window12to16_192to256'
# 128 px: stage maps of 32, 16, 8, 4; windows of 8 shift (with masks) in three stages, the last is clamped to 4
SMALL = dict(img_size=128, depths=(2, 2, 2, 2))


def test_every_timm_architecture_is_registered():
    assert sorted(featzoo.list_models(module=FAMILY)) == sorted(timm.list_models(module=FAMILY))


@pytest.fixture(scope='module')
def tiny_pair(tmp_path_factory):
    """timm's tiny (dynamic masks) and featzoo's, both cut to two blocks per stage at 128 px, same random weights."""
    torch.manual_seed(0)
    ref = timm.create_model(TINY, strict_img_size=False, **SMALL).eval()
    randomize_state(ref, seed=1)
    path = save_state(ref.state_dict(), str(tmp_path_factory.mktemp('swinv2')))
    model = featzoo.create_model(TINY, checkpoint_path=path, **SMALL).eval()
    return ref, model, path


# the creation size, non-square sides that are not window multiples, odd maps before patch merging
SIZES = [(1, 3, 128, 128), (2, 3, 96, 160), (1, 3, 200, 136)]


@pytest.mark.parametrize('input_size', SIZES)
def test_any_patch_multiple_matches_timm_dynamic(tiny_pair, input_size):
    ref, model, path = tiny_pair
    x = torch.randn(*input_size)
    backbone = featzoo.create_model(TINY, features_only=True, checkpoint_path=path, **SMALL).eval()
    with torch.no_grad():
        ref_feat = ref.forward_features(x)
        assert_equal(model.forward_features(x), ref_feat, 'forward_features')
        assert_equal(model(x), ref(x), 'logits')
        ref_inter = ref.forward_intermediates(x, intermediates_only=True)
        feats = backbone(x)
    assert len(feats) == 4
    for i, (a, b) in enumerate(zip(feats, ref_inter)):
        assert_equal(a, b, f'level {i}')
    expected = [(input_size[0], c, -(-input_size[2] // r), -(-input_size[3] // r))
                for c, r in zip((96, 192, 384, 768), (4, 8, 16, 32))]
    assert [tuple(f.shape) for f in feats] == expected


def test_finetuned_windows_keep_pretraining_coordinates():
    # window 16 normalized by pre-training windows (12, 12, 12, 6); at 128 px stage 0 (32x32) shifts 16-windows
    ref = timm.create_model(FINETUNED, strict_img_size=False, embed_dim=32, num_heads=(1, 2, 4, 8), **SMALL).eval()
    randomize_state(ref, seed=2)
    with torch.no_grad():
        ref.layers[0].blocks[1].attn.logit_scale.fill_(6.0)  # above the cap: the temperature stops at 100
    model = v2.SPEC.build(FINETUNED, embed_dim=32, num_heads=(1, 2, 4, 8), **SMALL).eval()
    model.load_state_dict(ref.state_dict())
    table = model.layers[3].blocks[0].attn.relative_coords_table
    assert_equal(table, ref.layers[3].blocks[0].attn.relative_coords_table, 'coords of the last stage')
    for size in [(1, 3, 128, 128), (1, 3, 96, 160)]:
        x = torch.randn(*size)
        with torch.no_grad():
            assert_equal(model(x), ref(x), f'logits at {size}')


def test_computed_buffers_rebuilt_after_meta_build():
    kwargs = dict(img_size=64, window_size=4, embed_dim=8, depths=(2, 2, 2), num_heads=(1, 2, 2),
                  pretrained_window_sizes=(3, 0, 2))
    reference = v2.SwinTransformerV2(**kwargs)
    with torch.device('meta'):
        model = v2.SwinTransformerV2(**kwargs)
    model.load_state_dict(reference.state_dict(), assign=True)
    for module in model.modules():
        for name, tensor in list(module._buffers.items()):
            if tensor is not None and tensor.is_meta:
                module._buffers[name] = torch.empty_like(tensor, device='cpu')  # garbage, as the loader leaves it
        if hasattr(module, 'init_non_persistent_buffers'):
            module.init_non_persistent_buffers()
    ref_buffers = dict(reference.named_buffers())
    assert ref_buffers.keys() == dict(model.named_buffers()).keys()
    assert sum(k.endswith('attn_mask') for k in ref_buffers) == 2  # shifted blocks of the 16- and 8-maps
    for name, buf in model.named_buffers():
        assert torch.equal(buf, ref_buffers[name]), name
    assert not set(ref_buffers) & set(reference.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))


def _original_layout(state):
    """timm's state_dict as the original release lays it out: merging at the end of the previous stage, a bare
    ``head`` classifier, and the computed buffers saved."""
    out = {}
    for key, value in state.items():
        parts = key.split('.')
        if parts[0] == 'layers' and parts[2] == 'downsample':
            key = '.'.join(['layers', str(int(parts[1]) - 1)] + parts[2:])
        out[key.replace('head.fc.', 'head.')] = value
    out['layers.0.blocks.0.attn.relative_coords_table'] = torch.zeros(1, 15, 15, 2)
    out['layers.0.blocks.1.attn_mask'] = torch.zeros(1)
    return out


def test_checkpoint_filter_converts_the_original_layout_like_timm(tiny_pair, tmp_path):
    from timm.models.swin_transformer_v2 import checkpoint_filter_fn as timm_filter
    ref, model, _ = tiny_pair
    original = _original_layout(ref.state_dict())
    ours, theirs = v2.checkpoint_filter_fn(dict(original), model), timm_filter(dict(original), ref)
    assert sorted(ours) == sorted(theirs) == sorted(ref.state_dict())
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    # and through the factory: a file in the original layout loads
    path = save_state(original, str(tmp_path))
    loaded = featzoo.create_model(TINY, checkpoint_path=path, **SMALL).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert_equal(loaded(x), ref(x), 'logits from the original layout')
    # a timm-layout checkpoint passes unchanged (minus buffers)
    assert sorted(v2.checkpoint_filter_fn(ref.state_dict(), model)) == sorted(ref.state_dict())


def test_model_contract(tiny_pair):
    model = tiny_pair[1]
    assert model.no_weight_decay() == {n for n in model.state_dict() if 'cpb_mlp' in n or 'logit_scale' in n}
    assert model.feature_info[-1] == dict(num_chs=768, reduction=32, module='layers.3')
    fresh = v2.SwinTransformerV2(img_size=32, window_size=4, embed_dim=8, depths=(2,), num_heads=(1,))
    block = fresh.layers[0].blocks[1]
    assert block.shift_size == (2, 2) and not block.norm1.weight.any()  # res-post-norm starts at zero
    assert torch.allclose(block.attn.logit_scale, torch.full((1, 1, 1), 10.0).log())


@pytest.mark.parametrize('kwargs, error, words', [
    (dict(img_size=258), ValueError, ('258', 'patch_size')),
    (dict(pretrained_window_sizes=(12, 12)), ValueError, ('pretrained_window_sizes', '4 stages')),
    (dict(pretrained_window_sizes=(12, 12, -1, 6)), ValueError, ('pretrained_window_sizes[2]', '-1')),
    (dict(window_size=(8, 8, 8)), ValueError, ('window_size', 'per stage')),
    (dict(output_stride=16), ValueError, ('16', '32')),
    (dict(features_only=True, feature_cls='list'), ValueError, ("'list'", 'getter')),
    (dict(strict_img_size=False), TypeError, ('strict_img_size', 'img_size')),
])
def test_bad_arguments_are_named(kwargs, error, words):
    with pytest.raises(error) as info:
        featzoo.create_model(TINY, **kwargs)
    assert all(w in str(info.value) for w in words), str(info.value)


def test_fx_matches_getter_at_other_sizes(tiny_pair):
    path = tiny_pair[2]
    traced = featzoo.create_model(TINY, features_only=True, feature_cls='fx', checkpoint_path=path, **SMALL).eval()
    getter = featzoo.create_model(TINY, features_only=True, checkpoint_path=path, **SMALL).eval()
    for size in [(1, 3, 128, 128), (1, 3, 96, 160)]:
        x = torch.randn(*size)
        with torch.no_grad():
            for a, b in zip(traced(x), getter(x)):
                assert_equal(a, b, f'fx vs getter at {size}')
