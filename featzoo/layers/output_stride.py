"""The one rule every dilatable CNN here follows to reach an ``output_stride`` finer than its natural 32."""
from __future__ import annotations

from typing import Tuple


def stride_or_dilate(net_stride: int, dilation: int, output_stride: int, stride: int = 2) -> Tuple[int, int, int]:
    """A downsampling step of ``stride`` in a network now at ``net_stride`` and ``dilation``: below
    ``output_stride`` it strides; once there, it keeps stride 1 and the layers after it dilate by ``stride`` more,
    so they see the same neighbourhoods (and take the same weights) on a finer map. Returns the step's stride and
    the network's new stride and dilation.

    >>> stride_or_dilate(8, 1, 16), stride_or_dilate(16, 1, 16), stride_or_dilate(16, 2, 16, stride=1)
    ((2, 16, 1), (1, 16, 2), (1, 16, 2))
    """
    if net_stride < output_stride:
        return stride, net_stride * stride, dilation
    return 1, net_stride, dilation * stride
