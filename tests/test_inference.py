"""The fast paths give the slow paths' results: optimize_for_inference, meta-device creation, the lazy import.

Correctness only; timings live in ``python -m benchmarks``.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from typing import Any, Dict, Tuple

import pytest
import torch
from torch import nn

import featzoo
from featzoo.inference import (CpuFeatures, FusedLinear, InferenceModel, InferencePlan, OneDnnLinear,
                               _onednn_linear_works, cpu_features, fold_conv_bn, max_relative_error,
                               optimize_for_inference, plan_inference, use_fused_linear, use_onednn_linear)
from featzoo.layers import BatchNormAct2d, ConvNormAct, FrozenBatchNorm2d
from featzoo.layers.onednn import PackedConvForward, _onednn_conv_works
from featzoo.weights.loading import read_state_dict
from helpers import assert_equal, configurations, randomize_state, representatives, smallest_input

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))


def representative(family: str) -> Tuple[str, Dict[str, Any], torch.Tensor]:
    """The family's smallest architecture, its size arguments and a batch-2 image at the smallest side it takes."""
    name = dict(zip(featzoo.list_modules(), representatives()))[family]
    kwargs, side = smallest_input(name)
    return name, kwargs, torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(3))


def _batch_norms(model: nn.Module) -> int:
    return sum(isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)) for m in model.modules())


def _check_optimized(model: nn.Module, what: str, x: torch.Tensor = X) -> None:
    model.eval()
    randomize_state(model)
    with torch.no_grad():
        reference = model(x)
    norms = _batch_norms(model)
    linears = sum(type(m) is nn.Linear for m in model.modules())
    dense_convs = sum(type(m) is nn.Conv2d and m.groups == 1 for m in model.modules())
    optimized = optimize_for_inference(model)
    out = optimized(x)
    for a, b in zip(torch.utils._pytree.tree_flatten(out)[0], torch.utils._pytree.tree_flatten(reference)[0]):
        assert_equal(a, b, what, rtol=1e-4)
        assert a.is_inference()
    if norms:  # every batch-norm family here has at least a conv -> norm stem
        assert _batch_norms(model) < norms, f'{what}: no batch norm was folded'
    kernel = optimized.plan.linear_kernel
    if kernel == 'onednn' and not _onednn_linear_works():
        kernel = ''
    if linears and kernel:
        assert any(isinstance(m, FusedLinear) and m.kernel == kernel for m in model.modules()), \
            f'{what}: no linear layer on the {kernel} kernel'
    if dense_convs and _onednn_conv_works():
        packed = [m for m in model.modules() if isinstance(m.__dict__.get('_conv_forward'), PackedConvForward)]
        assert packed and all(m.groups == 1 for m in packed), f'{what}: no prepacked convolution, or a grouped one'
    assert not model.training
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters() if p.ndim == 4)


@pytest.mark.parametrize('family', featzoo.list_modules())
def test_optimized_full_model_equals_eager(family):
    name, kwargs, x = representative(family)
    _check_optimized(featzoo.create_model(name, **kwargs), f'{name} full', x)


@pytest.mark.parametrize('family', featzoo.list_modules())
def test_optimized_features_equal_eager(family):
    name, kwargs, x = representative(family)
    _check_optimized(featzoo.create_model(name, features_only=True, **kwargs), f'{name} features', x)


def test_optimized_hook_and_fx_wrappers_keep_their_taps():
    # the hook wrapper reads modules inside blocks; the FX wrapper returns a conv's own output: neither may change
    hook = featzoo.create_model('resnet18', features_only=True, feature_cls='hook')
    _check_optimized(hook, 'resnet18 hook')
    fx = featzoo.create_feature_extractor(featzoo.create_model('resnet18'), return_nodes=['layer1.0.conv1', 'layer2'])
    randomize_state(fx)
    fx.eval()
    with torch.no_grad():
        reference = fx(X)
    out = optimize_for_inference(fx)(X)
    for key in reference:
        assert_equal(out[key], reference[key], f'fx {key}', rtol=1e-4)
    assert isinstance(fx.get_submodule('layer1.0.bn1'), nn.BatchNorm2d), 'a returned conv output was folded'


