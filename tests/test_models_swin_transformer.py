"""Swin Transformer family: timm parity (fixed and dynamic input sizes), intermediates, pruning, features, errors."""
from __future__ import annotations

import copy

import pytest
import torch

import featzoo
from featzoo import registry
from featzoo.models import swin_transformer as swin
from helpers import assert_equal, check_feature_shapes, randomize_state, save_state, timm_parity

timm = pytest.importorskip('timm')

FAMILY = 'swin_transformer'
NAMES = featzoo.list_models(module=FAMILY)
TINY = 'swin_tiny_patch4_window7_224'


def test_every_timm_architecture_is_registered():
    assert sorted(NAMES) == sorted(timm.list_models(module=FAMILY))


def test_timm_parity_small_img_size():
    # at img_size=64 the late stages are smaller than the window: clamped windows, no shift, padded early stages
    timm_parity(TINY, input_size=(1, 3, 64, 64), timm_kwargs=dict(img_size=64), featzoo_kwargs=dict(img_size=64))


def _random_timm(name: str, **kwargs) -> torch.nn.Module:
    """timm's model with random weights, built without its (slow) initializers."""
    with torch.device('meta'):
        ref = timm.create_model(name, **kwargs)
    ref = ref.to_empty(device='cpu').eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in ref.modules():
            for pname, p in module.named_parameters(recurse=False):
                noise = torch.randn(p.shape, generator=gen)
                if pname == 'relative_position_bias_table':
                    p.copy_(noise)  # large enough that a misplaced bias or mask shows in the outputs
                elif isinstance(module, torch.nn.LayerNorm) and pname == 'weight':
                    p.copy_(1.0 + 0.02 * noise)
                else:
                    p.copy_(0.02 * noise)
            if hasattr(module, 'init_non_persistent_buffers'):
                module.init_non_persistent_buffers()
    return ref


def _one_per_window() -> list:
    """The smallest variant of each window setting other than tiny's (per-stage windows of Swin-S3 included)."""
    seen, names = {repr(swin.VARIANTS[TINY]['window_size'])}, []
    for name in sorted(NAMES, key=lambda n: registry.get_arch_entry(n)['num_params']):
        window = repr(swin.VARIANTS[name]['window_size'])
        if window not in seen:
            seen.add(window)
            names.append(name)
    return names


@pytest.mark.parametrize('name', _one_per_window())
def test_timm_parity_other_windows(name):
    # the factory and wrapper path is covered on tiny; here the weights go in directly, skipping file round trips,
    # on two blocks per stage (a plain and a shifted one) at 128 px, where stage 2 of Swin-S3 keeps its 14-window
    kwargs = dict(img_size=128, depths=(2, 2, 2, 2))
    ref = _random_timm(name, **kwargs)
    with torch.device('meta'):
        model = swin.SPEC.build(name, **kwargs)
    model.load_state_dict(ref.state_dict(), strict=True, assign=True)
    for module in model.modules():
        if hasattr(module, 'init_non_persistent_buffers'):
            module.init_non_persistent_buffers()
    model.eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        ref_feat, feat = ref.forward_features(x), model.forward_features(x)
        assert_equal(feat, ref_feat, 'forward_features')
        assert_equal(model.forward_head(feat, pre_logits=True), ref.forward_head(ref_feat, pre_logits=True), 'pre')
        assert_equal(model.forward_head(feat), ref.forward_head(ref_feat), 'logits')
        inter = model.forward_intermediates(x, intermediates_only=True)
        for i, (a, b) in enumerate(zip(inter, ref.forward_intermediates(x, intermediates_only=True))):
            assert_equal(a, b, f'intermediate {i}')
    assert [t.shape[1] for t in inter] == [f['num_chs'] for f in model.feature_info]


def test_timm_parity_default_size():
    model = timm_parity(TINY, input_size=(1, 3, 224, 224))
    assert model.feature_info[-1]['reduction'] == 32


@pytest.mark.slow
@pytest.mark.parametrize('name', NAMES)
def test_timm_parity_default_size_all(name):
    """At the input size the architecture is built for (timm's fixed-size model refuses any other)."""
    side = registry.get_pretrained_cfg(name)['input_size'][-1]
    timm_parity(name, input_size=(1, 3, side, side))


