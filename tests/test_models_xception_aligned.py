"""Aligned Xception family: dilated blocks keep the projections timm drops, the refused wrappers, group matcher and
drop path, checkpointing, errors and the seed guide's example.

What every family shares (timm parity, output strides, levels, wrappers, intermediates, the model contract):
test_models.py."""
from __future__ import annotations

import copy
import importlib

import pytest
import torch
from torch import nn

import featzoo
from helpers import assert_equal, build_timm_reference

FAMILY = 'xception_aligned'
FAMILY_MODULE = importlib.import_module(f'featzoo.models.{FAMILY}')
INPUT = (1, 3, 64, 64)
# (variant, output_stride) where timm drops a block's projection shortcut because the block's stride was removed;
# featzoo keeps it (at stride 1) so the stride-32 weights still load.
TIMM_DROPS_PROJECTION = [('xception71', 8)]


def _capture(model, modules, x):
    captured = {}
    hooks = [model.get_submodule(m).register_forward_hook(
        lambda mod, args, out, m=m: captured.__setitem__(m, out.clone())) for m in modules]
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        for h in hooks:
            h.remove()
    return logits, [captured[m] for m in modules]


def _has_params(module):
    return module is not None and any(True for _ in module.parameters())


def parity_with_kept_projections(name, output_stride):
    """timm's dilated model with each projection it dropped put back (stride 1), against featzoo's."""
    import timm
    ref32 = build_timm_reference(name)
    ref = timm.create_model(name, output_stride=output_stride)
    restored = 0
    for block, block32 in zip(ref.blocks, ref32.blocks):
        if _has_params(block32.shortcut) and not _has_params(block.shortcut):
            block.shortcut = copy.deepcopy(block32.shortcut)
            for conv in block.shortcut.modules():
                if isinstance(conv, nn.Conv2d):
                    conv.stride = (1, 1)
            restored += 1
    assert restored > 0
    ref.load_state_dict(ref32.state_dict())
    ref.eval()
    model = featzoo.create_model(name, output_stride=output_stride).eval()
    model.load_state_dict(ref32.state_dict())
    backbone = featzoo.create_model(name, output_stride=output_stride, features_only=True).eval()
    backbone.load_state_dict(ref32.state_dict(), strict=False)
    x = torch.randn(*INPUT)
    modules = [d['module'] for d in model.feature_info]
    ref_logits, ref_feats = _capture(ref, modules, x)
    with torch.no_grad():
        assert_equal(model(x), ref_logits, 'logits')
        assert_equal(model.forward_features(x), ref.forward_features(x), 'forward_features')
        feats = backbone(x)
    assert len(feats) == len(ref_feats)
    for module, a, b in zip(modules, feats, ref_feats):
        assert_equal(a, b, module)


@pytest.mark.parametrize('name, output_stride', TIMM_DROPS_PROJECTION)
def test_dilated_block_keeps_its_projection(name, output_stride):
    parity_with_kept_projections(name, output_stride)


def test_seed_xception41_299():
    model = featzoo.create_model('xception41').eval()
    x = torch.randn(2, 3, 299, 299)
    with torch.no_grad():
        assert model(x).shape == (2, 1000)
        assert model.forward_features(x).shape == (2, 2048, 10, 10)


def test_list_and_dict_wrappers_are_refused():
    with pytest.raises(ValueError, match='list'):
        featzoo.create_model('xception41', features_only=True, feature_cls='list')


def test_group_matcher_and_drop_path_match_timm():
    import timm
    model = FAMILY_MODULE.SPEC.build('xception41', drop_path_rate=0.2)
    with torch.device('meta'):
        ref = timm.create_model('xception41', drop_path_rate=0.2)
    for coarse in (False, True):
        assert model.group_matcher(coarse) == ref.group_matcher(coarse)
    probs = [m.drop_prob for m in model.modules() if type(m).__name__ == 'DropPath']
    ref_probs = [m.drop_prob for m in ref.modules() if type(m).__name__ == 'DropPath']
    assert probs == pytest.approx(ref_probs) and len(probs) == 12


def test_grad_checkpointing_keeps_outputs_and_gradients():
    torch.manual_seed(0)
    # The checkpointing mechanism does not depend on width, so a narrow entry flow keeps this cheap.
    model = FAMILY_MODULE.XceptionAligned(entry_flow=((16, 2), (32, 2), (64, 2)), middle_depth=1, preact=True,
                                          num_classes=4).eval()
    x = torch.randn(1, 3, 32, 32)
    expected = model(x)
    expected.sum().backward()
    grad = model.stem[0].conv.weight.grad.clone()
    model.zero_grad()
    model.set_grad_checkpointing(True)
    out = model(x)
    out.sum().backward()
    assert_equal(out, expected, 'checkpointed forward')
    assert_equal(model.stem[0].conv.weight.grad, grad, 'checkpointed gradient')


@pytest.mark.parametrize('kwargs, error, words', [
    (dict(output_stride=64), ValueError, 'output_stride'),
    (dict(global_pool='mean'), ValueError, 'mean'),
    (dict(entry_flow=((128, 3),)), ValueError, 'entry_flow'),
    (dict(drop_rate=-0.1), ValueError, 'drop_rate'),
    (dict(dims=(1, 2)), TypeError, 'dims'),
])
def test_bad_arguments(kwargs, error, words):
    with pytest.raises(error, match=words):
        featzoo.create_model('xception41', **kwargs)
