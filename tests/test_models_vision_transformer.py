"""Plain ViTs (ViT, CLIP, SigLIP, DINOv2, AIMv2, ... and DeiT through the same model): parity with timm, the
attention-pool head, features at any size, the pyramid.

The default suite checks one architecture per configuration (rows that differ only in size run the same code) at
depth 2 and a narrow width (8 channels per head; everything else as published), so it stays fast on two cores; the
slow suite checks every architecture at full width (full depth up to 1.5 GB of float32 weights).
"""
from __future__ import annotations

import math

import pytest
import torch

import featzoo
from helpers import (assert_equal, build_timm_reference, check_feature_shapes, randomize_state, save_state,
                     timm_parity)

timm = pytest.importorskip('timm')

FAMILY = 'vision_transformer'
NAMES = featzoo.list_models(module=FAMILY)
SPEC = featzoo.registry.family_spec(FAMILY)
# one architecture per configuration: the smallest of the rows that share it
CONFIGS = sorted({SPEC.configuration(n): n for n in sorted(
    NAMES, key=lambda n: -featzoo.registry.get_arch_entry(n)['num_params'])}.values())
SHALLOW = dict(depth=2)
BIG = 1.5 * 2 ** 30 / 4  # parameters of 1.5 GB of float32 weights


def _narrow(name: str) -> dict:
    """Depth 2 and 8 channels per head: the configuration as published, a fraction of the compute."""
    return dict(depth=2, embed_dim=8 * SPEC.row(name)['num_heads'])
# one of each kind: plain, register + no_embed_class (patch 14), distilled, patch 32
KINDS = ['vit_tiny_patch16_224', 'vit_small_patch14_reg4_dinov2', 'deit_base_distilled_patch16_224',
         'vit_base_patch32_224']


def _patch(name: str) -> int:
    return featzoo.model_capabilities(name).output_strides[0]


def _size(name: str, cells_h: int = 4, cells_w: int = 4) -> tuple:
    p = _patch(name)
    return (2, 3, cells_h * p, cells_w * p)


def _pair(name: str, timm_kwargs=None, featzoo_kwargs=None, seed: int = 0):
    """timm's model (randomized weights) and featzoo's with the same weights, both in eval mode."""
    ref = build_timm_reference(name, seed, **(timm_kwargs or {}))
    with torch.device('meta'):
        model = featzoo.create_model(name, **(featzoo_kwargs or {}))
    model.load_state_dict(ref.state_dict(), strict=True, assign=True)
    return ref, model.eval()


def _input(size, seed: int = 0) -> torch.Tensor:
    return torch.randn(*size, generator=torch.Generator().manual_seed(seed))


def _listify(out):
    return list(out.values()) if isinstance(out, dict) else list(out)


# ---- parity ------------------------------------------------------------------------------------------------------

def test_family_registered():
    # every architecture of timm's module, and only those (the DeiTs live in their own module, as in timm)
    assert set(NAMES) == set(timm.list_models(module=FAMILY))
    assert len(CONFIGS) < len(NAMES) / 2


def _features_parity(name: str, ref, size, depth: int, **kwargs) -> None:
    """features_only (default wrapper) equals timm's forward_intermediates on the same weights."""
    path = save_state(ref.state_dict())
    # explicit indices: the registry's levels describe the published depth, not the shallow test models
    backbone = featzoo.create_model(name, depth=depth, features_only=True, out_indices=tuple(range(depth)),
                                    checkpoint_path=path, **kwargs).eval()
    feats = check_feature_shapes(backbone, size)
    x = _input(size)
    with torch.no_grad():
        feats = _listify(backbone(x))
        refs = ref.forward_intermediates(x, indices=list(range(depth)), intermediates_only=True)
    assert len(feats) == len(refs) == depth
    for i, (a, b) in enumerate(zip(feats, refs)):
        assert_equal(a, b, f'{name} feature level {i}')


@pytest.mark.parametrize('name', CONFIGS)
def test_timm_parity_dynamic_size(name):
    # timm's reference resamples its position embedding per input, as featzoo does by default
    ours = _narrow(name)
    timm_kwargs = dict(ours, dynamic_img_size=True)
    timm_parity(name, input_size=(1,) + _size(name, 5, 4)[1:], timm_kwargs=timm_kwargs, featzoo_kwargs=ours,
                check_features=False)
    ref, _ = _pair(name, timm_kwargs, ours)
    _features_parity(name, ref, (1,) + _size(name, 3, 5)[1:], ours['depth'], embed_dim=ours['embed_dim'])


