"""Shared test helpers: the project's tolerance, timm parity, feature-shape checks, and the architectures that stand
for the registry (one per family, one per configuration, a seeded sample), all derived from the registry and the
family specs so that a new family needs no table entry here."""
from __future__ import annotations

import atexit
import copy
import datetime
import math
import os
import random
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

import featzoo
from featzoo import registry


def assert_equal(actual: torch.Tensor, reference: torch.Tensor, what: str = '', rtol: float = 1e-5) -> None:
    """max |a - b| <= rtol * max(1, max |reference|): the project's definition of equal."""
    assert isinstance(actual, torch.Tensor) and isinstance(reference, torch.Tensor), what
    assert actual.shape == reference.shape, f'{what}: shape {tuple(actual.shape)} != {tuple(reference.shape)}'
    ref = reference.detach().float()
    diff = (actual.detach().float() - ref).abs().max().item() if ref.numel() else 0.0
    bound = rtol * max(1.0, ref.abs().max().item() if ref.numel() else 0.0)
    assert diff <= bound, f'{what}: max |a - b| = {diff:.3e} > {bound:.3e}'


ROUNDING_FACTOR = 4.0  # how much further from the float64 result featzoo's float32 may land than timm's own float32


def _max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.detach().double() - b.detach().double()).abs().max().item() if b.numel() else 0.0


def assert_same_function(ours: nn.Module, theirs: nn.Module, x: torch.Tensor, what: str = '') -> None:
    """``ours(x)`` equals ``theirs(x)`` (:func:`assert_equal`) in float32; where it does not, the difference must be
    float32 rounding, not another function.

    A network at timm's random initialization can amplify rounding: timm's own float32 output of
    ``maxvit_base_tf_224`` at 224 px lies 2.8e-3 * max|ref| from its float64 output. The models are then compared
    in float64 (there they must be equal), and featzoo's float32 output may not lie more than ``ROUNDING_FACTOR``
    times further from that float64 reference than timm's own float32 output does.
    """
    with torch.no_grad():
        got, ref = ours(x), theirs(x)
    bound = 1e-5 * max(1.0, ref.detach().abs().max().item() if ref.numel() else 0.0)
    if got.shape == ref.shape and _max_abs_diff(got, ref) <= bound:
        return
    assert got.shape == ref.shape, f'{what}: shape {tuple(got.shape)} != {tuple(ref.shape)}'
    with torch.no_grad():
        got64 = copy.deepcopy(ours).double()(x.double())
        ref64 = copy.deepcopy(theirs).double()(x.double())
    assert_equal(got64, ref64, f'{what} (float32 differed by {_max_abs_diff(got, ref):.3e}; in float64)')
    ours_error, timm_error = _max_abs_diff(got, ref64), _max_abs_diff(ref, ref64)
    assert ours_error <= ROUNDING_FACTOR * timm_error + bound, (
        f'{what}: float32 error against float64 {ours_error:.3e}, timm\'s own {timm_error:.3e}: more than '
        f'{ROUNDING_FACTOR}x timm\'s rounding')


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


# In-place tensor methods that only write values (never a shape, a dtype or a device): what weight initialization does.
_VALUE_WRITES = frozenset({
    'uniform_', 'normal_', 'fill_', 'zero_', 'copy_', 'mul_', 'add_', 'sub_', 'div_', 'clamp_', 'clamp_min_',
    'clamp_max_', 'erfinv_', 'exp_', 'log_', 'sqrt_', 'abs_', 'neg_', 'bernoulli_', 'random_', 'exponential_',
    'log_normal_', 'cauchy_', 'geometric_', 'fmod_', 'remainder_', 'masked_fill_', 'index_fill_',
})


