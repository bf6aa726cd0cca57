"""DLA family: the dilated networks (timm has none) against timm's DLA with its strides and dilations changed by hand
to the same scheme, dilated levels as the stride-32 levels densified, the dense pools, errors, the group matcher,
pruning and checkpointing.

What every family shares (timm parity at stride 32, levels, wrappers, intermediates, the model contract):
test_parity_timm.py, test_models.py."""
from __future__ import annotations

from typing import List

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import featzoo
from featzoo.models import dla
from helpers import assert_equal, dilated_levels_are_densified, dilated_parity_by_hand, hand_dilation_plan

NAMES = featzoo.list_models(module='dla')
# one network per block kind in the default suite: basic, grouped bottleneck, Res2NeXt (whose dense average pool
# takes a dilation at output stride 8)
DEFAULT_DILATED = {('dla34', 16), ('dla46x_c', 8), ('dla60_res2next', 8)}


class _DilatedMaxPool(nn.Module):
    """2x2 max-pool at stride 1 with taps ``d`` apart, the window's tail padded with -inf."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.d = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.pad(x, (0, self.d, 0, self.d), value=float('-inf')), 2, 1, dilation=self.d)


class _DilatedAvgPool(nn.Module):
    """3x3 average pool (zeros counted) at stride 1 with taps ``d`` apart, as a fixed depthwise convolution."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.d = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = torch.full((x.shape[1], 1, 3, 3), 1 / 9, dtype=x.dtype)
        return F.conv2d(x, weight, padding=self.d, dilation=self.d, groups=x.shape[1])


def _dilate_timm_by_hand(model: nn.Module, output_stride: int) -> List[int]:
    """Turn timm's stride-32 DLA into the featzoo scheme in place: in every level that reaches ``output_stride``,
    strided 3x3 convs run at stride 1 dilated by the previous dilation, the other 3x3 convs by the new one, and the
    strided pools become stride-1 pools with taps that far apart. Returns the levels' reductions."""
    reductions = [1, 2]
    for i, (reduction, previous, dilation) in enumerate(hand_dilation_plan(2, output_stride, 4), start=2):
        reductions.append(reduction)
        if previous == dilation:
            continue
        level = getattr(model, f'level{i}')
        for parent in level.modules():
            for name, child in parent.named_children():
                if isinstance(child, nn.MaxPool2d):
                    setattr(parent, name, _DilatedMaxPool(previous))
                elif isinstance(child, nn.AvgPool2d):
                    setattr(parent, name, _DilatedAvgPool(previous))
                elif isinstance(child, nn.Conv2d) and child.kernel_size == (3, 3):
                    d = previous if child.stride == (2, 2) else dilation
                    child.stride, child.dilation, child.padding = (1, 1), (d, d), (d, d)
    return reductions


@pytest.mark.parametrize('name,output_stride', [
    pytest.param(n, s, id=f'{n}-os{s}', marks=() if (n, s) in DEFAULT_DILATED else pytest.mark.slow)
    for n in NAMES for s in (16, 8)])
def test_dilated_matches_timm_dilated_by_hand(name, output_stride):
    dilated_parity_by_hand(name, output_stride, _dilate_timm_by_hand, features_skip=1)  # level0 only on request


@pytest.mark.parametrize('name,output_stride', [('dla60_res2next', 8), ('dla34', 16),
                                                pytest.param('dla102x', 8, marks=pytest.mark.slow)])
def test_dilated_levels_are_the_stride32_levels_densified(name, output_stride):
    dilated_levels_are_densified(dla.SPEC.build, name, output_stride)


def test_dense_pools_sample_to_the_strided_pools():
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    assert_equal(dla.DensePool2d('max', 2)(x)[:, :, ::2, ::2], F.max_pool2d(x, 2, 2), 'max')
    assert_equal(dla.DensePool2d('avg', 3)(x)[:, :, ::2, ::2], F.avg_pool2d(x, 3, 2, 1), 'avg')
    # with taps 2 apart on a map that is itself the dense form of a stride-2 map
    coarse = x[:, :, ::2, ::2]
    assert_equal(dla.DensePool2d('avg', 3, 2)(x)[:, :, ::4, ::4], F.avg_pool2d(coarse, 3, 2, 1), 'avg d2')
    assert_equal(dla.DensePool2d('max', 2, 2)(x)[:, :, ::4, ::4], F.max_pool2d(coarse, 2, 2), 'max d2')
    with pytest.raises(ValueError, match="pool_type='min'.*'max', 'avg'"):
        dla.DensePool2d('min', 2)


def test_invalid_arguments_name_the_value():
    with pytest.raises(ValueError, match=r"block='bottle3neck' is invalid; valid: 'basic', 'bottleneck'"):
        dla.SPEC.build('dla34', block='bottle3neck')
    with pytest.raises(ValueError, match='levels must have 6 entries'):
        dla.SPEC.build('dla34', levels=(1, 1, 1, 2))
    with pytest.raises(ValueError, match='cardinality=0'):
        dla.SPEC.build('dla46x_c', cardinality=0)
    with pytest.raises(ValueError, match=r'output_stride=4 .*valid: \(8, 16, 32\)'):
        featzoo.create_model('dla34', output_stride=4)
    with pytest.raises(ValueError, match='drop_path_rate=0.1: DLA has no drop-path branches'):
        featzoo.create_model('dla34', drop_path_rate=0.1)


def test_group_matcher_like_timm():
    import timm
    from timm.models._manipulate import group_with_matcher
    ref = timm.create_model('dla60_res2next')
    model = dla.SPEC.build('dla60_res2next')
    for coarse in (False, True):
        ours = group_with_matcher(model.named_parameters(), model.group_matcher(coarse), return_values=False)
        theirs = group_with_matcher(ref.named_parameters(), ref.group_matcher(coarse), return_values=False)
        assert ours == theirs


def test_default_levels_skip_the_stride1_level_and_prune_keeps_what_is_asked():
    backbone = featzoo.create_model('dla34', features_only=True)
    assert backbone.feature_info.reduction() == [2, 4, 8, 16, 32]
    model = dla.SPEC.build('dla34')
    assert model.prune_intermediate_layers((1, 3)) == [1, 3]
    assert isinstance(model.level4, nn.Identity) and isinstance(model.level5, nn.Identity)
    with torch.no_grad():
        assert model(torch.ones(1, 3, 64, 64)).shape == (1, 128, 8, 8)  # pruned: neither pool nor classifier


def test_grad_checkpointing_gives_the_same_gradients():
    def grads(enable: bool):
        torch.manual_seed(0)
        m = dla.DLA(levels=(1, 1, 1, 2, 1, 1), channels=(8, 8, 16, 16, 32, 32), block='bottle2neck',
                    cardinality=2, base_width=16, num_classes=4)
        m.set_grad_checkpointing(enable)
        m(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))).square().sum().backward()
        return [p.grad for p in m.parameters()]
    for a, b in zip(grads(False), grads(True)):
        assert_equal(a, b, 'grad')
