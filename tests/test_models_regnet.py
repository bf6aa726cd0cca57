"""RegNet family: every variant against timm; dilated output strides; the model contract; the seed example."""
from __future__ import annotations

import pytest
import torch

import featzoo
from featzoo.models import regnet
from helpers import assert_equal, check_feature_shapes, randomize_state, timm_parity

FAMILY = 'regnet'
NAMES = featzoo.list_models(module=FAMILY)
# X (no squeeze-excite) and Y (with it); regnety_004's first stage has a single block, so at output stride 8 its
# dilated stages start from a dilation-2 first block (the case RegStage treats specially).
DILATED = ['regnetx_002', 'regnety_004']


def _shapes(model: torch.nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_every_variant_is_listed():
    assert sorted(NAMES) == sorted(regnet.VARIANTS)
    assert len(NAMES) == 24


@pytest.mark.parametrize('name', NAMES)
def test_timm_parity(name):
    model = timm_parity(name, input_size=(1, 3, 64, 64))
    assert [f['module'] for f in model.feature_info] == ['stem', 's1', 's2', 's3', 's4']


@pytest.mark.parametrize('output_stride', [16, 8])
@pytest.mark.parametrize('name', DILATED)
def test_timm_parity_dilated(name, output_stride):
    timm_parity(name, input_size=(1, 3, 64, 64), output_stride=output_stride)


@pytest.mark.slow
@pytest.mark.parametrize('output_stride', [16, 8])
@pytest.mark.parametrize('name', NAMES)
def test_timm_parity_dilated_all(name, output_stride):
    timm_parity(name, input_size=(1, 3, 64, 64), output_stride=output_stride)


@pytest.mark.parametrize('name', NAMES)
def test_output_stride_keeps_parameters_and_shapes(name):
    """Dilated models hold exactly the stride-32 parameters, and their levels have the shapes their reductions
    imply. Built on the meta device and given uninitialized storage: shapes need no initialization (the slow part
    for the big variants). Stride 32 is checked by the parity test."""
    expected = {16: [2, 4, 8, 16, 16], 8: [2, 4, 8, 8, 8]}
    with torch.device('meta'):
        ref = _shapes(regnet.build(name))
        for stride in (16, 8):
            assert _shapes(regnet.build(name, output_stride=stride)) == ref, f'{name} output_stride={stride}'
        backbones = {s: featzoo.create_model(name, features_only=True, output_stride=s) for s in (16, 8)}
    for stride, backbone in backbones.items():
        assert backbone.feature_info.reduction() == expected[stride]
        check_feature_shapes(backbone.to_empty(device='cpu').eval(), torch.zeros(1, 3, 64, 64))


def test_stage_widths_match_timm():
    from timm.models.regnet import RegNet as TimmRegNet, model_cfgs
    for name, row in regnet.VARIANTS.items():
        args, _ = TimmRegNet._get_stage_args(None, model_cfgs[name])
        ours = regnet.regnet_stages(**{k: v for k, v in row.items() if k != 'se_ratio'})
        assert ours == [(a['out_chs'], a['depth'], a['group_size']) for a in args], name


def test_seed_regnety_032_features():
    m = featzoo.create_model('regnety_032', features_only=True).eval()
    assert m.feature_info.channels() == [32, 72, 216, 576, 1512]
    with torch.no_grad():
        out = m(torch.randn(2, 3, 224, 224))
    assert [tuple(o.shape) for o in out] == [(2, 32, 112, 112), (2, 72, 56, 56), (2, 216, 28, 28),
                                             (2, 576, 14, 14), (2, 1512, 7, 7)]


def test_model_contract():
    m = featzoo.create_model('regnety_002', num_classes=0).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        f = m.forward_features(x)
        assert f.shape == (1, 368, 2, 2)
        assert m.forward_head(f, pre_logits=True).shape == (1, 368)
        assert m.num_features == m.head_hidden_size == 368 and m.num_classes == 0
        m.reset_classifier(10)
        assert m(x).shape == (1, 10) and m.get_classifier().out_features == 10 and m.num_classes == 10
        m.reset_classifier(0, '')
        assert m(x).shape == (1, 368, 2, 2)
        m.reset_classifier(5, 'catavgmax')
        assert m(x).shape == (1, 5) and m.head_hidden_size == 736
    assert m.no_weight_decay() == set()
    with pytest.raises(ValueError, match="'bogus'"):
        m.reset_classifier(3, 'bogus')
    with pytest.raises(ValueError, match='num_classes'):
        m.reset_classifier(-1)


def test_group_matcher_groups_like_timm():
    from timm.models import create_model
    from timm.models._manipulate import group_with_matcher
    ref = create_model('regnety_002')
    model = regnet.build('regnety_002')
    for coarse in (False, True):
        ours = group_with_matcher(model.named_parameters(), model.group_matcher(coarse), return_values=False)
        theirs = group_with_matcher(ref.named_parameters(), ref.group_matcher(coarse), return_values=False)
        assert ours == theirs


def test_grad_checkpointing_gives_the_same_values_and_gradients():
    model = regnet.build('regnety_002', num_classes=4)
    randomize_state(model)
    model.train()
    x = torch.randn(2, 3, 64, 64)
    model(x).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    assert model.s3.grad_checkpointing
    torch.manual_seed(0)
    out = model(x)
    out.sum().backward()
    for n, p in model.named_parameters():
        assert_equal(p.grad, grads[n], n)


def test_forward_intermediates_and_prune_match_timm():
    import timm
    ref = timm.create_model('regnety_002').eval()
    randomize_state(ref)
    model = regnet.build('regnety_002').eval()
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
        early = model.forward_intermediates(x, indices=(1,), stop_early=True, intermediates_only=True)
        assert_equal(early[0], ref.forward_intermediates(x, indices=(1,), intermediates_only=True)[0], 'stop_early')
    with pytest.raises(ValueError, match='NHWC'):
        model.forward_intermediates(x, output_fmt='NHWC')
    assert model.prune_intermediate_layers((0, 2)) == ref.prune_intermediate_layers((0, 2)) == [0, 2]
    assert list(model.state_dict()) == list(ref.state_dict())
    assert model.num_features == ref.num_features == 56
    with torch.no_grad():
        assert_equal(model(x), ref(x), 'pruned forward')
    model.reset_classifier(7, 'avg')
    assert model(x).shape == (1, 7)


@pytest.mark.parametrize('feature_cls', ['dict', 'hook', 'fx', 'getter'])
def test_every_declared_wrapper_matches_the_default(feature_cls):
    assert feature_cls in regnet.FEATURE_CLS
    ref = featzoo.create_model('regnety_002', features_only=True, out_indices=(1, 3, 4)).eval()
    randomize_state(ref)
    model = featzoo.create_model('regnety_002', features_only=True, out_indices=(1, 3, 4),
                                 feature_cls=feature_cls).eval()
    model.load_state_dict(ref.state_dict(), strict=False)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected, got = ref(x), model(x)
    got = list(got.values()) if isinstance(got, dict) else list(got)
    assert len(got) == len(expected) == 3
    for a, b in zip(got, expected):
        assert_equal(a, b, feature_cls)


def test_fx_trace_of_the_whole_model_matches_eager():
    from featzoo.features.fx import create_feature_extractor, get_graph_node_names
    model = regnet.build('regnety_002', output_stride=8).eval()
    randomize_state(model)
    _, nodes = get_graph_node_names(model)
    # The last node is the classifier output; 's3' (a module, not a node) selects that module's output.
    traced = create_feature_extractor(model, return_nodes={nodes[-1]: 'logits', 's3': 'mid'})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = traced(x)
        assert_equal(out['logits'], model(x), 'fx logits')
        assert out['mid'].shape[-1] == 8  # output stride 8 on a 64 px input


def test_invalid_arguments_name_the_value():
    with pytest.raises(ValueError, match=r'output_stride 4.*\(8, 16, 32\)'):
        regnet.build('regnetx_002', output_stride=4)
    with pytest.raises(KeyError, match=r"regnetx_999.*regnetx_002"):
        regnet.build('regnetx_999')
    with pytest.raises(ValueError, match=r'wm=0.5'):
        regnet.build('regnetx_002', wm=0.5)
    with pytest.raises(ValueError, match=r'w0=20'):
        regnet.build('regnetx_002', w0=20)
    with pytest.raises(ValueError, match=r'3 stages'):
        regnet.build('regnetx_002', depth=3)
    with pytest.raises(ValueError, match=r'se_ratio'):
        regnet.build('regnety_002', se_ratio=2.0)
    with pytest.raises(ValueError, match=r'in_chans'):
        regnet.build('regnety_002', in_chans=0)
    with pytest.raises(ValueError, match=r'drop_path_rate'):
        regnet.build('regnety_002', drop_path_rate=1.5)
    with pytest.raises(TypeError, match='bogus'):
        regnet.build('regnety_002', bogus=1)
    with pytest.raises(ValueError, match='output_stride'):
        featzoo.create_model('regnetx_002', output_stride=12)


def test_in_chans_and_drop_path_build():
    m = featzoo.create_model('regnetx_002', in_chans=1, num_classes=3, drop_path_rate=0.1, drop_rate=0.2).eval()
    with torch.no_grad():
        assert m(torch.randn(2, 1, 64, 64)).shape == (2, 3)
    rates = [getattr(b.drop_path, 'drop_prob', 0.0) for s in (m.s1, m.s2, m.s3, m.s4) for b in s.children()]
    assert rates[0] == 0.0 and abs(rates[-1] - 0.1) < 1e-9 and rates == sorted(rates)


@pytest.mark.parametrize('name,tv_name', [('regnety_004', 'regnet_y_400mf'), ('regnetx_008', 'regnet_x_800mf')])
def test_torchvision_checkpoints_load_and_match(name, tv_name, tmp_path):
    import torchvision
    from safetensors.torch import save_file
    ref = getattr(torchvision.models, tv_name)().eval()
    randomize_state(ref)
    path = tmp_path / 'tv.safetensors'
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    model = featzoo.create_model(name, checkpoint_path=str(path)).eval()
    backbone = featzoo.create_model(name, checkpoint_path=str(path), features_only=True, out_indices=(4,)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert_equal(model(x), ref(x), f'{name} logits from {tv_name}')
        assert_equal(backbone(x)[0], ref.trunk_output(ref.stem(x)), f'{name} last level from {tv_name}')
