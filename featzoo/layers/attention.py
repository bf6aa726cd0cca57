"""Channel attention blocks: squeeze-excite and efficient channel attention."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from .activations import ActLayer, create_act_layer
from .helpers import make_divisible


class SEModule(nn.Module):
    """Squeeze-and-excitation with 1x1 convolutions (``fc1``, ``fc2``) and a sigmoid gate.

    >>> SEModule(64)(torch.ones(1, 64, 4, 4)).shape
    torch.Size([1, 64, 4, 4])
    """

    def __init__(self, channels: int, rd_ratio: float = 1. / 16, rd_channels: Optional[int] = None,
                 rd_divisor: int = 8, add_maxpool: bool = False, bias: bool = True, act_layer: ActLayer = 'relu',
                 norm_layer=None, gate_layer: ActLayer = 'sigmoid') -> None:
        super().__init__()
        self.add_maxpool = add_maxpool
        if not rd_channels:
            rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.)
        self.fc1 = nn.Conv2d(channels, rd_channels, kernel_size=1, bias=bias)
        self.bn = norm_layer(rd_channels) if norm_layer else nn.Identity()
        self.act = create_act_layer(act_layer, inplace=True)
        self.fc2 = nn.Conv2d(rd_channels, channels, kernel_size=1, bias=bias)
        self.gate = create_act_layer(gate_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_se = x.mean((2, 3), keepdim=True)
        if self.add_maxpool:
            x_se = 0.5 * x_se + 0.5 * x.amax((2, 3), keepdim=True)
        x_se = self.fc2(self.act(self.bn(self.fc1(x_se))))
        return x * self.gate(x_se)


class EcaModule(nn.Module):
    """Efficient channel attention: a 1-D convolution across pooled channels (kernel size from the width).

    >>> EcaModule(256).conv.kernel_size
    (5,)
    """

    def __init__(self, channels: Optional[int] = None, kernel_size: int = 3, gamma: int = 2, beta: int = 1,
                 gate_layer: ActLayer = 'sigmoid') -> None:
        super().__init__()
        if channels is not None:
            t = int(abs(math.log(channels, 2) + beta) / gamma)
            kernel_size = max(t if t % 2 else t + 1, 3)
        self.conv = nn.Conv1d(1, 1, kernel_size=kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.gate = create_act_layer(gate_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.mean((2, 3)).view(x.shape[0], 1, -1)
        y = self.conv(y)
        y = self.gate(y).view(x.shape[0], -1, 1, 1)
        return x * y.expand_as(x)


_ATTN = {'se': SEModule, 'eca': EcaModule}


def get_attn(name: Optional[str]):
    """Attention block class by name (``'se'``, ``'eca'``), or None.

    >>> get_attn('eca').__name__
    'EcaModule'
    """
    if not name:
        return None
    try:
        return _ATTN[name]
    except KeyError:
        raise ValueError(f'unknown attention {name!r}; valid: {sorted(_ATTN)}') from None
