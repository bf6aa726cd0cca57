"""Swin Transformer (Liu et al., 2021): shifted-window attention in a four-stage hierarchy.

Parameter and buffer names follow timm's ``SwinTransformer``, so its checkpoints load unchanged. The model takes
any input whose sides are multiples of the patch size: feature maps that do not tile into windows are padded
(bottom/right) inside each block, odd maps are padded before patch merging, and the shifted-window attention mask is
rebuilt for a size other than the one given at creation, exactly as timm's ``strict_img_size=False`` model does.
Window sizes and shifts are fixed at creation from ``img_size`` (a stage whose map is no larger than the window
attends over the whole map without shifting), as in timm.

>>> m = SPEC.build('swin_tiny_patch4_window7_224', num_classes=0)
>>> m.forward_features(torch.randn(1, 3, 224, 224)).shape
torch.Size([1, 7, 7, 768])
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from ..checks import check_choice, check_int
from ..features.notrace import register_notrace_function
from ..family import FamilySpec
from ..layers import ClassifierHead, DropPath, drop_path_rates, trunc_normal_
from ..layers.head_api import HeadApi, reset_classifier_head
from ..layers.intermediates import IndicesArg, feature_take_indices, prune_head_after
from ..layers.mlp import Mlp
from ..layers.patch_embed import PatchEmbed
from ..layers.pooling import POOL_TYPES
from ..layers.rel_pos import geometric_positions, relative_position_index
from ..layers.stage_intermediates import run_sequence
from ..layers.weight_init import trunc_normal_linears_

OUTPUT_STRIDES = (32,)
DEFAULT_CFG = dict(
    input_size=(3, 224, 224), interpolation='bicubic', crop_pct=0.9, crop_mode='center',
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), first_conv='patch_embed.proj', classifier='head.fc')

VARIANTS: Dict[str, Dict[str, Any]] = {
    'swin_tiny_patch4_window7_224': dict(
        patch_size=4, window_size=7, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    'swin_small_patch4_window7_224': dict(
        patch_size=4, window_size=7, embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    'swin_base_patch4_window7_224': dict(
        patch_size=4, window_size=7, embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
    'swin_base_patch4_window12_384': dict(
        img_size=384, patch_size=4, window_size=12, embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
    'swin_large_patch4_window7_224': dict(
        patch_size=4, window_size=7, embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48)),
    'swin_large_patch4_window12_384': dict(
        img_size=384, patch_size=4, window_size=12, embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48)),
    # Swin-S3 (searched windows per stage)
    'swin_s3_tiny_224': dict(
        patch_size=4, window_size=(7, 7, 14, 7), embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    'swin_s3_small_224': dict(
        patch_size=4, window_size=(14, 14, 14, 7), embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    'swin_s3_base_224': dict(
        patch_size=4, window_size=(7, 7, 14, 7), embed_dim=96, depths=(2, 2, 30, 2), num_heads=(3, 6, 12, 24)),
}

Pair = Tuple[int, int]
# the original implementation masks cross-region attention with -100 rather than -inf; outputs depend on it
_MASK_VALUE = -100.0


def _pair(value: Any, name: str) -> Pair:
    """A positive int or a pair of positive ints as ``(h, w)``; anything else raises naming ``name``."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        pair = tuple(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        pair = (value, value)
    else:
        raise TypeError(f'{name} must be an int or an (h, w) pair of ints, got {value!r}')
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair):
        raise ValueError(f'{name} must hold positive ints, got {value!r}')
    return pair


def _stage_window_sizes(window_size: Any, num_stages: int) -> Tuple[Pair, ...]:
    """One ``(h, w)`` window per stage from an int, an ``(h, w)`` pair, or one int/pair per stage."""
    per_stage = (isinstance(window_size, (list, tuple)) and len(window_size) == num_stages
                 and not (num_stages == 2 and all(isinstance(w, int) for w in window_size)))
    if per_stage:
        return tuple(_pair(w, f'window_size[{i}]') for i, w in enumerate(window_size))
    if isinstance(window_size, (list, tuple)) and len(window_size) not in (2, num_stages):
        raise ValueError(f'window_size={window_size!r}: give an int, an (h, w) pair, or one per stage '
                         f'({num_stages} stages)')
    return (_pair(window_size, 'window_size'),) * num_stages


