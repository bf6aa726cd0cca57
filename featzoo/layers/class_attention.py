"""Class attention (CaiT, XCiT): only the class token queries; every token (class token included) is a key and a value.

CaiT and XCiT share the attention and the block's parts (``norm1``, ``attn``, ``norm2``, ``mlp`` and two layer scales)
but wire the block differently and name its scales differently, so each has a thin block class on one base:

- :class:`CaitClassAttentionBlock` (``gamma_1``, ``gamma_2``): takes the patch tokens and the class token apart and
  returns the updated class token only.
- :class:`XcitClassAttentionBlock` (``gamma1``, ``gamma2``): takes the sequence with the class token first and returns
  the whole sequence; the patch tokens pass through normalized (``tokens_norm=True``) or as they are.

>>> block = CaitClassAttentionBlock(32, 4)
>>> block(torch.ones(2, 9, 32), torch.zeros(2, 1, 32)).shape
torch.Size([2, 1, 32])
>>> XcitClassAttentionBlock(32, 4, tokens_norm=True)(torch.ones(2, 10, 32)).shape
torch.Size([2, 10, 32])
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from .activations import ActLayer
from .drop import DropPath
from .mlp import Mlp
from .intermediates import IndicesArg
from .token_model import AttentionParts, TokenModelApi, layer_norm_eps6

__all__ = ['ClassAttention', 'CaitClassAttentionBlock', 'XcitClassAttentionBlock', 'check_class_token_pool',
           'ClassTokenLastApi']

NormLayer = Callable[[int], nn.Module]


def check_class_token_pool(model: nn.Module, global_pool: str) -> None:
    """ValueError for ``global_pool='token'`` on a model (CaiT, XCiT) whose class token, added by the
    class-attention blocks, went with its pruned head (``num_prefix_tokens`` 0).

    >>> m = nn.Module(); m.num_prefix_tokens = 1; check_class_token_pool(m, 'token')
    """
    if global_pool == 'token' and not model.num_prefix_tokens:
        raise ValueError("global_pool='token' needs the class token, which pruning the head removed; "
                         "valid now: '', 'avg'")


class ClassAttention(AttentionParts):
    """Multi-head attention of the first token over all tokens (B, N, C) -> (B, 1, C), with separate ``q``, ``k``,
    ``v`` projections and an output ``proj``.

    >>> ClassAttention(16, num_heads=2)(torch.randn(3, 5, 16)).shape
    torch.Size([3, 1, 16])
    """

    def _input_projections(self, dim: int, qkv_bias: bool) -> None:
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        heads = self.num_heads
        query = self.q(x[:, :1]).reshape(B, 1, heads, C // heads).transpose(1, 2)
        key = self.k(x).reshape(B, N, heads, C // heads).transpose(1, 2)
        value = self.v(x).reshape(B, N, heads, C // heads).transpose(1, 2)
        out = F.scaled_dot_product_attention(query, key, value,
                                             dropout_p=self.attn_drop.p if self.training else 0.0)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, 1, C)))


class _ClassAttentionParts(nn.Module):
    """The parts both blocks hold, registered in timm's order: ``norm1``, ``attn``, ``norm2``, ``mlp``."""

    def _build(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, proj_drop: float, attn_drop: float,
               drop_path: float, act_layer: ActLayer, norm_layer: NormLayer) -> None:
        self.norm1 = norm_layer(dim)
        self.attn = ClassAttention(dim, num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop,
                                   proj_drop=proj_drop)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()


