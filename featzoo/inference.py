"""A fast inference path: batch norm folded into convolutions, oneDNN linear layers and prepacked convolution
weights, channels_last, inference mode, optionally bfloat16, each chosen by what the running CPU does well.

This is the only place where featzoo changes how a model computes for speed: models from ``create_model`` are plain
modules that compute what timm computes.

Rewrites are found by running one example forward, not by module names. A BatchNorm2d is folded into a Conv2d only
when the norm receives the very tensor the convolution returned and nothing else reads that tensor. That one rule
covers every family's layout (``conv``/``bn``, ``conv_pw``/``bn2``, ``Sequential(Conv2d, BatchNorm2d)``,
ConvNormAct, BatchNormAct2d, FrozenBatchNorm2d) and never folds a norm that sits before a convolution (DenseNet's
pre-activation) or a convolution whose output is also used elsewhere (a tapped feature, a residual). The same rule
fuses a GELU or ReLU module into the linear layer that feeds it, and chains an MLP's second linear layer to its
first so that large hidden activations are computed in blocks of rows.
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

from .layers.activations import GELU, GELUTanh
from .layers.norm import FrozenBatchNorm2d
from .layers.helpers import is_channels_last
from .layers.onednn import PackedConvForward, _onednn_conv_works, _plain_cpu_float, pack_convolutions

__all__ = ['optimize_for_inference', 'fold_conv_bn', 'use_onednn_linear', 'use_fused_linear', 'InferenceModel',
           'OneDnnLinear', 'FusedLinear',
           'max_relative_error', 'CpuFeatures', 'cpu_features', 'InferencePlan', 'plan_inference',
           'fuse_conv_activations', 'fold_channel_scales']

# methods of the wrapped model that InferenceModel runs under the same settings as forward
_FORWARD_METHODS = ('forward_features', 'forward_head', 'forward_intermediates')


def _is_foldable_norm(module: nn.Module) -> bool:
    if isinstance(module, FrozenBatchNorm2d):
        return True
    return (isinstance(module, nn.BatchNorm2d) and module.track_running_stats
            and module.running_mean is not None and module.running_var is not None)


def _has_hooks(module: nn.Module) -> bool:
    # a feature wrapper's hook reads this module's output or input; a rewrite would change what it captures
    return bool(module._forward_hooks or module._forward_pre_hooks)


def _norm_replacement(norm: nn.Module) -> nn.Module:
    # BatchNormAct2d and its frozen form keep their activation; dropout is the identity in eval mode
    act = getattr(norm, 'act', None)
    return act if isinstance(act, nn.Module) else nn.Identity()


class _UseCounter(TorchFunctionMode):
    """Counts, per watched tensor, the torch calls that read it and return a tensor (size queries do not count)."""

    def __init__(self) -> None:
        super().__init__()
        self.watched: Dict[int, torch.Tensor] = {}
        self.uses: Dict[int, int] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        if self.watched:
            produced = any(isinstance(r, torch.Tensor) for r in tree_flatten(result)[0])
            if produced:
                for leaf in tree_flatten((args, kwargs))[0]:
                    if isinstance(leaf, torch.Tensor) and self.watched.get(id(leaf)) is leaf:
                        self.uses[id(leaf)] += 1
        return result


class _Trace:
    """What one example forward showed: how often each module ran, and the (producer, consumer) pairs in which the
    consumer was the only reader of the producer's output."""

    def __init__(self) -> None:
        self.calls: Dict[int, int] = {}
        self.pairs: List[Tuple[nn.Module, nn.Module]] = []

    def ran_once(self, *modules: nn.Module) -> bool:
        return all(self.calls.get(id(m)) == 1 for m in modules)


def _trace(model: nn.Module, example: torch.Tensor, producers: Sequence[nn.Module],
           consumers: Sequence[nn.Module]) -> _Trace:
    counter = _UseCounter()
    trace = _Trace()
    made_by: Dict[int, nn.Module] = {}
    candidates: List[Tuple[nn.Module, nn.Module, torch.Tensor]] = []

    def after_producer(module: nn.Module, args: Any, output: Any) -> None:
        trace.calls[id(module)] = trace.calls.get(id(module), 0) + 1
        if isinstance(output, torch.Tensor):
            counter.watched[id(output)] = output
            counter.uses[id(output)] = 0
            made_by[id(output)] = module

    producer_ids = {id(m) for m in producers}

    def before_consumer(module: nn.Module, args: Any) -> None:
        if id(module) not in producer_ids:  # a module in both roles is counted once, by its forward hook
            trace.calls[id(module)] = trace.calls.get(id(module), 0) + 1
        x = args[0] if args else None
        if isinstance(x, torch.Tensor) and counter.watched.get(id(x)) is x:
            candidates.append((made_by[id(x)], module, x))

    released = set()

    def after_consumer(module: nn.Module, args: Any, output: Any) -> None:
        x = args[0] if args else None
        if output is x and isinstance(x, torch.Tensor) and counter.watched.get(id(x)) is x:
            # an in-place consumer (ReLU(inplace=True)): whoever reads this tensor from now on reads its result
            del counter.watched[id(x)]
            released.add(id(x))

    handles = [m.register_forward_hook(after_producer) for m in producers]
    handles += [m.register_forward_pre_hook(before_consumer) for m in consumers]
    handles += [m.register_forward_hook(after_consumer) for m in consumers]
    try:
        with torch.no_grad(), counter:
            output = model(example)
    finally:
        for handle in handles:
            handle.remove()
    returned = {id(t) for t in tree_flatten(output)[0] if isinstance(t, torch.Tensor)}
    for producer, consumer, tensor in candidates:
        # a module run twice (shared weights) may meet other tensors elsewhere; a returned tensor is read by the caller
        caller_reads = id(tensor) in returned and id(tensor) not in released
        if trace.ran_once(producer, consumer) and counter.uses[id(tensor)] == 1 and not caller_reads:
            trace.pairs.append((producer, consumer))
    return trace


def _traced(model: nn.Module, input_size: Optional[Sequence[int]], producers: Sequence[nn.Module],
            consumers: Sequence[nn.Module]) -> _Trace:
    inputs = _example_inputs(model, input_size)
    for i, example in enumerate(inputs):
        try:
            return _trace(model, example, producers, consumers)
        except Exception as exc:  # noqa: BLE001 - the model rejects this size; the next candidate may fit
            if i == len(inputs) - 1:
                sizes = [tuple(t.shape[1:]) for t in inputs]
                raise RuntimeError(f'the tracing forward that finds the layers to rewrite failed at input sizes '
                                   f'{sizes}; pass input_size=(C, H, W) that this model accepts') from exc
    raise AssertionError('unreachable: _example_inputs returns at least one input')


