"""Activation lookup by name, so family tables can name activations as data."""
from __future__ import annotations

from typing import Callable, Type, Union

import torch
from torch import nn
from torch.nn import functional as F


class GELUTanh(nn.Module):
    """GELU with the tanh approximation."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate='tanh')


class GELU(nn.Module):
    """Exact GELU that accepts (and ignores) ``inplace`` like the other activations here."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x)


class _TensorMethodAct(nn.Module):
    """An activation that is one tensor method (its in-place twin with ``inplace=True``), named by ``method``."""

    method = ''

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(x, self.method + '_')() if self.inplace else getattr(x, self.method)()


class Sigmoid(_TensorMethodAct):
    method = 'sigmoid'


class Tanh(_TensorMethodAct):
    method = 'tanh'


class Identity(nn.Identity):
    """Identity that accepts the ``inplace`` keyword."""

    def __init__(self, *args, inplace: bool = False, **kwargs) -> None:
        super().__init__()


_ACTIVATIONS = {
    'relu': nn.ReLU,
    'relu6': nn.ReLU6,
    'leaky_relu': nn.LeakyReLU,
    'elu': nn.ELU,
    'prelu': nn.PReLU,
    'celu': nn.CELU,
    'selu': nn.SELU,
    'silu': nn.SiLU,
    'swish': nn.SiLU,
    'mish': nn.Mish,
    'gelu': GELU,
    'gelu_tanh': GELUTanh,
    'sigmoid': Sigmoid,
    'tanh': Tanh,
    'hard_sigmoid': nn.Hardsigmoid,
    'hard_swish': nn.Hardswish,
    'hardsigmoid': nn.Hardsigmoid,
    'hardswish': nn.Hardswish,
    'identity': Identity,
    '': Identity,
}

ActLayer = Union[str, Type[nn.Module], Callable[..., nn.Module], None]


def get_act_layer(name: ActLayer) -> Callable[..., nn.Module]:
    """Resolve an activation given by name (or already a class) to a module factory.

    >>> get_act_layer('silu')
    <class 'torch.nn.modules.activation.SiLU'>
    """
    if name is None:
        return Identity
    if not isinstance(name, str):
        return name
    try:
        return _ACTIVATIONS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; valid: {sorted(k for k in _ACTIVATIONS if k)}") from None


def create_act_layer(name: ActLayer, inplace: bool = False, **kwargs) -> nn.Module:
    """Instantiate an activation by name, passing ``inplace`` where the class takes it.

    >>> create_act_layer('relu', inplace=True)
    ReLU(inplace=True)
    """
    layer = get_act_layer(name)
    if layer in (nn.SiLU, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.Hardswish, nn.Hardsigmoid,
                 nn.Mish, GELU, GELUTanh, Sigmoid, Tanh, Identity):
        return layer(inplace=inplace, **kwargs)
    return layer(**kwargs)
