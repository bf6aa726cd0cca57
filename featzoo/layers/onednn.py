"""oneDNN convolutions on weights packed once, for :func:`featzoo.optimize_for_inference` only.

``F.conv2d`` on the CPU hands oneDNN a plain OIHW weight, which oneDNN reorders into its blocked layout at every
call. :func:`pack_convolutions` gives each ungrouped ``nn.Conv2d`` a stand-in for its ``_conv_forward`` that reorders
the weight once, at the first call, and calls oneDNN directly on channels_last activations. Its outputs come back
channels_last, and they round differently from the plain NCHW kernels (about 2e-6 relative per 3x3 layer against
float64, 0.3e-6 for NCHW), which is why models built by ``create_model`` never use it: their outputs are the very
numbers timm computes, and their FX graphs equal their eager runs bit for bit.

The module stays a plain ``nn.Conv2d`` (same class, state_dict, repr; FX keeps it a leaf). The packed path runs
only for float32 or bfloat16 CPU tensors of the plain ``torch.Tensor`` type, without autograd or autocast, not while tracing,
scripting or compiling (torch.compile and torch.export see ``F.conv2d``), and for parameters that record in-place
changes (a changed or replaced weight is packed again). Everything else runs ``F.conv2d``.
"""
from __future__ import annotations

import functools
import weakref
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['pack_convolutions', 'PackedConvForward', 'CONV_ACTIVATIONS']

# activations oneDNN can apply inside a packed convolution (its post-op names), with the function other paths run
CONV_ACTIVATIONS: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {'relu': F.relu, 'swish': F.silu}


def _cpu_autocast_enabled() -> bool:
    try:
        return torch.is_autocast_enabled('cpu')
    except TypeError:  # torch < 2.4 has no device argument
        return torch.is_autocast_cpu_enabled()


PACKED_DTYPES = (torch.float32, torch.bfloat16)


def _plain_cpu_float(t: torch.Tensor) -> bool:
    # exact types only: fake, functional and other subclass tensors and proxies take the plain path
    return type(t) in (torch.Tensor, nn.Parameter) and t.device.type == 'cpu' and t.dtype in PACKED_DTYPES


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
                geometry: Tuple[List[int], List[int], List[int], int], activation: str = 'none') -> torch.Tensor:
    padding, stride, dilation, groups = geometry
    return torch.ops.mkldnn._convolution_pointwise(x, packed, None if bias is None else bias.detach(), padding,
                                                   stride, dilation, groups, activation, [], '')


