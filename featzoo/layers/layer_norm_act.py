"""Layer norm over the channels of an NCHW map, followed by an activation (a norm-act layer like BatchNormAct2d).

The state_dict is a plain ``nn.LayerNorm``'s (``weight``, ``bias``), as timm's ``LayerNormAct2d``.

>>> LayerNormAct2d(8)(torch.ones(1, 8, 2, 2)).shape
torch.Size([1, 8, 2, 2])
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .activations import ActLayer, create_act_layer

__all__ = ['LayerNormAct2d']


class LayerNormAct2d(nn.LayerNorm):
    """Normalize every position over its channels, then (unless ``apply_act=False``) apply ``act_layer``.

    >>> LayerNormAct2d(4, apply_act=False).act
    Identity()
    """

    def __init__(self, num_channels: int, eps: float = 1e-5, affine: bool = True, apply_act: bool = True,
                 act_layer: ActLayer = 'relu', inplace: bool = True) -> None:
        super().__init__(num_channels, eps=eps, elementwise_affine=affine)
        self.drop = nn.Identity()
        self.act = create_act_layer(act_layer, inplace=inplace) if apply_act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return self.act(self.drop(x.permute(0, 3, 1, 2)))
