"""CaiT (Touvron et al., 2021, "Going deeper with Image Transformers"): a ViT with layer scale and talking-heads
attention over the patch tokens, and a class token that joins only at the end, in class-attention blocks.

The patch tokens carry no class token through ``blocks``; ``forward_features`` returns the class token (from
``blocks_token_only``) followed by the patch tokens, as timm's does. Parameter names follow timm's ``Cait``.

Inputs of any size divisible by the patch work: the position table (patch tokens only) is resampled (bicubic, as
the ViTs here) when the patch grid differs from the one it was learned on, and left untouched at that size, so
outputs there equal timm's fixed-size model.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
from torch import nn

from ..family import FamilySpec
from ..layers.class_attention import CaitClassAttentionBlock, ClassTokenLastApi, check_class_token_pool
from ..layers.drop import DropPath
from ..layers.mlp import Mlp
from ..layers.patch_embed import PatchEmbed
from ..layers.pos_embed import resample_abs_pos_embed
from ..layers.pyramid import token_pyramid
from ..layers.token_model import AttentionParts, check_img_size, check_patch_grid, check_token_model_args
from ..layers.token_model import layer_norm_eps6, SQUARE_PATCH_SPEC, reset_linear_head, run_checkpointed
from ..layers.token_pos_table import resized_pos_table, square_pos_table_to
from ..layers.weight_init import trunc_normal_, trunc_normal_linears_

__all__ = ['Cait', 'TalkingHeadAttention', 'LayerScaleBlock', 'VARIANTS', 'SPEC']

DEFAULT_CFG = dict(
    input_size=(3, 384, 384), interpolation='bicubic', crop_pct=1.0, crop_mode='center',
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), first_conv='patch_embed.proj', classifier='head')

GLOBAL_POOLS = ('', 'token', 'avg')


class TalkingHeadAttention(AttentionParts):
    """Self-attention whose heads exchange information twice: the attention logits are mixed across heads
    (``proj_l``) before the softmax and the probabilities again (``proj_w``) after it.

    >>> TalkingHeadAttention(32, num_heads=4)(torch.randn(2, 6, 32)).shape
    torch.Size([2, 6, 32])
    """

    def _input_projections(self, dim: int, qkv_bias: bool) -> None:
        self.scale = (dim // self.num_heads) ** -0.5
        super()._input_projections(dim, qkv_bias)

    def _after_proj(self, dim: int) -> None:
        self.proj_l = nn.Linear(self.num_heads, self.num_heads)
        self.proj_w = nn.Linear(self.num_heads, self.num_heads)

    @staticmethod
    def _mix_heads(attn: torch.Tensor, mixer: nn.Linear) -> torch.Tensor:
        # heads become the last axis so a linear layer mixes them at every (query, key) pair
        return mixer(attn.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = self._mix_heads(attn, self.proj_l).softmax(dim=-1)
        attn = self.attn_drop(self._mix_heads(attn, self.proj_w))
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))


class LayerScaleBlock(nn.Module):
    """Pre-norm block with layer scale: ``x + gamma_1 * attn(norm1(x))`` then ``x + gamma_2 * mlp(norm2(x))``.

    >>> LayerScaleBlock(32, 4)(torch.randn(1, 5, 32)).shape
    torch.Size([1, 5, 32])
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False,
                 proj_drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 norm_layer: Callable[[int], nn.Module] = layer_norm_eps6, init_values: float = 1e-4) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = TalkingHeadAttention(dim, num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop,
                                         proj_drop=proj_drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer='gelu', drop=proj_drop)
        self.init_values = init_values
        self.gamma_1 = nn.Parameter(torch.full((dim,), float(init_values)))
        self.gamma_2 = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.gamma_1 * self.attn(self.norm1(x)))
        return x + self.drop_path(self.gamma_2 * self.mlp(self.norm2(x)))


