"""EfficientNet / EfficientNet-Lite / EfficientNetV2 / MobileNetV2: every variant against timm, output strides,
feature wrappers, the model contract and the stage-string decoder."""
from __future__ import annotations

import os

import pytest
import torch

import featzoo
from featzoo.layers import efficientnet_blocks as eb
from featzoo.models import efficientnet
from helpers import assert_equal, build_timm_reference, randomize_state, save_state, timm_parity

FAMILY = 'efficientnet'
NAMES = featzoo.list_models(module=FAMILY)
# Every block type (ds, ir with and without squeeze-excite, er, cn) under both paddings (PyTorch, TF 'same');
# the slow suite runs every row.
DILATED = ['efficientnet_b0', 'tf_efficientnet_b0', 'mobilenetv2_050', 'tf_efficientnetv2_s']
# One row per architecture and padding for the parameter-table check by default; the other rows run with -m slow.
STRUCTURE = ['efficientnet_b0', 'tf_efficientnet_b3', 'efficientnet_lite2', 'tf_efficientnet_lite0', 'mobilenetv2_035',
             'mobilenetv2_120d', 'tf_efficientnetv2_s']
X64 = (1, 3, 64, 64)


def _saved(model: torch.nn.Module) -> str:
    return save_state(model.state_dict())


def _remove(path: str) -> None:
    os.remove(path)
    os.rmdir(os.path.dirname(path))


def test_table_lists_the_issue_variants():
    expected = (
        [f'efficientnet_b{i}' for i in range(8)] + [f'efficientnet_lite{i}' for i in range(5)]
        + [f'tf_efficientnet_b{i}' for i in range(8)] + [f'tf_efficientnet_lite{i}' for i in range(5)]
        + ['tf_efficientnetv2_s', 'tf_efficientnetv2_m', 'tf_efficientnetv2_l']
        + ['mobilenetv2_035', 'mobilenetv2_050', 'mobilenetv2_100', 'mobilenetv2_110d', 'mobilenetv2_120d',
           'mobilenetv2_140'])
    assert sorted(NAMES) == sorted(expected) == sorted(efficientnet.VARIANTS)


@pytest.mark.parametrize('name', NAMES)
def test_timm_parity(name):
    timm_parity(name, input_size=X64)


@pytest.mark.parametrize('output_stride', [16, 8])
@pytest.mark.parametrize('name', DILATED)
def test_timm_parity_dilated(name, output_stride):
    model = timm_parity(name, input_size=X64, output_stride=output_stride)
    assert model.feature_info[-1]['reduction'] == output_stride


@pytest.mark.slow
@pytest.mark.parametrize('output_stride', [16, 8])
@pytest.mark.parametrize('name', NAMES)
def test_timm_parity_dilated_all(name, output_stride):
    timm_parity(name, input_size=X64, output_stride=output_stride)


def _level_shapes(model: torch.nn.Module, x: torch.Tensor) -> list:
    shapes = {}
    handles = [model.get_submodule(level['module']).register_forward_hook(
        lambda mod, args, out, key=level['module']: shapes.__setitem__(key, tuple(out.shape)))
        for level in model.feature_info]
    try:
        final = model.forward_features(x)
    finally:
        for handle in handles:
            handle.remove()
    assert final.shape[-1] == x.shape[-1] // model.feature_info[-1]['reduction']
    return [shapes[level['module']] for level in model.feature_info]


