"""HRNet: what only this family does.

- the raw branch maps (``feature_location=''``) and the widened ones (default) equal what timm's HRNet feature class
  returns on the same weights, with its state_dict keys;
- forward_intermediates, prune_intermediate_layers and the model contract against timm (the generic versions in
  tests/test_models.py expect a pruned model to return one tensor; a pruned HRNet returns its branch maps, as timm's);
- the arguments HRNet refuses.
"""
from __future__ import annotations

import copy
import os

import pytest
import timm
import torch

import featzoo
from helpers import assert_equal, build_timm_reference, meta_device, save_state

NAME = 'hrnet_w18_small'  # every code path of the family: bottleneck layer1, 2-4 branches, fusion, incre head
SIDE = 64


@pytest.fixture(scope='module')
def timm_pair():
    """timm's classification HRNet with random weights, the checkpoint file, and featzoo's model loaded from it."""
    ref = build_timm_reference(NAME)
    path = save_state(ref.state_dict())
    model = featzoo.create_model(NAME, checkpoint_path=path).eval()
    yield ref, model, path
    os.remove(path)
    os.rmdir(os.path.dirname(path))


def _image(seed: int = 0, side: int = SIDE) -> torch.Tensor:
    return torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize('location', ['incre', ''])
def test_feature_locations_equal_timm_features_only(timm_pair, location):
    ref_full, _, path = timm_pair
    ref = timm.create_model(NAME, features_only=True, feature_location=location).eval()
    missing, _ = ref.load_state_dict(ref_full.state_dict(), strict=False)
    assert not missing
    kwargs = {} if location == 'incre' else dict(feature_location='')
    model = featzoo.create_model(NAME, features_only=True, checkpoint_path=path, **kwargs).eval()
    # the wrapper holds what timm's feature class holds: no head, no incre modules for the raw maps
    assert sorted(model.state_dict()) == sorted(ref.state_dict())
    assert model.feature_info.channels() == ref.feature_info.channels()
    assert model.feature_info.reduction() == ref.feature_info.reduction()
    x = _image(1, 96)
    with torch.no_grad():
        got, expected = model(x), ref(x)
    assert len(got) == len(expected) == 5
    for i, (a, b) in enumerate(zip(got, expected)):
        assert_equal(a, b, f'feature_location={location!r} level {i}')
    widened_or_raw = [128, 256, 512, 1024] if location == 'incre' else [16, 32, 64, 128]
    assert model.feature_info.channels() == [64] + widened_or_raw


def test_raw_branch_levels_select_and_prune(timm_pair):
    _, _, path = timm_pair
    model = featzoo.create_model(NAME, features_only=True, checkpoint_path=path, feature_location='',
                                 out_indices=(1, 4)).eval()
    assert model.feature_info.channels() == [16, 128] and model.feature_info.reduction() == [4, 32]
    assert not any(k.startswith(('incre_modules', 'downsamp_modules', 'final_layer', 'classifier'))
                   for k in model.state_dict())
    full = featzoo.create_model(NAME, features_only=True, checkpoint_path=path, feature_location='').eval()
    x = _image(2)
    with torch.no_grad():
        picked, every = model(x), full(x)
    assert_equal(picked[0], every[1], 'level 1')
    assert_equal(picked[1], every[4], 'level 4')


def test_forward_intermediates_and_prune_match_timm(timm_pair):
    ref, model, _ = timm_pair
    x = _image(3)
    with torch.no_grad():
        for indices in (None, 2, 3, (0, 3), (0, 2, 4), [0, -1]):
            final, inter = model.forward_intermediates(x, indices=indices)
            ref_final, ref_inter = ref.forward_intermediates(x, indices=indices)
            assert_equal(final, ref_final, f'final {indices}')
            assert len(inter) == len(ref_inter)
            for a, b in zip(inter, ref_inter):
                assert_equal(a, b, f'intermediate {indices}')
            if indices is None:
                levels = inter
        for i in (0, 1, 2):
            early = model.forward_intermediates(x, indices=(i,), stop_early=True, intermediates_only=True)
            assert_equal(early[0], levels[i], f'stop_early at level {i}')
            _, branches = model.forward_intermediates(x, indices=(i,), stop_early=True)
            _, ref_branches = ref.forward_intermediates(x, indices=(i,), stop_early=True)
            assert_equal(branches[0], ref_branches[0], f'stop_early at {i}, intermediates')
    with pytest.raises(ValueError, match='out of range'):
        model.forward_intermediates(x, indices=[5])
    with pytest.raises(ValueError, match='NHWC'):
        model.forward_intermediates(x, output_fmt='NHWC')
    for last in range(0, 5):
        pruned, ref_pruned = copy.deepcopy(model), copy.deepcopy(ref)
        assert pruned.prune_intermediate_layers((0, last)) == ref_pruned.prune_intermediate_layers((0, last))
        assert list(pruned.state_dict()) == list(ref_pruned.state_dict()), f'pruned to (0, {last})'
        assert (pruned.num_features, pruned.head_hidden_size, pruned.num_classes) == \
            (ref_pruned.num_features, ref_pruned.head_hidden_size, ref_pruned.num_classes)
        with torch.no_grad():
            got, expected = pruned(x), ref_pruned(x)
        got, expected = (got, expected) if isinstance(expected, list) else ([got], [expected])
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            assert_equal(a, b, f'pruned to (0, {last})')
        if last == 0:  # the stem's map can be classified again
            pruned.reset_classifier(7, 'avg')
            ref_pruned.reset_classifier(7, 'avg')
            pruned.load_state_dict(ref_pruned.state_dict())
            with torch.no_grad():
                assert_equal(pruned(x), ref_pruned(x), 'stem classifier')
        else:  # timm takes a classifier for the branch maps and fails in forward; featzoo refuses it here
            with pytest.raises(ValueError, match='pruned to its branch maps'):
                pruned.reset_classifier(7, 'avg')
            pruned.reset_classifier(0)
    kept = copy.deepcopy(model)
    kept.prune_intermediate_layers((0, 4), prune_head=False)
    with torch.no_grad():
        assert_equal(kept(x), model(x), 'every branch kept with its head')