@pytest.mark.parametrize('name', KINDS)
def test_timm_parity_img_size(name):
    # both built for the small input, so the position embedding itself is small and nothing is resampled
    size = _size(name)
    kwargs = dict(SHALLOW, img_size=size[-1])
    ours = dict(kwargs, dynamic_img_size=False)
    timm_parity(name, input_size=size, timm_kwargs=kwargs, featzoo_kwargs=ours, check_features=False)
    ref, _ = _pair(name, kwargs, ours)
    _features_parity(name, ref, size, SHALLOW['depth'], img_size=size[-1])


@pytest.mark.slow
@pytest.mark.parametrize('name', NAMES)
def test_timm_parity_every_architecture(name):
    # full depth unless the float32 weights exceed 1.5 GB (those are checked at depth 2, full width)
    depth = {} if featzoo.registry.get_arch_entry(name)['num_params'] <= BIG else SHALLOW
    timm_parity(name, input_size=(1,) + _size(name, 5, 7)[1:], timm_kwargs=dict(depth, dynamic_img_size=True),
                featzoo_kwargs=depth, check_features=False)


@pytest.mark.parametrize('global_pool', ['avg', 'avgmax', 'max', ''])
def test_timm_parity_global_pool(global_pool):
    kw = dict(SHALLOW, global_pool=global_pool, num_classes=7)
    ref, model = _pair('vit_small_patch14_reg4_dinov2', dict(kw, dynamic_img_size=True), kw)
    x = _input(_size('vit_small_patch14_reg4_dinov2'))
    with torch.no_grad():
        feats = model.forward_features(x)
        assert_equal(feats, ref.forward_features(x), 'forward_features')
        assert_equal(model.forward_head(feats, pre_logits=True), ref.forward_head(feats, pre_logits=True), 'pre')
        assert_equal(model(x), ref(x), f'logits with global_pool={global_pool!r}')
    assert model.global_pool == ref.global_pool == global_pool
    assert model.num_features == model.head_hidden_size == ref.head_hidden_size == 384


INTERMEDIATE_CASES = [
    dict(),
    dict(indices=2),
    dict(indices=[0, -1], norm=True),
    dict(indices=[-2], stop_early=True),
    dict(indices=(1, 3), output_fmt='NLC', return_prefix_tokens=True),
    dict(indices=[3, 0], intermediates_only=True),
]


@pytest.mark.parametrize('name', KINDS)
def test_forward_intermediates_parity(name):
    ref, model = _pair(name, dict(depth=4, dynamic_img_size=True), dict(depth=4))
    x = _input(_size(name, 3, 5))
    with torch.no_grad():
        for kwargs in INTERMEDIATE_CASES:
            ours, theirs = model.forward_intermediates(x, **kwargs), ref.forward_intermediates(x, **kwargs)
            if not kwargs.get('intermediates_only'):
                assert_equal(ours[0], theirs[0], f'{kwargs} final')
                ours, theirs = ours[1], theirs[1]
            assert len(ours) == len(theirs), kwargs
            for a, b in zip(ours, theirs):
                for u, v in zip(a, b) if isinstance(a, tuple) else ((a, b),):
                    assert_equal(u, v, f'{name} {kwargs}')


def test_forward_intermediates_nhwc_and_bad_arguments():
    model = featzoo.create_model('vit_tiny_patch16_224', depth=3).eval()
    x = _input((1, 3, 48, 80))
    nchw = model.forward_intermediates(x, indices=[1], intermediates_only=True)[0]
    nhwc = model.forward_intermediates(x, indices=[1], output_fmt='NHWC', intermediates_only=True)[0]
    assert nchw.shape == (1, 192, 3, 5)
    assert torch.equal(nhwc, nchw.permute(0, 2, 3, 1))
    with pytest.raises(ValueError, match='NCHW'):
        model.forward_intermediates(x, output_fmt='NCL')
    with pytest.raises(ValueError, match='-3 to 2'):
        model.forward_intermediates(x, indices=[3])
    with pytest.raises(ValueError, match='1 to 3'):
        model.forward_intermediates(x, indices=4)
    with pytest.raises(TypeError):
        model.forward_intermediates(x, indices=[1.0])