@pytest.mark.parametrize('feature_cls', ['list', 'fx'])
def test_output_layout(feature_cls):
    """By default the optimized maps come out as computed, channels_last; 'nchw' copies them into NCHW. Equal values
    either way, and the layout does not leak into later eager calls of other models."""
    model = featzoo.create_model('resnet18', features_only=True, feature_cls=feature_cls).eval()
    randomize_state(model)
    with torch.no_grad():
        reference = model(X)
    fast = optimize_for_inference(copy.deepcopy(model))
    nchw = optimize_for_inference(copy.deepcopy(model), output_layout='nchw')
    assert fast.output_layout == 'channels_last' and nchw.output_layout == 'nchw'
    for a, b, r in zip(fast(X), nchw(X), reference):
        assert a.is_contiguous(memory_format=torch.channels_last) and not a.is_contiguous()
        assert b.is_contiguous()
        assert_equal(a, r, 'channels_last output', rtol=1e-4)
        assert torch.equal(a, b)
    with torch.no_grad():  # the eager model of another copy is untouched by the optimized runs
        assert all(t.is_contiguous() for t in copy.deepcopy(model)(X))


class _Shapes(nn.Module):
    """Conv/norm layouts that must and must not fold."""

    def __init__(self) -> None:
        super().__init__()
        self.seq = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.block = ConvNormAct(8, 8, 3, act_layer='relu')                 # conv -> BatchNormAct2d: folds, act kept
        self.conv_frozen, self.frozen = nn.Conv2d(8, 8, 1), FrozenBatchNorm2d(8)    # folds
        self.conv_res, self.bn_res = nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8)  # conv output also added: must not fold
        self.pre_bn, self.post_conv = nn.BatchNorm2d(8), nn.Conv2d(8, 8, 1)  # norm before conv: nothing to fold
        self.shared = nn.Conv2d(8, 8, 1)                                    # run twice: must not fold
        self.bn_shared_a, self.bn_shared_b = nn.BatchNorm2d(8), nn.BatchNorm2d(8)
        self.act = BatchNormAct2d(8, act_layer='gelu')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(self.seq(x))
        x = self.frozen(self.conv_frozen(x))
        y = self.conv_res(x)
        x = self.bn_res(y) + y
        x = self.post_conv(self.pre_bn(x))
        x = self.bn_shared_a(self.shared(x)) + self.bn_shared_b(self.shared(x))
        return self.act(x)


def test_fold_rules():
    model = _Shapes().eval()
    randomize_state(model)
    with torch.no_grad():
        reference = model(X)
    folded = fold_conv_bn(model)
    assert sorted(folded) == ['block.bn', 'frozen', 'seq.1']
    assert isinstance(model.block.bn, nn.ReLU) and isinstance(model.seq[1], nn.Identity)
    assert isinstance(model.bn_res, nn.BatchNorm2d) and isinstance(model.pre_bn, nn.BatchNorm2d)
    assert isinstance(model.bn_shared_a, nn.BatchNorm2d) and isinstance(model.act, BatchNormAct2d)
    with torch.no_grad():
        assert_equal(model(X), reference, 'folded', rtol=1e-5)


def test_fold_without_affine_and_with_conv_bias():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4, affine=False)).eval()
    randomize_state(model)
    with torch.no_grad():
        reference = model(X)
    assert fold_conv_bn(model, input_size=(3, 16, 16)) == ['1']
    with torch.no_grad():
        assert_equal(model(X), reference, 'no affine', rtol=1e-5)


