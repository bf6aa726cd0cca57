"""Average pooling with a dilated window that averages only the positions inside the image (PyTorch's AvgPool2d has
no dilation): what a stride-1 pooling layer becomes when its network is dilated for a finer output stride."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class DilatedAvgPool2d(nn.Module):
    """Stride-1 average over a ``kernel_size`` x ``kernel_size`` window whose taps are ``dilation`` apart, padded so
    the map keeps its size; the mean is over the taps that fall inside the map (``count_include_pad=False``).

    With ``dilation=1`` it equals ``nn.AvgPool2d(k, 1, k // 2, count_include_pad=False)``.

    >>> x = torch.arange(16.).reshape(1, 1, 4, 4)
    >>> DilatedAvgPool2d(1, 3, dilation=2)(x)[0, 0, 0].tolist()
    [5.0, 6.0, 5.0, 6.0]
    """

    def __init__(self, channels: int, kernel_size: int = 3, dilation: int = 1) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f'kernel_size={kernel_size} is invalid; valid: an odd int (a centred window)')
        self.channels = channels
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.padding = dilation * (kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a depthwise all-ones kernel sums the taps; the same kernel run over ones counts those inside the map
        taps = x.new_ones((self.channels, 1, self.kernel_size, self.kernel_size))
        total = F.conv2d(x, taps, padding=self.padding, dilation=self.dilation, groups=self.channels)
        count = F.conv2d(torch.ones_like(x[:1, :1]), taps[:1], padding=self.padding, dilation=self.dilation)
        return total / count

    def extra_repr(self) -> str:
        return f'channels={self.channels}, kernel_size={self.kernel_size}, dilation={self.dilation}'
