"""What only the maxxvit family (MaxViT, CoAtNet, MaxxViT) does: window / grid partitions and relative position biases
that follow the input size (timm's ``set_input_size``, here also taken on the fly at run time), the resampling of
relative position tables in checkpoints, and the input sizes the family refuses.

The generic suites (tests/test_parity_timm.py, tests/test_models.py, ...) cover parity at the built size.
"""
from __future__ import annotations

import copy
import os

import pytest
import torch
from timm.layers.pos_embed_rel import resize_rel_pos_bias_table
from timm.models.maxxvit import checkpoint_filter_fn as timm_checkpoint_filter

import featzoo
from featzoo.layers.rel_pos import RelPosBias, RelPosBiasTf, RelPosMlp, resample_relative_grid
from featzoo.models.maxxvit import SPEC, MaxxVit, grid_partition, grid_reverse, window_partition, window_reverse
from helpers import assert_equal, build_timm_reference, save_state

# one row per relative position kind and block kind: bias + MaxViT, TF bias + TF padding, MLP, CoAtNet full-map
# attention, parallel partitions, ConvNeXt conv blocks with grid attention only
RESIZE_ROWS = ['test_maxvit', 'maxvit_tiny_tf_224', 'test_coatnet']
RESIZE_ROWS_SLOW = ['maxvit_rmlp_pico_rw_256', 'maxvit_tiny_pm_256', 'maxxvitv2_nano_rw_256', 'coatnet_rmlp_nano_rw_224',
                    'coatnet_nano_cc_224']


def _shallow(name: str) -> dict:
    keep = 1 if name.startswith(('maxvit', 'maxxvit')) else 2  # mixed CoAtNet stages ('C', 'T') reach attention at block 2
    return dict(depths=tuple(min(d, keep) for d in SPEC.row(name)['depths']))


def _pair(name: str, **kwargs):
    """timm's model with random weights and featzoo's with the same weights, both in eval mode."""
    ref = build_timm_reference(name, **kwargs)
    model = SPEC.build(name, **kwargs).eval()
    model.load_state_dict(ref.state_dict())
    return ref, model


def _rows(default, slow):
    return default + [pytest.param(n, marks=pytest.mark.slow) for n in slow]


@pytest.mark.parametrize('name', _rows(RESIZE_ROWS, RESIZE_ROWS_SLOW))
def test_other_input_sizes_compute_as_timm_after_set_input_size(name):
    """Built for one size, run at another (square and not): equal to timm's model after set_input_size to that size,
    and to featzoo's own set_input_size; the built size is left untouched."""
    ref, model = _pair(name, img_size=96, **_shallow(name))
    x96 = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        at_built = model(x96)
    for size in ((64, 64), (64, 128)):
        x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
        resized_ref = copy.deepcopy(ref)
        resized_ref.set_input_size(img_size=size)
        resized = copy.deepcopy(model)
        resized.set_input_size(img_size=size)
        with torch.no_grad():
            expected = resized_ref.forward_features(x)
            assert_equal(model.forward_features(x), expected, f'{name} at {size} on the fly')
            assert_equal(resized.forward_features(x), expected, f'{name} at {size} after set_input_size')
            assert_equal(model(x), resized_ref(x), f'{name} logits at {size}')
    with torch.no_grad():
        assert torch.equal(model(x96), at_built), 'running at another size changed the model'


def test_set_input_size_changes_partitions_and_tables_as_timm():
    ref, model = _pair('maxvit_tiny_tf_224', img_size=64, depths=(1, 1, 1, 1))
    ref.set_input_size(img_size=128, window_size=2, grid_size=4)
    model.set_input_size(img_size=128, window_size=2, grid_size=4)
    assert (model.window_size, model.grid_size, model.img_size) == ((2, 2), (4, 4), (128, 128))
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert_equal(model(x), ref(x), 'after set_input_size with explicit window and grid')


@pytest.mark.parametrize('img_size', [100, (64, 80), 16])
def test_sizes_that_are_not_multiples_of_32_are_refused(img_size):
    with pytest.raises(ValueError, match=r'multiples of 32 \(at least 32\)'):
        featzoo.create_model('test_maxvit', img_size=img_size)
    model = SPEC.build('test_coatnet', img_size=64)
    with pytest.raises(ValueError, match='multiples of 32'):
        model.set_input_size(img_size=img_size)
    assert model.img_size == (64, 64), 'a refused size must leave the model as it was'


def test_partitions_that_do_not_tile_the_stages_are_refused():
    with pytest.raises(ValueError, match=r'window of \(3, 3\).*stage 0 maps of \(16, 16\)'):
        SPEC.build('test_maxvit', img_size=64, window_size=3)
    with pytest.raises(ValueError, match='partition_ratio at most 32'):
        SPEC.build('test_maxvit', img_size=64, partition_ratio=16)
    with pytest.raises(ValueError, match="'PM' blocks need equal window and grid sizes"):
        SPEC.build('maxvit_tiny_pm_256', img_size=64, depths=(1, 1, 1, 1)).set_input_size(window_size=1, grid_size=2)
    # CoAtNet has no partitions: any multiple of 32
    assert SPEC.build('test_coatnet', img_size=32).feature_info[-1]['reduction'] == 32