def test_raw_intermediates_are_the_branch_maps(timm_pair):
    _, model, path = timm_pair
    raw = featzoo.create_model(NAME, checkpoint_path=path, feature_location='').eval()
    x = _image(4)
    with torch.no_grad():
        final, inter = raw.forward_intermediates(x)
        assert_equal(final, model.forward_features(x), 'final map with its head')
        branches = model.stages(model.forward_stem(x))
    assert [t.shape[1] for t in inter] == [64, 16, 32, 64, 128]
    for a, b in zip(inter[1:], branches):
        assert_equal(a, b, 'raw branch')


RESET_ARGS = [(10,), (0,), (0, ''), (5, 'catavgmax'), (7, 'avg')]


def test_model_contract_is_timms(timm_pair):
    ref, model, _ = timm_pair
    ref, model = copy.deepcopy(ref), copy.deepcopy(model)
    x = _image(5)
    with torch.no_grad():
        feat = model.forward_features(x)
        assert_equal(feat, ref.forward_features(x), 'forward_features')
        assert_equal(model.forward_head(feat, pre_logits=True), ref.forward_head(feat, pre_logits=True), 'pre_logits')
    for args in RESET_ARGS:
        ref.reset_classifier(*args)
        model.reset_classifier(*args)
        model.load_state_dict(ref.state_dict())
        head = lambda m: (m.num_classes, m.num_features, m.head_hidden_size, type(m.get_classifier()).__name__)
        assert head(model) == head(ref), args
        with torch.no_grad():
            assert_equal(model(x), ref(x), f'reset_classifier{args}')
    with pytest.raises(ValueError, match="'bogus'"):
        model.reset_classifier(3, 'bogus')
    with pytest.raises(ValueError, match='num_classes'):
        model.reset_classifier(-1)
    assert model.no_weight_decay() == set()


def test_grad_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = featzoo.create_model(NAME, num_classes=3)
    twin = copy.deepcopy(model)
    twin.set_grad_checkpointing()
    x = _image(6)
    for m in (model, twin):
        m.train()
        m(x).sum().backward()
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        assert_equal(b.grad, a.grad, name)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match=r"feature_location='bottleneck' is invalid; valid: 'incre', ''"):
        featzoo.create_model(NAME, features_only=True, feature_location='bottleneck')
    with pytest.raises(ValueError, match=r'output_stride=16 .* valid: \(32,\)'):
        featzoo.create_model(NAME, output_stride=16)
    with pytest.raises(ValueError, match='drop_path_rate=0.1'):
        featzoo.create_model(NAME, drop_path_rate=0.1)
    with pytest.raises(ValueError, match="feature_cls='list' cannot serve"):
        featzoo.create_model(NAME, features_only=True, feature_cls='list')
    with pytest.raises(ValueError, match='num_modules must have 3 entries'):
        featzoo.create_model(NAME, num_modules=(1, 1))
    caps = featzoo.model_capabilities(NAME)
    assert caps.output_strides == (32,) and caps.feature_cls == ('getter',)


def test_ssld_rows_have_bias_free_head_convolutions():
    for name in ('hrnet_w18', 'hrnet_w18_ssld', 'hrnet_w48_ssld'):
        with meta_device():
            model = featzoo.create_model(name)
        has_bias = model.final_layer[0].bias is not None and model.downsamp_modules[0][0].bias is not None
        assert has_bias == (not name.endswith('_ssld')), name
