"""ResNeSt family: split attention, group matcher, checkpointing, FX, drop path, errors and the seed example.

What every family shares (timm parity, output strides, levels, wrappers, intermediates, the model contract):
test_models.py."""
from __future__ import annotations

import pytest
import torch

import featzoo
from featzoo.layers.split_attn import SplitAttn
from featzoo.models import resnest
from helpers import assert_equal, randomize_state

# A resnest14d-sized trunk with the radix-1, cardinality-4, avd-first block, for cheap checks of that path.
SMALL_RADIX1 = dict(cardinality=4, base_width=24, block_args=dict(radix=1, avd=True, avd_first=True))


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


def test_group_matcher_groups_like_timm():
    from timm.models import create_model
    from timm.models._manipulate import group_with_matcher
    ref = create_model('resnest14d')
    model = resnest.SPEC.build('resnest14d')
    for coarse in (False, True):
        ours = group_with_matcher(model.named_parameters(), model.group_matcher(coarse), return_values=False)
        theirs = group_with_matcher(ref.named_parameters(), ref.group_matcher(coarse), return_values=False)
        assert ours == theirs


@pytest.mark.parametrize('extra', [{}, SMALL_RADIX1], ids=['radix2', 'radix1'])
def test_grad_checkpointing_gives_the_same_gradients(extra):
    model = resnest.SPEC.build('resnest14d', num_classes=4, **extra)
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


@pytest.mark.parametrize('extra', [{}, SMALL_RADIX1], ids=['radix2', 'radix1'])
def test_fx_trace_of_the_whole_model_matches_eager(extra):
    from featzoo.features.fx import create_feature_extractor, get_graph_node_names
    model = resnest.SPEC.build('resnest14d', output_stride=8, **extra).eval()
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
    ref = resnest.SPEC.build('resnest14d').eval()
    randomize_state(ref)
    model = resnest.SPEC.build('resnest14d', drop_path_rate=0.9)
    model.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert_equal(model.eval()(x), ref(x), 'eval with drop_path_rate')
        torch.manual_seed(0)
        # Stochastic depth on the residual branch: some sample's output differs from the deterministic one.
        assert not torch.allclose(model.train()(x), ref.train()(x))


def test_invalid_arguments_name_the_value():
    with pytest.raises(ValueError, match=r'output_stride=4.*\(8, 16, 32\)'):
        resnest.SPEC.build('resnest14d', output_stride=4)
    with pytest.raises(KeyError, match=r"resnest999.*resnest14d"):
        resnest.SPEC.build('resnest999')
    with pytest.raises(ValueError, match=r'radix.*-1'):
        resnest.SPEC.build('resnest14d', block_args=dict(radix=-1, avd=True))
    with pytest.raises(ValueError, match=r'reduce_first.*2'):
        resnest.SPEC.build('resnest14d', block_reduce_first=2)
    with pytest.raises(ValueError, match='output_stride'):
        featzoo.create_model('resnest14d', output_stride=12)
