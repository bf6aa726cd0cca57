"""The stride schedule of a staged network built for an ``output_stride`` below its natural one: once the maps
have reached ``output_stride``, a stage that would downsample keeps the resolution and dilates its convolutions by
the stride it gave up, so later stages see the same receptive field on a finer map.

>>> reduction, dilation, plan = 4, 1, []
>>> for stride in (1, 2, 2, 2):
...     stride, dilation, reduction = dilate_past(8, reduction, stride, dilation)
...     plan.append((stride, dilation, entry_dilation(dilation)))
>>> plan
[(1, 1, 1), (2, 1, 1), (1, 2, 1), (1, 4, 2)]
"""
from __future__ import annotations

from typing import Tuple

__all__ = ['dilate_past', 'entry_dilation']


def dilate_past(output_stride: int, reduction: int, stride: int, dilation: int) -> Tuple[int, int, int]:
    """A stage's ``(stride, dilation, reduction after it)``, given the ``reduction`` and ``dilation`` before it and
    the ``stride`` it would have at the natural output stride.

    >>> dilate_past(16, 16, 2, 1)
    (1, 2, 16)
    """
    if reduction >= output_stride and stride > 1:
        dilation *= stride
        stride = 1
    return stride, dilation, reduction * stride


def entry_dilation(dilation: int) -> int:
    """The dilation of a stage's first convolution, which still reads the map the previous stage left: 1 until the
    stage itself dilates by 4 or more, then 2 (timm's rule, which the published dilated checkpoints assume).

    >>> [entry_dilation(d) for d in (1, 2, 4, 8)]
    [1, 1, 2, 2]
    """
    return 1 if dilation in (1, 2) else 2
