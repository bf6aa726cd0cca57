"""MobileNetV3: every variant against timm (classifier model and, at output_stride 16/8, timm's feature model),
the efficient head, feature wrappers and intermediates."""
from __future__ import annotations

import os

import pytest
import torch

import featzoo
from featzoo.models import mobilenetv3
from helpers import assert_equal, build_timm_reference, randomize_state, save_state, timm_parity

FAMILY = 'mobilenetv3'
NAMES = featzoo.list_models(module=FAMILY)
X64 = (1, 3, 64, 64)


def _remove(path: str) -> None:
    os.remove(path)
    os.rmdir(os.path.dirname(path))


def test_table_lists_the_issue_variants():
    expected = ['mobilenetv3_large_075', 'mobilenetv3_large_100', 'mobilenetv3_small_050', 'mobilenetv3_small_075',
                'mobilenetv3_small_100', 'tf_mobilenetv3_large_100', 'tf_mobilenetv3_small_100']
    assert sorted(NAMES) == expected == sorted(mobilenetv3.VARIANTS)


@pytest.mark.parametrize('name', NAMES)
def test_timm_parity(name):
    timm_parity(name, input_size=X64)


@pytest.mark.parametrize('output_stride', [16, 8])
@pytest.mark.parametrize('name', NAMES)
def test_timm_parity_dilated(name, output_stride):
    # timm's MobileNetV3 classifier takes no output_stride; its feature model does, so it is the reference here.
    model = featzoo.create_model(name, output_stride=output_stride).eval()
    randomize_state(model)
    ref = build_timm_reference(name, features_only=True, output_stride=output_stride)
    head = ('conv_head.', 'classifier.')
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


@pytest.mark.parametrize('name', NAMES)
def test_output_stride_keeps_parameters_and_shapes(name):
    # Meta build, then uninitialized storage: names and shapes are what matter, and initializers are skipped.
    with torch.device('meta'):
        ref = {k: tuple(v.shape) for k, v in featzoo.create_model(name).state_dict().items()}
    for stride in (16, 8):
        with torch.device('meta'):
            backbone = featzoo.create_model(name, features_only=True, output_stride=stride)
            model = featzoo.create_model(name, output_stride=stride)
        assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == ref
        backbone = backbone.to_empty(device='cpu').eval()
        with torch.no_grad():
            out = backbone(torch.zeros(X64))
        info = backbone.feature_info
        assert [tuple(o.shape) for o in out] == [(1, c, 64 // r, 64 // r)
                                                 for c, r in zip(info.channels(), info.reduction())]
        assert max(info.reduction()) == stride


def test_feature_levels_match_timm_defaults():
    import timm
    for name in ('mobilenetv3_large_100', 'mobilenetv3_small_050'):
        with torch.device('meta'):
            ref = timm.create_model(name)
            model = featzoo.create_model(name)
        assert [(f['module'], f['num_chs'], f['reduction']) for f in model.feature_info] == \
            [(f['module'], f['num_chs'], f['reduction']) for f in ref.feature_info]
    assert [f['module'] for f in model.feature_info] == ['bn1', 'blocks.0', 'blocks.1', 'blocks.3', 'blocks.5']


@pytest.mark.parametrize('name', ['mobilenetv3_small_050', 'tf_mobilenetv3_large_100'])
def test_every_declared_wrapper_gives_the_same_levels(name):
    source = featzoo.create_model(name).eval()
    randomize_state(source)
    path = save_state(source.state_dict())
    x = torch.randn(X64, generator=torch.Generator().manual_seed(1))
    try:
        ref = featzoo.create_model(name, features_only=True, checkpoint_path=path).eval()
        with torch.no_grad():
            expected = ref(x)
        assert not any(k.startswith(('conv_head', 'classifier')) for k in ref.state_dict())
        for cls in mobilenetv3.FEATURE_CLS:
            backbone = featzoo.create_model(name, features_only=True, feature_cls=cls, checkpoint_path=path).eval()
            with torch.no_grad():
                out = backbone(x)
            out = list(out.values()) if isinstance(out, dict) else out
            assert len(out) == len(expected), cls
            for i, (a, b) in enumerate(zip(out, expected)):
                assert_equal(a, b, f'{name} {cls} level {i}')
    finally:
        _remove(path)


def test_efficient_head_contract():
    model = featzoo.create_model('mobilenetv3_large_100').eval()
    x = torch.randn(X64)
    # Pooling comes before the head convolution: forward_features is the last stage, pre-logits the head's width.
    assert model.num_features == 960 and model.head_hidden_size == 1280
    with torch.no_grad():
        feat = model.forward_features(x)
        assert feat.shape == (1, 960, 2, 2)
        assert model.forward_head(feat, pre_logits=True).shape == (1, 1280)
        model.reset_classifier(10)
        assert model(x).shape == (1, 10) and model.get_classifier().in_features == 1280
        model.reset_classifier(0)
        assert model(x).shape == (1, 1280)
        model.reset_classifier(0, '')
        assert model(x).shape == (1, 1280, 2, 2)
    with pytest.raises(ValueError, match='catavgmax'):
        model.reset_classifier(0, 'catavgmax')
    with pytest.raises(ValueError, match="global_pool=''"):
        model.reset_classifier(5, '')
    assert model.no_weight_decay() == set()
    import timm
    with torch.device('meta'):
        ref = timm.create_model('mobilenetv3_large_100')
    assert model.group_matcher() == ref.group_matcher() and model.group_matcher(True) == ref.group_matcher(True)
    names = [n for n, _ in model.named_children()]
    assert names == ['conv_stem', 'bn1', 'blocks', 'global_pool', 'conv_head', 'norm_head', 'act2', 'flatten',
                     'classifier']


def test_catavgmax_head_is_built_wide():
    model = featzoo.create_model('mobilenetv3_small_050', global_pool='catavgmax', num_classes=3).eval()
    assert model.conv_head.in_channels == 2 * model.num_features
    with torch.no_grad():
        assert model(torch.randn(X64)).shape == (1, 3)


def test_forward_intermediates_match_timm():
    name = 'mobilenetv3_small_100'
    ref = build_timm_reference(name)
    model = featzoo.create_model(name).eval()
    model.load_state_dict(ref.state_dict())
    x = torch.randn(X64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for indices in (None, 3, [0, -1]):
            final, feats = model.forward_intermediates(x, indices=indices)
            ref_final, ref_feats = ref.forward_intermediates(x, indices=indices)
            assert_equal(final, ref_final, f'final {indices}')
            assert len(feats) == len(ref_feats)
            for a, b in zip(feats, ref_feats):
                assert_equal(a, b, f'intermediate {indices}')
    kept = model.prune_intermediate_layers([0, 1])
    assert kept == [0, 1] and len(model.blocks) == 1 and model.num_features == 16
    with torch.no_grad():
        assert model(x).shape == (1, 16, 16, 16)


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
        mobilenetv3.build('mobilenetv3_small_100', **kwargs)


def test_unknown_variant():
    with pytest.raises(KeyError, match='mobilenetv3_huge'):
        mobilenetv3.build('mobilenetv3_huge')
