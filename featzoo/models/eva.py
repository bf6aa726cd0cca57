"""ViTs with rotary position embeddings and gated MLPs: EVA, EVA02 and EVA-CLIP, Perception Encoder (core, lang,
spatial), RoPE-ViT (axial and mixed), timm's SBB RoPE ViTs, DINOv3 and the models built on it (LingBot-Vision,
Sapiens2).

One model class, :class:`Eva`, covers them all; the variant table holds what differs: the attention kind ('eva':
no key bias, or 'rope': every projection biased, grouped-query heads), fused or separate q/k/v, the MLP (GELU,
packed SwiGLU, or split SwiGLU with an inner norm), the position scheme (learned absolute table, axial / centred /
mixed RoPE, or both), prefix tokens, layer scale, pre-/post-norm placement and the head (mean, class token or
attention pool). Parameter names follow timm's, so its checkpoints load unchanged.

Inputs of any size divisible by the patch work: RoPE tables are computed for the grid each call sees, the learned
table (where there is one) is resampled (bicubic, as timm's ``dynamic_img_size=True``) when the grid differs from
the one it was learned on, and untouched at that size, so outputs there equal timm's.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from ..checks import check_choice, check_int
from ..family import FamilySpec
from ..layers.attention_pool import AttentionPoolLatent
from ..layers.drop import DropPath
from ..layers.helpers import to_2tuple
from ..layers.mlp import Mlp, SwiGLU, SwiGLUPacked
from ..layers.patch_embed import PatchEmbed
from ..layers.pos_embed import resample_abs_pos_embed
from ..layers.pyramid import token_pyramid
from ..layers.rope import AxialRope, CenteredRope, MixedRope, apply_rope
from ..layers.token_model import TokenModelApi, check_heads, check_img_size, check_single_stride
from ..layers.token_model import check_token_model_args, pool_tokens, reset_linear_head
from ..layers.token_model import run_checkpointed, scale_init_by_depth
from ..layers.token_pos_table import resized_pos_table
from ..layers.weight_init import trunc_normal_, trunc_normal_linears_

__all__ = ['Eva', 'EvaAttention', 'EvaBlock', 'VARIANTS', 'HEAD_IS_PROJECTION', 'SPEC']

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
DEFAULT_CFG = dict(
    input_size=(3, 224, 224), interpolation='bicubic', crop_pct=0.9, crop_mode='center',
    mean=CLIP_MEAN, std=CLIP_STD, first_conv='patch_embed.proj', classifier='head')

GLOBAL_POOLS = ('', 'avg', 'avgmax', 'max', 'token', 'map')
ATTN_TYPES = ('eva', 'rope')
ROPE_TYPES = ('cat', 'dinov3', 'mixed')
NORM_LAYERS = ('layernorm', 'rmsnorm')


# ---- blocks ---------------------------------------------------------------------------------------------------------

def _norm_factory(norm_layer: Union[str, Callable[[int], nn.Module]], eps: float) -> Callable[[int], nn.Module]:
    if callable(norm_layer):
        return norm_layer
    check_choice('norm_layer', norm_layer, NORM_LAYERS)
    return partial(nn.LayerNorm if norm_layer == 'layernorm' else nn.RMSNorm, eps=eps)


class EvaAttention(nn.Module):
    """Multi-head self-attention on tokens (B, N, C) that rotates queries and keys of the patch tokens by a RoPE
    table (the ``num_prefix_tokens`` leading tokens are left as they are).

    ``attn_type='eva'``: the key projection has no bias (a fused ``qkv`` then carries ``q_bias`` and ``v_bias``
    parameters); ``'rope'``: every projection has a bias when ``qkv_bias``, and ``num_kv_heads`` < ``num_heads``
    shares each key/value head among a group of query heads (separate projections only). ``qk_norm`` normalizes
    queries and keys per head, ``scale_norm`` the attended values before ``proj``.

    >>> attn = EvaAttention(32, num_heads=4, qkv_fused=False, attn_type='rope', num_kv_heads=2)
    >>> attn(torch.ones(2, 5, 32), rope=torch.zeros(4, 16)).shape
    torch.Size([2, 5, 32])
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True, qkv_fused: bool = True,
                 attn_type: str = 'eva', num_kv_heads: Optional[int] = None, num_prefix_tokens: int = 1,
                 qk_norm: bool = False, scale_norm: bool = False,
                 norm_layer: Callable[[int], nn.Module] = nn.LayerNorm, rope_half: bool = False,
                 attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        check_choice('attn_type', attn_type, ATTN_TYPES)
        check_heads(dim, num_heads)
        num_kv_heads = num_kv_heads or num_heads
        if num_heads % num_kv_heads:
            raise ValueError(f'num_heads={num_heads} must be a multiple of num_kv_heads={num_kv_heads}')
        if num_kv_heads != num_heads and (attn_type != 'rope' or qkv_fused):
            raise ValueError(f'num_kv_heads={num_kv_heads} (grouped-query attention) needs attn_type=\'rope\' and '
                             f'qkv_fused=False; got attn_type={attn_type!r}, qkv_fused={qkv_fused}')
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = dim // num_heads
        self.num_prefix_tokens = num_prefix_tokens
        self.rope_half = rope_half
        kv_dim = self.head_dim * num_kv_heads
        key_bias = qkv_bias and attn_type == 'rope'
        self.q_bias = self.v_bias = None
        if qkv_fused:
            self.qkv = nn.Linear(dim, dim * 3, bias=key_bias)
            self.q_proj = self.k_proj = self.v_proj = None
            if qkv_bias and not key_bias:
                # EVA: the key part of the fused bias is fixed at zero, so only q and v biases are learned
                self.q_bias = nn.Parameter(torch.zeros(dim))
                self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.qkv = None
            self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
            self.k_proj = nn.Linear(dim, kv_dim, bias=key_bias)
            self.v_proj = nn.Linear(dim, kv_dim, bias=qkv_bias)
        self.q_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.attn_drop = nn.Dropout(attn_drop)
        self.norm = norm_layer(dim) if scale_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _project(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, N, _ = x.shape
        if self.qkv is not None:
            if self.q_bias is not None:
                bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
                qkv = F.linear(x, self.qkv.weight, bias)
            else:
                qkv = self.qkv(x)
            q, k, v = qkv.reshape(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
            return q, k, v
        q = self.q_proj(x).reshape(B, N, self.num_heads, -1).transpose(1, 2)
        k = self.k_proj(x).reshape(B, N, self.num_kv_heads, -1).transpose(1, 2)
        v = self.v_proj(x).reshape(B, N, self.num_kv_heads, -1).transpose(1, 2)
        return q, k, v

    def _rotate(self, t: torch.Tensor, rope: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        n = self.num_prefix_tokens
        return torch.cat([t[:, :, :n], apply_rope(t[:, :, n:], rope, half=self.rope_half)], dim=2).type_as(like)

    def forward(self, x: torch.Tensor, rope: Optional[torch.Tensor] = None) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self._project(x)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = self._rotate(q, rope, v), self._rotate(k, rope, v)
        if self.num_kv_heads != self.num_heads:
            groups = self.num_heads // self.num_kv_heads
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
        x = self.norm(x.transpose(1, 2).reshape(B, N, C))
        return self.proj_drop(self.proj(x))


def _make_mlp(dim: int, mlp_ratio: float, swiglu_mlp: bool, swiglu_align_to: int, scale_mlp: bool,
              norm_layer: Callable[[int], nn.Module], drop: float, post_norm: bool) -> nn.Module:
    hidden = int(dim * mlp_ratio)
    inner_norm = norm_layer if scale_mlp else None
    if not swiglu_mlp:
        return Mlp(dim, hidden, act_layer='gelu', norm_layer=inner_norm, drop=drop)
    # an inner norm (or rounding of the width) needs the gate and value projections apart; else they are packed
    if scale_mlp or (swiglu_align_to and not post_norm):
        return SwiGLU(dim, hidden, norm_layer=inner_norm, drop=drop, align_to=swiglu_align_to)
    return SwiGLUPacked(dim, hidden * 2, drop=drop)


class EvaBlock(nn.Module):
    """Transformer block with a RoPE-aware attention. Pre-norm (default): ``x + gamma_1 * attn(norm1(x))`` then
    ``x + gamma_2 * mlp(norm2(x))`` (``gamma_*`` with ``init_values``; ``attn_only_layer_scale`` keeps only
    ``gamma_1``). ``post_norm=True`` (EVA02-E): ``x + norm1(attn(x))`` then ``x + norm2(mlp(x))``.

    >>> EvaBlock(32, 4, swiglu_mlp=True, scale_mlp=True, init_values=0.1)(torch.ones(1, 3, 32)).shape
    torch.Size([1, 3, 32])
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, swiglu_mlp: bool = False,
                 swiglu_align_to: int = 0, scale_mlp: bool = False, scale_attn_inner: bool = False,
                 post_norm: bool = False, init_values: Optional[float] = None, attn_only_layer_scale: bool = False,
                 norm_layer: Callable[[int], nn.Module] = nn.LayerNorm, proj_drop: float = 0.0,
                 drop_path: float = 0.0, **attn_kwargs: Any) -> None:
        super().__init__()
        self.post_norm = post_norm
        attn = EvaAttention(dim, num_heads, scale_norm=scale_attn_inner, norm_layer=norm_layer, proj_drop=proj_drop,
                            **attn_kwargs)
        mlp = _make_mlp(dim, mlp_ratio, swiglu_mlp, swiglu_align_to, scale_mlp, norm_layer, proj_drop, post_norm)
        # registration order decides the state_dict order: timm's post-norm block lists attn before norm1
        if post_norm:
            self.attn, self.norm1 = attn, norm_layer(dim)
        else:
            self.norm1, self.attn = norm_layer(dim), attn
        layer_scale = init_values is not None and not post_norm
        self.init_values = init_values
        self.gamma_1 = nn.Parameter(torch.full((dim,), float(init_values))) if layer_scale else None
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        if post_norm:
            self.mlp, self.norm2 = mlp, norm_layer(dim)
        else:
            self.norm2, self.mlp = norm_layer(dim), mlp
        mlp_scale = layer_scale and not attn_only_layer_scale
        self.gamma_2 = nn.Parameter(torch.full((dim,), float(init_values))) if mlp_scale else None
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor, rope: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.post_norm:
            x = x + self.drop_path1(self.norm1(self.attn(x, rope=rope)))
            return x + self.drop_path2(self.norm2(self.mlp(x)))
        branch = self.attn(self.norm1(x), rope=rope)
        x = x + self.drop_path1(branch if self.gamma_1 is None else self.gamma_1 * branch)
        branch = self.mlp(self.norm2(x))
        return x + self.drop_path2(branch if self.gamma_2 is None else self.gamma_2 * branch)


# ---- the model ------------------------------------------------------------------------------------------------------

def _check_rope_args(rope_type: str, attn_type: str, rope_rotate_half: bool, head_dim: int) -> None:
    check_choice('rope_type', rope_type, ROPE_TYPES)
    if rope_type == 'mixed' and rope_rotate_half:
        raise ValueError("rope_type='mixed' pairs channels interleaved; rope_rotate_half=True is invalid with it")
    if head_dim % 4:
        raise ValueError(f'rotary position embeddings need a head dimension divisible by 4 (embed_dim / '
                         f'num_heads), got {head_dim}')


class Eva(TokenModelApi, nn.Module):
    """EVA-style ViT: patch embedding, prefix tokens (class, registers), a learned absolute position table and/or
    RoPE, ``depth`` :class:`EvaBlock`\\ s, final norm(s), and a pooled linear head (or an attention pool).

    Argument names and defaults are timm's. ``forward_features`` returns the token sequence (B, prefix + H * W, C).
    Norms: ``norm_layer`` 'layernorm' or 'rmsnorm' with ``norm_eps`` (or a callable taking the width).

    >>> m = Eva(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_classes=10, use_rot_pos_emb=True,
    ...         swiglu_mlp=True, scale_mlp=True, qkv_fused=False)
    >>> m(torch.randn(1, 3, 32, 32)).shape, m.forward_features(torch.randn(1, 3, 48, 32)).shape
    (torch.Size([1, 10]), torch.Size([1, 25, 64]))
    """

    pair_without_prefix = True  # as timm's EVA: return_prefix_tokens pairs even an empty prefix

    def __init__(self, img_size: Union[int, Tuple[int, int]] = 224, patch_size: Union[int, Tuple[int, int]] = 16,
                 in_chans: int = 3, num_classes: int = 1000, global_pool: str = 'avg', embed_dim: int = 768,
                 depth: int = 12, num_heads: int = 12,
                 num_kv_heads: Optional[Union[int, Sequence[Optional[int]]]] = None, qkv_bias: bool = True,
                 qkv_fused: bool = True, qk_norm: bool = False, mlp_ratio: float = 4.0, swiglu_mlp: bool = False,
                 swiglu_align_to: int = 0, scale_mlp: bool = False, scale_attn_inner: bool = False,
                 attn_type: str = 'eva', drop_rate: float = 0.0, pos_drop_rate: float = 0.0,
                 proj_drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 norm_layer: Union[str, Callable[[int], nn.Module]] = 'layernorm', norm_eps: float = 1e-6,
                 init_values: Optional[float] = None, attn_only_layer_scale: bool = False, class_token: bool = True,
                 num_reg_tokens: int = 0, no_embed_class: bool = False, use_abs_pos_emb: bool = True,
                 use_rot_pos_emb: bool = False, rope_type: str = 'cat', rope_grid_offset: float = 0.0,
                 rope_grid_indexing: str = 'ij', rope_temperature: float = 10000.0, rope_rotate_half: bool = False,
                 use_post_norm: bool = False, use_pre_transformer_norm: bool = False,
                 use_post_transformer_norm: Optional[bool] = None, use_fc_norm: Optional[bool] = None,
                 attn_pool_num_heads: Optional[int] = None, attn_pool_mlp_ratio: Optional[float] = None,
                 dynamic_img_size: bool = True, dynamic_img_pad: bool = False,
                 ref_feat_shape: Optional[Union[int, Tuple[int, int]]] = None, head_init_scale: float = 0.001,
                 output_stride: Optional[int] = None) -> None:
        super().__init__()
        check_token_model_args(global_pool, GLOBAL_POOLS, num_classes, in_chans, embed_dim, depth, num_heads,
                               (('num_reg_tokens', num_reg_tokens, 0), ('swiglu_align_to', swiglu_align_to, 0)))
        check_choice('attn_type', attn_type, ATTN_TYPES)
        check_heads(embed_dim, num_heads)
        if global_pool == 'token' and not class_token:
            raise ValueError("global_pool='token' reads the class token, so it needs class_token=True; valid "
                             "without one: '', 'avg', 'avgmax', 'max', 'map'")
        kv_heads = self._kv_heads(num_kv_heads, depth)
        if use_post_norm and (qk_norm or attn_only_layer_scale or any(h not in (None, num_heads) for h in kv_heads)):
            raise ValueError('use_post_norm=True does not combine with qk_norm, attn_only_layer_scale or '
                             'num_kv_heads (they exist only in the pre-norm block)')
        if use_rot_pos_emb:
            _check_rope_args(rope_type, attn_type, rope_rotate_half, embed_dim // num_heads)
        patch = to_2tuple(patch_size)
        natural_stride = max(patch) if len(patch) == 2 and all(isinstance(p, int) for p in patch) else patch_size
        check_single_stride(output_stride, natural_stride, 'this ViT')
        if not (len(patch) == 2 and all(isinstance(p, int) and not isinstance(p, bool) and p > 0 for p in patch)):
            raise ValueError(f'patch_size must be a positive int or a pair of them, got {patch_size!r}')
        img_size = check_img_size(img_size, patch, bool(dynamic_img_pad))
        norm = _norm_factory(norm_layer, norm_eps)
        fc_norm = global_pool == 'avg' if use_fc_norm is None else use_fc_norm
        post_norm = not fc_norm if use_post_transformer_norm is None else use_post_transformer_norm

        self._set_token_model_attrs(num_classes, in_chans, global_pool, embed_dim,
                                    num_prefix_tokens=int(class_token) + num_reg_tokens)
        self.no_embed_class = no_embed_class
        self.dynamic_img_size = dynamic_img_size
        self.rope_mixed = use_rot_pos_emb and rope_type == 'mixed'

        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, bias=not use_pre_transformer_norm,
                                      output_fmt='NHWC', dynamic_img_pad=dynamic_img_pad)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, num_reg_tokens, embed_dim)) if num_reg_tokens else None
        table_len = self.patch_embed.num_patches + (0 if no_embed_class else self.num_prefix_tokens)
        self.pos_embed = nn.Parameter(torch.zeros(1, table_len, embed_dim)) if use_abs_pos_emb else None
        self.pos_drop = nn.Dropout(pos_drop_rate)
        head_dim = embed_dim // num_heads
        rope_half = use_rot_pos_emb and rope_rotate_half
        if not use_rot_pos_emb:
            self.rope = None
        elif rope_type == 'mixed':
            self.rope = MixedRope(head_dim, depth, num_heads, rope_temperature, rope_grid_indexing)
        elif rope_type == 'dinov3':
            self.rope = CenteredRope(head_dim, rope_temperature, rope_grid_offset, rope_grid_indexing, rope_half)
        else:
            ref = to_2tuple(ref_feat_shape) if ref_feat_shape is not None else None
            self.rope = AxialRope(head_dim, rope_temperature, rope_grid_offset, ref, rope_grid_indexing, rope_half)
        self.norm_pre = norm(embed_dim) if use_pre_transformer_norm else nn.Identity()

        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList([
            EvaBlock(embed_dim, num_heads, mlp_ratio=mlp_ratio, swiglu_mlp=swiglu_mlp,
                     swiglu_align_to=swiglu_align_to, scale_mlp=scale_mlp, scale_attn_inner=scale_attn_inner,
                     post_norm=use_post_norm, init_values=init_values, attn_only_layer_scale=attn_only_layer_scale,
                     norm_layer=norm, proj_drop=proj_drop_rate, drop_path=rates[i], qkv_bias=qkv_bias,
                     qkv_fused=qkv_fused, attn_type=attn_type, num_kv_heads=kv_heads[i],
                     num_prefix_tokens=self.num_prefix_tokens, qk_norm=qk_norm, rope_half=rope_half,
                     attn_drop=attn_drop_rate)
            for i in range(depth)])
        reduction = self.patch_embed.feat_ratio()
        self.feature_info = [dict(num_chs=embed_dim, reduction=reduction, module=f'blocks.{i}') for i in range(depth)]
        self.norm = norm(embed_dim) if post_norm else nn.Identity()
        self.attn_pool = AttentionPoolLatent(
            embed_dim, num_heads=attn_pool_num_heads or num_heads, mlp_ratio=attn_pool_mlp_ratio or mlp_ratio,
            norm_layer=norm, act_layer='gelu') if global_pool == 'map' else None
        self.fc_norm = norm(embed_dim) if fc_norm else nn.Identity()
        self._add_linear_head(num_classes, drop_rate)
        self.head_init_scale = head_init_scale
        self.init_weights()

    @staticmethod
    def _kv_heads(num_kv_heads: Any, depth: int) -> List[Optional[int]]:
        if num_kv_heads is None or (isinstance(num_kv_heads, int) and not isinstance(num_kv_heads, bool)):
            if num_kv_heads is not None:
                check_int('num_kv_heads', num_kv_heads, 1)
            return [num_kv_heads] * depth
        if isinstance(num_kv_heads, (str, bytes)) or not isinstance(num_kv_heads, Sequence) \
                or len(num_kv_heads) != depth:
            raise ValueError(f'num_kv_heads must be None, an int or one entry per block (depth={depth}), '
                             f'got {num_kv_heads!r}')
        return [None if h is None else check_int('each num_kv_heads entry', h, 1) for h in num_kv_heads]

    def init_weights(self) -> None:
        """Initialize for training from scratch as timm does: truncated-normal linears and tokens, output
        projections scaled down with depth, a tiny head. Skipped in effect on the meta device.

        >>> m = Eva(embed_dim=32, depth=1, num_heads=2, num_classes=3); m.init_weights()
        >>> bool(m.head.weight.abs().max() < 0.01)
        True
        """
        trunc_normal_linears_(self)
        for token in (self.pos_embed, self.cls_token, self.reg_token):
            if token is not None:
                trunc_normal_(token, std=0.02)
        if self.blocks[0].attn.proj.weight.is_meta:
            return
        scale_init_by_depth(self.blocks, self.head, self.head_init_scale)

    # ---- timm's model API ----------------------------------------------------------------------------------------

    def no_weight_decay(self) -> Set[str]:
        """Parameters excluded from weight decay: tokens, position table and learned RoPE frequencies.

        >>> sorted(Eva(embed_dim=32, depth=1, num_heads=2).no_weight_decay())
        ['cls_token', 'pos_embed', 'reg_token']
        """
        names = {'pos_embed', 'cls_token', 'reg_token'}
        return names | {'rope.freqs'} if self.rope_mixed else names

    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter groups for layer-wise learning rates: stem (tokens, patch embedding), then one per block.

        >>> Eva(embed_dim=32, depth=1, num_heads=2).group_matcher()['blocks'][0]
        ('^blocks\\\\.(\\\\d+)', None)
        """
        return dict(stem=r'^cls_token|reg_token|pos_embed|patch_embed|norm_pre',
                    blocks=[(r'^blocks\.(\d+)', None), (r'^norm', (99999,))])

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier by a fresh one with ``num_classes`` outputs (0: none), optionally changing pooling
        (an attention pool can be dropped, not added).

        >>> m = Eva(embed_dim=32, depth=1, num_heads=2); m.reset_classifier(0, 'max'); m.head, m.global_pool
        (Identity(), 'max')
        """
        reset_linear_head(self, num_classes, global_pool, GLOBAL_POOLS, self.embed_dim, self.patch_embed.proj.weight,
                          self._switch_pool)

    def _switch_pool(self, global_pool: str) -> None:
        # reset_classifier's pool check: an attention pool can be dropped, not added
        if global_pool == 'token' and self.cls_token is None:
            raise ValueError("global_pool='token' needs a class token, which this model has none of")
        if global_pool == 'map' and self.attn_pool is None:
            raise ValueError("global_pool='map' needs the attention pool built with the model "
                             "(create it with global_pool='map'); it cannot be added afterwards")
        if global_pool != 'map':
            self.attn_pool = None

    def set_input_size(self, img_size: Optional[Union[int, Tuple[int, int]]] = None,
                       patch_size: Optional[Union[int, Tuple[int, int]]] = None) -> None:
        """Make ``img_size`` the model's reference size: the learned position table is resampled to its grid (RoPE
        needs nothing); its sides must be multiples of the patch. Changing ``patch_size`` is not supported.

        >>> m = Eva(img_size=64, patch_size=16, embed_dim=32, depth=1, num_heads=2); m.set_input_size(96)
        >>> tuple(m.pos_embed.shape)
        (1, 37, 32)
        """
        if patch_size is not None and tuple(to_2tuple(patch_size)) != tuple(self.patch_embed.patch_size):
            raise ValueError(f'patch_size={patch_size!r}: changing the patch size is not supported; valid: None or '
                             f'{self.patch_embed.patch_size}')
        if img_size is None:
            return
        img_size = check_img_size(img_size, self.patch_embed.patch_size, bool(self.patch_embed.dynamic_img_pad))
        old_grid = self.patch_embed.grid_size
        self.patch_embed.set_input_size(img_size)
        if self.pos_embed is not None and self.patch_embed.grid_size != old_grid:
            prefix = 0 if self.no_embed_class else self.num_prefix_tokens
            self.pos_embed = resized_pos_table(self.pos_embed, self.patch_embed.grid_size, old_grid, prefix)

    # ---- forward ------------------------------------------------------------------------------------------------

    def _embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[Any, Any], Tuple[Optional[torch.Tensor]]]:
        """Tokens with prefix and position added (B, prefix + H * W, C), the grid, the RoPE table for the grid."""
        x = self.patch_embed(x)
        B, H, W, C = x.shape
        x = x.reshape(B, H * W, C)
        pos_embed = self.pos_embed
        if pos_embed is not None and self.dynamic_img_size:
            pos_embed = resample_abs_pos_embed(pos_embed, (H, W), self.patch_embed.grid_size,
                                               num_prefix_tokens=0 if self.no_embed_class else self.num_prefix_tokens)
        prefix = [t.expand(B, -1, -1) for t in (self.cls_token, self.reg_token) if t is not None]
        if self.no_embed_class:
            x = x if pos_embed is None else x + pos_embed
            x = torch.cat(prefix + [x], dim=1) if prefix else x
        else:
            x = torch.cat(prefix + [x], dim=1) if prefix else x
            x = x if pos_embed is None else x + pos_embed
        x = self.pos_drop(x)
        rope = self.rope(H, W, x.device) if self.rope is not None else None
        return self.norm_pre(x), (H, W), (rope,)

    def _tap(self, x: torch.Tensor, block_args: Tuple[Optional[torch.Tensor]], blocks: Sequence[nn.Module],
             take: Optional[Set[int]], tap_norm: Optional[nn.Module]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        rope, = block_args
        tapped = []
        for i, block in enumerate(blocks):
            block_rope = rope[i] if self.rope_mixed else rope  # mixed RoPE: one table per block
            x = run_checkpointed(self.grad_checkpointing, block, x, block_rope)
            if take is not None and i in take:
                tapped.append(x if tap_norm is None else tap_norm(x))
        return x, tapped

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens after the final norm: (B, prefix tokens + H / patch * W / patch, embed_dim).

        >>> Eva(embed_dim=32, depth=1, num_heads=2, num_reg_tokens=2).forward_features(torch.ones(1, 3, 32, 64)).shape
        torch.Size([1, 11, 32])
        """
        x, _, block_args = self._embed(x)
        x, _ = self._tap(x, block_args, self.blocks, None, None)
        return self.norm(x)

    def pool(self, x: torch.Tensor, pool_type: Optional[str] = None) -> torch.Tensor:
        """One vector per image: the attention pool if there is one, else 'token' (the class token) or a reduction
        ('avg', 'max', 'avgmax') over the patch tokens; '' returns the tokens.

        >>> Eva(embed_dim=32, depth=1, num_heads=2).pool(torch.ones(2, 5, 32), 'avgmax').shape
        torch.Size([2, 32])
        """
        if self.attn_pool is not None:
            return self.attn_pool(x)
        return pool_tokens(x, self.global_pool if pool_type is None else pool_type, self.num_prefix_tokens)

    def _prune_head(self) -> None:
        self.attn_pool = None
        self.fc_norm = nn.Identity()


# ---- variants -------------------------------------------------------------------------------------------------------
# Rows are constructor arguments; img_size and num_classes are those of each architecture's default weights, as
# timm builds it.

def _middle_gqa(depth: int, num_heads: int, num_kv_heads: int, full_blocks: int = 8) -> Tuple[int, ...]:
    """Sapiens2's per-block key/value heads: full attention in the first and last ``full_blocks`` blocks, grouped
    in between.

    >>> _middle_gqa(4, 8, 2, full_blocks=1)
    (8, 2, 2, 8)
    """
    return tuple(num_heads if i < full_blocks or i >= depth - full_blocks else num_kv_heads for i in range(depth))


_TI = dict(embed_dim=192, depth=12, num_heads=3)
_S = dict(embed_dim=384, depth=12, num_heads=6)
_B = dict(embed_dim=768, depth=12, num_heads=12)
_L = dict(embed_dim=1024, depth=24, num_heads=16)

_EVA_G = dict(patch_size=14, embed_dim=1408, depth=40, num_heads=16, mlp_ratio=6144 / 1408)
_EVA02 = dict(patch_size=14, mlp_ratio=4 * 2 / 3, swiglu_mlp=True, use_rot_pos_emb=True, ref_feat_shape=(16, 16))
_EVA02_BL = dict(_EVA02, qkv_fused=False, scale_mlp=True)
_EVA02_CLIP = dict(_EVA02_BL, scale_attn_inner=True, global_pool='token')
# timm's SBB ViTs: registers instead of a class token, mean pooling, RoPE on index positions
_SBB = dict(img_size=256, patch_size=16, qkv_fused=True, qkv_bias=True, init_values=1e-5, class_token=False,
            use_rot_pos_emb=True, use_abs_pos_emb=False, ref_feat_shape=(16, 16))
# RoPE-ViT (NAVER): axial or mixed RoPE, optionally with a learned absolute table ('ape')
_NAVER = dict(patch_size=16, attn_type='rope', qkv_bias=True, init_values=1e-5, global_pool='token',
              use_abs_pos_emb=False, use_rot_pos_emb=True, rope_grid_indexing='xy', rope_temperature=100.0)
_NAVER_MIXED = dict(_NAVER, rope_type='mixed', rope_temperature=10.0)
_APE = dict(use_abs_pos_emb=True, no_embed_class=True)
# Perception Encoder: pre-transformer norm, axial RoPE on the 'xy' grid (offset 1 except the gigantic models)
_PE = dict(attn_type='rope', use_pre_transformer_norm=True, use_rot_pos_emb=True, rope_grid_indexing='xy',
           norm_eps=1e-5, rope_grid_offset=1.0)
_PE_G = dict(patch_size=14, embed_dim=1536, num_heads=16, mlp_ratio=8960 / 1536, class_token=False,
             rope_grid_offset=0.0, ref_feat_shape=(32, 32))
_PE_CORE = dict(_PE, global_pool='map', attn_pool_num_heads=8, attn_pool_mlp_ratio=4.0)
_PE_TOKENS = dict(_PE, use_post_transformer_norm=False, use_fc_norm=False, num_classes=0, img_size=448,
                  ref_feat_shape=(32, 32))
# DINOv3 and its descendants: centred RoPE ('half' layout), 4 registers, layer scale, no absolute table
_DINOV3 = dict(patch_size=16, img_size=256, num_classes=0, qkv_bias=False, init_values=1e-5, rope_type='dinov3',
               rope_temperature=100.0, rope_rotate_half=True, use_rot_pos_emb=True, use_abs_pos_emb=False,
               num_reg_tokens=4, use_fc_norm=False, norm_eps=1e-5)
_SWIGLU8 = dict(swiglu_mlp=True, swiglu_align_to=8)
_LINGBOT = dict(_DINOV3, img_size=512, qkv_bias=True, global_pool='token')
_SAPIENS2 = dict(img_size=(1024, 768), patch_size=16, num_classes=0, attn_type='rope', qkv_fused=False,
                 qkv_bias=True, qk_norm=True, global_pool='token', swiglu_mlp=True, init_values=1.0,
                 attn_only_layer_scale=True, rope_type='dinov3', rope_temperature=100.0, rope_rotate_half=True,
                 use_rot_pos_emb=True, use_abs_pos_emb=False, num_reg_tokens=8, use_fc_norm=False,
                 norm_layer='rmsnorm', norm_eps=1e-6)


def _sapiens2(embed_dim: int, depth: int, num_heads: int, num_kv_heads: int) -> Dict[str, Any]:
    return dict(_SAPIENS2, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                num_kv_heads=_middle_gqa(depth, num_heads, num_kv_heads))


VARIANTS: Dict[str, Dict[str, Any]] = {
    # EVA (giant) and EVA-CLIP image towers
    'eva_giant_patch14_224': dict(_EVA_G, img_size=224, num_classes=1000),
    'eva_giant_patch14_336': dict(_EVA_G, img_size=336, num_classes=1000),
    'eva_giant_patch14_560': dict(_EVA_G, img_size=560, num_classes=1000),
    'eva_giant_patch14_clip_224': dict(_EVA_G, img_size=224, num_classes=1024, global_pool='token'),
    # EVA02: MIM pretrained at 224 (no head), then fine-tuned at 336 (tiny, small) or 448 (base, large)
    **{f'eva02_{size}_patch14_{side}': dict(cfg, **dims, img_size=side, num_classes=1000 if tuned else 0)
       for tuned in (False, True)
       for size, cfg, dims, tuned_side in (('tiny', _EVA02, _TI, 336), ('small', _EVA02, _S, 336),
                                           ('base', _EVA02_BL, _B, 448), ('large', _EVA02_BL, _L, 448))
       for side in ((tuned_side if tuned else 224),)},
    # EVA02-CLIP image towers (the head is the image projection)
    'eva02_base_patch16_clip_224': dict(_EVA02_CLIP, **_B, patch_size=16, img_size=224, num_classes=512),
    'eva02_large_patch14_clip_224': dict(_EVA02_CLIP, **_L, img_size=224, num_classes=768),
    'eva02_large_patch14_clip_336': dict(_EVA02_CLIP, **_L, img_size=336, num_classes=768),
    'eva02_enormous_patch14_clip_224': dict(patch_size=14, embed_dim=1792, depth=64, num_heads=16,
                                            mlp_ratio=15360 / 1792, use_post_norm=True, global_pool='token',
                                            img_size=224, num_classes=1024),
    # timm SBB ViTs with RoPE
    'vit_medium_patch16_rope_reg1_gap_256': dict(_SBB, embed_dim=512, depth=12, num_heads=8, num_reg_tokens=1,
                                                 num_classes=1000),
    'vit_mediumd_patch16_rope_reg1_gap_256': dict(_SBB, embed_dim=512, depth=20, num_heads=8, num_reg_tokens=1,
                                                  qkv_bias=False, num_classes=1000),
    'vit_betwixt_patch16_rope_reg4_gap_256': dict(_SBB, embed_dim=640, depth=12, num_heads=10, num_reg_tokens=4,
                                                  num_classes=1000),
    'vit_base_patch16_rope_reg1_gap_256': dict(_SBB, **_B, num_reg_tokens=1, num_classes=1000),
    # Perception Encoder: core (CLIP image towers with an attention pool), lang and spatial (token outputs)
    'vit_pe_core_tiny_patch16_384': dict(_PE_CORE, **_TI, patch_size=16, ref_feat_shape=(24, 24), img_size=384,
                                         num_classes=512),
    'vit_pe_core_small_patch16_384': dict(_PE_CORE, **_S, patch_size=16, ref_feat_shape=(24, 24), img_size=384,
                                          num_classes=512),
    'vit_pe_core_base_patch16_224': dict(_PE_CORE, **_B, patch_size=16, ref_feat_shape=(14, 14), img_size=224,
                                         num_classes=1024),
    'vit_pe_core_large_patch14_336': dict(_PE_CORE, **_L, patch_size=14, ref_feat_shape=(24, 24), img_size=336,
                                          num_classes=1024),
    'vit_pe_core_gigantic_patch14_448': dict(_PE_CORE, **_PE_G, depth=50, img_size=448, num_classes=1280),
    'vit_pe_lang_large_patch14_448': dict(_PE_TOKENS, **dict(_L, depth=23), patch_size=14, init_values=0.1),
    'vit_pe_lang_gigantic_patch14_448': dict(_PE_TOKENS, **_PE_G, depth=47, init_values=0.1),
    'vit_pe_spatial_tiny_patch16_512': dict(_PE_TOKENS, **_TI, patch_size=16, img_size=512),
    'vit_pe_spatial_small_patch16_512': dict(_PE_TOKENS, **_S, patch_size=16, img_size=512),
    'vit_pe_spatial_base_patch16_512': dict(_PE_TOKENS, **_B, patch_size=16, img_size=512),
    'vit_pe_spatial_large_patch14_448': dict(_PE_TOKENS, **_L, patch_size=14),
    'vit_pe_spatial_gigantic_patch14_448': dict(_PE_TOKENS, **_PE_G, depth=50, init_values=0.1),
    # RoPE-ViT (NAVER): axial or mixed RoPE, without or with an absolute position table, small to large
    **{f'vit_{size}_patch16_rope{rope}{ape}_224': dict(cfg, **ape_cfg, **dims, img_size=224, num_classes=1000)
       for ape, ape_cfg in (('', {}), ('_ape', _APE))
       for rope, cfg in (('', _NAVER), ('_mixed', _NAVER_MIXED))
       for size, dims in (('small', _S), ('base', _B), ('large', _L))},
    # DINOv3 ('_qkvb': with the (zero) q/v biases of the distilled checkpoints)
    'vit_tiny_patch16_dinov3_qkvb': dict(_DINOV3, **_TI, qkv_bias=True),
    'vit_small_patch16_dinov3': dict(_DINOV3, **_S),
    'vit_small_patch16_dinov3_qkvb': dict(_DINOV3, **_S, qkv_bias=True),
    'vit_small_plus_patch16_dinov3': dict(_DINOV3, **_S, **_SWIGLU8),
    'vit_small_plus_patch16_dinov3_qkvb': dict(_DINOV3, **_S, **_SWIGLU8, qkv_bias=True),
    'vit_base_patch16_dinov3': dict(_DINOV3, **_B),
    'vit_base_patch16_dinov3_qkvb': dict(_DINOV3, **_B, qkv_bias=True),
    'vit_large_patch16_dinov3': dict(_DINOV3, **_L),
    'vit_large_patch16_dinov3_qkvb': dict(_DINOV3, **_L, qkv_bias=True),
    'vit_huge_plus_patch16_dinov3': dict(_DINOV3, **_SWIGLU8, embed_dim=1280, depth=32, num_heads=20),
    'vit_huge_plus_patch16_dinov3_qkvb': dict(_DINOV3, **_SWIGLU8, embed_dim=1280, depth=32, num_heads=20,
                                              qkv_bias=True),
    'vit_7b_patch16_dinov3': dict(_DINOV3, embed_dim=4096, depth=40, num_heads=32, mlp_ratio=2, swiglu_mlp=True,
                                  swiglu_align_to=64),
    # LingBot-Vision (DINOv3 architecture, class-token pooling)
    'vit_small_patch16_lingbot': dict(_LINGBOT, **_S),
    'vit_base_patch16_lingbot': dict(_LINGBOT, **_B),
    'vit_large_patch16_lingbot': dict(_LINGBOT, **_L),
    'vit_giant_patch16_lingbot': dict(_LINGBOT, **_SWIGLU8, embed_dim=1536, depth=40, num_heads=24, qkv_bias=False,
                                      mlp_ratio=4 * 2 / 3),
    # Sapiens2: grouped-query attention in the middle blocks, RMS norms, q/k norms
    'vit_base_patch16_sapiens2': _sapiens2(768, 12, 12, 6),
    'vit_large_patch16_sapiens2': _sapiens2(1024, 24, 16, 8),
    'vit_huge_patch16_sapiens2': _sapiens2(1280, 32, 16, 8),
    'vit_giant_patch16_sapiens2': _sapiens2(1536, 40, 24, 12),
    'vit_5b_patch16_sapiens2': _sapiens2(2432, 56, 32, 16),
}

# Image towers of contrastive image-text models: their head projects into the text tower's embedding space
# (EVA-CLIP, EVA02-CLIP, Perception Encoder core), so its output is the embedding, not class logits.
HEAD_IS_PROJECTION = frozenset(
    name for name in VARIANTS if '_clip_' in name or name.startswith('vit_pe_core_'))


def head_is_projection(variant: str, row: Any = None, tag: Optional[Dict[str, Any]] = None) -> bool:
    """Whether ``variant``'s head (with a pretrained ``tag``'s index entry: one that keeps a head) is an image-text
    projection rather than a classifier.

    >>> head_is_projection('eva02_large_patch14_clip_224', tag=dict(tag='merged2b', num_classes=768))
    True
    >>> head_is_projection('eva02_large_patch14_448')
    False
    """
    return variant in HEAD_IS_PROJECTION and (tag is None or tag.get('num_classes', 1) > 0)


# ---- checkpoints ----------------------------------------------------------------------------------------------------

_PE_RENAMES = (('conv1', 'patch_embed.proj'), ('positional_embedding', 'pos_embed'),
               ('transformer.resblocks.', 'blocks.'), ('ln_pre', 'norm_pre'), ('ln_post', 'norm'), ('ln_', 'norm'),
               ('ls_1.gamma', 'gamma_1'), ('ls_2.gamma', 'gamma_2'), ('in_proj_', 'qkv.'), ('out_proj', 'proj'),
               ('mlp.c_fc', 'mlp.fc1'), ('mlp.c_proj', 'mlp.fc2'))
# original EVA / DINOv3 / Sapiens2 module names -> timm's
_MLP_RENAMES = (('mlp.ffn_ln', 'mlp.norm'), ('attn.inner_attn_ln', 'attn.norm'), ('mlp.w12', 'mlp.fc1'),
                ('mlp.w1', 'mlp.fc1_g'), ('mlp.w2', 'mlp.fc1_x'), ('mlp.w3', 'mlp.fc2'))
_SAPIENS2_RENAMES = (('storage_tokens', 'reg_token'), ('patch_embed.projection.', 'patch_embed.proj.'),
                     ('attn.wq.', 'attn.q_proj.'), ('attn.wk.', 'attn.k_proj.'), ('attn.wv.', 'attn.v_proj.'),
                     ('attn.gamma.weight', 'gamma_1'), ('.ffn.', '.mlp.'), ('.ln1.', '.norm1.'),
                     ('.ln2.', '.norm2.'))


def _rename(key: str, pairs: Sequence[Tuple[str, str]]) -> str:
    for old, new in pairs:
        key = key.replace(old, new)
    return key


def _convert_perception_encoder(state_dict: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    """Meta's Perception Encoder release (OpenCLIP-like names) to timm's layout."""
    out: Dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        key = key.replace('module.', '')
        if not key.startswith(prefix):
            continue
        key = _rename(key[len(prefix):], _PE_RENAMES)
        if key.startswith('attn_pool'):
            key = key.replace('attn_pool.attn', 'attn_pool').replace('attn_pool.layernorm', 'attn_pool.norm')
            key = key.replace('attn_pool.probe', 'attn_pool.latent')
            if key.startswith('attn_pool.qkv'):
                # the pool's packed projection: queries come from the latent, keys and values from the tokens
                kind = 'weight' if key.endswith('weight') else 'bias'
                width = value.shape[0] // 3
                out[f'attn_pool.q.{kind}'] = value[:width]
                out[f'attn_pool.kv.{kind}'] = value[width:]
                continue
        elif key == 'proj':  # the image projection, stored (in, out) without a bias
            out['head.bias'] = torch.zeros(value.shape[1], dtype=value.dtype)
            key, value = 'head.weight', value.t()
        elif key == 'class_embedding':
            key, value = 'cls_token', value.reshape(1, 1, -1)
        elif key == 'pos_embed':
            value = value.unsqueeze(0)
        out[key] = value
    return out


def _checkpoint_grid(model: Eva, num_tokens: int) -> Tuple[int, int]:
    grid = tuple(model.patch_embed.grid_size)
    if grid[0] * grid[1] == num_tokens:
        return grid
    side = math.isqrt(num_tokens)
    if side * side == num_tokens:
        return side, side
    raise ValueError(f'cannot tell the patch grid of a position table with {num_tokens} patch tokens: it is neither '
                     f'square nor the model\'s grid {grid}')


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: Eva) -> Dict[str, torch.Tensor]:
    """Adapt a checkpoint to ``model``: timm's layout passes through (the learned position table resampled to the
    model's grid when it differs); the original EVA / EVA-CLIP (OpenCLIP ``visual.``), Perception Encoder, DINOv3
    and Sapiens2 layouts are converted to timm's, as timm converts them.

    >>> m = SPEC.build('eva02_tiny_patch14_224', depth=1, img_size=112)
    >>> sd = SPEC.build('eva02_tiny_patch14_224', depth=1).state_dict()
    >>> checkpoint_filter_fn(sd, m)['pos_embed'].shape
    torch.Size([1, 65, 192])
    """
    for wrapper in ('model_ema', 'model', 'module', 'state_dict'):
        state_dict = state_dict.get(wrapper, state_dict)
    if 'visual.conv1.weight' in state_dict:
        return _convert_perception_encoder(state_dict, 'visual.')
    if 'conv1.weight' in state_dict:
        return _convert_perception_encoder(state_dict, '')
    prefix = 'visual.trunk.' if 'visual.trunk.pos_embed' in state_dict else \
        'visual.' if 'visual.pos_embed' in state_dict else ''
    sapiens2 = 'blocks.0.attn.wq.weight' in state_dict and 'blocks.0.ffn.w12.weight' in state_dict
    dinov3 = 'storage_tokens' in state_dict and not sapiens2
    mim = not dinov3 and prefix + 'mask_token' in state_dict
    separate_qkv = prefix + 'blocks.0.attn.q_proj.weight' in state_dict
    params = dict(model.named_parameters())
    out: Dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue
        key = key[len(prefix):]
        if 'rope' in key and key != 'rope.freqs':
            continue  # computed tables, not weights
        if sapiens2:
            if key == 'mask_token':
                continue
            key = _rename(key, _SAPIENS2_RENAMES)
            key = 'norm.' + key[len('ln1.'):] if key.startswith('ln1.') else key
        elif dinov3:
            if key.endswith(('.periods', '.bias_mask', 'mask_token')) or key.startswith(('projectors.',
                                                                                          'local_cls_norm')):
                continue  # pretraining-only or computed entries
            if key.endswith('qkv.bias'):
                # the key bias is fixed at zero; models without q/v biases drop them (they are zero there)
                q_key, v_key = key.replace('qkv.bias', 'q_bias'), key.replace('qkv.bias', 'v_bias')
                if q_key in params:
                    q_bias, _, v_bias = value.chunk(3, dim=-1)
                    out[q_key], out[v_key] = q_bias, v_bias
                continue
            key = key.replace('ls1.gamma', 'gamma_1').replace('ls2.gamma', 'gamma_2')
            key = key.replace('storage_tokens', 'reg_token')
        elif mim and key in ('mask_token', 'lm_head.weight', 'lm_head.bias', 'norm.weight', 'norm.bias'):
            if not key.startswith('norm.'):
                continue
            key = 'fc_' + key  # a fine-tune starts its fc_norm from the pretraining's final norm
        if key == 'pos_embed' and model.pos_embed is not None:
            prefix_tokens = 0 if model.no_embed_class else model.num_prefix_tokens
            old_grid = _checkpoint_grid(model, value.shape[1] - prefix_tokens)
            if old_grid != tuple(model.patch_embed.grid_size):
                value = resample_abs_pos_embed(value, model.patch_embed.grid_size, old_grid, prefix_tokens)
        key = _rename(key, _MLP_RENAMES)
        if separate_qkv:
            key = key.replace('q_bias', 'q_proj.bias').replace('v_bias', 'v_proj.bias')
        out[key] = value
    return out


# ---- the family's spec ----------------------------------------------------------------------------------------------

def patch_size(variant: str, row: Any = None) -> int:
    """The patch size of ``variant`` (its only stride, and the multiple its input sides must be).

    >>> patch_size('eva02_large_patch14_448')
    14
    """
    return max(to_2tuple((row or VARIANTS[variant]).get('patch_size', 16)))


SPEC = FamilySpec(
    name='eva', model=Eva, variants=VARIANTS, default_cfg=DEFAULT_CFG,
    feature_cls=('getter', 'fx'), default_feature_cls='getter',
    output_strides=lambda name, row: (patch_size(name, row),),
    default_out_indices=3,  # timm's default feature levels for these ViTs: the last three blocks
    input_multiple=patch_size, min_input_size=patch_size, img_size_arg='img_size',
    # only widths and tables: swiglu_align_to rounds the SwiGLU width (every row with SwiGLU and no alignment differs
    # from the aligned ones in other keys too, so the packed and split MLPs stay apart)
    size_args=('patch_size', 'ref_feat_shape', 'num_kv_heads', 'attn_pool_num_heads', 'attn_pool_mlp_ratio',
               'swiglu_align_to'),
    export=('torch.export', 'onnx', 'compile'),
    checkpoint_filter=checkpoint_filter_fn, feature_pyramid=token_pyramid,
    head_is_projection=head_is_projection)
