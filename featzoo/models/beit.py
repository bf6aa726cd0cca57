"""BEiT and BEiT v2 (Bao et al., 2021; Peng et al., 2022): ViTs pre-trained by masked image modelling, with a
learned relative-position bias in every block's attention (or one shared by all blocks), layer scale, and mean
pooling of the patch tokens followed by ``fc_norm``.

Parameter names follow timm's ``Beit``, so its checkpoints load unchanged. Each relative-position table holds one
bias per head for every 2-D offset within the patch grid the model was built for, plus three entries for the
class token (class to patch, patch to class, class to class). Inputs of any size divisible by the patch work: on
another grid the tables are resampled as timm's ``set_input_size`` resamples them (geometric sampling of the
offsets, linear interpolation, class entries kept), inside the forward so that gradients reach the learned table;
at the built size the tables are used as they are, so outputs there equal timm's fixed-size model.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Set, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from ..family import FamilySpec
from ..features.notrace import register_notrace_function
from ..layers.drop import DropPath
from ..layers.mlp import Mlp
from ..layers.patch_embed import PatchEmbed
from ..layers.pos_embed import resample_abs_pos_embed
from ..layers.pyramid import token_pyramid
from ..layers.rel_pos import relative_position_index
from ..layers.token_model import TokenModelApi, check_heads, check_img_size, check_patch_grid, check_token_model_args
from ..layers.token_model import layer_norm_eps6, SQUARE_PATCH_SPEC, reset_linear_head
from ..layers.token_model import scale_init_by_depth
from ..layers.token_pos_table import resized_pos_table, square_pos_table_to
from ..layers.weight_init import trunc_normal_, trunc_normal_linears_
from .swin_transformer import resize_relative_position_table

__all__ = ['Beit', 'BeitAttention', 'BeitBlock', 'RelativePositionBias', 'VARIANTS', 'SPEC']

DEFAULT_CFG = dict(
    input_size=(3, 224, 224), interpolation='bicubic', crop_pct=0.9, crop_mode='center',
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), first_conv='patch_embed.proj', classifier='head')

GLOBAL_POOLS = ('', 'avg', 'token')
CLASS_ENTRIES = 3  # class -> patch, patch -> class, class -> class
Pair = Tuple[int, int]


def table_size(window: Pair) -> int:
    """Rows of a relative-position table for ``window``: every 2-D offset, and the three class-token entries.

    >>> table_size((14, 14))
    732
    """
    return (2 * window[0] - 1) * (2 * window[1] - 1) + CLASS_ENTRIES


def relative_position_index_with_class(window: Pair, device: Optional[torch.device] = None) -> torch.Tensor:
    """Index into the table for every (query, key) pair of the class token and the ``window`` grid, row-major:
    shape (1 + h * w, 1 + h * w); the class token's row, column and corner take the last three rows.

    >>> relative_position_index_with_class((1, 2))
    tensor([[5, 3, 3],
            [4, 1, 0],
            [4, 2, 1]])
    """
    patches = relative_position_index(window, device=device)
    if patches.is_meta:
        n = window[0] * window[1] + 1
        return torch.empty(n, n, dtype=torch.long, device='meta')
    offsets = table_size(window) - CLASS_ENTRIES
    index = F.pad(patches, (1, 0, 1, 0))
    index[0, :] = offsets
    index[:, 0] = offsets + 1
    index[0, 0] = offsets + 2
    return index


def resample_relative_position_table(table: torch.Tensor, new_window: Pair,
                                     old_window: Optional[Pair] = None) -> torch.Tensor:
    """The table of ``old_window`` (a square window when None) resampled to ``new_window`` as timm resamples it,
    the class entries kept; a linear map of ``table``, so gradients flow through it.

    >>> resample_relative_position_table(torch.randn(table_size((14, 14)), 3), (4, 6)).shape
    torch.Size([80, 3])
    """
    offsets, extra = table[:-CLASS_ENTRIES], table[-CLASS_ENTRIES:]
    if old_window is None:
        side = math.isqrt(offsets.shape[0])
        if side * side != offsets.shape[0] or side % 2 == 0:
            raise ValueError(f'cannot tell the window of a relative position table with {table.shape[0]} rows; '
                             f'give old_window=(h, w)')
        old_window = ((side + 1) // 2, (side + 1) // 2)
    if tuple(old_window) == tuple(new_window):
        return table
    # the resampling is linear in the table: apply it to the identity once, then as a matrix (differentiable)
    rows = offsets.shape[0]
    mapping = resize_relative_position_table(torch.eye(rows), new_window, old_window)
    resized = (mapping.to(device=table.device) @ offsets.float()).to(table.dtype)
    return torch.cat([resized, extra], dim=0)


@register_notrace_function
def relative_position_bias(table: torch.Tensor, index: torch.Tensor, window: Pair, grid: Pair) -> torch.Tensor:
    """The attention bias (1, heads, 1 + H * W, 1 + H * W) for a ``grid`` of patches from a table learned for
    ``window`` (resampled when they differ). Kept out of FX graphs, which would freeze the grid into them.

    >>> table = torch.randn(table_size((2, 2)), 4)
    >>> relative_position_bias(table, relative_position_index_with_class((2, 2)), (2, 2), (3, 2)).shape
    torch.Size([1, 4, 7, 7])
    """
    grid = (int(grid[0]), int(grid[1]))
    if grid != tuple(window):
        table = resample_relative_position_table(table, grid, window)
        index = relative_position_index_with_class(grid, device=table.device)
    n = grid[0] * grid[1] + 1
    return table[index.reshape(-1)].reshape(n, n, -1).permute(2, 0, 1).unsqueeze(0)


class _RelativePositionTable(nn.Module):
    """Holds ``relative_position_bias_table`` (parameter) and ``relative_position_index`` (computed buffer) for a
    window, and resizes both for another one."""

    def _init_table(self, window: Optional[Pair], num_heads: int) -> None:
        self.window_size = window
        if window is None:
            self.relative_position_bias_table = None
            self.relative_position_index = None
            return
        self.relative_position_bias_table = nn.Parameter(torch.zeros(table_size(window), num_heads))
        self.register_buffer('relative_position_index', relative_position_index_with_class(window),
                             persistent=False)

    def init_non_persistent_buffers(self) -> None:
        """Recompute the relative position index (after building on the meta device)."""
        if self.window_size is not None:
            self.relative_position_index = relative_position_index_with_class(
                self.window_size, device=self.relative_position_bias_table.device)

    def set_window_size(self, window: Pair) -> None:
        """Resample the table (as timm) and rebuild the index for another patch grid."""
        window = tuple(window)
        if self.window_size is None or window == tuple(self.window_size):
            return
        table = self.relative_position_bias_table
        with torch.no_grad():
            resized = resample_relative_position_table(table, window, self.window_size)
        self.relative_position_bias_table = nn.Parameter(resized, requires_grad=table.requires_grad)
        self.window_size = window
        self.relative_position_index = relative_position_index_with_class(window, device=table.device)

    def bias(self, grid: Pair) -> torch.Tensor:
        return relative_position_bias(self.relative_position_bias_table, self.relative_position_index,
                                      self.window_size, grid)


class RelativePositionBias(_RelativePositionTable):
    """One relative-position table shared by every block (``use_shared_rel_pos_bias``); returns the bias for a grid.

    >>> RelativePositionBias((2, 2), num_heads=3)((2, 3)).shape
    torch.Size([1, 3, 7, 7])
    """

    def __init__(self, window_size: Pair, num_heads: int) -> None:
        super().__init__()
        self._init_table(tuple(window_size), num_heads)

    def forward(self, grid: Pair) -> torch.Tensor:
        return self.bias(grid)


class BeitAttention(_RelativePositionTable):
    """Multi-head self-attention with learned query and value biases (the key bias is fixed at zero) and, given a
    ``window_size``, its own relative-position bias table; a shared bias is added on top when given.

    >>> attn = BeitAttention(32, num_heads=4, window_size=(2, 2))
    >>> attn(torch.randn(1, 5, 32), (2, 2)).shape
    torch.Size([1, 5, 32])
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, window_size: Optional[Pair] = None) -> None:
        super().__init__()
        self.num_heads = check_heads(dim, num_heads)
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.v_bias = None
        self._init_table(tuple(window_size) if window_size else None, num_heads)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, grid: Pair, shared_rel_pos_bias: Optional[torch.Tensor] = None
                ) -> torch.Tensor:
        B, N, C = x.shape
        if self.q_bias is None:
            qkv = self.qkv(x)
        else:
            qkv = F.linear(x, self.qkv.weight, torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias)))
        q, k, v = qkv.reshape(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.bias(grid) if self.relative_position_bias_table is not None else None
        if shared_rel_pos_bias is not None:
            bias = shared_rel_pos_bias if bias is None else bias + shared_rel_pos_bias
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                           dropout_p=self.attn_drop.p if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, N, C)))


