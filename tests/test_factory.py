"""create_model: argument validation happens before anything is built, with clear messages."""
from __future__ import annotations

import pytest
import torch

import featzoo


@pytest.mark.parametrize('kwargs,error,match', [
    (dict(num_classes=-1), ValueError, 'num_classes=-1'),
    (dict(num_classes='10'), TypeError, 'num_classes'),
    (dict(in_chans=0), ValueError, 'in_chans=0'),
    (dict(output_stride=4), ValueError, r'output_stride=4 .*\(8, 16, 32\)'),
    (dict(output_stride=12), ValueError, 'supported'),
    (dict(drop_rate=1.5), ValueError, 'drop_rate'),
    (dict(drop_path_rate=-0.1), ValueError, 'drop_path_rate'),
    (dict(features_only=True, feature_cls='pyramid'), ValueError, "unknown feature_cls 'pyramid'"),
    (dict(features_only=True, out_indices=(5,)), ValueError, 'out of range'),
    (dict(features_only=True, out_indices=()), ValueError, 'empty'),
    (dict(features_only=True, out_indices=(1, 1)), ValueError, 'more than once'),
    (dict(features_only=True, output_fmt='NCWH'), ValueError, 'output_fmt'),
    (dict(features_only=True, out_map=['a']), ValueError, 'out_map'),
    (dict(out_indices=(1, 2)), ValueError, 'features_only=True'),
    (dict(feature_cls='dict'), ValueError, 'features_only=True'),
    (dict(global_pool=3), TypeError, 'global_pool'),
    (dict(global_pool='median'), ValueError, 'median'),
    (dict(pretrained='yes'), TypeError, 'pretrained'),
    (dict(pretrained_cfg_overlay=['file']), TypeError, 'pretrained_cfg_overlay'),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        featzoo.create_model('resnet18', **kwargs)


def test_wrapper_the_family_cannot_serve():
    with pytest.raises(ValueError, match=r"cannot serve 'xception41'; it supports \('hook', 'fx'\)"):
        featzoo.create_model('xception41', features_only=True, feature_cls='list')


def test_bad_model_name_types():
    with pytest.raises(TypeError, match='str'):
        featzoo.create_model(50)
    with pytest.raises(featzoo.UnknownModelError):
        featzoo.create_model('')


def test_unknown_constructor_kwarg_is_rejected():
    with pytest.raises(TypeError, match='colour'):
        featzoo.create_model('resnet18', colour='blue')


def test_defaults_follow_pretrained_cfg():
    m = featzoo.create_model('resnet18')
    assert m.num_classes == 1000
    assert m.pretrained_cfg['hf_hub_id'].startswith('timm/resnet18.')
    assert m.pretrained_cfg['first_conv'] == 'conv1'


def test_drop_rate_is_used_in_training_only():
    m = featzoo.create_model('resnet18', drop_rate=0.5, drop_path_rate=0.1)
    x = torch.randn(2, 3, 64, 64)
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(x), m(x))
    m.train()
    with torch.no_grad():
        assert not torch.equal(m(x), m(x))
