"""Stride-1 forms of strided pools, for CNNs dilated to an output stride finer than their natural one."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..checks import check_choice


class DensePool2d(nn.Module):
    """The stride-1 form of a strided pool, for levels dilated by ``dilation``: ``'max'`` is the k x k window of a
    strided max pool (DLA's ``nn.MaxPool2d(k, stride=k)``, VoVNet's ceil-mode ``nn.MaxPool2d(3, 2)``) with -inf
    padding at the bottom/right, as ceil mode treats a missing window tail; ``'avg'`` is ``nn.AvgPool2d(k, stride,
    padding=k // 2)`` (zero padding counted). The taps are ``dilation`` pixels apart, so every ``2 * dilation``-th
    output is what the strided pool gives on the map of the undilated network.

    >>> DensePool2d('max', 2, 2)(torch.ones(1, 4, 8, 8)).shape
    torch.Size([1, 4, 8, 8])
    >>> round(DensePool2d('avg', 3, 2)(torch.ones(1, 4, 8, 8))[0, 0, 0, 0].item() * 9, 4)
    4.0
    """

    def __init__(self, pool_type: str, kernel_size: int, dilation: int = 1) -> None:
        super().__init__()
        self.pool_type = check_choice('pool_type', pool_type, ('max', 'avg'))
        self.kernel_size = kernel_size
        self.dilation = dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, d = self.kernel_size, self.dilation
        if self.pool_type == 'max':
            x = F.pad(x, (0, (k - 1) * d, 0, (k - 1) * d), value=float('-inf'))
            return F.max_pool2d(x, kernel_size=k, stride=1, dilation=d)
        if d == 1:
            return F.avg_pool2d(x, kernel_size=k, stride=1, padding=k // 2)
        # average pooling has no dilation: sum the k x k taps of the zero-padded map
        h, w = x.shape[-2:]
        padded = F.pad(x, (k // 2 * d,) * 4)
        total = sum(padded[:, :, i * d:i * d + h, j * d:j * d + w] for i in range(k) for j in range(k))
        return total / (k * k)

    def extra_repr(self) -> str:
        return f'{self.pool_type}, kernel_size={self.kernel_size}, dilation={self.dilation}'
