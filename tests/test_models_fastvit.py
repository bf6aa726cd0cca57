"""fastvit (FastViT, MobileCLIP image towers): what is specific to this family.

- the all-RepMixer rows dilate (timm's FastViT takes no output_stride): held to a timm model whose convolutions were
  given featzoo's strides, dilations and paddings by hand (same weights, equal outputs); the hybrid rows, whose
  dilated stages would be attention stages, take only their natural stride;
- :meth:`FastVit.reparameterize` fuses the training-time branches into one conv per block and computes the same;
- Apple's original checkpoint layout and OpenCLIP's prefix load through the family's checkpoint filter;
- the MobileCLIP tags are marked as image-text projections.
"""
from __future__ import annotations

import copy
import re
from typing import List, Sequence

import pytest
import torch
from torch import nn

import featzoo
from featzoo.models.fastvit import SPEC, FastVit, checkpoint_filter_fn
from helpers import assert_equal, build_timm_reference, hand_dilated_parity, randomize_state

REPMIXER_ROWS = [n for n in SPEC.variants if len(SPEC.output_strides_for(n)) > 1]
HYBRID_ROWS = [n for n in SPEC.variants if n not in REPMIXER_ROWS]
SHALLOW = dict(layers=(1, 1, 2, 1))


def _shallow(name: str) -> dict:
    return dict(layers=(1,) * len(SPEC.row(name)['layers']))


