"""Plain Vision Transformers: ViT, DeiT (with its distillation token) and DINOv2 (with and without registers).

One model class covers them all; the variant table holds what differs (widths, patch size, layer scale, register
and distillation tokens). Parameter names follow timm's, so its checkpoints load unchanged.

Inputs of any size divisible by the patch work by default: the position embedding is resampled (bicubic, as timm's
``dynamic_img_size=True``) whenever the patch grid differs from the one it was learned on, and left untouched at
that size, so outputs there equal timm's static model. ``dynamic_img_size=False`` restores the fixed-size model.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from ..family import FamilySpec
from ..layers.activations import ActLayer, get_act_layer
from ..layers.drop import DropPath
from ..layers.helpers import to_2tuple
from ..layers.intermediates import IndicesArg, feature_take_indices
from ..layers.mlp import Mlp
from ..layers.patch_embed import PatchEmbed
from ..layers.pos_embed import resample_abs_pos_embed
from ..layers.pyramid import SimplePyramid
from ..layers.weight_init import normal_, trunc_normal_

DEFAULT_CFG = dict(
    input_size=(3, 224, 224), interpolation='bicubic', crop_pct=0.9, crop_mode='center',
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), first_conv='patch_embed.proj', classifier='head')

_VIT_TI = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3)
_VIT_S = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6)
_VIT_B = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12)
# DINOv2 weights are published at 518 px (a 37 x 37 grid) without a classifier
_DINOV2 = dict(patch_size=14, depth=12, init_values=1e-5, img_size=518, num_classes=0)
_REG4 = dict(reg_tokens=4, no_embed_class=True)

VARIANTS: Dict[str, Dict[str, Any]] = {
    'vit_tiny_patch16_224': _VIT_TI,
    'vit_small_patch16_224': _VIT_S,
    'vit_base_patch16_224': _VIT_B,
    'vit_base_patch32_224': dict(_VIT_B, patch_size=32),
    'vit_large_patch16_224': dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16),
    'vit_small_patch14_dinov2': dict(_DINOV2, embed_dim=384, num_heads=6),
    'vit_base_patch14_dinov2': dict(_DINOV2, embed_dim=768, num_heads=12),
    'vit_small_patch14_reg4_dinov2': dict(_DINOV2, embed_dim=384, num_heads=6, **_REG4),
    'vit_base_patch14_reg4_dinov2': dict(_DINOV2, embed_dim=768, num_heads=12, **_REG4),
    'deit_tiny_patch16_224': _VIT_TI,
    'deit_small_patch16_224': _VIT_S,
    'deit_base_patch16_224': _VIT_B,
    'deit_base_distilled_patch16_224': dict(_VIT_B, distilled=True),
}

GLOBAL_POOLS = ('', 'token', 'avg', 'avgmax', 'max')
FEATURE_OUTPUT_FORMATS = ('NCHW', 'NHWC', 'NLC')
PYRAMID_REDUCTIONS = (4, 8, 16, 32)


class Attention(nn.Module):
    """Multi-head self-attention on tokens (B, N, C) with one fused ``qkv`` projection and an output ``proj``.

    >>> Attention(32, num_heads=4)(torch.ones(2, 5, 32)).shape
    torch.Size([2, 5, 32])
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True, qk_norm: bool = False,
                 proj_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 norm_eps: float = 1e-6) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'embed_dim={dim} must be divisible by num_heads={num_heads}')
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))


