"""VoVNet family: dilated levels are the stride-32 levels densified, errors, group matcher and drop path, pruning to
the stem, checkpointing, export and the seed guide's example.

What every family shares (timm parity, output strides, levels, wrappers, intermediates, the model contract):
test_models.py."""
from __future__ import annotations

import pytest
import torch

import featzoo
from featzoo.models import vovnet
from helpers import assert_equal, check_feature_shapes, group_matcher_and_drop_path_like_timm, randomize_state


# The ESE gate averages the whole map, which a denser map changes; without it, the dilated network is exactly the
# stride-32 network computed densely. ese_vovnet19b_dw without attention covers depthwise convs and residuals.
@pytest.mark.parametrize('name, output_stride, kwargs', [
    ('ese_vovnet19b_dw', 16, dict(attn='')),
    ('ese_vovnet19b_dw', 8, dict(attn='')),
    ('vovnet39a', 8, {}),
])
def test_dilated_levels_are_the_stride32_levels_densified(name, output_stride, kwargs):
    ref = featzoo.create_model(name, features_only=True, **kwargs).eval()
    randomize_state(ref)
    model = featzoo.create_model(name, features_only=True, output_stride=output_stride, **kwargs).eval()
    assert model.feature_info.reduction() == [2, 4, 8, min(16, output_stride), output_stride]
    model.load_state_dict(ref.state_dict())
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ref(x)
    got = check_feature_shapes(model, x)
    for i, (e, g, r_ref, r) in enumerate(zip(expected, got, ref.feature_info.reduction(),
                                             model.feature_info.reduction())):
        step = r_ref // r
        assert g.shape[-1] == e.shape[-1] * step
        assert_equal(g[:, :, ::step, ::step], e, f'{name} os{output_stride} level {i}')


def test_output_stride_8_full_model():
    model = featzoo.create_model('ese_vovnet39b', output_stride=8).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert model.forward_features(x).shape == (1, 1024, 8, 8)
        assert model(x).shape == (1, 1000)


def test_invalid_arguments_name_the_value():
    with pytest.raises(ValueError, match=r'output_stride=64.*\(8, 16, 32\)'):
        vovnet.SPEC.build('ese_vovnet39b', output_stride=64)
    with pytest.raises(ValueError, match=r"attn='cbam' is invalid"):
        vovnet.SPEC.build('ese_vovnet39b', attn='cbam')
    with pytest.raises(ValueError, match=r'stem_stride=3'):
        vovnet.SPEC.build('ese_vovnet39b', stem_stride=3)
    with pytest.raises(ValueError, match=r'block_per_stage must have 4 entries'):
        vovnet.SPEC.build('ese_vovnet39b', block_per_stage=(1, 1, 1))
    with pytest.raises(ValueError, match=r'layer_per_block=0 is invalid; it must be >= 1'):
        vovnet.SPEC.build('ese_vovnet39b', layer_per_block=0)
    with pytest.raises(KeyError, match=r"vovnet11.*ese_vovnet19b_dw"):
        vovnet.SPEC.build('vovnet11')
    with pytest.raises(ValueError, match='output_stride=4'):
        featzoo.create_model('ese_vovnet39b', output_stride=4)


def test_seed_ese_vovnet19b_dw():
    m = featzoo.create_model('ese_vovnet19b_dw').eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert m(x).shape == (2, 1000)
        m.reset_classifier(0)
        assert m(x).shape == (2, 1024)


def test_group_matcher_and_drop_path_like_timm():
    group_matcher_and_drop_path_like_timm(vovnet.SPEC.build, 'ese_vovnet57b')


def test_prune_to_the_last_level_then_to_the_stem():
    x = torch.randn(1, 3, 64, 64)
    stem_only = vovnet.SPEC.build('ese_vovnet19b_slim_dw')
    assert stem_only.prune_intermediate_layers(1) == [4]
    stem_only.prune_intermediate_layers((0,))
    assert not any(k.startswith(('stem.2', 'stages', 'head.fc')) for k in stem_only.state_dict())
    assert stem_only(x).shape == (1, 64, 32, 32)


def test_grad_checkpointing_gives_the_same_gradients():
    def grads(enable: bool):
        torch.manual_seed(0)
        m = vovnet.VovNet(stem_chs=(8, 8, 16), stage_conv_chs=(8, 8, 8, 8), stage_out_chs=(16, 16, 16, 32),
                          block_per_stage=(1, 2, 1, 1), layer_per_block=2, num_classes=4)
        m.set_grad_checkpointing(enable)
        m(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))).square().sum().backward()
        return [p.grad for p in m.parameters()]
    for a, b in zip(grads(False), grads(True)):
        assert_equal(a, b, 'grad')


def test_exportable_at_output_stride_8():
    model = vovnet.VovNet(stem_chs=(8, 8, 16), stage_conv_chs=(8, 8, 8, 8), stage_out_chs=(16, 16, 16, 32),
                          block_per_stage=(1, 2, 1, 1), layer_per_block=2, depthwise=True, output_stride=8).eval()
    x = torch.randn(1, 3, 64, 64)
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        assert_equal(program.module()(x), model(x), 'torch.export')
