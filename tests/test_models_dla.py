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
from helpers import assert_equal, build_timm_reference, randomize_state, save_state

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
    reductions, reduction, dilation = [1, 2], 2, 1
    for i in range(2, 6):
        level = getattr(model, f'level{i}')
        if reduction < output_stride:
            reduction *= 2
            reductions.append(reduction)
            continue
        previous, dilation = dilation, dilation * 2
        reductions.append(reduction)
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
    ref = build_timm_reference(name)
    reductions = _dilate_timm_by_hand(ref, output_stride)
    path = save_state(ref.state_dict())
    model = featzoo.create_model(name, output_stride=output_stride, checkpoint_path=path).eval()
    assert [level['reduction'] for level in model.feature_info] == reductions
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model.forward_intermediates(x, intermediates_only=True)
        theirs = ref.forward_intermediates(x, intermediates_only=True)
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_equal(a, b, f'{name} os{output_stride} level {i}')
        assert_equal(model(x), ref(x), f'{name} os{output_stride} logits')
    backbone = featzoo.create_model(name, features_only=True, output_stride=output_stride, checkpoint_path=path)
    with torch.no_grad():
        for i, (a, b) in enumerate(zip(backbone.eval()(x), theirs[1:])):
            assert_equal(a, b, f'{name} os{output_stride} features_only level {i + 1}')


@pytest.mark.parametrize('name,output_stride', [('dla60_res2next', 8), ('dla34', 16),
                                                pytest.param('dla102x', 8, marks=pytest.mark.slow)])
def test_dilated_levels_are_the_stride32_levels_densified(name, output_stride):
    ref = dla.SPEC.build(name).eval()
    randomize_state(ref)
    model = dla.SPEC.build(name, output_stride=output_stride).eval()
    model.load_state_dict(ref.state_dict())
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = ref.forward_intermediates(x, intermediates_only=True)
        got = model.forward_intermediates(x, intermediates_only=True)
    for i, (e, g, r_ref, r) in enumerate(zip(expected, got, [lv['reduction'] for lv in ref.feature_info],
                                             [lv['reduction'] for lv in model.feature_info])):
        step = r_ref // r
        assert g.shape[-1] == e.shape[-1] * step, (i, g.shape, e.shape)
        assert_equal(g[:, :, ::step, ::step], e, f'{name} os{output_stride} level {i}')


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
