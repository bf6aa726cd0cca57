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
from torch.nn import functional as F

from ..features.notrace import register_notrace_function
from .conv_bn_act import ConvNormAct
from .helpers import make_divisible


# the repeat count comes from the input's size: FX records one call instead of branching on a traced value
@register_notrace_function
def kron_identity(x: torch.Tensor, repeat: int) -> torch.Tensor:
    """Each (n, n) matrix of ``x`` (..., n, n) as its Kronecker product with the ``repeat`` x ``repeat`` identity:
    entry (i, j) becomes ``x[i, j] * I``, giving (..., n * repeat, n * repeat).

    >>> kron_identity(torch.tensor([[[[1., 2.], [3., 4.]]]]), 2)[0, 0]
    tensor([[1., 0., 2., 0.],
            [0., 1., 0., 2.],
            [3., 0., 4., 0.],
            [0., 3., 0., 4.]])
    """
    if repeat <= 1:
        return x
    *lead, n, _ = x.shape
    eye = torch.eye(repeat, dtype=x.dtype, device=x.device)
    out = x[..., :, None, :, None] * eye[:, None, :]  # (..., n, r, n, r): x[i, j] * eye[a, b]
    return out.reshape(*lead, n * repeat, n * repeat)


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

    def _per_channel(self, m: torch.Tensor, channels: int) -> torch.Tensor:
        b = m.shape[0]
        bs = self.block_size
        m = m.view(b, self.groups, 1, bs, bs).expand(b, self.groups, channels // self.groups, bs, bs)
        return m.reshape(b, channels, bs, bs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        bs = self.block_size
        out = self.conv1(x)
        p = self.conv_p(F.adaptive_max_pool2d(out, (bs, 1))).view(b, self.groups, bs, bs).sigmoid()
        q = self.conv_q(F.adaptive_max_pool2d(out, (1, bs))).view(b, self.groups, bs, bs).sigmoid()
        p = p / p.sum(dim=3, keepdim=True)
        q = q / q.sum(dim=2, keepdim=True)
        p = kron_identity(self._per_channel(p, c), h // bs)
        q = kron_identity(self._per_channel(q, c), w // bs)
        return self.conv2(p.matmul(x).matmul(q))


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
