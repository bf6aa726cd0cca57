"""HGNet family: the dilated networks (timm's HGNet takes no output_stride) against timm's with its strides and
dilations changed by hand to the same scheme; V2's dilated levels as the stride-32 levels densified; the head's
reset_classifier / pruning against timm's; errors; the group matcher, drop path and checkpointing.

What every family shares (timm parity at stride 32, levels, wrappers, intermediates, the model contract):
test_parity_timm.py, test_models.py."""
from __future__ import annotations

import copy
from typing import List

import pytest
import torch
from torch import nn

import featzoo
from featzoo.models import hgnet
from helpers import (assert_equal, build_timm_reference, dilated_levels_are_densified, dilated_parity_by_hand,
                     group_matcher_and_drop_path_like_timm, hand_dilation_plan, save_state)

NAMES = featzoo.list_models(module='hgnet')
# one network per configuration in the default suite: V1 (ESE aggregation), V2 with learnable affine scalars and
# light links, V2 without the scalars; every stride of each with -m slow
DEFAULT_DILATED = {('hgnet_tiny', 16), ('hgnetv2_b0', 8), ('hgnetv2_b4', 8)}


def _dilate_timm_by_hand(model: nn.Module, output_stride: int) -> List[int]:
    """Turn timm's stride-32 HGNet into featzoo's scheme in place: each stage that would go past ``output_stride``
    runs its depthwise downsampling conv at stride 1 dilated by the previous dilation and its blocks' k x k convs
    dilated by twice that. Returns the stages' reductions."""
    reductions = [4]
    plan = hand_dilation_plan(4, output_stride, len(model.stages) - 1)
    for stage, (reduction, previous, dilation) in zip(list(model.stages)[1:], plan):
        reductions.append(reduction)
        if previous == dilation:
            continue
        conv = stage.downsample.conv
        conv.stride, conv.dilation, conv.padding = (1, 1), (previous, previous), (previous, previous)
        for module in stage.blocks.modules():
            if isinstance(module, nn.Conv2d) and module.kernel_size[0] > 1:
                pad = dilation * (module.kernel_size[0] - 1) // 2
                module.dilation, module.padding = (dilation, dilation), (pad, pad)
    return reductions


@pytest.mark.parametrize('name,output_stride', [
    pytest.param(n, s, id=f'{n}-os{s}', marks=() if (n, s) in DEFAULT_DILATED else pytest.mark.slow)
    for n in NAMES for s in (16, 8)])
def test_dilated_matches_timm_dilated_by_hand(name, output_stride):
    dilated_parity_by_hand(name, output_stride, _dilate_timm_by_hand)


# V2 aggregates with 1x1 convs only (V1's ESE gate averages the whole map, which a denser map changes): its dilated
# network is the stride-32 network computed densely, whatever timm does.
@pytest.mark.parametrize('output_stride', (16, 8))
def test_v2_dilated_levels_are_the_stride32_levels_densified(output_stride):
    dilated_levels_are_densified(hgnet.SPEC.build, 'hgnetv2_b0', output_stride)


@pytest.mark.parametrize('name', ['hgnetv2_b0', pytest.param('hgnet_tiny', marks=pytest.mark.slow)])
def test_head_reset_and_prune_like_timm(name):
    """timm's extra ``reset_other`` (drops the head's 1x1 conv) and pruning, which keeps an average pool only."""
    ref = build_timm_reference(name)
    path = save_state(ref.state_dict())
    model = featzoo.create_model(name, checkpoint_path=path).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))

    def facts(m: nn.Module):
        return m.num_classes, m.num_features, m.head_hidden_size, list(m.state_dict())

    for args in [(0, None, True), (4, 'max', False), (0, '', False)]:
        ours, theirs = copy.deepcopy(model), copy.deepcopy(ref)
        ours.reset_classifier(*args)
        theirs.reset_classifier(*args)
        ours.load_state_dict(theirs.state_dict())
        assert facts(ours) == facts(theirs), args
        with torch.no_grad():
            assert_equal(ours(x), theirs(x), f'reset_classifier{args}')
            feat = ours.forward_features(x)
            assert_equal(ours.forward_head(feat, pre_logits=True), theirs.forward_head(feat, pre_logits=True),
                         f'pre_logits after reset_classifier{args}')
    for indices in (1, (0, 2), (1,)):
        ours, theirs = copy.deepcopy(model), copy.deepcopy(ref)
        assert ours.prune_intermediate_layers(indices) == theirs.prune_intermediate_layers(indices)
        assert facts(ours) == facts(theirs), indices
        with torch.no_grad():
            assert_equal(ours(x), theirs(x), f'pruned to {indices}')


