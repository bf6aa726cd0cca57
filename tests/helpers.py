"""Shared test helpers: the project's tolerance, timm parity, feature-shape checks."""
from __future__ import annotations

import atexit
import math
import os
import shutil
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

import featzoo


def assert_equal(actual: torch.Tensor, reference: torch.Tensor, what: str = '', rtol: float = 1e-5) -> None:
    """max |a - b| <= rtol * max(1, max |reference|): the project's definition of equal."""
    assert isinstance(actual, torch.Tensor) and isinstance(reference, torch.Tensor), what
    assert actual.shape == reference.shape, f'{what}: shape {tuple(actual.shape)} != {tuple(reference.shape)}'
    ref = reference.detach().float()
    diff = (actual.detach().float() - ref).abs().max().item() if ref.numel() else 0.0
    bound = rtol * max(1.0, ref.abs().max().item() if ref.numel() else 0.0)
    assert diff <= bound, f'{what}: max |a - b| = {diff:.3e} > {bound:.3e}'


def randomize_state(model: nn.Module, seed: int = 0) -> None:
    """Fill every tensor of the state_dict with random values of a sensible scale.

    Nothing stays zero-initialized (last batch norms of residual branches, layer scales), so every branch
    contributes, and batch-norm statistics are non-trivial so that eval-mode normalization is exercised.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.dtype.is_floating_point:
                tensor.zero_()
                continue
            if name.endswith('running_var'):
                value = torch.rand(tensor.shape, generator=gen) + 0.5
            elif name.endswith('running_mean') or name.endswith('bias'):
                value = torch.randn(tensor.shape, generator=gen) * 0.1
            elif tensor.ndim <= 1:
                value = 1.0 + torch.randn(tensor.shape, generator=gen) * 0.1
            else:
                fan_in = max(1, tensor[0].numel())
                value = torch.randn(tensor.shape, generator=gen) / math.sqrt(fan_in)
            tensor.copy_(value.to(tensor.dtype))


def build_timm_reference(name: str, seed: int = 0, **kwargs: Any) -> nn.Module:
    """timm's model with random weights, skipping timm's (slow) initialization where that is safe."""
    import timm
    with torch.device('meta'):
        ref = timm.create_model(name, pretrained=False, **kwargs)
    persistent = set(ref.state_dict())
    computed = [n for n, _ in ref.named_buffers() if n not in persistent]
    if computed:  # tables computed at construction would be lost by to_empty: build normally
        ref = timm.create_model(name, pretrained=False, **kwargs)
    else:
        ref = ref.to_empty(device='cpu')
    randomize_state(ref, seed)
    return ref.eval()


def _scratch_for(state: Dict[str, torch.Tensor]) -> Optional[str]:
    """A RAM-backed folder for small files (parity tests write and read back many); the disk for big ones.

    A file in /dev/shm is memory that no process owns: the largest models (1.4 GB for convnext_xlarge) would
    add to the peak of two test workers, and a small /dev/shm (64 MB in many containers) cannot hold them.
    """
    size = sum(t.numel() * t.element_size() for t in state.values())
    if not (os.path.isdir('/dev/shm') and os.access('/dev/shm', os.W_OK)) or size > 256 * 2 ** 20:
        return None
    stats = os.statvfs('/dev/shm')
    return '/dev/shm' if size * 4 < stats.f_bavail * stats.f_frsize else None


_CREATED: List[str] = []  # temporary folders of save_state, removed when the test process exits


def _remove_created() -> None:
    for folder in _CREATED:
        shutil.rmtree(folder, ignore_errors=True)


atexit.register(_remove_created)


def save_state(state: Dict[str, torch.Tensor], directory: Optional[str] = None) -> str:
    """Write a state_dict as safetensors in a temporary file (removed at exit); return its path."""
    from safetensors.torch import save_file
    if directory is None:
        # /dev/shm is memory: folders left behind by every run would pile up until the machine runs out
        directory = tempfile.mkdtemp(prefix='featzoo-test-', dir=_scratch_for(state))
        _CREATED.append(directory)
    path = os.path.join(directory, 'weights.safetensors')
    save_file({k: v.detach().contiguous() for k, v in state.items()}, path)
    return path


def input_side(stride: int, at_least: int = 64) -> int:
    """The smallest side of at least ``at_least`` pixels and two strides that ``stride`` divides exactly
    (64 for stride 32, 70 for a 14-pixel patch).

    >>> input_side(32), input_side(14)
    (64, 70)
    """
    return stride * max(2, -(-at_least // stride))


def _capture(model: nn.Module, modules: Sequence[str], x: torch.Tensor) -> List[torch.Tensor]:
    captured: Dict[str, torch.Tensor] = {}
    handles = []
    for name in modules:
        def hook(mod, args, out, name=name):
            captured[name] = out.detach().clone()
        handles.append(model.get_submodule(name).register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return [captured[m] for m in modules]


def check_feature_shapes(model: nn.Module, input_size) -> List[torch.Tensor]:
    """feature_info channels and reductions agree with what the backbone returns (NCHW).

    ``input_size`` is a shape tuple or an input tensor.
    """
    x = input_size if isinstance(input_size, torch.Tensor) else torch.randn(*input_size)
    input_size = tuple(x.shape)
    with torch.no_grad():
        out = model(x)
    feats = list(out.values()) if isinstance(out, dict) else list(out)
    info = model.feature_info
    assert len(feats) == len(info), f'{len(feats)} outputs for {len(info)} feature levels'
    for i, (f, ch, red) in enumerate(zip(feats, info.channels(), info.reduction())):
        assert f.ndim == 4, f'level {i}: {tuple(f.shape)}'
        assert f.shape[1] == ch, f'level {i}: {f.shape[1]} channels, feature_info says {ch}'
        got = math.ceil(input_size[-2] / f.shape[-2])
        assert got == red, f'level {i}: reduction {got} (shape {tuple(f.shape)}), feature_info says {red}'
    return feats


def timm_reference_features(timm_model: nn.Module, modules: Sequence[str], x: torch.Tensor,
                            use_intermediates: bool, indices: Sequence[int]) -> List[torch.Tensor]:
    if use_intermediates:
        with torch.no_grad():
            return timm_model.forward_intermediates(x, indices=list(indices), intermediates_only=True)
    return _capture(timm_model, modules, x)


def timm_parity(name: str, input_size: Tuple[int, ...] = (2, 3, 64, 64), output_stride: Optional[int] = None,
                timm_kwargs: Optional[Dict[str, Any]] = None, featzoo_kwargs: Optional[Dict[str, Any]] = None,
                check_features: bool = True, seed: int = 0) -> nn.Module:
    """Load timm's (randomized) weights into featzoo's model and check they compute the same things."""
    timm_kwargs = dict(timm_kwargs or {})
    featzoo_kwargs = dict(featzoo_kwargs or {})
    if output_stride is not None:
        timm_kwargs.setdefault('output_stride', output_stride)
        featzoo_kwargs.setdefault('output_stride', output_stride)
    torch.manual_seed(seed)
    ref = build_timm_reference(name, seed, **timm_kwargs)
    ref_shapes = {key: tuple(value.shape) for key, value in ref.state_dict().items()}
    path = save_state(ref.state_dict())
    x = torch.randn(*input_size, generator=torch.Generator().manual_seed(seed))
    try:
        # the backbone first and released before the full model: at most two copies of the largest models'
        # weights live at once (test workers run side by side)
        if check_features:
            fkw = {k: v for k, v in featzoo_kwargs.items() if k not in ('num_classes', 'global_pool')}
            backbone = featzoo.create_model(name, features_only=True, checkpoint_path=path, **fkw).eval()
            feats = check_feature_shapes(backbone, x)
            modules = backbone.feature_info.module_name()
            use_inter = not hasattr(backbone, 'steps') and type(backbone).__name__ == 'FeatureGetterNet'
            out_indices = backbone.feature_info.out_indices
            del backbone
            refs = timm_reference_features(ref, modules, x, use_inter, out_indices)
            for i, (a, b) in enumerate(zip(feats, refs)):
                assert_equal(a, b, f'{name} feature level {i} ({modules[i]})')
            assert len(feats) == len(refs)
            del feats, refs
        model = featzoo.create_model(name, checkpoint_path=path, **featzoo_kwargs).eval()
        shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
        assert list(shapes) == list(ref_shapes) or sorted(shapes) == sorted(ref_shapes), \
            f'keys differ: only featzoo {sorted(set(shapes) - set(ref_shapes))[:5]}, ' \
            f'only timm {sorted(set(ref_shapes) - set(shapes))[:5]}'
        for key, shape in ref_shapes.items():
            assert shapes[key] == shape, f'{key}: {shapes[key]} vs {shape}'
        with torch.no_grad():
            ref_feat = ref.forward_features(x)
            feat = model.forward_features(x)
            assert_equal(feat, ref_feat, f'{name} forward_features')
            assert_equal(model.forward_head(feat, pre_logits=True), ref.forward_head(ref_feat, pre_logits=True),
                         f'{name} pre_logits')
            assert_equal(model(x), ref(x), f'{name} logits')
    finally:
        os.remove(path)
        os.rmdir(os.path.dirname(path))
    return model


def representatives() -> List[str]:
    """The smallest variant (fewest parameters) of each family, for tests that run every family."""
    from featzoo import registry
    return [min(featzoo.list_models(module=family), key=lambda n: registry.get_arch_entry(n)['num_params'])
            for family in featzoo.list_modules()]
