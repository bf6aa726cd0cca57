"""Hiera ("Hiera: A Hierarchical Vision Transformer without the Bells-and-Whistles", Ryali et al., 2023), and the
'abswin' variants with a tiled window position embedding ("Window Attention is Bugged", Bolya et al., 2023).

Tokens are kept "unrolled": reordered once after the patch embedding so that each 2x2 pooling of a stage change is
a max over the leading quarter-blocks of the sequence, and each mask unit (an 8x8 token window) is a strided slice.
Mask-unit attention, query pooling and the channel expansion at stage changes all work on that order; the stage
outputs are "rerolled" back to (B, H, W, C) maps for the feature levels. Parameter names follow timm's Hiera, so its
checkpoints load unchanged.

Any input whose sides are multiples of 32 works with the model as built: the unroll follows the input's token grid,
and the learned position embedding is resampled (bicubic, as timm's ViTs do) when the grid differs from the one it
was built for (the abswin window embedding is tiled over the grid, as timm does at its one size).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from ..checks import check_choice, check_int, check_int_tuple
from ..family import FamilySpec
from ..features.notrace import register_notrace_function
from ..layers import DropPath
from ..layers.head_api import HeadApi
from ..layers.helpers import to_2tuple
from ..layers.intermediates import IndicesArg, feature_take_indices
from ..layers.mlp import Mlp
from ..layers.pos_embed import resample_abs_pos_embed
from ..layers.token_model import check_heads, run_checkpointed
from ..layers.token_pos_table import resized_pos_table, square_pos_table_to
from ..layers.weight_init import trunc_normal_, trunc_normal_linears_
from .vision_transformer import LayerScale

DEFAULT_CFG = dict(
    input_size=(3, 224, 224), interpolation='bicubic', crop_pct=0.9, crop_mode='center',
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), first_conv='patch_embed.proj', classifier='head.fc',
    num_classes=1000)

PATCH_STRIDE = 4
MASK_UNIT = 8            # tokens per side of a mask unit
Q_STRIDE = 2             # pooling per side at each stage change
INPUT_MULTIPLE = 32      # patch stride x the three 2x2 poolings (and whole mask units)
POOL_TYPES = ('', 'avg', 'max', 'avgmax')
OUTPUT_FORMATS = ('NCHW', 'NHWC')


@register_notrace_function
def unroll(x: torch.Tensor, grid: Tuple[int, int], steps: int) -> torch.Tensor:
    """Reorder tokens (B, H * W, C) of a row-major ``grid`` so that, ``steps`` times over, the four positions of
    each 2x2 block come first as four contiguous quarters (the pooling at a stage change is then a max over them).

    >>> unroll(torch.arange(16.).view(1, 16, 1), (4, 4), 1).flatten().tolist()[:4]
    [0.0, 2.0, 8.0, 10.0]
    """
    B, _, C = x.shape
    h, w = grid
    x = x.reshape(B, h, w, C)
    for _ in range(steps):
        h, w = h // Q_STRIDE, w // Q_STRIDE
        x = x.reshape(-1, h, Q_STRIDE, w, Q_STRIDE, C).permute(0, 2, 4, 1, 3, 5).flatten(0, 2)
    return x.reshape(B, -1, C)


@register_notrace_function
def reroll(x: torch.Tensor, grid: Tuple[int, int], steps: int) -> torch.Tensor:
    """Undo :func:`unroll` of ``steps`` steps on tokens (B, N, C) whose unrolled grid is ``grid``: a (B, H, W, C)
    map in row-major order.

    >>> t = torch.randn(1, 64, 3)
    >>> torch.equal(reroll(unroll(t, (8, 8), 3), (8, 8), 3).reshape(1, 64, 3), t)
    True
    """
    B, _, C = x.shape
    h, w = grid[0] // Q_STRIDE ** steps, grid[1] // Q_STRIDE ** steps
    x = x.reshape(B * Q_STRIDE ** (2 * steps), h, w, C)
    for _ in range(steps):
        x = x.reshape(-1, Q_STRIDE, Q_STRIDE, h, w, C).permute(0, 3, 1, 4, 2, 5)
        h, w = h * Q_STRIDE, w * Q_STRIDE
        x = x.reshape(-1, h, w, C)
    return x


@register_notrace_function
def window_pos_embed(pos_embed: torch.Tensor, pos_embed_win: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
    """The abswin position embedding of a token ``grid``: the global table (1, C, h, w) resized to the grid
    (bicubic, antialiased) plus the mask-unit table (1, C, 8, 8) tiled over it; tokens (1, H * W, C).

    >>> window_pos_embed(torch.zeros(1, 4, 14, 14), torch.ones(1, 4, 8, 8), (16, 8)).shape
    torch.Size([1, 128, 4])
    """
    win = pos_embed_win.tile(grid[0] // pos_embed_win.shape[-2], grid[1] // pos_embed_win.shape[-1])
    glob = F.interpolate(pos_embed, size=win.shape[-2:], mode='bicubic', antialias=True)
    return (glob + win).flatten(2).transpose(1, 2)


class MaskUnitAttention(nn.Module):
    """Attention on unrolled tokens, within each mask unit (``use_mask_unit_attn``) or over all tokens, with the
    queries max-pooled by ``q_stride`` (flattened, 4 for 2x2) at a stage change. ``window_size`` is the flattened
    mask unit after that pooling."""

    def __init__(self, dim: int, dim_out: int, heads: int, q_stride: int = 1, window_size: int = 0,
                 use_mask_unit_attn: bool = False) -> None:
        super().__init__()
        self.dim = dim
        self.dim_out = dim_out
        self.heads = check_heads(dim_out, heads, 'width')
        self.q_stride = q_stride
        self.head_dim = dim_out // heads
        self.window_size = window_size
        self.use_mask_unit_attn = use_mask_unit_attn
        self.qkv = nn.Linear(dim, 3 * dim_out)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        if self.use_mask_unit_attn:
            # unrolled order: the position inside a unit is the outer index, the unit the inner one
            windows = N // (self.q_stride * self.window_size)
            qkv = self.qkv(x).reshape(B, -1, windows, 3, self.heads, self.head_dim).permute(3, 0, 4, 2, 1, 5)
            q, k, v = qkv.unbind(0)
            if self.q_stride > 1:
                q = q.view(B, self.heads, windows, self.q_stride, -1, self.head_dim).amax(dim=3)
            # heads and units folded into one batch dimension: ONNX has no 5-D attention
            q, k, v = (t.flatten(1, 2) for t in (q, k, v))
            x = F.scaled_dot_product_attention(q, k, v).view(B, self.heads, windows, -1, self.head_dim)
            x = x.transpose(1, 3).reshape(B, -1, self.dim_out)
        else:
            q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            if self.q_stride > 1:
                q = q.view(B, self.heads, self.q_stride, -1, self.head_dim).amax(dim=2)
            x = F.scaled_dot_product_attention(q, k, v)
            x = x.transpose(1, 2).reshape(B, -1, self.dim_out)
        return self.proj(x)


class HieraBlock(nn.Module):
    """Pre-norm block; at a stage change the residual is widened (a linear ``proj`` of the normed tokens, or, with
    ``use_expand_proj=False``, max and mean pools side by side) and pooled like the queries."""

    def __init__(self, dim: int, dim_out: int, heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 init_values: Optional[float] = None, q_stride: int = 1, window_size: int = 0,
                 use_expand_proj: bool = True, use_mask_unit_attn: bool = False) -> None:
        super().__init__()
        self.dim = dim
        self.dim_out = dim_out
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.do_expand = dim != dim_out
        if self.do_expand and not use_expand_proj and dim_out != 2 * dim:
            raise ValueError(f'use_expand_proj=False widens by concatenating two pools: it needs dim_mul=2, '
                             f'got {dim} -> {dim_out} channels')
        self.proj = nn.Linear(dim, dim_out) if self.do_expand and use_expand_proj else None
        self.attn = MaskUnitAttention(dim, dim_out, heads, q_stride, window_size, use_mask_unit_attn)
        self.ls1 = LayerScale(dim_out, init_values) if init_values is not None else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = Mlp(dim_out, int(dim_out * mlp_ratio), act_layer='gelu')
        self.ls2 = LayerScale(dim_out, init_values) if init_values is not None else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_norm = self.norm1(x)
        if self.do_expand:
            q_stride = self.attn.q_stride
            if self.proj is not None:
                x = self.proj(x_norm)
                x = x.view(x.shape[0], q_stride, -1, x.shape[-1]).amax(dim=1)
            else:
                pooled = x.view(x.shape[0], q_stride, -1, x.shape[-1])
                x = torch.cat([pooled.amax(dim=1), pooled.mean(dim=1)], dim=-1)
        x = x + self.drop_path1(self.ls1(self.attn(x_norm)))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class PatchEmbed(nn.Module):
    """A strided convolution (``proj``) to tokens (B, H * W, C)."""

    def __init__(self, in_chans: int, embed_dim: int, kernel: int = 7, stride: int = PATCH_STRIDE,
                 padding: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel, stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class ClNormClassifierHead(nn.Module):
    """Pool tokens (B, N, C) over N, LayerNorm (``norm``), dropout and a linear classifier (``fc``).

    >>> ClNormClassifierHead(8, 3)(torch.ones(2, 5, 8)).shape
    torch.Size([2, 3])
    """

    def __init__(self, in_features: int, num_classes: int, pool_type: str = 'avg', drop_rate: float = 0.0) -> None:
        super().__init__()
        self.pool_type = check_choice('global_pool', pool_type, POOL_TYPES)
        self.in_features = self.num_features = in_features
        self.norm: nn.Module = nn.LayerNorm(in_features, eps=1e-6)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int, pool_type: Optional[str] = None, reset_other: bool = False,
              in_features: Optional[int] = None) -> None:
        """A fresh classifier; optionally another pooling, no norm (``reset_other``) and another input width."""
        if pool_type is not None:
            self.pool_type = check_choice('global_pool', pool_type, POOL_TYPES)
        if reset_other:
            self.norm = nn.Identity()
        if in_features is not None:
            if not isinstance(self.norm, nn.Identity) and in_features != self.in_features:
                raise ValueError(f'in_features={in_features} differs from the norm width {self.in_features}; '
                                 'the norm must be removed first (reset_other=True)')
            self.in_features = self.num_features = in_features
        param = next(self.parameters(), None)
        fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if param is not None:
            fc = fc.to(param.device, param.dtype)
        self.fc = fc.train(self.training)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.pool_type == 'avg':
            x = x.mean(dim=1)
        elif self.pool_type == 'max':
            x = x.amax(dim=1)
        elif self.pool_type == 'avgmax':
            x = 0.5 * (x.amax(dim=1) + x.mean(dim=1))
        x = self.drop(self.norm(x))
        return x if pre_logits else self.fc(x)


def _check_img_size(img_size: Any) -> Tuple[int, int]:
    size = to_2tuple(img_size)
    if (len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) for s in size)
            or any(s < INPUT_MULTIPLE or s % INPUT_MULTIPLE for s in size)):
        raise ValueError(f'img_size={img_size!r} is invalid for Hiera: each side must be a multiple of '
                         f'{INPUT_MULTIPLE} (>= {INPUT_MULTIPLE}), e.g. 224')
    return size


class Hiera(HeadApi, nn.Module):
    """Patch embedding (stride 4), ``sum(stages)`` blocks in stages whose first block halves the token grid (up to
    ``q_pool`` times) while widening by ``dim_mul`` and adding heads by ``head_mul``, a pooled norm + linear head.

    >>> m = Hiera(img_size=64, embed_dim=16, num_heads=1, stages=(1, 1, 1, 1), num_classes=3)
    >>> m(torch.ones(1, 3, 64, 96)).shape, [f['reduction'] for f in m.feature_info]
    (torch.Size([1, 3]), [4, 8, 16, 32])
    """

    def __init__(self, img_size: Union[int, Tuple[int, int]] = 224, in_chans: int = 3, embed_dim: int = 96,
                 num_heads: int = 1, num_classes: int = 1000, global_pool: str = 'avg',
                 stages: Sequence[int] = (2, 3, 16, 3), q_pool: int = 3,
                 mask_unit_attn: Sequence[bool] = (True, True, False, False), use_expand_proj: bool = True,
                 dim_mul: float = 2.0, head_mul: float = 2.0, mlp_ratio: float = 4.0, drop_path_rate: float = 0.0,
                 init_values: Optional[float] = None, drop_rate: float = 0.0, abs_win_pos_embed: bool = False,
                 global_pos_size: Tuple[int, int] = (14, 14), output_stride: Optional[int] = None) -> None:
        super().__init__()
        stages = check_int_tuple('stages', stages)
        check_int('embed_dim', embed_dim, 1)
        check_int('num_heads', num_heads, 1)
        if len(stages) != 4 or q_pool != 3:
            raise ValueError(f'Hiera has four stages with a 2x2 pooling at each change (q_pool=3); got '
                             f'stages={stages}, q_pool={q_pool!r}')
        if len(mask_unit_attn) != len(stages):
            raise ValueError(f'mask_unit_attn needs one flag per stage ({len(stages)}), got {mask_unit_attn!r}')
        check_choice('global_pool', global_pool, POOL_TYPES)
        if output_stride not in (None, 32):
            raise ValueError(f'output_stride={output_stride!r} is not supported: Hiera has stride 32 only')
        self.img_size = _check_img_size(img_size)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.q_pool = q_pool
        self.grad_checkpointing = False
        self.stage_ends = [sum(stages[:i + 1]) - 1 for i in range(len(stages))]
        self.num_unrolls = len(stages) - 1
        self.abs_win_pos_embed = abs_win_pos_embed

        self.patch_embed = PatchEmbed(in_chans, embed_dim)
        grid = self.grid_size = (self.img_size[0] // PATCH_STRIDE, self.img_size[1] // PATCH_STRIDE)
        if abs_win_pos_embed:
            # kept NCHW: resized and tiled as maps before becoming tokens
            self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *to_2tuple(global_pos_size)))
            self.pos_embed_win: Optional[nn.Parameter] = nn.Parameter(
                torch.zeros(1, embed_dim, MASK_UNIT, MASK_UNIT))
        else:
            self.pos_embed = nn.Parameter(torch.zeros(1, grid[0] * grid[1], embed_dim))
            self.pos_embed_win = None

        flat_q_stride = Q_STRIDE * Q_STRIDE
        flat_mu = MASK_UNIT * MASK_UNIT
        q_pool_blocks = [end + 1 for end in self.stage_ends[:q_pool]]
        depth = sum(stages)
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList()
        self.feature_info: List[Dict[str, Any]] = []
        stage = 0
        dim, heads = embed_dim, num_heads
        for i in range(depth):
            dim_out = dim
            # attention kind lags the stage change by one block: the first (pooling) block still looks at units
            use_mask_unit_attn = mask_unit_attn[stage]
            if i - 1 in self.stage_ends:
                dim_out = int(dim * dim_mul)
                heads = int(heads * head_mul)
                stage += 1
                if i in q_pool_blocks:
                    flat_mu //= flat_q_stride
            self.blocks.append(HieraBlock(
                dim, dim_out, heads, mlp_ratio=mlp_ratio, drop_path=rates[i], init_values=init_values,
                q_stride=flat_q_stride if i in q_pool_blocks else 1, window_size=flat_mu,
                use_expand_proj=use_expand_proj, use_mask_unit_attn=use_mask_unit_attn))
            dim = dim_out
            if i in self.stage_ends:
                self.feature_info.append(dict(num_chs=dim, reduction=2 ** (stage + 2), module=f'blocks.{i}'))
        self.num_features = dim
        self.head = ClNormClassifierHead(dim, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self.head_hidden_size = self.head.num_features
        self.init_weights()

    def init_weights(self) -> None:
        """Initialize for training from scratch (truncated-normal tables and linears), as timm does."""
        trunc_normal_(self.pos_embed, std=0.02)
        if self.pos_embed_win is not None:
            trunc_normal_(self.pos_embed_win, std=0.02)
        trunc_normal_linears_(self)

    # ---- the model contract -------------------------------------------------------------------------------------

    def no_weight_decay(self) -> List[str]:
        """The position tables (a list, as timm's Hiera returns).

        >>> SPEC.build('hiera_small_abswin_256').no_weight_decay()
        ['pos_embed', 'pos_embed_win']
        """
        return ['pos_embed', 'pos_embed_win'] if self.pos_embed_win is not None else ['pos_embed']

    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter-group regexes: the embedding and position tables, then one group per block."""
        return dict(stem=r'^pos_embed|pos_embed_win|patch_embed',
                    blocks=[(r'^blocks\.(\d+)', None), (r'^norm', (99999,))])

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier (``num_classes=0`` removes it); ``global_pool`` '' keeps the tokens.

        >>> m = SPEC.build('hiera_tiny_224'); m.reset_classifier(0, ''); m(torch.ones(1, 3, 64, 64)).shape
        torch.Size([1, 4, 768])
        """
        check_int('num_classes', num_classes, 0)
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)
        self.head_hidden_size = self.head.num_features

    def set_input_size(self, img_size: Union[int, Tuple[int, int]]) -> None:
        """Make ``img_size`` the reference size: the learned position table is resampled to its token grid
        (any size runs without this; it saves the resampling at run time).

        >>> m = SPEC.build('hiera_tiny_224'); m.set_input_size(256); m.pos_embed.shape
        torch.Size([1, 4096, 96])
        """
        size = _check_img_size(img_size)
        grid = (size[0] // PATCH_STRIDE, size[1] // PATCH_STRIDE)
        if self.pos_embed_win is None and grid != self.grid_size:
            self.pos_embed = resized_pos_table(self.pos_embed, grid, self.grid_size, num_prefix_tokens=0)
        self.img_size, self.grid_size = size, grid

    # ---- forward ------------------------------------------------------------------------------------------------

    def _embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[Any, Any]]:
        x = self.patch_embed(x)
        grid = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)
        if self.pos_embed_win is not None:
            pos_embed = window_pos_embed(self.pos_embed, self.pos_embed_win, grid)
        else:
            pos_embed = resample_abs_pos_embed(self.pos_embed, grid, self.grid_size, num_prefix_tokens=0)
        return unroll(x + pos_embed, grid, self.num_unrolls), grid

    def _run_block(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return run_checkpointed(self.grad_checkpointing, block, x)

    def _stage_map(self, x: torch.Tensor, stage: int, grid: Tuple[Any, Any]) -> torch.Tensor:
        pooled = min(stage, self.q_pool)
        scale = Q_STRIDE ** pooled
        return reroll(x, (grid[0] // scale, grid[1] // scale), self.num_unrolls - pooled)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last block's tokens (B, H / 32 * W / 32, C), in row-major order once every unroll is consumed.

        >>> SPEC.build('hiera_tiny_224').forward_features(torch.ones(1, 3, 64, 96)).shape
        torch.Size([1, 6, 768])
        """
        x, _ = self._embed(x)
        for block in self.blocks:
            x = self._run_block(block, x)
        return x

    def forward_intermediates(self, x: torch.Tensor, indices: IndicesArg = None, norm: bool = False,
                              stop_early: bool = True, output_fmt: str = 'NCHW', intermediates_only: bool = False,
                              coarse: bool = True
                              ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Rerolled maps of the stage ends (``coarse``, the default) or of any blocks selected by ``indices``
        (timm's semantics), NCHW or NHWC, and the last block's tokens unless ``intermediates_only``.

        As timm's, ``stop_early`` defaults to True (the blocks after the last selected one are skipped); ``norm``
        is refused (the head's norm follows the pooling).

        >>> m = SPEC.build('hiera_tiny_224')
        >>> [t.shape for t in m.forward_intermediates(torch.ones(1, 3, 64, 64), 2, intermediates_only=True)]
        [torch.Size([1, 384, 4, 4]), torch.Size([1, 768, 2, 2])]
        """
        if norm:
            raise ValueError('norm=True is not supported by Hiera: its norm follows the pooling in the head')
        check_choice('output_fmt', output_fmt, OUTPUT_FORMATS)
        if coarse:
            take, last = feature_take_indices(len(self.stage_ends), indices)
            take = [self.stage_ends[i] for i in take]
            last = self.stage_ends[last]
        else:
            take, last = feature_take_indices(len(self.blocks), indices)
        x, grid = self._embed(x)
        blocks = list(self.blocks)[:last + 1] if stop_early else list(self.blocks)
        intermediates = []
        stage = 0
        for i, block in enumerate(blocks):
            x = self._run_block(block, x)
            if i in take:
                level = self._stage_map(x, stage, grid)
                intermediates.append(level.permute(0, 3, 1, 2) if output_fmt == 'NCHW' else level)
            if i in self.stage_ends:
                stage += 1
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(self, indices: IndicesArg = 1, prune_norm: bool = False, prune_head: bool = True,
                                  coarse: bool = True) -> List[int]:
        """Drop the blocks after the last of ``indices`` (stages when ``coarse``) and the head; returns the indices.

        >>> m = SPEC.build('hiera_tiny_224'); m.prune_intermediate_layers((0, 1)), len(m.blocks)
        ([0, 1], 3)
        """
        if coarse:
            take, last = feature_take_indices(len(self.stage_ends), indices)
            num_chs = self.feature_info[last]['num_chs']
            last = self.stage_ends[last]
        else:
            take, last = feature_take_indices(len(self.blocks), indices)
            num_chs = self.blocks[last].dim_out
        prune_end = last < len(self.blocks) - 1
        self.blocks = self.blocks[:last + 1]
        if prune_end:
            self.num_features = num_chs
        if prune_head or prune_end:
            self.num_classes = 0
            self.head.reset(0, reset_other=True, in_features=self.num_features)
            self.head_hidden_size = self.head.num_features
        return take


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: Hiera) -> Dict[str, torch.Tensor]:
    """Adapt a checkpoint: the original release's layout (``model_state``, ``head.projection``, ``norm`` /
    ``encoder_norm``, ``pos_embed_abs``) to timm's, and a learned position table of another grid resampled to the
    model's (bicubic).

    >>> m = SPEC.build('hiera_tiny_224', img_size=256)
    >>> checkpoint_filter_fn(SPEC.build('hiera_tiny_224').state_dict(), m)['pos_embed'].shape
    torch.Size([1, 4096, 96])
    """
    state_dict = state_dict.get('model_state', state_dict)
    out: Dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if 'head.projection.' in key:
            key = key.replace('head.projection.', 'head.fc.')
        if key.startswith('encoder_norm.'):
            key = 'head.norm.' + key[len('encoder_norm.'):]
        elif key.startswith('norm.'):
            key = 'head.norm.' + key[len('norm.'):]
        if key == 'pos_embed_abs':
            key = 'pos_embed'
        if key == 'pos_embed' and model.pos_embed_win is None and value.shape != model.pos_embed.shape:
            value = square_pos_table_to(value, model.grid_size, num_prefix_tokens=0)
        out[key] = value
    return out


def _row(embed_dim: int, num_heads: int, stages: Tuple[int, ...], **kwargs: Any) -> Dict[str, Any]:
    return dict(embed_dim=embed_dim, num_heads=num_heads, stages=stages, **kwargs)


_ABSWIN = dict(abs_win_pos_embed=True, init_values=1e-5)

VARIANTS: Dict[str, Dict[str, Any]] = {
    'hiera_tiny_224': _row(96, 1, (1, 2, 7, 2)),
    'hiera_small_224': _row(96, 1, (1, 2, 11, 2)),
    'hiera_base_224': _row(96, 1, (2, 3, 16, 3)),
    'hiera_base_plus_224': _row(112, 2, (2, 3, 16, 3)),
    'hiera_large_224': _row(144, 2, (2, 6, 36, 4)),
    'hiera_huge_224': _row(256, 4, (2, 6, 36, 4)),
    'hiera_small_abswin_256': _row(96, 1, (1, 2, 11, 2), **_ABSWIN, global_pos_size=(16, 16), use_expand_proj=False),
    'hiera_base_abswin_256': _row(96, 1, (2, 3, 16, 3), **_ABSWIN),
}


SPEC = FamilySpec(
    name='hiera', model=Hiera, variants=VARIANTS, default_cfg=DEFAULT_CFG,
    feature_cls=('getter',), default_feature_cls='getter', output_strides=(32,),
    default_out_indices=None,  # timm's default: the four stage ends
    input_multiple=INPUT_MULTIPLE, min_input_size=INPUT_MULTIPLE, img_size_arg='img_size',
    size_args=('stages', 'global_pos_size'),
    export=('torch.export', 'onnx', 'compile'),
    checkpoint_filter=checkpoint_filter_fn)