@torch.no_grad()
def _fold_into_conv(conv: nn.Conv2d, norm: nn.Module) -> None:
    # computed in float64 so that folding adds no error of its own beyond the final rounding
    dtype = conv.weight.dtype
    var = norm.running_var.double()
    mean = norm.running_mean.double()
    gamma = norm.weight.double() if norm.weight is not None else torch.ones_like(var)
    beta = norm.bias.double() if norm.bias is not None else torch.zeros_like(var)
    scale = gamma * torch.rsqrt(var + norm.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(mean)
    weight = conv.weight.double() * scale.reshape(-1, *([1] * (conv.weight.ndim - 1)))
    conv.weight = nn.Parameter(weight.to(dtype), requires_grad=False)
    conv.bias = nn.Parameter(((bias - mean) * scale + beta).to(dtype), requires_grad=False)


def _owners(model: nn.Module) -> Dict[int, List[Tuple[nn.Module, str]]]:
    owners: Dict[int, List[Tuple[nn.Module, str]]] = {}
    for parent in model.modules():
        for name, child in parent._modules.items():
            if child is not None:
                owners.setdefault(id(child), []).append((parent, name))
    return owners


def _example_inputs(model: nn.Module, input_size: Optional[Sequence[int]]) -> List[torch.Tensor]:
    """Inputs to try for the tracing forward: the given size, else a cheap 64x64 probe and then the configured size."""
    ref = next((p for p in list(model.parameters()) + list(model.buffers()) if p.is_floating_point()), None)
    device = ref.device if ref is not None else torch.device('cpu')
    dtype = ref.dtype if ref is not None else torch.float32
    if input_size is not None:
        sizes = [tuple(input_size)]
    else:
        first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        chans = first.in_channels if first is not None else 3
        cfg = getattr(model, 'pretrained_cfg', None) or {}
        # which layer reads which layer's output does not depend on the image size, so a small probe finds the pairs
        # at a fraction of the cost; models that only accept their configured size get that next
        sizes = [(chans, 64, 64), tuple(cfg.get('input_size') or (chans, 224, 224))]
    return [torch.zeros(1, *size, device=device, dtype=dtype) for size in dict.fromkeys(sizes)]


def _check_input_size(input_size: Any) -> Optional[Tuple[int, int, int]]:
    if input_size is None:
        return None
    if (not isinstance(input_size, (tuple, list)) or len(input_size) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in input_size)):
        raise ValueError(f'input_size must be (channels, height, width) with positive ints, got {input_size!r}')
    return tuple(input_size)


def _check_model(model: Any) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f'model must be a torch.nn.Module, got {type(model).__name__}')


def fold_conv_bn(model: nn.Module, input_size: Optional[Sequence[int]] = None) -> List[str]:
    """Fold every batch norm that directly follows a convolution into that convolution, in place (eval mode).

    The norm is replaced by its activation (or an identity), so the model computes the same function with fewer
    passes over memory; it can no longer be trained and its state_dict loses the norms' keys. ``input_size``
    (C, H, W) is the size of the one example forward that finds the pairs (default: a 64x64 probe, then the
    model's ``pretrained_cfg['input_size']``). Returns the names of the folded norms.

    >>> m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
    >>> fold_conv_bn(m.eval(), input_size=(3, 16, 16))
    ['1']
    >>> m
    Sequential(
      (0): Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1))
      (1): Identity()
      (2): ReLU()
    )
    """
    _check_model(model)
    input_size = _check_input_size(input_size)
    model.eval()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and not _has_hooks(m)]
    norms = [m for m in model.modules() if _is_foldable_norm(m) and not _has_hooks(m)]

    def fold(conv: nn.Module, norm: nn.Module) -> Optional[nn.Module]:
        if norm.num_features != conv.out_channels:
            return None
        _fold_into_conv(conv, norm)
        return _norm_replacement(norm)

    return [norm for _, norm in _rewrite_pairs(model, input_size, convs, norms, fold)]


def _rewrite_pairs(model: nn.Module, input_size: Optional[Tuple[int, int, int]], producers: Sequence[nn.Module],
                   consumers: Sequence[nn.Module],
                   rewrite: Callable[[nn.Module, nn.Module], Optional[nn.Module]]) -> List[Tuple[str, str]]:
    """One tracing forward, then for each (producer, consumer) pair in which the consumer alone reads the producer's
    output and each sits in one place of the model: ``rewrite`` changes the producer and returns the consumer's
    replacement (None leaves the pair alone). Returns the (producer, consumer) names of the rewritten pairs."""
    if not producers or not consumers:
        return []
    trace = _traced(model, input_size, producers, consumers)
    owners = _owners(model)
    names = {id(m): n for n, m in model.named_modules()}
    done = []
    for producer, consumer in trace.pairs:
        places = owners.get(id(consumer), [])
        if len(places) != 1 or len(owners.get(id(producer), [])) != 1:
            continue  # registered under two parents: replacing one place would leave the other stale
        replacement = rewrite(producer, consumer)
        if replacement is None:
            continue
        parent, attr = places[0]
        setattr(parent, attr, replacement)
        done.append((names[id(producer)], names[id(consumer)]))
    return done


@torch.no_grad()
def fold_channel_scales(model: nn.Module) -> List[str]:
    """Fold each per-channel scale a module declares foldable into the layer whose output channels it alone scales,
    in place, and drop the scale (the module skips a scale that is None). A module declares such scales as a class
    attribute ``foldable_scales = {'<parameter>': '<path of an nn.Linear or nn.Conv2d>'}`` (ConvNeXt's layer scale
    ``gamma`` after ``mlp.fc2``): a fact of its forward, which no tracing can see in a multiply by a parameter.
    A scale or a layer under a hook is left alone (the hook would see other values). Returns the scales' names.

    One pass over the block's output less (ConvNeXt-T at batch 8: 18 multiplies, about 9 ms on a 2-core EPYC).

    >>> class Block(nn.Module):
    ...     foldable_scales = {'gamma': 'fc'}
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.fc, self.gamma = nn.Linear(4, 4), nn.Parameter(torch.full((4,), 0.5))
    >>> fold_channel_scales(Block())
    ['gamma']
    """
    _check_model(model)
    folded = []
    for name, module in model.named_modules():
        for attr, path in getattr(type(module), 'foldable_scales', {}).items():
            scale = getattr(module, attr, None)
            try:
                layer = module.get_submodule(path)
            except AttributeError:
                continue
            if (not isinstance(scale, nn.Parameter) or type(layer) not in (nn.Linear, nn.Conv2d) or _has_hooks(layer)
                    or _has_hooks(module) or scale.shape != (layer.weight.shape[0],)):
                continue
            # in float64, so that folding adds no error of its own beyond the final rounding
            factor = scale.double()
            layer.weight.copy_(layer.weight.double() * factor.reshape(-1, *[1] * (layer.weight.dim() - 1)))
            if layer.bias is not None:
                layer.bias.copy_(layer.bias.double() * factor)
            setattr(module, attr, None)
            folded.append(f'{name}.{attr}' if name else attr)
    return folded


