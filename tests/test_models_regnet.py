"""RegNet family: stage widths, group matcher, checkpointing, FX, errors, torchvision checkpoints and the seed
example.

What every family shares (timm parity, output strides, levels, wrappers, intermediates, the model contract):
test_models.py."""
from __future__ import annotations

import pytest
import torch

import featzoo
from featzoo.models import regnet
from helpers import assert_equal, randomize_state


def test_stage_widths_match_timm():
    from timm.models.regnet import RegNet as TimmRegNet, model_cfgs
    for name, row in regnet.VARIANTS.items():
        args, _ = TimmRegNet._get_stage_args(None, model_cfgs[name])
        stage_keys = ('w0', 'wa', 'wm', 'depth', 'group_size', 'bottle_ratio', 'group_min_ratio')
        ours = regnet.regnet_stages(**{k: v for k, v in row.items() if k in stage_keys})
        assert ours == [(a['out_chs'], a['depth'], a['group_size']) for a in args], name


def test_seed_regnety_032_features():
    m = featzoo.create_model('regnety_032', features_only=True).eval()
    assert m.feature_info.channels() == [32, 72, 216, 576, 1512]
    with torch.no_grad():
        out = m(torch.randn(2, 3, 224, 224))
    assert [tuple(o.shape) for o in out] == [(2, 32, 112, 112), (2, 72, 56, 56), (2, 216, 28, 28),
                                             (2, 576, 14, 14), (2, 1512, 7, 7)]


def test_group_matcher_groups_like_timm():
    from timm.models import create_model
    from timm.models._manipulate import group_with_matcher
    ref = create_model('regnety_002')
    model = regnet.SPEC.build('regnety_002')
    for coarse in (False, True):
        ours = group_with_matcher(model.named_parameters(), model.group_matcher(coarse), return_values=False)
        theirs = group_with_matcher(ref.named_parameters(), ref.group_matcher(coarse), return_values=False)
        assert ours == theirs


def test_grad_checkpointing_gives_the_same_values_and_gradients():
    model = regnet.SPEC.build('regnety_002', num_classes=4)
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


def test_fx_trace_of_the_whole_model_matches_eager():
    from featzoo.features.fx import create_feature_extractor, get_graph_node_names
    model = regnet.SPEC.build('regnety_002', output_stride=8).eval()
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
    with pytest.raises(ValueError, match=r'output_stride=4.*\(8, 16, 32\)'):
        regnet.SPEC.build('regnetx_002', output_stride=4)
    with pytest.raises(KeyError, match=r"regnetx_999.*regnetx_002"):
        regnet.SPEC.build('regnetx_999')
    with pytest.raises(ValueError, match=r'wm=0.5'):
        regnet.SPEC.build('regnetx_002', wm=0.5)
    with pytest.raises(ValueError, match=r'w0=20'):
        regnet.SPEC.build('regnetx_002', w0=20)
    with pytest.raises(ValueError, match=r'3 stages'):
        regnet.SPEC.build('regnetx_002', depth=3)
    with pytest.raises(ValueError, match=r'se_ratio'):
        regnet.SPEC.build('regnety_002', se_ratio=2.0)
    with pytest.raises(ValueError, match=r'in_chans'):
        regnet.SPEC.build('regnety_002', in_chans=0)
    with pytest.raises(ValueError, match=r'drop_path_rate'):
        regnet.SPEC.build('regnety_002', drop_path_rate=1.5)
    with pytest.raises(TypeError, match='bogus'):
        regnet.SPEC.build('regnety_002', bogus=1)
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


# One architecture per configuration of the rows added for timm's full regnet module (the smallest of each), at the
# output strides that exercise what differs: torchvision's width rounding, group norm, pre-activation with both
# shortcut kinds (the avg-pool one dilated), RegNet-Z's inverted bottleneck without residual on projection blocks.
CONFIGURATIONS = [('regnetx_004_tv', 32), ('regnety_040_sgn', 8), ('regnetv_040', 32), ('regnetv_064', 8),
                  ('regnetz_005', 32), ('regnetz_005', 8)]


@pytest.mark.parametrize('name,output_stride', CONFIGURATIONS)
def test_configuration_matches_timm(name, output_stride):
    from helpers import timm_parity
    timm_parity(name, input_size=(1, 3, 64, 64), output_stride=output_stride)


def test_bad_downsample_is_named():
    with pytest.raises(ValueError, match='downsample'):
        featzoo.create_model('regnetz_005', downsample='max')


@pytest.mark.parametrize('name', ['regnetv_040', 'regnetz_005'])
def test_reset_classifier_of_new_layouts(name):
    # pre-activated models have a bare convolution as their stem; RegNet-Z widens before the head
    model = featzoo.create_model(name, num_classes=3)
    model.reset_classifier(0, '')
    assert model(torch.ones(1, 3, 64, 64)).shape[1:] == (model.num_features, 2, 2)
    model.reset_classifier(5, 'avg')
    assert model(torch.ones(1, 3, 64, 64)).shape == (1, 5)


@pytest.mark.slow
@pytest.mark.parametrize('name', ['regnety_1280', 'regnety_2560'])
def test_biggest_regnets_on_one_block_per_stage(name):
    # Over 1.5 GB of float32 weights, and a shallower RegNet cannot be asked for (its depth generates the widths):
    # both models are built whole on the meta device, then cut to the first block of every stage, the same way.
    import timm

    def first_blocks_only(model):
        for stage_name in ('s1', 's2', 's3', 's4'):
            stage = getattr(model, stage_name)
            for block_name in [n for n, _ in stage.named_children()][1:]:
                delattr(stage, block_name)
        return model

    with torch.device('meta'):
        ref = first_blocks_only(timm.create_model(name))
        model = first_blocks_only(featzoo.create_model(name))
    ref = ref.to_empty(device='cpu').eval()
    randomize_state(ref)
    model = model.to_empty(device='cpu').eval()
    model.load_state_dict(ref.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert_equal(model(x), ref(x), f'{name} logits, one block per stage')