class _Linears(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.flat = nn.Flatten()
        self.fc1, self.act1 = nn.Linear(12, 16), nn.GELU()   # fused
        self.fc2, self.act2 = nn.Linear(16, 16), nn.ReLU()   # its output is also added: replaced, not fused
        self.fc3 = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc2(self.act1(self.fc1(self.flat(x))))
        return self.fc3(self.act2(y) + y)


@pytest.mark.skipif(not _onednn_linear_works(), reason='this torch build has no oneDNN linear kernel')
def test_onednn_linear_rules():
    model = _Linears().eval()
    randomize_state(model)
    x = torch.randn(5, 3, 2, 2)
    with torch.no_grad():
        reference = model(x)
    assert use_onednn_linear(model, input_size=(3, 2, 2)) == ['fc1', 'fc2', 'fc3']
    assert model.fc1.post_op == 'gelu' and isinstance(model.act1, nn.Identity)
    assert model.fc2.post_op == 'none' and isinstance(model.act2, nn.ReLU)
    assert set(model.state_dict()) == {f'fc{i}.{p}' for i in (1, 2, 3) for p in ('weight', 'bias')}
    with torch.no_grad():
        assert_equal(model(x), reference, 'oneDNN linears', rtol=1e-4)
    with pytest.raises(ValueError, match='cannot be fused'):
        OneDnnLinear(nn.Linear(2, 2), nn.Sigmoid())


KERNELS = [pytest.param('onednn', marks=pytest.mark.skipif(not _onednn_linear_works(),
                                                          reason='this torch build has no oneDNN linear kernel')),
           'blas', 'conv1x1']


@pytest.mark.parametrize('kernel', KERNELS)
def test_linear_pairs_run_in_blocks_of_rows(monkeypatch, kernel):
    """An MLP's second layer runs right after the first, block by block, when the hidden activations are large;
    a layer whose output has another reader is never chained. Weights keep their names; copies keep working."""
    import copy
    from featzoo import inference
    model = _Linears().eval()
    randomize_state(model)
    x = torch.randn(300, 3, 2, 2)
    with torch.no_grad():
        reference = model(x)
    assert use_fused_linear(model, input_size=(3, 2, 2), kernel=kernel) == ['fc1', 'fc2', 'fc3']
    assert all(getattr(model, f'fc{i}').kernel == kernel for i in (1, 2, 3))
    assert model.fc2.applied_by == 'fc1' and model.fc1.applied_by is None
    assert model.fc3.applied_by is None  # fc2's output is read twice (act2 and the sum)
    assert 'applied_by' in repr(model.fc2)
    assert set(model.state_dict()) == {f'fc{i}.{p}' for i in (1, 2, 3) for p in ('weight', 'bias')}
    with torch.no_grad():
        assert_equal(model(x), reference, f'{kernel} MLP, one block', rtol=1e-4)
    calls = []

    def record(fn, what, rows_of):
        return lambda *a, **k: calls.append((what, rows_of(a))) or fn(*a, **k)

    blas = record(torch.addmm, 'blas', lambda a: a[1].shape[0])
    monkeypatch.setattr(inference, '_BLAS_BLOCK_ABOVE_BYTES', 0)  # every call is 'large': 300 rows in blocks of 64
    monkeypatch.setattr(inference, '_BLOCK_BYTES', 64 * 16 * 4)
    monkeypatch.setattr(inference, '_CONV1X1_BLOCK_BYTES', 64 * 16 * 4)
    monkeypatch.setattr(inference, '_CONV1X1_NARROW_INPUTS', 1)  # these tiny layers on the convolution too
    with monkeypatch.context() as patch:
        if kernel == 'onednn':
            patch.setattr(inference, '_BLOCK_ABOVE_BYTES', 0)
            patch.setattr(torch.ops.mkldnn, '_linear_pointwise', record(torch.ops.mkldnn._linear_pointwise, 'onednn',
                                                                        lambda a: a[0].shape[0]))
        patch.setattr(torch, 'addmm', blas)
        patch.setattr(torch.ops.mkldnn, '_convolution_pointwise',
                      record(torch.ops.mkldnn._convolution_pointwise, 'conv1x1', lambda a: a[0].shape[2]))
        with torch.no_grad():
            out = model(x)
    assert calls[:10] == [(kernel, 64)] * 8 + [(kernel, 44)] * 2, calls
    assert_equal(out, reference, f'{kernel} MLP in blocks', rtol=1e-4)
    twin = copy.deepcopy(model)
    assert twin.fc1.__dict__['_second'] is twin.fc2
    with torch.no_grad():
        assert_equal(twin(x), reference, 'copied blocked MLP', rtol=1e-4)
    with pytest.raises(ValueError, match='cannot chain'):
        model.fc1.chain_with(FusedLinear(nn.Linear(5, 2), kernel=kernel))


def test_conv1x1_packs_once_per_row_count(monkeypatch):
    """The conv1x1 kernel packs a layer's weight for each row count it meets and keeps the packs of the last two
    counts (blocks and a shorter last block; batches and a shorter last batch); a third count evicts the oldest, a
    changed weight packs again; a copy drops the packs."""
    import copy
    layer = FusedLinear(nn.Linear(256, 64), nn.ReLU(), kernel='conv1x1').requires_grad_(False)
    randomize_state(layer)
    packs = []
    real = torch._C._nn.mkldnn_reorder_conv2d_weight
    monkeypatch.setattr(torch._C._nn, 'mkldnn_reorder_conv2d_weight', lambda *a: packs.append(a[-1][2]) or real(*a))
    for rows in (300, 300, 200, 200, 300, 100, 300):
        x = torch.randn(rows, 256)
        with torch.no_grad():
            assert_equal(layer(x), torch.relu(nn.functional.linear(x, layer.weight, layer.bias)), 'conv1x1',
                         rtol=1e-5)
    assert packs == [300, 200, 100, 300]
    with torch.no_grad():
        layer.weight.mul_(2)
        layer(torch.randn(300, 256))
    assert packs == [300, 200, 100, 300, 300]
    assert copy.deepcopy(layer).__dict__['_pack'] is None


@pytest.mark.parametrize('in_features, max_inputs, widths', [(3072, None, [1536, 1536]), (192, 64, [64, 64, 64])])
def test_conv1x1_splits_wide_products_into_slices(monkeypatch, in_features, max_inputs, widths):
    """A product wider than the conv1x1 kernel takes in one convolution runs as equal slices of its inputs, each
    slice's product added into the first's (the ReLU after the last only); a width no slicing fits stays on BLAS."""
    from featzoo import inference
    if max_inputs is not None:
        monkeypatch.setattr(inference, '_CONV1X1_MAX_INPUTS', max_inputs)
    layer = FusedLinear(nn.Linear(in_features, 40), nn.ReLU(), kernel='conv1x1').requires_grad_(False)
    randomize_state(layer)
    packed, added = [], []
    real_pack, real_add = torch._C._nn.mkldnn_reorder_conv2d_weight, torch.ops.mkldnn._convolution_pointwise_
    monkeypatch.setattr(torch._C._nn, 'mkldnn_reorder_conv2d_weight', lambda *a: packed.append(a[-1][1]) or real_pack(*a))
    monkeypatch.setattr(torch.ops.mkldnn, '_convolution_pointwise_', _Recorder(real_add, added))
    x = torch.randn(392, in_features)
    with torch.no_grad():
        assert_equal(layer(x), torch.relu(nn.functional.linear(x, layer.weight, layer.bias)), 'sliced conv1x1',
                     rtol=1e-5)
    assert packed == widths and len(added) == len(widths) - 1
    assert not inference.conv1x1_suits(in_features + 1, 4096)  # odd widths: no slicing fits


@pytest.mark.parametrize('conv_mlp', [False, True])
def test_convnext_layer_scale_folds_into_fc2(conv_mlp):
    """ConvNeXt declares that its layer scale gamma scales mlp.fc2's outputs alone: optimize_for_inference folds it
    there (gamma becomes None, the multiply is gone) with outputs equal to eager; under a hook on fc2 it stays."""
    from featzoo.inference import fold_channel_scales
    model = featzoo.create_model('convnext_atto', conv_mlp=conv_mlp, features_only=True).eval()
    randomize_state(model)  # gamma far from its 1e-6 init, so a lost scale shows
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference = model(x)
    hooked = copy.deepcopy(model)
    hooked.stages[0].blocks[0].mlp.fc2.register_forward_hook(lambda *a: None)
    names = fold_channel_scales(hooked)
    assert 'stages.0.blocks.0.gamma' not in names and 'stages.0.blocks.1.gamma' in names and len(names) == 11
    assert hooked.stages[0].blocks[0].gamma is not None
    optimized = optimize_for_inference(model)
    blocks = [m for m in model.modules() if hasattr(m, 'foldable_scales')]
    assert len(blocks) == 12 and all(b.gamma is None for b in blocks)
    assert max_relative_error(optimized(x), reference) <= 1e-5


class _Recorder:
    """Stands in for an operator overload packet: counts calls to its ``.binary`` overload."""

    def __init__(self, packet, calls):
        self.packet, self.calls = packet, calls

    def __getattr__(self, name):
        target = getattr(self.packet, name)
        return (lambda *a, **k: self.calls.append(name) or target(*a, **k)) if name == 'binary' else target


def test_blas_blocks_only_narrow_products_above_the_threshold():
    """The BLAS kernel splits an MLP into blocks only where its first product has at most 256 inputs and the
    hidden activations pass 8 MiB; the oneDNN kernel above 32 MiB whatever the width."""
    narrow, wide = FusedLinear(nn.Linear(96, 384), kernel='blas'), FusedLinear(nn.Linear(768, 3072), kernel='blas')
    rows_at = lambda layer, mib: (mib << 20) // (layer.out_features * 4)  # noqa: E731
    assert narrow._block_rows(rows_at(narrow, 8)) is None
    assert narrow._block_rows(rows_at(narrow, 8) + 1) == (2 << 20) // (384 * 4)
    assert wide._block_rows(rows_at(wide, 64)) is None
    onednn = FusedLinear(nn.Linear(768, 3072), kernel='onednn')
    assert onednn._block_rows(rows_at(onednn, 32)) is None and onednn._block_rows(rows_at(onednn, 32) + 1)
    with pytest.raises(ValueError, match="kernel must be one of"):
        FusedLinear(nn.Linear(2, 2), kernel='mkl')


@pytest.mark.parametrize('kernel', KERNELS)
def test_transformer_mlps_fuse_their_gelu_and_chain(kernel):
    """featzoo's own GELU modules fuse like nn.GELU; with dropout gone, each MLP's layers are chained, on the
    kernel the plan picks: oneDNN with AVX-512, BLAS without."""
    model = featzoo.create_model('vit_small_patch16_224', depth=2).eval()
    randomize_state(model)
    with torch.no_grad():
        reference = model(X)
    features = {'onednn': AVX512, 'conv1x1': AVX2, 'blas': CpuFeatures()}[kernel]  # whatever this CPU is
    optimized = optimize_for_inference(model, features=features)
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())
    for i, block in enumerate(model.blocks):
        assert block.mlp.fc1.post_op == 'gelu' and isinstance(block.mlp.act, nn.Identity)
        assert block.mlp.fc1.kernel == kernel
        assert block.mlp.fc2.applied_by == f'blocks.{i}.mlp.fc1'
    assert_equal(optimized(X), reference, 'vit with chained MLPs', rtol=1e-4)


