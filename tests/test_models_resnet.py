"""ResNet family: every variant against timm; output strides; the seed guide's examples."""
from __future__ import annotations

import pytest
import torch

import featzoo
from helpers import check_feature_shapes, timm_parity

FAMILY = 'resnet'
NAMES = featzoo.list_models(module=FAMILY)
SMALL = ['resnet18', 'resnet50d', 'ecaresnet26t', 'seresnext26d_32x4d']


@pytest.mark.parametrize('name', NAMES)
def test_timm_parity(name):
    timm_parity(name, input_size=(1, 3, 64, 64))


@pytest.mark.parametrize('output_stride', [16, 8])
@pytest.mark.parametrize('name', SMALL)
def test_timm_parity_dilated(name, output_stride):
    timm_parity(name, input_size=(1, 3, 64, 64), output_stride=output_stride)


@pytest.mark.slow
@pytest.mark.parametrize('output_stride', [16, 8])
@pytest.mark.parametrize('name', NAMES)
def test_timm_parity_dilated_all(name, output_stride):
    timm_parity(name, input_size=(1, 3, 64, 64), output_stride=output_stride)


@pytest.mark.parametrize('name', SMALL)
def test_output_stride_keeps_parameters(name):
    with torch.device('meta'):
        ref = {k: v.shape for k, v in featzoo.create_model(name).state_dict().items()}
        for stride in (16, 8):
            model = featzoo.create_model(name, output_stride=stride)
            assert {k: v.shape for k, v in model.state_dict().items()} == ref
    for stride in (16, 8):
        backbone = featzoo.create_model(name, features_only=True, output_stride=stride)
        check_feature_shapes(backbone, (1, 3, 96, 96))


def test_seed_resnet50_unpooled_and_pooled():
    m = featzoo.create_model('resnet50', num_classes=0, global_pool='')
    assert m(torch.randn(2, 3, 224, 224)).shape == (2, 2048, 7, 7)
    m = featzoo.create_model('resnet50', num_classes=0)
    assert m(torch.randn(2, 3, 224, 224)).shape == (2, 2048)


def test_seed_ecaresnet101d_dilated_features():
    m = featzoo.create_model('ecaresnet101d', features_only=True, output_stride=8, out_indices=(2, 4))
    assert m.feature_info.channels() == [512, 2048]
    assert m.feature_info.reduction() == [8, 8]
    out = m(torch.randn(2, 3, 320, 320))
    assert [tuple(o.shape) for o in out] == [(2, 512, 40, 40), (2, 2048, 40, 40)]


def test_issue_example_resnet50_os16():
    m = featzoo.create_model('resnet50', features_only=True, out_indices=(1, 2, 3, 4), output_stride=16)
    assert m.feature_info.channels() == [256, 512, 1024, 2048]
    assert m.feature_info.reduction() == [4, 8, 16, 16]
    out = m(torch.randn(1, 3, 128, 128))
    assert [o.shape[1] for o in out] == [256, 512, 1024, 2048]


def test_model_contract():
    b = featzoo.create_model('resnet50', num_classes=0).eval()
    x = torch.randn(1, 3, 64, 64)
    f = b.forward_features(x)
    assert f.shape == (1, 2048, 2, 2)
    assert b.forward_head(f, pre_logits=True).shape == (1, 2048)
    assert b.num_features == b.head_hidden_size == 2048
    b.reset_classifier(10)
    assert b(x).shape == (1, 10) and b.get_classifier().out_features == 10
    b.reset_classifier(0, '')
    assert b(x).shape == (1, 2048, 2, 2)
    b.reset_classifier(5, 'catavgmax')
    assert b(x).shape == (1, 5) and b.head_hidden_size == 4096