@pytest.mark.parametrize('name', ['vit_small_patch14_dinov2', 'deit_base_distilled_patch16_224'])
def test_prune_intermediate_layers_parity(name):
    ref, model = _pair(name, dict(depth=4, dynamic_img_size=True), dict(depth=4))
    assert model.prune_intermediate_layers([-3, 1]) == ref.prune_intermediate_layers([-3, 1]) == [1, 1]
    assert list(model.state_dict()) == list(ref.state_dict())
    x = _input(_size(name))
    with torch.no_grad():
        a = model.forward_intermediates(x, indices=[1], norm=True)
        b = ref.forward_intermediates(x, indices=[1], norm=True)
    assert_equal(a[0], b[0], 'pruned final')
    assert_equal(a[1][0], b[1][0], 'pruned intermediate')
    assert model(x).shape == ref(x).shape


# ---- the model contract --------------------------------------------------------------------------------------------

def test_model_contract():
    model = featzoo.create_model('vit_small_patch14_reg4_dinov2', depth=1).eval()
    x = _input((1, 3, 56, 42))
    assert model.num_classes == 0 and model.num_prefix_tokens == 5
    tokens = model.forward_features(x)
    assert tokens.shape == (1, 5 + 4 * 3, 384)
    assert model(x).shape == (1, 384)
    model.reset_classifier(10)
    assert model(x).shape == (1, 10) and model.get_classifier().out_features == 10
    model.reset_classifier(0, '')
    assert torch.equal(model(x), tokens)
    model.reset_classifier(3, 'avg')
    assert model.global_pool == 'avg' and model(x).shape == (1, 3)
    with pytest.raises(ValueError, match="'token'"):
        model.reset_classifier(3, 'map')
    assert model.no_weight_decay() >= {'pos_embed', 'cls_token', 'reg_token'}
    groups = model.group_matcher()
    assert groups['blocks'][0][0] == r'^blocks\.(\d+)' and 'reg_token' in groups['stem']


def test_distilled_head_and_training_mode():
    ref, model = _pair('deit_base_distilled_patch16_224', dict(depth=1), dict(depth=1, img_size=224))
    assert isinstance(model.get_classifier(), tuple) and len(model.get_classifier()) == 2
    model.set_distilled_training(True)
    ref.set_distilled_training(True)
    model.train()
    ref.train()
    x = _input((1, 3, 224, 224))
    ours, theirs = model(x), ref(x)
    assert isinstance(ours, tuple) and len(ours) == 2
    for a, b in zip(ours, theirs):
        assert_equal(a, b, 'distilled training logits')
    with pytest.raises(ValueError, match="'token'"):
        featzoo.create_model('deit_base_distilled_patch16_224', depth=1, global_pool='avg')


def test_grad_checkpointing_same_outputs_and_gradients():
    model = featzoo.create_model('vit_tiny_patch16_224', depth=2, num_classes=4)
    x = _input((2, 3, 32, 48))
    model.train()
    plain = model(x)
    plain.sum().backward()
    grad = model.blocks[0].attn.qkv.weight.grad.clone()
    model.zero_grad()
    model.set_grad_checkpointing(True)
    again = model(x)
    again.sum().backward()
    assert_equal(again, plain, 'checkpointed forward')
    assert_equal(model.blocks[0].attn.qkv.weight.grad, grad, 'checkpointed gradient')


def test_bad_constructor_arguments_name_the_value():
    with pytest.raises(ValueError, match="'mean'.*valid.*'map'"):
        featzoo.create_model('vit_tiny_patch16_224', depth=1, global_pool='mean')
    with pytest.raises(TypeError, match='wrong_arg'):
        featzoo.create_model('vit_tiny_patch16_224', wrong_arg=1)
    with pytest.raises(ValueError, match='num_heads'):
        featzoo.create_model('vit_tiny_patch16_224', depth=1, num_heads=5)
    with pytest.raises(ValueError, match='class_token'):
        featzoo.create_model('vit_tiny_patch16_224', depth=1, class_token=False)


@pytest.mark.parametrize('name', ['vit_base_patch32_224', 'vit_small_patch14_dinov2'])
def test_output_stride(name):
    natural = _patch(name)
    with torch.device('meta'):
        featzoo.create_model(name, output_stride=natural)
    for bad in (8, 16 if natural != 16 else 32):
        with pytest.raises(ValueError, match=str(natural)):
            featzoo.create_model(name, output_stride=bad)
    from featzoo.models import vision_transformer
    with pytest.raises(ValueError, match=rf'valid: \({natural},\)'):
        vision_transformer.SPEC.build(name, depth=1, output_stride=natural * 2)


