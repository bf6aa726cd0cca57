"""Attention pooling with learned latent queries (the 'map' head of SigLIP / SigLIP 2 image towers, and others).

A small set of learned ``latent`` vectors attends over the token sequence; the attended result goes through an
output projection and a residual MLP. Parameter names (``latent``, ``q``, ``kv``, ``proj``, ``norm``, ``mlp``,
optional ``pos_embed``) are timm's ``AttentionPoolLatent``'s, so its checkpoints load unchanged.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn
from torch.nn import functional as F

from .activations import ActLayer
from .mlp import Mlp
from .weight_init import trunc_normal_

__all__ = ['AttentionPoolLatent', 'LATENT_POOL_TYPES']

# how the pooled latents become one vector: the first latent, their mean, or all of them kept
LATENT_POOL_TYPES = ('token', 'avg', '')


class AttentionPoolLatent(nn.Module):
    """Pool tokens (B, N, C) to (B, out_features) by multi-head attention from ``latent_len`` learned queries.

    ``out_features=0`` keeps only the attention (no projection, norm or MLP) and returns ``embed_dim`` channels.
    ``pos_embed='abs'`` adds a learned (feat_size, C) table to the tokens first; ``pool_type`` picks the first
    latent ('token'), their mean ('avg') or returns all latents ('').

    >>> pool = AttentionPoolLatent(64, num_heads=4, norm_layer=nn.LayerNorm)
    >>> pool(torch.randn(2, 10, 64)).shape
    torch.Size([2, 64])
    >>> AttentionPoolLatent(64, out_features=0, num_heads=4, latent_len=3, pool_type='')(torch.randn(1, 5, 64)).shape
    torch.Size([1, 3, 64])
    """

    def __init__(self, in_features: int, out_features: Optional[int] = None, embed_dim: Optional[int] = None,
                 num_heads: int = 8, feat_size: Optional[int] = None, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 q_proj: bool = True, qk_norm: bool = False, latent_len: int = 1, latent_dim: Optional[int] = None,
                 pos_embed: str = '', pool_type: str = 'token',
                 norm_layer: Optional[Callable[[int], nn.Module]] = None, act_layer: ActLayer = 'gelu',
                 drop: float = 0.0) -> None:
        super().__init__()
        embed_dim = embed_dim or in_features
        out_features = in_features if out_features is None else out_features
        latent_dim = latent_dim or embed_dim
        if embed_dim % num_heads:
            raise ValueError(f'embed_dim={embed_dim} must be divisible by num_heads={num_heads}')
        if in_features != embed_dim:
            raise ValueError(f'in_features={in_features} must equal embed_dim={embed_dim}: keys and values are '
                             f'projected from the tokens at their own width')
        if pool_type not in LATENT_POOL_TYPES:
            raise ValueError(f'pool_type={pool_type!r} is invalid; valid: {LATENT_POOL_TYPES}')
        if pos_embed not in ('', 'abs'):
            raise ValueError(f"pos_embed={pos_embed!r} is invalid; valid: '' (none) or 'abs'")
        if pos_embed == 'abs' and not feat_size:
            raise ValueError("pos_embed='abs' needs feat_size, the number of tokens the table covers")
        if not q_proj and latent_dim != embed_dim:
            raise ValueError(f'q_proj=False uses the latents as queries directly, so latent_dim={latent_dim} must '
                             f'equal embed_dim={embed_dim}')
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.feat_size = feat_size
        self.pool = pool_type
        self.latent_len = latent_len
        self.latent_dim = latent_dim
        self.pos_embed = nn.Parameter(torch.zeros(feat_size, in_features)) if pos_embed == 'abs' else None
        self.latent = nn.Parameter(torch.zeros(1, latent_len, latent_dim))
        self.q = nn.Linear(latent_dim, embed_dim, bias=qkv_bias) if q_proj else nn.Identity()
        self.kv = nn.Linear(embed_dim, embed_dim * 2, bias=qkv_bias)
        qk_norm_layer = norm_layer or nn.LayerNorm
        self.q_norm = qk_norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = qk_norm_layer(self.head_dim) if qk_norm else nn.Identity()
        if out_features > 0:
            self.proj = nn.Linear(embed_dim, out_features)
            self.norm = norm_layer(out_features) if norm_layer is not None else nn.Identity()
            self.mlp: Optional[Mlp] = Mlp(out_features, int(out_features * mlp_ratio), act_layer=act_layer)
        else:
            # attention only: what a projection head would see ("pre-logits")
            self.proj = nn.Identity()
            self.norm = nn.Identity()
            self.mlp = None
            out_features = embed_dim
        self.proj_drop = nn.Dropout(drop)
        self.out_features = out_features
        self.init_weights()

    def init_weights(self) -> None:
        """Draw the latents (and position table) with std 1/sqrt(width), as timm does.

        >>> p = AttentionPoolLatent(16, num_heads=2); p.init_weights(); p.latent.shape
        torch.Size([1, 1, 16])
        """
        if self.pos_embed is not None:
            trunc_normal_(self.pos_embed, std=self.pos_embed.shape[1] ** -0.5)
        trunc_normal_(self.latent, std=self.latent_dim ** -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        if self.pos_embed is not None:
            x = x + self.pos_embed.unsqueeze(0).to(x.dtype)
        q = self.q(self.latent.expand(B, -1, -1))
        q = q.reshape(B, self.latent_len, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(x).reshape(B, N, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        x = F.scaled_dot_product_attention(q, k, v)
        x = x.transpose(1, 2).reshape(B, self.latent_len, self.num_heads * self.head_dim)
        x = self.proj_drop(self.proj(x))
        if self.mlp is not None:
            x = x + self.mlp(self.norm(x))
        if self.pool == 'token':
            return x[:, 0]
        if self.pool == 'avg':
            return x.mean(1)
        return x
