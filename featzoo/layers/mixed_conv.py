"""Convolutions with more than one kernel: mixed kernel sizes over channel splits (MixConv) and conditionally
parameterized kernels mixed per sample from a bank of experts (CondConv).

Parameter names are timm's (``MixedConv2d`` children ``0``, ``1``, ...; ``CondConv2d.weight`` of shape
``(num_experts, out * in / groups * kh * kw)``), so its checkpoints load unchanged.

>>> MixedConv2d(12, 12, [3, 5], depthwise=True)(torch.ones(1, 12, 8, 8)).shape
torch.Size([1, 12, 8, 8])
"""
from __future__ import annotations

import math
from typing import List, Sequence, Union

import torch
from torch import nn
from torch.nn import functional as F

from .helpers import get_padding, to_2tuple
from .padding import create_conv2d, is_static_same, pad_same

__all__ = ['split_channels', 'MixedConv2d', 'CondConv2d', 'create_conv2d_any']

KernelSize = Union[int, Sequence[int]]


def split_channels(channels: int, parts: int) -> List[int]:
    """``channels`` shared out in ``parts`` near-equal splits; the first split takes the remainder.

    >>> split_channels(10, 3)
    [4, 3, 3]
    """
    splits = [channels // parts] * parts
    splits[0] += channels - sum(splits)
    return splits


class MixedConv2d(nn.ModuleDict):
    """One convolution per kernel size, each on its own split of the channels; outputs concatenated in order.

    ``depthwise`` makes every split a depthwise convolution (MixNet's mixed depthwise kernels); otherwise each split
    is a dense convolution of its input split onto its output split (MixNet's grouped 1x1 expansions).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: KernelSize = 3, stride: int = 1,
                 padding: str = '', dilation: int = 1, depthwise: bool = False, bias: bool = False) -> None:
        super().__init__()
        kernels = list(kernel_size) if isinstance(kernel_size, (list, tuple)) else [kernel_size]
        in_splits = split_channels(in_channels, len(kernels))
        out_splits = split_channels(out_channels, len(kernels))
        if min(in_splits + out_splits) < 1:
            raise ValueError(f'MixedConv2d cannot share {in_channels} -> {out_channels} channels among '
                             f'{len(kernels)} kernels {kernels}')
        self.in_channels = in_channels
        self.out_channels = out_channels
        for idx, (kernel, in_chs, out_chs) in enumerate(zip(kernels, in_splits, out_splits)):
            self.add_module(str(idx), create_conv2d(
                in_chs, out_chs, kernel, stride=stride, padding=padding, dilation=dilation,
                groups=in_chs if depthwise else 1, bias=bias))
        self.splits = in_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, self.splits, 1)
        # indexed, not zipped: a traced split is one value that FX cannot iterate
        return torch.cat([conv(parts[idx]) for idx, conv in enumerate(self.values())], 1)


class CondConv2d(nn.Module):
    """A convolution whose kernel is, per sample, the routing-weighted sum of ``num_experts`` kernels.

    ``forward(x, routing_weights)`` takes the ``(B, num_experts)`` weights; the batch is folded into the channel
    groups so that one grouped convolution applies every sample's own kernel.

    >>> conv = CondConv2d(4, 8, 3, num_experts=2)
    >>> conv(torch.ones(2, 4, 5, 5), torch.ones(2, 2)).shape
    torch.Size([2, 8, 5, 5])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: Union[str, int] = '', dilation: int = 1, groups: int = 1, bias: bool = False,
                 num_experts: int = 4) -> None:
        super().__init__()
        if isinstance(num_experts, bool) or not isinstance(num_experts, int) or num_experts < 1:
            raise ValueError(f'CondConv2d num_experts must be an int >= 1, got {num_experts!r}')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = to_2tuple(kernel_size)
        self.stride = to_2tuple(stride)
        self.dilation = to_2tuple(dilation)
        self.groups = groups
        self.num_experts = num_experts
        mode = padding.lower() if isinstance(padding, str) else None
        # TensorFlow 'SAME' that a fixed padding cannot express is computed from each input's size
        self.dynamic_padding = mode == 'same' and not is_static_same(kernel_size, stride, dilation)
        if mode is None:
            self.padding = to_2tuple(padding)
        elif mode == 'valid' or self.dynamic_padding:
            self.padding = (0, 0)
        else:
            self.padding = to_2tuple(get_padding(kernel_size, stride, dilation))
        self.weight_shape = (out_channels, in_channels // groups) + self.kernel_size
        self.weight = nn.Parameter(torch.empty(num_experts, math.prod(self.weight_shape)))
        if bias:
            self.bias = nn.Parameter(torch.empty(num_experts, out_channels))
        else:
            self.register_parameter('bias', None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Each expert initialized as a plain convolution of the same shape would be (Kaiming uniform)."""
        if self.weight.is_meta:
            return
        with torch.no_grad():
            for expert in self.weight:
                nn.init.kaiming_uniform_(expert.view(self.weight_shape), a=math.sqrt(5))
            if self.bias is not None:
                bound = 1.0 / math.sqrt(math.prod(self.weight_shape[1:]))
                nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, routing_weights: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        weight = torch.matmul(routing_weights, self.weight).view(
            (b * self.out_channels, self.in_channels // self.groups) + self.kernel_size)
        bias = None
        if self.bias is not None:
            bias = torch.matmul(routing_weights, self.bias).view(b * self.out_channels)
        x = x.reshape(1, b * c, h, w)
        if self.dynamic_padding:
            x = pad_same(x, self.kernel_size, self.stride, self.dilation)
        out = F.conv2d(x, weight, bias, stride=self.stride, padding=self.padding, dilation=self.dilation,
                       groups=self.groups * b)
        return out.permute(1, 0, 2, 3).view(b, self.out_channels, out.shape[-2], out.shape[-1])

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, '
                f'dilation={self.dilation}, groups={self.groups}, num_experts={self.num_experts}')


def create_conv2d_any(in_channels: int, out_channels: int, kernel_size: KernelSize, stride: int = 1,
                      padding: Union[str, int] = '', dilation: int = 1, groups: int = 1, bias: bool = False,
                      num_experts: int = 0) -> nn.Module:
    """A plain, mixed-kernel (``kernel_size`` a list) or expert-mixing (``num_experts > 0``) convolution.

    A mixed-kernel convolution is either depthwise (``groups == in_channels``) or dense (``groups == 1``).

    >>> type(create_conv2d_any(8, 8, [3, 5], groups=8)).__name__, type(create_conv2d_any(8, 8, 3)).__name__
    ('MixedConv2d', 'Conv2d')
    """
    if isinstance(kernel_size, (list, tuple)):
        if num_experts:
            raise ValueError(f'mixed kernels {list(kernel_size)} cannot be combined with num_experts={num_experts}')
        if groups not in (1, in_channels):
            raise ValueError(f'mixed kernels {list(kernel_size)} need groups=1 or groups=in_channels '
                             f'({in_channels}), got groups={groups}')
        depthwise = groups == in_channels and groups > 1
        return MixedConv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                           dilation=dilation, depthwise=depthwise, bias=bias)
    if num_experts:
        return CondConv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                          groups=groups, bias=bias, num_experts=num_experts)
    return create_conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                         groups=groups, bias=bias)
