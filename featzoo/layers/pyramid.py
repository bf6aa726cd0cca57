"""A parameter-free simple feature pyramid: single-stride maps resampled to a ladder of strides."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .intermediates import feature_take_indices

PYRAMID_REDUCTIONS = (4, 8, 16, 32)


def resample_to_stride(x: torch.Tensor, stride_in: int, stride_out: int) -> torch.Tensor:
    """Resample an NCHW map of stride ``stride_in`` to stride ``stride_out`` without parameters.

    The image is taken to be the map size times ``stride_in``, and the output is exactly ceil(image / stride_out)
    on each side: bilinear interpolation to upsample, max pooling (kernel = stride = the factor, ceil mode) to
    downsample by an integer factor, adaptive max pooling for a fractional one.

    >>> resample_to_stride(torch.ones(1, 2, 5, 7), 16, 32).shape
    torch.Size([1, 2, 3, 4])
    >>> resample_to_stride(torch.ones(1, 2, 5, 7), 14, 4).shape
    torch.Size([1, 2, 18, 25])
    """
    if stride_out == stride_in:
        return x
    # integer arithmetic on the sizes keeps this traceable by FX (sizes may be proxies there)
    out_h = -(-(x.shape[-2] * stride_in) // stride_out)
    out_w = -(-(x.shape[-1] * stride_in) // stride_out)
    if stride_out < stride_in:
        return F.interpolate(x, size=(out_h, out_w), mode='bilinear', align_corners=False)
    if stride_out % stride_in == 0:
        factor = stride_out // stride_in
        return F.max_pool2d(x, kernel_size=factor, stride=factor, ceil_mode=True)
    return F.adaptive_max_pool2d(x, (out_h, out_w))


class SimplePyramid(nn.Module):
    """Turn maps that all share one stride (a plain ViT's blocks) into a pyramid of strides, one map per level.

    ``reductions_in[i]`` is the stride of the i-th input map, ``reductions_out[i]`` the stride it is resampled to.
    It holds no parameters, so a backbone's pretrained weights load unchanged.

    >>> p = SimplePyramid((16, 16, 16, 16))
    >>> [tuple(t.shape[-2:]) for t in p([torch.ones(1, 8, 20, 30)] * 4)]
    [(80, 120), (40, 60), (20, 30), (10, 15)]
    """

    def __init__(self, reductions_in: Sequence[int], reductions_out: Sequence[int] = (4, 8, 16, 32)) -> None:
        super().__init__()
        reductions_in, reductions_out = tuple(reductions_in), tuple(reductions_out)
        if len(reductions_in) != len(reductions_out):
            raise ValueError(f'reductions_in {reductions_in} and reductions_out {reductions_out} must have one '
                             f'entry per level, the same number of levels')
        for r in reductions_in + reductions_out:
            if isinstance(r, bool) or not isinstance(r, int) or r < 1:
                raise ValueError(f'reductions must be positive ints, got {r!r} in {reductions_in} / {reductions_out}')
        self.reductions_in = reductions_in
        self.reductions_out = reductions_out

    def forward(self, features: List[torch.Tensor]) -> List[torch.Tensor]:
        return [resample_to_stride(x, r_in, r_out)
                for x, r_in, r_out in zip(features, self.reductions_in, self.reductions_out)]

    def extra_repr(self) -> str:
        return f'reductions_in={self.reductions_in}, reductions_out={self.reductions_out}'


def token_pyramid(model: nn.Module, out_indices: Optional[Sequence[int]] = None,
                  stride: Optional[int] = None) -> Dict[str, Any]:
    """A family's ``feature_pyramid`` for a single-stride token model (``blocks``, ``embed_dim``): the getter
    wrapper's arguments that turn four tapped blocks into a :class:`SimplePyramid` of strides 4, 8, 16, 32.

    ``out_indices`` must name exactly four blocks (None: four evenly spaced, the last one included); ``stride`` is
    the blocks' stride (None: ``model.patch_embed.feat_ratio()``). Returns ``dict(pyramid=SimplePyramid,
    pyramid_levels=[level dicts], out_indices=blocks)``; the pyramid has no parameters.

    >>> m = nn.Module(); m.blocks = nn.ModuleList([nn.Identity()] * 8); m.embed_dim = 16
    >>> [(lv['reduction'], lv['module']) for lv in token_pyramid(m, stride=16)['pyramid_levels']][::3]
    [(4, 'blocks.1'), (32, 'blocks.7')]
    """
    depth = len(model.blocks)
    if out_indices is None:
        out_indices = [depth * (i + 1) // 4 - 1 for i in range(4)]
    take, _ = feature_take_indices(depth, out_indices)
    take = sorted(set(take))
    if len(take) != 4:
        raise ValueError(f'feature_pyramid=True needs exactly four distinct out_indices (one per stride '
                         f'{PYRAMID_REDUCTIONS}), got {tuple(out_indices)}; e.g. '
                         f'{tuple(depth * (i + 1) // 4 - 1 for i in range(4))}')
    if stride is None:
        stride = model.patch_embed.feat_ratio()
    levels = [dict(num_chs=model.embed_dim, reduction=r, module=f'blocks.{i}')
              for i, r in zip(take, PYRAMID_REDUCTIONS)]
    return dict(pyramid=SimplePyramid((stride,) * 4, PYRAMID_REDUCTIONS), pyramid_levels=levels,
                out_indices=tuple(take))
