"""MobileNetV3 family (MobileNetV3, FBNetV3, LCNet, MobileNetV4): every timm architecture and tag, every variant at
output_stride 16/8 against timm's feature model (timm's classifier takes no output stride; one architecture per
kind of block by default, all with -m slow), what dilation means for MobileNetV4 (dense evaluation, global
attention, anti-aliasing), the efficient head, checkpointing and errors.

What every family shares (timm parity, output strides, levels, wrappers, intermediates, the model contract):
test_models.py."""
from __future__ import annotations

import os

import pytest
import torch

import featzoo
from featzoo.models import mobilenetv3
from featzoo.layers.blur_pool import BlurPool2d
from featzoo.layers.mobilenetv4_blocks import LayerScale2d, MobileAttention, decode_mnv4_block
from featzoo.layers.norm import BatchNormAct2d
from helpers import assert_equal, build_timm_reference, randomize_state, save_state

FAMILY = 'mobilenetv3'
NAMES = featzoo.list_models(module=FAMILY)
X64 = (1, 3, 64, 64)


def _remove(path: str) -> None:
    os.remove(path)
    os.rmdir(os.path.dirname(path))


def test_table_lists_every_timm_architecture_and_tag():
    import timm
    assert set(NAMES) == set(timm.list_models(module=FAMILY))
    assert set(featzoo.list_models(module=FAMILY, pretrained=True)) == \
        set(timm.list_models(module=FAMILY, pretrained=True))


# By default output stride 8 (both dilated stages) for one architecture of each kind of block: MobileNetV3's squeeze-
# excite, LCNet's activated projections, MobileNetV4's universal blocks, anti-aliasing and attention. Every
# architecture at 16 and 8 with -m slow.
_DEFAULT_DILATED = ('mobilenetv3_small_050', 'lcnet_035', 'mobilenetv4_conv_small_035', 'mobilenetv4_conv_aa_medium',
                    'mobilenetv4_hybrid_medium_075')


def _dilated_params():
    return [pytest.param(name, stride, id=f'{name}-os{stride}',
                         marks=() if (name, stride) in [(n, 8) for n in _DEFAULT_DILATED] else pytest.mark.slow)
            for name in NAMES for stride in (16, 8)]