class _SkipValueWritesOnMeta(TorchFunctionMode):
    """Turns value-only writes into meta tensors (and torch.nn.init's functions on them) into no-ops.

    A meta tensor holds no values, yet initializing one still runs the op's shape logic in Python: timm's
    trunc_normal_ alone made building a ConvNeXt on the meta device ~3x slower than building it for real.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        target = args[0] if args else kwargs.get('tensor')
        name, module = getattr(func, '__name__', ''), getattr(func, '__module__', '')
        initializes = name in _VALUE_WRITES or module == 'torch.nn.init'
        if isinstance(target, torch.Tensor) and target.is_meta and initializes:
            return target
        return func(*args, **kwargs)


@contextmanager
def meta_device() -> Iterator[None]:
    """Build on the meta device without running weight initialization: keys and shapes only, in milliseconds."""
    with torch.device('meta'), _SkipValueWritesOnMeta():
        yield


def state_shapes(model: nn.Module) -> Dict[str, Tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def assert_same_keys_and_shapes(ours: Dict[str, Tuple[int, ...]], timms: Dict[str, Tuple[int, ...]],
                                what: str = '') -> None:
    """The same state_dict keys (in the same order or at least as a set) with the same shapes."""
    assert list(ours) == list(timms) or sorted(ours) == sorted(timms), \
        f'{what} keys differ: only featzoo {sorted(set(ours) - set(timms))[:5]}, ' \
        f'only timm {sorted(set(timms) - set(ours))[:5]}'
    wrong = [f'{key}: {ours[key]} vs timm {shape}' for key, shape in timms.items() if ours[key] != shape]
    assert not wrong, f'{what} {len(wrong)} shapes differ, e.g. {wrong[:3]}'


def build_timm_reference(name: str, seed: int = 0, **kwargs: Any) -> nn.Module:
    """timm's model with random weights, skipping timm's (slow) initialization where that is safe."""
    import timm
    with meta_device():
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


def created_count() -> int:
    """How many temporary weight folders :func:`save_state` has made in this process (a mark for
    :func:`remove_created_since`)."""
    return len(_CREATED)


def remove_created_since(mark: int = 0) -> None:
    """Remove the folders :func:`save_state` made after ``mark``, newest first.

    Kept to the end of the process, the weights one slow-suite worker writes for every architecture it checks (up to
    1.5 GB each) pile up on the disk for the whole run."""
    while len(_CREATED) > mark:
        shutil.rmtree(_CREATED.pop(), ignore_errors=True)


atexit.register(remove_created_since)


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


def conv_geometry(model: nn.Module) -> Dict[str, Tuple[Any, Any]]:
    """Stride and dilation of every convolution wider than 1x1, by name: where two models' differ, they compute
    different things on the same weights."""
    return {name: (m.stride, m.dilation) for name, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and max(m.kernel_size) > 1}


def input_step(name: str, stride: int) -> int:
    """The smallest change of side that keeps an input of ``name`` valid and divisible by ``stride``.

    >>> input_step('resnet18', 32), input_step('bat_resnext26ts', 32)
    (32, 256)
    """
    return math.lcm(stride, registry.family_spec(family_of(name)).input_multiple_for(name))


def behaviour_side(name: str) -> int:
    """The side behaviour tests (FX, fine-tuning) run ``name`` at: 64 px, which every model with an input multiple
    up to 64 takes (patch grids pad or resample), else the smallest side it takes (bilinear attention: 256).

    >>> behaviour_side('vit_base_patch14_dinov2'), behaviour_side('bat_resnext26ts')
    (64, 256)
    """
    multiple = registry.family_spec(family_of(name)).input_multiple_for(name)
    return 64 if multiple <= 64 else input_side_for(name)


def input_side_of(name: str, stride: int, at_least: int = 64) -> int:
    """:func:`input_side` for ``name``: also a size its family takes (a multiple of 256 for bilinear attention).

    >>> input_side_of('resnet18', 32), input_side_of('bat_resnext26ts', 32)
    (64, 256)
    """
    step = input_step(name, stride)
    side = max(input_side(stride, at_least), input_side_for(name, at_least))
    return -(-side // step) * step


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
                check_features: bool = True, seed: int = 0, feature_classes: Optional[Sequence[str]] = None,
                all_levels: bool = False) -> nn.Module:
    """Load timm's (randomized) weights into featzoo's model and check they compute the same things: the state_dict
    keys and shapes, forward_features, pre-logits, logits, and the levels of the default feature wrapper (of each of
    ``feature_classes`` besides, when given; every level, not only the default ``out_indices``, with ``all_levels``)."""
    timm_kwargs = dict(timm_kwargs or {})
    featzoo_kwargs = dict(featzoo_kwargs or {})
    if output_stride is not None:
        timm_kwargs.setdefault('output_stride', output_stride)
        featzoo_kwargs.setdefault('output_stride', output_stride)
    torch.manual_seed(seed)
    ref = build_timm_reference(name, seed, **timm_kwargs)
    ref_shapes = state_shapes(ref)
    path = save_state(ref.state_dict())
    x = torch.randn(*input_size, generator=torch.Generator().manual_seed(seed))
    try:
        # the backbones first and released before the full model: at most two copies of the largest models'
        # weights live at once (test workers run side by side)
        if check_features:
            fkw = {k: v for k, v in featzoo_kwargs.items() if k not in ('num_classes', 'global_pool')}
            if all_levels:
                with meta_device():
                    levels = len(featzoo.create_model(name, **fkw).feature_info)  # a full model lists every level
                fkw['out_indices'] = tuple(range(levels))
            default_cls = featzoo.model_capabilities(name).default_feature_cls
            classes = [default_cls] + [c for c in (feature_classes or ()) if c != default_cls]
            refs = None
            for feature_cls in classes:
                backbone = featzoo.create_model(name, features_only=True, checkpoint_path=path,
                                                feature_cls=feature_cls, **fkw).eval()
                feats = check_feature_shapes(backbone, x)
                if refs is None:  # timm's levels, tapped where the default wrapper taps featzoo's
                    modules = backbone.feature_info.module_name()
                    use_inter = not hasattr(backbone, 'steps') and type(backbone).__name__ == 'FeatureGetterNet'
                    refs = timm_reference_features(ref, modules, x, use_inter, backbone.feature_info.out_indices)
                del backbone
                assert len(feats) == len(refs), f'{name} {feature_cls}: {len(feats)} levels, timm {len(refs)}'
                for i, (a, b) in enumerate(zip(feats, refs)):
                    assert_equal(a, b, f'{name} {feature_cls} feature level {i} ({modules[i]})')
                del feats
            del refs
        model = featzoo.create_model(name, checkpoint_path=path, **featzoo_kwargs).eval()
        assert_same_keys_and_shapes(state_shapes(model), ref_shapes, name)
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


# ---- the architectures that stand for the registry ---------------------------------------------------------------
# Everything below is derived from the registry and the family specs: a new family or variant is covered by every test
# that uses these with no table entry anywhere.

# float32 weights above this are computed on a depth-reduced instance (full size only on the meta device)
PARITY_MAX_BYTES = 1.5 * 2 ** 30
# the default suite computes a configuration above this on its depth-reduced instance (at full depth with -m slow):
# weights, not arithmetic, are the cost at 64 px (random init, a file, two loads), and big configurations are
# mostly wide ViTs whose blocks repeat one code path
CONFIGURATION_MAX_PARAMS = 25_000_000
SAMPLE_SIZE = 10
SAMPLE_MAX_PARAMS = 100_000_000
SAMPLE_SEED_VARIABLE = 'FEATZOO_SAMPLE_SEED'
# row keys that count repeated blocks: per stage (sequences) or in all (ints)
_STAGE_DEPTH_KEYS = ('depths', 'layers', 'block_config', 'block_per_stage', 'stages')
_TOTAL_DEPTH_KEYS = ('depth', 'middle_depth')
_SHALLOW = 2  # blocks kept per stage: two, so that blocks that alternate (shifted windows) still meet both kinds


def num_params(name: str) -> int:
    return int(registry.get_arch_entry(name)['num_params'])


def family_of(name: str) -> str:
    return registry.get_arch_entry(name)['family']


def by_size(names: Sequence[str]) -> List[str]:
    """``names`` smallest first (fewest parameters, then natural name order)."""
    return sorted(names, key=lambda n: (num_params(n), registry._natural_key(n)))


def family_representative(family: str) -> str:
    """The architecture that stands for ``family`` in tests that run each family once: its smallest."""
    return by_size(featzoo.list_models(module=family))[0]


def shrunk_representative(family: str) -> Tuple[str, Dict[str, Any]]:
    """The family's representative and the overrides that cut its repeated blocks (tests that trace or export it)."""
    name = family_representative(family)
    return name, shallow_overrides(name)


