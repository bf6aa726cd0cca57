"""CLIP-style attention pooling of a CNN feature map: the map's mean is prepended as a query token, a learned
absolute position table (resampled to the map's grid) is added, and multi-head attention with separate ``q``, ``k``,
``v`` projections pools the map; ``proj`` maps to the output width. Parameter names are timm's ``AttentionPool2d``'s
(with ``qkv_separate``), so the OpenAI CLIP ResNets load unchanged.

>>> pool = AttentionPool2d(64, feat_size=(2, 2), out_features=16, head_dim=32)
>>> pool(torch.ones(1, 64, 2, 2)).shape
torch.Size([1, 16])
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from .helpers import to_2tuple
from .pos_embed import resample_abs_pos_embed
from .weight_init import trunc_normal_

POOL_TYPES = ('token', '')


class AttentionPool2d(nn.Module):
    """Attention pooling (``pool_type='token'``: the pooled query token; ``''``: the attended map, NCHW).

    ``out_features=0`` drops the output projection (the pooled width is then ``embed_dim``).
    """

    def __init__(self, in_features: int, feat_size: Union[int, Sequence[int]] = 7, out_features: Optional[int] = None,
                 embed_dim: Optional[int] = None, head_dim: int = 64, pool_type: str = 'token',
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        if pool_type not in POOL_TYPES:
            raise ValueError(f'an attention-pool head takes global_pool in {POOL_TYPES}, got {pool_type!r}')
        self.embed_dim = embed_dim = embed_dim or in_features
        self.in_features = in_features
        if embed_dim % head_dim:
            raise ValueError(f'embed_dim={embed_dim} is not a multiple of head_dim={head_dim}')
        self.head_dim = head_dim
        self.num_heads = embed_dim // head_dim
        self.feat_size: Tuple[int, int] = tuple(to_2tuple(feat_size))
        self.pool_type = pool_type
        self.q = nn.Linear(in_features, embed_dim)
        self.k = nn.Linear(in_features, embed_dim)
        self.v = nn.Linear(in_features, embed_dim)
        self.drop = nn.Dropout(drop_rate)
        if out_features is None:
            out_features = in_features
        self.out_features = out_features or embed_dim
        self.proj = nn.Linear(embed_dim, out_features) if out_features else nn.Identity()
        self.pos_embed = nn.Parameter(torch.zeros(self.feat_size[0] * self.feat_size[1] + 1, in_features))
        for linear in (self.q, self.k, self.v):
            trunc_normal_(linear.weight, std=in_features ** -0.5)
            nn.init.zeros_(linear.bias)
        trunc_normal_(self.pos_embed, std=in_features ** -0.5)

    def reset(self, num_classes: Optional[int] = None, pool_type: Optional[str] = None) -> None:
        """A new output projection (``num_classes=0``: none) and/or pooling.

        >>> pool = AttentionPool2d(64, feat_size=2, head_dim=32); pool.reset(0, ''); pool.out_features
        64
        """
        if pool_type is not None:
            if pool_type not in POOL_TYPES:
                raise ValueError(f'an attention-pool head takes global_pool in {POOL_TYPES}, got {pool_type!r}')
            self.pool_type = pool_type
        if num_classes is not None:
            ref = self.pos_embed
            self.proj = (nn.Linear(self.embed_dim, num_classes).to(ref.device, ref.dtype) if num_classes > 0
                         else nn.Identity())
            self.proj.train(self.training)
            self.out_features = num_classes if num_classes > 0 else self.embed_dim

    def _pool(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        if self.pool_type == 'token':
            return x[:, 0]
        return x[:, 1:].reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        b, _, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        tokens = torch.cat([tokens.mean(1, keepdim=True), tokens], dim=1)
        pos = resample_abs_pos_embed(self.pos_embed.unsqueeze(0), (h, w), old_size=self.feat_size,
                                     num_prefix_tokens=1)
        tokens = tokens + pos

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, h * w + 1, self.num_heads, self.head_dim).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(self.q(tokens)), heads(self.k(tokens)), heads(self.v(tokens)))
        out = self.drop(out.transpose(1, 2).reshape(b, h * w + 1, -1))
        if pre_logits:
            return self._pool(out, h, w)
        return self._pool(self.proj(out), h, w)
