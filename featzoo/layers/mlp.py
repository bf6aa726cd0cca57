"""The two-layer feed-forward block of transformers (children ``fc1``, ``act``, ``fc2``)."""
from __future__ import annotations

from functools import partial
from typing import Callable, Optional, Tuple, Union

import torch
from torch import nn

from .activations import ActLayer, create_act_layer
from .helpers import to_2tuple


class Mlp(nn.Module):
    """``fc1`` -> activation -> dropout -> optional ``norm`` -> ``fc2`` -> dropout, on (..., C) or, with
    ``use_conv=True``, on NCHW maps via 1x1 convolutions.

    ``bias`` and ``drop`` take one value or a pair (first, second layer).

    >>> Mlp(8, 32)(torch.ones(2, 5, 8)).shape
    torch.Size([2, 5, 8])
    >>> Mlp(8, 16, 4, use_conv=True)(torch.ones(1, 8, 3, 3)).shape
    torch.Size([1, 4, 3, 3])
    """

    def __init__(self, in_features: int, hidden_features: Optional[int] = None, out_features: Optional[int] = None,
                 act_layer: ActLayer = 'gelu', norm_layer: Optional[Callable[[int], nn.Module]] = None,
                 bias: Union[bool, Tuple[bool, bool]] = True, drop: Union[float, Tuple[float, float]] = 0.0,
                 use_conv: bool = False) -> None:
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        bias = to_2tuple(bias)
        drop = to_2tuple(drop)
        linear = partial(nn.Conv2d, kernel_size=1) if use_conv else nn.Linear
        self.fc1 = linear(in_features, hidden_features, bias=bias[0])
        self.act = create_act_layer(act_layer)
        self.drop1 = nn.Dropout(drop[0])
        self.norm = norm_layer(hidden_features) if norm_layer is not None else nn.Identity()
        self.fc2 = linear(hidden_features, out_features, bias=bias[1])
        self.drop2 = nn.Dropout(drop[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop1(self.act(self.fc1(x)))
        return self.drop2(self.fc2(self.norm(x)))
