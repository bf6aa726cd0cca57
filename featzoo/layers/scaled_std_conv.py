"""Scaled weight standardization (normalizer-free networks: NF-ResNet, NF-RegNet, NFNet).

Each output filter is standardized over its fan-in, then multiplied by a learned per-filter ``gain`` and by the fixed
``gamma / sqrt(fan_in)``, so that the convolution keeps the variance of an activation whose second moment is
corrected by ``gamma``. The stored tensors are the raw ``weight``, a ``bias`` and the ``gain`` (timm's names).

>>> ScaledStdConv2d(3, 8, 3)(torch.ones(1, 3, 8, 8)).shape
torch.Size([1, 8, 8, 8])
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from ..features.notrace import register_notrace_module
from .helpers import get_padding
from .padding import DynamicSamePadding


def scaled_standardize(weight: torch.Tensor, gain: torch.Tensor, scale: float, eps: float) -> torch.Tensor:
    """``weight`` standardized per output filter (biased variance plus ``eps``), times ``gain * scale``.

    Computed with ``batch_norm`` over a (1, out_channels, fan_in) view, the reduction the published weights were
    trained with, so the rounding is the reference's.

    >>> w = scaled_standardize(torch.randn(4, 2, 3, 3), torch.full((4, 1, 1, 1), 2.0), 0.5, 1e-6)
    >>> bool((w.flatten(1).std(1, unbiased=False) - 1.0).abs().max() < 1e-4)
    True
    """
    flat = weight.reshape(1, weight.shape[0], -1)
    return F.batch_norm(flat, None, None, weight=(gain * scale).view(-1), training=True, momentum=0.0,
                        eps=eps).reshape_as(weight)


class ScaledStdConv2d(nn.Conv2d):
    """Conv2d with scaled weight standardization and symmetric (PyTorch-style) padding.

    ``gamma`` is the non-linearity's variance correction folded into the weights; ``gain_init`` starts the learned
    gain (0 makes a residual branch start as identity).

    >>> conv = ScaledStdConv2d(4, 8, 3, stride=2, gamma=1.7)
    >>> conv(torch.ones(1, 4, 9, 9)).shape, tuple(conv.gain.shape)
    (torch.Size([1, 8, 5, 5]), (8, 1, 1, 1))
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: Optional[int] = None, dilation: int = 1, groups: int = 1, bias: bool = True,
                 gamma: float = 1.0, eps: float = 1e-6, gain_init: float = 1.0) -> None:
        if padding is None:
            padding = get_padding(kernel_size, stride, dilation)
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                         groups=groups, bias=bias)
        self.gain = nn.Parameter(torch.full((out_channels, 1, 1, 1), float(gain_init)))
        self.scale = gamma * self.weight[0].numel() ** -0.5
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = scaled_standardize(self.weight, self.gain, self.scale, self.eps)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


@register_notrace_module  # the 'SAME' padding of a strided convolution depends on the traced input size
class ScaledStdConv2dSame(DynamicSamePadding, ScaledStdConv2d):
    """Scaled weight-standardized Conv2d with TensorFlow 'SAME' padding (NFNets ported from DeepMind's JAX code).

    >>> ScaledStdConv2dSame(3, 4, 3, stride=2)(torch.ones(1, 3, 15, 15)).shape
    torch.Size([1, 4, 8, 8])
    """
