"""Global pooling and the classifier that follows it."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

POOL_TYPES = ('', 'avg', 'max', 'avgmax', 'catavgmax')


def _avg(x: torch.Tensor, dims: Tuple[int, int]) -> torch.Tensor:
    return x.mean(dims, keepdim=True)


def _max(x: torch.Tensor, dims: Tuple[int, int]) -> torch.Tensor:
    return x.amax(dims, keepdim=True)


class SelectAdaptivePool2d(nn.Module):
    """Global pooling chosen by name: ``'avg'``, ``'max'``, ``'avgmax'``, ``'catavgmax'`` or ``''`` (no pooling).

    >>> SelectAdaptivePool2d('avg', flatten=True)(torch.ones(2, 8, 3, 3)).shape
    torch.Size([2, 8])
    """

    def __init__(self, pool_type: str = 'avg', flatten: bool = False, input_fmt: str = 'NCHW') -> None:
        super().__init__()
        if pool_type not in POOL_TYPES:
            raise ValueError(f'unknown global_pool {pool_type!r}; valid: {POOL_TYPES}')
        if input_fmt not in ('NCHW', 'NHWC'):
            raise ValueError(f"unknown input_fmt {input_fmt!r}; valid: ('NCHW', 'NHWC')")
        self.pool_type = pool_type
        self.input_fmt = input_fmt
        self.flatten = flatten and bool(pool_type)

    def is_identity(self) -> bool:
        return not self.pool_type

    def feat_mult(self) -> int:
        return 2 if self.pool_type == 'catavgmax' else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.pool_type:
            return x
        dims = (2, 3) if self.input_fmt == 'NCHW' else (1, 2)
        if self.pool_type == 'avg':
            x = _avg(x, dims)
        elif self.pool_type == 'max':
            x = _max(x, dims)
        elif self.pool_type == 'avgmax':
            x = 0.5 * (_avg(x, dims) + _max(x, dims))
        else:
            channel_dim = 1 if self.input_fmt == 'NCHW' else 3
            x = torch.cat((_avg(x, dims), _max(x, dims)), dim=channel_dim)
        if self.flatten:
            x = x.flatten(1)
        elif self.input_fmt == 'NHWC':
            pass
        return x

    def extra_repr(self) -> str:
        return f'pool_type={self.pool_type!r}, flatten={self.flatten}'


def create_classifier(
        num_features: int,
        num_classes: int,
        pool_type: str = 'avg',
        use_conv: bool = False,
        drop_rate: Optional[float] = None,
        input_fmt: str = 'NCHW',
):
    """Build ``(global_pool, fc)`` or, with ``drop_rate``, ``(global_pool, dropout, fc)``.

    ``num_classes=0`` gives an identity classifier, so the model returns pooled features.

    >>> pool, fc = create_classifier(2048, 10)
    >>> fc
    Linear(in_features=2048, out_features=10, bias=True)
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        # every family's reset_classifier comes through here, so a bad count is refused the same way everywhere
        raise ValueError(f'num_classes must be an int >= 0 (0 removes the classifier), got {num_classes!r}')
    global_pool = SelectAdaptivePool2d(pool_type, flatten=not use_conv and bool(pool_type), input_fmt=input_fmt)
    pooled = num_features * global_pool.feat_mult()
    if num_classes == 0:
        fc: nn.Module = nn.Identity()
    elif use_conv:
        fc = nn.Conv2d(pooled, num_classes, 1, bias=True)
    else:
        fc = nn.Linear(pooled, num_classes, bias=True)
    if drop_rate is not None:
        return global_pool, nn.Dropout(drop_rate), fc
    return global_pool, fc


class ClassifierHead(nn.Module):
    """Pool, dropout, classifier and flatten, as one module named ``head`` in several families.

    >>> ClassifierHead(64, 10)(torch.ones(2, 64, 4, 4)).shape
    torch.Size([2, 10])
    """

    def __init__(self, in_features: int, num_classes: int, pool_type: str = 'avg', drop_rate: float = 0.0,
                 use_conv: bool = False, input_fmt: str = 'NCHW') -> None:
        super().__init__()
        self.in_features = in_features
        self.use_conv = use_conv
        self.input_fmt = input_fmt
        self.global_pool, self.fc = create_classifier(in_features, num_classes, pool_type, use_conv=use_conv,
                                                      input_fmt=input_fmt)
        self.drop = nn.Dropout(drop_rate)
        self.flatten = nn.Flatten(1) if use_conv and pool_type else nn.Identity()

    def reset(self, num_classes: int, pool_type: Optional[str] = None) -> None:
        if pool_type is not None:
            self.global_pool, self.fc = create_classifier(self.in_features, num_classes, pool_type,
                                                          use_conv=self.use_conv, input_fmt=self.input_fmt)
            self.flatten = nn.Flatten(1) if self.use_conv and pool_type else nn.Identity()
        else:
            pooled = self.in_features * self.global_pool.feat_mult()
            self.fc = nn.Linear(pooled, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        x = self.drop(x)
        if pre_logits:
            return self.flatten(x)
        x = self.fc(x)
        return self.flatten(x)
