"""Normalization layers: frozen and fused-activation batch norm, channels-first layer norm."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from .activations import ActLayer, create_act_layer


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine terms, stored as buffers under BatchNorm2d's key names.

    A checkpoint of a model with ``nn.BatchNorm2d`` loads into one with this layer and back.

    >>> FrozenBatchNorm2d(8)(torch.ones(1, 8, 2, 2)).shape
    torch.Size([1, 8, 2, 2])
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer('weight', torch.ones(num_features))
        self.register_buffer('bias', torch.zeros(num_features))
        self.register_buffer('running_mean', torch.zeros(num_features))
        self.register_buffer('running_var', torch.ones(num_features))
        # kept only so that the state_dict keys equal BatchNorm2d's
        self.register_buffer('num_batches_tracked', torch.tensor(0, dtype=torch.long))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # older BatchNorm2d checkpoints have no step counter
        state_dict.setdefault(prefix + 'num_batches_tracked', torch.tensor(0, dtype=torch.long))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f'{self.num_features}, eps={self.eps}'

    @classmethod
    def convert(cls, module: nn.Module) -> nn.Module:
        """Return ``module`` with every BatchNorm2d (recursively) replaced by a frozen copy.

        >>> FrozenBatchNorm2d.convert(nn.BatchNorm2d(4)).__class__.__name__
        'FrozenBatchNorm2d'
        """
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine and module.track_running_stats:
            frozen = cls(module.num_features, module.eps)
            with torch.no_grad():
                frozen.weight.copy_(module.weight)
                frozen.bias.copy_(module.bias)
                frozen.running_mean.copy_(module.running_mean)
                frozen.running_var.copy_(module.running_var)
                if module.num_batches_tracked is not None:
                    frozen.num_batches_tracked.copy_(module.num_batches_tracked)
            frozen.source_class = type(module)
            frozen.source_extra = {k: getattr(module, k) for k in ('drop', 'act') if hasattr(module, k)}
            if frozen.source_extra:
                return _FrozenBatchNormAct2d.from_frozen(frozen)
            return frozen
        for name, child in list(module.named_children()):
            new_child = cls.convert(child)
            if new_child is not child:
                setattr(module, name, new_child)
        return module


class _FrozenBatchNormAct2d(FrozenBatchNorm2d):
    """Frozen form of :class:`BatchNormAct2d`: keeps its dropout and activation children."""

    @classmethod
    def from_frozen(cls, frozen: FrozenBatchNorm2d) -> '_FrozenBatchNormAct2d':
        new = cls(frozen.num_features, frozen.eps)
        new.load_state_dict(frozen.state_dict())
        new.source_class = frozen.source_class
        new.drop = frozen.source_extra.get('drop', nn.Identity())
        new.act = frozen.source_extra.get('act', nn.Identity())
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(x)))


class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm2d followed by dropout and an activation; same state_dict keys as a plain BatchNorm2d.

    >>> BatchNormAct2d(8, act_layer='relu')(torch.ones(2, 8, 2, 2)).shape
    torch.Size([2, 8, 2, 2])
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True,
                 track_running_stats: bool = True, apply_act: bool = True, act_layer: ActLayer = 'relu',
                 act_kwargs: Optional[dict] = None, inplace: bool = True, drop_layer=None) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine,
                         track_running_stats=track_running_stats)
        self.drop = drop_layer() if drop_layer is not None else nn.Identity()
        self.act = create_act_layer(act_layer, inplace=inplace, **(act_kwargs or {})) if apply_act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(x)))


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel dimension of an NCHW tensor.

    >>> LayerNorm2d(8)(torch.ones(1, 8, 2, 2)).shape
    torch.Size([1, 8, 2, 2])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class _ScaleNorm(nn.Module):
    """Shared state of the mean-free norms below: one learned per-channel scale ``weight``, no bias."""

    def __init__(self, num_features: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))

    def extra_repr(self) -> str:
        return f'{self.num_features}, eps={self.eps}'


class RmsNorm(_ScaleNorm):
    """Root-mean-square norm over the last dimension: ``x / sqrt(mean(x^2) + eps) * weight``.

    >>> RmsNorm(8)(torch.ones(2, 3, 8)).shape
    torch.Size([2, 3, 8])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight


class RmsNorm2d(_ScaleNorm):
    """:class:`RmsNorm` over the channel dimension of an NCHW tensor (reduced in place, no permutes).

    >>> RmsNorm2d(8)(torch.ones(1, 8, 2, 2)).shape
    torch.Size([1, 8, 2, 2])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)
        return x * scale * self.weight.reshape(1, -1, 1, 1)


class SimpleNorm(_ScaleNorm):
    """Divide by the standard deviation over the last dimension (unbiased variance, no centering), then scale.

    >>> SimpleNorm(8)(torch.randn(2, 8)).shape
    torch.Size([2, 8])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.var(dim=-1, keepdim=True) + self.eps) * self.weight


class SimpleNorm2d(SimpleNorm):
    """:class:`SimpleNorm` over the channel dimension of an NCHW tensor.

    >>> SimpleNorm2d(8)(torch.randn(1, 8, 2, 2)).shape
    torch.Size([1, 8, 2, 2])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class GlobalResponseNorm(nn.Module):
    """ConvNeXt V2's global response norm: each channel's spatial L2 norm, divided by the mean of those norms over
    the channels, reweights the input; ``weight`` and ``bias`` start at zero (the layer starts as the identity).

    ``channels_last`` selects the layout: NHWC (``True``) or NCHW.

    >>> GlobalResponseNorm(8)(torch.ones(1, 2, 2, 8)).shape
    torch.Size([1, 2, 2, 8])
    >>> GlobalResponseNorm(8, channels_last=False)(torch.ones(1, 8, 2, 2)).shape
    torch.Size([1, 8, 2, 2])
    """

    def __init__(self, dim: int, eps: float = 1e-6, channels_last: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.spatial_dims = (1, 2) if channels_last else (2, 3)
        self.channel_dim = -1 if channels_last else 1
        self.param_shape = (1, 1, 1, -1) if channels_last else (1, -1, 1, 1)
        self.weight = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial_norm = x.norm(p=2, dim=self.spatial_dims, keepdim=True)
        relative = spatial_norm / (spatial_norm.mean(dim=self.channel_dim, keepdim=True) + self.eps)
        return x + torch.addcmul(self.bias.view(self.param_shape), self.weight.view(self.param_shape), x * relative)