class CaitClassAttentionBlock(_ClassAttentionParts):
    """CaiT's class-attention block: ``cls + gamma_1 * attn(norm1([cls, x]))`` then ``cls + gamma_2 *
    mlp(norm2(cls))``; the patch tokens ``x`` are only read.

    >>> CaitClassAttentionBlock(16, 2, init_values=0.5).gamma_1.tolist()[:2]
    [0.5, 0.5]
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False,
                 proj_drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0, act_layer: ActLayer = 'gelu',
                 norm_layer: NormLayer = layer_norm_eps6, init_values: float = 1e-4) -> None:
        super().__init__()
        self._build(dim, num_heads, mlp_ratio, qkv_bias, proj_drop, attn_drop, drop_path, act_layer, norm_layer)
        self.init_values = init_values
        self.gamma_1 = nn.Parameter(torch.full((dim,), float(init_values)))
        self.gamma_2 = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor, cls_token: torch.Tensor) -> torch.Tensor:
        tokens = torch.cat((cls_token, x), dim=1)
        cls_token = cls_token + self.drop_path1(self.gamma_1 * self.attn(self.norm1(tokens)))
        return cls_token + self.drop_path2(self.gamma_2 * self.mlp(self.norm2(cls_token)))


class XcitClassAttentionBlock(_ClassAttentionParts):
    """XCiT's class-attention block on the whole sequence (class token first). The attention updates the class
    token while the patch tokens take their ``norm1`` output as the residual branch; then ``norm2`` normalizes every
    token (``tokens_norm=True``) or the class token only, and the MLP updates the class token alone. ``eta=None``
    drops the layer scales.

    >>> XcitClassAttentionBlock(16, 2, eta=None)(torch.ones(1, 4, 16)).shape
    torch.Size([1, 4, 16])
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False,
                 proj_drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0, act_layer: ActLayer = 'gelu',
                 norm_layer: NormLayer = layer_norm_eps6, eta: Optional[float] = 1.0,
                 tokens_norm: bool = False) -> None:
        super().__init__()
        self._build(dim, num_heads, mlp_ratio, qkv_bias, proj_drop, attn_drop, drop_path, act_layer, norm_layer)
        self.eta = eta
        if eta is not None:
            self.gamma1 = nn.Parameter(torch.full((dim,), float(eta)))
            self.gamma2 = nn.Parameter(torch.full((dim,), float(eta)))
        else:
            self.gamma1 = self.gamma2 = None
        self.tokens_norm = tokens_norm

    def _scale(self, gamma: Optional[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return x if gamma is None else gamma * x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = self.norm1(x)
        branch = torch.cat([self.attn(normed), normed[:, 1:]], dim=1)
        x = x + self.drop_path1(self._scale(self.gamma1, branch))
        if self.tokens_norm:
            x = self.norm2(x)
        else:
            x = torch.cat([self.norm2(x[:, :1]), x[:, 1:]], dim=1)
        cls_branch = self._scale(self.gamma2, self.mlp(x[:, :1]))
        # the branch carries the patch tokens too, so they come out doubled: the original XCiT (and its weights)
        # computes it this way
        return x + self.drop_path2(torch.cat([cls_branch, x[:, 1:]], dim=1))


class ClassTokenLastApi(TokenModelApi):
    """:class:`~featzoo.layers.token_model.TokenModelApi` for the models whose class token joins after the blocks
    (CaiT, XCiT): their blocks carry no prefix token, ``_finish`` runs the family's ``forward_cls`` (the
    class-attention blocks) before the final norm, the pooled vector goes to the classifier without an ``fc_norm``,
    and pruning the head drops the class token with the class-attention blocks (named by ``class_blocks_name``).
    ``forward_intermediates`` takes timm's arguments for these models (no ``return_prefix_tokens``).

    >>> import featzoo
    >>> m = featzoo.create_model('cait_xxs24_224', depth=3, img_size=32)
    >>> [t.shape for t in m.forward_intermediates(torch.ones(1, 3, 32, 48), 2, intermediates_only=True)]
    [torch.Size([1, 192, 2, 3]), torch.Size([1, 192, 2, 3])]
    >>> m.prune_intermediate_layers((1,)), m.blocks_token_only, m.cls_token, m.num_prefix_tokens
    ([1], None, None, 0)
    """

    blocks_carry_prefix = False
    #: the attribute holding the class-attention blocks
    class_blocks_name: str = ''
    cls_token: Optional[nn.Parameter]

    def _add_class_attention_head(self, blocks: Sequence[nn.Module], num_classes: int, drop_rate: float) -> None:
        # the class-attention blocks, the final norm and the linear head, registered in this (timm's) order
        setattr(self, self.class_blocks_name, nn.ModuleList(blocks))
        self.norm = layer_norm_eps6(self.embed_dim)
        self._add_linear_head(num_classes, drop_rate)

    def forward_cls(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        if self.cls_token is not None:  # pruning the head removes the class token and its blocks together
            x = self.forward_cls(x)
        return self.norm(x)

    def _prune_head(self) -> None:
        setattr(self, self.class_blocks_name, None)
        self.cls_token = None
        self.num_prefix_tokens = 0

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool the tokens of ``forward_features``, dropout and (unless ``pre_logits``) classify.

        >>> import featzoo
        >>> m = featzoo.create_model('xcit_nano_12_p16_224', depth=1, num_classes=3)
        >>> m.forward_head(torch.ones(2, 5, 128)).shape
        torch.Size([2, 3])
        """
        x = self.head_drop(self.pool(x))
        return x if pre_logits else self.head(x)

    def forward_intermediates(self, x: torch.Tensor, indices: IndicesArg = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = 'NCHW', intermediates_only: bool = False
                              ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """The patch tokens after the blocks selected by ``indices``, as maps (``output_fmt`` 'NCHW', 'NHWC') or
        tokens ('NLC'); see :meth:`TokenModelApi.forward_intermediates` for the other arguments.

        >>> import featzoo
        >>> m = featzoo.create_model('xcit_nano_12_p16_224', depth=2)
        >>> [t.shape for t in m.forward_intermediates(torch.ones(1, 3, 32, 48), output_fmt='NLC',
        ...                                             intermediates_only=True)]
        [torch.Size([1, 6, 128]), torch.Size([1, 6, 128])]
        """
        return TokenModelApi.forward_intermediates(self, x, indices, False, norm, stop_early, output_fmt,
                                                   intermediates_only)