def test_inference_model_runs_forward_methods_in_inference_mode():
    model = featzoo.create_model('convnext_atto').eval()
    randomize_state(model)
    with torch.no_grad():
        features = model.forward_features(X)
        pooled = model.forward_head(features, pre_logits=True)
    optimized = optimize_for_inference(model)
    out = optimized.forward_features(X)
    assert out.is_inference()
    assert_equal(out, features, 'forward_features', rtol=1e-4)
    assert_equal(optimized.forward_head(out, pre_logits=True), pooled, 'forward_head', rtol=1e-4)


def test_inference_model_delegates_and_refuses_training():
    model = optimize_for_inference(featzoo.create_model('resnet18', features_only=True, out_indices=(2, 4)))
    assert isinstance(model, InferenceModel)
    assert model.feature_info.channels() == [128, 512]
    assert set(model.state_dict()) == {f'module.{k}' for k in model.module.state_dict()}
    model.eval()
    with pytest.raises(RuntimeError, match='cannot be trained'):
        model.train()


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match='nn.Module'):
        optimize_for_inference('resnet18')
    with pytest.raises(TypeError, match="compile must be True or False, got 'yes'"):
        optimize_for_inference(nn.Conv2d(3, 3, 1), compile='yes')
    with pytest.raises(ValueError, match=r"output_layout 'NHWC'.*'channels_last', 'nchw'"):
        optimize_for_inference(nn.Conv2d(3, 3, 1), output_layout='NHWC')
    with pytest.raises(ValueError, match=r'input_size .*\(3, 0, 8\)'):
        fold_conv_bn(nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)), input_size=(3, 0, 8))
    already = optimize_for_inference(nn.Conv2d(3, 3, 1))
    with pytest.raises(TypeError, match='already'):
        optimize_for_inference(already)
    with pytest.raises(RuntimeError, match=r'input_size=\(C, H, W\)'):
        fold_conv_bn(nn.Sequential(nn.Conv2d(5, 3, 1), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(3 * 7 * 7, 2)))