def representatives() -> List[str]:
    """The representative of each family, in family order."""
    return [family_representative(family) for family in featzoo.list_modules()]


def configuration_of(name: str) -> Tuple[str, Any]:
    """(family, configuration): architectures with equal keys run the same code at other sizes.

    A name the family's spec does not know (an index ahead of its family file) is a configuration of its own, so that
    it reaches a test and fails there rather than breaking collection.
    """
    family = family_of(name)
    try:
        return family, registry.family_spec(family).configuration(name)
    except Exception as error:  # noqa: BLE001 - reported by the test that builds it
        return family, ('unbuildable', name, repr(error))


def configurations(names: Optional[Sequence[str]] = None) -> Dict[str, List[str]]:
    """Each configuration's smallest architecture -> every architecture of that configuration, smallest first."""
    groups: Dict[Tuple[str, Any], List[str]] = {}
    for name in by_size(featzoo.list_models() if names is None else names):
        groups.setdefault(configuration_of(name), []).append(name)
    return {members[0]: members for members in groups.values()}


SLOW_EVERY_VARIANT_VARIABLE = 'FEATZOO_SLOW_EVERY_VARIANT'


def slow_matrix() -> List[str]:
    """The architectures of the slow suite's behaviour matrices (export, wrappers, fine-tuning, FX): the smallest
    architecture of each configuration, or every architecture when ``FEATZOO_SLOW_EVERY_VARIANT=1``.

    These matrices check code paths, and the architectures of one configuration run the same code at other widths
    and depths; at every variant they took hours (a ViT-huge ONNX export is a minute on two cores). Numeric parity,
    where width and depth do matter, runs for every architecture regardless.
    """
    if os.environ.get(SLOW_EVERY_VARIANT_VARIABLE, '') == '1':
        return featzoo.list_models()
    return sorted(configurations())


