"""EVA-style ViTs (EVA, EVA02, EVA-CLIP, Perception Encoder, RoPE-ViT, SBB, DINOv3, LingBot, Sapiens2) against timm.

Keys, shapes and numerics of every architecture (one per configuration by default, all with ``-m slow``) are
tests/test_parity_timm.py's; this file checks what is particular to the family against timm: RoPE and position
tables at other input sizes (timm with ``dynamic_img_size=True``), the intermediates API and pruning, pools,
set_input_size, checkpoint conversion from the original layouts, and the shared layers it brought (gated MLPs, RoPE
tables). Models are depth-reduced (widths above 1024 shrunk to four heads of the same size).
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

import pytest
import torch
from torch import nn

import featzoo
from featzoo import registry
from featzoo.models import eva
from helpers import (assert_equal, build_timm_reference, check_feature_shapes, configurations, randomize_state,
                     save_state)

timm = pytest.importorskip('timm')

FAMILY = 'eva'
NAMES = featzoo.list_models(module=FAMILY)
SPEC = eva.SPEC


def _shallow(name: str, depth: int = 2) -> Dict[str, Any]:
    """Depth-reduced arguments (both libraries take them); widths above 1024 shrink to four heads of the same
    size, and Sapiens2 keeps one grouped-query block."""
    row = SPEC.row(name)
    kwargs: Dict[str, Any] = dict(depth=depth)
    heads = row.get('num_heads', 12)
    if row.get('embed_dim', 768) > 1024:
        kwargs.update(embed_dim=row['embed_dim'] // heads * 4, num_heads=4)
        heads = 4
    if row.get('num_kv_heads') is not None:
        kwargs['num_kv_heads'] = (heads,) + (heads // 2,) * (depth - 1)
    return kwargs


def _input(size, seed: int = 0) -> torch.Tensor:
    return torch.randn(*size, generator=torch.Generator().manual_seed(seed))


def _pair(name: str, timm_kwargs: Dict[str, Any], featzoo_kwargs: Dict[str, Any], seed: int = 0):
    ref = build_timm_reference(name, seed, **timm_kwargs)
    with torch.device('meta'):
        model = featzoo.create_model(name, **featzoo_kwargs)
    model.load_state_dict(ref.state_dict(), strict=True, assign=True)
    return ref, model.eval()


def _listify(out):
    return list(out.values()) if isinstance(out, dict) else list(out)


def _check_model(name: str, ref: nn.Module, model: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        feats = model.forward_features(x)
        assert_equal(feats, ref.forward_features(x), f'{name} forward_features')
        assert_equal(model.forward_head(feats, pre_logits=True), ref.forward_head(feats, pre_logits=True),
                     f'{name} pre_logits')
        assert_equal(model(x), ref(x), f'{name} logits')


def _check_features(name: str, ref: nn.Module, x: torch.Tensor, **kwargs: Any) -> None:
    """features_only (the getter) equals timm's forward_intermediates on the same weights, at every block."""
    depth = kwargs['depth']
    path = save_state(ref.state_dict())
    backbone = featzoo.create_model(name, features_only=True, out_indices=tuple(range(depth)), checkpoint_path=path,
                                    **kwargs).eval()
    feats = check_feature_shapes(backbone, x)
    with torch.no_grad():
        refs = ref.forward_intermediates(x, indices=list(range(depth)), intermediates_only=True)
    assert len(feats) == len(refs) == depth
    for i, (a, b) in enumerate(zip(feats, refs)):
        assert_equal(a, b, f'{name} feature level {i}')


# ---- registry ----------------------------------------------------------------------------------------------------

def test_every_timm_architecture_and_tag_is_registered():
    assert NAMES == sorted(timm.list_models(module=FAMILY))
    assert featzoo.list_models(module=FAMILY, pretrained=True) == timm.list_models(module=FAMILY, pretrained=True)


