"""Opt-in eager float32 CPU inference on oneDNN's own weight layout, with activations in channels_last.

``F.conv2d`` on the CPU hands oneDNN a plain OIHW weight, which oneDNN reorders into its blocked layout at every
call, and on NCHW activations it runs its slower plain-layout kernels. Every featzoo model's ungrouped
``nn.Conv2d`` gets a stand-in for its ``_conv_forward`` (:func:`prepack_convolutions`) that, once enabled, reorders
the weight once, at the first inference call, and calls oneDNN directly; its output comes back channels_last, so
the rest of the network (norms, activations, pooling, grouped and depthwise convolutions) also runs on channels_last
activations. Public methods turn 4D outputs back into contiguous NCHW (:func:`contiguous_outputs`), so callers
see what they always saw. Measured against timm's eager forward at batch 2, 224 px, 2 threads: resnet50 0.75x the
time, densenet121 0.70x, efficientnet_b0 0.73x, regnety_032 0.88x.

Off by default: channels_last 3x3 convolutions round differently (about 2e-6 relative per layer against float64,
0.3e-6 for the plain NCHW kernels), so outputs are no longer the very numbers timm computes; deep networks with
random weights drift apart by more than the 1e-5 that featzoo's weight-compatibility tests allow. Turn it on with
``FEATZOO_ONEDNN=1`` in the environment (read at import) or :func:`set_enabled`; ``optimize_for_inference`` always
uses it (it already runs channels_last). The packed copy costs the convolution weights' memory once more.

The module stays a plain ``nn.Conv2d`` (same class, state_dict, repr; FX keeps it a leaf). The fast path runs only
for float32 CPU tensors of the plain ``torch.Tensor`` type, without autograd or autocast, not while tracing,
scripting or compiling (torch.compile and torch.export see ``F.conv2d``), and for parameters that record in-place
changes (a changed or replaced weight is packed again). Everything else runs ``F.conv2d``.
"""
from __future__ import annotations

import contextlib
import functools
import os
import threading
import weakref
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple, TypeVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._pytree import tree_map

__all__ = ['prepack_convolutions', 'contiguous_outputs', 'nchw_outputs', 'channels_last_outputs', 'is_channels_last',
           'set_enabled', 'is_enabled', 'PackedConvForward']

_enabled = os.environ.get('FEATZOO_ONEDNN', '0').strip().lower() in ('1', 'true', 'yes', 'on')


def set_enabled(enabled: bool) -> None:
    """Turn the oneDNN fast path of featzoo models' convolutions on or off (process-wide; off by default).

    >>> set_enabled(False)
    """
    global _enabled
    if not isinstance(enabled, bool):
        raise TypeError(f'enabled must be True or False, got {enabled!r}')
    _enabled = enabled


def is_enabled() -> bool:
    """Whether prepacked convolutions take the oneDNN path where it applies.

    >>> isinstance(is_enabled(), bool)
    True
    """
    return _enabled


def _cpu_autocast_enabled() -> bool:
    try:
        return torch.is_autocast_enabled('cpu')
    except TypeError:  # torch < 2.4 has no device argument
        return torch.is_autocast_cpu_enabled()


def _plain_cpu_float(t: torch.Tensor) -> bool:
    # exact types only: fake, functional and other subclass tensors and proxies take the plain path
    return type(t) in (torch.Tensor, nn.Parameter) and t.device.type == 'cpu' and t.dtype == torch.float32


def _packable_parameter(t: Optional[torch.Tensor]) -> bool:
    # a parameter made in inference mode records no in-place change: a packed copy could silently go stale
    return t is None or (_plain_cpu_float(t) and not t.is_inference())


def _geometry(conv: nn.Conv2d) -> Tuple[List[int], List[int], List[int], int]:
    return list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups


def _pack(weight: torch.Tensor, geometry: Tuple[List[int], List[int], List[int], int],
          input_shape: Sequence[int]) -> torch.Tensor:
    # oneDNN picks the blocked layout for this input shape; other shapes still compute correctly
    padding, stride, dilation, groups = geometry
    with torch.no_grad():
        return torch._C._nn.mkldnn_reorder_conv2d_weight(weight.detach().contiguous().to_mkldnn(), padding, stride,
                                                         dilation, groups, list(input_shape))


