"""Normalization layers that carry their own non-linearity: group norm + activation, EvoNorm-S0 and filter response
normalization with a thresholded linear unit. Parameter names are the reference's (``weight``, ``bias``, ``v``,
``tau``), so checkpoints load unchanged.

>>> GroupNormAct(64, num_groups=32)(torch.ones(1, 64, 4, 4)).shape
torch.Size([1, 64, 4, 4])
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from .activations import ActLayer, create_act_layer


def _group_count(num_channels: int, num_groups: int, group_size: Optional[int]) -> int:
    if group_size:
        if num_channels % group_size:
            raise ValueError(f'group_size={group_size} does not divide num_channels={num_channels}')
        return num_channels // group_size
    if num_channels % num_groups:
        raise ValueError(f'num_groups={num_groups} does not divide num_channels={num_channels}')
    return num_groups


class GroupNormAct(nn.GroupNorm):
    """GroupNorm, then (unless ``apply_act=False``) an activation; the state_dict is a plain GroupNorm's.

    >>> GroupNormAct(32, num_groups=8, apply_act=False).act
    Identity()
    """

    def __init__(self, num_channels: int, num_groups: int = 32, eps: float = 1e-5, affine: bool = True,
                 group_size: Optional[int] = None, apply_act: bool = True, act_layer: ActLayer = 'relu',
                 inplace: bool = True) -> None:
        super().__init__(_group_count(num_channels, num_groups, group_size), num_channels, eps=eps, affine=affine)
        self.drop = nn.Identity()
        self.act = create_act_layer(act_layer, inplace=inplace) if apply_act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        return self.act(self.drop(x))


def group_std(x: torch.Tensor, groups: int, eps: float) -> torch.Tensor:
    """Per-sample, per-group standard deviation of ``x`` (NCHW), broadcast back to ``x``'s shape; float32 math.

    >>> group_std(torch.ones(1, 4, 2, 2), 2, 0.0).shape
    torch.Size([1, 4, 2, 2])
    """
    b, c, h, w = x.shape
    grouped = x.reshape(b, groups, c // groups, h, w)
    std = grouped.float().var(dim=(2, 3, 4), unbiased=False, keepdim=True).add(eps).sqrt().to(x.dtype)
    return std.expand(grouped.shape).reshape(b, c, h, w)


class _FusedActNorm2d(nn.Module):
    """What the activation-fused norms below share: a per-channel ``weight`` (ones) and ``bias`` (zeros) applied
    last, ``eps``, and ``apply_act``. The ``act_layer`` argument other norm layers take is accepted by them and
    ignored: their non-linearity is built in."""

    def __init__(self, num_features: int, apply_act: bool, eps: float) -> None:
        super().__init__()
        self.apply_act = apply_act
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))


class EvoNorm2dS0(_FusedActNorm2d):
    """EvoNorm-S0: ``x * sigmoid(v * x) / group_std(x)``, then a per-channel affine (no running statistics).

    >>> sorted(k for k, _ in EvoNorm2dS0(32).named_parameters())
    ['bias', 'v', 'weight']
    """

    def __init__(self, num_features: int, groups: int = 32, group_size: Optional[int] = None, apply_act: bool = True,
                 eps: float = 1e-5, act_layer: ActLayer = None) -> None:
        super().__init__(num_features, apply_act, eps)
        self.groups = _group_count(num_features, groups, group_size)
        self.v = nn.Parameter(torch.ones(num_features)) if apply_act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1)
        if self.v is not None:
            x = x * (x * self.v.view(shape).to(x.dtype)).sigmoid() / group_std(x, self.groups, self.eps)
        return x * self.weight.view(shape).to(x.dtype) + self.bias.view(shape).to(x.dtype)


class FilterResponseNormTlu2d(_FusedActNorm2d):
    """Filter response normalization (divide by the per-channel RMS over H, W), affine, then ``max(x, tau)``.

    >>> sorted(k for k, _ in FilterResponseNormTlu2d(8).named_parameters())
    ['bias', 'tau', 'weight']
    """

    def __init__(self, num_features: int, apply_act: bool = True, eps: float = 1e-5, act_layer: ActLayer = None
                 ) -> None:
        super().__init__(num_features, apply_act, eps)
        self.tau = nn.Parameter(torch.zeros(num_features)) if apply_act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1)
        inv_rms = x.square().float().mean(dim=(2, 3), keepdim=True).add(self.eps).rsqrt().to(x.dtype)
        x = x * inv_rms * self.weight.view(shape).to(x.dtype) + self.bias.view(shape).to(x.dtype)
        return torch.maximum(x, self.tau.view(shape).to(x.dtype)) if self.tau is not None else x


class EvoNorm2dS0a(EvoNorm2dS0):
    """EvoNorm-S0 as RegNetZ-evos uses it: the group std is taken from the input (before the sigmoid gate), eps 1e-3.

    >>> EvoNorm2dS0a(32, group_size=16).groups
    2
    """

    def __init__(self, num_features: int, groups: int = 32, group_size: Optional[int] = None, apply_act: bool = True,
                 eps: float = 1e-3, act_layer: ActLayer = None) -> None:
        super().__init__(num_features, groups=groups, group_size=group_size, apply_act=apply_act, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1)
        std = group_std(x, self.groups, self.eps)
        if self.v is not None:
            x = x * (x * self.v.view(shape).to(x.dtype)).sigmoid()
        x = x / std
        return x * self.weight.view(shape).to(x.dtype) + self.bias.view(shape).to(x.dtype)
