"""metaformer (PoolFormer v1/v2, ConvFormer, CAFormer): what is specific to this family.

- every row dilates for output_stride 8 and 16 (timm's MetaFormer takes no output_stride): held to a timm model whose
  downsampling convs, pooling windows and depthwise convs were given featzoo's strides and dilations by hand (same
  weights, equal outputs); CAFormer's attention stages have no window to dilate and attend over the finer grid;
- the dilated average pool (no such option in PyTorch) against an independent computation;
- the MLP classifier head of the baselines, pre-logits and classifier resets;
- the original sail-sg checkpoint layouts load through the family's checkpoint filter;
- constructor arguments are checked with messages naming the value.
"""
from __future__ import annotations

import re
from typing import Sequence

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import featzoo
from featzoo.layers.dilated_avg_pool import DilatedAvgPool2d
from featzoo.models.metaformer import SPEC, MetaFormer, MlpHead, checkpoint_filter_fn
from helpers import assert_equal, build_timm_reference, hand_dilated_parity, randomize_state

ONE_BLOCK = (1, 1, 1, 1)
# one row per kind of token mixer and norm; each dilates something different
KINDS = ['poolformer_s12', 'poolformerv2_s12', 'convformer_s18', 'caformer_s18']


class _UnfoldAvgPool(nn.Module):
    """The reference for a dilated 3x3 average without the padded taps, computed from unfolded windows."""

    def __init__(self, dilation: int) -> None:
        super().__init__()
        self.dilation = dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        windows = F.unfold(x, 3, dilation=self.dilation, padding=self.dilation).view(batch, channels, 9, -1)
        inside = F.unfold(torch.ones(1, 1, height, width), 3, dilation=self.dilation, padding=self.dilation)
        return (windows.sum(2) / inside.sum(1)).view(batch, channels, height, width)


def _dilate_by_hand(ref: nn.Module, output_stride: int) -> int:
    """Turn timm's strided MetaFormer into the dilated scheme: a stage whose downsampling would pass
    ``output_stride`` keeps its conv at stride 1, dilated as the stage before it, and doubles the dilation of its
    pooling windows and depthwise convs and of every later stage; returns how many layers changed."""
    reduction, dilation, changed = 4, 1, 0
    for stage in ref.stages:
        first = dilation
        if not isinstance(stage.downsample, nn.Identity):
            if reduction >= output_stride:
                dilation *= 2
                conv = stage.downsample.conv
                conv.stride, conv.dilation, conv.padding = (1, 1), (first, first), (first, first)
                changed += 1
            else:
                reduction *= 2
        if dilation == 1:
            continue
        for block in stage.blocks:
            mixer = block.token_mixer
            if type(mixer).__name__ == 'Pooling':
                mixer.pool = _UnfoldAvgPool(dilation)
                changed += 1
            elif type(mixer).__name__ == 'SepConv':
                mixer.dwconv.dilation, mixer.dwconv.padding = (dilation, dilation), (3 * dilation, 3 * dilation)
                changed += 1
    return changed


def _cut_to_one_block(model: nn.Module) -> nn.Module:
    """timm's builder fixes each row's depths: its model is cut after the build to one block per stage."""
    for stage in model.stages:
        stage.blocks = stage.blocks[:1]
    return model


def _dilated_parity(name: str, output_stride: int, shallow: bool, wrappers: Sequence[str] = ('list',)) -> None:
    ref = build_timm_reference(name)
    if shallow:
        _cut_to_one_block(ref)
    hand_dilated_parity(name, output_stride, ref, _dilate_by_hand,
                        lambda m, x: m.forward_intermediates(x, intermediates_only=True), wrappers,
                        **(dict(depths=ONE_BLOCK) if shallow else {}))


@pytest.mark.parametrize('name,output_stride', [('poolformerv2_s12', 8), ('convformer_s18', 8),
                                                ('caformer_s18', 16)])
def test_dilated_rows_equal_a_hand_dilated_timm_model(name, output_stride):
    """Dilated pooling (twice over at os8), dilated depthwise convs, and attention stages behind a stride-1 conv."""
    _dilated_parity(name, output_stride, shallow=True)


@pytest.mark.slow
@pytest.mark.parametrize('output_stride', (16, 8))
@pytest.mark.parametrize('name', sorted(SPEC.variants))
def test_every_row_dilates_at_full_depth(name, output_stride):
    _dilated_parity(name, output_stride, shallow=False, wrappers=SPEC.feature_cls_for(name))