def test_max_relative_error_checks_structure():
    assert max_relative_error({'a': torch.ones(2)}, {'a': torch.ones(2) * 1.5}) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match='1 tensors vs 2'):
        max_relative_error([torch.ones(1)], [torch.ones(1), torch.ones(1)])


@pytest.mark.slow
@pytest.mark.parametrize('name', ['resnet18', 'convnext_atto'])
def test_compiled_features_equal_eager(name):
    model = featzoo.create_model(name, features_only=True).eval()
    randomize_state(model)
    with torch.no_grad():
        reference = model(X)
    out = optimize_for_inference(model, compile=True)(X)
    for a, b in zip(out, reference):
        assert_equal(a, b, f'{name} compiled', rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize('kernel', [pytest.param('onednn', marks=pytest.mark.skipif(
    not _onednn_linear_works(), reason='this torch build has no oneDNN linear kernel')), 'conv1x1'])
def test_compiled_blocked_mlps_equal_eager(monkeypatch, kernel):
    """Chained MLP layers in blocks of rows under torch.compile, at two batch sizes (the second recompiles), on
    the oneDNN kernel (AVX-512 plan) and the conv1x1 kernel (AVX2 plan: an opaque operator in the graph)."""
    from featzoo import inference
    monkeypatch.setattr(inference, '_BLOCK_ABOVE_BYTES', 0)
    monkeypatch.setattr(inference, '_BLAS_BLOCK_ABOVE_BYTES', 0)
    monkeypatch.setattr(inference, '_BLAS_BLOCK_MAX_INPUTS', 1 << 20)
    monkeypatch.setattr(inference, '_BLOCK_BYTES', 64 * 1536 * 4)  # 64 rows of vit_small's hidden width
    monkeypatch.setattr(inference, '_CONV1X1_BLOCK_BYTES', 64 * 1536 * 4)
    model = featzoo.create_model('vit_small_patch16_224', depth=2).eval()
    randomize_state(model)
    features = AVX512 if kernel == 'onednn' else AVX2
    optimized = optimize_for_inference(copy.deepcopy(model), compile=True, features=features)
    assert optimized.module.blocks[0].mlp.fc1.kernel == kernel
    for batch in (1, 3):
        x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            reference = model(x)
        assert_equal(optimized(x), reference, f'compiled blocked MLPs, batch {batch}', rtol=1e-4)


@pytest.mark.parametrize('family', featzoo.list_modules())
def test_meta_creation_equals_slow_path(family, tmp_path):
    """Building on the meta device and assigning the file's tensors gives exactly the weights and computed
    buffers of building normally and copying the file in."""
    from safetensors.torch import save_file
    name, kwargs, x = representative(family)
    source = featzoo.create_model(name, **kwargs)
    randomize_state(source, seed=5)
    path = str(tmp_path / 'w.safetensors')
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, path)
    fast = featzoo.create_model(name, checkpoint_path=path, **kwargs)
    slow = featzoo.create_model(name, **kwargs)
    slow.load_state_dict(read_state_dict(path))
    fast_tensors = dict(list(fast.named_parameters()) + list(fast.named_buffers()))
    slow_tensors = dict(list(slow.named_parameters()) + list(slow.named_buffers()))
    assert fast_tensors.keys() == slow_tensors.keys()
    for key, value in slow_tensors.items():
        assert not fast_tensors[key].is_meta, key
        assert fast_tensors[key].dtype == value.dtype and torch.equal(fast_tensors[key], value), key
    fast.eval()
    slow.eval()
    with torch.no_grad():
        assert torch.equal(fast(x), slow(x))