class BeitBlock(nn.Module):
    """Pre-norm block: ``x + gamma_1 * attn(norm1(x))`` then ``x + gamma_2 * mlp(norm2(x))`` (no ``gamma_*``
    without ``init_values``).

    >>> BeitBlock(32, 4, init_values=0.1, window_size=(2, 2))(torch.randn(1, 5, 32), (2, 2)).shape
    torch.Size([1, 5, 32])
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False, mlp_ratio: float = 4.0,
                 proj_drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 init_values: Optional[float] = None, window_size: Optional[Pair] = None) -> None:
        super().__init__()
        self.norm1 = layer_norm_eps6(dim)
        self.attn = BeitAttention(dim, num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop,
                                  proj_drop=proj_drop, window_size=window_size)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = layer_norm_eps6(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer='gelu', drop=proj_drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.init_values = init_values
        if init_values:
            self.gamma_1 = nn.Parameter(torch.full((dim,), float(init_values)))
            self.gamma_2 = nn.Parameter(torch.full((dim,), float(init_values)))
        else:
            self.gamma_1 = self.gamma_2 = None

    def forward(self, x: torch.Tensor, grid: Pair, shared_rel_pos_bias: Optional[torch.Tensor] = None
                ) -> torch.Tensor:
        branch = self.attn(self.norm1(x), grid, shared_rel_pos_bias=shared_rel_pos_bias)
        x = x + self.drop_path1(branch if self.gamma_1 is None else self.gamma_1 * branch)
        branch = self.mlp(self.norm2(x))
        return x + self.drop_path2(branch if self.gamma_2 is None else self.gamma_2 * branch)


class Beit(TokenModelApi, nn.Module):
    """BEiT: patch embedding, class token, optional learned absolute position table, ``depth`` blocks with
    relative-position biases (per block, or shared), a final norm (or ``fc_norm`` after mean pooling) and a head.

    >>> m = Beit(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=10, init_values=0.1,
    ...          use_abs_pos_emb=False, use_rel_pos_bias=True)
    >>> m(torch.randn(1, 3, 32, 32)).shape, m.forward_features(torch.randn(1, 3, 48, 32)).shape
    (torch.Size([1, 10]), torch.Size([1, 25, 32]))
    """

    def __init__(self, img_size: Union[int, Tuple[int, int]] = 224, patch_size: int = 16, in_chans: int = 3,
                 num_classes: int = 1000, global_pool: str = 'avg', embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, qkv_bias: bool = True, mlp_ratio: float = 4.0, drop_rate: float = 0.0,
                 pos_drop_rate: float = 0.0, proj_drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, init_values: Optional[float] = None, use_abs_pos_emb: bool = True,
                 use_rel_pos_bias: bool = False, use_shared_rel_pos_bias: bool = False,
                 head_init_scale: float = 0.001, use_fc_norm: Optional[bool] = None, dynamic_img_size: bool = True,
                 output_stride: Optional[int] = None) -> None:
        super().__init__()
        check_token_model_args(global_pool, GLOBAL_POOLS, num_classes, in_chans, embed_dim, depth, num_heads,
                               (('patch_size', patch_size, 1),))
        img_size = check_patch_grid(embed_dim, num_heads, output_stride, patch_size, img_size, 'BEiT')
        self._set_token_model_attrs(num_classes, in_chans, global_pool, embed_dim, num_prefix_tokens=1)
        self.dynamic_img_size = dynamic_img_size

        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, output_fmt='NHWC')
        grid = self.patch_embed.grid_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim)) \
            if use_abs_pos_emb else None
        self.pos_drop = nn.Dropout(pos_drop_rate)
        self.rel_pos_bias = RelativePositionBias(grid, num_heads) if use_shared_rel_pos_bias else None
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList([
            BeitBlock(embed_dim, num_heads, qkv_bias=qkv_bias, mlp_ratio=mlp_ratio, proj_drop=proj_drop_rate,
                      attn_drop=attn_drop_rate, drop_path=rates[i], init_values=init_values,
                      window_size=grid if use_rel_pos_bias else None)
            for i in range(depth)])
        reduction = self.patch_embed.feat_ratio()
        self.feature_info = [dict(num_chs=embed_dim, reduction=reduction, module=f'blocks.{i}') for i in range(depth)]
        fc_norm = global_pool == 'avg' if use_fc_norm is None else use_fc_norm
        self.norm = nn.Identity() if fc_norm else layer_norm_eps6(embed_dim)
        self.fc_norm = layer_norm_eps6(embed_dim) if fc_norm else nn.Identity()
        self._add_linear_head(num_classes, drop_rate)
        self.head_init_scale = head_init_scale
        self.init_weights()

    def init_weights(self) -> None:
        """Initialize for training from scratch as timm does: truncated-normal linears, tokens and table, zero
        relative-position tables, output projections scaled down with depth, a small head. Skipped in effect on the
        meta device.

        >>> m = Beit(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=3); m.init_weights()
        >>> bool(m.head.weight.abs().max() < 0.01)
        True
        """
        trunc_normal_linears_(self)
        if self.pos_embed is not None:
            trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        if self.cls_token.is_meta:
            return
        scale_init_by_depth(self.blocks, self.head, self.head_init_scale)

    # ---- the model contract -----------------------------------------------------------------------------------

    def no_weight_decay(self) -> Set[str]:
        """The token, the position table and every relative-position table.

        >>> sorted(Beit(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2,
        ...             use_rel_pos_bias=True).no_weight_decay())
        ['blocks.0.attn.relative_position_bias_table', 'cls_token', 'pos_embed']
        """
        tables = {n for n, _ in self.named_parameters() if 'relative_position_bias_table' in n}
        return super().no_weight_decay() | tables

    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Regexes grouping parameters into stem (tokens, embeddings, shared bias) and per-block groups.

        >>> Beit(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2).group_matcher()['stem']
        '^cls_token|pos_embed|patch_embed|rel_pos_bias'
        """
        return dict(stem=r'^cls_token|pos_embed|patch_embed|rel_pos_bias',
                    blocks=[(r'^blocks\.(\d+)', None), (r'^norm', (99999,))])

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier by a fresh one with ``num_classes`` outputs (0: none), optionally changing the
        pooling ('avg' over the patch tokens, 'token', '' for none); the norms stay where they were built.

        >>> m = Beit(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2); m.reset_classifier(0, 'token')
        >>> m.head, m.global_pool
        (Identity(), 'token')
        """
        reset_linear_head(self, num_classes, global_pool, GLOBAL_POOLS, self.embed_dim, self.cls_token)

    def set_input_size(self, img_size: Union[int, Tuple[int, int]]) -> None:
        """Make ``img_size`` the reference size, as timm's ``set_input_size``: the position table and every
        relative-position table are resampled to its patch grid. Its sides must be multiples of the patch.

        >>> m = Beit(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, use_rel_pos_bias=True)
        >>> m.set_input_size((48, 32)); tuple(m.blocks[0].attn.relative_position_bias_table.shape)
        (80, 2)
        """
        size = check_img_size(img_size, self.patch_embed.patch_size)
        old_grid = self.patch_embed.grid_size
        self.patch_embed.set_input_size(size)
        grid = self.patch_embed.grid_size
        if self.pos_embed is not None and grid != old_grid:
            self.pos_embed = resized_pos_table(self.pos_embed, grid, old_grid, num_prefix_tokens=1)
        if self.rel_pos_bias is not None:
            self.rel_pos_bias.set_window_size(grid)
        for block in self.blocks:
            block.attn.set_window_size(grid)

    # ---- forward ----------------------------------------------------------------------------------------------

    def _embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[Any, Any], Tuple[Any, Optional[torch.Tensor]]]:
        """Tokens with the class token first and positions added, the patch grid, and what every block also takes:
        the grid and the shared bias (if any)."""
        x = self.patch_embed(x)
        B, H, W, C = x.shape
        x = torch.cat((self.cls_token.expand(B, -1, -1), x.reshape(B, H * W, C)), dim=1)
        if self.pos_embed is not None:
            pos_embed = self.pos_embed
            if self.dynamic_img_size:
                pos_embed = resample_abs_pos_embed(pos_embed, (H, W), self.patch_embed.grid_size,
                                                   num_prefix_tokens=1)
            x = x + pos_embed
        shared = self.rel_pos_bias((H, W)) if self.rel_pos_bias is not None else None
        return self.pos_drop(x), (H, W), ((H, W), shared)


# ---- variants -------------------------------------------------------------------------------------------------------
# Every published BEiT uses per-block relative-position biases and no absolute table; v1 base starts its layer scale
# at 0.1, the others at 1e-5.

def _row(embed_dim: int, depth: int, num_heads: int, init_values: float, img_size: int) -> Dict[str, Any]:
    return dict(patch_size=16, embed_dim=embed_dim, depth=depth, num_heads=num_heads, init_values=init_values,
                use_abs_pos_emb=False, use_rel_pos_bias=True, img_size=img_size)


VARIANTS: Dict[str, Dict[str, Any]] = {
    'beit_base_patch16_224': _row(768, 12, 12, 0.1, 224),
    'beit_base_patch16_384': _row(768, 12, 12, 0.1, 384),
    'beit_large_patch16_224': _row(1024, 24, 16, 1e-5, 224),
    'beit_large_patch16_384': _row(1024, 24, 16, 1e-5, 384),
    'beit_large_patch16_512': _row(1024, 24, 16, 1e-5, 512),
    'beitv2_base_patch16_224': _row(768, 12, 12, 1e-5, 224),
    'beitv2_large_patch16_224': _row(1024, 24, 16, 1e-5, 224),
}


# ---- checkpoints and the spec ---------------------------------------------------------------------------------------

def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: Beit) -> Dict[str, torch.Tensor]:
    """Adapt a checkpoint to ``model`` as timm does: the original release's ``model`` / ``module`` wrappers and
    computed indices go; relative-position tables learned on another (square) grid are resampled to the model's,
    and so is an absolute position table.

    >>> m = SPEC.build('beit_base_patch16_224', depth=1, img_size=64)
    >>> sd = SPEC.build('beit_base_patch16_224', depth=1).state_dict()
    >>> checkpoint_filter_fn(sd, m)['blocks.0.attn.relative_position_bias_table'].shape
    torch.Size([52, 12])
    """
    for wrapper in ('model', 'module'):
        state_dict = state_dict.get(wrapper, state_dict)
    suffix = 'relative_position_bias_table'
    out: Dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if 'relative_position_index' in key:
            continue
        if key.endswith(suffix):
            try:
                owner = model.get_submodule(key[:-len(suffix) - 1])
            except AttributeError:  # a block a features-only backbone pruned: the loader drops its keys
                owner = None
            if owner is not None and tuple(value.shape) != tuple(owner.relative_position_bias_table.shape):
                value = resample_relative_position_table(value, owner.window_size)
        elif key == 'pos_embed' and model.pos_embed is not None and value.shape[1] != model.pos_embed.shape[1]:
            value = square_pos_table_to(value, model.patch_embed.grid_size, num_prefix_tokens=1)
        out[key] = value
    return out


SPEC = FamilySpec(
    name='beit', model=Beit, variants=VARIANTS, default_cfg=DEFAULT_CFG,
    feature_cls=('getter', 'fx'), default_feature_cls='getter', img_size_arg='img_size', size_args=('init_values',),
    checkpoint_filter=checkpoint_filter_fn, feature_pyramid=token_pyramid, **SQUARE_PATCH_SPEC)
