"""EfficientNet / EfficientNet-Lite / EfficientNetV2 / MobileNetV2: the published variants, level selection, group
matcher, checkpointing, drop path, errors and the stage-string decoder.

What every family shares (timm parity, output strides, levels, wrappers, intermediates, the model contract):
test_models.py."""
from __future__ import annotations

import pytest
import torch

import featzoo
from featzoo.layers import efficientnet_blocks as eb
from featzoo.models import efficientnet
from helpers import assert_equal

FAMILY = 'efficientnet'
NAMES = featzoo.list_models(module=FAMILY)
X64 = (1, 3, 64, 64)


def test_table_lists_the_issue_variants():
    expected = (
        [f'efficientnet_b{i}' for i in range(8)] + [f'efficientnet_lite{i}' for i in range(5)]
        + [f'tf_efficientnet_b{i}' for i in range(8)] + [f'tf_efficientnet_lite{i}' for i in range(5)]
        + ['tf_efficientnetv2_s', 'tf_efficientnetv2_m', 'tf_efficientnetv2_l']
        + ['mobilenetv2_035', 'mobilenetv2_050', 'mobilenetv2_100', 'mobilenetv2_110d', 'mobilenetv2_120d',
           'mobilenetv2_140'])
    assert sorted(NAMES) == sorted(expected)


def test_out_indices_select_levels():
    backbone = featzoo.create_model('mobilenetv2_035', features_only=True, out_indices=(1, 3))
    assert backbone.feature_info.channels() == [8, 32] and backbone.feature_info.reduction() == [4, 16]
    out = backbone(torch.randn(X64))
    assert [tuple(o.shape) for o in out] == [(1, 8, 16, 16), (1, 32, 4, 4)]


def test_group_matcher_is_timms():
    import timm
    with torch.device('meta'):
        model, ref = featzoo.create_model('efficientnet_b0'), timm.create_model('efficientnet_b0')
    assert model.group_matcher() == ref.group_matcher() and model.group_matcher(True) == ref.group_matcher(True)


def test_grad_checkpointing_gives_the_same_gradients():
    model = featzoo.create_model('mobilenetv2_035', num_classes=4).eval()
    x = torch.randn(X64, requires_grad=True)
    model(x).sum().backward()
    expected = x.grad.clone()
    x.grad = None
    model.set_grad_checkpointing(True)
    assert model.grad_checkpointing
    model(x).sum().backward()
    assert_equal(x.grad, expected, 'input gradient with checkpointing')


def test_drop_path_rates_match_timm():
    import timm
    with torch.device('meta'):
        ref = timm.create_model('efficientnet_b1', drop_path_rate=0.2)
        model = featzoo.create_model('efficientnet_b1', drop_path_rate=0.2)
    rates = [getattr(m.drop_path, 'drop_prob', 0.0) for m in model.blocks.modules() if hasattr(m, 'drop_path')]
    ref_rates = [getattr(m.drop_path, 'drop_prob', 0.0) for m in ref.blocks.modules() if hasattr(m, 'drop_path')]
    assert rates == ref_rates and rates[0] == 0.0 and max(rates) > 0.18


def test_other_input_channels_and_classes():
    model = featzoo.create_model('tf_efficientnet_lite0', in_chans=1, num_classes=7, drop_rate=0.2).eval()
    assert model.conv_stem.in_channels == 1
    with torch.no_grad():
        assert model(torch.randn(2, 1, 65, 47)).shape == (2, 7)


@pytest.mark.parametrize('kwargs, match', [
    (dict(output_stride=12), 'output_stride=12'),
    (dict(pad_type='valid'), "pad_type='valid'"),
    (dict(channel_multiplier=0), 'channel_multiplier'),
    (dict(drop_rate=1.5), 'drop_rate'),
    (dict(global_pool='mean'), "global_pool 'mean'"),
    (dict(global_pool='', num_classes=10), "global_pool=''"),
    (dict(head_rule='double'), "head_rule='double'"),
    (dict(act_layer='swishy'), "'swishy'"),
    (dict(block_defs=(('ir_r1_k3_s3_e6_c16',),)), 'stride 3'),
])
def test_invalid_constructor_values_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        efficientnet.SPEC.build('efficientnet_b0', **kwargs)


def test_unknown_variant_and_argument():
    with pytest.raises(KeyError, match='efficientnet_b9'):
        efficientnet.SPEC.build('efficientnet_b9')
    with pytest.raises(TypeError, match='colour'):
        efficientnet.SPEC.build('efficientnet_b0', colour='red')


@pytest.mark.parametrize('block_str, match', [
    ('xx_r1_k3_s1_c16', "unknown block type 'xx'"),
    ('ir_r1_k3_s1_c16', r"lacks option\(s\) \['e'\]"),
    ('ir_r1_k3_s1_e6_c16_q7', "option 'q7'"),
    ('ds_r0_k3_s1_c16', 'repeats must be >= 1'),
    ('ds_r1_k3.5_s1_c16', "option 'k' needs an integer"),
])
def test_block_string_errors_name_the_string(block_str, match):
    with pytest.raises(ValueError, match=match):
        eb.decode_block(block_str)


def test_decoder_reads_every_option():
    spec = eb.decode_block('ir_r3_k5_s2_e4.5_c40_se0.25_a3_p1_nhs_noskip')
    assert (spec.block_type, spec.repeats, spec.kernel_size, spec.stride, spec.exp_ratio, spec.out_chs) == \
        ('ir', 3, 5, 2, 4.5, 40)
    assert (spec.se_ratio, spec.exp_kernel_size, spec.pw_kernel_size, spec.act_layer, spec.skip) == \
        (0.25, 3, 1, 'hard_swish', False)
    assert eb.decode_block('cn_r1_k3_s1_c24_skip').skip is True
    assert eb.decode_block('ds_r1_k3_s1_e1_c16').exp_ratio == 1.0


@pytest.mark.parametrize('arch, depth, fix_first_last', [
    ('efficientnet', 3.1, False), ('efficientnet', 1.1, False), ('efficientnet_lite', 1.8, True),
    ('mobilenetv2', 1.4, True), ('efficientnetv2_l', 1.0, False)])
def test_depth_scaling_matches_timm(arch, depth, fix_first_last):
    from timm.models._efficientnet_builder import decode_arch_def
    block_defs = efficientnet.ARCHS[arch]['block_defs']
    ours = eb.decode_arch(block_defs, depth, fix_first_last)
    ref = decode_arch_def([list(s) for s in block_defs], depth, fix_first_last=fix_first_last)
    assert [len(s) for s in ours] == [len(s) for s in ref]
    assert [[b.out_chs for b in s] for s in ours] == [[b['out_chs'] for b in s] for s in ref]