def slow_overrides(name: str) -> Dict[str, Any]:
    """The row overrides a slow behaviour matrix builds ``name`` with: at most two blocks per stage (every kind of
    block kept, see :func:`shallow_overrides`), so a 4-billion-parameter configuration runs as a few hundred million;
    none when ``FEATZOO_SLOW_EVERY_VARIANT=1`` asks for the full models."""
    if os.environ.get(SLOW_EVERY_VARIANT_VARIABLE, '') == '1':
        return {}
    return shallow_overrides(name)


def input_side_for(name: str, at_least: int = 64) -> int:
    """The smallest input side >= ``at_least`` px that ``name`` takes."""
    return registry.family_spec(family_of(name)).smallest_input_side(name, at_least)


def size_kwargs(name: str, side: int) -> Dict[str, Any]:
    """Constructor arguments (for featzoo and timm alike) that fix the model to ``side`` px, where it needs them."""
    arg = registry.family_spec(family_of(name)).img_size_arg_for(name)
    return {arg: side} if arg else {}


def too_big_to_compute(name: str) -> bool:
    return num_params(name) * 4 > PARITY_MAX_BYTES


def shallow_overrides(name: str) -> Dict[str, Any]:
    """Row overrides that keep every kind of block of ``name`` but at most two per stage (tests that trace or compute
    a model many times, and numerics of the variants too big to compute at full size).

    Each count in the row is cut only where the cut model still builds with levels at the same reductions (and, for a
    total count, the same last level): a count that generates the widths of the stages (RegNet's ``depth``) is left
    alone.
    """
    row = registry.family_spec(family_of(name)).row(name)
    with meta_device():
        levels = _level_facts(featzoo.create_model(name))
    overrides: Dict[str, Any] = {}
    for key, value in row.items():
        if key in _STAGE_DEPTH_KEYS and isinstance(value, (tuple, list)) and all(isinstance(v, int) for v in value):
            shallow: Any = tuple(min(v, _SHALLOW) for v in value)
        elif key in _TOTAL_DEPTH_KEYS and isinstance(value, int) and not isinstance(value, bool):
            shallow = min(value, _SHALLOW)
        else:
            continue
        if shallow == (tuple(value) if isinstance(value, list) else value):
            continue
        change = {key: shallow}
        if key in _TOTAL_DEPTH_KEYS:
            # per-block settings (Sapiens2's num_kv_heads) are cut with the count they follow
            change.update({k: tuple(v[:shallow]) for k, v in row.items()
                           if isinstance(v, (tuple, list)) and len(v) == value and k not in overrides})
        try:
            with meta_device():
                cut = featzoo.create_model(name, **overrides, **change)
        except Exception:  # noqa: BLE001 - a count the family cannot cut this way
            continue
        if key in _STAGE_DEPTH_KEYS and [r for _, r in _level_facts(cut)] != [r for _, r in levels]:
            continue  # widths may follow the counts (DenseNet), the levels may not
        if key in _TOTAL_DEPTH_KEYS and _level_facts(cut)[-1:] != levels[-1:]:
            continue  # a transformer keeps one level per block: the last must be the same
        overrides.update(change)
    return overrides


