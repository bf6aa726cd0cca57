"""Weight initializers used by the families (only for training from scratch; loading skips them)."""
from __future__ import annotations

import math

import torch
from torch import nn


# On the meta device there is nothing to draw, and torch routes random fills of meta tensors through its Python
# references, which import torch._dynamo (seconds on a cold start): every random initializer skips meta tensors.

def normal_(tensor: torch.Tensor, mean: float = 0., std: float = 1.) -> torch.Tensor:
    """Fill ``tensor`` from N(mean, std^2) (no-op on the meta device).

    >>> float(normal_(torch.empty(1000), std=0.01).std()) < 0.02
    True
    """
    if tensor.is_meta:
        return tensor
    return nn.init.normal_(tensor, mean, std)


def uniform_(tensor: torch.Tensor, low: float = 0., high: float = 1.) -> torch.Tensor:
    """Fill ``tensor`` from U(low, high) (no-op on the meta device).

    >>> bool(uniform_(torch.empty(100), -1., 1.).abs().max() <= 1)
    True
    """
    if tensor.is_meta:
        return tensor
    return nn.init.uniform_(tensor, low, high)


def kaiming_normal_(tensor: torch.Tensor, mode: str = 'fan_in', nonlinearity: str = 'leaky_relu') -> torch.Tensor:
    """He-normal initialization (no-op on the meta device).

    >>> kaiming_normal_(torch.empty(8, 4, 3, 3), mode='fan_out', nonlinearity='relu').shape
    torch.Size([8, 4, 3, 3])
    """
    if tensor.is_meta:
        return tensor
    return nn.init.kaiming_normal_(tensor, mode=mode, nonlinearity=nonlinearity)


def trunc_normal_(tensor: torch.Tensor, mean: float = 0., std: float = 1., a: float = -2., b: float = 2.):
    """Fill ``tensor`` from a normal distribution truncated to [a, b] (no-op on the meta device).

    >>> trunc_normal_(torch.empty(3), std=.02).abs().max() <= 2
    tensor(True)
    """
    if tensor.is_meta:
        return tensor
    return nn.init.trunc_normal_(tensor, mean=mean, std=std, a=a, b=b)


def init_conv_bn(module: nn.Module) -> None:
    """Kaiming-normal (fan-out) convolutions, unit batch norms, default linear layers."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def lecun_normal_(tensor: torch.Tensor) -> torch.Tensor:
    """LeCun normal initialization (variance 1 / fan_in)."""
    fan_in = nn.init._calculate_fan_in_and_fan_out(tensor)[0]
    return trunc_normal_(tensor, std=math.sqrt(1.0 / fan_in) / .87962566103423978)


def trunc_normal_linears_(module: nn.Module, std: float = .02) -> None:
    """Every ``nn.Linear`` in ``module``: truncated-normal weights (``std``), zero biases (no-op on the meta device).

    >>> m = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)); trunc_normal_linears_(m)
    >>> float(m[2].bias.detach().abs().max()), float(m[0].weight.detach().std()) < .05
    (0.0, True)
    """
    for m in module.modules():
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def init_fan_out_normal_(module: nn.Module) -> None:
    """Every ``nn.Conv2d`` in ``module`` from N(0, 2 / fan_out) (fan-out per group), every ``nn.Linear`` from
    N(0, 0.01^2), zero biases (no draw on the meta device).

    >>> m = nn.Sequential(nn.Conv2d(4, 8, 3), nn.Flatten(), nn.Linear(8, 2)); init_fan_out_normal_(m)
    >>> float(m[2].bias.detach().abs().max())
    0.0
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def kaiming_convs_(module: nn.Module) -> None:
    """He-normal (fan-out, ReLU gain) weights for every ``nn.Conv2d`` in ``module``; biases and other layers kept.

    >>> m = nn.Sequential(nn.Conv2d(3, 8, 3)); kaiming_convs_(m); m[0].weight.shape
    torch.Size([8, 3, 3, 3])
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
