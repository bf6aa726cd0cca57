"""Bilinear attention transform ("Non-Local Neural Networks with Grouped Bilinear Attentional Transforms", Chi et
al., 2020), the ``bat`` attention of timm's ``bat_resnext26ts``: row and column attention matrices predicted from
max-pooled strips mix the map within blocks of ``block_size`` rows/columns. Parameter names are timm's.

The map's height and width must be multiples of ``block_size`` (for ``bat_resnext26ts``: inputs of 256, 512, ...).

>>> BatNonLocalAttn(64, block_size=4)(torch.ones(1, 64, 8, 8)).shape
torch.Size([1, 64, 8, 8])
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .conv_bn_act import ConvNormAct
from .helpers import make_divisible


class BilinearAttnTransform(nn.Module):
    """Predicts a (block, block) row matrix ``p`` and column matrix ``q`` per channel group and returns
    ``conv2(P @ x @ Q)`` with ``P``, ``Q`` expanded to the map's size."""

    def __init__(self, in_channels: int, block_size: int, groups: int) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(in_channels, groups, 1)
        self.conv_p = nn.Conv2d(groups, block_size * block_size * groups, kernel_size=(block_size, 1))
        self.conv_q = nn.Conv2d(groups, block_size * block_size * groups, kernel_size=(1, block_size))
        self.conv2 = ConvNormAct(in_channels, in_channels, 1)
        self.block_size = block_size
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        bs, g = self.block_size, self.groups
        out = self.conv1(x)
        # the maximum over each of bs row strips (column strips): adaptive max pooling to (bs, 1) ((1, bs)) on a map
        # that bs divides, written as a view so that torch.export keeps the input size symbolic
        rows = out.reshape(b, g, bs, h // bs, w).amax(dim=(3, 4)).unsqueeze(-1)
        cols = out.reshape(b, g, h, bs, w // bs).amax(dim=(2, 4)).unsqueeze(-2)
        p = self.conv_p(rows).view(b, g, bs, bs).sigmoid()
        q = self.conv_q(cols).view(b, g, bs, bs).sigmoid()
        p = p / p.sum(dim=3, keepdim=True)
        q = q / q.sum(dim=2, keepdim=True)
        # P expanded by the identity (kron(P, I)) mixes row j * t + a into row i * t + a with weight P[i, j], t being
        # h // bs: the same as a (bs, bs) matrix on the block axis of a (bs, t) view, without the (h, h) matrix (whose
        # repeat count would also fix the input size under torch.export); likewise Q on the columns
        x = x.reshape(b, g, c // g, bs, h // bs, w)
        x = torch.einsum('bgij,bgkjtw->bgkitw', p, x).reshape(b, g, c // g, h, bs, w // bs)
        x = torch.einsum('bgkhjt,bgjl->bgkhlt', x, q).reshape(b, c, h, w)
        return self.conv2(x)


class BatNonLocalAttn(nn.Module):
    """Reduce (1x1), bilinear attention transform, expand (1x1), dropout, plus the input."""

    def __init__(self, in_channels: int, block_size: int = 7, groups: int = 2, rd_ratio: float = 0.25,
                 rd_channels: Optional[int] = None, rd_divisor: int = 8, drop_rate: float = 0.2) -> None:
        super().__init__()
        if rd_channels is None:
            rd_channels = make_divisible(in_channels * rd_ratio, divisor=rd_divisor)
        self.conv1 = ConvNormAct(in_channels, rd_channels, 1)
        self.ba = BilinearAttnTransform(rd_channels, block_size, groups)
        self.conv2 = ConvNormAct(rd_channels, in_channels, 1)
        self.dropout = nn.Dropout2d(p=drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.conv2(self.ba(self.conv1(x)))) + x
