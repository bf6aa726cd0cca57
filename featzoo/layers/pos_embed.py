"""Resampling learned absolute position embeddings to another patch grid."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch.nn import functional as F

from ..features.notrace import register_notrace_function


# its size checks need concrete ints, so FX records it as one call instead of tracing into it
@register_notrace_function
def resample_abs_pos_embed(posemb: torch.Tensor, new_size: Sequence[int], old_size: Optional[Sequence[int]] = None,
                           num_prefix_tokens: int = 1, interpolation: str = 'bicubic',
                           antialias: bool = True) -> torch.Tensor:
    """Resize a (1, prefix + H * W, C) position embedding to the grid ``new_size`` (H', W').

    The first ``num_prefix_tokens`` entries (class, distillation, register tokens) are kept as they are; the grid
    part is interpolated in float32 (bicubic with antialiasing by default, as timm does). ``old_size`` defaults to
    a square grid. When the grid is unchanged the input is returned as is, so a model at its native size computes
    exactly what it would without resampling.

    >>> resample_abs_pos_embed(torch.zeros(1, 1 + 4 * 4, 8), (2, 3)).shape
    torch.Size([1, 7, 8])
    """
    new_h, new_w = int(new_size[0]), int(new_size[1])
    num_grid = posemb.shape[1] - num_prefix_tokens
    if old_size is None:
        side = math.isqrt(num_grid)
        old_h, old_w = side, side
    else:
        old_h, old_w = int(old_size[0]), int(old_size[1])
    if old_h == new_h and old_w == new_w and old_h * old_w == num_grid:
        return posemb
    prefix, grid = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
    dim = grid.shape[-1]
    dtype = grid.dtype
    # interpolate has no half-precision bicubic kernel on every device, and float32 keeps parity with timm
    grid = grid.float().reshape(1, old_h, old_w, dim).permute(0, 3, 1, 2)
    # antialiasing exists only for the (bi)linear and bicubic kernels
    antialias = antialias and interpolation in ('bilinear', 'bicubic')
    grid = F.interpolate(grid, size=(new_h, new_w), mode=interpolation, antialias=antialias)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_h * new_w, dim).to(dtype)
    if num_prefix_tokens:
        return torch.cat([prefix, grid], dim=1)
    return grid
