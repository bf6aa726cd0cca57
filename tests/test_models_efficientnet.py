"""timm's efficientnet module (EfficientNet, V2, MixNet, MnasNet, MobileNet V1/V2, ...): the registered set, level
selection, group matcher, checkpointing, drop path, errors, the stage-string decoder, CondConv routing, mixed-kernel
splits and the L2 models on a depth-reduced instance.

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


def test_every_timm_architecture_and_tag_is_registered():
    import timm
    assert set(NAMES) == set(timm.list_models(module=FAMILY))
    assert set(featzoo.list_models(module=FAMILY, pretrained=True)) == \
        set(timm.list_models(module=FAMILY, pretrained=True))


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
    (dict(norm_layer='batch'), "norm_layer='batch'"),
    (dict(norm_layer='groupnorm', norm_group_size=0), 'norm_group_size'),
    (dict(se_layer='eca'), "se_layer='eca'"),
    (dict(aa_layer='blur'), "aa_layer='blur'"),
    (dict(depth_trunc='floor'), "depth_trunc='floor'"),
    (dict(depth_multiplier=(1.0, 2.0)), 'one positive number per stage'),
    (dict(group_size=7), 'group_size=7 does not divide'),
    (dict(channel_divisor=0), 'channel_divisor'),
    (dict(block_widths=efficientnet.PRUNED_WIDTHS['b1']), 'block_widths lists'),
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
    ('ds_r1_k3..5_s1_c16', "option 'k' needs an integer"),
    ('ir_r1_k3_s1_e6_c16_fc16', "option 'fc' only applies"),
    ('ds_r1_k3_s2_c16_d1', 'needs s1'),
    ('cn_r1_k3.5_s1_c16', "'cn' block takes one kernel"),
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


@pytest.mark.parametrize('arch, depth, fix_first_last, trunc', [
    ('efficientnet', 3.1, False, 'ceil'), ('efficientnet', 1.1, False, 'ceil'),
    ('efficientnet_lite', 1.8, True, 'ceil'),
    ('mobilenetv2', 1.4, True, 'ceil'), ('efficientnetv2_m', 1.0, False, 'ceil'), ('mixnet_m', 1.3, False, 'round'),
    ('tinynet', 0.6, False, 'round'), ('fbnetc', 2.0, False, 'ceil'),
    ('efficientnetv2_rw', (1.2,) * 4 + (1.6,) * 2, False, 'ceil')])
def test_depth_scaling_matches_timm(arch, depth, fix_first_last, trunc):
    from timm.models._efficientnet_builder import decode_arch_def
    block_defs = efficientnet.ARCHS[arch]['block_defs']
    ours = eb.decode_arch(block_defs, depth, fix_first_last, depth_trunc=trunc)
    ref = decode_arch_def([list(s) for s in block_defs], depth, depth_trunc=trunc, fix_first_last=fix_first_last)
    assert [len(s) for s in ours] == [len(s) for s in ref]
    assert [[b.out_chs for b in s] for s in ours] == [[b['out_chs'] for b in s] for s in ref]


def test_decoder_reads_mixed_kernels_groups_experts_and_space_to_depth():
    spec = eb.decode_block('ir_r1_k3.5.7_a1.1_p1.1_s2_e6_c40_se0.5_nsw')
    assert (spec.kernel_size, spec.exp_kernel_size, spec.pw_kernel_size) == ((3, 5, 7), (1, 1), (1, 1))
    assert eb.decode_block('er_r1_k3_s1_e4_gs64_c32').group_size == 64
    assert eb.decode_block('er_r1_k3_s1_e4_c24_fc24_noskip').force_in_chs == 24
    assert eb.decode_block('ir_r1_k3_s1_e6_c112_cc4').num_experts == 4
    assert eb.decode_block('ds_r1_k3_s1_e1_c16_d1').s2d
    stages = eb.decode_arch([['ir_r1_k3_s1_e6_c16_cc4', 'ir_r1_k3_s1_e6_c16_gs4']], group_size=8, experts_multiplier=2)
    assert [(b.num_experts, b.group_size) for b in stages[0]] == [(8, 8), (0, 4)]


def test_condconv_routes_each_sample_separately():
    # every sample gets its own kernel mix: a batch must equal its samples run one at a time
    torch.manual_seed(0)
    block = eb.CondConvResidual(16, 16, exp_ratio=4.0, num_experts=4).eval()
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(3, 16, 8, 8)
    with torch.no_grad():
        batched = block(x)
        single = torch.cat([block(x[i:i + 1]) for i in range(3)])
    assert_equal(batched, single, 'CondConv batch vs per sample')
    assert not torch.allclose(batched[0], batched[1])


def test_mixed_kernels_split_channels_like_timm():
    from featzoo.layers.mixed_conv import MixedConv2d, split_channels
    assert split_channels(200 * 6, 5) == [240] * 5 and split_channels(10, 4) == [4, 2, 2, 2]
    conv = MixedConv2d(10, 10, [3, 5, 7, 9], depthwise=True)
    assert [c.kernel_size[0] for c in conv.values()] == [3, 5, 7, 9]
    assert [c.in_channels for c in conv.values()] == [4, 2, 2, 2]
    assert conv(torch.randn(1, 10, 9, 9)).shape == (1, 10, 9, 9)


def _first_block_per_stage(model):
    for stage in model.blocks:
        for name in [n for n, _ in stage.named_children()][1:]:
            delattr(stage, name)
    return model


@pytest.mark.slow
@pytest.mark.parametrize('name', ['efficientnet_l2', 'tf_efficientnet_l2'])
@pytest.mark.parametrize('output_stride', [32, 16, 8])
def test_l2_on_one_block_per_stage(name, output_stride):
    # Over 1.5 GB of float32 weights, and timm's builder takes no depth argument: both models are built whole on the
    # meta device, then cut to the first block of every stage (the stage widths stay those of the full model).
    import timm
    from helpers import meta_device, randomize_state
    kwargs = {} if output_stride == 32 else dict(output_stride=output_stride)
    with meta_device():
        ref = _first_block_per_stage(timm.create_model(name, **kwargs))
        model = _first_block_per_stage(featzoo.create_model(name, **kwargs))
    ref = ref.to_empty(device='cpu').eval()
    randomize_state(ref)
    model = model.to_empty(device='cpu').eval()
    model.load_state_dict(ref.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert_equal(model.forward_features(x), ref.forward_features(x),
                     f'{name} forward_features, one block per stage')
        assert_equal(model(x), ref(x), f'{name} logits, one block per stage')


@pytest.mark.parametrize('name, timm_gen', [('efficientnetv2_l', '_gen_efficientnetv2_l'),
                                            ('efficientnetv2_xl', '_gen_efficientnetv2_xl')])
def test_v2_sizes_rewrite_the_m_layout_into_timms_stages(name, timm_gen):
    import inspect
    from timm.models import efficientnet as timm_effnet
    row = efficientnet.VARIANTS[name]
    ours = efficientnet.with_stage_counts(efficientnet.ARCHS[row['arch']]['block_defs'], row['stage_repeats'],
                                          row['stage_chs'])
    source = inspect.getsource(getattr(timm_effnet, timm_gen))
    assert all(f"'{stage[0]}'" in source for stage in ours), ours


@pytest.mark.parametrize('name', ['mixnet_s', 'efficientnet_cc_b0_4e', 'efficientnet_x_b3'])
def test_unusual_blocks_trace_with_fx(name):
    # mixed-kernel splits, CondConv routing and space-to-depth are off the family representative's path
    fx = featzoo.create_model(name, features_only=True, feature_cls='fx').eval()
    eager = featzoo.create_model(name, features_only=True, feature_cls='list').eval()
    eager.load_state_dict(fx.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(fx(x), eager(x)))