def test_head_is_projection_marks_the_image_text_towers():
    tagged = {(n, t['tag']) for n in NAMES for t in registry.get_arch_entry(n)['pretrained'] if t.get('head_is_projection')}
    towers = {n for n, _ in tagged}
    assert towers == {'eva_giant_patch14_clip_224', 'eva02_base_patch16_clip_224', 'eva02_large_patch14_clip_224',
                      'eva02_large_patch14_clip_336', 'eva02_enormous_patch14_clip_224', 'vit_pe_core_tiny_patch16_384',
                      'vit_pe_core_small_patch16_384', 'vit_pe_core_base_patch16_224', 'vit_pe_core_large_patch14_336',
                      'vit_pe_core_gigantic_patch14_448'}
    assert len(tagged) == 12
    assert not eva.head_is_projection('eva02_large_patch14_448')


# ---- numeric parity ----------------------------------------------------------------------------------------------

# one of each position scheme: axial RoPE rescaled to a reference grid (EVA02; PE with offset and 'xy'), axial on
# raw indices with a learned table (RoPE-ViT ape), mixed, DINOv3's centred RoPE, registers without a class token
OTHER_SIZE_KINDS = ['eva02_tiny_patch14_224', 'vit_pe_core_tiny_patch16_384', 'vit_small_patch16_rope_ape_224',
                    'vit_small_patch16_rope_mixed_224', 'vit_small_patch16_dinov3', 'vit_medium_patch16_rope_reg1_gap_256']


# with -m slow: the other configurations too (their smallest architecture each)
OTHER_SIZE_ALL = [pytest.param(n, marks=pytest.mark.slow) for n in configurations(NAMES) if n not in OTHER_SIZE_KINDS]


@pytest.mark.parametrize('name', OTHER_SIZE_KINDS + OTHER_SIZE_ALL)
def test_rope_and_position_table_at_another_input_size(name):
    # timm recomputes RoPE (and resamples its table) per input with dynamic_img_size=True; featzoo always does
    kwargs = _shallow(name)
    ref, model = _pair(name, dict(kwargs, dynamic_img_size=True), kwargs)
    patch = SPEC.input_multiple_for(name)
    x = _input((1, 3, 3 * patch, 5 * patch))
    _check_model(name, ref, model, x)
    _check_features(name, ref, x, **kwargs)


INTERMEDIATE_CASES = [
    dict(),
    dict(indices=2),
    dict(indices=[0, -1], norm=True),
    dict(indices=[-2], stop_early=True),
    dict(indices=(1, 3), output_fmt='NLC', return_prefix_tokens=True),
    dict(indices=[3, 0], intermediates_only=True),
]


@pytest.mark.parametrize('name', ['vit_small_patch16_rope_mixed_224', 'vit_betwixt_patch16_rope_reg4_gap_256'])
def test_forward_intermediates_and_pruning_parity(name):
    ref, model = _pair(name, dict(depth=4, dynamic_img_size=True), dict(depth=4))
    x = _input((1, 3, 48, 80))
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
    assert model.prune_intermediate_layers([-3, 1]) == ref.prune_intermediate_layers([-3, 1]) == [1, 1]
    assert list(model.state_dict()) == list(ref.state_dict())
    with torch.no_grad():
        assert_equal(model.forward_intermediates(x, indices=[1], norm=True)[1][0],
                     ref.forward_intermediates(x, indices=[1], norm=True)[1][0], 'pruned intermediate')


@pytest.mark.parametrize('global_pool', ['avg', 'avgmax', 'max', '', 'token'])
def test_global_pool_parity(global_pool):
    name = 'vit_small_patch16_dinov3'
    kw = dict(depth=1, global_pool=global_pool, num_classes=5)
    ref, model = _pair(name, dict(kw, dynamic_img_size=True), kw)
    _check_model(name, ref, model, _input((1, 3, 32, 48)))
    assert model.global_pool == ref.global_pool == global_pool