def _level_facts(model: nn.Module) -> List[Tuple[int, int]]:
    return [(level['num_chs'], level['reduction']) for level in model.feature_info]


def sample_seed() -> str:
    """The seed of the per-commit sample: ``$FEATZOO_SAMPLE_SEED``, else the checked-out commit, else today's date.

    tests/conftest.py sets the variable once per run (test workers inherit it) and prints it.
    """
    seed = os.environ.get(SAMPLE_SEED_VARIABLE, '').strip()
    if seed:
        return seed
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        head = subprocess.run(['git', 'rev-parse', '--short=12', 'HEAD'], cwd=root, capture_output=True, text=True,
                              timeout=10)
        if head.returncode == 0 and head.stdout.strip():
            return head.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d')


def sampled_architectures(seed: str, candidates: Sequence[str], size: int = SAMPLE_SIZE) -> List[str]:
    """``size`` of ``candidates`` drawn by ``seed`` (the same on every machine and Python), in registry order."""
    pool = sorted(candidates, key=registry._natural_key)
    chosen = set(random.Random(seed).sample(pool, min(size, len(pool))))
    return [name for name in pool if name in chosen]


def natural_stride(name: str) -> int:
    return max(featzoo.model_capabilities(name).output_strides)


def timm_on_meta(name: str, **kwargs: Any) -> Optional[nn.Module]:
    """timm's model on the meta device; None when timm's constructor refuses the ``output_stride`` it is given (by a
    TypeError or an assert) but builds the model without it."""
    import timm
    try:
        with meta_device():
            return timm.create_model(name, pretrained=False, **kwargs)
    except Exception:
        if 'output_stride' not in kwargs:
            raise
        timm_on_meta(name, **{k: v for k, v in kwargs.items() if k != 'output_stride'})
        return None