class PackedConvForward:
    """Stands in for one ``nn.Conv2d``'s ``_conv_forward``: oneDNN on a weight packed once where that is invisible,
    ``F.conv2d`` everywhere else. Installed by :func:`pack_convolutions`. ``activation`` (a key of
    :data:`CONV_ACTIVATIONS`) is applied to the output, by oneDNN on the packed path (one pass over memory less).

    >>> conv = nn.Conv2d(3, 8, 3, padding=1).eval()
    >>> conv._conv_forward = PackedConvForward(conv)
    >>> with torch.inference_mode():
    ...     conv(torch.ones(1, 3, 8, 8)).shape
    torch.Size([1, 8, 8, 8])
    """

    def __init__(self, conv: nn.Conv2d, activation: str = 'none') -> None:
        if activation != 'none' and activation not in CONV_ACTIVATIONS:
            raise ValueError(f'activation {activation!r} cannot be fused; valid: {sorted(CONV_ACTIVATIONS)}')
        self.conv = conv
        self.activation = activation
        self.packed: Optional[torch.Tensor] = None
        self.key: Optional[Tuple[Any, ...]] = None
        self.source: Optional['weakref.ReferenceType[torch.Tensor]'] = None

    def _applies(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> bool:
        # first: tracers and compilers must record F.conv2d, not the oneDNN call (and cannot evaluate what follows)
        if torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting():
            return False
        if not (x.dim() == 4 and _plain_cpu_float(x) and _packable_parameter(weight) and _packable_parameter(bias)
                and x.dtype == weight.dtype and (bias is None or bias.dtype == x.dtype)):
            return False
        if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                        or (bias is not None and bias.requires_grad)):
            return False
        # autocast decides the dtype of F.conv2d; the build check runs once, at the first call that qualifies
        return not _cpu_autocast_enabled() and _onednn_conv_works(x.dtype)

    def _weight_for(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        geometry = _geometry(self.conv)
        # the very tensor object (not its address: a replaced weight's memory is soon reused by its successor), its
        # storage and its in-place version, the geometry, and the input shape it was packed for: oneDNN's layout for
        # one shape can be slow for another (packed during optimize_for_inference's 1x3x64x64 tracing forward,
        # resnet50 ran at half the speed of F.conv2d at batch 8, 224 px on an AVX2 EPYC), so a new shape repacks
        padding, stride, dilation, groups = geometry
        key = (weight.data_ptr(), weight._version, tuple(weight.shape), tuple(padding), tuple(stride), tuple(dilation),
               groups, tuple(x.shape))
        if self.source is None or self.source() is not weight or self.key != key:
            self.packed = _pack(weight, geometry, x.shape)
            self.key, self.source = key, weakref.ref(weight)
        return self.packed

    def __call__(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        conv = self.conv
        if self._applies(x, weight, bias):
            try:
                return _run_packed(x, self._weight_for(x, weight), bias, _geometry(conv), self.activation)
            except RuntimeError:
                pass  # a call oneDNN refuses (wrong channel count...): F.conv2d gives the usual error or result
        out = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        return out if self.activation == 'none' else CONV_ACTIVATIONS[self.activation](out)

    def __getstate__(self) -> dict:
        # oneDNN tensors can be neither pickled nor deep-copied; a copy packs again at its first call
        return {'conv': self.conv, 'activation': self.activation, 'packed': None, 'key': None, 'source': None}

    def __repr__(self) -> str:
        return f'PackedConvForward(packed={self.packed is not None}, activation={self.activation!r})'


@functools.lru_cache(maxsize=None)
def _onednn_conv_works(dtype: torch.dtype = torch.float32) -> bool:
    """Whether this torch build packs ``dtype`` convolution weights for oneDNN and matches F.conv2d (checked once per
    dtype; bfloat16 to its own rounding)."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, '_convolution_pointwise')
            and hasattr(torch._C._nn, 'mkldnn_reorder_conv2d_weight')):
        return False
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(16, 8, 3, 3, generator=gen, device='cpu')
    bias = torch.randn(16, generator=gen, device='cpu')
    x = torch.randn(2, 8, 9, 9, generator=gen, device='cpu')
    geometry = ([1, 1], [2, 2], [1, 1], 1)
    tolerance = 1e-4 if dtype == torch.float32 else 5e-2
    try:
        with torch.no_grad():
            reference = F.conv2d(x, weight, bias, 2, 1)
            fast = _run_packed(x.to(dtype), _pack(weight.to(dtype), geometry, x.shape), bias.to(dtype), geometry)
            return torch.allclose(fast.float(), reference, atol=tolerance, rtol=tolerance)
    except RuntimeError:  # a build whose oneDNN lacks these kernels for this CPU
        return False


def _prepackable(module: nn.Module) -> bool:
    # grouped and depthwise convolutions run slower on packed weights (efficientnet_b0 1.10x the time, measured)
    return (type(module) is nn.Conv2d and module.groups == 1 and not isinstance(module.padding, str)
            and module.padding_mode == 'zeros')


def pack_convolutions(model: nn.Module) -> List[str]:
    """Give every ungrouped, zero-padded ``nn.Conv2d`` of ``model`` the packed oneDNN path, in place; returns their
    names. A torch build without oneDNN's kernels runs ``F.conv2d`` throughout (checked at the first call).

    >>> m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=8))
    >>> pack_convolutions(m)
    ['0']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f'model must be a torch.nn.Module, got {type(model).__name__}')
    names = []
    for name, module in model.named_modules():
        if not _prepackable(module):
            continue
        installed = module.__dict__.get('_conv_forward')
        if installed is None:
            module._conv_forward = PackedConvForward(module)
        elif not isinstance(installed, PackedConvForward):
            continue  # someone else's stand-in: left alone
        names.append(name)
    return names