def _run(code: str) -> Any:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_lazy_import_lists_every_model():
    """``import featzoo`` and listing read only the index: no family code, no timm, no torchvision, no dynamo."""
    result = _run('import json, sys; import featzoo; names = featzoo.list_models(); '
                  'mods = featzoo.list_modules(); loaded = sorted(sys.modules); '
                  'print(json.dumps(dict(names=names, modules=mods, loaded=loaded)))')
    index_dir = os.path.join(ROOT, 'featzoo', 'index')
    expected = set()
    families = [f[:-5] for f in os.listdir(index_dir) if f.endswith('.json') and not f.startswith('_')]
    for family in families:  # '_deprecated.json' maps old names; it is not a family
        with open(os.path.join(index_dir, f'{family}.json')) as f:
            expected |= set(json.load(f)['models'])
    assert set(result['names']) == expected and len(result['names']) == len(expected)
    assert sorted(result['modules']) == sorted(families)
    heavy = [m for m in result['loaded'] if m.startswith(('featzoo.models', 'timm', 'torchvision', 'torch._dynamo',
                                                          'featzoo.features', 'safetensors', 'huggingface_hub'))]
    assert heavy == []


@pytest.mark.parametrize('scope', ['configurations', pytest.param('every', marks=pytest.mark.slow)])
def test_meta_builds_stay_in_native_kernels(tmp_path, scope):
    """Building registered models on the meta device, and loading one per family through the pretrained path, never
    reaches torch's Python references (they import torch._dynamo, seconds on a cold start). One architecture per
    configuration (its rows share their code) in the default suite, every architecture under ``-m slow``."""
    from safetensors.torch import save_file
    files = {}
    for family in featzoo.list_modules():
        name, kwargs, _ = representative(family)
        path = str(tmp_path / f'{family}.safetensors')
        save_file({k: v.contiguous() for k, v in featzoo.create_model(name, **kwargs).state_dict().items()}, path)
        files[family] = (name, kwargs, path)
    names = featzoo.list_models() if scope == 'every' else sorted(configurations())
    result = _run(textwrap.dedent(f'''
        import json, sys, torch, featzoo
        reached = []
        for name in {names!r}:
            with torch.device('meta'):
                featzoo.create_model(name)
            if 'torch._dynamo' in sys.modules and not reached:
                reached.append(name)
        for name, kwargs, path in {list(files.values())!r}:
            featzoo.create_model(name, checkpoint_path=path, **kwargs)
            featzoo.create_model(name, checkpoint_path=path, features_only=True, **kwargs)
            if 'torch._dynamo' in sys.modules and not reached:
                reached.append(name + ' (loaded from a file)')
        print(json.dumps(reached))
    '''))
    assert result == [], f'building {result[0]} imported torch._dynamo'


# ---- the choice by CPU, and bfloat16 -------------------------------------------------------------------------------

AMD = 'AuthenticAMD'
AVX2 = CpuFeatures(avx2=True, vendor=AMD)
AVX512 = CpuFeatures(avx2=True, avx512f=True, vendor=AMD)
AVX512_BF16 = CpuFeatures(avx2=True, avx512f=True, avx512_bf16=True, vendor=AMD)
AMX = CpuFeatures(avx2=True, avx512f=True, avx512_bf16=True, amx_bf16=True, vendor='GenuineIntel')
INTEL_AVX2 = CpuFeatures(avx2=True, vendor='GenuineIntel')