class Cait(ClassTokenLastApi, nn.Module):
    """CaiT: patch embedding, a learned position table for the patch tokens, ``depth`` talking-heads blocks, then
    ``depth_token_only`` class-attention blocks that read the patch tokens into the class token, a final norm and a
    linear head.

    >>> m = Cait(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=10)
    >>> m(torch.randn(1, 3, 32, 32)).shape, m.forward_features(torch.randn(1, 3, 48, 32)).shape
    (torch.Size([1, 10]), torch.Size([1, 25, 32]))
    """

    class_blocks_name = 'blocks_token_only'

    def __init__(self, img_size: Union[int, Tuple[int, int]] = 224, patch_size: int = 16, in_chans: int = 3,
                 num_classes: int = 1000, global_pool: str = 'token', embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_rate: float = 0.0,
                 pos_drop_rate: float = 0.0, proj_drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, init_values: float = 1e-4, depth_token_only: int = 2,
                 mlp_ratio_token_only: float = 4.0, dynamic_img_size: bool = True,
                 output_stride: Optional[int] = None) -> None:
        super().__init__()
        check_token_model_args(global_pool, GLOBAL_POOLS, num_classes, in_chans, embed_dim, depth, num_heads,
                               (('depth_token_only', depth_token_only, 0), ('patch_size', patch_size, 1)))
        img_size = check_patch_grid(embed_dim, num_heads, output_stride, patch_size, img_size, 'CaiT')
        self._set_token_model_attrs(num_classes, in_chans, global_pool, embed_dim, num_prefix_tokens=1)
        self.dynamic_img_size = dynamic_img_size

        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, output_fmt='NHWC')
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches, embed_dim))
        self.pos_drop = nn.Dropout(pos_drop_rate)
        # CaiT drops every block's path at the same rate, not at a rate growing with depth
        self.blocks = nn.Sequential(*[
            LayerScaleBlock(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, proj_drop=proj_drop_rate,
                            attn_drop=attn_drop_rate, drop_path=drop_path_rate, init_values=init_values)
            for _ in range(depth)])
        reduction = self.patch_embed.feat_ratio()
        self.feature_info = [dict(num_chs=embed_dim, reduction=reduction, module=f'blocks.{i}') for i in range(depth)]
        self._add_class_attention_head([
            CaitClassAttentionBlock(embed_dim, num_heads, mlp_ratio=mlp_ratio_token_only, qkv_bias=qkv_bias,
                                    norm_layer=layer_norm_eps6, init_values=init_values)
            for _ in range(depth_token_only)], num_classes, drop_rate)
        self.init_weights()

    def init_weights(self) -> None:
        """Initialize for training from scratch as timm does: truncated-normal linears, tokens and table (skipped in
        effect on the meta device).

        >>> m = Cait(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2); m.init_weights()
        >>> float(m.head.bias.detach().abs().max())
        0.0
        """
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        trunc_normal_linears_(self)

    # ---- the model contract -----------------------------------------------------------------------------------

    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Regexes grouping parameters into the stem (tokens, table, patch embedding), one group per block, then the
        class-attention blocks and the final norm (timm returns a function with overlapping numbers instead; the
        regexes keep featzoo's layer-wise tools working on every family the same way).

        >>> sorted(Cait(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2).group_matcher())
        ['blocks', 'blocks_token_only', 'stem']
        """
        return dict(stem=r'^cls_token|pos_embed|patch_embed', blocks=r'^blocks\.(\d+)',
                    blocks_token_only=[(r'^blocks_token_only\.(\d+)', None), (r'^norm', (99999,))])

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier by a fresh one with ``num_classes`` outputs (0: none), optionally changing the
        pooling ('token', 'avg' over the patch tokens, '' for none).

        >>> m = Cait(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2); m.reset_classifier(0, 'avg')
        >>> m.head, m.global_pool
        (Identity(), 'avg')
        """
        reset_linear_head(self, num_classes, global_pool, GLOBAL_POOLS, self.num_features, self.patch_embed.proj.weight,
                          partial(check_class_token_pool, self))

    def set_input_size(self, img_size: Union[int, Tuple[int, int]]) -> None:
        """Make ``img_size`` the reference size: the position table is resampled (bicubic) to its patch grid. Its
        sides must be multiples of the patch.

        >>> m = Cait(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2); m.set_input_size((48, 32))
        >>> tuple(m.pos_embed.shape)
        (1, 24, 32)
        """
        size = check_img_size(img_size, self.patch_embed.patch_size)
        old_grid = self.patch_embed.grid_size
        self.patch_embed.set_input_size(size)
        if self.patch_embed.grid_size != old_grid:
            self.pos_embed = resized_pos_table(self.pos_embed, self.patch_embed.grid_size, old_grid, 0)

    # ---- forward ----------------------------------------------------------------------------------------------

    def _embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[Any, Any], Tuple[()]]:
        x = self.patch_embed(x)
        B, H, W, C = x.shape
        pos_embed = self.pos_embed
        if self.dynamic_img_size:
            pos_embed = resample_abs_pos_embed(pos_embed, (H, W), self.patch_embed.grid_size, num_prefix_tokens=0)
        return self.pos_drop(x.reshape(B, H * W, C) + pos_embed), (H, W), ()

    def forward_cls(self, x: torch.Tensor) -> torch.Tensor:
        """Run the class token through the class-attention blocks over the patch tokens ``x``; returns the class
        token followed by ``x``."""
        cls_token = self.cls_token.expand(x.shape[0], -1, -1)
        for block in self.blocks_token_only:
            cls_token = run_checkpointed(self.grad_checkpointing, block, x, cls_token)
        return torch.cat((cls_token, x), dim=1)