@pytest.mark.parametrize('name, output_stride', _dilated_params())
def test_timm_parity_dilated(name, output_stride):
    # timm's MobileNetV3 classifier takes no output_stride; its feature model does, so it is the reference here.
    model = featzoo.create_model(name, output_stride=output_stride).eval()
    randomize_state(model)
    ref = build_timm_reference(name, features_only=True, output_stride=output_stride)
    head = ('conv_head.', 'norm_head.', 'classifier.')
    ref.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith(head)})
    path = save_state(model.state_dict())
    try:
        backbone = featzoo.create_model(name, features_only=True, output_stride=output_stride,
                                        checkpoint_path=path).eval()
    finally:
        _remove(path)
    assert backbone.feature_info.reduction() == ref.feature_info.reduction()
    assert backbone.feature_info.channels() == ref.feature_info.channels()
    assert backbone.feature_info.module_name() == ref.feature_info.module_name()
    assert max(backbone.feature_info.reduction()) == output_stride
    x = torch.randn(X64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref_feats = ref(x)
        feats = backbone(x)
        assert len(feats) == len(ref_feats)
        for i, (a, b) in enumerate(zip(feats, ref_feats)):
            assert_equal(a, b, f'{name} os{output_stride} level {i}')
        assert_equal(model.forward_features(x), ref_feats[-1], f'{name} os{output_stride} forward_features')
        assert model(x).shape == (1, 1000)


@pytest.mark.parametrize('name', ['mobilenetv4_conv_small', 'mobilenetv4_conv_medium'])
def test_dilation_evaluates_the_natural_network_densely(name):
    """Without squeeze-excite, anti-aliasing or TF padding, a MobileNetV4 at output stride 16 is the stride-32
    network evaluated at every position: its last map sampled at even positions is the stride-32 map."""
    natural = featzoo.create_model(name, features_only=True, out_indices=(-1,)).eval()
    randomize_state(natural)
    dilated = featzoo.create_model(name, features_only=True, out_indices=(-1,), output_stride=16).eval()
    dilated.load_state_dict(natural.state_dict())
    x = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        dense, = dilated(x)
        coarse, = natural(x)
    assert dense.shape[-2:] == (6, 8) and coarse.shape[-2:] == (3, 4)
    assert_equal(dense[..., ::2, ::2], coarse, f'{name} os16 at even positions vs os32')


def test_hybrid_blocks_and_head():
    with torch.device('meta'):
        model = featzoo.create_model('mobilenetv4_hybrid_medium')
    attention = [m for m in model.modules() if isinstance(m, MobileAttention)]
    assert len(attention) == 8
    strided = [m.attn.kv_stride for m in attention]
    assert strided == [2] * 4 + [1] * 4
    assert all(isinstance(m.layer_scale, LayerScale2d) for m in attention)
    assert isinstance(model.norm_head, BatchNormAct2d) and model.conv_head.bias is None
    assert isinstance(model.act2, torch.nn.Identity)


@pytest.mark.parametrize('name, pool', [('mobilenetv4_conv_aa_medium', torch.nn.AvgPool2d),
                                        ('mobilenetv4_conv_blur_medium', BlurPool2d)])
def test_anti_aliasing_takes_the_strides_it_replaces(name, pool):
    def pools(model):
        return [n for n, m in model.named_modules() if isinstance(m, pool)]
    natural = featzoo.create_model(name)
    dilated = featzoo.create_model(name, output_stride=16)
    # er stem block, then the first depthwise conv of each strided uir stage (start or middle)
    assert pools(natural) == ['blocks.0.0.aa', 'blocks.1.0.dw_mid.aa', 'blocks.2.0.dw_mid.aa', 'blocks.3.0.dw_mid.aa']
    assert pools(dilated) == pools(natural)[:-1]  # the last stride became dilation, its pool goes with it (timm)
    strided = [m for m in natural.modules() if isinstance(m, torch.nn.Conv2d) and m.stride != (1, 1)]
    assert [m.in_channels for m in strided] == [3]  # only the stem conv still strides


def test_efficient_head_layout_and_group_matcher():
    """Pooling comes before the head convolution (the contract itself is timm's: test_models.py)."""
    import timm
    with torch.device('meta'):
        model, ref = featzoo.create_model('mobilenetv3_large_100'), timm.create_model('mobilenetv3_large_100')
    assert model.group_matcher() == ref.group_matcher() and model.group_matcher(True) == ref.group_matcher(True)
    names = [n for n, _ in model.named_children()]
    assert names == ['conv_stem', 'bn1', 'blocks', 'global_pool', 'conv_head', 'norm_head', 'act2', 'flatten',
                     'classifier']


def test_catavgmax_head_is_built_wide():
    model = featzoo.create_model('mobilenetv3_small_050', global_pool='catavgmax', num_classes=3).eval()
    assert model.conv_head.in_channels == 2 * model.num_features
    with torch.no_grad():
        assert model(torch.randn(X64)).shape == (1, 3)


def test_grad_checkpointing_gives_the_same_gradients():
    model = featzoo.create_model('mobilenetv3_small_050', num_classes=4).eval()
    x = torch.randn(X64, requires_grad=True)
    model(x).sum().backward()
    expected = x.grad.clone()
    x.grad = None
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    assert_equal(x.grad, expected, 'input gradient with checkpointing')


@pytest.mark.parametrize('kwargs, match', [
    (dict(output_stride=64), 'output_stride=64'),
    (dict(pad_type='reflect'), "pad_type='reflect'"),
    (dict(depth_multiplier=-1.0), 'depth_multiplier'),
    (dict(global_pool='', num_classes=10), "global_pool=''"),
    (dict(num_classes=-2), 'num_classes'),
])
def test_invalid_constructor_values_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mobilenetv3.SPEC.build('mobilenetv3_small_100', **kwargs)


def test_unknown_variant():
    with pytest.raises(KeyError, match='mobilenetv3_huge'):
        mobilenetv3.SPEC.build('mobilenetv3_huge')


@pytest.mark.parametrize('name, kwargs, match', [
    ('mobilenetv4_conv_small', dict(aa_layer='max'), "aa_layer 'max'"),
    ('mobilenetv3_large_100', dict(aa_layer='avg'), "'ds' is not a MobileNetV4 block"),
    ('mobilenetv4_conv_small', dict(depth_multiplier=1.5), 'depth_multiplier=1.5'),
    ('lcnet_050', dict(se_style='tiny'), "se_style 'tiny'"),
])
def test_invalid_family_options_raise(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        mobilenetv3.SPEC.build(name, **kwargs)


@pytest.mark.parametrize('block, match', [
    ('mqa_r1_k3_h4_s2_d64_c160', 'valid stride: s1'),
    ('uir_r1_a0_k0_s2_e4_c80', None),
    ('uir_r1_a3_k5_s2_c80', r"lacks option\(s\) \['e'\]"),
    ('mqa_r1_k3_h4_s1_q2_d64_c160', "cannot read option 'q2'"),
    ('uir_r1_a3_k3.5_s1_e4_c80', "option 'k' needs an integer"),
])
def test_invalid_mnv4_block_strings_raise(block, match):
    if match is None:  # decodes; refused when built, since no depthwise conv can carry the stride
        with pytest.raises(ValueError, match='needs a depthwise conv'):
            mobilenetv3.MobileNetV3([['cn_r1_k3_s1_c16'], [block]])
        return
    with pytest.raises(ValueError, match=match):
        decode_mnv4_block(block)