# (dtype, oneDNN linear layers, packed convolutions, linear kernel)
@pytest.mark.parametrize('features, dtype, expected', [
    (AVX2, torch.float32, (torch.float32, False, True, 'conv1x1')),
    (AVX512, torch.float32, (torch.float32, True, True, 'onednn')),
    (AVX2, torch.bfloat16, (torch.float32, False, True, 'conv1x1')),      # no native bf16: float32, with a note
    (AVX512, torch.bfloat16, (torch.float32, True, True, 'onednn')),
    (AVX512_BF16, torch.bfloat16, (torch.bfloat16, True, True, 'onednn')),
    # the oneDNN linear kernels were measured on AMD only: Intel and unknown makers keep BLAS (never slower)
    (AMX, torch.bfloat16, (torch.bfloat16, False, True, 'blas')),
    (AMX, torch.float32, (torch.float32, False, True, 'blas')),
    (INTEL_AVX2, torch.float32, (torch.float32, False, True, 'blas')),
    (CpuFeatures(avx2=True, avx512f=True), torch.float32, (torch.float32, False, True, 'blas')),
    (CpuFeatures(vendor=AMD), torch.float32, (torch.float32, False, True, 'blas')),  # no AVX2: plain BLAS
    (CpuFeatures(), torch.float32, (torch.float32, False, True, 'blas')),  # not x86 (or very old): plain BLAS
])
def test_plan_follows_the_cpu_instruction_sets(features, dtype, expected):
    plan = plan_inference(features, dtype)
    assert (plan.dtype, plan.onednn_linear, plan.packed_convolutions, plan.linear_kernel) == expected
    assert bool(plan.note) == (dtype == torch.bfloat16 and not features.native_bf16)
    assert plan_inference(features, dtype) == plan  # deterministic: no timing involved
    assert plan_inference(features, dtype, device_type='cuda') == InferencePlan(dtype, False, False)


def test_cpu_features_come_from_cpuinfo_or_torch(tmp_path, monkeypatch):
    from featzoo import inference
    info = tmp_path / 'cpuinfo'
    info.write_text('processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n'
                    'processor\t: 1\n')
    flags, vendor = inference._cpuinfo(str(info))
    assert flags >= {'avx2', 'avx512f', 'avx512_bf16'} and vendor == 'AuthenticAMD'
    assert inference._cpuinfo(str(tmp_path / 'missing')) is None
    monkeypatch.setattr(inference, '_cpuinfo', lambda: None)
    monkeypatch.setattr(torch.backends.cpu, 'get_cpu_capability', lambda: 'AVX2')
    inference.cpu_features.cache_clear()
    try:
        assert inference.cpu_features() == CpuFeatures(avx2=True)  # the maker unknown: linear layers stay on BLAS
    finally:
        inference.cpu_features.cache_clear()
    assert AVX512_BF16.flags() == ['avx2', 'avx512f', 'avx512_bf16']


def test_avx2_plan_runs_linear_layers_as_1x1_convolutions_and_bf16_falls_back_with_one_warning():
    model = featzoo.create_model('vit_tiny_patch16_224', img_size=64, depth=1).eval()
    randomize_state(model)
    with torch.no_grad():
        reference = model(X)
    with pytest.warns(RuntimeWarning) as caught:
        optimized = optimize_for_inference(model, dtype=torch.bfloat16, features=AVX2)
    assert len(caught) == 1 and '\n' not in str(caught[0].message) and 'float32' in str(caught[0].message)
    assert optimized.plan.dtype == torch.float32 and optimized.plan.as_dict()['dtype'] == 'float32'
    kernels = {m.kernel for m in model.modules() if isinstance(m, FusedLinear)}
    assert kernels == {'conv1x1'}, kernels  # oneDNN's matrix multiply only with AVX-512
    assert all(p.dtype == torch.float32 for p in model.parameters())
    out = optimized(X)
    assert out.dtype == torch.float32
    assert_equal(out, reference, 'AVX2 plan', rtol=1e-4)
    with pytest.raises(ValueError, match=r'unsupported dtype torch.float16; valid'):
        optimize_for_inference(nn.Conv2d(3, 3, 1), dtype=torch.float16)
    with pytest.raises(TypeError, match='CpuFeatures'):
        optimize_for_inference(nn.Conv2d(3, 3, 1), features={'avx2': True})