def numeric_parity(name: str, output_stride: Optional[int] = None, feature_classes: Sequence[str] = (),
                   cut_above: Optional[int] = None) -> None:
    """Logits, forward_features, pre-logits and every level of the default wrapper (and of ``feature_classes``) equal
    timm's on the same random weights, at batch 1 on the smallest input >= 64 px the architecture takes; a
    depth-reduced instance for architectures too big to compute, and for those above ``cut_above`` parameters where
    timm's builder takes the cut."""
    side = input_side_for(name)
    kwargs = size_kwargs(name, side)
    if cut_above is not None and num_params(name) > cut_above and not too_big_to_compute(name):
        cut = shallow_overrides(name)
        try:
            timm_on_meta(name, **kwargs, **cut)
        except TypeError:  # timm's builder fixes the counts: compute the full model
            cut = {}
        kwargs.update(cut)
    if too_big_to_compute(name):
        row_cut = dict(kwargs, **shallow_overrides(name))
        with meta_device():
            cut = sum(p.numel() for p in featzoo.create_model(name, **row_cut).parameters())
        try:
            timm_on_meta(name, **row_cut)
            timm_takes_it = True
        except TypeError:  # timm's builder fixes the counts (resnetv2_152x4_bit, resnet50x64_clip)
            timm_takes_it = False
        if cut * 4 > PARITY_MAX_BYTES or not timm_takes_it:
            # no row argument shrinks it (RegNet's depth generates the widths) or timm will not take one
            return cut_model_parity(name, side, kwargs, output_stride)
        kwargs = row_cut
    if output_stride is not None and output_stride != natural_stride(name):
        ref = timm_on_meta(name, output_stride=output_stride, **kwargs)
        if ref is None:
            pytest.skip(f"timm's {name} takes no output_stride")
        if state_shapes(ref) != state_shapes(timm_on_meta(name, **kwargs)):
            pytest.skip(f"timm's {name} at output_stride={output_stride} has other parameters than at its natural "
                        f'stride (featzoo keeps them: test_dilated_keys_and_levels_match_timm)')
        with meta_device():
            ours = featzoo.create_model(name, output_stride=output_stride, **kwargs)
        if conv_geometry(ref) != conv_geometry(ours):
            pytest.skip(f"timm's {name} at output_stride={output_stride} strides or dilates other convolutions than "
                        f"featzoo (e.g. timm's MobileOne strides down without dilating): its family's test holds it "
                        f'to a timm model dilated by hand')
    else:
        output_stride = None
    timm_parity(name, input_size=(1, 3, side, side), output_stride=output_stride, timm_kwargs=kwargs,
                featzoo_kwargs=kwargs, feature_classes=feature_classes, all_levels=True)


def repeated_blocks(model: nn.Module, keep: int = _SHALLOW) -> List[Tuple[str, List[str]]]:
    """(container path, names of its children beyond the first ``keep``) for every container of more than ``keep``
    children of one class that hold modules themselves (the block lists of a network's stages), except containers
    of its feature levels (the stages themselves)."""
    levels = {level['module'] for level in model.feature_info}
    found = []
    for path, module in model.named_modules():
        children = list(module.named_children())
        if len(children) <= keep or len({type(c) for _, c in children}) != 1:
            continue
        if any(f'{path}.{n}'.lstrip('.') in levels for n, _ in children):
            continue
        if not any(True for _ in children[0][1].children()):
            continue  # a list of plain layers (norms, heads of each level), not of blocks
        found.append((path, [n for n, _ in children[keep:]]))
    return found


def cut_blocks(model: nn.Module, cuts: Sequence[Tuple[str, List[str]]]) -> nn.Module:
    """Remove the named children from their containers (Sequential, ModuleList or a stage iterating its children)."""
    for path, names in cuts:
        container = model.get_submodule(path) if path else model
        for child in names:
            del container._modules[child]
    return model