@pytest.fixture(scope='module')
def tiny_pair(tmp_path_factory):
    """timm's tiny with dynamic masks and featzoo's tiny, both at img_size=224, sharing random weights."""
    torch.manual_seed(0)
    ref = timm.create_model(TINY, strict_img_size=False).eval()
    randomize_state(ref, seed=1)
    path = save_state(ref.state_dict(), str(tmp_path_factory.mktemp('swin')))
    model = featzoo.create_model(TINY, checkpoint_path=path).eval()
    return ref, model, path


# sizes other than the creation size: non-square, sides not multiples of the window, odd maps before merging
OTHER_SIZES = [(2, 3, 96, 160), (1, 3, 200, 136)]


@pytest.mark.parametrize('input_size', OTHER_SIZES)
def test_any_input_size_matches_timm_dynamic(tiny_pair, input_size):
    ref, model, path = tiny_pair
    x = torch.randn(*input_size)
    with torch.no_grad():
        ref_feat = ref.forward_features(x)
        feat = model.forward_features(x)
        assert_equal(feat, ref_feat, 'forward_features')
        assert_equal(model.forward_head(feat), ref.forward_head(ref_feat), 'logits')
        ref_inter = ref.forward_intermediates(x, intermediates_only=True)
    backbone = featzoo.create_model(TINY, features_only=True, checkpoint_path=path).eval()
    with torch.no_grad():
        feats = backbone(x)
    assert len(feats) == 4
    for i, (a, b) in enumerate(zip(feats, ref_inter)):
        assert_equal(a, b, f'level {i}')
    expected = [(input_size[0], c, -(-input_size[2] // r), -(-input_size[3] // r))
                for c, r in zip((96, 192, 384, 768), (4, 8, 16, 32))]
    assert [tuple(f.shape) for f in feats] == expected


def test_done_when_tiny_features_nchw(tiny_pair):
    backbone = featzoo.create_model(TINY, features_only=True, checkpoint_path=tiny_pair[2]).eval()
    assert backbone.feature_info.reduction() == [4, 8, 16, 32]
    assert backbone.feature_info.channels() == [96, 192, 384, 768]
    with torch.no_grad():
        feats = backbone(torch.randn(1, 3, 224, 224))
    assert [tuple(f.shape) for f in feats] == [(1, 96, 56, 56), (1, 192, 28, 28), (1, 384, 14, 14), (1, 768, 7, 7)]


@pytest.mark.parametrize('kwargs', [
    dict(),
    dict(indices=2),
    dict(indices=[0, -1], norm=True),
    dict(indices=(1,), stop_early=True),
    dict(indices=[2, 0], stop_early=True),
    dict(indices=[3], norm=True, stop_early=True),
])
def test_forward_intermediates_matches_timm(tiny_pair, kwargs):
    ref, model, _ = tiny_pair
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ref_final, ref_inter = ref.forward_intermediates(x, **kwargs)
        final, inter = model.forward_intermediates(x, **kwargs)
        nhwc = model.forward_intermediates(x, output_fmt='NHWC', intermediates_only=True, **kwargs)
    assert_equal(final, ref_final, 'final')
    assert len(inter) == len(ref_inter) == len(nhwc)
    for i, (a, b, c) in enumerate(zip(inter, ref_inter, nhwc)):
        assert_equal(a, b, f'intermediate {i}')
        assert torch.equal(c.permute(0, 3, 1, 2), a)


@pytest.mark.parametrize('indices, prune_norm', [((0, 1), False), ([-1], True), (1, False), ([2], True)])
def test_prune_intermediate_layers_matches_timm(tiny_pair, indices, prune_norm):
    ref, model = (copy.deepcopy(m) for m in tiny_pair[:2])
    assert model.prune_intermediate_layers(indices, prune_norm=prune_norm) == \
        ref.prune_intermediate_layers(indices, prune_norm=prune_norm)
    assert sorted(model.state_dict()) == sorted(ref.state_dict())
    assert (model.num_features, model.head_hidden_size) == (ref.num_features, ref.head_hidden_size)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model.forward_intermediates(x, indices), ref.forward_intermediates(x, indices)):
            for p, q in zip(a if isinstance(a, list) else [a], b if isinstance(b, list) else [b]):
                assert_equal(p, q, f'pruned to {indices}')


@pytest.mark.parametrize('out_indices', [(0, 1), (1, 3), (2,)])
def test_features_only_state_dict_is_full_minus_dropped(tiny_pair, out_indices):
    _, model, path = tiny_pair
    full = set(model.state_dict())
    backbone = featzoo.create_model(TINY, features_only=True, out_indices=out_indices, checkpoint_path=path)
    last = max(out_indices)
    dropped = {k for k in full if k.startswith(('norm.', 'head.'))
               or (k.startswith('layers.') and int(k.split('.')[1]) > last)}
    assert set(backbone.state_dict()) == full - dropped
    assert backbone.feature_info.reduction() == [(4, 8, 16, 32)[i] for i in out_indices]
    check_feature_shapes(backbone, (1, 3, 64, 64))


def test_features_output_fmt_and_norm(tiny_pair):
    ref, _, path = tiny_pair
    x = torch.randn(1, 3, 64, 64)
    nchw = featzoo.create_model(TINY, features_only=True, checkpoint_path=path).eval()
    nhwc = featzoo.create_model(TINY, features_only=True, output_fmt='NHWC', checkpoint_path=path).eval()
    normed = featzoo.create_model(TINY, features_only=True, out_indices=(1, 3), norm=True,
                                  checkpoint_path=path).eval()
    assert 'norm.weight' in normed.state_dict()
    with torch.no_grad():
        for a, b in zip(nchw(x), nhwc(x)):
            assert torch.equal(a.permute(0, 2, 3, 1), b)
        for a, b in zip(normed(x), ref.forward_intermediates(x, [1, 3], norm=True, intermediates_only=True)):
            assert_equal(a, b, 'normed level')


@pytest.mark.filterwarnings('ignore::UserWarning')  # timm's table interpolation warns about torch APIs
def test_pretrained_at_smaller_img_size_resamples_tables_like_timm(tiny_pair):
    ref_full, _, path = tiny_pair
    from timm.models.swin_transformer import checkpoint_filter_fn as timm_filter
    ref = timm.create_model(TINY, img_size=64).eval()
    ref.load_state_dict(timm_filter(ref_full.state_dict(), ref))
    model = featzoo.create_model(TINY, img_size=64, checkpoint_path=path).eval()
    key = 'layers.3.blocks.1.attn.relative_position_bias_table'
    assert model.state_dict()[key].shape == ref.state_dict()[key].shape == (9, 24)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert_equal(model(x), ref(x), 'logits after table resampling')


@pytest.mark.filterwarnings('ignore::UserWarning')  # timm's table interpolation warns about torch APIs
@pytest.mark.parametrize('src, dst', [(7, 4), (7, 2), (4, 7), ((7, 7), (3, 5))])
def test_resize_relative_position_table_matches_timm(src, dst):
    from timm.layers import resize_rel_pos_bias_table
    src, dst = swin._pair(src, 'src'), swin._pair(dst, 'dst')
    table = torch.randn((2 * src[0] - 1) * (2 * src[1] - 1), 3)
    shape = ((2 * dst[0] - 1) * (2 * dst[1] - 1), 3)
    assert_equal(swin.resize_relative_position_table(table, dst),
                 resize_rel_pos_bias_table(table, new_window_size=dst, new_bias_shape=shape), 'resized table')


def test_buffers_rebuilt_after_meta_build():
    # windows of 4 on maps of 16, 8, 4: two shifted blocks with masks, then a clamped window without
    kwargs = dict(img_size=64, window_size=4, embed_dim=8, depths=(2, 2, 2), num_heads=(1, 2, 2))
    with torch.device('meta'):
        model = swin.SwinTransformer(**kwargs)
    reference = swin.SwinTransformer(**kwargs)
    for module in model.modules():
        for name, tensor in list(module._buffers.items()):
            if tensor is not None:
                module._buffers[name] = torch.empty_like(tensor, device='cpu')
        for name, tensor in list(module._parameters.items()):
            if tensor is not None:
                module._parameters[name] = torch.nn.Parameter(torch.empty_like(tensor, device='cpu'))
    for module in model.modules():
        if hasattr(module, 'init_non_persistent_buffers'):
            module.init_non_persistent_buffers()
    ref_buffers = dict(reference.named_buffers())
    assert ref_buffers.keys() == dict(model.named_buffers()).keys()
    assert sum(k.endswith('attn_mask') for k in ref_buffers) == 2
    for name, buf in model.named_buffers():
        assert torch.equal(buf, ref_buffers[name]), name
    assert not any(k.endswith(('attn_mask', 'relative_position_index')) for k in reference.state_dict())


def test_model_contract(tiny_pair):
    model = featzoo.create_model(TINY, num_classes=0, checkpoint_path=tiny_pair[2]).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feat = model.forward_features(x)
        assert feat.shape == (1, 2, 2, 768)
        assert model(x).shape == (1, 768)
        assert model.num_features == model.head_hidden_size == 768
        model.reset_classifier(7)
        assert model(x).shape == (1, 7) and model.get_classifier().out_features == 7
        model.reset_classifier(0, '')
        assert model(x).shape == (1, 2, 2, 768) and model.global_pool == ''
        model.reset_classifier(3, 'catavgmax')
        assert model(x).shape == (1, 3) and model.head_hidden_size == 1536
    assert all('relative_position_bias_table' in n for n in model.no_weight_decay())
    assert len(model.no_weight_decay()) == 12
    assert model.group_matcher()['stem'] == r'^patch_embed'


def test_grad_checkpointing_same_gradients():
    torch.manual_seed(0)
    kwargs = dict(img_size=32, window_size=4, embed_dim=8, depths=(2, 2), num_heads=(1, 2), drop_path_rate=0.0)
    a, b = swin.SwinTransformer(**kwargs), swin.SwinTransformer(**kwargs)
    b.load_state_dict(a.state_dict())
    b.set_grad_checkpointing(True)
    x = torch.randn(2, 3, 32, 32)
    a(x).sum().backward()
    b(x).sum().backward()
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert_equal(q.grad, p.grad, name)


@pytest.mark.parametrize('kwargs, error, words', [
    (dict(output_stride=16), ValueError, ('16', '32')),
    (dict(features_only=True, feature_cls='list'), ValueError, ("'list'", 'getter', 'fx')),
    (dict(img_size=226), ValueError, ('226', 'patch_size')),
    (dict(window_size=0), ValueError, ('window_size', '0')),
    (dict(window_size=(7, 7, 7)), ValueError, ('window_size', 'per stage')),
    (dict(global_pool='mean'), ValueError, ("'mean'", "'avg'")),
    (dict(mlp_ratio=-1), ValueError, ('mlp_ratio', '-1')),
    (dict(patch_sizes=4), TypeError, ('patch_sizes', 'patch_size')),
])
def test_bad_arguments_are_named(kwargs, error, words):
    with pytest.raises(error) as info:
        featzoo.create_model(TINY, **kwargs)
    assert all(w in str(info.value) for w in words), str(info.value)


def test_output_stride_32_is_accepted():
    model = featzoo.create_model(TINY, output_stride=32, img_size=64, num_classes=0)
    assert model.feature_info[-1]['reduction'] == 32


@pytest.mark.parametrize('indices, error', [(5, ValueError), ([4], ValueError), ([0.5], TypeError), ([], ValueError)])
def test_bad_indices(indices, error):
    model = swin.SwinTransformer(img_size=32, window_size=4, embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1))
    with pytest.raises(error):
        model.forward_intermediates(torch.zeros(1, 3, 32, 32), indices)
    with pytest.raises(ValueError, match='NHWC'):
        model.forward_intermediates(torch.zeros(1, 3, 32, 32), output_fmt='NLC')


def test_fx_trace_any_size(tiny_pair):
    pytest.importorskip('featzoo.features.fx')
    path = tiny_pair[2]
    backbone = featzoo.create_model(TINY, features_only=True, feature_cls='fx', checkpoint_path=path).eval()
    getter = featzoo.create_model(TINY, features_only=True, checkpoint_path=path).eval()
    for size in [(1, 3, 64, 64), (1, 3, 96, 128)]:
        x = torch.randn(*size)
        with torch.no_grad():
            for a, b in zip(backbone(x), getter(x)):
                assert_equal(a, b, f'fx vs getter at {size}')


@pytest.mark.slow
def test_torch_export():
    model = swin.SwinTransformer(img_size=64, window_size=4, embed_dim=16, depths=(2, 2, 2, 2),
                                 num_heads=(1, 2, 2, 4)).eval()
    x = torch.randn(1, 3, 64, 64)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        assert_equal(exported.module()(x), model(x), 'exported')