def test_refused_heads_leave_the_model_unchanged():
    model = hgnet.SPEC.build('hgnetv2_b0')
    before = list(model.state_dict())
    with pytest.raises(ValueError, match=r"global_pool='catavgmax' changes the pooled width"):
        model.reset_classifier(5, 'catavgmax')
    with pytest.raises(ValueError, match=r"global_pool='' .* num_classes=0, got num_classes=5"):
        model.reset_classifier(5, '')
    with pytest.raises(ValueError, match=r"'bogus'"):
        model.reset_classifier(5, 'bogus')
    assert list(model.state_dict()) == before and model.num_classes == 1000
    assert model.head.global_pool.pool_type == 'avg'
    model.reset_classifier(0, '')
    with pytest.raises(ValueError, match=r"no global pooling .* global_pool='avg' with num_classes=3"):
        model.reset_classifier(3)
    with pytest.raises(ValueError, match=r"global_pool='' .* num_classes=0, got num_classes=10"):
        hgnet.SPEC.build('hgnetv2_b0', global_pool='')
    assert hgnet.SPEC.build('hgnetv2_b0', global_pool='', num_classes=0)(torch.ones(1, 3, 64, 64)).shape == \
        (1, 2048, 2, 2)


def test_invalid_arguments_name_the_value():
    with pytest.raises(ValueError, match=r'output_stride=4 .*valid: \(8, 16, 32\)'):
        featzoo.create_model('hgnetv2_b0', output_stride=4)
    with pytest.raises(ValueError, match=r"stem_type='v3' is invalid; valid: 'v1', 'v2'"):
        hgnet.SPEC.build('hgnetv2_b0', stem_type='v3')
    with pytest.raises(ValueError, match=r"agg='cbam' is invalid; valid: 'ese', 'se'"):
        hgnet.SPEC.build('hgnetv2_b0', agg='cbam')
    with pytest.raises(ValueError, match=r'stem_chs must have 2 entries, got 3'):
        hgnet.SPEC.build('hgnetv2_b0', stem_chs=(16, 16, 16))
    with pytest.raises(ValueError, match=r'block_per_stage must have 4 entries'):
        hgnet.SPEC.build('hgnetv2_b0', block_per_stage=(1, 1, 1))
    with pytest.raises(ValueError, match=r'light_block must be 4 booleans'):
        hgnet.SPEC.build('hgnetv2_b0', light_block=(True,))
    with pytest.raises(TypeError, match=r'use_lab must be True or False'):
        hgnet.SPEC.build('hgnetv2_b0', use_lab=1)
    with pytest.raises(ValueError, match=r'layer_per_block=0 is invalid; it must be >= 1'):
        hgnet.SPEC.build('hgnetv2_b0', layer_per_block=0)
    with pytest.raises(ValueError, match=r"output_fmt='NHWC' is invalid; valid: 'NCHW'"):
        hgnet.SPEC.build('hgnetv2_b0').forward_intermediates(torch.ones(1, 3, 32, 32), output_fmt='NHWC')
    with pytest.raises(KeyError, match=r"hgnetv2_b9.*hgnetv2_b0"):
        hgnet.SPEC.build('hgnetv2_b9')


@pytest.mark.parametrize('hidden', (0, None))
def test_without_head_conv_the_classifier_takes_the_pooled_map(hidden):
    # the shared build reads None as "the row's default", so 0 is the way to ask for no head conv through it
    model = (hgnet.SPEC.build('hgnetv2_b0', head_hidden_size=0, num_classes=3) if hidden == 0 else
             hgnet.HighPerfGpuNet(**dict(hgnet.VARIANTS['hgnetv2_b0'], head_hidden_size=None, num_classes=3)))
    assert isinstance(model.head.last_conv, nn.Identity) and model.head_hidden_size == model.num_features == 1024
    assert model(torch.ones(1, 3, 64, 64)).shape == (1, 3)
    with pytest.raises(ValueError, match='head_hidden_size=-1'):
        hgnet.SPEC.build('hgnetv2_b0', head_hidden_size=-1)


def test_group_matcher_and_drop_path_like_timm():
    group_matcher_and_drop_path_like_timm(hgnet.SPEC.build, 'hgnetv2_b5')


def test_grad_checkpointing_gives_the_same_gradients():
    def grads(enable: bool):
        torch.manual_seed(0)
        m = hgnet.HighPerfGpuNet(stem_chs=(8, 8), stage_mid_chs=(8, 8, 8, 8), stage_out_chs=(16, 16, 32, 32),
                                 block_per_stage=(1, 2, 1, 1), layer_per_block=2, stem_type='v2', agg='se',
                                 light_block=(False, True, True, True), kernel_size=(3, 5, 5, 5), use_lab=True,
                                 head_hidden_size=32, num_classes=4)
        m.set_grad_checkpointing(enable)
        m(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))).square().sum().backward()
        return [p.grad for p in m.parameters()]
    for a, b in zip(grads(False), grads(True)):
        assert_equal(a, b, 'grad')