# ---- any input size, img_size and checkpoints -------------------------------------------------------------------

@pytest.mark.parametrize('name', KINDS)
def test_features_at_other_sizes_match_timm(name):
    ref, _ = _pair(name, dict(depth=3, dynamic_img_size=True), dict(depth=3))
    path = save_state(ref.state_dict())
    backbone = featzoo.create_model(name, depth=3, features_only=True, out_indices=(0, 1, 2),
                                    checkpoint_path=path).eval()
    p = _patch(name)
    for cells in ((3, 7), (6, 2)):
        size = (1, 3, cells[0] * p, cells[1] * p)
        feats = check_feature_shapes(backbone, size)
        assert [tuple(f.shape) for f in feats] == [(1, ref.embed_dim) + cells] * 3
        x = _input(size, seed=cells[0])
        with torch.no_grad():
            ours = backbone(x)
            theirs = ref.forward_intermediates(x, indices=[0, 1, 2], intermediates_only=True)
        for a, b in zip(ours, theirs):
            assert_equal(a, b, f'{name} features at {size}')


def test_done_when_vit_small_features_320x480():
    backbone = featzoo.create_model('vit_small_patch16_224', features_only=True).eval()
    with torch.no_grad():
        feats = _listify(backbone(torch.randn(1, 3, 320, 480)))
    assert feats and all(tuple(f.shape) == (1, 384, 20, 30) for f in feats)
    assert all(r == 16 for r in backbone.feature_info.reduction())


def test_features_nhwc_and_prefix_tokens_removed():
    ref, _ = _pair('vit_small_patch14_reg4_dinov2', dict(depth=2, dynamic_img_size=True), dict(depth=2))
    path = save_state(ref.state_dict())
    kwargs = dict(depth=2, features_only=True, checkpoint_path=path, out_indices=(0, 1))
    nchw = featzoo.create_model('vit_small_patch14_reg4_dinov2', **kwargs)
    nhwc = featzoo.create_model('vit_small_patch14_reg4_dinov2', output_fmt='NHWC', **kwargs)
    x = _input((1, 3, 42, 70))
    with torch.no_grad():
        a, b = _listify(nchw.eval()(x)), _listify(nhwc.eval()(x))
        tokens = ref.forward_intermediates(x, indices=[0, 1], output_fmt='NLC', intermediates_only=True)
    for u, v, t in zip(a, b, tokens):
        assert u.shape == (1, 384, 3, 5) and v.shape == (1, 3, 5, 384)
        assert torch.equal(v, u.permute(0, 2, 3, 1))
        # 15 patch tokens: the class and the four register tokens are gone
        assert_equal(v.reshape(1, 15, 384), t, 'NHWC features are the patch tokens')


@pytest.mark.parametrize('name', ['vit_tiny_patch16_224', 'vit_small_patch14_reg4_dinov2',
                                  'deit_base_distilled_patch16_224'])
def test_img_size_resizes_loaded_position_embedding(name):
    ref = build_timm_reference(name, depth=1)
    path = save_state(ref.state_dict())
    p = _patch(name)
    img = (5 * p, 3 * p)
    model = featzoo.create_model(name, depth=1, img_size=img, checkpoint_path=path).eval()
    prefix = 0 if ref.no_embed_class else ref.num_prefix_tokens
    assert model.pos_embed.shape == (1, prefix + 15, ref.embed_dim)
    small_ref = timm.create_model(name, depth=1, img_size=img).eval()
    from timm.models.vision_transformer import checkpoint_filter_fn as timm_filter
    small_ref.load_state_dict(timm_filter(ref.state_dict(), small_ref), strict=True)
    assert_equal(model.pos_embed, small_ref.pos_embed, 'resampled pos_embed')
    x = _input((2, 3) + img)
    with torch.no_grad():
        assert_equal(model.forward_features(x), small_ref.forward_features(x), 'img_size model')
        # the same numbers come from resampling at run time in the full-size model
        dynamic = featzoo.create_model(name, depth=1, checkpoint_path=path).eval()
        assert_equal(dynamic.forward_features(x), small_ref.forward_features(x), 'dynamic model')