# ---- variants -------------------------------------------------------------------------------------------------------
# XXS: 192 wide, 4 heads; XS: 288, 6; S: 384, 8; M: 768, 16. The number is the depth before the class attention; the
# layer scales start at 1e-5, and at 1e-6 in the S and M models deeper than 24 blocks.

_SIZES = {'xxs': (192, 4), 'xs': (288, 6), 's': (384, 8), 'm': (768, 16)}


def _row(size: str, depth: int, img_size: int) -> Dict[str, Any]:
    embed_dim, num_heads = _SIZES[size]
    init_values = 1e-6 if size in ('s', 'm') and depth > 24 else 1e-5
    return dict(patch_size=16, embed_dim=embed_dim, depth=depth, num_heads=num_heads, init_values=init_values,
                img_size=img_size)


VARIANTS: Dict[str, Dict[str, Any]] = {
    f'cait_{size}{depth}_{img}': _row(size, depth, img)
    for size, depth, img in (('xxs', 24, 224), ('xxs', 24, 384), ('xxs', 36, 224), ('xxs', 36, 384), ('xs', 24, 384),
                             ('s', 24, 224), ('s', 24, 384), ('s', 36, 384), ('m', 36, 384), ('m', 48, 448))
}


# ---- checkpoints and the spec ---------------------------------------------------------------------------------------

def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: Cait) -> Dict[str, torch.Tensor]:
    """Adapt a checkpoint to ``model``: the original release's ``model`` wrapper and ``module.`` prefixes go, and
    the position table is resampled (bicubic) when it was learned on another (square) grid.

    >>> m = SPEC.build('cait_xxs24_224', depth=1, img_size=64)
    >>> sd = SPEC.build('cait_xxs24_224', depth=1).state_dict()
    >>> checkpoint_filter_fn(sd, m)['pos_embed'].shape
    torch.Size([1, 16, 192])
    """
    state_dict = state_dict.get('model', state_dict)
    out: Dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        key = key.replace('module.', '')
        if key == 'pos_embed' and tuple(value.shape) != tuple(model.pos_embed.shape):
            value = square_pos_table_to(value, model.patch_embed.grid_size, num_prefix_tokens=0)
        out[key] = value
    return out


SPEC = FamilySpec(
    name='cait', model=Cait, variants=VARIANTS, default_cfg=DEFAULT_CFG,
    # not 'fx': its token-to-map step strips num_prefix_tokens (1) tokens from each tapped block, but CaiT's blocks
    # carry none (the class token joins after them)
    feature_cls=('getter',), default_feature_cls='getter', img_size_arg='img_size', size_args=('init_values',),
    checkpoint_filter=checkpoint_filter_fn, feature_pyramid=token_pyramid, **SQUARE_PATCH_SPEC)
