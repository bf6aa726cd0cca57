"""Hybrid ViTs: what the generic parity suite does not cover (inputs of other sizes against timm's dynamic-size
model, sizes the trunk and patch cannot take, the trunks' shapes)."""
from __future__ import annotations

import pytest
import torch

import featzoo
from featzoo.models import vision_transformer_hybrid as hybrid
from helpers import assert_equal, randomize_state, save_state

timm = pytest.importorskip('timm')

FAMILY = 'vision_transformer_hybrid'
SHALLOW = dict(depth=2)


def test_every_timm_architecture_is_registered():
    assert sorted(featzoo.list_models(module=FAMILY)) == sorted(timm.list_models(module=FAMILY))
    assert sorted(featzoo.list_models(module=FAMILY, pretrained=True)) == \
        sorted(timm.list_models(module=FAMILY, pretrained=True))


@pytest.mark.parametrize('name', sorted(hybrid.VARIANTS))
def test_declared_stride_is_the_models(name):
    with torch.device('meta'):
        model = hybrid.SPEC.build(name)
    stride = hybrid.total_stride(name, hybrid.VARIANTS[name])
    assert model.patch_embed.feat_ratio() == stride
    assert {level['reduction'] for level in model.feature_info} == {stride}


# one row per trunk kind: the ResNetV2 stem alone (patch 8), a ResNetV2, a ResNet-D cut after three stages, MobileCLIP
@pytest.mark.parametrize('name', ['vit_tiny_r_s16_p8_224', 'vit_small_r26_s32_224', 'vit_small_resnet50d_s16_224',
                                  'vit_base_mci_224'])
def test_other_input_sizes_match_timm_dynamic(name):
    ref = timm.create_model(name, dynamic_img_size=True, **SHALLOW).eval()
    randomize_state(ref, seed=4)
    path = save_state(ref.state_dict())
    model = featzoo.create_model(name, checkpoint_path=path, **SHALLOW).eval()
    stride = model.patch_embed.feat_ratio()
    x = torch.randn(1, 3, 3 * stride, 5 * stride)
    with torch.no_grad():
        assert_equal(model.forward_features(x), ref.forward_features(x), 'forward_features')
        assert_equal(model(x), ref(x), 'logits')
        ours = model.forward_intermediates(x, indices=1, intermediates_only=True)
        theirs = ref.forward_intermediates(x, indices=1, intermediates_only=True)
    assert ours[0].shape[-2:] == (3, 5)
    assert_equal(ours[0], theirs[0], 'last block map')


def test_set_input_size_names_the_stride():
    model = featzoo.create_model('vit_tiny_r_s16_p8_224', **SHALLOW)
    with pytest.raises(ValueError, match=r'multiples of 32'):
        model.set_input_size(240)
    model.set_input_size(256)
    assert model.pos_embed.shape[1] == 1 + 8 * 8


def test_only_the_token_stride_is_an_output_stride():
    with pytest.raises(ValueError, match=r'output_stride=16 .* valid: \(32,\)'):
        featzoo.create_model('vit_small_r26_s32_224', output_stride=16)


def test_bad_trunks_name_what_is_valid():
    with pytest.raises(ValueError, match='unknown trunk'):
        featzoo.create_model('vit_small_r26_s32_224', trunk='vgg')
    with pytest.raises(ValueError, match="trunk_variant='resnet999'"):
        featzoo.create_model('vit_small_resnet26d_224', trunk_variant='resnet999')
    with pytest.raises(ValueError, match='trunk_stages=5'):
        featzoo.create_model('vit_small_resnet26d_224', trunk_stages=5)