def test_static_size_model_equals_timm_at_native_size():
    ref, model = _pair('vit_tiny_patch16_224', dict(depth=1), dict(depth=1, dynamic_img_size=False))
    x = _input((1, 3, 224, 224))
    with torch.no_grad():
        assert_equal(model(x), ref(x), 'static logits')


def test_checkpoint_filter_converts_meta_dinov2_layout():
    from featzoo.models.vision_transformer import SPEC, checkpoint_filter_fn
    model = SPEC.build('vit_small_patch14_reg4_dinov2', depth=1, img_size=56)
    randomize_state(model)
    ours = model.state_dict()
    # Meta's release keeps a position for the class token and names the registers differently
    meta = {k: v.clone() for k, v in ours.items() if k not in ('reg_token', 'cls_token', 'pos_embed')}
    first = torch.randn(1, 1, 384)
    meta['pos_embed'] = torch.cat([first, ours['pos_embed']], dim=1)
    meta['cls_token'] = ours['cls_token'] - first
    meta['register_tokens'] = ours['reg_token']
    meta['mask_token'] = torch.zeros(1, 384)
    meta['blocks.0.ls1.gamma'] = meta.pop('blocks.0.ls1.gamma')
    converted = checkpoint_filter_fn(meta, model)
    assert sorted(converted) == sorted(ours)
    for key, value in ours.items():
        assert_equal(converted[key], value, key)


def test_checkpoint_filter_renames_gamma_and_rejects_odd_grids():
    from featzoo.models.vision_transformer import SPEC, checkpoint_filter_fn
    model = SPEC.build('vit_tiny_patch16_224', depth=1, img_size=32)
    state = {k.replace('ls1.gamma', 'gamma_1'): v for k, v in model.state_dict().items()}
    state['blocks.0.gamma_1'] = torch.ones(192)
    state['pre_logits.fc.weight'] = torch.ones(1)
    out = checkpoint_filter_fn(state, model)
    assert 'blocks.0.ls1.gamma' in out and not any(k.startswith('pre_logits') for k in out)
    state = dict(model.state_dict(), pos_embed=torch.zeros(1, 1 + 7, 192))
    with pytest.raises(ValueError, match='7 patch tokens'):
        checkpoint_filter_fn(state, model)


# ---- features_only: wrappers, pruning, the pyramid ----------------------------------------------------------------

@pytest.mark.parametrize('name', ['vit_small_patch14_dinov2', 'deit_base_distilled_patch16_224'])
def test_features_state_dict_is_full_minus_dropped(name):
    with torch.device('meta'):
        full = featzoo.create_model(name, depth=4)
        backbone = featzoo.create_model(name, depth=4, features_only=True, out_indices=(0, 2))
        normed = featzoo.create_model(name, depth=4, features_only=True, out_indices=(1,), norm=True)
    keys = list(full.state_dict())
    dropped = ('blocks.3.', 'norm.', 'fc_norm.', 'head.', 'head_dist.')
    assert list(backbone.state_dict()) == [k for k in keys if not k.startswith(dropped)]
    dropped_normed = ('blocks.2.', 'blocks.3.', 'fc_norm.', 'head.', 'head_dist.')
    assert list(normed.state_dict()) == [k for k in keys if not k.startswith(dropped_normed)]
    assert backbone.feature_info.module_name() == ['blocks.0', 'blocks.2']


def test_feature_cls_choices():
    with pytest.raises(ValueError, match="getter.*fx|fx.*getter"):
        featzoo.create_model('vit_tiny_patch16_224', depth=1, features_only=True, feature_cls='list')
    caps = featzoo.model_capabilities('vit_tiny_patch16_224')
    assert caps.default_feature_cls == 'getter' and set(caps.feature_cls) == {'getter', 'fx'}


def test_fx_features_equal_getter_features():
    name = 'vit_small_patch14_reg4_dinov2'
    ref, _ = _pair(name, dict(depth=3, dynamic_img_size=True), dict(depth=3))
    path = save_state(ref.state_dict())
    getter = featzoo.create_model(name, depth=3, features_only=True, checkpoint_path=path, out_indices=(0, 2))
    fx = featzoo.create_model(name, depth=3, features_only=True, checkpoint_path=path, out_indices=(0, 2),
                              feature_cls='fx')
    x = _input((1, 3, 56, 84))
    with torch.no_grad():
        for a, b in zip(_listify(getter.eval()(x)), _listify(fx.eval()(x))):
            assert_equal(b, a, 'fx vs getter')