def _photos(side: int) -> torch.Tensor:
    from PIL import Image
    folder = os.path.join(ROOT, 'samples')
    images = []
    for file in sorted(f for f in os.listdir(folder) if f.endswith('.jpg')):
        with Image.open(os.path.join(folder, file)) as img:
            data = torch.frombuffer(bytearray(img.convert('RGB').resize((side, side)).tobytes()), dtype=torch.uint8)
        images.append(data.reshape(side, side, 3).permute(2, 0, 1).float() / 255)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    return (torch.stack(images) - mean[:, None, None]) / std[:, None, None]


@pytest.mark.skipif(not cpu_features().native_bf16, reason='this CPU has no native bfloat16')
@pytest.mark.parametrize('name, kwargs', [('resnet50', {}), ('convnext_tiny', {}), ('vit_base_patch16_224', {})])
def test_bf16_embeddings_match_float32_on_photos(name, kwargs):
    """Pooled embeddings of the sample photos in bfloat16 point where float32's do (cosine >= 0.999), with random
    weights that leave no residual branch or layer scale at zero."""
    model = featzoo.create_model(name, **kwargs).eval()
    randomize_state(model)
    x = _photos(224)
    with torch.no_grad():
        reference = model.forward_head(model.forward_features(x), pre_logits=True)
    optimized = optimize_for_inference(model, dtype=torch.bfloat16)
    assert optimized.plan.dtype == torch.bfloat16 and not optimized.plan.note
    out = optimized.forward_head(optimized.forward_features(x), pre_logits=True)
    assert out.dtype == torch.bfloat16
    cosine = nn.functional.cosine_similarity(out.float(), reference, dim=1)
    assert cosine.min().item() >= 0.999, cosine


class _ConvActs(nn.Module):
    """Activations after packed convolutions: fused where the activation alone reads the convolution's output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1, self.act1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True)
        self.conv2, self.act2 = nn.Conv2d(8, 8, 1), nn.SiLU()           # fused (SiLU is oneDNN's swish)
        self.conv3, self.act3 = nn.Conv2d(8, 8, 1), nn.ReLU()           # its output is also added: not fused
        self.conv4, self.act4 = nn.Conv2d(8, 8, 1), nn.ReLU(inplace=True)  # hooked: not fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        y = self.conv3(x)
        return self.act4(self.conv4(self.act3(y) + y))


@pytest.mark.skipif(not _onednn_conv_works(), reason='this torch build has no oneDNN convolution kernels')
def test_conv_activation_rules():
    from featzoo.inference import fuse_conv_activations
    from featzoo.layers.onednn import pack_convolutions
    model = _ConvActs().eval()
    randomize_state(model)
    with torch.no_grad():
        reference = model(X)
    model.act4.register_forward_hook(lambda *args: None)
    fold_conv_bn(model)
    pack_convolutions(model)
    assert fuse_conv_activations(model) == ['conv1', 'conv2']  # the in-place ReLU's later readers read its result
    assert model.conv1._conv_forward.activation == 'relu' and model.conv2._conv_forward.activation == 'swish'
    assert isinstance(model.act1, nn.Identity) and isinstance(model.act2, nn.Identity)
    assert isinstance(model.act3, nn.ReLU) and isinstance(model.act4, nn.ReLU)
    with torch.inference_mode():
        assert_equal(model(X), reference, 'fused activations', rtol=1e-4)
    # the F.conv2d path (autograd here; tracers and compilers too) applies the activation as well
    assert_equal(model(X.clone().requires_grad_()), reference, 'fused activations, plain path', rtol=1e-4)
    with pytest.raises(ValueError, match='cannot be fused'):
        PackedConvForward(nn.Conv2d(3, 3, 1), 'tanh')


def test_extract_bf16_on_a_cpu_without_native_bf16_warns_once_and_stores_float32_numbers(tmp_path, monkeypatch):
    """``featzoo extract --precision bf16`` takes optimize_for_inference's bfloat16 path on the CPU, so a CPU
    without native bfloat16 gets one warning and exactly the float32 extraction, not a slow emulation."""
    import warnings
    from featzoo import inference
    from featzoo.extract.reader import open_embeddings
    samples = os.path.join(ROOT, 'samples')
    common = dict(pretrained=False, device='cpu', workers=0, quiet=True, input_size=64)
    featzoo.extract_embeddings('resnet18', samples, tmp_path / 'f32', **common)
    monkeypatch.setattr(inference, 'cpu_features', lambda: AVX2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        featzoo.extract_embeddings('resnet18', samples, tmp_path / 'bf16', autocast='bf16', **common)
    notes = [w for w in caught if 'bfloat16' in str(w.message)]
    assert len(notes) == 1, [str(w.message) for w in caught]
    f32, bf16 = open_embeddings(tmp_path / 'f32'), open_embeddings(tmp_path / 'bf16')
    assert torch.equal(torch.as_tensor(f32[:len(f32)]), torch.as_tensor(bf16[:len(bf16)]))
