"""DenseNet family: dilated levels are the stride-32 levels densified, blur pooling, errors, group matcher,
checkpointing, torchvision checkpoints, export and the seed guide's example.

What every family shares (timm parity, output strides, levels, wrappers, intermediates, the model contract):
test_models.py."""
from __future__ import annotations

import re

import pytest
import torch

import featzoo
from featzoo.models import densenet
from helpers import assert_equal, check_feature_shapes, randomize_state

# a small DenseNet with the deep stem, blur pooling in every transition and dropout-free dense layers: the code
# paths of densenetblur121d (and more) at a fraction of its cost
TINY_BLUR = dict(growth_rate=8, block_config=(2, 3, 2, 2), stem_type='deep_tiered', aa_layer='blur',
                 aa_stem_only=False)


def _shapes(model: torch.nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _check_densified(expected, got, ref_reductions, reductions, what):
    for i, (e, g, r_ref, r) in enumerate(zip(expected, got, ref_reductions, reductions)):
        step = r_ref // r
        assert g.shape[-1] == e.shape[-1] * step
        assert_equal(g[:, :, ::step, ::step], e, f'{what} level {i}')


@pytest.mark.parametrize('output_stride', [16, 8])
def test_densenet121_dilated_levels_are_the_stride32_levels_densified(output_stride):
    """Shapes follow the reported reductions, and sampling each dilated level every (stride-32 reduction / its
    reduction) pixels gives exactly the stride-32 level: the dilation is the stride-32 network, computed densely."""
    ref = featzoo.create_model('densenet121', features_only=True).eval()
    randomize_state(ref)
    model = featzoo.create_model('densenet121', features_only=True, output_stride=output_stride).eval()
    assert model.feature_info.reduction() == [2, 4, 8, min(16, output_stride), output_stride]
    model.load_state_dict(ref.state_dict())
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ref(x)
    got = check_feature_shapes(model, x)
    _check_densified(expected, got, ref.feature_info.reduction(), model.feature_info.reduction(),
                     f'densenet121 os{output_stride}')


@pytest.mark.parametrize('output_stride', [16, 8])
def test_blur_transitions_dilate_too(output_stride):
    ref = densenet.DenseNet(**TINY_BLUR).eval()
    randomize_state(ref)
    model = densenet.DenseNet(**TINY_BLUR, output_stride=output_stride).eval()
    assert _shapes(model) == _shapes(ref)
    model.load_state_dict(ref.state_dict())
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ref.forward_intermediates(x, intermediates_only=True)
        got = model.forward_intermediates(x, intermediates_only=True)
    reductions = [level['reduction'] for level in model.feature_info]
    assert reductions == [2, 4, 8, min(16, output_stride), output_stride]
    assert [tuple(g.shape[-2:]) for g in got] == [(64 // r, 64 // r) for r in reductions]
    _check_densified(expected, got, [level['reduction'] for level in ref.feature_info], reductions,
                     f'blur os{output_stride}')


def test_invalid_arguments_name_the_value():
    with pytest.raises(ValueError, match=r'output_stride=4.*\(8, 16, 32\)'):
        densenet.SPEC.build('densenet121', output_stride=4)
    with pytest.raises(ValueError, match=r"stem_type='wide' is invalid"):
        densenet.SPEC.build('densenet121', stem_type='wide')
    with pytest.raises(ValueError, match=r"aa_layer='gauss' is invalid"):
        densenet.SPEC.build('densenet121', aa_layer='gauss')
    with pytest.raises(ValueError, match=r'drop_path_rate=0.1'):
        densenet.SPEC.build('densenet121', drop_path_rate=0.1)
    with pytest.raises(ValueError, match=r'block_config'):
        densenet.SPEC.build('densenet121', block_config=())
    with pytest.raises(KeyError, match=r"densenet999.*densenet121"):
        densenet.SPEC.build('densenet999')
    with pytest.raises(ValueError, match='output_stride=12'):
        featzoo.create_model('densenet121', output_stride=12)


def test_seed_densenet121():
    m = featzoo.create_model('densenet121').eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert m(x).shape == (2, 1000)
        m.reset_classifier(0, '')
        assert m(x).shape == (2, 1024, 7, 7)


def test_group_matcher_groups_like_timm():
    from timm.models import create_model
    from timm.models._manipulate import group_with_matcher
    ref = create_model('densenetblur121d')
    model = densenet.SPEC.build('densenetblur121d')
    for coarse in (False, True):
        ours = group_with_matcher(model.named_parameters(), model.group_matcher(coarse), return_values=False)
        theirs = group_with_matcher(ref.named_parameters(), ref.group_matcher(coarse), return_values=False)
        assert ours == theirs


def test_grad_checkpointing_gives_the_same_gradients():
    def grads(enable: bool):
        torch.manual_seed(0)
        m = densenet.DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), num_classes=4)
        m.set_grad_checkpointing(enable)
        m(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))).square().sum().backward()
        return [p.grad for p in m.parameters()]
    for a, b in zip(grads(False), grads(True)):
        assert_equal(a, b, 'grad')


def test_blur_filter_rebuilt_after_meta_build():
    with torch.device('meta'):
        model = densenet.SPEC.build('densenetblur121d')
    model.to_empty(device='cpu')
    blur = model.features.pool0[1]
    blur.init_non_persistent_buffers()
    assert 'features.pool0.1.filt' not in model.state_dict()
    assert_equal(blur.filt[5, 0], torch.tensor([[1., 2., 1.], [2., 4., 2.], [1., 2., 1.]]) / 16, 'blur filter')


def test_loads_torchvision_weights_current_and_legacy_keys():
    from torchvision.models.densenet import DenseNet as TorchvisionDenseNet
    ref = TorchvisionDenseNet(growth_rate=8, block_config=(2, 3, 2, 2), num_init_features=16).eval()
    randomize_state(ref)
    state = ref.state_dict()
    legacy = {re.sub(r'(denselayer\d+\.(?:norm|conv))([12])\.', r'\1.\2.', k): v for k, v in state.items()}
    assert legacy.keys() != state.keys()
    assert densenet.checkpoint_filter_fn(legacy).keys() == state.keys()
    model = densenet.DenseNet(growth_rate=8, block_config=(2, 3, 2, 2)).eval()
    model.load_state_dict(densenet.checkpoint_filter_fn(legacy))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert_equal(model(x), ref(x), 'torchvision logits')


def test_exportable_at_output_stride_8():
    model = densenet.DenseNet(**TINY_BLUR, output_stride=8).eval()
    x = torch.randn(1, 3, 64, 64)
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        assert_equal(program.module()(x), model(x), 'torch.export')