@pytest.mark.parametrize('name,size,expected', [
    ('vit_small_patch16_224', (1, 3, 320, 480), [(80, 120), (40, 60), (20, 30), (10, 15)]),
    ('vit_small_patch14_dinov2', (1, 3, 322, 476), [(81, 119), (41, 60), (21, 30), (11, 15)]),
    ('vit_base_patch32_224', (1, 3, 96, 160), [(24, 40), (12, 20), (6, 10), (3, 5)]),
])
def test_pyramid_shapes_and_reductions(name, size, expected):
    backbone = featzoo.create_model(name, depth=4, features_only=True, out_indices=(0, 1, 2, 3),
                                    feature_pyramid=True).eval()
    assert backbone.feature_info.reduction() == [4, 8, 16, 32]
    dim = backbone.feature_info.channels()[0]
    with torch.no_grad():
        feats = _listify(backbone(torch.randn(*size)))
    assert [tuple(f.shape) for f in feats] == [(1, dim) + e for e in expected]
    for f, r in zip(feats, (4, 8, 16, 32)):
        assert f.shape[-2:] == (math.ceil(size[-2] / r), math.ceil(size[-1] / r))


def test_pyramid_values_and_no_new_parameters():
    name = 'vit_tiny_patch16_224'
    ref, _ = _pair(name, dict(depth=4, dynamic_img_size=True), dict(depth=4))
    path = save_state(ref.state_dict())
    pyramid = featzoo.create_model(name, depth=4, features_only=True, out_indices=(0, 1, 2, 3),
                                   feature_pyramid=True, checkpoint_path=path).eval()
    plain = featzoo.create_model(name, depth=4, features_only=True, out_indices=(0, 1, 2, 3),
                                 checkpoint_path=path).eval()
    assert list(pyramid.state_dict()) == list(plain.state_dict())
    x = _input((1, 3, 80, 112))
    with torch.no_grad():
        levels, maps = _listify(pyramid(x)), _listify(plain(x))
    assert_equal(levels[2], maps[2], 'stride-16 level is block 2 itself')
    assert_equal(levels[3], torch.nn.functional.max_pool2d(maps[3], 2, 2, ceil_mode=True), 'stride 32 max pool')
    up = torch.nn.functional.interpolate(maps[0], size=(20, 28), mode='bilinear', align_corners=False)
    assert_equal(levels[0], up, 'stride 4 bilinear')


@pytest.mark.parametrize('out_indices', [(1, 2, 3), (0, 1, 2, 3, 4), (5,)])
def test_pyramid_needs_four_levels(out_indices):
    with pytest.raises(ValueError, match='four'):
        featzoo.create_model('vit_tiny_patch16_224', depth=6, features_only=True, out_indices=out_indices,
                             feature_pyramid=True)


# ---- the attention-pool head (SigLIP), set_input_size, projection heads -------------------------------------------

@pytest.mark.parametrize('kwargs', [dict(), dict(out_features=0), dict(latent_len=3, pool_type='avg', qk_norm=True),
                                    dict(pos_embed='abs', feat_size=10, out_features=48, latent_len=2, pool_type='')])
def test_attention_pool_latent_matches_timm(kwargs):
    from timm.layers import AttentionPoolLatent as TimmPool
    from featzoo.layers.attention_pool import AttentionPoolLatent
    ref = TimmPool(64, num_heads=4, norm_layer=torch.nn.LayerNorm, **kwargs).eval()
    ours = AttentionPoolLatent(64, num_heads=4, norm_layer=torch.nn.LayerNorm, **kwargs).eval()
    randomize_state(ref)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in ref.state_dict().items()]
    ours.load_state_dict(ref.state_dict())
    x = _input((2, 10, 64))
    with torch.no_grad():
        assert_equal(ours(x), ref(x), f'attention pool {kwargs}')
    assert ours.out_features == ref.out_features


def test_attention_pool_rejects_bad_arguments():
    from featzoo.layers.attention_pool import AttentionPoolLatent
    with pytest.raises(ValueError, match='num_heads'):
        AttentionPoolLatent(64, num_heads=5)
    with pytest.raises(ValueError, match="pool_type='max'.*valid"):
        AttentionPoolLatent(64, pool_type='max')
    with pytest.raises(ValueError, match='feat_size'):
        AttentionPoolLatent(64, pos_embed='abs')


