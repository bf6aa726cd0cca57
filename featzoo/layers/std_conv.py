"""Weight-standardized convolutions (BiT ResNetV2, NFNet-style backbones, ViT hybrids).

Each output filter is normalized to zero mean and unit variance over its fan-in before the convolution runs; the
stored parameter stays the raw weight, so checkpoints hold the same tensors as a plain ``nn.Conv2d``.

>>> StdConv2d(3, 8, 3)(torch.ones(1, 3, 8, 8)).shape
torch.Size([1, 8, 8, 8])
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from .helpers import get_padding
from .padding import DynamicSamePadding


def standardize_weight(weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``weight`` with each output filter shifted to zero mean and scaled to unit (biased) variance.

    Computed with ``batch_norm`` over a (1, out_channels, fan_in) view, the same reduction the published weights
    were trained with, so the rounding is the reference's.

    >>> w = standardize_weight(torch.randn(4, 3, 3, 3), 1e-6)
    >>> bool(w.flatten(1).mean(1).abs().max() < 1e-5)
    True
    """
    flat = weight.reshape(1, weight.shape[0], -1)
    return F.batch_norm(flat, None, None, training=True, momentum=0.0, eps=eps).reshape_as(weight)


class StdConv2d(nn.Conv2d):
    """Conv2d with weight standardization and symmetric (PyTorch-style) padding.

    ``padding=None`` pads so that stride 1 keeps the size; ``eps`` is added to the filter variance (BiT uses 1e-8).

    >>> StdConv2d(3, 4, 7, stride=2, eps=1e-8)(torch.ones(1, 3, 16, 16)).shape
    torch.Size([1, 4, 8, 8])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: Optional[int] = None, dilation: int = 1, groups: int = 1, bias: bool = False,
                 eps: float = 1e-6) -> None:
        if padding is None:
            padding = get_padding(kernel_size, stride, dilation)
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                         groups=groups, bias=bias)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = standardize_weight(self.weight, self.eps)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class StdConv2dSame(DynamicSamePadding, StdConv2d):
    """Weight-standardized Conv2d with TensorFlow 'SAME' padding (ViT-hybrid backbones ported from JAX).

    >>> StdConv2dSame(3, 4, 7, stride=2)(torch.ones(1, 3, 15, 15)).shape
    torch.Size([1, 4, 8, 8])
    """