@pytest.mark.parametrize('name', [n if n in STRUCTURE else pytest.param(n, marks=pytest.mark.slow) for n in NAMES])
def test_output_stride_keeps_parameters_and_shapes(name):
    # Built on the meta device, then given uninitialized storage: only names and shapes matter here, and this
    # skips the initializers (slow on big variants) while real kernels keep the forward cheap.
    with torch.device('meta'):
        ref = {k: tuple(v.shape) for k, v in featzoo.create_model(name).state_dict().items()}
    x = torch.zeros(1, 3, 64, 64)
    for stride in (16, 8):
        with torch.device('meta'):
            model = featzoo.create_model(name, output_stride=stride)
        assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == ref
        model = model.to_empty(device='cpu').eval()
        assert max(level['reduction'] for level in model.feature_info) == stride
        with torch.no_grad():
            shapes = _level_shapes(model, x)
        for level, shape in zip(model.feature_info, shapes):
            assert shape == (1, level['num_chs'], 64 // level['reduction'], 64 // level['reduction']), level


def test_feature_levels_match_timm_defaults():
    import timm
    for name in ('efficientnet_b0', 'tf_efficientnetv2_s', 'mobilenetv2_035'):
        with torch.device('meta'):
            ref = timm.create_model(name)
            model = featzoo.create_model(name)
        assert [(f['module'], f['num_chs'], f['reduction']) for f in model.feature_info] == \
            [(f['module'], f['num_chs'], f['reduction']) for f in ref.feature_info]
    assert [f['module'] for f in model.feature_info] == ['blocks.0', 'blocks.1', 'blocks.2', 'blocks.4', 'blocks.6']


@pytest.mark.parametrize('name', ['mobilenetv2_035', 'tf_efficientnet_b0'])
def test_every_declared_wrapper_gives_the_same_levels(name):
    source = featzoo.create_model(name).eval()
    randomize_state(source)
    path = _saved(source)
    x = torch.randn(X64, generator=torch.Generator().manual_seed(1))
    try:
        assert set(efficientnet.FEATURE_CLS) == {'list', 'dict', 'hook', 'fx', 'getter'}
        ref = featzoo.create_model(name, features_only=True, checkpoint_path=path).eval()
        with torch.no_grad():
            expected = ref(x)
        assert not any(k.startswith(('conv_head', 'bn2', 'classifier')) for k in ref.state_dict())
        for cls in efficientnet.FEATURE_CLS:
            backbone = featzoo.create_model(name, features_only=True, feature_cls=cls, checkpoint_path=path).eval()
            with torch.no_grad():
                out = backbone(x)
            out = list(out.values()) if isinstance(out, dict) else out
            assert len(out) == len(expected), cls
            for i, (a, b) in enumerate(zip(out, expected)):
                assert_equal(a, b, f'{name} {cls} level {i}')
    finally:
        _remove(path)


def test_out_indices_select_levels():
    backbone = featzoo.create_model('mobilenetv2_035', features_only=True, out_indices=(1, 3))
    assert backbone.feature_info.channels() == [8, 32] and backbone.feature_info.reduction() == [4, 16]
    out = backbone(torch.randn(X64))
    assert [tuple(o.shape) for o in out] == [(1, 8, 16, 16), (1, 32, 4, 4)]


def test_forward_intermediates_match_timm():
    name = 'tf_efficientnet_b0'
    ref = build_timm_reference(name)
    model = featzoo.create_model(name).eval()
    model.load_state_dict(ref.state_dict())
    x = torch.randn(X64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        _, every_level = model.forward_intermediates(x)
        for indices in (None, 2, [0, 2, 4]):
            final, feats = model.forward_intermediates(x, indices=indices)
            ref_final, ref_feats = ref.forward_intermediates(x, indices=indices)
            assert_equal(final, ref_final, f'final {indices}')
            assert len(feats) == len(ref_feats)
            for a, b in zip(feats, ref_feats):
                assert_equal(a, b, f'intermediate {indices}')
        early = model.forward_intermediates(x, indices=[1], stop_early=True, intermediates_only=True)
        assert len(early) == 1
        assert_equal(early[0], every_level[1], 'stop_early')
    with pytest.raises(ValueError, match='out of range'):
        model.forward_intermediates(x, indices=[5])
    with pytest.raises(ValueError, match='NHWC'):
        model.forward_intermediates(x, output_fmt='NHWC')
    kept = model.prune_intermediate_layers([0, 2])
    assert kept == [0, 2] and len(model.blocks) == 3
    assert model.num_features == model.head_hidden_size == 40 and model.num_classes == 0
    with torch.no_grad():
        assert model(x).shape == (1, 40, 8, 8)


def test_model_contract():
    model = featzoo.create_model('efficientnet_b0').eval()
    x = torch.randn(X64)
    assert model.num_features == model.head_hidden_size == 1280 and model.num_classes == 1000
    with torch.no_grad():
        feat = model.forward_features(x)
        assert feat.shape == (1, 1280, 2, 2)
        assert model.forward_head(feat, pre_logits=True).shape == (1, 1280)
        assert model(x).shape == (1, 1000)
        model.reset_classifier(10)
        assert model(x).shape == (1, 10) and model.get_classifier().out_features == 10
        model.reset_classifier(0, '')
        assert model(x).shape == (1, 1280, 2, 2)
        model.reset_classifier(3, 'catavgmax')
        assert model(x).shape == (1, 3) and model.head_hidden_size == 2560
    with pytest.raises(ValueError, match="global_pool=''"):
        model.reset_classifier(10, '')
    with pytest.raises(ValueError, match='num_classes'):
        model.reset_classifier(-1)
    assert model.no_weight_decay() == set()
    import timm
    with torch.device('meta'):
        assert model.group_matcher() == timm.create_model('efficientnet_b0').group_matcher()
        assert model.group_matcher(True) == timm.create_model('efficientnet_b0').group_matcher(True)


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
        efficientnet.build('efficientnet_b0', **kwargs)


def test_unknown_variant_and_argument():
    with pytest.raises(KeyError, match='efficientnet_b9'):
        efficientnet.build('efficientnet_b9')
    with pytest.raises(TypeError, match='colour'):
        efficientnet.build('efficientnet_b0', colour='red')


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
