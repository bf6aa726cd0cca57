"""ResNeSt family: every variant against timm; dilated output strides; split attention; the seed example."""
from __future__ import annotations

import pytest
import torch

import featzoo
from featzoo.layers.split_attn import SplitAttn
from featzoo.models import resnest
from helpers import assert_equal, check_feature_shapes, randomize_state, timm_parity

FAMILY = 'resnest'
NAMES = featzoo.list_models(module=FAMILY)
# radix 2 with the avd pool after the split conv (resnest14d), radix 4 x cardinality 2 with the pool before it,
# radix 1 (sigmoid gate) x cardinality 4: every split-attention and avd code path.
DILATED = ['resnest14d', 'resnest50d_4s2x40d', 'resnest50d_1s4x24d']
# A resnest14d-sized trunk with the radix-1, cardinality-4, avd-first block, for cheap checks of that path.
SMALL_RADIX1 = dict(cardinality=4, base_width=24, block_args=dict(radix=1, avd=True, avd_first=True))


def _shapes(model: torch.nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_every_variant_is_listed():
    assert sorted(NAMES) == sorted(resnest.VARIANTS)
    assert len(NAMES) == 8


@pytest.mark.parametrize('name', NAMES)
def test_timm_parity(name):
    model = timm_parity(name, input_size=(1, 3, 64, 64))
    assert [f['module'] for f in model.feature_info] == ['act1', 'layer1', 'layer2', 'layer3', 'layer4']


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
        ref = _shapes(resnest.build(name))
        for stride in (16, 8):
            assert _shapes(resnest.build(name, output_stride=stride)) == ref, f'{name} output_stride={stride}'
        backbones = {s: featzoo.create_model(name, features_only=True, output_stride=s) for s in (16, 8)}
    for stride, backbone in backbones.items():
        assert backbone.feature_info.reduction() == expected[stride]
        check_feature_shapes(backbone.to_empty(device='cpu').eval(), torch.zeros(1, 3, 64, 64))


def test_seed_resnest26d_features():
    m = featzoo.create_model('resnest26d', features_only=True).eval()
    with torch.no_grad():
        out = m(torch.randn(2, 3, 224, 224))
    assert [tuple(o.shape) for o in out] == [(2, 64, 112, 112), (2, 256, 56, 56), (2, 512, 28, 28),
                                             (2, 1024, 14, 14), (2, 2048, 7, 7)]


@pytest.mark.parametrize('radix,cardinality', [(1, 1), (1, 4), (2, 1), (2, 2), (4, 2)])
def test_split_attention_matches_timm(radix, cardinality):
    from timm.layers import SplitAttn as TimmSplitAttn
    ref = TimmSplitAttn(32, 32, 3, stride=2, padding=2, dilation=2, groups=cardinality, radix=radix,
                        norm_layer=torch.nn.BatchNorm2d).eval()
    randomize_state(ref)
    ours = SplitAttn(32, 32, 3, stride=2, padding=2, dilation=2, groups=cardinality, radix=radix).eval()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 32, 9, 9)
    with torch.no_grad():
        assert_equal(ours(x), ref(x), f'radix={radix} cardinality={cardinality}')


def test_model_contract():
    m = featzoo.create_model('resnest14d', num_classes=0).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        f = m.forward_features(x)
        assert f.shape == (1, 2048, 2, 2)
        assert m.forward_head(f, pre_logits=True).shape == (1, 2048)
        assert m.num_features == m.head_hidden_size == 2048 and m.num_classes == 0
        m.reset_classifier(10)
        assert m(x).shape == (1, 10) and m.get_classifier().out_features == 10
        m.reset_classifier(0, '')
        assert m(x).shape == (1, 2048, 2, 2)
        m.reset_classifier(5, 'catavgmax')
        assert m(x).shape == (1, 5) and m.head_hidden_size == 4096
    assert m.no_weight_decay() == set()


def test_group_matcher_groups_like_timm():
    from timm.models import create_model
    from timm.models._manipulate import group_with_matcher
    ref = create_model('resnest14d')
    model = resnest.build('resnest14d')
    for coarse in (False, True):
        ours = group_with_matcher(model.named_parameters(), model.group_matcher(coarse), return_values=False)
        theirs = group_with_matcher(ref.named_parameters(), ref.group_matcher(coarse), return_values=False)
        assert ours == theirs


@pytest.mark.parametrize('extra', [{}, SMALL_RADIX1], ids=['radix2', 'radix1'])
def test_grad_checkpointing_gives_the_same_gradients(extra):
    model = resnest.build('resnest14d', num_classes=4, **extra)
    randomize_state(model)
    model.train()
    x = torch.randn(2, 3, 64, 64)
    model(x).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for n, p in model.named_parameters():
        assert_equal(p.grad, grads[n], n)


@pytest.mark.parametrize('feature_cls', ['dict', 'hook', 'fx'])
def test_every_declared_wrapper_matches_the_default(feature_cls):
    assert feature_cls in resnest.FEATURE_CLS
    ref = featzoo.create_model('resnest14d', features_only=True, out_indices=(0, 2, 4), output_stride=16).eval()
    randomize_state(ref)
    model = featzoo.create_model('resnest14d', features_only=True, out_indices=(0, 2, 4), output_stride=16,
                                 feature_cls=feature_cls).eval()
    model.load_state_dict(ref.state_dict(), strict=False)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected, got = ref(x), model(x)
    got = list(got.values()) if isinstance(got, dict) else list(got)
    assert len(got) == len(expected) == 3
    for a, b in zip(got, expected):
        assert_equal(a, b, feature_cls)


@pytest.mark.parametrize('extra', [{}, SMALL_RADIX1], ids=['radix2', 'radix1'])
def test_fx_trace_of_the_whole_model_matches_eager(extra):
    from featzoo.features.fx import create_feature_extractor, get_graph_node_names
    model = resnest.build('resnest14d', output_stride=8, **extra).eval()
    randomize_state(model)
    _, nodes = get_graph_node_names(model)
    # The last node is the classifier output; 'layer3' (a module, not a node) selects that module's output.
    traced = create_feature_extractor(model, return_nodes={nodes[-1]: 'logits', 'layer3': 'mid'})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = traced(x)
        assert_equal(out['logits'], model(x), 'fx logits')
        assert out['mid'].shape[-1] == 8  # output stride 8 on a 64 px input


def test_drop_path_only_changes_training_outputs():
    ref = resnest.build('resnest14d').eval()
    randomize_state(ref)
    model = resnest.build('resnest14d', drop_path_rate=0.9)
    model.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert_equal(model.eval()(x), ref(x), 'eval with drop_path_rate')
        torch.manual_seed(0)
        # Stochastic depth on the residual branch: some sample's output differs from the deterministic one.
        assert not torch.allclose(model.train()(x), ref.train()(x))


def test_invalid_arguments_name_the_value():
    with pytest.raises(ValueError, match=r'output_stride=4.*\(8, 16, 32\)'):
        resnest.build('resnest14d', output_stride=4)
    with pytest.raises(KeyError, match=r"resnest999.*resnest14d"):
        resnest.build('resnest999')
    with pytest.raises(ValueError, match=r'radix.*-1'):
        resnest.build('resnest14d', block_args=dict(radix=-1, avd=True))
    with pytest.raises(ValueError, match=r'reduce_first.*2'):
        resnest.build('resnest14d', block_reduce_first=2)
    with pytest.raises(ValueError, match='output_stride'):
        featzoo.create_model('resnest14d', output_stride=12)