def _run_packed(x: torch.Tensor, packed: torch.Tensor, bias: Optional[torch.Tensor],
                geometry: Tuple[List[int], List[int], List[int], int]) -> torch.Tensor:
    padding, stride, dilation, groups = geometry
    return torch.ops.mkldnn._convolution_pointwise(x, packed, None if bias is None else bias.detach(), padding,
                                                   stride, dilation, groups, 'none', [], '')


class PackedConvForward:
    """Stands in for one ``nn.Conv2d``'s ``_conv_forward``: oneDNN on a weight packed once where that is invisible,
    ``F.conv2d`` everywhere else. Installed by :func:`prepack_convolutions`.

    >>> conv = nn.Conv2d(3, 8, 3, padding=1).eval()
    >>> conv._conv_forward = PackedConvForward(conv)
    >>> with torch.inference_mode():
    ...     conv(torch.ones(1, 3, 8, 8)).shape
    torch.Size([1, 8, 8, 8])
    """

    def __init__(self, conv: nn.Conv2d, always: bool = False) -> None:
        self.conv = conv
        self.always = always  # set by optimize_for_inference: on whatever the process-wide switch says
        self.packed: Optional[torch.Tensor] = None
        self.key: Optional[Tuple[Any, ...]] = None
        self.source: Optional['weakref.ReferenceType[torch.Tensor]'] = None

    def _applies(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> bool:
        # first: tracers and compilers must record F.conv2d, not the oneDNN call (and cannot evaluate what follows)
        if not (_enabled or self.always):
            return False
        if torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting():
            return False
        if not (x.dim() == 4 and _plain_cpu_float(x) and _packable_parameter(weight) and _packable_parameter(bias)):
            return False
        if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                        or (bias is not None and bias.requires_grad)):
            return False
        # autocast decides the dtype of F.conv2d; the build check runs once, at the first call that qualifies
        return not _cpu_autocast_enabled() and _onednn_conv_works()

    def _weight_for(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        geometry = _geometry(self.conv)
        # the very tensor object (not its address: a replaced weight's memory is soon reused by its successor), its
        # storage and its in-place version, and the geometry it was packed for
        padding, stride, dilation, groups = geometry
        key = (weight.data_ptr(), weight._version, tuple(weight.shape), tuple(padding), tuple(stride), tuple(dilation),
               groups)
        if self.source is None or self.source() is not weight or self.key != key:
            self.packed = _pack(weight, geometry, x.shape)
            self.key, self.source = key, weakref.ref(weight)
        return self.packed

    def __call__(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        conv = self.conv
        if self._applies(x, weight, bias):
            try:
                return _run_packed(x, self._weight_for(x, weight), bias, _geometry(conv))
            except RuntimeError:
                pass  # a call oneDNN refuses (wrong channel count...): F.conv2d gives the usual error or result
        return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)

    def __getstate__(self) -> dict:
        # oneDNN tensors can be neither pickled nor deep-copied; a copy packs again at its first call
        return {'conv': self.conv, 'always': self.always, 'packed': None, 'key': None, 'source': None}

    def __repr__(self) -> str:
        return f'PackedConvForward(packed={self.packed is not None})'


@functools.lru_cache(maxsize=None)
def _onednn_conv_works() -> bool:
    """Whether this torch build packs convolution weights for oneDNN and matches F.conv2d (checked once)."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, '_convolution_pointwise')
            and hasattr(torch._C._nn, 'mkldnn_reorder_conv2d_weight')):
        return False
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(16, 8, 3, 3, generator=gen, device='cpu')
    bias = torch.randn(16, generator=gen, device='cpu')
    x = torch.randn(2, 8, 9, 9, generator=gen, device='cpu')
    geometry = ([1, 1], [2, 2], [1, 1], 1)
    try:
        with torch.no_grad():
            fast = _run_packed(x, _pack(weight, geometry, x.shape), bias, geometry)
            return torch.allclose(fast, F.conv2d(x, weight, bias, 2, 1), atol=1e-4, rtol=1e-4)
    except RuntimeError:  # a build whose oneDNN lacks these kernels for this CPU
        return False


def _prepackable(module: nn.Module) -> bool:
    # grouped and depthwise convolutions run slower on packed weights (efficientnet_b0 1.10x the time, measured)
    return (type(module) is nn.Conv2d and module.groups == 1 and not isinstance(module.padding, str)
            and module.padding_mode == 'zeros')


def prepack_convolutions(model: nn.Module, always: bool = False) -> List[str]:
    """Give every ungrouped, zero-padded ``nn.Conv2d`` of ``model`` the oneDNN fast path, in place; returns their
    names. The path runs when :func:`set_enabled` (or ``FEATZOO_ONEDNN=1``) turns it on, or for every call with
    ``always=True``; a torch build without oneDNN's kernels runs ``F.conv2d`` throughout.

    >>> m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=8))
    >>> prepack_convolutions(m)
    ['0']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f'model must be a torch.nn.Module, got {type(model).__name__}')
    if not isinstance(always, bool):
        raise TypeError(f'always must be True or False, got {always!r}')
    # no kernel check here: creation stays free of oneDNN's start-up (the first call that qualifies checks the build)
    names = []
    for name, module in model.named_modules():
        if not _prepackable(module):
            continue
        installed = module.__dict__.get('_conv_forward')
        if isinstance(installed, PackedConvForward):
            installed.always = installed.always or always
        elif installed is None:
            module._conv_forward = PackedConvForward(module, always)
        else:
            continue  # someone else's stand-in: left alone
        names.append(name)
    return names