def test_bad_options_name_the_value_and_the_valid_ones():
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['colour'\]"):
        SPEC.build('test_maxvit', conv=dict(colour='red'))
    with pytest.raises(ValueError, match="rel_pos_type='rope'"):
        SPEC.build('test_maxvit', transformer=dict(rel_pos_type='rope'))
    with pytest.raises(ValueError, match=r"block_type\[1\]='X'"):
        SPEC.build('test_maxvit', block_type=('M', 'X', 'M', 'M'))
    with pytest.raises(ValueError, match="global_pool='' .* needs num_classes=0"):
        SPEC.build('test_maxvit', global_pool='')
    with pytest.raises(ValueError, match='catavgmax'):
        SPEC.build('coatnet_0_224', global_pool='catavgmax')
    # the norm-MLP head classifies unpooled maps per position, as timm's
    per_position = SPEC.build('coatnet_0_224', global_pool='', num_classes=3, img_size=64, depths=(1, 1, 1, 1))
    assert per_position(torch.zeros(1, 3, 64, 64)).shape == (1, 3, 2, 2)


@pytest.mark.parametrize('name', ['test_maxvit', 'maxvit_tiny_tf_224'])
def test_checkpoint_of_another_size_is_resampled_as_timm(name, tmp_path):
    """Weights saved at one size load into a model built for another: tables resampled as timm's filter does."""
    ref = build_timm_reference(name, img_size=160, depths=(1, 1, 1, 1))
    state = ref.state_dict()
    path = save_state(state, str(tmp_path))
    model = featzoo.create_model(name, img_size=64, depths=(1, 1, 1, 1), checkpoint_path=path).eval()
    target = build_timm_reference(name, img_size=64, depths=(1, 1, 1, 1))
    target.load_state_dict(timm_checkpoint_filter(state, target))
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert_equal(model(x), target(x), f'{name} loaded from 160 px weights at 64 px')
    os.remove(path)


@pytest.mark.parametrize('src,dst', [((7, 7), (2, 2)), ((7, 7), (12, 12)), ((5, 5), (2, 3)), ((2, 3), (4, 1))])
def test_table_resampling_is_timms(src, dst):
    heads = 3
    flat = torch.randn((2 * src[0] - 1) * (2 * src[1] - 1), heads)
    shape = ((2 * dst[0] - 1) * (2 * dst[1] - 1), heads)
    expected = resize_rel_pos_bias_table(flat, dst, shape, old_window_size=src)
    grid = flat.T.reshape(heads, 2 * src[0] - 1, 2 * src[1] - 1)
    got = resample_relative_grid(grid, (2 * dst[0] - 1, 2 * dst[1] - 1)).reshape(heads, -1).T
    assert_equal(got, expected, f'flat table {src} -> {dst}')
    tf_table = torch.randn(heads, 2 * src[0] - 1, 2 * src[1] - 1)
    expected = resize_rel_pos_bias_table(tf_table, dst, (heads, 2 * dst[0] - 1, 2 * dst[1] - 1))
    assert_equal(resample_relative_grid(tf_table, (2 * dst[0] - 1, 2 * dst[1] - 1)), expected, f'TF table {src}')


@pytest.mark.parametrize('cls', [RelPosBias, RelPosBiasTf, RelPosMlp])
def test_bias_at_another_window_equals_a_module_resized_to_it(cls):
    module = cls((4, 4), num_heads=2).eval()  # the MLP's dropout off
    with torch.no_grad():
        for p in module.parameters():
            p.normal_()
    resized = copy.deepcopy(module)
    resized.set_window_size((2, 3))
    with torch.no_grad():
        assert_equal(module(2, 3), resized(2, 3), cls.__name__)
        assert module(4, 4).shape == (1, 2, 16, 16)
    # gradients reach the stored table through the resampling
    module(3, 3).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters() if p.requires_grad)


def test_partitions_follow_timm_token_order():
    from timm.models.maxxvit import grid_partition as timm_grid, window_partition as timm_window
    x = torch.randn(2, 8, 12, 3)
    assert torch.equal(window_partition(x, (4, 3)), timm_window(x, (2, 4)))
    assert torch.equal(grid_partition(x, (4, 3)), timm_grid(x, (2, 4)))
    assert torch.equal(window_reverse(window_partition(x, (4, 3)), (4, 3)), x)
    assert torch.equal(grid_reverse(grid_partition(x, (4, 3)), (4, 3)), x)


def test_fx_trace_at_one_size_runs_at_another():
    """Partition counts are constants of the model; partition sizes and biases come from the input in the graph."""
    from featzoo.features import fx as fzfx
    model = SPEC.build('test_maxvit').eval()
    traced = fzfx.create_feature_extractor(model, return_nodes=['stages.3'])
    for side in (64, 128):
        x = torch.randn(1, 3, side, side)
        with torch.no_grad():
            assert torch.equal(traced(x)['stages.3'], model.forward_intermediates(x, indices=[-1],
                                                                                   intermediates_only=True)[0])


def test_model_constructor_is_usable_directly():
    model = MaxxVit(embed_dim=(16, 32, 32, 64), depths=(1, 1, 1, 1), block_type=('C', 'M', ('C', 'T'), 'PM'),
                    stem_width=8, img_size=64, num_classes=4, transformer=dict(dim_head=8))
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 4)
    assert [d['reduction'] for d in model.feature_info] == [2, 4, 8, 16, 32]
