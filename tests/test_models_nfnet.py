"""NFNet / NF-ResNet / NF-RegNet: what only this family does.

- DeepMind's layout (gamma after each activation, TensorFlow 'SAME' padding, skipinit gains) at input sizes where
  'SAME' pads unevenly, against timm, on the tiny ``test_nfnet`` rebuilt with those options;
- the blocks trace with FX (timm keeps its block opaque because of in-place ops) and the FX wrapper gives the list
  wrapper's levels, 'SAME' padding included;
- the rows too big to compute at full size are cut by the generic depth cut, which timm's builder takes too;
- the arguments the family refuses.
"""
from __future__ import annotations

import pytest
import torch

import featzoo
from helpers import (PARITY_MAX_BYTES, assert_equal, meta_device, num_params, shallow_overrides, timm_on_meta,
                     timm_parity, too_big_to_compute)

DEEPMIND = dict(same_padding=True, gamma_in_act=True, skipinit=True)  # the dm_nfnet_* options
TOO_BIG = ('dm_nfnet_f6', 'nfnet_f6', 'nfnet_f7')


@pytest.mark.parametrize('side,output_stride', [(63, 32), (63, 8)])
def test_deepmind_layout_at_uneven_same_padding(side, output_stride):
    """An odd side: 'SAME' pads the stem's strided convolution on both sides, the later (even) ones at the bottom
    and right only; the generic parity runs even sides."""
    kwargs = dict(DEEPMIND, output_stride=output_stride)
    model = timm_parity('test_nfnet', input_size=(1, 3, side, side), timm_kwargs=kwargs, featzoo_kwargs=kwargs,
                        feature_classes=('getter', 'hook'))
    assert model.stem.conv1.dynamic_same and not model.stages[0][0].conv1.dynamic_same
    assert model.stages[0][0].skipinit_gain.shape == ()


@pytest.mark.parametrize('options', [{}, DEEPMIND], ids=['folded_gamma', 'deepmind'])
def test_fx_wrapper_equals_list_wrapper(options):
    torch.manual_seed(0)
    listed = featzoo.create_model('test_nfnet', features_only=True, **options).eval()
    traced = featzoo.create_model('test_nfnet', features_only=True, feature_cls='fx', **options).eval()
    traced.load_state_dict(listed.state_dict())
    with torch.no_grad():
        for p in listed.parameters():  # non-zero branch gains, so every block contributes
            p.add_(0.05)
        traced.load_state_dict(listed.state_dict())
        x = torch.randn(2, 3, 67, 67, generator=torch.Generator().manual_seed(1))
        for i, (a, b) in enumerate(zip(traced(x), listed(x))):
            assert_equal(a, b, f'level {i}')


@pytest.mark.parametrize('name', TOO_BIG)
def test_too_big_rows_are_cut_by_depth(name):
    assert too_big_to_compute(name)
    cut = shallow_overrides(name)
    assert cut == dict(depths=(2, 2, 2, 2)), cut
    with meta_device():
        model = featzoo.create_model(name, **cut)
    assert sum(p.numel() for p in model.parameters()) * 4 <= PARITY_MAX_BYTES
    assert timm_on_meta(name, **cut) is not None  # timm's builder takes the same cut
    levels = [(d['num_chs'], d['reduction'], d['module']) for d in featzoo.model_capabilities(name).feature_levels]
    assert [(d['num_chs'], d['reduction'], d['module']) for d in model.feature_info] == levels
    assert not too_big_to_compute('nfnet_f5') and num_params('nfnet_f5') * 4 <= PARITY_MAX_BYTES


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match=r"stem_type='5x5' is invalid; valid: '3x3'"):
        featzoo.create_model('test_nfnet', stem_type='5x5')
    with pytest.raises(ValueError, match=r"act_layer='swish2' is invalid; valid: 'identity', 'gelu'"):
        featzoo.create_model('test_nfnet', act_layer='swish2')
    with pytest.raises(ValueError, match=r'output_stride=4 .* valid: \(8, 16, 32\)'):
        featzoo.create_model('test_nfnet', output_stride=4)
    with pytest.raises(ValueError, match='channels must have 4 entries'):
        featzoo.create_model('test_nfnet', channels=(32, 64))
    with pytest.raises(ValueError, match="unknown attention 'cbam'"):
        featzoo.create_model('test_nfnet', attn_layer='cbam')