def is_channels_last(t: Any) -> bool:
    """Whether ``t`` is a 4D tensor laid out channels_last (and not also plain contiguous, as 1x1 maps are).

    >>> is_channels_last(torch.ones(1, 2, 3, 3).contiguous(memory_format=torch.channels_last))
    True
    """
    return (isinstance(t, torch.Tensor) and t.dim() == 4 and not t.is_contiguous()
            and t.is_contiguous(memory_format=torch.channels_last))


def _nchw(t: Any) -> Any:
    return t.contiguous() if is_channels_last(t) else t


_layout = threading.local()  # .keep: this thread's calls hand channels_last maps out as they are


@contextlib.contextmanager
def channels_last_outputs() -> Iterator[None]:
    """Inside this context, :func:`nchw_outputs` (and so :func:`contiguous_outputs`) leave channels_last maps as
    they are: ``optimize_for_inference`` models skip a copy per returned map. Per thread; torch.compile guards on it.

    >>> with channels_last_outputs():
    ...     nchw_outputs(torch.ones(1, 2, 3, 3).contiguous(memory_format=torch.channels_last)).is_contiguous()
    False
    """
    previous = getattr(_layout, 'keep', False)
    _layout.keep = True
    try:
        yield
    finally:
        _layout.keep = previous


def nchw_outputs(outputs: Any) -> Any:
    """``outputs`` (a tensor, or lists, tuples, dicts of them) with every 4D channels_last tensor made contiguous NCHW
    (unchanged inside :func:`channels_last_outputs`).

    >>> nchw_outputs({'a': torch.ones(1, 2, 3, 3).contiguous(memory_format=torch.channels_last)})['a'].is_contiguous()
    True
    """
    if getattr(_layout, 'keep', False):
        return outputs
    return tree_map(_nchw, outputs)


Fn = TypeVar('Fn', bound=Callable[..., Any])


def contiguous_outputs(fn: Fn) -> Fn:
    """Decorate a public forward method: 4D channels_last tensors in its output (tensor, list, tuple, dict) come back
    as contiguous NCHW, as the method would return without the fast path; anything else passes through.

    >>> @contiguous_outputs
    ... def f(x):
    ...     return [x.contiguous(memory_format=torch.channels_last)]
    >>> f(torch.ones(1, 2, 3, 3))[0].is_contiguous()
    True
    """
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return nchw_outputs(fn(*args, **kwargs))
    return wrapper  # type: ignore[return-value]
