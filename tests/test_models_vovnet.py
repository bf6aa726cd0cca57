"""VoVNet family: every variant against timm; dilated output strides; the seed guide's example."""
from __future__ import annotations

import pytest
import torch

import featzoo
from featzoo.models import vovnet
from helpers import assert_equal, check_feature_shapes, randomize_state, timm_parity

FAMILY = 'vovnet'
NAMES = featzoo.list_models(module=FAMILY)


def _shapes(model: torch.nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_every_variant_is_listed():
    assert sorted(NAMES) == sorted(vovnet.VARIANTS)
    assert len(NAMES) == 8


@pytest.mark.parametrize('name', NAMES)
def test_timm_parity(name):
    model = timm_parity(name, input_size=(1, 3, 64, 64))
    assert model.feature_info[-1]['module'] == 'stages.3'


@pytest.mark.parametrize('name', NAMES)
def test_output_stride_keeps_parameters(name):
    with torch.device('meta'):
        ref = _shapes(vovnet.build(name))
        for stride in (16, 8):
            assert _shapes(vovnet.build(name, output_stride=stride)) == ref, f'{name} output_stride={stride}'


@pytest.mark.parametrize('output_stride', [16, 8])
def test_ese_vovnet39b_dilated_shapes(output_stride):
    backbone = featzoo.create_model('ese_vovnet39b', features_only=True, output_stride=output_stride).eval()
    assert backbone.feature_info.reduction() == [2, 4, 8, min(16, output_stride), output_stride]
    assert backbone.feature_info.channels() == [64, 256, 512, 768, 1024]
    check_feature_shapes(backbone, (1, 3, 64, 64))


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
        vovnet.build('ese_vovnet39b', output_stride=64)
    with pytest.raises(ValueError, match=r"attn 'cbam'"):
        vovnet.build('ese_vovnet39b', attn='cbam')
    with pytest.raises(ValueError, match=r'stem_stride=3'):
        vovnet.build('ese_vovnet39b', stem_stride=3)
    with pytest.raises(ValueError, match=r'block_per_stage must have 4 entries'):
        vovnet.build('ese_vovnet39b', block_per_stage=(1, 1, 1))
    with pytest.raises(ValueError, match=r'layer_per_block must be an int >= 1, got 0'):
        vovnet.build('ese_vovnet39b', layer_per_block=0)
    with pytest.raises(KeyError, match=r"vovnet11.*ese_vovnet19b_dw"):
        vovnet.build('vovnet11')
    with pytest.raises(ValueError, match='output_stride=4'):
        featzoo.create_model('ese_vovnet39b', output_stride=4)


def test_seed_ese_vovnet19b_dw():
    m = featzoo.create_model('ese_vovnet19b_dw').eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert m(x).shape == (2, 1000)
        m.reset_classifier(0)
        assert m(x).shape == (2, 1024)


def test_model_contract():
    m = featzoo.create_model('ese_vovnet19b_slim', num_classes=0).eval()
    x = torch.randn(1, 3, 64, 64)
    f = m.forward_features(x)
    assert f.shape == (1, 512, 2, 2)
    assert m.forward_head(f, pre_logits=True).shape == (1, 512)
    assert m.num_features == m.head_hidden_size == 512 and m.num_classes == 0
    m.reset_classifier(10)
    assert m(x).shape == (1, 10) and m.get_classifier().out_features == 10
    m.reset_classifier(5, 'catavgmax')
    assert m(x).shape == (1, 5) and m.head_hidden_size == 1024
    m.reset_classifier(0, '')
    assert m(x).shape == (1, 512, 2, 2)
    assert m.no_weight_decay() == set()


def test_group_matcher_and_drop_path_like_timm():
    import timm
    from timm.models._manipulate import group_with_matcher
    from timm.layers import DropPath as TimmDropPath
    from featzoo.layers import DropPath
    ref = timm.create_model('ese_vovnet57b', drop_path_rate=0.2)
    model = vovnet.build('ese_vovnet57b', drop_path_rate=0.2)
    for coarse in (False, True):
        ours = group_with_matcher(model.named_parameters(), model.group_matcher(coarse), return_values=False)
        theirs = group_with_matcher(ref.named_parameters(), ref.group_matcher(coarse), return_values=False)
        assert ours == theirs
    ours = {n: m.drop_prob for n, m in model.named_modules() if isinstance(m, DropPath)}
    theirs = {n: m.drop_prob for n, m in ref.named_modules() if isinstance(m, TimmDropPath)}
    assert ours.keys() == theirs.keys() and len(ours) > 0
    for key in ours:
        assert abs(ours[key] - theirs[key]) < 1e-6, key


def test_forward_intermediates_and_prune_match_timm():
    import timm
    ref = timm.create_model('ese_vovnet19b_slim_dw').eval()
    randomize_state(ref)
    model = vovnet.build('ese_vovnet19b_slim_dw').eval()
    model.load_state_dict(ref.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for indices in (None, 2, (0, 3)):
            final, inter = model.forward_intermediates(x, indices=indices)
            ref_final, ref_inter = ref.forward_intermediates(x, indices=indices)
            assert_equal(final, ref_final, f'final {indices}')
            assert len(inter) == len(ref_inter)
            for a, b in zip(inter, ref_inter):
                assert_equal(a, b, f'intermediate {indices}')
            if indices is None:
                levels = inter
        early = model.forward_intermediates(x, indices=(2,), stop_early=True, intermediates_only=True)
        assert_equal(early[0], levels[2], 'stop_early')
    with pytest.raises(ValueError, match='NHWC'):
        model.forward_intermediates(x, output_fmt='NHWC')
    assert model.prune_intermediate_layers((0, 3)) == ref.prune_intermediate_layers((0, 3)) == [0, 3]
    assert list(model.state_dict()) == list(ref.state_dict())
    with torch.no_grad():
        assert_equal(model(x), ref(x), 'pruned forward')
    stem_only = vovnet.build('ese_vovnet19b_slim_dw')
    assert stem_only.prune_intermediate_layers(1) == [4]
    stem_only.prune_intermediate_layers((0,))
    assert not any(k.startswith(('stem.2', 'stages', 'head.fc')) for k in stem_only.state_dict())
    assert stem_only(x).shape == (1, 64, 32, 32)


@pytest.fixture(scope='module')
def os8_reference():
    """The default (list) backbone at output_stride 8 with random weights, and its outputs on one input."""
    ref = featzoo.create_model('ese_vovnet19b_slim', features_only=True, output_stride=8, out_indices=(0, 2, 4))
    randomize_state(ref.eval())
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        return ref.state_dict(), x, ref(x)


@pytest.mark.parametrize('feature_cls', ['dict', 'hook', 'getter', 'fx'])
def test_every_declared_wrapper_matches_list(feature_cls, os8_reference):
    state, x, expected = os8_reference
    model = featzoo.create_model('ese_vovnet19b_slim', features_only=True, output_stride=8, out_indices=(0, 2, 4),
                                 feature_cls=feature_cls).eval()
    model.load_state_dict(state)
    assert model.feature_info.reduction() == [2, 8, 8]
    with torch.no_grad():
        out = model(x)
    out = list(out.values()) if isinstance(out, dict) else out
    assert len(out) == 3
    for i, (a, b) in enumerate(zip(out, expected)):
        assert_equal(a, b, f'{feature_cls} level {i}')


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