class LayerScale(nn.Module):
    """Learned per-channel scale of a residual branch (``gamma``), on channels-last tensors.

    >>> LayerScale(4, 0.5)(torch.ones(1, 4)).tolist()
    [[0.5, 0.5, 0.5, 0.5]]
    """

    def __init__(self, dim: int, init_values: float = 1e-5) -> None:
        super().__init__()
        self.init_values = init_values
        self.gamma = nn.Parameter(torch.empty(dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Set every scale back to ``init_values``.

        >>> ls = LayerScale(2, 0.5); ls.reset_parameters(); ls.gamma.tolist()
        [0.5, 0.5]
        """
        nn.init.constant_(self.gamma, self.init_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``, each branch optionally
    layer-scaled (``ls1``, ``ls2``) and stochastically dropped.

    >>> Block(32, 4, init_values=1e-5)(torch.ones(1, 3, 32)).shape
    torch.Size([1, 3, 32])
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 qk_norm: bool = False, proj_bias: bool = True, init_values: Optional[float] = None,
                 proj_drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0, act_layer: ActLayer = 'gelu',
                 norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, qk_norm=qk_norm, proj_bias=proj_bias,
                              attn_drop=attn_drop, proj_drop=proj_drop, norm_eps=norm_eps)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, bias=proj_bias, drop=proj_drop)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


def _check_choice(name: str, value: Any, valid: Sequence[Any]) -> None:
    if value not in valid:
        raise ValueError(f'{name}={value!r} is invalid; valid: {tuple(valid)}')


def _check_rate(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f'{name}={value!r} is invalid; it must be a float in [0, 1)')
    return float(value)


def _check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f'{name}={value!r} is invalid; it must be an int >= {minimum}')
    return value


class VisionTransformer(nn.Module):
    """A plain ViT: patch embedding, prefix tokens (class, distillation, registers), learned position embedding,
    ``depth`` identical blocks, a final norm and a linear head.

    ``forward_features`` returns the full token sequence (B, prefix + H * W, C), as timm's does.

    >>> m = VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_classes=10)
    >>> m(torch.randn(1, 3, 32, 32)).shape, m.forward_features(torch.randn(1, 3, 48, 32)).shape
    (torch.Size([1, 10]), torch.Size([1, 25, 64]))
    """

    def __init__(self, img_size: Union[int, Tuple[int, int]] = 224, patch_size: Union[int, Tuple[int, int]] = 16,
                 in_chans: int = 3, num_classes: int = 1000, global_pool: str = 'token', embed_dim: int = 768,
                 depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 qk_norm: bool = False, proj_bias: bool = True, init_values: Optional[float] = None,
                 class_token: bool = True, reg_tokens: int = 0, distilled: bool = False,
                 no_embed_class: bool = False, pre_norm: bool = False, final_norm: bool = True,
                 fc_norm: Optional[bool] = None, dynamic_img_size: bool = True, dynamic_img_pad: bool = False,
                 drop_rate: float = 0.0, pos_drop_rate: float = 0.0, proj_drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0, act_layer: ActLayer = 'gelu',
                 norm_eps: float = 1e-6, output_stride: Optional[int] = None) -> None:
        super().__init__()
        _check_choice('global_pool', global_pool, GLOBAL_POOLS)
        _check_positive_int('num_classes', num_classes, 0)
        _check_positive_int('in_chans', in_chans)
        _check_positive_int('embed_dim', embed_dim)
        _check_positive_int('depth', depth)
        _check_positive_int('num_heads', num_heads)
        _check_positive_int('reg_tokens', reg_tokens, 0)
        for name, rate in (('drop_rate', drop_rate), ('pos_drop_rate', pos_drop_rate),
                           ('proj_drop_rate', proj_drop_rate), ('attn_drop_rate', attn_drop_rate),
                           ('drop_path_rate', drop_path_rate)):
            _check_rate(name, rate)
        get_act_layer(act_layer)
        if global_pool == 'token' and not class_token:
            raise ValueError("global_pool='token' reads the class token, so it needs class_token=True; "
                             "valid without one: '', 'avg', 'avgmax', 'max'")
        if distilled:
            if not class_token or reg_tokens:
                raise ValueError('distilled=True (DeiT) needs class_token=True and reg_tokens=0, '
                                 f'got class_token={class_token}, reg_tokens={reg_tokens}')
            if global_pool != 'token':
                raise ValueError(f"distilled=True averages the class and distillation heads, so global_pool must be "
                                 f"'token'; got {global_pool!r}")
        if img_size is None:
            raise ValueError('img_size=None is invalid: the position embedding needs a reference size; give an int '
                             'or (height, width), e.g. 224')
        patch = to_2tuple(patch_size)
        if len(patch) != 2 or any(isinstance(p, bool) or not isinstance(p, int) or p < 1 for p in patch):
            raise ValueError(f'patch_size must be a positive int or a pair of them, got {patch_size!r}')
        natural_stride = max(patch)
        if output_stride is not None and output_stride != natural_stride:
            raise ValueError(f'output_stride={output_stride!r} is not supported: a plain ViT has one stride, its '
                             f'patch size {natural_stride}; valid: {natural_stride} or None')

        use_fc_norm = global_pool in ('avg', 'avgmax', 'max') if fc_norm is None else fc_norm
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.has_class_token = class_token
        self.distilled = distilled
        self.num_reg_tokens = reg_tokens
        self.num_prefix_tokens = int(class_token) + int(distilled) + reg_tokens
        self.no_embed_class = no_embed_class
        self.dynamic_img_size = dynamic_img_size
        self.grad_checkpointing = False
        self.distilled_training = False

        # CLIP-style pre-norm models drop the patch bias; the layout stays NHWC so the grid size is at hand
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, bias=not pre_norm,
                                      output_fmt='NHWC', dynamic_img_pad=dynamic_img_pad)
        reduction = self.patch_embed.feat_ratio()
        self.cls_token = nn.Parameter(torch.empty(1, 1, embed_dim)) if class_token else None
        self.reg_token = nn.Parameter(torch.empty(1, reg_tokens, embed_dim)) if reg_tokens else None
        embed_len = self.patch_embed.num_patches + (0 if no_embed_class else self.num_prefix_tokens)
        self.pos_embed = nn.Parameter(torch.empty(1, embed_len, embed_dim))
        # registered after pos_embed so the state_dict order is timm's for DeiT distilled
        self.dist_token = nn.Parameter(torch.empty(1, 1, embed_dim)) if distilled else None
        self.pos_drop = nn.Dropout(pos_drop_rate)
        self.norm_pre = nn.LayerNorm(embed_dim, eps=norm_eps) if pre_norm else nn.Identity()

        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.Sequential(*[
            Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_norm=qk_norm,
                  proj_bias=proj_bias, init_values=init_values, proj_drop=proj_drop_rate, attn_drop=attn_drop_rate,
                  drop_path=rates[i], act_layer=act_layer, norm_eps=norm_eps)
            for i in range(depth)])
        self.feature_info = [dict(num_chs=embed_dim, reduction=reduction, module=f'blocks.{i}') for i in range(depth)]
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps) if final_norm and not use_fc_norm else nn.Identity()
        self.fc_norm = nn.LayerNorm(embed_dim, eps=norm_eps) if final_norm and use_fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        if distilled:
            self.head_dist = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        """Initialize for training from scratch (truncated normal linears, tiny prefix tokens), as timm does.

        Skipped in effect on the meta device, where weights are about to be loaded.

        >>> m = VisionTransformer(depth=1, embed_dim=32, num_heads=2); m.init_weights()
        >>> float(m.head.bias.detach().abs().max())
        0.0
        """
        trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            normal_(self.cls_token, std=1e-6)
        if self.reg_token is not None:
            normal_(self.reg_token, std=1e-6)
        if self.dist_token is not None:
            trunc_normal_(self.dist_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    # ---- the model contract -------------------------------------------------------------------------------------

    def no_weight_decay(self) -> Set[str]:
        """Parameters that should not see weight decay.

        >>> sorted(VisionTransformer(depth=1, embed_dim=32, num_heads=2).no_weight_decay())[:2]
        ['cls_token', 'dist_token']
        """
        return {'pos_embed', 'cls_token', 'reg_token', 'dist_token'}

    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Regexes grouping parameters into stem and per-block groups (for layer-wise learning-rate decay).

        >>> sorted(VisionTransformer(depth=1, embed_dim=32, num_heads=2).group_matcher())
        ['blocks', 'stem']
        """
        tokens = 'cls_token|pos_embed|patch_embed|dist_token' if self.distilled else \
            'cls_token|reg_token|pos_embed|patch_embed|norm_pre'
        return dict(stem=f'^{tokens}', blocks=[(r'^blocks\.(\d+)', None), (r'^norm', (99999,))])

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass instead of storing them.

        >>> m = VisionTransformer(depth=1, embed_dim=32, num_heads=2); m.set_grad_checkpointing(); m.grad_checkpointing
        True
        """
        self.grad_checkpointing = enable

    def set_distilled_training(self, enable: bool = True) -> None:
        """DeiT distilled only: in training mode return (class logits, distillation logits) instead of their mean.

        >>> m = VisionTransformer(depth=1, embed_dim=32, num_heads=2, distilled=True); m.set_distilled_training()
        """
        self.distilled_training = enable

    def get_classifier(self) -> Union[nn.Module, Tuple[nn.Module, nn.Module]]:
        """The classifier (``head``), or ``(head, head_dist)`` for DeiT distilled, as timm returns.

        >>> VisionTransformer(depth=1, embed_dim=32, num_heads=2, num_classes=5).get_classifier()
        Linear(in_features=32, out_features=5, bias=True)
        """
        return (self.head, self.head_dist) if self.distilled else self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier by a fresh one with ``num_classes`` outputs (0: none), optionally changing pooling.

        >>> m = VisionTransformer(depth=1, embed_dim=32, num_heads=2); m.reset_classifier(0, 'avg'); m.head
        Identity()
        """
        _check_positive_int('num_classes', num_classes, 0)
        if global_pool is not None:
            valid = ('', 'token') if self.distilled else \
                GLOBAL_POOLS if self.has_class_token else tuple(p for p in GLOBAL_POOLS if p != 'token')
            _check_choice('global_pool', global_pool, valid)
            # the distilled head always reads its two tokens; it has no other pooling to switch to
            if not self.distilled:
                self.global_pool = global_pool
        self.num_classes = num_classes
        dd = dict(device=self.pos_embed.device, dtype=self.pos_embed.dtype)
        self.head = nn.Linear(self.embed_dim, num_classes, **dd) if num_classes > 0 else nn.Identity()
        self.head.train(self.training)
        if self.distilled:
            self.head_dist = nn.Linear(self.embed_dim, num_classes, **dd) if num_classes > 0 else nn.Identity()
            self.head_dist.train(self.training)

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        # x: patch grid, channels last (B, H, W, C)
        B, H, W, C = x.shape
        x = x.reshape(B, H * W, C)
        if self.dynamic_img_size:
            pos_embed = resample_abs_pos_embed(self.pos_embed, (H, W), self.patch_embed.grid_size,
                                               num_prefix_tokens=0 if self.no_embed_class else self.num_prefix_tokens)
        else:
            pos_embed = self.pos_embed
        prefix = []
        if self.cls_token is not None:
            prefix.append(self.cls_token.expand(B, -1, -1))
        if self.dist_token is not None:
            prefix.append(self.dist_token.expand(B, -1, -1))
        if self.reg_token is not None:
            prefix.append(self.reg_token.expand(B, -1, -1))
        if self.no_embed_class:
            # DINOv2 with registers, DeiT III: the prefix tokens carry no position
            x = x + pos_embed
            if prefix:
                x = torch.cat(prefix + [x], dim=1)
        else:
            if prefix:
                x = torch.cat(prefix + [x], dim=1)
            x = x + pos_embed
        return self.pos_drop(x)

    def _embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[Any, Any]]:
        x = self.patch_embed(x)
        grid = (x.shape[1], x.shape[2])
        return self.norm_pre(self._pos_embed(x)), grid

    def _run_block(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, x, use_reentrant=False)
        return block(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens after the final norm: (B, prefix tokens + H / patch * W / patch, embed_dim).

        >>> VisionTransformer(depth=1, embed_dim=32, num_heads=2).forward_features(torch.ones(1, 3, 32, 64)).shape
        torch.Size([1, 9, 32])
        """
        x, _ = self._embed(x)
        for block in self.blocks:
            x = self._run_block(block, x)
        return self.norm(x)

    def pool(self, x: torch.Tensor, pool_type: Optional[str] = None) -> torch.Tensor:
        """Reduce tokens to one vector per image (``'token'``: the class token; others over the patch tokens).

        >>> VisionTransformer(depth=1, embed_dim=32, num_heads=2).pool(torch.ones(2, 5, 32), 'avgmax').shape
        torch.Size([2, 32])
        """
        pool_type = self.global_pool if pool_type is None else pool_type
        if not pool_type:
            return x
        if pool_type == 'token':
            return x[:, 0]
        x = x[:, self.num_prefix_tokens:]
        if pool_type == 'avg':
            return x.mean(dim=1)
        if pool_type == 'max':
            return x.amax(dim=1)
        return 0.5 * (x.amax(dim=1) + x.mean(dim=1))

    def forward_head(self, x: torch.Tensor,
                     pre_logits: bool = False) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """Pool, normalize (``fc_norm``), dropout and classify the tokens of :meth:`forward_features`.

        >>> m = VisionTransformer(depth=1, embed_dim=32, num_heads=2, num_classes=7)
        >>> m.forward_head(torch.ones(2, 5, 32), pre_logits=True).shape
        torch.Size([2, 32])
        """
        if self.distilled:
            cls, dist = self.head_drop(x[:, 0]), self.head_drop(x[:, 1])
            if pre_logits:
                return (cls + dist) / 2
            cls, dist = self.head(cls), self.head_dist(dist)
            if self.distilled_training and self.training:
                return cls, dist
            return (cls + dist) / 2
        x = self.head_drop(self.fc_norm(self.pool(x)))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        return self.forward_head(self.forward_features(x))

    # ---- intermediates ------------------------------------------------------------------------------------------

    def forward_intermediates(self, x: torch.Tensor, indices: IndicesArg = None, return_prefix_tokens: bool = False,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = 'NCHW',
                              intermediates_only: bool = False
                              ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Outputs of the blocks selected by ``indices`` (None: all; int n: the last n; a sequence, negatives from
        the end), in block order, with the prefix tokens split off.

        ``norm`` applies the final norm to each; ``output_fmt`` is 'NCHW' (maps), 'NHWC' or 'NLC' (tokens);
        ``return_prefix_tokens`` pairs each with its prefix tokens; ``stop_early`` skips the blocks after the last
        selected one. Returns the list, or ``(forward_features output, list)`` unless ``intermediates_only``.

        >>> m = VisionTransformer(depth=4, embed_dim=32, num_heads=2)
        >>> [t.shape for t in m.forward_intermediates(torch.ones(1, 3, 32, 48), 2, intermediates_only=True)]
        [torch.Size([1, 32, 2, 3]), torch.Size([1, 32, 2, 3])]
        """
        _check_choice('output_fmt', output_fmt, FEATURE_OUTPUT_FORMATS)
        take, last = feature_take_indices(len(self.blocks), indices)
        take = set(take)
        B = x.shape[0]
        x, (H, W) = self._embed(x)
        # later blocks cannot change what is returned when only the intermediates are wanted
        blocks = list(self.blocks)[:last + 1] if stop_early or intermediates_only else self.blocks
        intermediates = []
        for i, block in enumerate(blocks):
            x = self._run_block(block, x)
            if i in take:
                intermediates.append(self.norm(x) if norm else x)
        n = self.num_prefix_tokens
        prefix_tokens = [y[:, :n] for y in intermediates] if return_prefix_tokens else []
        if n:
            intermediates = [y[:, n:] for y in intermediates]
        if output_fmt == 'NCHW':
            intermediates = [y.reshape(B, H, W, -1).permute(0, 3, 1, 2).contiguous() for y in intermediates]
        elif output_fmt == 'NHWC':
            intermediates = [y.reshape(B, H, W, -1) for y in intermediates]
        if return_prefix_tokens and n:
            intermediates = list(zip(intermediates, prefix_tokens))
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(self, indices: IndicesArg = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop the blocks after the last of ``indices`` (and optionally the final norm and the head); returns the
        absolute indices kept.

        >>> m = VisionTransformer(depth=4, embed_dim=32, num_heads=2)
        >>> m.prune_intermediate_layers((1,)), len(m.blocks)
        ([1], 2)
        """
        take, last = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[:last + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.fc_norm = nn.Identity()
            self.reset_classifier(0, '')
        return take


# ---- builders and adapters for the factory --------------------------------------------------------------------------

def output_strides(variant: str, row: Any = None) -> Tuple[int, ...]:
    """The output strides ``variant`` accepts: only its patch size.

    >>> output_strides('vit_small_patch14_dinov2')
    (14,)
    """
    return (max(to_2tuple(VARIANTS[variant]['patch_size'])),)


def _checkpoint_grid(model: VisionTransformer, num_tokens: int) -> Tuple[int, int]:
    side = math.isqrt(num_tokens)
    if side * side == num_tokens:
        return side, side
    # a non-square grid can only be recovered from the image size the weights were trained at
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    size = cfg.get('input_size')
    if size is not None:
        patch = model.patch_embed.patch_size
        grid = (size[-2] // patch[0], size[-1] // patch[1])
        if grid[0] * grid[1] == num_tokens:
            return grid
    raise ValueError(f'cannot tell the patch grid of a position embedding with {num_tokens} patch tokens: it is not '
                     f'square and not the grid of the pretrained input size {size}')


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: VisionTransformer) -> Dict[str, torch.Tensor]:
    """Adapt a checkpoint to ``model``: resample ``pos_embed`` to the model's grid (bicubic, as timm), and convert
    the layouts timm converts for these architectures (DeiT III ``gamma_1``, original DINOv2 keys, old
    ``pre_logits`` layers).

    >>> m = SPEC.build('vit_tiny_patch16_224', img_size=32)
    >>> sd = SPEC.build('vit_tiny_patch16_224').state_dict()
    >>> checkpoint_filter_fn(sd, m)['pos_embed'].shape
    torch.Size([1, 5, 192])
    """
    state_dict = dict(state_dict)
    if 'mask_token' in state_dict:
        # Meta's DINOv2 release: registers are prefix tokens outside the position embedding in timm's layout,
        # so the class token absorbs its position entry
        state_dict.pop('mask_token')
        if 'register_tokens' in state_dict:
            state_dict['reg_token'] = state_dict.pop('register_tokens')
            pos = state_dict['pos_embed']
            state_dict['cls_token'] = state_dict['cls_token'] + pos[:, :1]
            state_dict['pos_embed'] = pos[:, 1:]
    out: Dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith('pre_logits'):
            continue
        if '.gamma_' in key:
            key = key.replace('.gamma_1', '.ls1.gamma').replace('.gamma_2', '.ls2.gamma')
        if key == 'pos_embed' and getattr(model, 'pos_embed', None) is not None:
            prefix = 0 if model.no_embed_class else model.num_prefix_tokens
            old_grid = _checkpoint_grid(model, value.shape[1] - prefix)
            if tuple(value.shape) != tuple(model.pos_embed.shape) or old_grid != tuple(model.patch_embed.grid_size):
                value = resample_abs_pos_embed(value, model.patch_embed.grid_size, old_grid, num_prefix_tokens=prefix)
        out[key] = value
    return out


def create_feature_pyramid(model: VisionTransformer, out_indices: Optional[Sequence[int]] = None) -> Dict[str, Any]:
    """Arguments for the getter wrapper that turn four tapped blocks into a simple pyramid of strides 4, 8, 16, 32.

    ``out_indices`` must name exactly four blocks (None: four evenly spaced, the last one included). Returns
    ``dict(pyramid=SimplePyramid, pyramid_levels=[level dicts], out_indices=blocks)``; the pyramid has no
    parameters.

    >>> extra = create_feature_pyramid(SPEC.build('vit_tiny_patch16_224'), (2, 5, 8, 11))
    >>> [level['reduction'] for level in extra['pyramid_levels']]
    [4, 8, 16, 32]
    """
    depth = len(model.blocks)
    if out_indices is None:
        out_indices = [depth * (i + 1) // 4 - 1 for i in range(4)]
    take, _ = feature_take_indices(depth, out_indices)
    take = sorted(set(take))
    if len(take) != 4:
        raise ValueError(f'feature_pyramid=True needs exactly four distinct out_indices (one per stride '
                         f'{PYRAMID_REDUCTIONS}), got {tuple(out_indices)}; e.g. '
                         f'{tuple(depth * (i + 1) // 4 - 1 for i in range(4))}')
    stride = model.patch_embed.feat_ratio()
    levels = [dict(num_chs=model.embed_dim, reduction=r, module=f'blocks.{i}')
              for i, r in zip(take, PYRAMID_REDUCTIONS)]
    return dict(pyramid=SimplePyramid((stride,) * 4, PYRAMID_REDUCTIONS), pyramid_levels=levels, out_indices=tuple(take))

SPEC = FamilySpec(
    name='vision_transformer', model=VisionTransformer, variants=VARIANTS, default_cfg=DEFAULT_CFG,
    feature_cls=('getter', 'fx'), default_feature_cls='getter', output_strides=output_strides,
    default_out_indices=3,  # timm's default feature levels for ViTs: the last three blocks
    input_multiple=lambda name, row: max(to_2tuple(row['patch_size'])), img_size_arg='img_size',
    export=('torch.export', 'onnx', 'compile'),  # no dynamic_hw: the position-embedding resample branches on the grid
    checkpoint_filter=checkpoint_filter_fn, feature_pyramid=create_feature_pyramid)
