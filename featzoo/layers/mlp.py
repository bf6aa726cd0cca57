"""The feed-forward blocks of transformers: the plain two-layer MLP (``fc1``, ``act``, ``fc2``) and the gated ones
(GLU-style: one half of the hidden units gates the other), with timm's parameter names so its weights load unchanged."""
from __future__ import annotations

from functools import partial
from typing import Callable, Optional, Tuple, Union

import torch
from torch import nn

from .activations import ActLayer, create_act_layer
from .helpers import to_2tuple
from .norm import GlobalResponseNorm


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


class GluMlp(nn.Module):
    """Gated MLP with one packed input projection: ``fc1`` yields 2*H units split in two halves, one half passed
    through the activation multiplies the other, then optional ``norm`` (on H) -> ``fc2``.

    ``hidden_features`` counts both halves (it must be even). ``gate_last=True`` activates the second half (the GLU
    paper's order); SwiGLUPacked activates the first. With ``use_conv=True`` it runs on NCHW maps via 1x1 convolutions.

    >>> GluMlp(8, 32)(torch.ones(2, 5, 8)).shape
    torch.Size([2, 5, 8])
    >>> GluMlp(8, 32).fc2.in_features
    16
    """

    def __init__(self, in_features: int, hidden_features: Optional[int] = None, out_features: Optional[int] = None,
                 act_layer: ActLayer = 'sigmoid', norm_layer: Optional[Callable[[int], nn.Module]] = None,
                 bias: Union[bool, Tuple[bool, bool]] = True, drop: Union[float, Tuple[float, float]] = 0.0,
                 use_conv: bool = False, gate_last: bool = True) -> None:
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        if hidden_features % 2:
            raise ValueError(f'GluMlp needs an even hidden_features (two halves), got {hidden_features}')
        bias = to_2tuple(bias)
        drop = to_2tuple(drop)
        linear = partial(nn.Conv2d, kernel_size=1) if use_conv else nn.Linear
        self.split_dim = 1 if use_conv else -1
        self.gate_last = gate_last
        self.fc1 = linear(in_features, hidden_features, bias=bias[0])
        self.act = create_act_layer(act_layer)
        self.drop1 = nn.Dropout(drop[0])
        self.norm = norm_layer(hidden_features // 2) if norm_layer is not None else nn.Identity()
        self.fc2 = linear(hidden_features // 2, out_features, bias=bias[1])
        self.drop2 = nn.Dropout(drop[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, second = self.fc1(x).chunk(2, dim=self.split_dim)
        x = first * self.act(second) if self.gate_last else self.act(first) * second
        x = self.drop1(x)
        return self.drop2(self.fc2(self.norm(x)))


def SwiGLUPacked(in_features: int, hidden_features: Optional[int] = None, out_features: Optional[int] = None,
                 **kwargs) -> GluMlp:
    """SwiGLU with a packed ``fc1`` (SiLU of the first half gates the second): a :class:`GluMlp` preset.

    >>> SwiGLUPacked(8, 32).gate_last
    False
    """
    kwargs.setdefault('act_layer', 'silu')
    kwargs.setdefault('gate_last', False)
    return GluMlp(in_features, hidden_features, out_features, **kwargs)


class SwiGLU(nn.Module):
    """SwiGLU with separate gate and value projections: ``act(fc1_g(x)) * fc1_x(x)`` -> optional ``norm`` -> ``fc2``.

    ``hidden_features`` is the width of each projection; ``align_to`` rounds it up to a multiple (0 = as given).

    >>> SwiGLU(8, 12, align_to=8).fc2.in_features
    16
    >>> SwiGLU(8, 16, norm_layer=nn.LayerNorm)(torch.ones(1, 3, 8)).shape
    torch.Size([1, 3, 8])
    """

    def __init__(self, in_features: int, hidden_features: Optional[int] = None, out_features: Optional[int] = None,
                 act_layer: ActLayer = 'silu', norm_layer: Optional[Callable[[int], nn.Module]] = None,
                 bias: Union[bool, Tuple[bool, bool]] = True, drop: Union[float, Tuple[float, float]] = 0.0,
                 align_to: int = 0) -> None:
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        if align_to:
            hidden_features += -hidden_features % align_to
        bias = to_2tuple(bias)
        drop = to_2tuple(drop)
        self.fc1_g = nn.Linear(in_features, hidden_features, bias=bias[0])
        self.fc1_x = nn.Linear(in_features, hidden_features, bias=bias[0])
        self.act = create_act_layer(act_layer)
        self.drop1 = nn.Dropout(drop[0])
        self.norm = norm_layer(hidden_features) if norm_layer is not None else nn.Identity()
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias[1])
        self.drop2 = nn.Dropout(drop[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.fc1_g(x)) * self.fc1_x(x)
        x = self.drop1(x)
        return self.drop2(self.fc2(self.norm(x)))


class GlobalResponseNormMlp(Mlp):
    """ConvNeXt V2's MLP: :class:`Mlp` whose hidden norm is a :class:`GlobalResponseNorm` named ``grn`` (timm's key),
    on NHWC input with linear layers or, with ``use_conv=True``, on NCHW maps with 1x1 convolutions.

    >>> GlobalResponseNormMlp(8, 32)(torch.ones(1, 3, 3, 8)).shape
    torch.Size([1, 3, 3, 8])
    >>> list(GlobalResponseNormMlp(8, 32, use_conv=True).state_dict())[:4]
    ['fc1.weight', 'fc1.bias', 'grn.weight', 'grn.bias']
    """

    def __init__(self, in_features: int, hidden_features: Optional[int] = None, out_features: Optional[int] = None,
                 act_layer: ActLayer = 'gelu', bias: Union[bool, Tuple[bool, bool]] = True,
                 drop: Union[float, Tuple[float, float]] = 0.0, use_conv: bool = False) -> None:
        super().__init__(in_features, hidden_features, out_features, act_layer=act_layer, bias=bias, drop=drop,
                         use_conv=use_conv,
                         norm_layer=partial(GlobalResponseNorm, channels_last=not use_conv))
        # the same place in the module order, under the name timm's checkpoints use
        self._modules = type(self._modules)((('grn' if k == 'norm' else k), m) for k, m in self._modules.items())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop1(self.act(self.fc1(x)))
        return self.drop2(self.fc2(self.grn(x)))