def _remove_dropout(model: nn.Module) -> None:
    """Replace dropout layers (identities in eval mode) by ``nn.Identity``, so that an MLP's two linear layers are
    seen as one reading the other's output alone (see :meth:`OneDnnLinear.chain_with`)."""
    for places in _owners(model).values():
        parent, attr = places[0]
        module = getattr(parent, attr)
        if type(module) in (nn.Dropout, nn.Dropout1d, nn.Dropout2d) and not _has_hooks(module):
            for parent, attr in places:
                setattr(parent, attr, nn.Identity())


def _conv_post_op(module: nn.Module) -> Optional[str]:
    """oneDNN's name of an activation module a packed convolution can apply itself."""
    return {nn.ReLU: 'relu', nn.SiLU: 'swish'}.get(type(module))


def fuse_conv_activations(model: nn.Module, input_size: Optional[Sequence[int]] = None) -> List[str]:
    """Let each packed convolution (:func:`featzoo.layers.onednn.pack_convolutions`) apply the ReLU or SiLU module
    that alone reads its output, in place; that module becomes an identity. Returns the names of the convolutions.

    Element-wise passes cost as much as a convolution when memory is slow (resnet50 at batch 8: the ReLUs took as
    long as all convolutions in bfloat16), and oneDNN applies the activation while the output is still in cache.

    >>> from featzoo.layers.onednn import pack_convolutions
    >>> m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()).eval()
    >>> pack_convolutions(m), fuse_conv_activations(m, input_size=(3, 8, 8)), m[1]
    (['0'], ['0'], Identity())
    """
    _check_model(model)
    input_size = _check_input_size(input_size)
    convs = [m for m in model.modules() if isinstance(m.__dict__.get('_conv_forward'), PackedConvForward)
             and m._conv_forward.activation == 'none' and not _has_hooks(m)]
    acts = [m for m in model.modules() if _conv_post_op(m) is not None and not _has_hooks(m)]

    def fuse(conv: nn.Module, act: nn.Module) -> nn.Module:
        conv._conv_forward.activation = _conv_post_op(act)
        return nn.Identity()

    return [conv for conv, _ in _rewrite_pairs(model, input_size, convs, acts, fuse)]


def _onednn_activation(module: nn.Module) -> Optional[Tuple[str, str]]:
    """(post-op, algorithm) of an activation module oneDNN can apply inside the matrix multiply."""
    if isinstance(module, nn.GELU) and module.approximate in ('none', 'tanh'):
        return 'gelu', module.approximate
    if type(module) is GELU:
        return 'gelu', 'none'
    if type(module) is GELUTanh:
        return 'gelu', 'tanh'
    if type(module) is nn.ReLU:
        return 'relu', ''
    return None


