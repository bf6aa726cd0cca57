"""Squared-ReLU activations: ``relu(x) ** 2`` (Primer) and StarReLU, its learned affine form (MetaFormer baselines).

Parameter names follow timm's so its checkpoints load unchanged.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class SquaredReLU(nn.Module):
    """``relu(x) ** 2``; no parameters.

    >>> SquaredReLU()(torch.tensor([-2.0, 3.0])).tolist()
    [0.0, 9.0]
    """

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.square(F.relu(x))


class StarReLU(nn.Module):
    """``scale * relu(x) ** 2 + bias`` with a learned scalar ``scale`` and ``bias`` (one-element parameters).

    >>> StarReLU(scale_value=0.5, bias_value=1.0)(torch.tensor([-1.0, 2.0])).tolist()
    [1.0, 3.0]
    """

    def __init__(self, scale_value: float = 1.0, bias_value: float = 0.0, inplace: bool = False) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((1,), float(scale_value)))
        self.bias = nn.Parameter(torch.full((1,), float(bias_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.relu(x) ** 2 + self.bias