def _dilate_by_hand(ref: torch.nn.Module, output_stride: int) -> int:
    """Turn timm's strided FastViT into the dilated scheme: a stage whose downsample would pass ``output_stride``
    keeps its patch embedding at stride 1 (dilated as the stage before it) and doubles the dilation of everything
    after it; returns how many convolutions changed."""
    dilations, net_stride, dilation = {}, 4, 1
    for i, stage in enumerate(ref.stages):
        first = dilation
        if not isinstance(stage.downsample, torch.nn.Identity):
            if net_stride >= output_stride:
                dilation *= 2
            else:
                net_stride *= 2
        dilations[i] = (first, dilation)
    changed = 0
    for name, module in ref.named_modules():
        if not isinstance(module, torch.nn.Conv2d) or module.kernel_size[0] == 1:
            continue
        stride = module.stride
        match = re.match(r'^stages\.(\d+)\.(\w+)', name)
        if match:
            first, dilation = dilations[int(match.group(1))]
            if match.group(2) == 'downsample':
                if dilation != first:  # the stride given up
                    stride = (1, 1)
                dilation = first
        elif name.startswith('final_conv'):
            dilation = dilations[len(ref.stages) - 1][1]
        else:
            continue
        geometry = (stride, (dilation, dilation), (dilation * (module.kernel_size[0] // 2),) * 2)
        if (module.stride, module.dilation, module.padding) != geometry:
            module.stride, module.dilation, module.padding = geometry
            changed += 1
    return changed


def test_the_dilating_rows_are_the_all_repmixer_rows():
    assert sorted(REPMIXER_ROWS) == ['fastvit_s12', 'fastvit_t12', 'fastvit_t8']
    for name in HYBRID_ROWS:
        with pytest.raises(ValueError, match=r'output_stride=16 .* valid: \((32|64),\)'):
            featzoo.create_model(name, output_stride=16)


def _stage_outputs(ref: nn.Module, x: torch.Tensor) -> List[torch.Tensor]:
    captured = {}
    hooks = [ref.get_submodule(f'stages.{i}').register_forward_hook(
        lambda mod, a, out, i=i: captured.__setitem__(i, out)) for i in range(len(ref.stages))]
    ref(x)
    for hook in hooks:
        hook.remove()
    return [captured[i] for i in range(len(ref.stages))]


def _dilated_parity(name: str, output_stride: int, kwargs: dict, wrappers: Sequence[str] = ('list',)) -> None:
    hand_dilated_parity(name, output_stride, build_timm_reference(name, **kwargs), _dilate_by_hand, _stage_outputs,
                        wrappers, **kwargs)


@pytest.mark.parametrize('output_stride', (16, 8))
def test_repmixer_rows_dilate_where_timm_only_strides(output_stride):
    _dilated_parity('fastvit_t8', output_stride, SHALLOW)


@pytest.mark.slow
@pytest.mark.parametrize('output_stride', (16, 8))
@pytest.mark.parametrize('name', REPMIXER_ROWS)
def test_every_repmixer_row_dilates_at_full_depth(name, output_stride):
    _dilated_parity(name, output_stride, {}, SPEC.feature_cls_for(name))


def _reparameterized_equal(name: str, **kwargs) -> None:
    model = featzoo.create_model(name, **kwargs).eval()
    randomize_state(model, seed=1)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x)
        fused = copy.deepcopy(model)
        fused.reparameterize()
        got = fused(x)
    names = [n for n, _ in fused.named_modules()]
    assert not any(re.search(r'\.(conv_kxk|conv_scale|identity|large_conv|small_conv|pos_enc|mixer)$', n)
                   for n in names), 'training-time branches left after reparameterize()'
    assert sum(p.numel() for p in fused.parameters()) < sum(p.numel() for p in model.parameters())
    assert_equal(got, expected, f'{name} reparameterized')


@pytest.mark.parametrize('name,kwargs', [
    ('fastvit_t8', SHALLOW), ('fastvit_sa12', SHALLOW), ('fastvit_mci0', SHALLOW),
    ('fastvit_mci3', dict(layers=(1,) * 5)), ('fastvit_t8', dict(SHALLOW, output_stride=8))],
    ids=['t8', 'sa12', 'mci0', 'mci3-layernorm', 't8-os8'])
def test_reparameterize_computes_the_same(name, kwargs):
    _reparameterized_equal(name, **kwargs)


def _to_apple_layout(state: dict, model: FastVit) -> dict:
    """timm's layout back to Apple's original one: a flat ``network`` list (blocks, then each stage's patch
    embedding and position encoding as entries of their own), ``rbr_*`` branches, ``head`` without ``fc``."""
    positions, index = {}, 0
    for i, stage in enumerate(model.stages):
        if not isinstance(stage.downsample, torch.nn.Identity):
            positions[(i, 'downsample')] = index
            index += 1
        if not isinstance(stage.pos_emb, torch.nn.Identity):
            positions[(i, 'pos_emb')] = index
            index += 1
        positions[(i, 'blocks')] = index
        index += 1
    out = {}
    for key, value in state.items():
        match = re.match(r'^stages\.(\d+)\.(downsample|pos_emb|blocks)\.(.*)$', key)
        if match:
            stage, part, rest = int(match.group(1)), match.group(2), match.group(3)
            rest = rest.replace('pos_enc.', 'pe.') if part == 'pos_emb' else rest
            key = f'network.{positions[(stage, part)]}.{rest}'
        for new, old in (('stem', 'patch_embed'), ('conv_kxk', 'rbr_conv'), ('conv_scale', 'rbr_scale'),
                         ('identity', 'rbr_skip'), ('final_conv', 'conv_exp'), ('large_conv', 'lkb_origin'),
                         ('.mlp.', '.convffn.'), ('se.fc1', 'se.reduce'), ('se.fc2', 'se.expand')):
            key = key.replace(new, old)
        key = re.sub(r'layer_scale(_[12])?\.gamma$', r'layer_scale\1', key)
        key = key.replace('head.fc.', 'head.')
        out[key] = value
    return out


@pytest.mark.parametrize('name', ['fastvit_t8', 'fastvit_sa12'])
def test_apple_layout_and_openclip_prefix_load(name):
    model = featzoo.create_model(name, **SHALLOW)
    randomize_state(model)
    state = model.state_dict()
    apple = _to_apple_layout(state, model)
    assert any(k.startswith('network.') for k in apple) and not any(k.startswith('stages.') for k in apple)
    converted = checkpoint_filter_fn(apple, model)
    assert sorted(converted) == sorted(state)
    assert all(torch.equal(converted[k], state[k]) for k in state)
    mobileclip = {f'image_encoder.model.{k}': v for k, v in apple.items()}
    mobileclip['text_encoder.proj'] = torch.zeros(1)
    assert sorted(checkpoint_filter_fn(mobileclip, model)) == sorted(state)
    openclip = {f'visual.trunk.{k}': v for k, v in state.items()}
    openclip['text.proj'] = torch.zeros(1)
    assert sorted(checkpoint_filter_fn(openclip, model)) == sorted(state)


def test_clip_projection_becomes_the_linear_head():
    """Apple's MobileCLIP towers store the projection as ``head.proj`` (in, out) without bias."""
    model = featzoo.create_model('fastvit_mci0', num_classes=512, **SHALLOW)
    apple = _to_apple_layout(model.state_dict(), model)
    projection = torch.randn(1024, 512)
    del apple['head.weight'], apple['head.bias']
    apple['head.proj'] = projection
    converted = checkpoint_filter_fn(apple, model)
    assert torch.equal(converted['head.fc.weight'], projection.T)
    assert not converted['head.fc.bias'].any()
    model.load_state_dict(converted)


def test_mobileclip_tags_are_projections():
    from featzoo import registry
    marked = {(n, t['tag']) for n in SPEC.variants for t in registry.get_arch_entry(n).get('pretrained', ())
              if t.get('head_is_projection')}
    assert marked == {('fastvit_mci0', 'apple_mclip'), ('fastvit_mci1', 'apple_mclip'),
                      ('fastvit_mci2', 'apple_mclip'), ('fastvit_mci0', 'apple_mclip2_dfndr2b'),
                      ('fastvit_mci2', 'apple_mclip2_dfndr2b'), ('fastvit_mci3', 'apple_mclip2_dfndr2b'),
                      ('fastvit_mci4', 'apple_mclip2_dfndr2b')}


def test_five_stage_towers_default_to_timms_four_levels():
    with torch.device('meta'):
        backbone = featzoo.create_model('fastvit_mci3', features_only=True)
    assert [f['reduction'] for f in backbone.feature_info] == [4, 8, 16, 32]
