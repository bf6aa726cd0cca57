"""Anti-aliased downsampling: a fixed binomial blur applied per channel with a stride."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from .helpers import get_padding

PAD_MODES = ('reflect', 'replicate', 'constant', 'circular')


def binomial_filter(size: int, device: Optional[torch.device] = None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The normalized 2-D binomial kernel of side ``size`` (outer product of a row of Pascal's triangle).

    >>> binomial_filter(3) * 16
    tensor([[1., 2., 1.],
            [2., 4., 2.],
            [1., 2., 1.]])
    """
    row = torch.tensor([math.comb(size - 1, k) for k in range(size)], dtype=torch.float64) / 2 ** (size - 1)
    return (row[:, None] * row[None, :]).to(device=device, dtype=dtype)


class BlurPool2d(nn.Module):
    """Blur with a binomial kernel, then subsample by ``stride`` (Zhang, 'Making CNNs shift-invariant again').

    The kernel is a non-persistent buffer ``filt`` of shape ``(channels, 1, filt_size, filt_size)``: it never
    appears in a state_dict, so :meth:`init_non_persistent_buffers` rebuilds it after a meta-device build.
    ``dilation`` spreads the taps apart; with ``stride=1`` that is the blur a dilated network needs where a
    strided blur used to be (sampling every ``dilation``-th output gives the strided blur's output).

    >>> BlurPool2d(8)(torch.ones(1, 8, 16, 16)).shape
    torch.Size([1, 8, 8, 8])
    """

    def __init__(self, channels: int, filt_size: int = 3, stride: int = 2, pad_mode: str = 'reflect',
                 dilation: int = 1) -> None:
        super().__init__()
        if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
            raise ValueError(f'BlurPool2d channels must be a positive int, got {channels!r}')
        if not isinstance(filt_size, int) or filt_size < 2:
            raise ValueError(f'BlurPool2d filt_size must be an int >= 2, got {filt_size!r}')
        if pad_mode not in PAD_MODES:
            raise ValueError(f'unknown BlurPool2d pad_mode {pad_mode!r}; valid: {PAD_MODES}')
        self.channels = channels
        self.filt_size = filt_size
        self.stride = stride
        self.dilation = dilation
        self.pad_mode = pad_mode
        self.padding = [get_padding(filt_size, stride, dilation)] * 4
        self.register_buffer('filt', torch.empty(channels, 1, filt_size, filt_size), persistent=False)
        self.init_non_persistent_buffers()

    def init_non_persistent_buffers(self) -> None:
        """Recompute the blur kernel on the buffer's current device and dtype.

        >>> m = BlurPool2d(2); _ = m.filt.zero_(); m.init_non_persistent_buffers(); float(m.filt[0].sum())
        1.0
        """
        if self.filt.is_meta:  # recomputed after loading; meta arithmetic would only cost time
            return
        kernel = binomial_filter(self.filt_size, device=self.filt.device, dtype=self.filt.dtype)
        self.register_buffer('filt', kernel.expand(self.channels, 1, -1, -1).contiguous(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, self.padding, mode=self.pad_mode)
        return F.conv2d(x, self.filt, stride=self.stride, dilation=self.dilation, groups=self.channels)

    def extra_repr(self) -> str:
        return (f'channels={self.channels}, filt_size={self.filt_size}, stride={self.stride}, '
                f'dilation={self.dilation}, pad_mode={self.pad_mode!r}')
