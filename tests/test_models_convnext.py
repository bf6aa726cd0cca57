"""ConvNeXt family: every variant against timm, output strides, wrappers, head options and the model contract."""
from __future__ import annotations

import importlib

import pytest
import torch

import featzoo
from helpers import assert_equal, build_timm_reference, check_feature_shapes, timm_parity

FAMILY = 'convnext'
NAMES = featzoo.list_models(module=FAMILY)
FAMILY_MODULE = importlib.import_module(f'featzoo.models.{FAMILY}')
INPUT = (1, 3, 64, 64)


def _meta_shapes(name, **kwargs):
    with torch.device('meta'):
        model = FAMILY_MODULE.build(name, **kwargs)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}, model.feature_info


def _meta_timm(name, **kwargs):
    import timm
    with torch.device('meta'):
        return timm.create_model(name, pretrained=False, **kwargs)


def test_every_variant_is_listed():
    assert NAMES == sorted(FAMILY_MODULE.VARIANTS)


@pytest.mark.parametrize('name', NAMES)
def test_timm_parity(name):
    timm_parity(name, input_size=INPUT)


@pytest.mark.parametrize('name, output_stride', [('convnext_atto', 16), ('convnext_atto', 8), ('convnext_tiny', 8)])
def test_timm_parity_dilated(name, output_stride):
    timm_parity(name, input_size=INPUT, output_stride=output_stride)


@pytest.mark.slow
@pytest.mark.parametrize('output_stride', [16, 8])
@pytest.mark.parametrize('name', NAMES)
def test_timm_parity_dilated_all(name, output_stride):
    timm_parity(name, input_size=INPUT, output_stride=output_stride)


@pytest.mark.parametrize('name', NAMES)
def test_output_stride_keeps_parameters_and_feature_info_matches_timm(name):
    ref_shapes, _ = _meta_shapes(name)
    for stride in (32, 16, 8):
        shapes, info = _meta_shapes(name, output_stride=stride)
        assert shapes == ref_shapes, f'output_stride={stride} changed the parameters'
        timm_info = _meta_timm(name, output_stride=stride).feature_info
        assert [dict(num_chs=d['num_chs'], reduction=d['reduction'], module=d['module']) for d in timm_info] == info


