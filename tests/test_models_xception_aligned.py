"""Aligned Xception family: every variant against timm, output strides, wrappers, the seed guide's example."""
from __future__ import annotations

import copy
import importlib

import pytest
import torch
from torch import nn

import featzoo
from helpers import assert_equal, build_timm_reference, check_feature_shapes, timm_parity

FAMILY = 'xception_aligned'
NAMES = featzoo.list_models(module=FAMILY)
FAMILY_MODULE = importlib.import_module(f'featzoo.models.{FAMILY}')
INPUT = (1, 3, 64, 64)
# (variant, output_stride) where timm drops a block's projection shortcut because the block's stride was removed;
# featzoo keeps it (at stride 1) so the stride-32 weights still load.
TIMM_DROPS_PROJECTION = [('xception71', 8)]


def _meta_build(name, **kwargs):
    with torch.device('meta'):
        model = FAMILY_MODULE.build(name, **kwargs)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}, model.feature_info


def _timm_keys(name, **kwargs):
    import timm
    with torch.device('meta'):
        return set(timm.create_model(name, **kwargs).state_dict())


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


def test_every_variant_is_listed():
    assert NAMES == sorted(FAMILY_MODULE.VARIANTS)


@pytest.mark.parametrize('name', NAMES)
def test_timm_parity(name):
    timm_parity(name, input_size=INPUT)


@pytest.mark.parametrize('name, output_stride', [('xception41', 16), ('xception41p', 8)])
def test_timm_parity_dilated(name, output_stride):
    timm_parity(name, input_size=INPUT, output_stride=output_stride)


@pytest.mark.slow
@pytest.mark.parametrize('output_stride', [16, 8])
@pytest.mark.parametrize('name', NAMES)
def test_timm_parity_dilated_all(name, output_stride):
    if (name, output_stride) in TIMM_DROPS_PROJECTION:
        parity_with_kept_projections(name, output_stride)
    else:
        timm_parity(name, input_size=INPUT, output_stride=output_stride)


@pytest.mark.parametrize('name, output_stride', TIMM_DROPS_PROJECTION)
def test_dilated_block_keeps_its_projection(name, output_stride):
    parity_with_kept_projections(name, output_stride)


@pytest.mark.parametrize('name', NAMES)
def test_output_stride_keeps_parameters_and_feature_info_matches_timm(name):
    import timm
    ref_shapes, _ = _meta_build(name)
    timm_keys = _timm_keys(name)
    assert set(ref_shapes) == timm_keys
    for stride in (32, 16, 8):
        shapes, info = _meta_build(name, output_stride=stride)
        assert shapes == ref_shapes, f'output_stride={stride} changed the parameters'
        assert (_timm_keys(name, output_stride=stride) != timm_keys) == ((name, stride) in TIMM_DROPS_PROJECTION)
        with torch.device('meta'):
            timm_info = timm.create_model(name, output_stride=stride).feature_info
        assert [dict(num_chs=d['num_chs'], reduction=d['reduction'], module=d['module']) for d in timm_info] == info


@pytest.mark.parametrize('output_stride', [16, 8])
def test_output_stride_feature_shapes(output_stride):
    backbone = featzoo.create_model('xception41', features_only=True, output_stride=output_stride).eval()
    assert backbone.feature_info.reduction() == [2, 4, 8, min(16, output_stride), output_stride]
    check_feature_shapes(backbone, INPUT)
    model = featzoo.create_model('xception41', output_stride=output_stride).eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(*INPUT)).shape[-2:] == (64 // output_stride,) * 2


def test_seed_xception41_299():
    model = featzoo.create_model('xception41').eval()
    x = torch.randn(2, 3, 299, 299)
    with torch.no_grad():
        assert model(x).shape == (2, 1000)
        assert model.forward_features(x).shape == (2, 2048, 10, 10)


@pytest.mark.parametrize('name, output_stride', [('xception41', 32), ('xception41p', 8)])
@pytest.mark.parametrize('feature_cls', FAMILY_MODULE.FEATURE_CLS)
def test_every_declared_wrapper_gives_the_same_levels(name, feature_cls, output_stride):
    x = torch.randn(*INPUT)
    model = featzoo.create_model(name, output_stride=output_stride).eval()
    backbone = featzoo.create_model(name, features_only=True, feature_cls=feature_cls, out_indices=(1, 3),
                                    output_stride=output_stride).eval()
    backbone.load_state_dict(model.state_dict(), strict=False)
    modules = backbone.feature_info.module_name()
    _, expected = _capture(model, modules, x)
    with torch.no_grad():
        got = backbone(x)
    got = list(got.values()) if isinstance(got, dict) else list(got)
    assert len(got) == 2
    for level, ref, module in zip(got, expected, modules):
        assert_equal(level, ref, f'{feature_cls} {module}')


def test_list_and_dict_wrappers_are_refused():
    with pytest.raises(ValueError, match='list'):
        featzoo.create_model('xception41', features_only=True, feature_cls='list')


def test_model_contract():
    model = featzoo.create_model('xception41p').eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        feat = model.forward_features(x)
        assert feat.shape == (1, 2048, 1, 1)
        assert model.forward_head(feat, pre_logits=True).shape == (1, 2048)
        assert model(x).shape == (1, 1000)
    assert model.num_features == model.head_hidden_size == 2048
    model.reset_classifier(10)
    assert model(x).shape == (1, 10) and model.get_classifier().out_features == 10
    model.reset_classifier(0, '')
    assert model(x).shape == (1, 2048, 1, 1)
    model.reset_classifier(5, 'catavgmax')
    assert model(x).shape == (1, 5) and model.head_hidden_size == 4096
    assert model.no_weight_decay() == set()
    with pytest.raises(ValueError, match='global_pool'):
        model.reset_classifier(5, 'mean')


def test_group_matcher_and_drop_path_match_timm():
    import timm
    model = FAMILY_MODULE.build('xception41', drop_path_rate=0.2)
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
