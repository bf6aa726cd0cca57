"""ResNetV2 (BiT and the timm-trained pre-activation ResNets): what is specific to this family.

tests/test_models.py runs every variant against timm at output stride 32 and the representative dilated; here each
distinct configuration (block, stem, shortcut, conv and norm kind) runs at output strides 32, 16 and 8 on a
depth-reduced instance (BiT at full depth: timm's BiT builder fixes the depth), and the post-activation trunk the
ViT hybrids build on is held to timm's.
"""
from __future__ import annotations

from functools import partial

import pytest
import torch

import featzoo
from featzoo.models.resnetv2 import ResNetV2, SPEC
from helpers import assert_equal, randomize_state, timm_parity

SHALLOW = dict(layers=(1, 1, 1, 1))

# one variant per configuration; None: built at its own depth
CONFIGURATIONS = {
    'resnetv2_18': SHALLOW,          # basic pre-activation block, 7x7 stem, batch norm
    'resnetv2_34d': SHALLOW,         # basic block, deep stem, avg-pool shortcut
    'resnetv2_50': SHALLOW,          # bottleneck, batch norm
    'resnetv2_50d': SHALLOW,         # bottleneck, deep stem, avg-pool shortcut
    'resnetv2_50t': SHALLOW,         # tiered stem
    'resnetv2_50d_gn': SHALLOW,      # group norm
    'resnetv2_50d_evos': SHALLOW,    # EvoNorm-S0
    'resnetv2_50d_frn': SHALLOW,     # filter response norm
    'resnetv2_50x1_bit': None,       # BiT: weight standardization, 'fixed' stem padding, group norm
}


def test_configurations_cover_the_family():
    """Every row's configuration (its row without depth and width) has a representative above."""
    covered = {SPEC.configuration(n) for n in CONFIGURATIONS}
    missing = [n for n in SPEC.variants if SPEC.configuration(n) not in covered]
    assert missing == []


@pytest.mark.parametrize('output_stride', (32, 16, 8))
@pytest.mark.parametrize('name', sorted(CONFIGURATIONS))
def test_parity_per_configuration(name, output_stride):
    kwargs = dict(CONFIGURATIONS[name] or {})
    model = timm_parity(name, input_size=(1, 3, 64, 64), output_stride=None if output_stride == 32 else output_stride,
                        timm_kwargs=kwargs, featzoo_kwargs=kwargs)
    assert model.feature_info[-1]['reduction'] == output_stride


def _hybrid_pair(layers, **kwargs):
    """timm's post-activation trunk (the ViT-hybrid backbone: 'SAME' stem, weight-standardized convs with eps 1e-8)
    with random weights, and featzoo's loaded from it."""
    from timm.layers import StdConv2dSame
    from timm.models.resnetv2 import ResNetV2 as TimmResNetV2
    ref = TimmResNetV2(layers=layers, num_classes=0, global_pool='', preact=False, stem_type='same',
                       conv_layer=partial(StdConv2dSame, eps=1e-8), **kwargs).eval()
    randomize_state(ref)
    model = ResNetV2(layers=layers, num_classes=0, global_pool='', preact=False, stem_type='same', conv='std_same',
                     std_eps=1e-8, **kwargs).eval()
    model.load_state_dict(ref.state_dict())
    return ref, model


@pytest.mark.parametrize('layers', [(1, 1, 1), ()], ids=['three-stages', 'stem-only'])
def test_post_activation_trunk_for_vit_hybrids(layers):
    ref, model = _hybrid_pair(layers)
    assert [d['module'] for d in model.feature_info] == [d['module'] for d in ref.feature_info]
    x = torch.randn(1, 3, 61, 67, generator=torch.Generator().manual_seed(0))  # odd sides: dynamic 'SAME' padding
    with torch.no_grad():
        assert_equal(model.forward_features(x), ref.forward_features(x), f'layers={layers}')


def test_dilated_deep_shortcut_pools_with_same_padding():
    """A dilated 'd' stage keeps its 2x2 shortcut pool at stride 1 with one row and column of bottom/right padding."""
    model = featzoo.create_model('resnetv2_50d', output_stride=8, **SHALLOW)
    pools = [type(model.stages[i].blocks[0].downsample.pool).__name__ for i in range(4)]
    assert pools == ['Identity', 'AvgPool2d', 'AvgPool2dSame', 'AvgPool2dSame']


def test_bad_arguments_name_the_valid_values():
    with pytest.raises(ValueError, match='output_stride'):
        featzoo.create_model('resnetv2_18', output_stride=4)
    for arg, value in (('norm', 'layer'), ('conv', 'deform'), ('stem_type', 'wide'), ('block', 'fancy')):
        with pytest.raises(ValueError, match=repr(value)):
            ResNetV2(layers=(1, 1, 1, 1), **{arg: value})