@pytest.mark.parametrize('output_stride,reductions', [(32, [4, 8, 16, 32]), (16, [4, 8, 16, 16]),
                                                      (8, [4, 8, 8, 8])])
def test_dilated_levels_and_parameters(output_stride, reductions):
    """timm has no dilated MetaFormer whose levels the generic test could compare: the levels are checked here, and
    the parameters are those of the natural stride (the same checkpoints load)."""
    with torch.device('meta'):
        natural = featzoo.create_model('caformer_s18')
        model = featzoo.create_model('caformer_s18', output_stride=output_stride)
    assert [level['reduction'] for level in model.feature_info] == reductions
    assert [level['module'] for level in model.feature_info] == [f'stages.{i}' for i in range(4)]
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in natural.state_dict().items()}


@pytest.mark.parametrize('dilation', (1, 2, 3))
def test_dilated_average_pool_skips_padded_taps(dilation):
    x = torch.randn(2, 5, 9, 11, generator=torch.Generator().manual_seed(0))
    got = DilatedAvgPool2d(5, 3, dilation=dilation)(x)
    assert_equal(got, _UnfoldAvgPool(dilation)(x), f'dilation {dilation}')
    if dilation == 1:
        assert_equal(got, nn.AvgPool2d(3, 1, 1, count_include_pad=False)(x), 'nn.AvgPool2d')
    # an even sub-grid pooled on its own gives the dilated pooling of its positions (the taps never leave it)
    sub = F.avg_pool2d(x[:, :, ::dilation, ::dilation], 3, 1, 1, count_include_pad=False)
    assert_equal(got[:, :, ::dilation, ::dilation], sub, 'sub-grid')


def test_dilated_average_pool_refuses_an_even_window():
    with pytest.raises(ValueError, match='kernel_size=4'):
        DilatedAvgPool2d(8, 4, dilation=2)


@pytest.mark.parametrize('name,head', [('poolformer_s12', nn.Linear), ('convformer_s18', MlpHead)])
def test_head_kind_pre_logits_and_reset(name, head):
    """The baselines classify with an MLP (fc1 x4 -> SquaredReLU -> LayerNorm -> fc2); pre-logits stop before it,
    at the pooled, normalized width."""
    model = featzoo.create_model(name, depths=ONE_BLOCK).eval()
    assert isinstance(model.get_classifier(), head)
    assert model.head_hidden_size == model.num_features == 512
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        assert pooled.shape == (2, 512)
        assert_equal(model.head.fc(pooled), model(x), 'classifier of the pre-logits')
    model.reset_classifier(7)
    assert isinstance(model.get_classifier(), head) and model(x).shape == (2, 7)
    model.reset_classifier(0, global_pool='max', reset_other=True)
    assert isinstance(model.head.norm, nn.Identity)
    with torch.no_grad():
        assert_equal(model(x), model.forward_features(x).amax((2, 3)), 'headless max pooling')
    with pytest.raises(ValueError, match="global_pool='catavgmax'"):
        model.reset_classifier(0, global_pool='catavgmax')


def test_prune_keeps_the_stages_it_needs():
    model = featzoo.create_model('caformer_s18', depths=ONE_BLOCK).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.forward_intermediates(x, indices=(0, 2), intermediates_only=True)
    assert model.prune_intermediate_layers((0, 2)) == [0, 2]
    assert len(model.stages) == 3 and model.num_features == 320 and model.num_classes == 0
    with torch.no_grad():
        got = model.forward_intermediates(x, indices=(0, 2), intermediates_only=True)
        assert model(x).shape == (1, 320, 4, 4)  # no pooling, norm or classifier left
    for a, b in zip(got, expected):
        assert_equal(a, b, 'pruned intermediates')


