"""ConvNeXt family: the getter at output stride 8, head options and reset_classifier against timm, drop path,
checkpointing and errors.

What every family shares (timm parity, output strides, levels, wrappers, intermediates, the model contract):
test_models.py."""
from __future__ import annotations

import importlib

import pytest
import torch

import featzoo
from helpers import assert_equal, build_timm_reference, timm_parity

FAMILY = 'convnext'
FAMILY_MODULE = importlib.import_module(f'featzoo.models.{FAMILY}')
INPUT = (1, 3, 64, 64)


def _meta_timm(name, **kwargs):
    import timm
    with torch.device('meta'):
        return timm.create_model(name, pretrained=False, **kwargs)


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


def test_group_matcher_and_drop_path_match_timm():
    model = FAMILY_MODULE.SPEC.build('convnext_atto', drop_path_rate=0.2)
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


# One architecture per configuration of the rows added for timm's full convnext module, depth-reduced (one block per
# stage: the configuration, not the depth, is what differs), at natural stride and one dilated stride.
CONFIGURATIONS = {
    'convnext_tiny_hnf': 'head_norm_first: norm_pre + ClassifierHead',
    'convnext_atto_ols': 'overlap_tiered stem',
    'convnext_nano_ols': 'overlap stem',
    'convnext_atto_rms': 'RmsNorm2d everywhere',
    'convnext_zepto_rms_ols': 'SimpleNorm2d and the overlap_act stem',
    'convnextv2_atto': 'GRN MLP on NCHW maps (1x1 convolutions), no layer scale',
    'convnextv2_tiny': 'GRN MLP on NHWC rows (linear layers)',
    'convnext_large_mlp': 'head MLP (pre_logits)',
    'test_convnext': 'gelu_tanh, norm eps 1e-5',
    'test_convnext3': 'silu and per-stage kernel sizes',
}


@pytest.mark.parametrize('name', sorted(CONFIGURATIONS))
@pytest.mark.parametrize('output_stride', [32, 8])
def test_configuration_matches_timm(name, output_stride):
    small = dict(depths=(1, 1, 1, 1))
    timm_parity(name, input_size=INPUT, output_stride=output_stride, timm_kwargs=small, featzoo_kwargs=small)


def test_head_norm_first_reset_classifier_matches_timm():
    small = dict(depths=(1, 1, 1, 1))
    ref = build_timm_reference('convnext_tiny_hnf', **small)
    model = featzoo.create_model('convnext_tiny_hnf', **small).eval()
    model.load_state_dict(ref.state_dict())
    x = torch.randn(*INPUT)
    # after global_pool='' a bare (3,) keeps no pooling, and timm's own head then fails: name the pool again
    for args in ((7, 'catavgmax'), (0, ''), (0, None, True), (3, 'avg')):
        ref.reset_classifier(*args)
        model.reset_classifier(*args)
        model.get_classifier().load_state_dict(ref.get_classifier().state_dict())  # both heads are fresh
        assert model.head_hidden_size == ref.head_hidden_size
        with torch.no_grad():
            assert_equal(model(x), ref(x), f'reset_classifier{args}')


def test_fcmae_checkpoint_without_head_norm_loads_as_timm_loads_it():
    # The FCMAE-pretrained ConvNeXt V2 files have no head norm; timm loads them non-strictly and the norm keeps its
    # initial ones and zeros. featzoo's checkpoint filter gives the same model.
    from helpers import save_state
    ref = build_timm_reference('convnextv2_atto', num_classes=0)
    with torch.no_grad():
        ref.head.norm.weight.fill_(1.0)
        ref.head.norm.bias.zero_()
    state = {k: v for k, v in ref.state_dict().items() if not k.startswith('head.norm.')}
    path = save_state(state)
    model = featzoo.create_model('convnextv2_atto', num_classes=0, checkpoint_path=path).eval()
    x = torch.randn(*INPUT)
    with torch.no_grad():
        assert_equal(model(x), ref(x), 'pooled fcmae features')


@pytest.mark.parametrize('kwargs, error, words', [
    (dict(stem_type='conv'), ValueError, 'stem_type'),
    (dict(norm_layer='batchnorm'), ValueError, 'norm_layer'),
    (dict(head_norm_first=True, head_hidden_size=32), ValueError, 'head_hidden_size'),
])
def test_bad_new_arguments(kwargs, error, words):
    with pytest.raises(error, match=words):
        featzoo.create_model('convnext_atto', **kwargs)