def cut_model_parity(name: str, side: int, kwargs: Dict[str, Any], output_stride: Optional[int] = None) -> None:
    """Numerics of an architecture too big to compute whose rows cannot be cut: both models built whole on the meta
    device, cut the same way (the first blocks of every stage and block list), given the same random weights; their
    forward_features, pre-logits and logits must be equal. Its feature levels are those of its configuration's other
    architectures and of the full model on the meta device (test_keys_shapes_and_levels_match_timm)."""
    import timm
    dilated = output_stride is not None and output_stride != natural_stride(name)
    extra = dict(kwargs, **({'output_stride': output_stride} if dilated else {}))
    with meta_device():
        try:
            ref = timm.create_model(name, pretrained=False, **extra)
        except Exception:  # noqa: BLE001 - as numeric_parity: no dilated reference to compare with
            if not dilated:
                raise
            pytest.skip(f"timm's {name} takes no output_stride={output_stride}")
        if dilated and state_shapes(ref) != state_shapes(timm.create_model(name, pretrained=False, **kwargs)):
            pytest.skip(f"timm's {name} at output_stride={output_stride} has other parameters than at its natural "
                        f'stride (featzoo keeps them: test_dilated_keys_and_levels_match_timm)')
        model = featzoo.create_model(name, **extra)
    persistent = set(ref.state_dict())
    computed = [n for n, _ in ref.named_buffers() if n not in persistent]
    if computed:
        pytest.skip(f'{name}: too big to compute, and its computed buffers {computed[:2]} would not survive a cut on '
                    f'the meta device')
    cuts = repeated_blocks(model)
    assert cuts, f'{name} is too big to compute and has no repeated blocks to cut'
    ref = cut_blocks(ref, cuts).to_empty(device='cpu')
    model = cut_blocks(model, cuts).to_empty(device='cpu')
    size = sum(p.numel() for p in model.parameters())
    assert size * 4 <= PARITY_MAX_BYTES, f'{name} cut to the first blocks of each stage still has {size} parameters'
    for module in model.modules():
        if hasattr(module, 'init_non_persistent_buffers'):
            module.init_non_persistent_buffers()
    randomize_state(ref)
    model.load_state_dict(ref.state_dict())
    ref.eval(), model.eval()
    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref_feat, feat = ref.forward_features(x), model.forward_features(x)
        assert_equal(feat, ref_feat, f'{name} (cut) forward_features')
        assert_equal(model.forward_head(feat, pre_logits=True), ref.forward_head(ref_feat, pre_logits=True),
                     f'{name} (cut) pre_logits')
        assert_equal(model(x), ref(x), f'{name} (cut) logits')


def smallest_input(name: str, at_least: int = 64) -> Tuple[Dict[str, int], int]:
    """Constructor arguments and image side for the smallest input of at least ``at_least`` pixels that ``name``
    takes, as its family spec declares (input multiple, minimum side, the argument that fixes the size).

    >>> smallest_input('resnet18')
    ({}, 64)
    """
    side = input_side_for(name, at_least)
    return size_kwargs(name, side), side


