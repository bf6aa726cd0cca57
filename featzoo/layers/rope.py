"""Rotary position embeddings (RoPE) for 2-D patch grids, as the EVA02, Perception Encoder, RoPE-ViT and DINOv3
families use them.

A table for an (H, W) grid is one tensor (..., H * W, 2 * head_dim): sines then cosines, each laid out per channel
pair ('interleaved': f0 f0 f1 f1 ...) or per half ('half': f0 f1 ... f0 f1 ...), the layout
:func:`apply_rope` expects with the same ``half`` flag. Tables are computed for the grid each call sees, in float32
with the same operations as timm, so a model takes any grid and equals timm's at its native one; the modules keep
no computed buffers. They are FX leaves (the grid size is Python ints there).

Three schemes:

- :class:`AxialRope` (EVA02, PE, RoPE-ViT 'axial'): index positions (optionally offset, and rescaled onto a
  reference grid), inverse-power frequencies over each axis.
- :class:`CenteredRope` (DINOv3, Sapiens2): cell centres normalized to [-1, 1] per axis, geometric periods.
- :class:`MixedRope` (RoPE-ViT 'mixed'): learned per-block, per-head 2-D frequencies (parameter ``freqs``).

>>> rope = AxialRope(head_dim=16, ref_grid=(4, 4))
>>> rope(3, 5).shape
torch.Size([15, 32])
>>> apply_rope(torch.ones(1, 2, 15, 16), rope(3, 5)).shape
torch.Size([1, 2, 15, 16])
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..features.notrace import register_notrace_module

__all__ = ['AxialRope', 'CenteredRope', 'MixedRope', 'apply_rope', 'rope_layout', 'ROPE_INDEXINGS']

ROPE_INDEXINGS = ('ij', 'xy')


def _check_head_dim(head_dim: int, multiple: int = 4) -> int:
    if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim < multiple or head_dim % multiple:
        raise ValueError(f'RoPE needs a head dimension that is a positive multiple of {multiple} (two axes, sine '
                         f'and cosine pairs), got {head_dim!r}')
    return head_dim


def _check_indexing(grid_indexing: str) -> str:
    if grid_indexing not in ROPE_INDEXINGS:
        raise ValueError(f'grid_indexing={grid_indexing!r} is invalid; valid: {ROPE_INDEXINGS}')
    return grid_indexing


def rope_layout(values: torch.Tensor, half: bool) -> torch.Tensor:
    """Spread per-frequency values (..., D / 2) over the D channels they rotate: 'half' repeats the block,
    'interleaved' repeats each value in place.

    >>> rope_layout(torch.tensor([1., 2.]), half=True).tolist(), rope_layout(torch.tensor([1., 2.]), False).tolist()
    ([1.0, 2.0, 1.0, 2.0], [1.0, 1.0, 2.0, 2.0])
    """
    return torch.cat([values, values], dim=-1) if half else values.repeat_interleave(2, -1)


def _rotate(x: torch.Tensor, half: bool) -> torch.Tensor:
    # the 90-degree turn of each rotated pair: (a, b) -> (-b, a), pairs either adjacent or one half apart
    if half:
        first, second = x.chunk(2, dim=-1)
        return torch.cat([-second, first], dim=-1)
    return torch.stack([-x[..., 1::2], x[..., ::2]], -1).reshape(x.shape)


def apply_rope(x: torch.Tensor, table: torch.Tensor, half: bool = False) -> torch.Tensor:
    """Rotate ``x`` (..., N, D) by a table (..., N, 2 * D) of sines then cosines; the result has ``x``'s dtype.

    >>> x = torch.randn(2, 3, 4)
    >>> table = torch.cat([torch.zeros(3, 4), torch.ones(3, 4)], -1)  # angle 0: no rotation
    >>> bool(torch.equal(apply_rope(x, table), x))
    True
    """
    sin, cos = table.chunk(2, dim=-1)
    return (x * cos + _rotate(x, half) * sin).to(x.dtype)


def _axis_positions(sizes: Sequence[int], offset: float) -> List[torch.Tensor]:
    return [torch.arange(s, dtype=torch.int64).to(torch.float32) + offset for s in sizes]


def _mesh(axes: List[torch.Tensor], grid_indexing: str) -> torch.Tensor:
    # (H, W, 2) whatever the indexing: 'xy' only swaps which coordinate comes first
    return torch.stack(torch.meshgrid(axes, indexing=grid_indexing), dim=-1)


def _sin_cos_table(angles: torch.Tensor, half: bool) -> torch.Tensor:
    return torch.cat([rope_layout(angles.sin(), half), rope_layout(angles.cos(), half)], dim=-1)


class _FixedRope(nn.Module):
    """The settings of the parameter-free schemes: ``head_dim``, ``temperature``, ``grid_offset``, ``grid_indexing``
    and the table layout ``half``; ``extra_repr`` lists the fields named in ``_repr_fields``."""

    _repr_fields: Tuple[str, ...] = ('head_dim', 'temperature', 'grid_offset', 'grid_indexing', 'half')

    def __init__(self, head_dim: int, temperature: float, grid_offset: float, grid_indexing: str,
                 half: bool) -> None:
        super().__init__()
        self.head_dim = _check_head_dim(head_dim)
        self.temperature = float(temperature)
        self.grid_offset = float(grid_offset)
        self.grid_indexing = _check_indexing(grid_indexing)
        self.half = half

    def extra_repr(self) -> str:
        return ', '.join(f'{name}={getattr(self, name)!r}' for name in self._repr_fields)


@register_notrace_module
class AxialRope(_FixedRope):
    """Axial RoPE on patch indices: a quarter of the head's channels per axis and per sine/cosine, frequencies
    ``temperature ** -(k / (head_dim / 4))``.

    ``grid_offset`` shifts every index; ``ref_grid`` rescales the indices of any grid onto that reference (EVA02 and
    PE fine-tune at other sizes this way); ``grid_indexing='xy'`` puts the width coordinate first.
    ``forward(height, width, device=None)`` returns the (H * W, 2 * head_dim) table (on ``device``).

    >>> AxialRope(8)(2, 2)[:, :4].tolist()[0]  # the first cell: angle 0, sin 0
    [0.0, 0.0, 0.0, 0.0]
    """

    _repr_fields = ('head_dim', 'temperature', 'grid_offset', 'ref_grid', 'grid_indexing', 'half')

    def __init__(self, head_dim: int, temperature: float = 10000.0, grid_offset: float = 0.0,
                 ref_grid: Optional[Tuple[int, int]] = None, grid_indexing: str = 'ij', half: bool = False) -> None:
        super().__init__(head_dim, temperature, grid_offset, grid_indexing, half)
        self.ref_grid = tuple(ref_grid) if ref_grid is not None else None

    def bands(self) -> torch.Tensor:
        """The (head_dim / 4,) angular frequencies.

        >>> AxialRope(8, temperature=100.0).bands().tolist()
        [1.0, 0.10000000149011612]
        """
        n = self.head_dim // 4
        exponent = torch.arange(0, n, 1, dtype=torch.int64).to(torch.float32) / n
        return 1.0 / (self.temperature ** exponent)

    def forward(self, height: int, width: int, device: Optional[torch.device] = None) -> torch.Tensor:
        sizes, ref = [height, width], list(self.ref_grid) if self.ref_grid is not None else None
        if self.grid_indexing == 'xy':
            sizes = sizes[::-1]
            ref = ref[::-1] if ref is not None else None
        axes = _axis_positions(sizes, self.grid_offset)
        if ref is not None:
            axes = [t / s * r for t, s, r in zip(axes, sizes, ref)]
        angles = _mesh(axes, self.grid_indexing).unsqueeze(-1) * self.bands()  # (H, W, 2, head_dim / 4)
        # computed on the CPU as timm builds its cached table, then moved: equal values on every device
        return _sin_cos_table(angles.flatten(-2).flatten(0, -2), self.half).to(device)



@register_notrace_module
class CenteredRope(_FixedRope):
    """DINOv3's RoPE: cell centres ``(i + 0.5 + offset) / size`` mapped to [-1, 1] on each axis, periods
    ``temperature ** (2k / (head_dim / 2))``, angles ``2 pi * coordinate / period``; 'half' layout by default.

    ``forward(height, width, device=None)`` returns the (H * W, 2 * head_dim) table (on ``device``).

    >>> CenteredRope(8)(1, 1)[0, :4].tolist()  # the centre of a 1 x 1 grid is 0: sin 0
    [0.0, 0.0, 0.0, 0.0]
    """

    def __init__(self, head_dim: int, temperature: float = 100.0, grid_offset: float = 0.0,
                 grid_indexing: str = 'ij', half: bool = True) -> None:
        super().__init__(head_dim, temperature, grid_offset, grid_indexing, half)

    def periods(self) -> torch.Tensor:
        """The (head_dim / 4,) periods.

        >>> CenteredRope(8, temperature=100.0).periods().tolist()
        [1.0, 10.0]
        """
        n = self.head_dim // 4
        return self.temperature ** (2.0 * torch.arange(n, dtype=torch.float32) / (self.head_dim // 2))

    def forward(self, height: int, width: int, device: Optional[torch.device] = None) -> torch.Tensor:
        sizes = [height, width] if self.grid_indexing == 'ij' else [width, height]
        axes = [(torch.arange(0.5, s, dtype=torch.float32) + self.grid_offset) / float(s) for s in sizes]
        coords = (2.0 * _mesh(axes, self.grid_indexing) - 1.0).flatten(0, -2)  # (H * W, 2)
        angles = 2 * math.pi * coords[:, :, None] / self.periods()[None, None, :]
        return _sin_cos_table(angles.flatten(1), self.half).to(device)



@register_notrace_module
class MixedRope(nn.Module):
    """RoPE-ViT's mixed RoPE: each block and head learns its own 2-D frequencies ``freqs`` (2, depth, heads,
    head_dim / 2); an angle is ``x * fx + y * fy`` on integer patch positions; 'interleaved' layout.

    ``forward(height, width)`` returns (depth, heads, H * W, 2 * head_dim): one table per block.

    >>> MixedRope(head_dim=8, depth=2, num_heads=3)(2, 3).shape
    torch.Size([2, 3, 6, 16])
    """

    def __init__(self, head_dim: int, depth: int, num_heads: int, temperature: float = 10.0,
                 grid_indexing: str = 'xy') -> None:
        super().__init__()
        self.head_dim = _check_head_dim(head_dim)
        self.depth = depth
        self.num_heads = num_heads
        self.temperature = float(temperature)
        self.grid_indexing = _check_indexing(grid_indexing)
        self.freqs = nn.Parameter(torch.empty(2, depth, num_heads, head_dim // 2))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw the frequencies as RoPE-ViT initializes them: axial magnitudes turned by a random angle per block
        and head.

        >>> MixedRope(8, 1, 1).freqs.shape
        torch.Size([2, 1, 1, 4])
        """
        if self.freqs.is_meta:
            return
        device = self.freqs.device
        magnitude = 1.0 / (self.temperature ** (torch.arange(0, self.head_dim, 4, device=device,
                                                             dtype=torch.float32) / self.head_dim))
        angle = torch.rand(self.depth, self.num_heads, 1, device=device) * 2 * math.pi
        fx = torch.cat([magnitude * torch.cos(angle), magnitude * torch.cos(angle + math.pi / 2)], dim=-1)
        fy = torch.cat([magnitude * torch.sin(angle), magnitude * torch.sin(angle + math.pi / 2)], dim=-1)
        with torch.no_grad():
            self.freqs.copy_(torch.stack([fx, fy]).to(self.freqs.dtype))

    def forward(self, height: int, width: int, device: Optional[torch.device] = None) -> torch.Tensor:
        sizes = [height, width] if self.grid_indexing == 'ij' else [width, height]
        coords = _mesh(_axis_positions(sizes, 0.0), self.grid_indexing).reshape(-1, 2).to(self.freqs.device)
        freqs = self.freqs.float()
        angles = (coords[:, 0].unsqueeze(-1) * freqs[0].unsqueeze(-2)
                  + coords[:, 1].unsqueeze(-1) * freqs[1].unsqueeze(-2))
        return _sin_cos_table(angles, half=False).to(self.freqs.dtype)

    def extra_repr(self) -> str:
        return (f'head_dim={self.head_dim}, depth={self.depth}, num_heads={self.num_heads}, '
                f'temperature={self.temperature}, grid_indexing={self.grid_indexing!r}')