@pytest.mark.parametrize('output_stride', [16, 8])
def test_output_stride_feature_shapes(output_stride):
    name = 'convnext_atto'
    backbone = featzoo.create_model(name, features_only=True, output_stride=output_stride).eval()
    assert backbone.feature_info.reduction() == [4, 8, min(16, output_stride), output_stride]
    check_feature_shapes(backbone, INPUT)
    model = featzoo.create_model(name, output_stride=output_stride).eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(*INPUT)).shape[-2:] == (64 // output_stride,) * 2


@pytest.mark.parametrize('output_stride', [8])
def test_getter_matches_timm_intermediates(output_stride):
    ref = build_timm_reference('convnext_atto', output_stride=output_stride)
    backbone = featzoo.create_model('convnext_atto', features_only=True, feature_cls='getter',
                                    output_stride=output_stride, out_indices=(1, 2)).eval()
    missing, unexpected = backbone.load_state_dict(ref.state_dict(), strict=False)
    assert not missing and all(k.startswith(('stages.3.', 'head.')) for k in unexpected)
    x = torch.randn(*INPUT)
    with torch.no_grad():
        expected = ref.forward_intermediates(x, indices=[1, 2], intermediates_only=True)
        got = backbone(x)
    assert len(got) == 2
    for a, b in zip(got, expected):
        assert_equal(a, b, 'getter level')
    model = featzoo.create_model('convnext_atto', output_stride=output_stride).eval()
    model.load_state_dict(ref.state_dict())
    with torch.no_grad():
        final, inter = model.forward_intermediates(x, indices=2, norm=True)
        ref_final, ref_inter = ref.forward_intermediates(x, indices=2, norm=True)
    assert_equal(final, ref_final, 'final')
    for a, b in zip(inter, ref_inter):
        assert_equal(a, b, 'intermediate')


@pytest.mark.parametrize('output_stride', [16])
@pytest.mark.parametrize('feature_cls', FAMILY_MODULE.FEATURE_CLS)
def test_every_declared_wrapper_gives_the_same_levels(feature_cls, output_stride):
    # At output_stride 16 the stride-1 downsample conv pads per input ('same'), which FX must treat as a leaf.
    x = torch.randn(*INPUT)
    kwargs = dict(features_only=True, out_indices=(0, 3), output_stride=output_stride)
    ref = featzoo.create_model('convnext_atto', **kwargs).eval()
    backbone = featzoo.create_model('convnext_atto', feature_cls=feature_cls, **kwargs).eval()
    backbone.load_state_dict(ref.state_dict())
    with torch.no_grad():
        expected, got = ref(x), backbone(x)
    got = list(got.values()) if isinstance(got, dict) else list(got)
    assert len(got) == 2
    for a, b in zip(got, expected):
        assert_equal(a, b, feature_cls)


@pytest.mark.parametrize('kwargs', [dict(global_pool='max', head_hidden_size=48, kernel_sizes=5, in_chans=1),
                                    dict(num_classes=0, global_pool='')])
def test_constructor_options_match_timm(kwargs):
    timm_parity('convnext_atto', input_size=(1, kwargs.get('in_chans', 3), 64, 64), timm_kwargs=kwargs,
                featzoo_kwargs=kwargs, check_features=False)


def test_reset_classifier_matches_timm():
    ref = build_timm_reference('convnext_atto', head_hidden_size=48)
    model = featzoo.create_model('convnext_atto', head_hidden_size=48).eval()
    model.load_state_dict(ref.state_dict())
    x = torch.randn(*INPUT)
    for args in ((0, ''), (0, 'avgmax'), (0, None, True)):
        ref.reset_classifier(*args)
        model.reset_classifier(*args)
        assert model.head_hidden_size == ref.head_hidden_size
        with torch.no_grad():
            assert_equal(model(x), ref(x), f'reset_classifier{args}')


def test_model_contract():
    model = featzoo.create_model('convnext_atto').eval()
    x = torch.randn(*INPUT)
    with torch.no_grad():
        feat = model.forward_features(x)
        assert feat.shape == (1, 320, 2, 2)
        assert model.forward_head(feat, pre_logits=True).shape == (1, 320)
        assert model(x).shape == (1, 1000)
    assert model.num_features == model.head_hidden_size == 320
    assert model.get_classifier().out_features == 1000
    model.reset_classifier(10)
    assert model(x).shape == (1, 10) and model.num_classes == 10
    model.reset_classifier(0)
    assert model(x).shape == (1, 320)
    model.reset_classifier(0, '')
    assert model(x).shape == (1, 320, 2, 2)
    assert model.no_weight_decay() == set()
    with pytest.raises(ValueError, match='catavgmax'):
        model.reset_classifier(5, 'catavgmax')
    with pytest.raises(ValueError, match='num_classes'):
        model.reset_classifier(-1)


def test_group_matcher_and_drop_path_match_timm():
    model = FAMILY_MODULE.build('convnext_atto', drop_path_rate=0.2)
    ref = _meta_timm('convnext_atto', drop_path_rate=0.2)
    for coarse in (False, True):
        assert model.group_matcher(coarse) == ref.group_matcher(coarse)
    probs = [getattr(m, 'drop_prob', 0.0) for m in model.modules() if type(m).__name__ == 'DropPath']
    ref_probs = [getattr(m, 'drop_prob', 0.0) for m in ref.modules() if type(m).__name__ == 'DropPath']
    assert probs == pytest.approx(ref_probs) and len(probs) == 11


def test_grad_checkpointing_keeps_outputs_and_gradients():
    torch.manual_seed(0)
    model = featzoo.create_model('convnext_atto', num_classes=4).eval()
    x = torch.randn(1, 3, 32, 32)
    expected = model(x)
    expected.sum().backward()
    grad = model.stem[0].weight.grad.clone()
    model.zero_grad()
    model.set_grad_checkpointing(True)
    out = model(x)
    out.sum().backward()
    assert_equal(out, expected, 'checkpointed forward')
    assert_equal(model.stem[0].weight.grad, grad, 'checkpointed gradient')


@pytest.mark.parametrize('kwargs, error, words', [
    (dict(output_stride=4), ValueError, 'output_stride'),
    (dict(global_pool='catavgmax'), ValueError, 'catavgmax'),
    (dict(depths=(1, 2)), ValueError, 'depths'),
    (dict(drop_path_rate=1.5), ValueError, 'drop_path_rate'),
    (dict(ls_scale=1.0), TypeError, 'ls_scale'),
])
def test_bad_arguments(kwargs, error, words):
    with pytest.raises(error, match=words):
        featzoo.create_model('convnext_atto', **kwargs)
