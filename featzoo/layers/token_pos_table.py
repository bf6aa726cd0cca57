"""A learned absolute position table (``pos_embed``, (1, prefix + H * W, C)) moved to another patch grid: when the
model's reference size changes (``set_input_size``) and when a checkpoint was trained at another size. ViT, DeiT,
BEiT, EVA, CaiT and Hiera resample theirs the same way (bicubic, prefix entries kept).

>>> table = nn.Parameter(torch.zeros(1, 1 + 4 * 4, 8))
>>> resized_pos_table(table, (2, 3), (4, 4), num_prefix_tokens=1).shape
torch.Size([1, 7, 8])
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .pos_embed import resample_abs_pos_embed

__all__ = ['resized_pos_table', 'square_pos_table_to']


def resized_pos_table(table: nn.Parameter, new_grid: Sequence[int], old_grid: Sequence[int],
                      num_prefix_tokens: int) -> nn.Parameter:
    """``table`` (learned on ``old_grid``) resampled to ``new_grid``, as a new parameter that trains as ``table``
    did; the resampling itself is not recorded by autograd (it replaces the weights, it is not a step of the model).

    >>> resized_pos_table(nn.Parameter(torch.ones(1, 4, 2), requires_grad=False), (1, 2), (2, 2), 0).requires_grad
    False
    """
    with torch.no_grad():
        resized = resample_abs_pos_embed(table, new_grid, old_grid, num_prefix_tokens=num_prefix_tokens)
    return nn.Parameter(resized, requires_grad=table.requires_grad)


def square_pos_table_to(value: torch.Tensor, grid: Sequence[int], num_prefix_tokens: int) -> torch.Tensor:
    """A checkpoint's position table, learned on a square patch grid, resampled to the model's ``grid``. A table
    whose patch entries do not form a square cannot tell its grid: ValueError.

    >>> square_pos_table_to(torch.zeros(1, 1 + 3 * 3, 8), (2, 4), num_prefix_tokens=1).shape
    torch.Size([1, 9, 8])
    """
    entries = value.shape[1] - num_prefix_tokens
    side = math.isqrt(entries)
    if side * side != entries:
        raise ValueError(f'cannot tell the patch grid of a position table with {entries} patch entries: it is not '
                         f'square; build the model for the size the weights were trained at')
    return resample_abs_pos_embed(value, grid, (side, side), num_prefix_tokens=num_prefix_tokens)
