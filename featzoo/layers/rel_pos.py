"""Relative position biases of windowed attention (MaxViT, CoAtNet), for any window size at run time.

Three kinds, with timm's parameter names so its checkpoints load unchanged:

- :class:`RelPosBias`: a learned table of ``(2h-1)*(2w-1)`` offsets x heads (Swin style);
- :class:`RelPosBiasTf`: the same table laid out ``(heads, 2h-1, 2w-1)``, indexed key minus query (TensorFlow MaxViT);
- :class:`RelPosMlp`: a small MLP of log-spaced offsets (no table: any window is computed exactly).

Each module is called as ``bias(height, width)`` and returns the additive attention bias ``(1, heads, N, N)`` for a
``height x width`` window. At the window it was built for it reads its table; at another window it resamples the table
on the fly with timm's geometric interpolation (the one ``set_input_size`` and checkpoint resizing use), so a model
built for one image size computes at another as timm's model does after ``set_input_size``. The modules are FX leaves:
the window size comes from the traced input's shape.

>>> RelPosBias((3, 3), num_heads=2)(3, 3).shape
torch.Size([1, 2, 9, 9])
>>> RelPosBias((3, 3), num_heads=2)(2, 4).shape
torch.Size([1, 2, 8, 8])
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch
from torch import nn

from ..features.notrace import register_notrace_module
from .mlp import Mlp
from .weight_init import normal_, trunc_normal_

__all__ = ['RelPosBias', 'RelPosBiasTf', 'RelPosMlp', 'relative_position_index', 'geometric_positions',
           'resample_relative_grid', 'log_relative_coords']

Pair = Tuple[int, int]


def _on_meta(device: Optional[torch.device]) -> bool:
    return torch.empty(0, device=device).is_meta


def relative_position_index(window: Pair, device: Optional[torch.device] = None,
                            key_minus_query: bool = False) -> torch.Tensor:
    """``(N, N)`` index into a row-major ``(2h-1, 2w-1)`` offset table for every (query, key) pair of a window.

    The offset is query minus key (Swin, timm's ``RelPosBias``) or, with ``key_minus_query``, key minus query (the
    TensorFlow MaxViT table).

    >>> relative_position_index((1, 2)).tolist()
    [[1, 0], [2, 1]]
    >>> relative_position_index((1, 2), key_minus_query=True).tolist()
    [[1, 2], [0, 1]]
    """
    wh, ww = window
    if _on_meta(device):
        return torch.empty(wh * ww, wh * ww, dtype=torch.long, device='meta')
    rows = torch.arange(wh, device=device).repeat_interleave(ww)
    cols = torch.arange(ww, device=device).repeat(wh)
    d_row = rows[:, None] - rows[None, :]
    d_col = cols[:, None] - cols[None, :]
    if key_minus_query:
        d_row, d_col = -d_row, -d_col
    return (d_row + wh - 1) * (2 * ww - 1) + (d_col + ww - 1)


@functools.lru_cache(maxsize=256)
def geometric_positions(src: int, dst: int) -> Tuple[float, ...]:
    """Where timm places the ``src`` entries of a table axis when resampling it to ``dst`` entries.

    The gaps grow geometrically away from the centre; the ratio is bisected so that half of the ``src`` samples span
    half of ``dst`` (the search and its last midpoint are timm's, so that the samples are the same numbers).
    """
    lo, hi = 1.01, 1.5
    ratio = lo
    while hi - lo > 1e-6:
        ratio = (lo + hi) / 2.0
        if (1.0 - ratio ** (src // 2)) / (1.0 - ratio) > dst // 2:
            hi = ratio
        else:
            lo = ratio
    steps, pos = [], 1.0
    for i in range(src // 2):
        steps.append(pos)
        pos += ratio ** (i + 1)
    return tuple([-s for s in reversed(steps)] + [0.0] + steps)


@functools.lru_cache(maxsize=256)
def _axis_weights(src: int, dst: int) -> Tuple[Tuple[float, ...], ...]:
    """``dst x src`` linear interpolation weights from the geometric sample positions to the integer offsets of a
    ``dst``-entry axis, clamped at both ends (timm's RegularGridInterpolator along one axis)."""
    src_pos = geometric_positions(src, dst)
    last = len(src_pos) - 1
    half = dst // 2
    rows = []
    for target in (float(t) for t in range(-half, half + 1)):
        # the first sample at or right of the target, searched in plain Python (not the C ``bisect``) so that
        # torch.compile can fold it into a constant when the window changes at run time
        right = 0
        while right < last and src_pos[right] < target:
            right += 1
        left = max(right - 1, 0)
        to_left = max(target - src_pos[left], 0.0)
        to_right = max(src_pos[right] - target, 0.0)
        if to_left == 0.0 and to_right == 0.0:
            to_left = to_right = 1.0
        row = [0.0] * len(src_pos)
        row[left] += to_right / (to_left + to_right)
        row[right] += to_left / (to_left + to_right)
        rows.append(tuple(row))
    return tuple(rows)


def resample_relative_grid(grid: torch.Tensor, size: Pair) -> torch.Tensor:
    """Resample a ``(heads, H, W)`` relative offset table to ``(heads, *size)`` (odd sides) as timm does.

    Linear in the table (differentiable); the interpolation weights are constants of the two sizes.

    >>> resample_relative_grid(torch.randn(2, 13, 13), (3, 5)).shape
    torch.Size([2, 3, 5])
    """
    src = tuple(grid.shape[-2:])
    if src == tuple(size):
        return grid
    if grid.is_meta:
        return grid.new_empty(grid.shape[:-2] + tuple(size))
    along_h = torch.tensor(_axis_weights(src[0], size[0]), dtype=torch.float32, device=grid.device)
    along_w = torch.tensor(_axis_weights(src[1], size[1]), dtype=torch.float32, device=grid.device)
    out = along_h @ grid.float() @ along_w.T
    return out.to(grid.dtype)


def log_relative_coords(window: Pair, device: Optional[torch.device] = None,
                        dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """``(2h-1, 2w-1, 2)`` offsets (row, column) mapped by ``sign(d) * log(1 + |d|)`` (timm's 'cr' mode).

    >>> log_relative_coords((1, 2))[0, :, 1]
    tensor([-0.6931,  0.0000,  0.6931])
    """
    if _on_meta(device):
        return torch.empty(2 * window[0] - 1, 2 * window[1] - 1, 2, dtype=dtype, device='meta')
    d_row = torch.arange(-(window[0] - 1), window[0], device=device, dtype=torch.float32)
    d_col = torch.arange(-(window[1] - 1), window[1], device=device, dtype=torch.float32)
    coords = torch.stack(torch.meshgrid(d_row, d_col, indexing='ij'), dim=-1)
    coords = torch.sign(coords) * torch.log1p(coords.abs())
    return coords.to(dtype or torch.get_default_dtype())


def _window(window: Tuple[int, int]) -> Pair:
    return int(window[0]), int(window[1])


class _LearnedRelPos(nn.Module):
    """What the two learned tables share: the window they were built for, the computed index into them, resampling
    in place (``set_window_size``) or on the fly for another window. A subclass lays the table out (``_new_table``,
    ``_grid`` / ``_from_grid``: to and from ``(heads, 2h-1, 2w-1)``), initializes it and gathers the bias."""

    key_minus_query = False

    def __init__(self, window_size: Pair, num_heads: int) -> None:
        super().__init__()
        self.window_size = _window(window_size)
        self.num_heads = num_heads
        wh, ww = self.window_size
        self.relative_position_bias_table = nn.Parameter(self._new_table(2 * wh - 1, 2 * ww - 1))
        self.register_buffer('relative_position_index', self._index(self.window_size), persistent=False)
        self.reset_parameters()

    def _new_table(self, rows: int, cols: int) -> torch.Tensor:
        raise NotImplementedError

    def reset_parameters(self) -> None:
        raise NotImplementedError

    def _grid(self) -> torch.Tensor:
        return self.relative_position_bias_table

    def _from_grid(self, grid: torch.Tensor) -> torch.Tensor:
        return grid

    def _index(self, window: Pair, device: Optional[torch.device] = None) -> torch.Tensor:
        return relative_position_index(window, device=device, key_minus_query=self.key_minus_query)

    def init_non_persistent_buffers(self) -> None:
        self.relative_position_index = self._index(self.window_size, device=self.relative_position_bias_table.device)

    def set_window_size(self, window_size: Pair) -> None:
        """Resample the table to another window in place (timm's ``set_window_size``)."""
        window_size = _window(window_size)
        if window_size == self.window_size:
            return
        with torch.no_grad():
            grid = resample_relative_grid(self._grid(), (2 * window_size[0] - 1, 2 * window_size[1] - 1))
        table = self.relative_position_bias_table
        self.relative_position_bias_table = nn.Parameter(self._from_grid(grid).contiguous(),
                                                         requires_grad=table.requires_grad)
        self.window_size = window_size
        self.init_non_persistent_buffers()

    def _table_and_index(self, height: int, width: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """The table and the index for a ``height x width`` window: the stored ones at the built window, else the
        table resampled (differentiably) and a new index."""
        if (height, width) == self.window_size:
            return self.relative_position_bias_table, self.relative_position_index
        table = self._from_grid(resample_relative_grid(self._grid(), (2 * height - 1, 2 * width - 1)))
        return table, self._index((height, width), device=table.device)

    def extra_repr(self) -> str:
        return f'window_size={self.window_size}, num_heads={self.num_heads}'


@register_notrace_module
class RelPosBias(_LearnedRelPos):
    """Learned bias per relative offset and head, table ``((2h-1)*(2w-1), heads)``.

    >>> b = RelPosBias((2, 2), num_heads=3)
    >>> torch.equal(b(2, 2)[0, :, 0, 3], b.relative_position_bias_table[0])
    True
    """

    def _new_table(self, rows: int, cols: int) -> torch.Tensor:
        return torch.zeros(rows * cols, self.num_heads)

    def reset_parameters(self) -> None:
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def _grid(self) -> torch.Tensor:
        wh, ww = self.window_size
        return self.relative_position_bias_table.T.reshape(self.num_heads, 2 * wh - 1, 2 * ww - 1)

    def _from_grid(self, grid: torch.Tensor) -> torch.Tensor:
        return grid.reshape(self.num_heads, -1).T

    def forward(self, height: int, width: int) -> torch.Tensor:
        table, index = self._table_and_index(height, width)
        return table[index].permute(2, 0, 1).unsqueeze(0)


@register_notrace_module
class RelPosBiasTf(_LearnedRelPos):
    """Learned bias per relative offset and head, table ``(heads, 2h-1, 2w-1)`` indexed by key minus query (the
    layout of the TensorFlow MaxViT weights).

    >>> b = RelPosBiasTf((2, 2), num_heads=3)
    >>> torch.equal(b(2, 2)[0, :, 0, 3], b.relative_position_bias_table[:, 2, 2])
    True
    """

    key_minus_query = True

    def _new_table(self, rows: int, cols: int) -> torch.Tensor:
        return torch.zeros(self.num_heads, rows, cols)

    def reset_parameters(self) -> None:
        normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, height: int, width: int) -> torch.Tensor:
        grid, index = self._table_and_index(height, width)
        return grid.flatten(1)[:, index].unsqueeze(0)


@register_notrace_module
class RelPosMlp(nn.Module):
    """Bias per relative offset and head from an MLP of log-spaced offsets (timm's ``RelPosMlp``, 'cr' mode): any
    window is computed from the same weights, nothing is resampled.

    >>> RelPosMlp((2, 2), num_heads=3, hidden_dim=8)(3, 1).shape
    torch.Size([1, 3, 3, 3])
    """

    def __init__(self, window_size: Pair, num_heads: int, hidden_dim: int = 128) -> None:
        super().__init__()
        self.window_size = _window(window_size)
        self.num_heads = num_heads
        self.mlp = Mlp(2, hidden_dim, num_heads, act_layer='relu', drop=(0.125, 0.0))
        self.register_buffer('relative_position_index', relative_position_index(self.window_size), persistent=False)
        self.register_buffer('rel_coords_log', log_relative_coords(self.window_size), persistent=False)

    def init_non_persistent_buffers(self) -> None:
        weight = self.mlp.fc1.weight
        self.relative_position_index = relative_position_index(self.window_size, device=weight.device)
        self.rel_coords_log = log_relative_coords(self.window_size, device=weight.device, dtype=weight.dtype)

    def set_window_size(self, window_size: Pair) -> None:
        """Compute the offsets of another window (the MLP weights are unchanged)."""
        self.window_size = _window(window_size)
        self.init_non_persistent_buffers()

    def forward(self, height: int, width: int) -> torch.Tensor:
        if (height, width) == self.window_size:
            coords, index = self.rel_coords_log, self.relative_position_index
        else:
            weight = self.mlp.fc1.weight
            coords = log_relative_coords((height, width), device=weight.device, dtype=weight.dtype)
            index = relative_position_index((height, width), device=weight.device)
        table = self.mlp(coords).reshape(-1, self.num_heads)
        return table[index].permute(2, 0, 1).unsqueeze(0)

    def extra_repr(self) -> str:
        return f'window_size={self.window_size}, num_heads={self.num_heads}'
