"""Convolution, batch norm and activation as one module with children ``conv`` and ``bn``."""
from __future__ import annotations

from typing import Union

import torch
from torch import nn

from .activations import ActLayer
from .norm import BatchNormAct2d
from .padding import create_conv2d


class ConvNormAct(nn.Module):
    """``conv`` then ``bn`` (a :class:`BatchNormAct2d` carrying the activation).

    >>> ConvNormAct(3, 16, 3, stride=2)(torch.ones(1, 3, 8, 8)).shape
    torch.Size([1, 16, 4, 4])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 padding: Union[str, int] = '', dilation: int = 1, groups: int = 1, bias: bool = False,
                 apply_act: bool = True, act_layer: ActLayer = 'relu', norm_eps: float = 1e-5,
                 act_kwargs: dict | None = None) -> None:
        super().__init__()
        self.conv = create_conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                                  dilation=dilation, groups=groups, bias=bias)
        self.bn = BatchNormAct2d(out_channels, eps=norm_eps, apply_act=apply_act, act_layer=act_layer,
                                 act_kwargs=act_kwargs)

    @property
    def in_channels(self) -> int:
        return self.conv.in_channels

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))
