"""Pool, norm, optional MLP, classify: the head of ConvNeXt-style networks whose last norm follows the pooling."""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Optional

import torch
from torch import nn

from .activations import ActLayer, create_act_layer
from .norm import LayerNorm2d
from .pooling import SelectAdaptivePool2d

# Pooling that concatenates (catavgmax) would change the width the norm was built for.
NORM_MLP_POOL_TYPES = ('', 'avg', 'max', 'avgmax')


def _layer_norm_2d(num_features: int) -> nn.Module:
    return LayerNorm2d(num_features, eps=1e-6)


def _check_pool(pool_type: str) -> None:
    if pool_type not in NORM_MLP_POOL_TYPES:
        raise ValueError(f'global_pool={pool_type!r} is not supported by this head; valid: {NORM_MLP_POOL_TYPES}')


class NormMlpClassifierHead(nn.Module):
    """Children ``global_pool``, ``norm``, ``flatten``, ``pre_logits`` (``fc`` + ``act`` when ``hidden_size``),
    ``drop``, ``fc``. Without pooling the norm and the linear layers act per position (1x1 convolutions).

    >>> NormMlpClassifierHead(64, 10)(torch.ones(2, 64, 4, 4)).shape
    torch.Size([2, 10])
    >>> NormMlpClassifierHead(64, 10, pool_type='')(torch.ones(2, 64, 4, 4)).shape
    torch.Size([2, 10, 4, 4])
    """

    def __init__(self, in_features: int, num_classes: int, hidden_size: Optional[int] = None,
                 pool_type: str = 'avg', drop_rate: float = 0.0,
                 norm_layer: Callable[[int], nn.Module] = _layer_norm_2d, act_layer: ActLayer = 'tanh') -> None:
        super().__init__()
        _check_pool(pool_type)
        self.in_features = in_features
        self.hidden_size = hidden_size
        self.num_features = in_features
        self.use_conv = not pool_type
        self.global_pool = SelectAdaptivePool2d(pool_type)
        self.norm = norm_layer(in_features)
        self.flatten = nn.Flatten(1) if pool_type else nn.Identity()
        if hidden_size:
            self.pre_logits: nn.Module = nn.Sequential(OrderedDict([
                ('fc', self._linear(in_features, hidden_size)),
                ('act', create_act_layer(act_layer)),
            ]))
            self.num_features = hidden_size
        else:
            self.pre_logits = nn.Identity()
        self.drop = nn.Dropout(drop_rate)
        self.fc = self._linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def _linear(self, in_features: int, out_features: int) -> nn.Module:
        if self.use_conv:
            return nn.Conv2d(in_features, out_features, kernel_size=1)
        return nn.Linear(in_features, out_features)

    def reset(self, num_classes: int, pool_type: Optional[str] = None, reset_other: bool = False,
              in_features: Optional[int] = None) -> None:
        """New classifier; optionally new pooling, with ``reset_other`` no norm and no pre-logits MLP, and with
        ``in_features`` a new input width (only once the norm is gone, e.g. after the backbone was truncated).

        >>> head = NormMlpClassifierHead(64, 10)
        >>> head.reset(0, '')
        >>> head(torch.ones(2, 64, 4, 4)).shape
        torch.Size([2, 64, 4, 4])
        """
        if in_features is not None and in_features != self.in_features and not reset_other \
                and not isinstance(self.norm, nn.Identity):
            raise ValueError(f'in_features={in_features} differs from the norm width {self.in_features}; '
                             f'pass reset_other=True to drop the norm and pre-logits MLP first')
        if pool_type is not None:
            _check_pool(pool_type)
            self.global_pool = SelectAdaptivePool2d(pool_type).train(self.training)
            self.flatten = (nn.Flatten(1) if pool_type else nn.Identity()).train(self.training)
        if reset_other:
            self.norm = nn.Identity()
            self.pre_logits = nn.Identity()
            self.hidden_size = None
            self.num_features = self.in_features
        if in_features is not None and in_features != self.in_features:
            self.in_features = in_features
            if not self.hidden_size:
                self.num_features = in_features
        self.use_conv = self.global_pool.is_identity()
        if self.hidden_size:
            old = self.pre_logits.fc
            if isinstance(old, nn.Conv2d) != self.use_conv:
                # Switching between pooled and per-position use keeps the trained MLP weights, reshaped.
                new = self._linear(self.in_features, self.hidden_size).to(old.weight.device, old.weight.dtype)
                with torch.no_grad():
                    new.weight.copy_(old.weight.reshape(new.weight.shape))
                    new.bias.copy_(old.bias)
                new.weight.requires_grad_(old.weight.requires_grad)
                new.bias.requires_grad_(old.bias.requires_grad)
                self.pre_logits.fc = new.train(self.pre_logits.training)
        fc = self._linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        # A reset on a model already moved to a GPU or cast to half must keep it there.
        param = next(self.parameters(), None)
        if param is not None:
            fc = fc.to(param.device, param.dtype)
        self.fc = fc.train(self.training)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        x = self.norm(x)
        x = self.flatten(x)
        x = self.pre_logits(x)
        x = self.drop(x)
        if pre_logits:
            return x
        return self.fc(x)