def test_set_input_size_resamples_the_table_as_timm():
    name = 'vit_small_patch16_rope_ape_224'
    ref, model = _pair(name, dict(depth=1), dict(depth=1))
    ref.set_input_size(img_size=(96, 64))
    model.set_input_size(img_size=(96, 64))
    assert_equal(model.pos_embed, ref.pos_embed, 'resampled pos_embed')
    _check_model(name, ref, model, _input((1, 3, 96, 64)))
    with pytest.raises(ValueError, match='patch_size'):
        model.set_input_size(patch_size=8)
    with pytest.raises(ValueError, match='multiples of 16'):
        model.set_input_size(img_size=(96, 60))


# ---- the model contract and bad arguments ------------------------------------------------------------------------

def test_model_contract():
    model = featzoo.create_model('vit_pe_core_tiny_patch16_384', depth=1).eval()
    x = _input((1, 3, 32, 48))
    assert model.num_classes == 512 and model.global_pool == 'map' and model.attn_pool is not None
    assert model(x).shape == (1, 512) and model.forward_features(x).shape == (1, 1 + 6, 192)
    model.reset_classifier(0)
    assert model(x).shape == (1, 192) and model.attn_pool is not None
    model.reset_classifier(3, 'avg')
    assert model.attn_pool is None and model(x).shape == (1, 3)
    with pytest.raises(ValueError, match="'map'"):
        model.reset_classifier(3, 'map')
    mixed = featzoo.create_model('vit_small_patch16_rope_mixed_224', depth=1)
    assert 'rope.freqs' in mixed.no_weight_decay() and 'rope.freqs' in mixed.state_dict()
    groups = model.group_matcher()
    assert groups['blocks'][0][0] == r'^blocks\.(\d+)' and 'reg_token' in groups['stem']


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="class_token"):
        featzoo.create_model('vit_medium_patch16_rope_reg1_gap_256', depth=1, global_pool='token')
    with pytest.raises(ValueError, match="rope_type='spiral'"):
        featzoo.create_model('eva02_tiny_patch14_224', depth=1, rope_type='spiral')
    with pytest.raises(ValueError, match='num_kv_heads'):
        featzoo.create_model('vit_base_patch16_sapiens2', depth=2, num_kv_heads=(12,))
    with pytest.raises(ValueError, match='num_kv_heads'):
        featzoo.create_model('eva02_tiny_patch14_224', depth=1, num_kv_heads=1)
    with pytest.raises(ValueError, match='num_heads'):
        featzoo.create_model('eva02_tiny_patch14_224', depth=1, num_heads=5)
    with pytest.raises(ValueError, match=r'valid: \(14,\)'):
        featzoo.create_model('eva02_tiny_patch14_224', depth=1, output_stride=16)
    with pytest.raises(ValueError, match='multiples of 14'):
        featzoo.create_model('eva02_tiny_patch14_224', depth=1, img_size=100)


def test_grad_checkpointing_same_outputs_and_gradients():
    model = featzoo.create_model('vit_small_patch16_rope_mixed_224', depth=2, num_classes=4)
    x = _input((2, 3, 32, 48))
    model.train()
    plain = model(x)
    plain.sum().backward()
    grad = model.rope.freqs.grad.clone()
    model.zero_grad()
    model.set_grad_checkpointing(True)
    again = model(x)
    again.sum().backward()
    assert_equal(again, plain, 'checkpointed forward')
    assert_equal(model.rope.freqs.grad, grad, 'checkpointed gradient of the learned RoPE')


# ---- features_only: the pyramid and FX -----------------------------------------------------------------------------

def test_feature_pyramid_on_a_rope_vit():
    backbone = featzoo.create_model('eva02_tiny_patch14_224', depth=4, features_only=True, feature_pyramid=True,
                                    out_indices=(0, 1, 2, 3)).eval()
    with torch.no_grad():
        feats = _listify(backbone(_input((1, 3, 112, 84))))
    assert [tuple(f.shape[-2:]) for f in feats] == [(28, 21), (14, 11), (7, 6), (4, 3)]
    assert backbone.feature_info.reduction() == [4, 8, 16, 32]