@pytest.mark.parametrize('kwargs,error,match', [
    (dict(token_mixers='window'), ValueError, "token_mixers entry='window'"),
    (dict(token_mixers=('pooling', 'attention')), ValueError, 'token_mixers=.* 2 entries; valid: one value or 4'),
    (dict(token_mixers='attention', dims=(64, 128, 336, 512)), ValueError, 'dims entry 336 .* multiple of 32'),
    (dict(norm_layer='batchnorm'), ValueError, "norm_layer='batchnorm'"),
    (dict(mlp_act='swishy'), ValueError, "unknown activation 'swishy'"),
    (dict(global_pool='catavgmax'), ValueError, "global_pool='catavgmax'"),
    (dict(layer_scale_init_values='big'), TypeError, "layer_scale_init_values entries .* got 'big'"),
    (dict(dims=(64, 128, 320)), ValueError, 'dims must have 4 entries'),
], ids=['mixer', 'mixers-length', 'attention-width', 'norm', 'act', 'pool', 'scale', 'dims'])
def test_bad_arguments_name_the_value(kwargs, error, match):
    with torch.device('meta'), pytest.raises(error, match=match):
        featzoo.create_model('poolformerv2_s12', **kwargs)


def test_forward_intermediates_refuses_other_layouts():
    model = featzoo.create_model('poolformer_s12', depths=ONE_BLOCK)
    with pytest.raises(ValueError, match="output_fmt='NHWC'"):
        model.forward_intermediates(torch.ones(1, 3, 64, 64), output_fmt='NHWC')


def _to_original_layout(state: dict, poolformer_v1: bool) -> dict:
    """timm's layout back to the sail-sg code's. The baselines: the stem as ``downsample_layers.0`` (``conv``,
    ``post_norm``), the other downsamplings as ``downsample_layers.<i>`` (``pre_norm``, ``conv``), blocks directly in
    ``stages.<i>``, the final norm at the top and ``head`` unnested. PoolFormer v1: ``patch_embed.proj``, one flat
    ``network`` list (stage, downsampling ``proj``, stage, ...) and (C, 1, 1) ``layer_scale_<n>`` tensors."""
    out = {}
    for key, value in state.items():
        key = key.replace('head.norm.', 'norm.').replace('head.fc.', 'head.')
        key = re.sub(r'^stages\.(\d+)\.blocks\.', r'stages.\1.', key)
        if poolformer_v1:
            key = key.replace('stem.conv', 'patch_embed.proj')
            key = re.sub(r'^stages\.(\d+)\.downsample\.conv', lambda m: f'network.{2 * int(m.group(1)) - 1}.proj', key)
            key = re.sub(r'^stages\.(\d+)\.', lambda m: f'network.{2 * int(m.group(1))}.', key)
            match = re.match(r'^(.*)layer_scale(\d)\.scale$', key)
            if match:
                key, value = f'{match.group(1)}layer_scale_{match.group(2)}', value.reshape(-1, 1, 1)
        else:
            key = key.replace('stem.conv', 'downsample_layers.0.conv')
            key = key.replace('stem.norm', 'downsample_layers.0.post_norm')
            key = re.sub(r'^stages\.(\d+)\.downsample\.norm', r'downsample_layers.\1.pre_norm', key)
            key = re.sub(r'^stages\.(\d+)\.downsample\.', r'downsample_layers.\1.', key)
        out[key] = value
    return out


@pytest.mark.parametrize('name', ['poolformer_s12', 'caformer_s18'])
def test_original_layouts_load(name):
    model = featzoo.create_model(name, depths=ONE_BLOCK)
    randomize_state(model)
    state = model.state_dict()
    original = _to_original_layout(state, name.startswith('poolformer_'))
    assert not any(k.startswith(('stem.', 'head.fc.')) for k in original)
    converted = checkpoint_filter_fn(original, model)
    assert sorted(converted) == sorted(state)
    assert all(torch.equal(converted[k], state[k]) for k in state)
    assert checkpoint_filter_fn(state, model) is state  # timm's layout passes unchanged


def test_poolformer_v1_has_layer_scale_and_the_baselines_res_scale():
    with torch.device('meta'):
        v1 = MetaFormer(**SPEC.row('poolformer_s12'))
        v2 = MetaFormer(**SPEC.row('poolformerv2_s12'))
    v1_keys, v2_keys = set(v1.state_dict()), set(v2.state_dict())
    assert 'stages.0.blocks.0.layer_scale1.scale' in v1_keys and not any('res_scale' in k for k in v1_keys)
    assert 'stages.2.blocks.0.res_scale1.scale' in v2_keys and 'stages.1.blocks.0.res_scale1.scale' not in v2_keys
    assert not any('layer_scale' in k for k in v2_keys)
