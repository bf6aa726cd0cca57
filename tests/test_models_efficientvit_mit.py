"""efficientvit_mit (EfficientViT B and L): what is specific to this family.

The generic suites hold every row to timm. Here: the linear attention stays in float32 under autocast (as timm's
does), the head refuses pooling that would change the width its MLP takes, and the stages that output_stride 16 or 8
would dilate are attention stages, so the rows take their natural stride only.
"""
from __future__ import annotations

import pytest
import torch

import featzoo
from featzoo.models.efficientvit_mit import SPEC, EfficientVit, linear_attention


def _float32_reference(q, k, v, eps):
    q, k, v = q.float(), k.float(), v.float()
    out = q @ (k.transpose(-1, -2) @ v)
    return out[..., :-1] / (out[..., -1:] + eps)


def test_linear_attention_runs_in_float32_under_autocast():
    gen = torch.Generator().manual_seed(0)
    q, k = torch.rand(1, 2, 49, 16, generator=gen), torch.rand(1, 2, 49, 16, generator=gen)
    v = torch.nn.functional.pad(torch.randn(1, 2, 49, 16, generator=gen), (0, 1), value=1.0)
    expected = _float32_reference(q, k, v, 1e-5)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got = linear_attention(q, k, v, 1e-5)
    assert got.dtype == torch.float32
    assert torch.equal(got, expected)
    halves = [t.to(torch.bfloat16) for t in (q, k, v)]
    assert torch.equal(linear_attention(*halves, 1e-5), _float32_reference(*halves, 1e-5).to(torch.bfloat16))


@pytest.mark.parametrize('pool', ['', 'catavgmax'])
def test_head_refuses_pooling_that_changes_its_width(pool):
    with pytest.raises(ValueError, match=r"global_pool=.* valid: \('avg', 'max', 'avgmax'\)"):
        featzoo.create_model('efficientvit_b0', global_pool=pool)
    with torch.device('meta'):
        model = featzoo.create_model('efficientvit_b0')
    with pytest.raises(ValueError, match='global_pool'):
        model.reset_classifier(10, pool)


def test_rows_take_their_natural_stride_only():
    for name in SPEC.variants:
        assert SPEC.output_strides_for(name) == (32,)
    with pytest.raises(ValueError, match=r'output_stride=16 .* valid: \(32,\)'):
        featzoo.create_model('efficientvit_b0', output_stride=16)


def test_bad_widths_and_depths_name_the_value():
    with pytest.raises(ValueError, match='widths must have 5 entries'):
        EfficientVit(widths=(8, 16, 32, 64), depths=(1, 1, 1, 1, 1))
    with pytest.raises(ValueError, match='head_widths must have 2 entries'):
        EfficientVit(widths=(8, 16, 32, 64, 128), depths=(1, 1, 1, 1, 1), head_widths=(64,))


def test_large_rows_use_fused_convs_early_and_attention_last():
    with torch.device('meta'):
        model = featzoo.create_model('efficientvit_l1')
    assert type(model.stem.res0.main).__name__ == 'LocalBlock' and hasattr(model.stem.res0.main, 'conv1')
    assert hasattr(model.stages[0].blocks[0].main, 'spatial_conv')   # fused inverted residual
    assert hasattr(model.stages[2].blocks[0].main, 'inverted_conv')  # plain inverted residual, biases not norms
    assert [type(b).__name__ for b in model.stages[3].blocks[1:]] == ['EfficientVitBlock'] * 6
    assert model.stages[0].blocks[0].main.spatial_conv.norm.eps == 1e-7
