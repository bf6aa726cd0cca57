"""Split attention ("ResNeSt: Split-Attention Networks", Zhang et al., 2020).

A grouped convolution produces ``radix`` candidate maps per cardinal group; a small squeeze network turns their
pooled sum into per-channel weights that are normalized across the ``radix`` candidates (softmax, or a sigmoid gate
when ``radix == 1``), and the candidates are mixed with those weights.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

try:  # only symbolic tracing cannot evaluate the format check; torch.export evaluates it on real strides
    from torch.fx._symbolic_trace import is_fx_symbolic_tracing as is_fx_tracing
except ImportError:  # pragma: no cover - older torch
    from torch.fx._symbolic_trace import is_fx_tracing

from .activations import ActLayer, create_act_layer
from .helpers import is_channels_last, make_divisible


class RadixSoftmax(nn.Module):
    """Softmax over the radix axis of per-group attention logits laid out as (cardinality, radix, channels).

    The output is laid out radix-major, (radix, cardinality, channels), which is how the split maps are stacked.

    >>> RadixSoftmax(2, 1)(torch.zeros(1, 8, 1, 1)).flatten()
    tensor([0.5000, 0.5000, 0.5000, 0.5000, 0.5000, 0.5000, 0.5000, 0.5000])
    """

    def __init__(self, radix: int, cardinality: int) -> None:
        super().__init__()
        self.radix = radix
        self.cardinality = cardinality

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.radix > 1:
            x = x.flatten(1).unflatten(1, (self.cardinality, self.radix, -1)).transpose(1, 2)
            return x.softmax(dim=1).flatten(1)
        return x.flatten(1).sigmoid()


class SplitAttn(nn.Module):
    """Split-attention convolution: ``conv`` (groups * radix), ``bn0``, ``act0``, then ``fc1``/``bn1``/``act1``/``fc2``
    on the pooled sum of the radix splits, and a radix softmax to weight them.

    Parameter names match timm's ``SplitAttn`` so ResNeSt checkpoints load unchanged.

    >>> SplitAttn(64, 64, stride=2, radix=2).eval()(torch.ones(1, 64, 8, 8)).shape
    torch.Size([1, 64, 4, 4])
    """

    def __init__(self, in_channels: int, out_channels: Optional[int] = None, kernel_size: int = 3, stride: int = 1,
                 padding: Optional[int] = None, dilation: int = 1, groups: int = 1, bias: bool = False,
                 radix: int = 2, rd_ratio: float = 0.25, rd_channels: Optional[int] = None, rd_divisor: int = 8,
                 act_layer: ActLayer = 'relu', norm: bool = True) -> None:
        super().__init__()
        if not (isinstance(radix, int) and radix >= 1):
            raise ValueError(f'SplitAttn radix must be an int >= 1, got {radix!r}')
        out_channels = out_channels or in_channels
        self.radix = radix
        self.out_channels = out_channels
        mid_chs = out_channels * radix
        if rd_channels is None:
            attn_chs = make_divisible(in_channels * radix * rd_ratio, rd_divisor, min_value=32)
        else:
            attn_chs = rd_channels * radix
        padding = kernel_size // 2 if padding is None else padding
        self.conv = nn.Conv2d(in_channels, mid_chs, kernel_size, stride, padding, dilation, groups=groups * radix,
                              bias=bias)
        self.bn0 = nn.BatchNorm2d(mid_chs) if norm else nn.Identity()
        self.drop = nn.Identity()
        self.act0 = create_act_layer(act_layer, inplace=True)
        self.fc1 = nn.Conv2d(out_channels, attn_chs, 1, groups=groups)
        self.bn1 = nn.BatchNorm2d(attn_chs) if norm else nn.Identity()
        self.act1 = create_act_layer(act_layer, inplace=True)
        self.fc2 = nn.Conv2d(attn_chs, mid_chs, 1, groups=groups)
        self.rsoftmax = RadixSoftmax(radix, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act0(self.drop(self.bn0(self.conv(x))))
        # under optimize_for_inference the surrounding convolutions run channels_last: hand that format on rather
        # than converting to NCHW and back at every block (NCHW input gives the same contiguous NCHW output as before)
        keep_format = not is_fx_tracing() and is_channels_last(x)
        if self.radix > 1:
            # (B, radix * C, H, W) -> (B, radix, C, H, W): the splits are stacked radix-major by the grouped conv.
            x = x.unflatten(1, (self.radix, self.out_channels))
            x_gap = x.sum(dim=1)
        else:
            x_gap = x
        x_gap = x_gap.mean((2, 3), keepdim=True)
        x_attn = self.fc2(self.act1(self.bn1(self.fc1(x_gap))))
        x_attn = self.rsoftmax(x_attn)
        if self.radix > 1:
            out = (x * x_attn.unflatten(1, (self.radix, self.out_channels, 1, 1))).sum(dim=1)
        else:
            out = x * x_attn.unflatten(1, (self.out_channels, 1, 1))
        return out.contiguous(memory_format=torch.channels_last) if keep_format else out.contiguous()