@pytest.mark.parametrize('name', ['vit_small_patch16_rope_mixed_224', 'vit_small_patch16_dinov3'])
def test_fx_features_equal_getter_features(name):
    ref = build_timm_reference(name, depth=3)
    path = save_state(ref.state_dict())
    getter = featzoo.create_model(name, depth=3, features_only=True, checkpoint_path=path, out_indices=(0, 2))
    fx = featzoo.create_model(name, depth=3, features_only=True, checkpoint_path=path, out_indices=(0, 2),
                              feature_cls='fx')
    x = _input((1, 3, 48, 80))
    with torch.no_grad():
        for a, b in zip(_listify(getter.eval()(x)), _listify(fx.eval()(x))):
            assert_equal(b, a, 'fx vs getter')


# ---- checkpoints in the original layouts -------------------------------------------------------------------------

def _rename_all(state: Dict[str, torch.Tensor], pairs: List[Tuple[str, str]]) -> Dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for new, old in pairs:
            key = key.replace(new, old)
        out[key] = value
    return out


def _same_conversion(name: str, original: Dict[str, torch.Tensor], **kwargs: Any) -> None:
    """featzoo's filter and timm's turn an original-layout checkpoint into the same timm-layout state_dict."""
    from timm.models.eva import checkpoint_filter_fn as timm_filter
    with torch.device('meta'):
        ref = timm.create_model(name, **kwargs)
    model = SPEC.build(name, **kwargs)
    ours, theirs = eva.checkpoint_filter_fn(dict(original), model), timm_filter(dict(original), ref)
    assert sorted(ours) == sorted(theirs) == sorted(model.state_dict())
    for key, value in theirs.items():
        assert_equal(ours[key], value, key)


def test_checkpoint_filter_converts_dinov3_layout():
    name = 'vit_small_patch16_dinov3_qkvb'
    model = SPEC.build(name, depth=1)
    randomize_state(model)
    state = _rename_all(model.state_dict(), [('reg_token', 'storage_tokens'), ('gamma_1', 'ls1.gamma'),
                                             ('gamma_2', 'ls2.gamma')])
    q, v = state.pop('blocks.0.attn.q_bias'), state.pop('blocks.0.attn.v_bias')
    state['blocks.0.attn.qkv.bias'] = torch.cat([q, torch.zeros_like(q), v])
    state['mask_token'] = torch.zeros(1, 384)
    state['rope_embed.periods'] = torch.ones(16)
    _same_conversion(name, state, depth=1)
    # the same checkpoint into the architecture without q/v biases drops them
    _same_conversion('vit_small_patch16_dinov3', state, depth=1)


def test_checkpoint_filter_converts_eva_clip_and_mim_layouts():
    name = 'eva02_base_patch16_clip_224'
    model = SPEC.build(name, depth=1, img_size=64)
    randomize_state(model)
    original = _rename_all(model.state_dict(), [('mlp.norm', 'mlp.ffn_ln'), ('attn.norm', 'attn.inner_attn_ln'),
                                                ('mlp.fc1_g', 'mlp.w1'), ('mlp.fc1_x', 'mlp.w2'),
                                                ('mlp.fc2', 'mlp.w3')])
    original = {'visual.' + k: v for k, v in original.items()}
    original['text.token_embedding.weight'] = torch.zeros(4, 4)  # the text tower is not the model's
    _same_conversion(name, original, depth=1, img_size=64)
    mim = dict(SPEC.build('eva02_tiny_patch14_224', depth=1, img_size=70).state_dict())
    mim.update({'mask_token': torch.zeros(1, 1, 192), 'lm_head.weight': torch.zeros(3, 192),
                'lm_head.bias': torch.zeros(3), 'norm.weight': torch.ones(192), 'norm.bias': torch.zeros(192)})
    from timm.models.eva import checkpoint_filter_fn as timm_filter
    with torch.device('meta'):
        ref = timm.create_model('eva02_tiny_patch14_224', depth=1, img_size=70)
    ours = eva.checkpoint_filter_fn(dict(mim), SPEC.build('eva02_tiny_patch14_224', depth=1, img_size=70))
    assert sorted(ours) == sorted(timm_filter(dict(mim), ref)) and 'fc_norm.weight' in ours


