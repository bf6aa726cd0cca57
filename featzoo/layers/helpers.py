"""Small numeric helpers shared by the layer and family modules."""
from __future__ import annotations

import collections.abc
import math
from typing import Any, Tuple

import torch


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """Round ``value`` to a multiple of ``divisor`` without dropping more than ``1 - round_limit`` of it.

    >>> make_divisible(37.5, 8)
    40
    """
    min_value = min_value or divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < round_limit * value:
        new_value += divisor
    return new_value


def to_2tuple(value: Any) -> Tuple[Any, Any]:
    """Return ``value`` as a pair; an iterable is returned as a tuple unchanged.

    >>> to_2tuple(3)
    (3, 3)
    """
    if isinstance(value, collections.abc.Iterable) and not isinstance(value, str):
        return tuple(value)
    return (value, value)


def get_padding(kernel_size: int, stride: int = 1, dilation: int = 1) -> int:
    """Symmetric padding that keeps 'same' output size for stride 1.

    >>> get_padding(3, 1, 2)
    2
    """
    return ((stride - 1) + dilation * (kernel_size - 1)) // 2


def ceil_div(a: int, b: int) -> int:
    """Integer ceiling division.

    >>> ceil_div(7, 2)
    4
    """
    return -(-a // b)


def log2_int(value: int) -> int:
    """Exact base-2 logarithm of a power of two."""
    return int(round(math.log2(value)))


def is_channels_last(t: Any) -> bool:
    """Whether ``t`` is a 4D tensor laid out channels_last (and not also plain contiguous, as 1x1 maps are).

    >>> is_channels_last(torch.ones(1, 2, 3, 3).contiguous(memory_format=torch.channels_last))
    True
    """
    return (isinstance(t, torch.Tensor) and t.dim() == 4 and not t.is_contiguous()
            and t.is_contiguous(memory_format=torch.channels_last))