class FusedLinear(nn.Module):
    """A linear layer, optionally followed by GELU or ReLU, run on the CPU as one kernel call per block of rows.

    Three kernels, chosen by :func:`plan_inference`:
    - ``'onednn'``: oneDNN's matrix multiply with the activation as a post-op (faster than the default BLAS call
      for the tall, thin products of vision models on AVX-512 CPUs);
    - ``'blas'``: the default BLAS product (what ``F.linear`` calls), the activation applied in place right after,
      while the block is still in the caches;
    - ``'conv1x1'``: the rows as a channels_last 1x1 convolution on oneDNN, on the weight packed once for their
      count, where :func:`conv1x1_suits` says so; ``'blas'`` elsewhere. On a 2-core AVX2 EPYC (Zen 2) such a
      product of 1576 rows, 768 -> 3072, ran at 189 GFLOP/s against BLAS's 148 (and oneDNN's matrix multiply's
      166 on a 2048^3 product).
    Keeps ``weight`` and ``bias`` under the linear layer's names. Built by :func:`use_fused_linear`; only for
    inference.

    >>> layer = FusedLinear(nn.Linear(4, 8), nn.GELU(), kernel='blas')
    >>> layer(torch.ones(2, 3, 4)).shape
    torch.Size([2, 3, 8])
    """

    def __init__(self, linear: nn.Linear, activation: Optional[nn.Module] = None, kernel: str = 'onednn') -> None:
        super().__init__()
        _check_kernel(kernel)
        post = _onednn_activation(activation) if activation is not None else None
        if activation is not None and post is None:
            raise ValueError(f'activation {activation!r} cannot be fused; valid: nn.GELU, nn.ReLU')
        self.kernel = kernel
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self.post_op, self.algorithm = post if post is not None else ('none', '')
        self.applied_by: Optional[str] = None  # set when the previous layer runs this one (see chain_with)
        self.__dict__['_pack'] = None  # conv1x1: (key, weight packed for oneDNN); not state, never copied
        self.__dict__['_second'] = None  # the layer run right after this one, block by block (see chain_with)
        # decided here, not at the call: torch.compile would break its graph at the cached build check
        self.conv1x1_ready = kernel == 'conv1x1' and _onednn_conv_works(torch.float32)

    def __getstate__(self) -> Dict[str, Any]:
        # oneDNN tensors can be neither pickled nor deep-copied: a copy packs again at its first call
        state = self.__dict__.copy()
        state['_pack'] = None
        return state

    def _uses_conv(self, rows: torch.Tensor) -> bool:
        if not (self.conv1x1_ready and conv1x1_suits(self.in_features, rows.shape[0])
                and rows.dtype == torch.float32):
            return False
        if torch.compiler.is_compiling():
            return _CONV1X1_OP is not None  # an opaque call the compiled graph keeps (fake tensors inside)
        return _plain_cpu_float(rows) and not (torch.is_grad_enabled() and (rows.requires_grad or
                                                                            self.weight.requires_grad))

    def chain_with(self, second: 'FusedLinear', first_name: str = 'the previous layer') -> None:
        """Run ``second`` right after this layer, block of rows by block of rows, when the activations between them
        are large; ``second`` (which keeps its weights and its place) then passes its input through unchanged.
        Only valid when ``second`` alone reads this layer's output.

        Blocks matter on the CPU: a large hidden activation goes out to memory and comes back once for the
        activation and once for the second product, while a block's stays in the caches; the results are the same
        rows of the same products. With the oneDNN kernel (AVX-512) the blocks start above glibc's largest mmap
        threshold (32 MiB: fresh pages on every call, e.g. ConvNeXt's first stage at batch 8); with the BLAS kernel
        above 8 MiB when the first product is narrow (at most 256 inputs: ConvNeXt's first two stages, 1.6x and
        1.4x faster MLPs on a 2-core AVX2 EPYC), since wider products lose more to smaller blocks than they gain.
        """
        if second.in_features != self.out_features:
            raise ValueError(f'cannot chain a layer of {self.out_features} outputs with one of {second.in_features} '
                             f'inputs')
        self.__dict__['_second'] = second  # not a child: the second layer's weights stay under its own name
        second.applied_by = first_name

    def _rows(self, rows: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.kernel == 'onednn':
            result = torch.ops.mkldnn._linear_pointwise(rows, self.weight, self.bias, self.post_op, [],
                                                        self.algorithm)
            return result if out is None else out.copy_(result)
        conv = self._uses_conv(rows)
        if conv:  # oneDNN applies a ReLU itself; its GELU post-op is 7x slower than torch's on AVX2
            if torch.compiler.is_compiling():
                result = _CONV1X1_OP(rows, self.weight, self.bias, self.post_op == 'relu')
            else:
                result = _conv1x1_rows(rows, self.weight, self.bias, self.post_op == 'relu', self.__dict__)
        elif self.bias is None:
            result = torch.mm(rows, self.weight.t(), out=out)
        else:
            result = torch.addmm(self.bias, rows, self.weight.t(), out=out)
        if self.post_op == 'gelu':
            if torch.compiler.is_compiling():
                result = nn.functional.gelu(result, approximate=self.algorithm)
            else:
                torch._C._nn.gelu_(result, approximate=self.algorithm)  # in place: the product is ours alone
        elif self.post_op == 'relu' and not conv:
            result.relu_()
        return result if out is None or result is out else out.copy_(result)

    def _block_rows(self, rows: int) -> Optional[int]:
        """Rows per block for a chained product over ``rows`` rows (None: one call for all of them)."""
        hidden_bytes = rows * self.out_features * self.weight.element_size()
        if self.kernel == 'onednn':
            threshold = _BLOCK_ABOVE_BYTES
        else:
            threshold = _BLAS_BLOCK_ABOVE_BYTES if self.in_features <= _BLAS_BLOCK_MAX_INPUTS else None
        if threshold is None or hidden_bytes <= threshold:
            return None
        block_bytes = _CONV1X1_BLOCK_BYTES if self.kernel == 'conv1x1' else _BLOCK_BYTES
        return max(64, block_bytes // (self.out_features * self.weight.element_size()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.applied_by is not None:
            return x
        rows = x.reshape(-1, self.in_features).contiguous()
        second: Optional[FusedLinear] = self._second  # a plain attribute: torch.compile reads it like eager
        block = self._block_rows(rows.shape[0]) if second is not None else None
        if second is None:
            out = self._rows(rows)
        elif block is None:
            out = second._rows(self._rows(rows))
        else:
            out = rows.new_empty(rows.shape[0], second.out_features)
            # BLAS writes each block's hidden rows into one reused buffer; oneDNN returns its own
            hidden = None if self.kernel == 'onednn' or self._uses_conv(rows[:block]) else \
                rows.new_empty(block, self.out_features)
            for start in range(0, rows.shape[0], block):
                part = rows[start:start + block]
                hid = self._rows(part, None if hidden is None else hidden[:part.shape[0]])
                second._rows(hid, out[start:start + part.shape[0]])
        return out.reshape(*x.shape[:-1], out.shape[-1])

    def extra_repr(self) -> str:
        text = (f'in_features={self.in_features}, out_features={self.out_features}, kernel={self.kernel!r}, '
                f'post_op={self.post_op!r}')
        return text + (f', applied_by={self.applied_by!r}' if self.applied_by is not None else '')


class OneDnnLinear(FusedLinear):
    """A :class:`FusedLinear` on oneDNN's kernel (what :func:`use_onednn_linear` builds).

    >>> OneDnnLinear(nn.Linear(4, 8), nn.GELU()).kernel
    'onednn'
    """

    def __init__(self, linear: nn.Linear, activation: Optional[nn.Module] = None) -> None:
        super().__init__(linear, activation, kernel='onednn')


LINEAR_KERNELS = ('onednn', 'blas', 'conv1x1')


def _check_kernel(kernel: Any) -> None:
    if kernel not in LINEAR_KERNELS:
        raise ValueError(f'kernel must be one of {LINEAR_KERNELS}, got {kernel!r}')


def _conv1x1_parts(in_features: int) -> Optional[int]:
    """In how many equal slices of inputs the ``'conv1x1'`` kernel splits a product (1: none), each of at most
    ``_CONV1X1_MAX_INPUTS``; None when no such split exists (the product stays on BLAS).

    >>> _conv1x1_parts(768), _conv1x1_parts(3072), _conv1x1_parts(6144), _conv1x1_parts(2309)
    (1, 2, 3, None)
    """
    if in_features <= _CONV1X1_MAX_INPUTS:
        return 1
    parts = -(-in_features // _CONV1X1_MAX_INPUTS)
    while parts <= _CONV1X1_MAX_PARTS:
        if in_features % (parts * 8) == 0:  # slices of whole 8-float vectors
            return parts
        parts += 1
    return None


def _conv1x1_rows(rows: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], relu: bool,
                  cache: Dict[str, Any]) -> torch.Tensor:
    """``rows @ weight.T + bias`` (then ReLU) as a oneDNN 1x1 convolution: (rows, C) contiguous is a (1, C, rows, 1)
    channels_last map, so neither side is copied. The weight is packed for this row count and kept in
    ``cache['_pack']`` with the packs of the previous count (a blocked MLP's blocks and its shorter last block; a
    batch and a shorter last batch): oneDNN lays it out for one count, and another count can run 3x slower on it.

    A product of more than ``_CONV1X1_MAX_INPUTS`` inputs runs as equal slices of its inputs (:func:`_conv1x1_parts`),
    each slice's product added into the first's by oneDNN in place: with 3072 or 4096 inputs oneDNN's single
    convolution ran at 49-55 GFLOP/s at many row counts (392, 1568, 3136) on a 2-core AVX2 EPYC, two slices of 1536
    at 181-187 at every count measured (BLAS: 139-150). Each slice of the rows is copied once (a small fraction of
    the product's time)."""
    count = rows.shape[0]
    parts = _conv1x1_parts(weight.shape[1])
    if parts is None:
        raise ValueError(f'a product of {weight.shape[1]} inputs cannot run as 1x1 convolutions; see conv1x1_suits')
    width = weight.shape[1] // parts
    key = (weight.data_ptr(), weight._version, tuple(weight.shape))
    packs = cache.get('_pack')
    if packs is None or packs[0] != key:  # a new or changed weight: forget the old packs
        packs = cache['_pack'] = (key, {})
    packed = packs[1].get(count)
    if packed is None:
        with torch.no_grad():
            plain = weight.detach()
            packed = tuple(torch._C._nn.mkldnn_reorder_conv2d_weight(
                plain[:, i * width:(i + 1) * width, None, None].contiguous().to_mkldnn(), [0, 0], [1, 1], [1, 1], 1,
                [1, width, count, 1]) for i in range(parts))
        if len(packs[1]) >= _CONV1X1_PACKS:  # the oldest count goes
            packs[1].pop(next(iter(packs[1])))
        packs[1][count] = packed
    bias = None if bias is None else bias.detach()
    geometry = ([0, 0], [1, 1], [1, 1], 1)
    mapped = None
    for i in range(parts):
        # the whole width of contiguous rows is a view; a narrower slice is copied once
        images = rows[:, i * width:(i + 1) * width].contiguous().t()[None, :, :, None]
        relu_now = relu and i == parts - 1  # the ReLU after the last slice only
        if mapped is None:
            mapped = torch.ops.mkldnn._convolution_pointwise(images, packed[i], bias, *geometry,
                                                             'relu' if relu_now else 'none', [], '')
        else:  # mapped += this slice's product, in one oneDNN pass
            mapped = torch.ops.mkldnn._convolution_pointwise_.binary(mapped, images, packed[i], None, *geometry, 'add',
                                                                     1.0, 'relu' if relu_now else None, [], '')
    return mapped[0, :, :, 0].t()


def _register_conv1x1_op() -> Optional[Callable[..., torch.Tensor]]:
    """``featzoo::linear_conv1x1``: the conv1x1 product as one operator torch.compile keeps as an opaque call (it
    cannot trace oneDNN's packed tensors), so the compiled graph fuses what lies around it. Packs are kept per
    weight tensor and row count, for the weights a compiled graph holds. None where torch has no custom operators."""
    custom_op = getattr(getattr(torch, 'library', None), 'custom_op', None)
    if custom_op is None:
        return None
    packs: Dict[Tuple[int, int], Dict[str, Any]] = {}

    @custom_op('featzoo::linear_conv1x1', mutates_args=())
    def linear_conv1x1(rows: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                       relu: bool) -> torch.Tensor:
        slot = packs.setdefault((weight.data_ptr(), rows.shape[0]), {})
        if len(packs) > 4096:  # weights of discarded models: forget the oldest
            packs.pop(next(iter(packs)))
        return _conv1x1_rows(rows, weight, bias, relu, slot)

    @linear_conv1x1.register_fake
    def _(rows: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], relu: bool) -> torch.Tensor:
        return rows.new_empty(rows.shape[0], weight.shape[0])

    return linear_conv1x1


_CONV1X1_OP = _register_conv1x1_op()


def conv1x1_suits(in_features: int, rows: int) -> bool:
    """Whether the ``'conv1x1'`` kernel runs a product of ``rows`` rows and ``in_features`` inputs as a oneDNN 1x1
    convolution (else BLAS).

    Measured on a 2-core AVX2 EPYC (Zen 2) for 11 shapes at 200-3136 rows: with 192 to 2304 inputs the convolution
    was faster at every count (1.03x-1.86x, mostly 1.2-1.4x); with 3072 or 4096 inputs a single convolution was
    2.7-3x slower at many counts (oneDNN picks another algorithm there), so such products run as slices of at most
    2304 inputs (:func:`_conv1x1_parts`: 1.2-1.3x BLAS at 197-3136 rows); with 96 inputs it was slower below about
    1000 rows.

    >>> conv1x1_suits(768, 1576), conv1x1_suits(3072, 392), conv1x1_suits(96, 512), conv1x1_suits(2309, 512)
    (True, True, False, False)
    """
    return _conv1x1_parts(in_features) is not None and (in_features >= _CONV1X1_NARROW_INPUTS or
                                                        rows >= _CONV1X1_NARROW_MIN_ROWS)


_CONV1X1_MAX_INPUTS = 2304
_CONV1X1_MAX_PARTS = 8  # wider products than 8 slices can hold stay on BLAS
_CONV1X1_NARROW_INPUTS = 192
_CONV1X1_NARROW_MIN_ROWS = 1024
_BLOCK_ABOVE_BYTES = 32 << 20  # glibc never serves larger blocks from its heap: fresh pages at every call
_BLOCK_BYTES = 2 << 20  # hidden activations of one block of rows, small enough to stay in the caches
_BLAS_BLOCK_ABOVE_BYTES = 8 << 20  # BLAS kernel: hidden activations beyond the last-level cache share of a core
_BLAS_BLOCK_MAX_INPUTS = 256  # BLAS kernel: wider first products are compute-bound, blocks only shrink them
_CONV1X1_PACKS = 2  # packed copies of a weight kept, for this many row counts
_CONV1X1_BLOCK_BYTES = 4 << 20  # conv1x1 kernel: 4 MiB blocks beat 2 MiB ones (ConvNeXt stage 1: 70 vs 78 ms)


_LINEAR_DTYPES = (torch.float32, torch.bfloat16)


@functools.lru_cache(maxsize=None)
def _onednn_linear_works(dtype: torch.dtype = torch.float32) -> bool:
    """Whether this torch build has oneDNN's linear kernel for ``dtype`` and it agrees with F.linear (checked once
    per dtype; bfloat16 to its own rounding)."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, '_linear_pointwise')):
        return False
    gen = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(s, generator=gen, device='cpu') for s in ((37, 24), (40, 24), (40,)))
    layer = OneDnnLinear(nn.Linear(24, 40, device='cpu'), nn.GELU())
    layer.weight, layer.bias = nn.Parameter(w.to(dtype)), nn.Parameter(b.to(dtype))
    reference = nn.functional.gelu(nn.functional.linear(x, w, b))
    try:
        with torch.no_grad():
            return torch.allclose(layer(x.to(dtype)).float(), reference, atol=1e-4 if dtype == torch.float32 else 0.1)
    except RuntimeError:  # a build whose oneDNN lacks this kernel for this CPU or dtype
        return False


def use_fused_linear(model: nn.Module, input_size: Optional[Sequence[int]] = None, kernel: str = 'onednn') -> List[str]:
    """Replace float32 or bfloat16 CPU ``nn.Linear`` layers by :class:`FusedLinear` on ``kernel``, fusing a
    GELU/ReLU module that alone reads a layer's output, in place, and chain each pair whose second layer alone reads
    the first one's output (:meth:`FusedLinear.chain_with`). A build without oneDNN keeps its layers for
    ``kernel='onednn'``.
    Returns the names of the replaced layers.

    >>> m = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.GELU(), nn.Linear(8, 2)).eval()
    >>> use_fused_linear(m, input_size=(3, 2, 2), kernel='blas')
    ['1', '3']
    >>> m[2]
    Identity()
    """
    _check_model(model)
    _check_kernel(kernel)
    input_size = _check_input_size(input_size)
    model.eval()
    linears = [m for m in model.modules() if type(m) is nn.Linear and not _has_hooks(m)
               and m.weight.dtype in _LINEAR_DTYPES and m.weight.device.type == 'cpu']
    if not linears or (kernel == 'onednn' and
                       not all(_onednn_linear_works(dtype) for dtype in {m.weight.dtype for m in linears})):
        return []
    acts = [m for m in model.modules() if _onednn_activation(m) is not None and not _has_hooks(m)]
    trace = _traced(model, input_size, linears, acts)
    fused = {id(linear): act for linear, act in trace.pairs}
    owners = _owners(model)
    names = {id(m): n for n, m in model.named_modules()}
    replaced = []
    for linear in linears:
        places = owners.get(id(linear), [])
        if not trace.calls.get(id(linear)) or len(places) != 1:
            continue  # never run (e.g. a head the wrapper skips), or registered twice
        act = fused.get(id(linear))
        act_places = owners.get(id(act), []) if act is not None else []
        if len(act_places) != 1:
            act = None
        parent, attr = places[0]
        setattr(parent, attr, FusedLinear(linear, act, kernel))
        if act is not None:
            act_parent, act_attr = act_places[0]
            setattr(act_parent, act_attr, nn.Identity())
        replaced.append(names[id(linear)])
    _chain_linear_pairs(model, input_size)
    return replaced


def use_onednn_linear(model: nn.Module, input_size: Optional[Sequence[int]] = None) -> List[str]:
    """Replace every float32 or bfloat16 CPU ``nn.Linear`` by a :class:`FusedLinear` on oneDNN
    (:func:`use_fused_linear` with ``kernel='onednn'``). Returns the names of the replaced layers.

    >>> m = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.GELU(), nn.Linear(8, 2)).eval()
    >>> use_onednn_linear(m, input_size=(3, 2, 2))
    ['1', '3']
    """
    return use_fused_linear(model, input_size, kernel='onednn')


def _chain_linear_pairs(model: nn.Module, input_size: Optional[Tuple[int, int, int]]) -> None:
    """Chain each fused linear layer whose output only the next fused linear layer reads (an MLP's two layers,
    with the activation fused into the first) so that large hidden activations are computed in blocks of rows."""
    layers = [m for m in model.modules() if isinstance(m, FusedLinear) and m.applied_by is None]
    if len(layers) < 2:
        return
    trace = _traced(model, input_size, layers, layers)
    names = {id(m): n for n, m in model.named_modules()}
    owners = _owners(model)
    for first, second in trace.pairs:
        if len(owners.get(id(first), [])) == 1 and len(owners.get(id(second), [])) == 1 \
                and first._second is None and second.applied_by is None and first.applied_by is None:
            first.chain_with(second, names[id(first)])


OUTPUT_LAYOUTS = ('channels_last', 'nchw')
DTYPES = (torch.float32, torch.bfloat16)


def _check_output_layout(output_layout: Any) -> None:
    if output_layout not in OUTPUT_LAYOUTS:
        raise ValueError(f'unknown output_layout {output_layout!r}; valid: {OUTPUT_LAYOUTS}')


def _check_dtype(dtype: Any) -> torch.dtype:
    if dtype not in DTYPES:
        raise ValueError(f'unsupported dtype {dtype!r}; valid: {DTYPES}')
    return dtype


@dataclass(frozen=True)
class CpuFeatures:
    """The instruction sets and the maker that decide what :func:`optimize_for_inference` does on a CPU.

    >>> CpuFeatures(avx2=True).native_bf16
    False
    """
    avx2: bool = False
    avx512f: bool = False
    avx512_bf16: bool = False
    amx_bf16: bool = False
    vendor: str = ''  # /proc/cpuinfo's vendor_id ('AuthenticAMD', 'GenuineIntel'); '' when unknown

    @property
    def native_bf16(self) -> bool:
        """Whether the CPU multiplies bfloat16 in hardware (otherwise oneDNN emulates it, slower than float32)."""
        return self.avx512_bf16 or self.amx_bf16

    def flags(self) -> List[str]:
        """The names of the instruction sets present, as /proc/cpuinfo spells them.

        >>> CpuFeatures(avx2=True, avx512f=True).flags()
        ['avx2', 'avx512f']
        """
        return [name for name in ('avx2', 'avx512f', 'avx512_bf16', 'amx_bf16') if getattr(self, name)]


def _cpuinfo(path: str = '/proc/cpuinfo') -> Optional[Tuple[set, str]]:
    """(flags, vendor_id) of the first processor in ``path``; None without a readable flags line."""
    vendor = ''
    try:
        with open(path, encoding='utf-8', errors='replace') as f:
            for line in f:
                if line.startswith('vendor_id'):
                    vendor = line.partition(':')[2].strip()
                elif line.startswith('flags'):
                    return set(line.partition(':')[2].split()), vendor
    except OSError:
        pass
    return None


@functools.lru_cache(maxsize=None)
def cpu_features() -> CpuFeatures:
    """The running CPU's instruction sets and maker: from /proc/cpuinfo where there is one, else from what torch
    detected (``torch.backends.cpu.get_cpu_capability()``, and oneDNN's bfloat16 check; the maker is then unknown).

    >>> isinstance(cpu_features(), CpuFeatures)
    True
    """
    info = _cpuinfo()
    if info is not None:
        flags, vendor = info
        return CpuFeatures(avx2='avx2' in flags, avx512f='avx512f' in flags, avx512_bf16='avx512_bf16' in flags,
                           amx_bf16='amx_bf16' in flags, vendor=vendor)
    capability = torch.backends.cpu.get_cpu_capability().upper()  # 'DEFAULT', 'AVX2', 'AVX512', 'ZVECTOR'...
    bf16_check = getattr(torch.ops.mkldnn, '_is_mkldnn_bf16_supported', None)
    bf16 = bool(bf16_check()) if bf16_check is not None and capability == 'AVX512' else False
    return CpuFeatures(avx2=capability in ('AVX2', 'AVX512'), avx512f=capability == 'AVX512', avx512_bf16=bf16)


@dataclass(frozen=True)
class InferencePlan:
    """What :func:`optimize_for_inference` does to a model: chosen from the CPU's instruction sets by
    :func:`plan_inference`, the same choice every time on the same CPU (no timing race).

    >>> InferencePlan(torch.float32, onednn_linear=False, packed_convolutions=True).dtype
    torch.float32
    """
    dtype: torch.dtype
    onednn_linear: bool
    packed_convolutions: bool
    note: str = ''  # why a requested setting was not applied ('' when all was)
    linear_kernel: str = ''  # the FusedLinear kernel of the linear layers ('' : left as they are)

    def as_dict(self) -> Dict[str, Any]:
        """A JSON-ready record of the plan (``featzoo extract`` stores it with its job).

        >>> InferencePlan(torch.bfloat16, True, False).as_dict()['dtype']
        'bfloat16'
        """
        return {'dtype': str(self.dtype).replace('torch.', ''), 'onednn_linear': self.onednn_linear,
                'packed_convolutions': self.packed_convolutions, 'linear_kernel': self.linear_kernel, 'note': self.note}


def plan_inference(features: CpuFeatures, dtype: torch.dtype = torch.float32, device_type: str = 'cpu') -> InferencePlan:
    """Choose the transformations for a model on ``device_type`` with a CPU of these ``features``.

    Batch-norm folding, channels_last and inference mode always apply. On the CPU:
    - convolutions without groups run on weights packed once for oneDNN (float32 and bfloat16; faster with AVX2 and
      AVX-512, and 2.5x faster than ``F.conv2d`` in bfloat16 for a 3x3 256-channel layer on AMX);
    - linear layers on AMD CPUs (where the kernels were measured) with AVX-512 run as oneDNN matrix multiplies with
      their GELU/ReLU fused (:class:`FusedLinear`, ``kernel='onednn'``); with AVX2 as oneDNN 1x1 convolutions on
      packed weights where :func:`conv1x1_suits` says so, BLAS elsewhere (``kernel='conv1x1'``); on other CPUs
      (Intel, unknown makers, no AVX2) on BLAS with the activation applied in place (``'blas'``), the call they
      already make. On a 2-core AVX2 AMD EPYC (Zen 2) oneDNN's matrix multiplies made ConvNeXt and ViT features
      0.99x / 0.94x of timm eager, the conv1x1 kernel 1.16-1.18x / 1.16-1.22x (narrow MLPs in blocks of rows that
      stay in cache);
    - ``torch.bfloat16`` is used only where the CPU multiplies it natively (AVX512_BF16 or AMX); elsewhere oneDNN
      emulates it, several times slower than float32 (4.7x for extraction on an AVX2 machine), so the plan keeps
      float32 and says why in ``note``.
    Other devices get the cast and no CPU kernel.

    >>> plan_inference(CpuFeatures(avx2=True), torch.bfloat16).dtype
    torch.float32
    >>> plan_inference(CpuFeatures(avx2=True, avx512f=True, avx512_bf16=True), torch.bfloat16).dtype
    torch.bfloat16
    >>> plan_inference(CpuFeatures(avx2=True, vendor='AuthenticAMD')).linear_kernel
    'conv1x1'
    >>> plan_inference(CpuFeatures(avx2=True, vendor='GenuineIntel')).linear_kernel
    'blas'
    """
    dtype = _check_dtype(dtype)
    if device_type != 'cpu':
        return InferencePlan(dtype, onednn_linear=False, packed_convolutions=False)
    note = ''
    if dtype == torch.bfloat16 and not features.native_bf16:
        note = ('bfloat16 requested, but this CPU has no native bfloat16 (no avx512_bf16 or amx_bf16 flag; it would '
                'be emulated, slower than float32): running float32')
        dtype = torch.float32
    kernel = 'onednn' if features.avx512f else 'conv1x1' if features.avx2 else 'blas'
    if features.vendor not in _LINEAR_KERNELS_MEASURED_ON:
        kernel = 'blas'  # F.linear's own call: what the model was given, so never slower on an unmeasured CPU
    return InferencePlan(dtype, onednn_linear=kernel == 'onednn', packed_convolutions=True, note=note,
                         linear_kernel=kernel)


# The oneDNN linear kernels were measured against BLAS on AMD EPYC only (Zen 2 with AVX2, Zen 4 with AVX-512), where
# MKL is not at its best; elsewhere (Intel, whose MKL is tuned for its own cores; unknown makers) linear layers keep
# the BLAS call they already make until a measurement says otherwise.
_LINEAR_KERNELS_MEASURED_ON = ('AuthenticAMD',)


def _nchw(t: Any) -> Any:
    return t.contiguous() if is_channels_last(t) else t


class InferenceModel(nn.Module):
    """Runs the wrapped model in inference mode on channels_last input (cast to bfloat16 for a bfloat16 plan).

    ``forward_features``, ``forward_head`` and ``forward_intermediates`` of the wrapped model run under the same
    settings; other attributes (``feature_info``, ``pretrained_cfg``, ``num_features``...) are read from it, and it
    stays reachable as ``.module``; ``.plan`` tells what was applied. With ``output_layout='channels_last'`` 4D maps
    come out as the network computed them, mostly channels_last (equal values; ``.contiguous()`` gives NCHW,
    ``.reshape`` works where ``.view`` would not); with ``'nchw'`` every channels_last map is copied into contiguous
    NCHW. A bfloat16 plan returns bfloat16 outputs.

    >>> m = InferenceModel(nn.Conv2d(3, 4, 1))
    >>> m(torch.ones(1, 3, 2, 2)).is_inference()
    True
    """

    def __init__(self, module: nn.Module, compiled: Optional[Callable[..., Any]] = None,
                 output_layout: str = 'channels_last', plan: Optional[InferencePlan] = None) -> None:
        super().__init__()
        _check_output_layout(output_layout)
        self.module = module
        self.output_layout = output_layout
        self.plan = plan if plan is not None else InferencePlan(torch.float32, False, False)
        # the compiled callable shares the module's parameters: kept out of _modules so they are not listed twice
        object.__setattr__(self, '_run', compiled if compiled is not None else module)
        object.__setattr__(self, '_compiled', compiled is not None)

    def _call(self, fn: Callable[..., Any], x: Any, *args: Any, **kwargs: Any) -> Any:
        with torch.inference_mode():
            if isinstance(x, torch.Tensor) and x.is_floating_point():
                if self.plan.dtype != torch.float32:  # float32 plans leave a float64 model's inputs alone
                    x = x.to(self.plan.dtype)
                if x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
            if self._compiled:
                # compilation happens at the first call of each new input shape, so freezing must be on at every
                # call; torch.compile(options={'freezing': True}) does not reach the inductor pass that reads it
                import torch._inductor.config as inductor_config
                with inductor_config.patch(freezing=True):
                    out = fn(x, *args, **kwargs)
            else:
                out = fn(x, *args, **kwargs)
            return tree_map(_nchw, out) if self.output_layout == 'nchw' else out

    def forward(self, x: torch.Tensor) -> Any:
        return self._call(self._run, x)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == 'module':
                raise
            value = getattr(self._modules['module'], name)
            if name in _FORWARD_METHODS and callable(value):
                return lambda x, *args, **kwargs: self._call(value, x, *args, **kwargs)
            return value

    def train(self, mode: bool = True) -> 'InferenceModel':
        if mode:
            raise RuntimeError('an optimize_for_inference model cannot be trained: its batch norms are folded '
                               'into the convolutions; build a fresh model with featzoo.create_model to train')
        return super().train(False)


def _model_device_type(model: nn.Module) -> str:
    ref = next((t for t in list(model.parameters()) + list(model.buffers())), None)
    return ref.device.type if ref is not None else 'cpu'


def optimize_for_inference(model: nn.Module, compile: bool = False,
                           input_size: Optional[Sequence[int]] = None,
                           output_layout: str = 'channels_last',
                           dtype: torch.dtype = torch.float32,
                           features: Optional[CpuFeatures] = None) -> InferenceModel:
    """Prepare a model (or a features_only wrapper) for fast inference; float32 outputs stay within
    1e-4 * max(1, max|eager|) of eager.

    Always: eval mode, gradients off, batch norm folded into the preceding convolution (:func:`fold_conv_bn`),
    declared layer scales folded into the layer they scale (:func:`fold_channel_scales`), dropout removed, weights and inputs in channels_last, every call in ``torch.inference_mode()``. Then, as
    :func:`plan_inference` chooses for this CPU (``features``, default :func:`cpu_features`): linear layers with their
    GELU/ReLU fused, on oneDNN's matrix multiply with AVX-512 and as oneDNN 1x1 convolutions with AVX2, MLPs in
    blocks of rows where large (:func:`use_fused_linear`), ungrouped convolutions on weights packed
    once for oneDNN (:func:`featzoo.layers.onednn.pack_convolutions`) applying the ReLU/SiLU that follows them
    (:func:`fuse_conv_activations`). ``dtype=torch.bfloat16`` casts the
    model, its inputs and so its outputs to bfloat16 where the CPU has native bfloat16 (AVX512_BF16 or AMX) or on a
    GPU; elsewhere it warns once and runs float32 (``.plan.note`` says why). With ``compile=True`` the model also goes
    through ``torch.compile`` with weight freezing (each new input shape compiles at its first call, which takes a
    while). ``input_size`` (C, H, W) sizes the one tracing forward when the model accepts neither 64x64 nor its
    configured size. The model is modified in place (keep a ``copy.deepcopy`` for training).

    ``output_layout='channels_last'`` (the default) returns 4D maps in the layout the network computed them in,
    with the same values; ``'nchw'`` copies each channels_last map into contiguous NCHW (for resnet50 features at
    batch 8 those copies were about 10% of the optimized forward).

    >>> import featzoo
    >>> m = optimize_for_inference(featzoo.create_model('resnet18', features_only=True))
    >>> [f.shape[1] for f in m(torch.ones(1, 3, 64, 64))]
    [64, 64, 128, 256, 512]
    """
    _check_model(model)
    if isinstance(model, torch.jit.ScriptModule):
        raise TypeError('model is a TorchScript module; pass the eager nn.Module instead')
    if isinstance(model, InferenceModel):
        raise TypeError('model was already passed through optimize_for_inference; pass the original model')
    if not isinstance(compile, bool):
        raise TypeError(f'compile must be True or False, got {compile!r}')
    if features is not None and not isinstance(features, CpuFeatures):
        raise TypeError(f'features must be a featzoo.inference.CpuFeatures, got {type(features).__name__}')
    _check_output_layout(output_layout)  # before the model is changed in place
    input_size = _check_input_size(input_size)
    model = getattr(model, '_orig_mod', model)  # an already torch.compile'd module: optimize what it wraps
    plan = plan_inference(features if features is not None else cpu_features(), dtype, _model_device_type(model))
    if plan.note:
        warnings.warn(plan.note, RuntimeWarning, stacklevel=2)
    model.eval()
    model.requires_grad_(False)
    fold_conv_bn(model, input_size)  # in the model's own precision, before any cast
    fold_channel_scales(model)
    if plan.dtype != torch.float32:
        model.to(plan.dtype)
    model.to(memory_format=torch.channels_last)
    _remove_dropout(model)
    if plan.linear_kernel:
        use_fused_linear(model, input_size, kernel=plan.linear_kernel)
    if plan.packed_convolutions:
        pack_convolutions(model)  # inside torch.compile the plain convolution is traced
        fuse_conv_activations(model, input_size)
    return InferenceModel(model, torch.compile(model) if compile else None, output_layout, plan)


def _relative_error(actual: torch.Tensor, reference: torch.Tensor) -> float:
    ref = reference.detach().float()
    if not ref.numel():
        return 0.0
    return (actual.detach().float() - ref).abs().max().item() / max(1.0, ref.abs().max().item())


def max_relative_error(actual: Any, reference: Any) -> float:
    """Largest max|a - b| / max(1, max|b|) over matching tensors of two outputs (tensors, lists, dicts).

    >>> max_relative_error([torch.ones(2)], [torch.ones(2)])
    0.0
    """
    a, _ = tree_flatten(actual)
    b, _ = tree_flatten(reference)
    if len(a) != len(b):
        raise ValueError(f'outputs differ in structure: {len(a)} tensors vs {len(b)}')
    return max((_relative_error(x, y) for x, y in zip(a, b)), default=0.0)