def test_siglip_map_head_reset_and_prune():
    name = 'vit_base_patch16_siglip_224'
    kw = dict(_narrow(name), num_classes=5)
    ref, model = _pair(name, dict(kw, dynamic_img_size=True), kw)
    x = _input((1, 3, 48, 64))
    with torch.no_grad():
        tokens = model.forward_features(x)
        # the pre-logits are the attention pool's output (SigLIP's joint embedding), on patch tokens only
        assert_equal(model.forward_head(tokens, pre_logits=True), model.attn_pool(tokens), 'pre-logits')
        assert_equal(model(x), ref(x), 'logits through the attention pool')
    model.reset_classifier(3)
    assert model.attn_pool is not None and model(x).shape == (1, 3)
    model.reset_classifier(0, 'avg')
    ref.reset_classifier(0, 'avg')
    assert model.attn_pool is None and model.global_pool == 'avg'
    with torch.no_grad():
        assert_equal(model(x), ref(x), 'average pool after dropping the attention pool')
    with pytest.raises(ValueError, match="'map'.*valid"):
        model.reset_classifier(0, 'map')  # cannot be created back without weights
    _, pruned = _pair(name, dict(kw, dynamic_img_size=True), kw)
    pruned.prune_intermediate_layers([0])
    assert pruned.attn_pool is None and not any(k.startswith('attn_pool') for k in pruned.state_dict())


def test_pool_include_prefix_parity():
    # timm's test_vit3: register token kept for the attention pool
    name = 'test_vit3'
    ref, model = _pair(name, dict(depth=1, dynamic_img_size=True), dict(depth=1))
    assert model.pool_include_prefix and model.num_prefix_tokens == 1
    x = _input((1, 3, 48, 32))
    with torch.no_grad():
        assert_equal(model(x), ref(x), 'attention pool over prefix and patch tokens')


def test_set_input_size_matches_timm():
    name = 'vit_small_patch14_reg4_dinov2'
    ref, model = _pair(name, dict(depth=1, dynamic_img_size=True), dict(depth=1, dynamic_img_size=False))
    model.set_input_size((42, 70))
    ref.set_input_size((42, 70))
    assert model.pos_embed.shape == ref.pos_embed.shape == (1, 15, 384)
    assert_equal(model.pos_embed, ref.pos_embed, 'resampled position embedding')
    x = _input((1, 3, 42, 70))
    with torch.no_grad():
        assert_equal(model(x), ref(x), 'static model at the new size')
    with pytest.raises(ValueError, match='multiple.*14'):
        model.set_input_size(50)
    # a published row whose reference size has a remainder, as in timm (the patch convolution crops 384 to 378)
    with torch.device('meta'):
        assert featzoo.create_model('vit_so400m_patch14_siglip_384', depth=1).patch_embed.grid_size == (27, 27)


def test_head_is_projection_recorded_per_tag():
    from featzoo import registry

    def flag(arch, tag):
        entry = {c['tag']: c for c in registry.get_arch_entry(arch)['pretrained']}[tag]
        return entry.get('head_is_projection', False)

    assert flag('vit_base_patch16_clip_224', 'openai') is True
    assert flag('vit_large_patch14_clip_quickgelu_336', 'openai') is True
    assert flag('vit_base_patch16_clip_224', 'openai_ft_in1k') is False
    assert flag('vit_base_patch16_siglip_224', 'webli') is False  # no head: the pool's output is the embedding
    assert flag('vit_base_patch16_224', 'augreg2_in21k_ft_in1k') is False
    model = featzoo.create_model('vit_base_patch16_clip_224.openai', depth=1)
    assert model.num_classes == 512 and model.pretrained_cfg['head_is_projection'] is True


def test_head_is_projection_index_agrees_with_family():
    from featzoo import registry
    flagged = 0
    for arch in NAMES:
        for tag in registry.get_arch_entry(arch)['pretrained']:
            expected = SPEC.head_is_projection_for(arch, tag)
            assert tag.get('head_is_projection', False) == expected, f'{arch}.{tag["tag"]}: run tools/gen_index.py'
            flagged += expected
    assert flagged == 58  # every CLIP / OpenCLIP image tower published with its projection
