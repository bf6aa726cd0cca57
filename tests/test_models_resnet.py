"""ResNet family: the seed guide's and the issue's examples.

What every family shares (timm parity, output strides, levels, wrappers, intermediates, the model contract):
test_models.py."""
from __future__ import annotations

import torch

import featzoo


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
