"""Global context attention ("GCNet", Cao et al., 2019): a softmax-weighted spatial pooling of the map, passed
through a small 1x1-conv MLP with layer norm, then added to (``fuse_add``) and/or gating (``fuse_scale``) every
position. Parameter names are timm's (``conv_attn``, ``mlp_add``, ``mlp_scale``).

>>> GlobalContext(64, fuse_add=True, fuse_scale=False)(torch.ones(1, 64, 4, 4)).shape
torch.Size([1, 64, 4, 4])
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from .activations import ActLayer, create_act_layer
from .helpers import make_divisible
from .norm import LayerNorm2d


class ConvMlp(nn.Module):
    """1x1 conv, layer norm over channels, activation, 1x1 conv (``fc1``, ``norm``, ``act``, ``fc2``).

    >>> ConvMlp(16, 4)(torch.ones(1, 16, 1, 1)).shape
    torch.Size([1, 16, 1, 1])
    """

    def __init__(self, channels: int, hidden: int, act_layer: ActLayer = 'relu') -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1, bias=True)
        self.norm = LayerNorm2d(hidden, eps=1e-6)
        self.act = create_act_layer(act_layer)
        self.drop = nn.Dropout(0.0)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.norm(self.fc1(x)))))


class GlobalContext(nn.Module):
    """Global context block; ``use_attn=False`` pools by a plain mean instead of the learned softmax weights."""

    def __init__(self, channels: int, use_attn: bool = True, fuse_add: bool = False, fuse_scale: bool = True,
                 rd_ratio: float = 1.0 / 8, rd_channels: Optional[int] = None, rd_divisor: int = 1,
                 act_layer: ActLayer = 'relu', gate_layer: ActLayer = 'sigmoid') -> None:
        super().__init__()
        self.conv_attn = nn.Conv2d(channels, 1, kernel_size=1, bias=True) if use_attn else None
        if rd_channels is None:
            rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
        self.mlp_add = ConvMlp(channels, rd_channels, act_layer) if fuse_add else None
        self.mlp_scale = ConvMlp(channels, rd_channels, act_layer) if fuse_scale else None
        self.gate = create_act_layer(gate_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if self.conv_attn is not None:
            weights = F.softmax(self.conv_attn(x).reshape(b, 1, h * w), dim=-1).unsqueeze(3)  # (B, 1, HW, 1)
            context = (x.reshape(b, c, h * w).unsqueeze(1) @ weights).view(b, c, 1, 1)
        else:
            context = x.mean(dim=(2, 3), keepdim=True)
        if self.mlp_scale is not None:
            x = x * self.gate(self.mlp_scale(context))
        if self.mlp_add is not None:
            x = x + self.mlp_add(context)
        return x
