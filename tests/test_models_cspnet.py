"""CSPNet family: stage settings given once or per stage, errors naming the bad value, timm's parameter groups
(transitions join their stage's last block) and gradient checkpointing.

What every family shares (timm parity at every output stride timm takes, levels, wrappers, intermediates, the model
contract): test_parity_timm.py, test_models.py."""
from __future__ import annotations

import pytest
import torch

import featzoo
from featzoo.models import cspnet
from helpers import assert_equal


def test_stage_settings_repeat_their_last_entry():
    model = cspnet.SPEC.build('cspdarknet53')  # expand_ratio=(2., 1.): the first stage expands twice, the rest once
    assert [stage.expand_chs for stage in model.stages] == [128, 128, 256, 512, 1024]
    assert [type(stage).__name__ for stage in model.stages] == ['CrossStage'] * 5
    assert [stage.blocks[0].conv1.out_channels for stage in model.stages] == [32, 64, 128, 256, 512]


def test_invalid_arguments_name_the_value():
    build = cspnet.SPEC.build
    with pytest.raises(ValueError, match=r"stage_type='cs2' is invalid; valid: 'csp', 'cs3', 'dark'"):
        build('darknet17', stage_type='cs2')
    with pytest.raises(ValueError, match=r"block_type='mb' is invalid; valid: 'bottle', 'dark', 'edge'"):
        build('darknet17', block_type='mb')
    with pytest.raises(ValueError, match=r'bottle_ratio has 6 entries for 5 stages'):
        build('darknet17', bottle_ratio=(0.5,) * 6)
    with pytest.raises(ValueError, match=r'channels must have 5 entries'):
        build('darknet17', channels=(64, 128))
    with pytest.raises(ValueError, match=r"stem_pool='max' needs stem_stride=4"):
        build('darknet17', stem_pool='max')
    with pytest.raises(ValueError, match=r"unknown attention 'cbam'"):
        build('darknet17', attn_layer='cbam')
    with pytest.raises(ValueError, match=r'each strides entry=3 is invalid'):
        build('darknet17', strides=3)
    with pytest.raises(ValueError, match=r'output_stride=4 .*valid: \(8, 16, 32\)'):
        featzoo.create_model('darknet17', output_stride=4)


@pytest.mark.parametrize('name', ['cspresnet50', 'cs3darknet_s'])
def test_group_matcher_like_timm(name):
    import timm
    from timm.models._manipulate import group_with_matcher
    ref = timm.create_model(name)
    model = cspnet.SPEC.build(name)
    for coarse in (False, True):
        ours = group_with_matcher(model.named_parameters(), model.group_matcher(coarse), return_values=False)
        theirs = group_with_matcher(ref.named_parameters(), ref.group_matcher(coarse), return_values=False)
        assert ours == theirs, (name, coarse)


def test_grad_checkpointing_gives_the_same_gradients():
    def grads(enable: bool):
        torch.manual_seed(0)
        model = cspnet.CspNet(stem_chs=(8, 16), depths=(1, 2), channels=(16, 32), block_ratio=0.5,
                              stage_type=('csp', 'cs3'), block_type=('bottle', 'edge'), attn_layer='se',
                              num_classes=4)
        model.set_grad_checkpointing(enable)
        model(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))).square().sum().backward()
        return [p.grad for p in model.parameters()]
    for a, b in zip(grads(False), grads(True)):
        assert_equal(a, b, 'grad')