def test_checkpoint_filter_converts_perception_encoder_layout():
    name = 'vit_pe_core_tiny_patch16_384'
    model = SPEC.build(name, depth=1, img_size=64)
    randomize_state(model)
    sd = model.state_dict()
    pairs = [('patch_embed.proj', 'conv1'), ('norm_pre', 'ln_pre'), ('blocks.', 'transformer.resblocks.'),
             ('.norm1', '.ln_1'), ('.norm2', '.ln_2'), ('attn.qkv.', 'attn.in_proj_'), ('attn.proj', 'attn.out_proj'),
             ('mlp.fc1', 'mlp.c_fc'), ('mlp.fc2', 'mlp.c_proj'), ('attn_pool.latent', 'attn_pool.probe'),
             ('attn_pool.proj', 'attn_pool.attn.out_proj'), ('attn_pool.norm', 'attn_pool.layernorm')]
    original = _rename_all({k: v for k, v in sd.items() if not k.startswith(('head.', 'cls_token', 'pos_embed',
                                                                              'attn_pool.q.', 'attn_pool.kv.'))},
                           pairs)
    original['class_embedding'] = sd['cls_token'].reshape(-1)
    original['positional_embedding'] = sd['pos_embed'][0]
    original['proj'] = sd['head.weight'].t().contiguous()
    for kind in ('weight', 'bias'):
        original[f'attn_pool.attn.in_proj_{kind}'] = torch.cat([sd[f'attn_pool.q.{kind}'], sd[f'attn_pool.kv.{kind}']])
    original = {'visual.' + k: v for k, v in original.items()}
    _same_conversion(name, original, depth=1, img_size=64)


# ---- shared layers: gated MLPs and RoPE tables against timm's --------------------------------------------------

@pytest.mark.parametrize('kind,kwargs', [
    ('SwiGLU', dict(norm_layer=nn.LayerNorm)), ('SwiGLU', dict(align_to=8)), ('SwiGLUPacked', {}),
    ('GluMlp', {}), ('GluMlp', dict(use_conv=True)),
])
def test_gated_mlps_equal_timm(kind, kwargs):
    import timm.layers.mlp as timm_mlp
    from featzoo.layers import mlp as ours_mlp
    ref, ours = getattr(timm_mlp, kind)(8, 20, **kwargs), getattr(ours_mlp, kind)(8, 20, **kwargs)
    randomize_state(ref)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = _input((1, 8, 3, 3) if kwargs.get('use_conv') else (2, 3, 8))
    with torch.no_grad():
        assert_equal(ours(x), ref(x), kind)


@pytest.mark.parametrize('shape', [(5, 7), (1, 3)])
def test_rope_tables_equal_timm(shape):
    from timm.layers.pos_embed_sincos import RotaryEmbeddingCat, RotaryEmbeddingDinoV3, RotaryEmbeddingMixed
    from featzoo.layers.rope import AxialRope, CenteredRope, MixedRope
    for temperature, offset, ref_grid, indexing in ((1e4, 0.0, (16, 16), 'ij'), (100.0, 1.0, (14, 14), 'xy'),
                                                    (100.0, 0.0, None, 'xy')):
        theirs = RotaryEmbeddingCat(32, in_pixels=False, temperature=temperature, ref_feat_shape=ref_grid,
                                    grid_offset=offset, grid_indexing=indexing).get_embed(shape)
        assert torch.equal(AxialRope(32, temperature, offset, ref_grid, indexing)(*shape), theirs)
    assert torch.equal(CenteredRope(32, 100.0)(*shape), RotaryEmbeddingDinoV3(32, temperature=100).get_embed(shape))
    ref = RotaryEmbeddingMixed(dim=64, depth=2, num_heads=2, temperature=10.0, grid_indexing='xy')
    ours = MixedRope(32, 2, 2, 10.0, 'xy')
    ours.load_state_dict(ref.state_dict())
    assert torch.equal(ours(*shape), ref.get_embed(shape))
