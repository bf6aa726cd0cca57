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


# ---- the rows added for timm's full resnet module -------------------------------------------------------------------
import pytest  # noqa: E402

from helpers import timm_parity  # noqa: E402

INPUT = (1, 3, 64, 64)
ONE_BLOCK_PER_STAGE = dict(layers=(1, 1, 1, 1))

# One architecture per configuration, one block per stage (the configuration, not the depth, is what differs).
CONFIGURATIONS = {
    'resnet50_gn': 'group norm everywhere',
    'resnetblur18': 'blur pool in the basic block and after a stride-1 stem max pool',
    'resnetblur50d': 'blur pool in the bottleneck, deep stem, average-pool shortcut',
    'resnetaa34d': 'average-pool anti-aliasing in the basic block and as the stem pool',
    'seresnextaa101d_32x8d': 'average-pool anti-aliasing with grouped convolutions and squeeze-excite',
    'resnetrs50': 'strided-convolution stem pool, squeeze-excite at rd_ratio 0.25',
    'senet154': '3x3 projection shortcuts, halved first convolutions, 64 groups',
    'resnet50c': "deep stem without the average-pool shortcut ('c')",
    'ecaresnetlight': 'plain 7x7 stem with average-pool shortcuts',
    'test_resnet': 'a different block per stage (full size: it is tiny)',
    'ecaresnet50d_pruned': 'channel-pruned widths per block, ECA kernels of the designed widths (full depth: the '
                           'widths are per block)',
}
FULL_DEPTH = ('test_resnet', 'ecaresnet50d_pruned')


@pytest.mark.parametrize('name', sorted(CONFIGURATIONS))
@pytest.mark.parametrize('output_stride', [32, 8])
def test_configuration_matches_timm(name, output_stride):
    kwargs = {} if name in FULL_DEPTH else ONE_BLOCK_PER_STAGE
    timm_parity(name, input_size=INPUT, output_stride=output_stride, timm_kwargs=kwargs, featzoo_kwargs=kwargs)


@pytest.mark.parametrize('kwargs, error, words', [
    (dict(aa_layer='max'), ValueError, 'aa_layer'),
    (dict(norm_layer='layernorm'), ValueError, 'norm_layer'),
    (dict(block=('basic', 'basic')), ValueError, 'stage'),
    (dict(block='bottleneck', pruned_widths=((8, 8, 8),)), ValueError, 'pruned_widths'),
])
def test_bad_new_arguments(kwargs, error, words):
    with pytest.raises(error, match=words):
        featzoo.create_model('resnet18', **kwargs)
