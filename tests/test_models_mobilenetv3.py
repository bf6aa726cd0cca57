"""MobileNetV3: the published variants, every variant at output_stride 16/8 against timm's feature model (timm's
classifier takes no output stride), the efficient head, checkpointing and errors.

What every family shares (timm parity, output strides, levels, wrappers, intermediates, the model contract):
test_models.py."""
from __future__ import annotations

import os

import pytest
import torch

import featzoo
from featzoo.models import mobilenetv3
from helpers import assert_equal, build_timm_reference, randomize_state, save_state

FAMILY = 'mobilenetv3'
NAMES = featzoo.list_models(module=FAMILY)
X64 = (1, 3, 64, 64)


def _remove(path: str) -> None:
    os.remove(path)
    os.rmdir(os.path.dirname(path))


def test_table_lists_the_issue_variants():
    expected = ['mobilenetv3_large_075', 'mobilenetv3_large_100', 'mobilenetv3_small_050', 'mobilenetv3_small_075',
                'mobilenetv3_small_100', 'tf_mobilenetv3_large_100', 'tf_mobilenetv3_small_100']
    assert sorted(NAMES) == expected


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
