"""TensorFlow-style 'SAME' padding for ported TensorFlow weights (tf_* variants)."""
from __future__ import annotations

from typing import Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from .helpers import get_padding, to_2tuple


def same_padding_amount(size: int, kernel: int, stride: int, dilation: int) -> int:
    """Total padding TensorFlow adds along one axis for 'SAME'.

    >>> same_padding_amount(224, 3, 2, 1)
    1
    """
    # integer ceil division: with symbolic sizes (dynamic export) a float ceil becomes a harder expression to reason about
    out_size = (size + stride - 1) // stride
    return max((out_size - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)


def pad_same(x: torch.Tensor, kernel_size, stride, dilation=(1, 1), value: float = 0.0) -> torch.Tensor:
    """Pad ``x`` (NCHW) as TensorFlow's 'SAME' would, extra pixel on the bottom/right.

    >>> pad_same(torch.ones(1, 1, 5, 5), (3, 3), (2, 2)).shape
    torch.Size([1, 1, 7, 7])
    """
    ih, iw = x.shape[-2:]
    pad_h = same_padding_amount(ih, kernel_size[0], stride[0], dilation[0])
    pad_w = same_padding_amount(iw, kernel_size[1], stride[1], dilation[1])
    if pad_h > 0 or pad_w > 0:
        x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=value)
    return x


def is_static_same(kernel_size: int, stride: int = 1, dilation: int = 1) -> bool:
    """'SAME' padding is a fixed symmetric amount when the stride is 1 and the span is odd."""
    return stride == 1 and (dilation * (kernel_size - 1)) % 2 == 0


class Conv2dSame(nn.Conv2d):
    """Conv2d whose padding is computed per input as TensorFlow's 'SAME'."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, 0, dilation, groups, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_same(x, self.kernel_size, self.stride, self.dilation)
        return F.conv2d(x, self.weight, self.bias, self.stride, (0, 0), self.dilation, self.groups)


class DynamicSamePadding:
    """Mixin for a Conv2d subclass whose ``__init__`` takes ``padding``: TensorFlow 'SAME' padding instead. Where
    'SAME' is a fixed symmetric amount (stride 1, odd span) it is the static ``padding``; otherwise each input is
    padded for its own size before the parent's ``forward`` runs.

    >>> class SameConv(DynamicSamePadding, nn.Conv2d): pass
    >>> SameConv(3, 4, 3, stride=2)(torch.ones(1, 3, 15, 15)).shape
    torch.Size([1, 4, 8, 8])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                 **kwargs) -> None:
        dynamic_same = not is_static_same(kernel_size, stride, dilation)
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                         padding=0 if dynamic_same else get_padding(kernel_size, stride, dilation),
                         dilation=dilation, **kwargs)
        self.dynamic_same = dynamic_same

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dynamic_same:
            x = pad_same(x, self.kernel_size, self.stride, self.dilation)
        return super().forward(x)


class MaxPool2dSame(nn.MaxPool2d):
    """MaxPool2d with TensorFlow 'SAME' padding (padded with -inf)."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False) -> None:
        super().__init__(to_2tuple(kernel_size), to_2tuple(stride or kernel_size), (0, 0), to_2tuple(dilation),
                         ceil_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_same(x, self.kernel_size, self.stride, self.dilation, value=-float('inf'))
        return F.max_pool2d(x, self.kernel_size, self.stride, (0, 0), self.dilation, self.ceil_mode)


def create_conv2d(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                  padding: Union[str, int] = '', dilation: int = 1, groups: int = 1, bias: bool = False,
                  depthwise: bool = False) -> nn.Conv2d:
    """Conv2d with ``padding`` given as ``''`` (symmetric, PyTorch style), ``'same'`` (TensorFlow) or an int.

    >>> create_conv2d(3, 8, 3, stride=2, padding='same').__class__.__name__
    'Conv2dSame'
    """
    if depthwise:
        groups = out_channels
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == 'same':
            if is_static_same(kernel_size, stride, dilation):
                return nn.Conv2d(in_channels, out_channels, kernel_size, stride, get_padding(kernel_size, stride,
                                 dilation), dilation, groups, bias)
            return Conv2dSame(in_channels, out_channels, kernel_size, stride, 0, dilation, groups, bias)
        if mode in ('', 'pytorch'):
            padding = get_padding(kernel_size, stride, dilation)
        elif mode == 'valid':
            padding = 0
        else:
            raise ValueError(f"unknown padding {padding!r}; valid: '', 'same', 'valid' or an int")
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)


PaddingArg = Union[str, int, Tuple[int, int]]