def dilated_parity_by_hand(name: str, output_stride: int, dilate: Callable[[nn.Module, int], List[int]],
                           features_skip: int = 0) -> None:
    """featzoo's ``output_stride`` build of ``name`` equals timm's stride-32 model dilated by hand: ``dilate``
    rewrites the timm model's strides and dilations in place and returns the level reductions it now has. Checked:
    feature_info's reductions, every ``forward_intermediates`` level, the logits and the ``features_only`` maps
    (which leave out the first ``features_skip`` levels)."""
    ref = build_timm_reference(name)
    reductions = dilate(ref, output_stride)
    path = save_state(ref.state_dict())
    model = featzoo.create_model(name, output_stride=output_stride, checkpoint_path=path).eval()
    assert [level['reduction'] for level in model.feature_info] == reductions
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model.forward_intermediates(x, intermediates_only=True)
        theirs = ref.forward_intermediates(x, intermediates_only=True)
        assert [t.shape[-1] for t in theirs] == [64 // r for r in reductions]
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_equal(a, b, f'{name} os{output_stride} level {i}')
        assert_equal(model(x), ref(x), f'{name} os{output_stride} logits')
    backbone = featzoo.create_model(name, features_only=True, output_stride=output_stride, checkpoint_path=path)
    with torch.no_grad():
        got = backbone.eval()(x)
    assert len(got) == len(theirs) - features_skip
    for i, (a, b) in enumerate(zip(got, theirs[features_skip:]), start=features_skip):
        assert_equal(a, b, f'{name} os{output_stride} features_only level {i}')


def dilated_levels_are_densified(build: Callable[..., nn.Module], name: str, output_stride: int) -> None:
    """Where dilating changes no window (no global gate over the map), each level of ``build(name,
    output_stride=...)`` is the stride-32 level computed densely: sampling it every ``step`` pixels gives it back."""
    ref = build(name).eval()
    randomize_state(ref)
    model = build(name, output_stride=output_stride).eval()
    model.load_state_dict(ref.state_dict())
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = ref.forward_intermediates(x, intermediates_only=True)
        got = model.forward_intermediates(x, intermediates_only=True)
    for i, (e, g, r_ref, r) in enumerate(zip(expected, got, [lv['reduction'] for lv in ref.feature_info],
                                             [lv['reduction'] for lv in model.feature_info])):
        step = r_ref // r
        assert g.shape[-1] == e.shape[-1] * step, (i, g.shape, e.shape)
        assert_equal(g[:, :, ::step, ::step], e, f'{name} os{output_stride} level {i}')


def group_matcher_and_drop_path_like_timm(build: Callable[..., nn.Module], name: str) -> None:
    """``group_matcher`` (fine and coarse) groups ``name``'s parameters as timm's does, and a drop-path rate is
    spread over the same blocks with the same probabilities."""
    import timm
    from timm.layers import DropPath as TimmDropPath
    from timm.models._manipulate import group_with_matcher
    from featzoo.layers import DropPath
    ref = timm.create_model(name, drop_path_rate=0.2)
    model = build(name, drop_path_rate=0.2)
    for coarse in (False, True):
        ours = group_with_matcher(model.named_parameters(), model.group_matcher(coarse), return_values=False)
        theirs = group_with_matcher(ref.named_parameters(), ref.group_matcher(coarse), return_values=False)
        assert ours == theirs
    ours = {n: m.drop_prob for n, m in model.named_modules() if isinstance(m, DropPath)}
    theirs = {n: m.drop_prob for n, m in ref.named_modules() if isinstance(m, TimmDropPath)}
    assert ours.keys() == theirs.keys() and len(ours) > 0
    for key in ours:
        assert abs(ours[key] - theirs[key]) < 1e-6, key


def hand_dilation_plan(reduction: int, output_stride: int, num_steps: int) -> List[Tuple[int, int, int]]:
    """How a timm network now at ``reduction`` is dilated by hand to ``output_stride``: for each of its next
    ``num_steps`` stride-2 steps, the reduction after it and the dilation before and after it (the same two while
    the step still strides).

    >>> hand_dilation_plan(4, 8, 3)
    [(8, 1, 1), (8, 1, 2), (8, 2, 4)]
    """
    plan, dilation = [], 1
    for _ in range(num_steps):
        if reduction < output_stride:
            reduction *= 2
            plan.append((reduction, dilation, dilation))
        else:
            plan.append((reduction, dilation, dilation * 2))
            dilation *= 2
    return plan


def hand_dilated_parity(name: str, output_stride: int, ref: nn.Module, dilate: Callable[[nn.Module, int], int],
                        levels: Callable[[nn.Module, torch.Tensor], Sequence[torch.Tensor]],
                        wrappers: Sequence[str] = ('list',), **kwargs: Any) -> None:
    """featzoo's ``output_stride`` build of ``name`` (with ``kwargs``) against timm's model ``ref`` dilated by hand
    (``dilate`` changes it in place and returns how many layers it changed; ``levels`` gives its feature maps):
    equal ``forward_features`` and logits, and each wrapper in ``wrappers`` returns the declared shapes, the last
    at ``64 // output_stride``, equal to timm's maps."""
    path = save_state(ref.state_dict())
    model = featzoo.create_model(name, output_stride=output_stride, checkpoint_path=path, **kwargs).eval()
    assert dilate(ref, output_stride) > 0  # timm's network was strided, not dilated
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert_equal(model.forward_features(x), ref.forward_features(x), f'{name} os{output_stride}')
        assert_equal(model(x), ref(x), f'{name} os{output_stride} logits')
        expected = levels(ref, x)
    for feature_cls in wrappers:
        backbone = featzoo.create_model(name, features_only=True, feature_cls=feature_cls,
                                        output_stride=output_stride, checkpoint_path=path, **kwargs).eval()
        feats = check_feature_shapes(backbone, x)
        assert feats[-1].shape[-1] == 64 // output_stride
        for i, feat in enumerate(feats):
            assert_equal(feat, expected[i], f'{name} os{output_stride} {feature_cls} level {i}')