def _on_meta(device: Optional[torch.device]) -> bool:
    # Buffers built on the meta device are recomputed after loading (init_non_persistent_buffers); computing them
    # there would only cost time, as meta arithmetic runs through torch's Python references.
    return torch.empty(0, device=device).is_meta


def window_partition(x: torch.Tensor, window: Pair) -> torch.Tensor:
    """Split an NHWC map (sides multiples of the window) into windows of tokens, ``(B * nW, wh * ww, C)``.

    >>> window_partition(torch.zeros(2, 4, 6, 8), (2, 3)).shape
    torch.Size([8, 6, 8])
    """
    b, h, w, c = x.shape
    x = x.view(b, h // window[0], window[0], w // window[1], window[1], c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window[0] * window[1], c)


def window_reverse(windows: torch.Tensor, window: Pair, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: windows of tokens back to an NHWC map of ``height x width``.

    >>> x = torch.randn(2, 4, 6, 8)
    >>> torch.equal(window_reverse(window_partition(x, (2, 3)), (2, 3), 4, 6), x)
    True
    """
    c = windows.shape[-1]
    x = windows.view(-1, height // window[0], width // window[1], window[0], window[1], c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, c)


def shifted_window_mask(height: int, width: int, window: Pair, shift: Pair, device: Optional[torch.device] = None,
                        dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Additive mask ``(nW, N, N)`` for shifted windows on a padded ``height x width`` map.

    After the cyclic shift a window may hold tokens from up to four regions that are not neighbours in the image;
    tokens of different regions must not attend to each other.

    >>> shifted_window_mask(4, 4, (2, 2), (1, 1))[-1, 0]
    tensor([   0., -100., -100., -100.])
    """
    if _on_meta(device):
        count, area = (height // window[0]) * (width // window[1]), window[0] * window[1]
        return torch.empty(count, area, area, dtype=dtype or torch.get_default_dtype(), device='meta')

    def region(size: int, win: int, sft: int) -> torch.Tensor:
        ids = torch.zeros(size, device=device, dtype=torch.long)
        if sft > 0:
            ids[size - win:] = 1
            ids[size - sft:] = 2
        return ids

    labels = region(height, window[0], shift[0])[:, None] * 3 + region(width, window[1], shift[1])[None, :]
    labels = window_partition(labels[None, :, :, None], window).squeeze(-1)
    different = labels[:, None, :] != labels[:, :, None]
    zeros = torch.zeros(different.shape, device=device, dtype=dtype or torch.get_default_dtype())
    return zeros.masked_fill(different, _MASK_VALUE)


@register_notrace_function
def pad_to_multiple(x: torch.Tensor, multiple: Pair) -> torch.Tensor:
    """Zero-pad an NHWC map at the bottom and right so its sides are multiples of ``multiple``.

    Kept out of FX graphs so that the amounts, which depend on the input size, are not frozen into them.

    >>> pad_to_multiple(torch.ones(1, 5, 7, 2), (2, 4)).shape
    torch.Size([1, 6, 8, 2])
    """
    pad_h = (multiple[0] - x.shape[1] % multiple[0]) % multiple[0]
    pad_w = (multiple[1] - x.shape[2] % multiple[1]) % multiple[1]
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, 0, 0, pad_w, 0, pad_h))


@register_notrace_function
def select_window_mask(x: torch.Tensor, cached: torch.Tensor, cached_size: Pair, window: Pair,
                       shift: Pair) -> torch.Tensor:
    """The cached shifted-window mask when ``x`` (padded NHWC) has the size it was built for, else a new one.

    >>> m = shifted_window_mask(14, 14, (7, 7), (3, 3))
    >>> select_window_mask(torch.zeros(1, 14, 14, 1), m, (14, 14), (7, 7), (3, 3)) is m
    True
    """
    if (x.shape[1], x.shape[2]) == tuple(cached_size):
        return cached
    return shifted_window_mask(x.shape[1], x.shape[2], window, shift, device=x.device, dtype=x.dtype)


def _linear_weights(src_pos: torch.Tensor, dst_pos: torch.Tensor) -> torch.Tensor:
    """``(len(dst), len(src))`` matrix of linear interpolation weights, clamped to the end samples."""
    last = src_pos.shape[0] - 1
    right = torch.bucketize(dst_pos, src_pos).clamp(max=last)
    left = (right - 1).clamp(0, last)
    to_left = (dst_pos - src_pos[left]).clamp(min=0)
    to_right = (src_pos[right] - dst_pos).clamp(min=0)
    both_zero = (to_left == 0) & (to_right == 0)
    to_left = torch.where(both_zero, torch.ones_like(to_left), to_left)
    to_right = torch.where(both_zero, torch.ones_like(to_right), to_right)
    total = to_left + to_right
    weights = torch.zeros(dst_pos.shape[0], src_pos.shape[0])
    rows = torch.arange(dst_pos.shape[0])
    weights.index_put_((rows, left), to_right / total, accumulate=True)
    weights.index_put_((rows, right), to_left / total, accumulate=True)
    return weights


def resize_relative_position_table(table: torch.Tensor, new_window: Pair,
                                   old_window: Optional[Pair] = None) -> torch.Tensor:
    """Resample a ``((2h-1)*(2w-1), heads)`` bias table to another window, with timm's geometric sampling.

    ``old_window`` defaults to the square window the table's length implies.

    >>> resize_relative_position_table(torch.randn(169, 3), (4, 4)).shape
    torch.Size([49, 3])
    """
    if table.ndim != 2:
        raise ValueError(f'a relative position table has shape (positions, heads), got {tuple(table.shape)}')
    new_window = _pair(new_window, 'new_window')
    dst = (2 * new_window[0] - 1, 2 * new_window[1] - 1)
    if old_window is None:
        side = math.isqrt(table.shape[0])
        if side * side == table.shape[0] and side % 2 == 1:
            src = (side, side)
        elif table.shape[0] == dst[0] * dst[1]:
            src = dst
        else:
            raise ValueError(f'cannot tell the window of a relative position table with {table.shape[0]} rows; '
                             f'pass old_window=(h, w)')
    else:
        old_window = _pair(old_window, 'old_window')
        src = (2 * old_window[0] - 1, 2 * old_window[1] - 1)
    if src[0] * src[1] != table.shape[0]:
        raise ValueError(f'a table for window {old_window} has {src[0] * src[1]} rows, got {table.shape[0]}')
    if src == dst:
        return table
    if table.is_meta:
        return table.new_empty(dst[0] * dst[1], table.shape[1])
    heads = table.shape[1]
    values = table.detach().float().cpu().reshape(src[0], src[1], heads).permute(2, 0, 1)
    axis_weights = []
    for s, d in zip(src, dst):
        src_pos = torch.tensor(geometric_positions(s, d), dtype=torch.float32)
        half = float(d // 2)
        axis_weights.append(_linear_weights(src_pos, torch.arange(-half, half + 0.1, 1.0)))
    resized = axis_weights[0] @ values @ axis_weights[1].T
    resized = resized.permute(1, 2, 0).reshape(dst[0] * dst[1], heads)
    return resized.to(device=table.device, dtype=table.dtype)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window, with a learned bias per relative offset and head.

    >>> WindowAttention(32, 2, (7, 7))(torch.zeros(3, 49, 32)).shape
    torch.Size([3, 49, 32])
    """

    def __init__(self, dim: int, num_heads: int, window_size: Pair, head_dim: Optional[int] = None,
                 qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.window_area = window_size[0] * window_size[1]
        head_dim = head_dim or dim // num_heads
        self.attn_drop = attn_drop
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size[0] - 1) * (2 * window_size[1] - 1), num_heads))
        self.register_buffer('relative_position_index', relative_position_index(window_size), persistent=False)
        self.qkv = nn.Linear(dim, head_dim * num_heads * 3, bias=qkv_bias)
        self.proj = nn.Linear(head_dim * num_heads, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def init_non_persistent_buffers(self) -> None:
        """Recompute the relative position index (after building on the meta device)."""
        self.relative_position_index = relative_position_index(
            self.window_size, device=self.relative_position_bias_table.device)

    def reset_parameters(self) -> None:
        """Draw a fresh bias table (training from scratch)."""
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def relative_position_bias(self) -> torch.Tensor:
        """The bias added to the attention logits, ``(heads, N, N)``."""
        # index with the buffer itself (no reshaping) so FX graphs read it from the module instead of baking it in
        return self.relative_position_bias_table[self.relative_position_index].permute(2, 0, 1)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.relative_position_bias()
        drop = self.attn_drop if self.training else 0.0
        if mask is None:
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(0), dropout_p=drop)
        else:
            # windows are image-major, so tiling the (window, head) bias over the batch lines up; a 4-D mask keeps
            # SDPA on its fused kernels (a 5-D broadcast one falls back to the slow reference path on CPU)
            bias = (bias.unsqueeze(0) + mask.unsqueeze(1)).repeat(b // mask.shape[0], 1, 1, 1)
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=drop)
        x = x.transpose(1, 2).reshape(b, n, -1)
        return self.proj_drop(self.proj(x))


def block_window_and_shift(resolution: Pair, window_size: Pair, shift: bool,
                           always_partition: bool = False) -> Tuple[Pair, Pair]:
    """The window and shift of a block on a ``resolution`` map: a map no larger than the window is attended as one
    window and not shifted, unless ``always_partition``.

    >>> block_window_and_shift((4, 16), (7, 7), shift=True)
    ((4, 7), (0, 3))
    """
    if always_partition:
        return window_size, (tuple(w // 2 for w in window_size) if shift else (0, 0))
    window = tuple(min(r, w) for r, w in zip(resolution, window_size))
    return window, tuple(0 if (not shift or r <= w) else w // 2 for r, w in zip(resolution, window))


class SwinTransformerBlock(nn.Module):
    """(Shifted-)window attention and an MLP, each residual, on an NHWC map.

    ``input_resolution`` (the map size at creation) fixes the window and shift: a map no larger than the window
    is attended as one window and not shifted, unless ``always_partition``.

    >>> SwinTransformerBlock(32, (14, 14), 2, (7, 7), shift=True)(torch.zeros(1, 14, 14, 32)).shape
    torch.Size([1, 14, 14, 32])
    """

    def __init__(self, dim: int, input_resolution: Pair, num_heads: int, window_size: Pair, shift: bool = False,
                 head_dim: Optional[int] = None, always_partition: bool = False, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, proj_drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.input_resolution = input_resolution
        window, shift_size = block_window_and_shift(input_resolution, window_size, shift, always_partition)
        self.window_size: Pair = window
        self.shift_size: Pair = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window, head_dim=head_dim, qkv_bias=qkv_bias,
                                    attn_drop=attn_drop, proj_drop=proj_drop)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        # the mask is built for the padded creation-time map; other sizes get theirs in select_window_mask
        self.mask_size: Pair = tuple(math.ceil(r / w) * w for r, w in zip(input_resolution, window))
        self.register_buffer('attn_mask', self._build_mask(None, None), persistent=False)

    def _build_mask(self, device: Optional[torch.device], dtype: Optional[torch.dtype]) -> Optional[torch.Tensor]:
        if not any(self.shift_size):
            return None
        return shifted_window_mask(self.mask_size[0], self.mask_size[1], self.window_size, self.shift_size,
                                   device=device, dtype=dtype)

    def init_non_persistent_buffers(self) -> None:
        """Recompute the shifted-window mask (after building on the meta device)."""
        # the loader may already have given the buffer its place; the norm's weight says where the block lives
        like = self.attn_mask if self.attn_mask is not None and not self.attn_mask.is_meta else self.norm1.weight
        self.attn_mask = self._build_mask(like.device, like.dtype)

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        _, height, width, channels = x.shape
        shifted = any(self.shift_size)
        if shifted:
            x = torch.roll(x, shifts=(-self.shift_size[0], -self.shift_size[1]), dims=(1, 2))
        # timm pads after the roll, so the mask regions are laid out on the padded map
        x = pad_to_multiple(x, self.window_size)
        padded_h, padded_w = x.shape[1], x.shape[2]
        mask = None
        if shifted:
            mask = select_window_mask(x, self.attn_mask, self.mask_size, self.window_size, self.shift_size)
        windows = self.attn(window_partition(x, self.window_size), mask=mask)
        x = window_reverse(windows, self.window_size, padded_h, padded_w)[:, :height, :width, :]
        if shifted:
            x = torch.roll(x, shifts=self.shift_size, dims=(1, 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self._attention(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """Halve an NHWC map by concatenating each 2x2 neighbourhood (odd sides zero-padded), norm, then project; with
    ``norm_last`` (Swin V2) project, then norm.

    >>> PatchMerging(8)(torch.zeros(1, 5, 6, 8)).shape
    torch.Size([1, 3, 3, 16])
    >>> PatchMerging(8, norm_last=True).norm.normalized_shape
    (16,)
    """

    def __init__(self, dim: int, out_dim: Optional[int] = None, norm_last: bool = False) -> None:
        super().__init__()
        self.out_dim = out_dim or 2 * dim
        self.norm_last = norm_last
        # registered in the order they run, so that state_dict keys come in timm's order
        if not norm_last:
            self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, self.out_dim, bias=False)
        if norm_last:
            self.norm = nn.LayerNorm(self.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_to_multiple(x, (2, 2))
        b, h, w, c = x.shape
        # channel order (row offset fastest) matches the checkpoints: x00, x10, x01, x11
        x = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)
        if self.norm_last:
            return self.norm(self.reduction(x))
        return self.reduction(self.norm(x))


class SwinTransformerStage(nn.Module):
    """Optional patch merging (stages after the first) followed by alternating plain and shifted blocks.

    ``block_args`` go to every block (``head_dim``, ``mlp_ratio``, ...); ``block_layer`` and ``merge_layer`` default
    to Swin V1's (Swin V2 passes its own).
    """

    def __init__(self, dim: int, out_dim: int, input_resolution: Pair, depth: int, downsample: bool,
                 num_heads: int, window_size: Pair, drop_path: Sequence[float] = (),
                 block_layer: Optional[type] = None, merge_layer: Optional[type] = None, **block_args: Any) -> None:
        super().__init__()
        self.input_resolution = input_resolution
        self.output_resolution = tuple((r + 1) // 2 for r in input_resolution) if downsample else input_resolution
        self.grad_checkpointing = False
        block_layer = block_layer or SwinTransformerBlock
        self.downsample = (merge_layer or PatchMerging)(dim, out_dim) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[
            block_layer(out_dim, self.output_resolution, num_heads, window_size, shift=i % 2 == 1,
                        drop_path=drop_path[i] if drop_path else 0.0, **block_args)
            for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        checkpointed = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        return run_sequence(self.blocks, self.downsample(x), checkpointed)


class SwinTransformer(HeadApi, nn.Module):
    """Swin Transformer: patch embedding, four stages of window attention, final norm and classifier.

    ``forward_features`` returns the normed NHWC map at stride ``4 * 2**3``.

    >>> m = SwinTransformer(img_size=64, window_size=2, embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2))
    >>> m(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 1000])
    """

    checkpoint_stages = 'layers'

    def __init__(self, img_size: Union[int, Pair] = 224, patch_size: Union[int, Pair] = 4, in_chans: int = 3,
                 num_classes: int = 1000, global_pool: str = 'avg', embed_dim: int = 96,
                 depths: Sequence[int] = (2, 2, 6, 2), num_heads: Sequence[int] = (3, 6, 12, 24),
                 head_dim: Optional[int] = None, window_size: Any = 7, always_partition: bool = False,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_rate: float = 0.0, proj_drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.1) -> None:
        super().__init__()
        img_size = _pair(img_size, 'img_size')
        patch_size = _pair(patch_size, 'patch_size')
        _check_config(img_size, patch_size, in_chans, num_classes, global_pool, embed_dim, depths, num_heads,
                      head_dim, mlp_ratio)
        block_args = dict(head_dim=head_dim, always_partition=always_partition, mlp_ratio=mlp_ratio,
                          qkv_bias=qkv_bias, proj_drop=proj_drop_rate, attn_drop=attn_drop_rate)
        self._build(img_size, patch_size, in_chans, num_classes, global_pool, embed_dim, depths, num_heads,
                    _stage_window_sizes(window_size, len(depths)), drop_rate, drop_path_rate,
                    [block_args] * len(depths))

    def _build(self, img_size: Pair, patch_size: Pair, in_chans: int, num_classes: int, global_pool: str,
               embed_dim: int, depths: Sequence[int], num_heads: Sequence[int], windows: Sequence[Pair],
               drop_rate: float, drop_path_rate: float, stage_args: Sequence[Dict[str, Any]]) -> None:
        """Everything after the checks (shared with Swin V2): ``stage_args[i]`` goes to stage ``i``."""
        num_stages = len(depths)
        dims = [int(embed_dim * 2 ** i) for i in range(num_stages)]
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.output_fmt = 'NHWC'
        self.img_size = img_size
        self.num_features = self.head_hidden_size = dims[-1]
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, dims[0],
                                      norm_layer=nn.LayerNorm, output_fmt='NHWC')
        grid = tuple(s // p for s, p in zip(img_size, patch_size))
        rates = drop_path_rates(drop_path_rate, list(depths))
        stages, self.feature_info = [], []
        resolution, stride = grid, max(patch_size)
        for i in range(num_stages):
            stage = SwinTransformerStage(
                dims[max(i - 1, 0)], dims[i], resolution, depths[i], downsample=i > 0, num_heads=num_heads[i],
                window_size=windows[i], drop_path=rates[i], **stage_args[i])
            stages.append(stage)
            resolution = stage.output_resolution
            stride *= 2 if i > 0 else 1
            self.feature_info.append(dict(num_chs=dims[i], reduction=stride, module=f'layers.{i}'))
        self.layers = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(self.num_features)
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate,
                                   input_fmt='NHWC')
        self.head_hidden_size = self.num_features * self.head.global_pool.feat_mult()
        self._init_weights()

    def _init_weights(self) -> None:
        trunc_normal_linears_(self)

    def no_weight_decay(self) -> Set[str]:
        """Relative position tables are exempt from weight decay.

        >>> len(SwinTransformer(depths=(1,), num_heads=(3,)).no_weight_decay())
        1
        """
        return {n for n, _ in self.named_parameters() if 'relative_position_bias_table' in n}

    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter groups for layer-wise learning-rate decay (timm's regexes).

        >>> SwinTransformer(depths=(1,), num_heads=(3,)).group_matcher(coarse=True)['blocks']
        '^layers\\\\.(\\\\d+)'
        """
        return dict(
            stem=r'^patch_embed',
            blocks=r'^layers\.(\d+)' if coarse else [
                (r'^layers\.(\d+).downsample', (0,)),
                (r'^layers\.(\d+)\.\w+\.(\d+)', None),
                (r'^norm', (99999,)),
            ])

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier (``num_classes=0`` removes it) and optionally the pooling.

        >>> m = SwinTransformer(depths=(1,), num_heads=(3,)); m.reset_classifier(0, '')
        >>> m(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 56, 56, 96])
        """
        check_int('num_classes', num_classes, 0)
        if global_pool is not None:
            self.global_pool = check_choice('global_pool', global_pool, POOL_TYPES)
        # pruned to an earlier stage, the new head is sized for that stage's width (num_features)
        reset_classifier_head(self, num_classes, global_pool)

    def forward_intermediates(self, x: torch.Tensor, indices: IndicesArg = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = 'NCHW', intermediates_only: bool = False,
                              ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Stage outputs (NCHW, or NHWC on request) and, unless ``intermediates_only``, the final features.

        ``indices``: None = every stage, an int n = the last n, or a sequence (negatives count from the end).
        ``norm`` applies the final norm to the last stage's map when it is taken.

        >>> m = SwinTransformer(depths=(1, 1), num_heads=(3, 6))
        >>> [t.shape for t in m.forward_intermediates(torch.zeros(1, 3, 64, 64), intermediates_only=True)]
        [torch.Size([1, 96, 16, 16]), torch.Size([1, 192, 8, 8])]
        """
        if output_fmt not in ('NCHW', 'NHWC'):
            raise ValueError(f"output_fmt={output_fmt!r} is not supported; valid: 'NCHW', 'NHWC'")
        take, last = feature_take_indices(len(self.layers), indices)
        num_stages = len(self.layers)
        stages = self.layers[:last + 1] if stop_early else self.layers
        intermediates = []
        x = self.patch_embed(x)
        i = 0
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take:
                out = self.norm(x) if norm and i == num_stages - 1 else x
                intermediates.append(out.permute(0, 3, 1, 2) if output_fmt == 'NCHW' else out)
        if intermediates_only:
            return intermediates
        if i == num_stages - 1:
            # the final norm is sized for the last stage only
            x = self.norm(x)
        return x, intermediates

    def prune_intermediate_layers(self, indices: Union[int, Sequence[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop the stages after the last of ``indices`` (and the norm/head as requested); return the indices.

        >>> m = SwinTransformer(depths=(1, 1), num_heads=(3, 6))
        >>> m.prune_intermediate_layers([0]), len(m.layers), m.num_features
        ([0], 1, 96)
        """
        take, last = feature_take_indices(len(self.layers), indices)
        if prune_head_after(self, last, len(self.layers), prune_head) or prune_norm:
            self.norm = nn.Identity()
        self.layers = self.layers[:last + 1]
        return take

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Patch embedding, stages, final norm: an NHWC map.

        >>> SwinTransformer(depths=(1,), num_heads=(3,)).forward_features(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 8, 8, 96])
        """
        return self.norm(self.layers(self.patch_embed(x)))


def _check_config(img_size: Pair, patch_size: Pair, in_chans: Any, num_classes: Any, global_pool: Any,
                  embed_dim: Any, depths: Any, num_heads: Any, head_dim: Any, mlp_ratio: Any) -> None:
    """Reject constructor values that would fail later or silently build something else."""
    for name, value in (('in_chans', in_chans), ('embed_dim', embed_dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f'{name} must be a positive int, got {value!r}')
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f'num_classes must be an int >= 0 (0 = no classifier), got {num_classes!r}')
    if global_pool not in POOL_TYPES:
        raise ValueError(f'unknown global_pool {global_pool!r}; valid: {POOL_TYPES}')
    if any(s % p for s, p in zip(img_size, patch_size)):
        raise ValueError(f'img_size={img_size} must be a multiple of patch_size={patch_size}')
    if not isinstance(depths, (list, tuple)) or not depths or not all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in depths):
        raise ValueError(f'depths must be a non-empty sequence of positive ints, got {depths!r}')
    if not isinstance(num_heads, (list, tuple)) or len(num_heads) != len(depths):
        raise ValueError(f'num_heads must give one head count per stage ({len(depths)} stages), got {num_heads!r}')
    for i, heads in enumerate(num_heads):
        dim = int(embed_dim * 2 ** i)
        if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
            raise ValueError(f'num_heads[{i}] must be a positive int, got {heads!r}')
        if head_dim is None and dim % heads:
            raise ValueError(f'stage {i} has {dim} channels, not divisible by num_heads[{i}]={heads}; '
                             f'pick a divisor of {dim} or set head_dim')
    if head_dim is not None and (isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim < 1):
        raise ValueError(f'head_dim must be None or a positive int, got {head_dim!r}')
    if not isinstance(mlp_ratio, (int, float)) or isinstance(mlp_ratio, bool) or mlp_ratio <= 0:
        raise ValueError(f'mlp_ratio must be a positive number, got {mlp_ratio!r}')


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Fit a timm-layout Swin checkpoint to ``model``: drop computed buffers and resample relative position
    tables whose window differs (a model created with a small ``img_size`` shrinks the windows of late stages).

    >>> m = SPEC.build('swin_tiny_patch4_window7_224', img_size=112)
    >>> sd = SPEC.build('swin_tiny_patch4_window7_224').state_dict()
    >>> checkpoint_filter_fn(sd, m)['layers.3.blocks.0.attn.relative_position_bias_table'].shape
    torch.Size([49, 24])
    """
    out = {}
    suffix = '.relative_position_bias_table'
    for key, value in state_dict.items():
        if key.endswith('relative_position_index') or key.endswith('attn_mask'):
            continue
        if key.endswith(suffix):
            try:
                attn = model.get_submodule(key[:-len(suffix)])
            except AttributeError:
                attn = None  # pruned away by a feature wrapper; the loader skips the key
            if isinstance(attn, WindowAttention) and value.shape != attn.relative_position_bias_table.shape:
                value = resize_relative_position_table(value, attn.window_size)
        out[key] = value
    return out


def input_multiple(variant: str, row: Mapping[str, Any]) -> int:
    """The input sides a Swin (V1 or V2) variant takes are multiples of its patch (the windows are padded).

    >>> input_multiple('swin_tiny_patch4_window7_224', VARIANTS['swin_tiny_patch4_window7_224'])
    4
    """
    return max(_pair(row.get('patch_size', 4), 'patch_size'))


SPEC = FamilySpec(
    name='swin_transformer', model=SwinTransformer, variants=VARIANTS, default_cfg=DEFAULT_CFG,
    feature_cls=('getter', 'fx'), default_feature_cls='getter', output_strides=OUTPUT_STRIDES,
    input_multiple=input_multiple, img_size_arg='img_size',
    export=('torch.export', 'onnx', 'compile'),  # no dynamic_hw: symbolic window padding takes minutes to trace
    checkpoint_filter=checkpoint_filter_fn)
