"""MaxViT (Tu et al., 2022), CoAtNet (Dai et al., 2021) and timm's MaxxViT: convolutional stem, then four stages of
MBConv / ConvNeXt blocks mixed with attention, over the whole map (CoAtNet 'T' blocks) or over local windows and a
dilated grid (MaxViT 'M' blocks, 'PM' for the parallel variant).

Parameter names follow timm's ``MaxxVit``, so its checkpoints load unchanged. Inputs are taken at any size whose sides
are multiples of 32: the window and grid attention split each stage's map into the same number of partitions as at
the size the model was built for (``img_size``, partitions of ``img_size // partition_ratio``), so the partition size
follows the input, and relative position tables are resampled to it as timm's ``set_input_size`` does (CoAtNet's
full-map attention likewise). At the built size nothing is resampled and outputs are timm's.

>>> m = SPEC.build('test_maxvit', num_classes=0)
>>> m.forward_features(torch.randn(1, 3, 64, 64)).shape
torch.Size([1, 128, 2, 2])
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from ..checks import check_choice, check_int, check_int_tuple
from ..family import FamilySpec
from ..layers import BatchNormAct2d, ClassifierHead, DropPath, LayerNorm2d, SEModule, create_conv2d, drop_path_rates
from ..layers.activations import create_act_layer
from ..layers.head_api import HeadApi
from ..layers.helpers import make_divisible, to_2tuple
from ..layers.mlp import Mlp
from ..layers.norm_mlp_head import NormMlpClassifierHead
from ..layers.pooling import POOL_TYPES
from ..layers.rel_pos import RelPosBias, RelPosBiasTf, RelPosMlp
from ..layers.stage_intermediates import StagedFeatures, run_sequence
from ..layers.weight_init import normal_, trunc_normal_, uniform_
from .vision_transformer import LayerScale

OUTPUT_STRIDES = (32,)
INPUT_MULTIPLE = 32  # every stage halves the map, and the pooled shortcuts of stride-2 blocks need even maps
DEFAULT_CFG = dict(
    input_size=(3, 224, 224), pool_size=(7, 7), interpolation='bicubic', crop_pct=0.95, crop_mode='center',
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), first_conv='stem.conv1', classifier='head.fc', fixed_input_size=True)

Pair = Tuple[int, int]
BLOCK_TYPES = ('C', 'T', 'M', 'PM')
POOL_KINDS = ('max', 'max2', 'avg', 'avg2')
REL_POS_TYPES = ('bias', 'bias_tf', 'mlp', '')
NORMS_2D = ('batchnorm2d', 'layernorm2d')
WEIGHT_INITS = ('', 'normal', 'trunc_normal', 'xavier_normal', 'vit_eff')


# ---- block options (the row's ``conv`` and ``transformer`` dicts) -------------------------------------------------

@dataclass(frozen=True)
class ConvOptions:
    """Options of the convolution blocks; a row's ``conv`` dict overrides these defaults."""
    block_type: str = 'mbconv'  # or 'convnext'
    expand_ratio: float = 4.0
    expand_output: bool = True  # the expanded width follows the output (else the input) channels
    kernel_size: int = 3
    group_size: int = 1  # 1: depthwise
    pre_norm_act: bool = False
    output_bias: bool = True
    stride_mode: str = 'dw'  # where a stride-2 block downsamples: 'pool', '1x1' or 'dw'
    pool_type: str = 'avg2'
    downsample_pool_type: str = 'avg2'
    padding: str = ''  # 'same': TensorFlow padding of the ported weights
    attn_early: bool = False  # squeeze-excite before the second norm instead of after it
    attn_layer: str = 'se'
    attn_act_layer: str = 'silu'
    attn_ratio: float = 0.25
    init_values: Optional[float] = 1e-6  # ConvNeXt blocks' layer scale
    act_layer: str = 'gelu'
    norm_layer: str = ''  # '' -> batchnorm2d for MBConv, layernorm2d for ConvNeXt
    norm_layer_cl: str = ''
    norm_eps: Optional[float] = None  # None -> 1e-5 for MBConv, 1e-6 for ConvNeXt

    def resolved(self) -> 'ConvOptions':
        check_choice('conv block_type', self.block_type, ('mbconv', 'convnext'))
        check_choice('conv stride_mode', self.stride_mode,
                     ('pool', '1x1', 'dw') if self.block_type == 'mbconv' else ('pool', 'dw'))
        check_choice('conv pool_type', self.pool_type, POOL_KINDS)
        check_choice('conv downsample_pool_type', self.downsample_pool_type, POOL_KINDS)
        check_choice('conv padding', self.padding, ('', 'same'))
        check_choice('conv attn_layer', self.attn_layer, ('se', ''))
        mbconv = self.block_type == 'mbconv'
        norm = self.norm_layer or ('batchnorm2d' if mbconv else 'layernorm2d')
        check_choice('conv norm_layer', norm, NORMS_2D)
        eps = self.norm_eps if self.norm_eps is not None else (1e-5 if mbconv else 1e-6)
        return dataclasses.replace(self, norm_layer=norm, norm_eps=eps)


@dataclass(frozen=True)
class TransformerOptions:
    """Options of the attention blocks; a row's ``transformer`` dict overrides these defaults."""
    dim_head: int = 32
    head_first: bool = True  # q, k, v packed per head (else q of all heads, then k, then v)
    expand_ratio: float = 4.0
    expand_first: bool = True  # CoAtNet blocks widen in the attention (else in the output projection)
    shortcut_bias: bool = True
    attn_bias: bool = True
    attn_drop: float = 0.0
    proj_drop: float = 0.0
    pool_type: str = 'avg2'
    rel_pos_type: str = 'bias'
    rel_pos_dim: int = 512
    no_block_attn: bool = False  # MaxxViT-V2: grid attention only
    init_values: Optional[float] = None
    act_layer: str = 'gelu'
    norm_layer: str = 'layernorm2d'
    norm_layer_cl: str = 'layernorm'
    norm_eps: float = 1e-6

    def resolved(self) -> 'TransformerOptions':
        check_int('transformer dim_head', self.dim_head, 1)
        check_choice('transformer pool_type', self.pool_type, POOL_KINDS)
        check_choice('transformer rel_pos_type', self.rel_pos_type, REL_POS_TYPES)
        check_choice('transformer norm_layer', self.norm_layer, NORMS_2D)
        check_choice('transformer norm_layer_cl', self.norm_layer_cl, ('layernorm',))
        return self


def _options(cls: type, name: str, values: Optional[Mapping[str, Any]]) -> Any:
    values = dict(values or {})
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise TypeError(f'{name} got unknown option(s) {unknown}; valid: {valid}')
    return cls(**values).resolved()


# ---- small layers ---------------------------------------------------------------------------------------------------

class LayerNormAct2d(LayerNorm2d):
    """Channel LayerNorm of an NCHW map, then an activation (state_dict of a LayerNorm).

    >>> LayerNormAct2d(8, act_layer='gelu')(torch.ones(1, 8, 2, 2)).shape
    torch.Size([1, 8, 2, 2])
    """

    def __init__(self, num_channels: int, eps: float = 1e-6, apply_act: bool = True, act_layer: str = 'gelu') -> None:
        super().__init__(num_channels, eps=eps)
        self.drop = nn.Identity()
        self.act = create_act_layer(act_layer) if apply_act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(x)))


class LayerScale2d(LayerScale):
    """:class:`LayerScale` of an NCHW map (per-channel ``gamma``).

    >>> LayerScale2d(2, 0.5)(torch.ones(1, 2, 1, 1)).flatten().tolist()
    [0.5, 0.5]
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.reshape(1, -1, 1, 1)


def _norm_act(kind: str, channels: int, eps: float, act_layer: str, apply_act: bool = True) -> nn.Module:
    if kind == 'batchnorm2d':
        return BatchNormAct2d(channels, eps=eps, apply_act=apply_act, act_layer=act_layer)
    return LayerNormAct2d(channels, eps=eps, apply_act=apply_act, act_layer=act_layer)


def _norm_2d(kind: str, channels: int, eps: float) -> nn.Module:
    return nn.BatchNorm2d(channels, eps=eps) if kind == 'batchnorm2d' else LayerNorm2d(channels, eps=eps)


def _drop_path(rate: float) -> nn.Module:
    return DropPath(rate) if rate > 0.0 else nn.Identity()


class Downsample2d(nn.Module):
    """Stride-2 pooling (``pool``), then a 1x1 convolution (``expand``) when the width changes.

    'max' / 'avg': 3x3 window, padding 1 (average over the valid pixels); 'max2' / 'avg2': 2x2 window.

    >>> Downsample2d(8, 16)(torch.ones(1, 8, 4, 4)).shape
    torch.Size([1, 16, 2, 2])
    """

    def __init__(self, dim: int, dim_out: int, pool_type: str = 'avg2', bias: bool = True) -> None:
        super().__init__()
        # TensorFlow 'same' padding of a 2x2 stride-2 window is zero on the even maps this family requires
        if pool_type == 'max':
            self.pool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1)
        elif pool_type == 'max2':
            self.pool = nn.MaxPool2d(2, stride=2)
        elif pool_type == 'avg':
            self.pool = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        else:
            self.pool = nn.AvgPool2d(2, stride=2)
        self.expand = nn.Conv2d(dim, dim_out, 1, bias=bias) if dim != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.pool(x))


# ---- attention ------------------------------------------------------------------------------------------------------

RelPosFactory = Optional[Callable[[int], nn.Module]]


def _rel_pos_factory(opts: TransformerOptions, window: Pair) -> RelPosFactory:
    """The relative position module of an attention over ``window`` tokens, given its head count."""
    if opts.rel_pos_type == 'bias':
        return partial(RelPosBias, window)
    if opts.rel_pos_type == 'bias_tf':
        return partial(RelPosBiasTf, window)
    if opts.rel_pos_type == 'mlp':
        return lambda num_heads: RelPosMlp(window, num_heads, hidden_dim=opts.rel_pos_dim)
    return None


def _head_count(dim_attn: int, dim_head: int) -> int:
    if dim_attn % dim_head:
        raise ValueError(f'the attention width {dim_attn} is not a multiple of dim_head={dim_head}')
    return dim_attn // dim_head


class _MaxxAttention(nn.Module):
    """What both attentions hold, in timm's order: ``qkv`` and ``proj`` projections (linear layers for channels-last
    tokens, 1x1 convolutions for NCHW maps) around an optional relative position bias ``rel_pos``. The attention
    width is ``dim_out`` with ``expand_first`` (channels-last: only when that widens), else ``dim``."""

    channels_last = True

    def __init__(self, dim: int, dim_out: int, dim_head: int = 32, bias: bool = True, expand_first: bool = True,
                 head_first: bool = True, rel_pos: RelPosFactory = None, attn_drop: float = 0.0,
                 proj_drop: float = 0.0) -> None:
        super().__init__()
        widen = expand_first and (dim_out > dim or not self.channels_last)
        dim_attn = dim_out if widen else dim
        self.num_heads = _head_count(dim_attn, dim_head)
        self.dim_head = dim_head
        self.head_first = head_first
        self.attn_drop = attn_drop
        self.qkv = self._projection(dim, dim_attn * 3, bias)
        self.rel_pos = rel_pos(self.num_heads) if rel_pos is not None else None
        self.proj = self._projection(dim_attn, dim_out, bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def _projection(self, in_chs: int, out_chs: int, bias: bool) -> nn.Module:
        if self.channels_last:
            return nn.Linear(in_chs, out_chs, bias=bias)
        return nn.Conv2d(in_chs, out_chs, 1, bias=bias)


class AttentionCl(_MaxxAttention):
    """Multi-head attention over the tokens of channels-last windows ``(B, h, w, C)``, with a relative position bias.

    >>> AttentionCl(64, 64, rel_pos=partial(RelPosBias, (2, 2)))(torch.zeros(3, 2, 2, 64)).shape
    torch.Size([3, 2, 2, 64])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[1], x.shape[2]
        qkv = self.qkv(x.flatten(1, 2))
        if self.head_first:
            q, k, v = qkv.unflatten(-1, (self.num_heads, 3 * self.dim_head)).transpose(1, 2).chunk(3, dim=-1)
        else:
            q, k, v = qkv.unflatten(-1, (3, self.num_heads, self.dim_head)).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.rel_pos(height, width) if self.rel_pos is not None else None
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                           dropout_p=self.attn_drop if self.training else 0.0)
        x = self.proj_drop(self.proj(x.transpose(1, 2).flatten(2)))
        return x.unflatten(1, (height, width))


class Attention2d(_MaxxAttention):
    """Multi-head attention over every position of an NCHW map (1x1 convolution projections).

    >>> Attention2d(32, 64, rel_pos=partial(RelPosBias, (3, 3)))(torch.zeros(1, 32, 3, 3)).shape
    torch.Size([1, 64, 3, 3])
    """

    channels_last = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[2], x.shape[3]
        qkv = self.qkv(x).flatten(2)
        if self.head_first:
            q, k, v = qkv.unflatten(1, (self.num_heads, 3 * self.dim_head)).chunk(3, dim=2)
        else:
            q, k, v = qkv.unflatten(1, (3, self.num_heads, self.dim_head)).unbind(1)
        bias = self.rel_pos(height, width) if self.rel_pos is not None else None
        x = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2),
                                           attn_mask=bias, dropout_p=self.attn_drop if self.training else 0.0)
        x = x.transpose(-1, -2).flatten(1, 2).unflatten(-1, (height, width))
        return self.proj_drop(self.proj(x))


# ---- window and grid partitions (NHWC), by partition count so that their size follows the input -----------------
# Both split each side into (count, size): a window partition keeps the count outer (contiguous blocks), a grid
# partition inner (every count-th row / column); the counts then move to the batch axis, and back on the way out.

def _partition(x: torch.Tensor, counts: Pair, windows: bool) -> torch.Tensor:
    if windows:
        x = x.unflatten(1, (counts[0], -1)).unflatten(3, (counts[1], -1))
        return x.permute(0, 1, 3, 2, 4, 5).flatten(0, 2)
    x = x.unflatten(1, (-1, counts[0])).unflatten(3, (-1, counts[1]))
    return x.permute(0, 2, 4, 1, 3, 5).flatten(0, 2)


def _unpartition(parts: torch.Tensor, counts: Pair, windows: bool) -> torch.Tensor:
    """The inverse of :func:`_partition` (``window_reverse``, ``grid_reverse``).

    >>> x = torch.randn(2, 4, 6, 3)
    >>> [torch.equal(_unpartition(_partition(x, (2, 3), w), (2, 3), w), x) for w in (True, False)]
    [True, True]
    """
    x = parts.unflatten(0, (-1, counts[0], counts[1]))
    x = x.permute(0, 1, 3, 2, 4, 5) if windows else x.permute(0, 3, 1, 4, 2, 5)
    return x.flatten(1, 2).flatten(2, 3)


def window_partition(x: torch.Tensor, counts: Pair) -> torch.Tensor:
    """``(B, H, W, C)`` -> ``(B * nh * nw, H / nh, W / nw, C)``: contiguous windows, ``counts = (nh, nw)`` per side.

    >>> window_partition(torch.zeros(2, 4, 6, 3), (2, 3)).shape
    torch.Size([12, 2, 2, 3])
    """
    return _partition(x, counts, windows=True)


def window_reverse(windows: torch.Tensor, counts: Pair) -> torch.Tensor:
    """Inverse of :func:`window_partition`."""
    return _unpartition(windows, counts, windows=True)


def grid_partition(x: torch.Tensor, counts: Pair) -> torch.Tensor:
    """``(B, H, W, C)`` -> ``(B * nh * nw, H / nh, W / nw, C)``: each partition takes every ``nh``-th row and
    ``nw``-th column (a dilated grid spanning the map).

    >>> grid_partition(torch.arange(4.).reshape(1, 1, 4, 1), (1, 2))[:, 0, :, 0].tolist()
    [[0.0, 2.0], [1.0, 3.0]]
    """
    return _partition(x, counts, windows=False)


def grid_reverse(windows: torch.Tensor, counts: Pair) -> torch.Tensor:
    """Inverse of :func:`grid_partition`."""
    return _unpartition(windows, counts, windows=False)


def _partition_counts(feat_size: Pair, partition: Pair) -> Pair:
    return feat_size[0] // partition[0], feat_size[1] // partition[1]


class PartitionAttentionCl(nn.Module):
    """Window ('block') or grid partition attention, then an MLP, both residual, on an NHWC map."""

    def __init__(self, dim: int, partition_type: str, opts: TransformerOptions, partition_size: Pair,
                 feat_size: Pair, drop_path: float = 0.0) -> None:
        super().__init__()
        self.partition_block = partition_type == 'block'
        self.partition_size = partition_size
        self.num_partitions = _partition_counts(feat_size, partition_size)
        self.norm1 = nn.LayerNorm(dim, eps=opts.norm_eps)
        self.attn = AttentionCl(dim, dim, dim_head=opts.dim_head, bias=opts.attn_bias, head_first=opts.head_first,
                                rel_pos=_rel_pos_factory(opts, partition_size), attn_drop=opts.attn_drop,
                                proj_drop=opts.proj_drop)
        self.ls1 = LayerScale(dim, opts.init_values) if opts.init_values else nn.Identity()
        self.drop_path1 = _drop_path(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=opts.norm_eps)
        self.mlp = Mlp(dim, int(dim * opts.expand_ratio), act_layer=opts.act_layer, drop=opts.proj_drop)
        self.ls2 = LayerScale(dim, opts.init_values) if opts.init_values else nn.Identity()
        self.drop_path2 = _drop_path(drop_path)

    def set_partition(self, partition_size: Pair, feat_size: Pair) -> None:
        self.partition_size = partition_size
        self.num_partitions = _partition_counts(feat_size, partition_size)
        if self.attn.rel_pos is not None:
            self.attn.rel_pos.set_window_size(partition_size)

    def _partition_attn(self, x: torch.Tensor) -> torch.Tensor:
        if self.partition_block:
            return window_reverse(self.attn(window_partition(x, self.num_partitions)), self.num_partitions)
        return grid_reverse(self.attn(grid_partition(x, self.num_partitions)), self.num_partitions)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self._partition_attn(self.norm1(x))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class ParallelPartitionAttention(nn.Module):
    """Window and grid attention side by side (half the width each, concatenated), then one MLP; NHWC."""

    def __init__(self, dim: int, opts: TransformerOptions, partition_size: Pair, feat_size: Pair,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f'parallel partition attention splits the width in two; got an odd width {dim}')
        self.partition_size = partition_size
        self.num_partitions = _partition_counts(feat_size, partition_size)
        self.norm1 = nn.LayerNorm(dim, eps=opts.norm_eps)
        attn = partial(AttentionCl, dim, dim // 2, dim_head=opts.dim_head, bias=opts.attn_bias,
                       head_first=opts.head_first, attn_drop=opts.attn_drop, proj_drop=opts.proj_drop)
        self.attn_block = attn(rel_pos=_rel_pos_factory(opts, partition_size))
        self.attn_grid = attn(rel_pos=_rel_pos_factory(opts, partition_size))
        self.ls1 = LayerScale(dim, opts.init_values) if opts.init_values else nn.Identity()
        self.drop_path1 = _drop_path(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=opts.norm_eps)
        self.mlp = Mlp(dim, int(dim * opts.expand_ratio), dim, act_layer=opts.act_layer, drop=opts.proj_drop)
        self.ls2 = LayerScale(dim, opts.init_values) if opts.init_values else nn.Identity()
        self.drop_path2 = _drop_path(drop_path)

    def set_partition(self, partition_size: Pair, feat_size: Pair) -> None:
        self.partition_size = partition_size
        self.num_partitions = _partition_counts(feat_size, partition_size)
        for attn in (self.attn_block, self.attn_grid):
            if attn.rel_pos is not None:
                attn.rel_pos.set_window_size(partition_size)

    def _partition_attn(self, x: torch.Tensor) -> torch.Tensor:
        counts = self.num_partitions
        x_window = window_reverse(self.attn_block(window_partition(x, counts)), counts)
        x_grid = grid_reverse(self.attn_grid(grid_partition(x, counts)), counts)
        return torch.cat([x_window, x_grid], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self._partition_attn(self.norm1(x))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


# ---- blocks ---------------------------------------------------------------------------------------------------------

def _init_conv(module: nn.Module, scheme: str) -> None:
    """Convolution weights of a conv block: EfficientNet's fan-out normal unless a named scheme is asked for."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            _init_weight(m.weight, scheme, fan_out_normal=True)
            if m.bias is not None and not m.bias.is_meta:
                nn.init.zeros_(m.bias)


def _init_transformer(module: nn.Module, scheme: str) -> None:
    """Linear and 1x1 weights of an attention block: ViT's Xavier-uniform unless a named scheme is asked for."""
    for name, m in module.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            _init_weight(m.weight, scheme, fan_out_normal=False)
            if m.bias is not None and not m.bias.is_meta:
                if not scheme and 'mlp' in name:
                    normal_(m.bias, std=1e-6)
                else:
                    nn.init.zeros_(m.bias)


def _init_weight(weight: torch.Tensor, scheme: str, fan_out_normal: bool) -> None:
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
    if scheme == 'normal':
        normal_(weight, std=0.02)
    elif scheme == 'trunc_normal':
        trunc_normal_(weight, std=0.02)
    elif scheme == 'xavier_normal':
        normal_(weight, std=math.sqrt(2.0 / (fan_in + fan_out)))
    elif fan_out_normal:
        normal_(weight, std=math.sqrt(2.0 / fan_out))
    else:
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        uniform_(weight, -bound, bound)


class MbConvBlock(nn.Module):
    """Pre-norm inverted bottleneck: 1x1 expand, kxk depthwise (or grouped), squeeze-excite, 1x1 project; residual,
    with a pooled (and widened) shortcut when the block strides."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, opts: ConvOptions, drop_path: float = 0.0) -> None:
        super().__init__()
        mid_chs = make_divisible((out_chs if opts.expand_output else in_chs) * opts.expand_ratio)
        if opts.group_size and mid_chs % opts.group_size:
            raise ValueError(f'conv group_size={opts.group_size} does not divide the expanded width {mid_chs}')
        groups = mid_chs // opts.group_size if opts.group_size else 1
        norm_act = partial(_norm_act, opts.norm_layer, eps=opts.norm_eps, act_layer=opts.act_layer)
        self.shortcut = (Downsample2d(in_chs, out_chs, opts.pool_type, bias=opts.output_bias) if stride == 2
                         else nn.Identity())
        stride_pool, stride_1x1, stride_dw = 1, 1, 1
        if opts.stride_mode == 'pool':
            stride_pool = stride
        elif opts.stride_mode == '1x1':
            stride_1x1 = stride
        else:
            stride_dw = stride
        self.pre_norm = norm_act(in_chs, apply_act=opts.pre_norm_act)
        self.down = Downsample2d(in_chs, in_chs, opts.downsample_pool_type) if stride_pool > 1 else nn.Identity()
        self.conv1_1x1 = create_conv2d(in_chs, mid_chs, 1, stride=stride_1x1)
        self.norm1 = norm_act(mid_chs)
        self.conv2_kxk = create_conv2d(mid_chs, mid_chs, opts.kernel_size, stride=stride_dw, groups=groups,
                                       padding=opts.padding)
        se = None
        if opts.attn_layer == 'se':
            rd_channels = int(opts.attn_ratio * (out_chs if opts.expand_output else mid_chs))
            se = SEModule(mid_chs, rd_channels=rd_channels, act_layer=opts.attn_act_layer)
        self.se_early = se if opts.attn_early else None
        self.norm2 = norm_act(mid_chs)
        self.se = None if opts.attn_early else se
        self.conv3_1x1 = create_conv2d(mid_chs, out_chs, 1, bias=opts.output_bias)
        self.drop_path = _drop_path(drop_path)

    def init_weights(self, scheme: str = '') -> None:
        _init_conv(self, scheme)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)
        x = self.norm1(self.conv1_1x1(self.down(self.pre_norm(x))))
        x = self.conv2_kxk(x)
        if self.se_early is not None:
            x = self.se_early(x)
        x = self.norm2(x)
        if self.se is not None:
            x = self.se(x)
        return self.drop_path(self.conv3_1x1(x)) + shortcut


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block on NCHW maps: 7x7 depthwise, channel LayerNorm, 1x1 MLP, layer scale; residual."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, opts: ConvOptions, drop_path: float = 0.0) -> None:
        super().__init__()
        if stride == 2:
            self.shortcut: nn.Module = Downsample2d(in_chs, out_chs)
        elif in_chs != out_chs:
            self.shortcut = nn.Conv2d(in_chs, out_chs, 1, bias=opts.output_bias)
        else:
            self.shortcut = nn.Identity()
        stride_pool, stride_dw = (stride, 1) if opts.stride_mode == 'pool' else (1, stride)
        self.down = Downsample2d(in_chs, in_chs, opts.downsample_pool_type) if stride_pool == 2 else nn.Identity()
        # one filter per input channel, however many outputs (the first block of a stage widens here)
        self.conv_dw = create_conv2d(in_chs, out_chs, 7, stride=stride_dw, groups=in_chs, bias=opts.output_bias)
        self.norm = _norm_2d(opts.norm_layer, out_chs, opts.norm_eps)
        self.mlp = Mlp(out_chs, int(opts.expand_ratio * out_chs), bias=opts.output_bias, act_layer=opts.act_layer,
                       use_conv=True)
        self.ls = LayerScale2d(out_chs, opts.init_values) if opts.init_values else nn.Identity()
        self.drop_path = _drop_path(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)
        x = self.ls(self.mlp(self.norm(self.conv_dw(self.down(x)))))
        return self.drop_path(x) + shortcut


def _conv_block(in_chs: int, out_chs: int, stride: int, opts: ConvOptions, drop_path: float) -> nn.Module:
    cls = ConvNeXtBlock if opts.block_type == 'convnext' else MbConvBlock
    return cls(in_chs, out_chs, stride, opts, drop_path)


class TransformerBlock2d(nn.Module):
    """CoAtNet's attention block on NCHW maps: attention over the whole map (downsampling first when it strides),
    then a 1x1 MLP, both residual."""

    def __init__(self, dim: int, dim_out: int, stride: int, opts: TransformerOptions, feat_size: Pair,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        norm = partial(_norm_2d, opts.norm_layer, eps=opts.norm_eps)
        if stride == 2:
            self.shortcut: nn.Module = Downsample2d(dim, dim_out, opts.pool_type, bias=opts.shortcut_bias)
            self.norm1: nn.Module = nn.Sequential()
            self.norm1.add_module('norm', norm(dim))
            self.norm1.add_module('down', Downsample2d(dim, dim, opts.pool_type))
        else:
            if dim != dim_out:
                raise ValueError(f'a stride-1 attention block keeps its width; got {dim} -> {dim_out}')
            self.shortcut = nn.Identity()
            self.norm1 = norm(dim)
        self.attn = Attention2d(dim, dim_out, dim_head=opts.dim_head, expand_first=opts.expand_first,
                                bias=opts.attn_bias, rel_pos=_rel_pos_factory(opts, feat_size),
                                attn_drop=opts.attn_drop, proj_drop=opts.proj_drop)
        self.ls1 = LayerScale2d(dim_out, opts.init_values) if opts.init_values else nn.Identity()
        self.drop_path1 = _drop_path(drop_path)
        self.norm2 = norm(dim_out)
        self.mlp = Mlp(dim_out, int(dim_out * opts.expand_ratio), act_layer=opts.act_layer, drop=opts.proj_drop,
                       use_conv=True)
        self.ls2 = LayerScale2d(dim_out, opts.init_values) if opts.init_values else nn.Identity()
        self.drop_path2 = _drop_path(drop_path)

    def init_weights(self, scheme: str = '') -> None:
        _init_transformer(self, scheme)

    def set_input_size(self, feat_size: Pair, window_size: Pair, grid_size: Pair) -> None:
        """The attention spans the whole map: its table follows the stage's map size."""
        if self.attn.rel_pos is not None:
            self.attn.rel_pos.set_window_size(feat_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.shortcut(x) + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class MaxxVitBlock(nn.Module):
    """MaxViT block: a conv block, then window attention (unless disabled) and grid attention on NHWC."""

    def __init__(self, dim: int, dim_out: int, stride: int, conv: ConvOptions, transformer: TransformerOptions,
                 window_size: Pair, grid_size: Pair, feat_size: Pair, drop_path: float = 0.0) -> None:
        super().__init__()
        self.conv = _conv_block(dim, dim_out, stride, conv, drop_path)
        self.attn_block = None if transformer.no_block_attn else PartitionAttentionCl(
            dim_out, 'block', transformer, window_size, feat_size, drop_path)
        self.attn_grid = PartitionAttentionCl(dim_out, 'grid', transformer, grid_size, feat_size, drop_path)

    def init_weights(self, scheme: str = '') -> None:
        for attn in (self.attn_block, self.attn_grid):
            if attn is not None:
                _init_transformer(attn, scheme)
        _init_conv(self.conv, scheme)

    def set_input_size(self, feat_size: Pair, window_size: Pair, grid_size: Pair) -> None:
        if self.attn_block is not None:
            self.attn_block.set_partition(window_size, feat_size)
        self.attn_grid.set_partition(grid_size, feat_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x).permute(0, 2, 3, 1)
        if self.attn_block is not None:
            x = self.attn_block(x)
        return self.attn_grid(x).permute(0, 3, 1, 2)


class ParallelMaxxVitBlock(nn.Module):
    """timm's parallel MaxViT block: two conv blocks, then window and grid attention side by side, one MLP."""

    def __init__(self, dim: int, dim_out: int, stride: int, conv: ConvOptions, transformer: TransformerOptions,
                 window_size: Pair, grid_size: Pair, feat_size: Pair, drop_path: float = 0.0) -> None:
        super().__init__()
        if window_size != grid_size:
            raise ValueError(f"'PM' blocks need equal window and grid sizes, got {window_size} and {grid_size}")
        self.conv = nn.Sequential(_conv_block(dim, dim_out, stride, conv, drop_path),
                                  _conv_block(dim_out, dim_out, 1, conv, drop_path))
        self.attn = ParallelPartitionAttention(dim_out, transformer, window_size, feat_size, drop_path)

    def init_weights(self, scheme: str = '') -> None:
        _init_transformer(self.attn, scheme)
        _init_conv(self.conv, scheme)

    def set_input_size(self, feat_size: Pair, window_size: Pair, grid_size: Pair) -> None:
        if window_size != grid_size:
            raise ValueError(f"'PM' blocks need equal window and grid sizes, got {window_size} and {grid_size}")
        self.attn.set_partition(window_size, feat_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(self.conv(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class MaxxVitStage(nn.Module):
    """One stage: its first block strides by 2; ``block_types`` (extended with its last entry) picks each block."""

    def __init__(self, in_chs: int, out_chs: int, depth: int, block_types: Sequence[str], conv: ConvOptions,
                 transformer: TransformerOptions, window_size: Pair, grid_size: Pair, feat_size: Pair,
                 drop_path: Sequence[float]) -> None:
        super().__init__()
        self.grad_checkpointing = False
        types = list(block_types)[:depth] + [block_types[-1]] * max(depth - len(block_types), 0)
        blocks = []
        for i, kind in enumerate(types):
            stride = 2 if i == 0 else 1
            if kind == 'C':
                blocks.append(_conv_block(in_chs, out_chs, stride, conv, drop_path[i]))
            elif kind == 'T':
                blocks.append(TransformerBlock2d(in_chs, out_chs, stride, transformer, feat_size, drop_path[i]))
            else:
                cls = MaxxVitBlock if kind == 'M' else ParallelMaxxVitBlock
                blocks.append(cls(in_chs, out_chs, stride, conv, transformer, window_size, grid_size, feat_size,
                                  drop_path[i]))
            in_chs = out_chs
        self.blocks = nn.Sequential(*blocks)

    def set_input_size(self, feat_size: Pair, window_size: Pair, grid_size: Pair) -> None:
        for block in self.blocks:
            if hasattr(block, 'set_input_size'):
                block.set_input_size(feat_size, window_size, grid_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_sequence(self.blocks, x, self.grad_checkpointing and self.training and torch.is_grad_enabled())


class Stem(nn.Module):
    """3x3 stride-2 convolution, norm + activation, 3x3 convolution."""

    def __init__(self, in_chs: int, out_chs: Pair, padding: str, bias: bool, opts: ConvOptions) -> None:
        super().__init__()
        self.out_chs = out_chs[-1]
        self.stride = 2
        self.conv1 = create_conv2d(in_chs, out_chs[0], 3, stride=2, padding=padding, bias=bias)
        self.norm1 = _norm_act(opts.norm_layer, out_chs[0], opts.norm_eps, opts.act_layer)
        self.conv2 = create_conv2d(out_chs[0], out_chs[1], 3, stride=1, padding=padding, bias=bias)

    def init_weights(self, scheme: str = '') -> None:
        _init_conv(self, scheme)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.norm1(self.conv1(x)))


# ---- the model ------------------------------------------------------------------------------------------------------

def _pair(value: Any, name: str) -> Pair:
    pair = to_2tuple(value) if isinstance(value, (int, list, tuple)) and not isinstance(value, bool) else None
    if pair is None or len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                                  for v in pair):
        raise ValueError(f'{name} must be a positive int or an (h, w) pair of positive ints, got {value!r}')
    return pair


def stage_geometry(img_size: Pair, num_stages: int) -> List[Pair]:
    """Each stage's output map for an ``img_size`` input (stride-2 stem, then every stage halves, rounding up).

    >>> stage_geometry((224, 224), 4)
    [(56, 56), (28, 28), (14, 14), (7, 7)]
    """
    size = (img_size[0] // 2, img_size[1] // 2)
    sizes = []
    for _ in range(num_stages):
        size = ((size[0] - 1) // 2 + 1, (size[1] - 1) // 2 + 1)
        sizes.append(size)
    return sizes


class MaxxVit(StagedFeatures, HeadApi, nn.Module):
    """CoAtNet / MaxViT / MaxxViT: stem, stages of conv and attention blocks, final norm (or norm-MLP head).

    ``block_type`` gives one entry per stage ('C' conv, 'T' full-map attention, 'M' MaxViT, 'PM' parallel MaxViT, or
    a tuple of them for mixed stages); ``conv`` and ``transformer`` override :class:`ConvOptions` and
    :class:`TransformerOptions`. Window and grid sizes default to ``img_size // partition_ratio``. ``mlp_head``: a
    norm-MLP head (pool, norm, tanh hidden layer) as wide as the last stage, or ``head_hidden_size`` wide.

    >>> m = MaxxVit(embed_dim=(16, 32, 32, 64), depths=(1, 1, 1, 1), block_type=('M',) * 4, stem_width=8,
    ...             img_size=64, num_classes=5, transformer=dict(dim_head=8))
    >>> m(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 5])
    """

    checkpoint_stages = 'stages'
    # levels: the stem, then each stage; the final norm ends the last one (timm's forward_intermediates)
    stem_is_level, features_end, end_is_norm = True, 'norm', True
    prune_trims_feature_info, pruned_head_args = False, dict(reset_other=True)

    def __init__(self, embed_dim: Sequence[int] = (96, 192, 384, 768), depths: Sequence[int] = (2, 3, 5, 2),
                 block_type: Sequence[Union[str, Sequence[str]]] = ('C', 'C', 'T', 'T'),
                 stem_width: Union[int, Pair] = 64, stem_bias: bool = False,
                 conv: Optional[Mapping[str, Any]] = None, transformer: Optional[Mapping[str, Any]] = None,
                 mlp_head: bool = False, head_hidden_size: Optional[int] = None, img_size: Union[int, Pair] = 224,
                 window_size: Optional[Union[int, Pair]] = None, grid_size: Optional[Union[int, Pair]] = None,
                 partition_ratio: int = 32, in_chans: int = 3, num_classes: int = 1000, global_pool: str = 'avg',
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, weight_init: str = 'vit_eff') -> None:
        super().__init__()
        embed_dim = check_int_tuple('embed_dim', embed_dim)
        depths = check_int_tuple('depths', depths, length=len(embed_dim))
        stage_types = _check_block_types(block_type, len(embed_dim))
        stem_width = _pair(stem_width, 'stem_width')
        check_choice('weight_init', weight_init, WEIGHT_INITS)
        if head_hidden_size is not None:
            check_int('head_hidden_size', head_hidden_size, 1)
        elif mlp_head:
            head_hidden_size = embed_dim[-1]
        _check_head(num_classes, global_pool, norm_mlp_head=bool(head_hidden_size))
        conv_opts = _options(ConvOptions, 'conv', conv)
        transformer_opts = _options(TransformerOptions, 'transformer', transformer)
        self.img_size = _pair(img_size, 'img_size')
        self.partition_ratio = check_int('partition_ratio', partition_ratio, 1)
        self.stage_types = stage_types
        window, grid = self._partitions(self.img_size, window_size, grid_size, partition_ratio)
        self.window_size, self.grid_size = window, grid
        feat_sizes = stage_geometry(self.img_size, len(embed_dim))
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.num_features = self.embed_dim = embed_dim[-1]
        self.drop_rate = drop_rate

        self.stem = Stem(in_chans, stem_width, conv_opts.padding, stem_bias, conv_opts)
        self.feature_info = [dict(num_chs=self.stem.out_chs, reduction=2, module='stem')]
        rates = drop_path_rates(drop_path_rate, list(depths))
        stages, in_chs, stride = [], self.stem.out_chs, self.stem.stride
        for i, out_chs in enumerate(embed_dim):
            stages.append(MaxxVitStage(in_chs, out_chs, depths[i], stage_types[i], conv_opts, transformer_opts,
                                       window, grid, feat_sizes[i], rates[i]))
            stride *= 2
            in_chs = out_chs
            self.feature_info.append(dict(num_chs=out_chs, reduction=stride, module=f'stages.{i}'))
        self.stages = nn.Sequential(*stages)

        final_norm = partial(_norm_2d, transformer_opts.norm_layer, eps=transformer_opts.norm_eps)
        if head_hidden_size:
            self.norm: nn.Module = nn.Identity()
            self.head: nn.Module = NormMlpClassifierHead(self.num_features, num_classes, hidden_size=head_hidden_size,
                                                         pool_type=global_pool, drop_rate=drop_rate,
                                                         norm_layer=final_norm)
        else:
            self.norm = final_norm(self.num_features)
            self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self.head_hidden_size = self._head_width()
        if weight_init:
            for module in self.modules():
                if hasattr(module, 'init_weights'):
                    module.init_weights(scheme=weight_init if weight_init != 'vit_eff' else '')

    # ---- sizes ------------------------------------------------------------------------------------------------
    def _partitions(self, img_size: Pair, window_size: Any, grid_size: Any, ratio: int) -> Tuple[Pair, Pair]:
        """Window and grid sizes for ``img_size``; ValueError when a size the stages cannot take is asked for."""
        if img_size[0] % INPUT_MULTIPLE or img_size[1] % INPUT_MULTIPLE:
            raise ValueError(f'img_size={img_size} is invalid: sides must be multiples of {INPUT_MULTIPLE} '
                             f'(at least {INPUT_MULTIPLE})')
        derived = (img_size[0] // ratio, img_size[1] // ratio)
        window = _pair(window_size, 'window_size') if window_size is not None else derived
        grid = _pair(grid_size, 'grid_size') if grid_size is not None else window if window_size is not None \
            else derived
        feats = stage_geometry(img_size, len(self.stage_types))
        for i, (kinds, feat) in enumerate(zip(self.stage_types, feats)):
            if not {'M', 'PM'} & set(kinds):
                continue
            for name, size in (('window', window), ('grid', grid)):
                if min(size) < 1 or feat[0] % size[0] or feat[1] % size[1]:
                    raise ValueError(
                        f'img_size={img_size} with a {name} of {size} (partition_ratio={ratio}): stage {i} maps of '
                        f'{feat} do not split into whole {name}s; with the derived partitions img_size must be a '
                        f'multiple of {INPUT_MULTIPLE} (at least {INPUT_MULTIPLE}) and partition_ratio at most '
                        f'{INPUT_MULTIPLE}')
        return window, grid

    def set_input_size(self, img_size: Optional[Union[int, Pair]] = None,
                       window_size: Optional[Union[int, Pair]] = None, grid_size: Optional[Union[int, Pair]] = None,
                       partition_ratio: Optional[int] = None) -> None:
        """Rebuild the model for another input size (and partition sizes), resampling the relative position tables
        in place as timm does. Partitions not given are ``img_size // partition_ratio``.

        >>> m = SPEC.build('test_maxvit'); m.set_input_size(64)
        >>> m.window_size, m.stages[0].blocks[0].attn_block.attn.rel_pos.relative_position_bias_table.shape
        ((2, 2), torch.Size([9, 1]))
        """
        img = _pair(img_size, 'img_size') if img_size is not None else self.img_size
        ratio = check_int('partition_ratio', partition_ratio, 1) if partition_ratio is not None \
            else self.partition_ratio
        window, grid = self._partitions(img, window_size, grid_size, ratio)
        if window != grid and any('PM' in kinds for kinds in self.stage_types):
            raise ValueError(f"'PM' blocks need equal window and grid sizes, got {window} and {grid}")
        self.img_size, self.partition_ratio, self.window_size, self.grid_size = img, ratio, window, grid
        for stage, feat in zip(self.stages, stage_geometry(img, len(self.stage_types))):
            stage.set_input_size(feat, window, grid)

    # ---- the contract -----------------------------------------------------------------------------------------
    def _head_width(self) -> int:
        if isinstance(self.head, NormMlpClassifierHead):
            return self.head.num_features
        return self.head.in_features * self.head.global_pool.feat_mult()

    def no_weight_decay(self) -> Set[str]:
        """Relative position tables and MLPs are exempt from weight decay.

        >>> sorted(SPEC.build('test_coatnet').no_weight_decay())[0]
        'stages.2.blocks.0.attn.rel_pos.relative_position_bias_table'
        """
        return {k for k, _ in self.named_parameters()
                if 'relative_position_bias_table' in k or 'rel_pos.mlp' in k}

    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter groups for layer-wise learning-rate decay (timm's regexes).

        >>> SPEC.build('test_maxvit').group_matcher()['stem']
        '^stem'
        """
        return dict(stem=r'^stem', blocks=[(r'^stages\.(\d+)', None), (r'^norm', (99999,))])

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None, reset_other: bool = False) -> None:
        """Replace the classifier (``num_classes=0`` removes it) and optionally the pooling; ``reset_other`` also
        drops the norm-MLP head's norm and hidden layer.

        >>> m = SPEC.build('test_maxvit'); m.reset_classifier(0, '')
        >>> m(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 128, 2, 2])
        """
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f'num_classes must be an int >= 0 (0 removes the classifier), got {num_classes!r}')
        pool = self.global_pool if global_pool is None else global_pool
        if global_pool is not None and global_pool not in POOL_TYPES:
            raise ValueError(f'unknown global_pool {global_pool!r}; valid: {POOL_TYPES}')
        _check_head(num_classes, pool, norm_mlp_head=isinstance(self.head, NormMlpClassifierHead))
        if isinstance(self.head, NormMlpClassifierHead):
            self.head.reset(num_classes, global_pool, reset_other=reset_other, in_features=self.num_features)
        else:
            self.head.in_features = self.num_features  # pruned to an earlier stage, the head is sized for that one
            self.head.reset(num_classes, pool_type=global_pool)
        self.num_classes = num_classes
        self.global_pool = pool
        self.head_hidden_size = self._head_width()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem, stages and final norm: an NCHW map at stride 32.

        >>> SPEC.build('test_coatnet').forward_features(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 128, 2, 2])
        """
        return self.norm(self.stages(self.stem(x)))


def _check_block_types(block_type: Any, num_stages: int) -> Tuple[Tuple[str, ...], ...]:
    if isinstance(block_type, str) or not isinstance(block_type, (list, tuple)) or len(block_type) != num_stages:
        raise ValueError(f'block_type must give one entry per stage ({num_stages} stages), got {block_type!r}')
    stages = []
    for i, kinds in enumerate(block_type):
        kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
        if not kinds or not all(k in BLOCK_TYPES for k in kinds):
            raise ValueError(f'block_type[{i}]={block_type[i]!r} is invalid; each entry is one of {BLOCK_TYPES} or '
                             f'a tuple of them')
        stages.append(kinds)
    return tuple(stages)


def _check_head(num_classes: Any, global_pool: Any, norm_mlp_head: bool) -> None:
    """The pooling a head can take: the norm-MLP head classifies unpooled maps per position (1x1 convolutions) but
    cannot norm a concatenated pool; the plain head needs a pool to classify."""
    if global_pool not in POOL_TYPES:
        raise ValueError(f'unknown global_pool {global_pool!r}; valid: {POOL_TYPES}')
    if norm_mlp_head and global_pool == 'catavgmax':
        raise ValueError("global_pool='catavgmax' doubles the width the norm-MLP head's norm is built for; "
                         "valid: '', 'avg', 'max', 'avgmax'")
    if not norm_mlp_head and not global_pool and num_classes:
        raise ValueError(f"global_pool='' (no pooling) needs num_classes=0, got num_classes={num_classes}")


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Fit a timm-layout checkpoint to ``model``: drop computed buffers, resample relative position tables built for
    another window (a model created with another ``img_size``), and reshape 1x1 convolution weights stored as linear
    ones (and back).

    >>> m = SPEC.build('test_maxvit', img_size=64)
    >>> sd = checkpoint_filter_fn(SPEC.build('test_maxvit').state_dict(), m)
    >>> sd['stages.0.blocks.0.attn_grid.attn.rel_pos.relative_position_bias_table'].shape
    torch.Size([9, 1])
    """
    own = model.state_dict()
    computed = ('relative_position_index', 'rel_coords_log', 'height_lookup', 'width_lookup')
    suffix = '.relative_position_bias_table'
    out = {}
    for key, value in state_dict.items():
        if key.rsplit('.', 1)[-1] in computed and key not in own:
            continue
        if key.endswith(suffix) and key in own and value.shape != own[key].shape:
            rel_pos = model.get_submodule(key[:-len(suffix)])
            value = _resample_checkpoint_table(value, rel_pos)
        elif key in own and value.ndim != own[key].ndim and value.numel() == own[key].numel():
            value = value.reshape(own[key].shape)
        out[key] = value
    return out


def _resample_checkpoint_table(table: torch.Tensor, rel_pos: nn.Module) -> torch.Tensor:
    from ..layers.rel_pos import resample_relative_grid
    wh, ww = rel_pos.window_size
    with torch.no_grad():
        if table.ndim == 3:  # (heads, 2h-1, 2w-1)
            return resample_relative_grid(table, (2 * wh - 1, 2 * ww - 1))
        side = math.isqrt(table.shape[0])
        if side * side != table.shape[0]:
            raise ValueError(f'cannot tell the window of a relative position table with {table.shape[0]} rows')
        grid = table.T.reshape(table.shape[1], side, side)
        return resample_relative_grid(grid, (2 * wh - 1, 2 * ww - 1)).reshape(table.shape[1], -1).T.contiguous()


# ---- the variants ---------------------------------------------------------------------------------------------------

def _rw_coat(stride_mode: str = 'pool', pool_type: str = 'avg2', conv_attn_early: bool = False,
             conv_attn_act_layer: str = 'relu', transformer_shortcut_bias: bool = True,
             transformer_norm_layer: str = 'layernorm2d', init_values: Optional[float] = None,
             rel_pos_type: str = 'bias', rel_pos_dim: int = 512) -> Dict[str, Any]:
    """timm's own CoAtNet recipe (trained before the official code): activated pre-norm, expansion from the input
    width, no bias on the 1x1 output and shortcut convolutions, SiLU, ReLU in squeeze-excite, widening in the output
    projection of the attention."""
    return dict(
        conv=dict(stride_mode=stride_mode, pool_type=pool_type, pre_norm_act=True, expand_output=False,
                  output_bias=False, attn_early=conv_attn_early, attn_act_layer=conv_attn_act_layer,
                  act_layer='silu'),
        transformer=dict(expand_first=False, shortcut_bias=transformer_shortcut_bias, pool_type=pool_type,
                         init_values=init_values, norm_layer=transformer_norm_layer, rel_pos_type=rel_pos_type,
                         rel_pos_dim=rel_pos_dim))


def _rw_max(stride_mode: str = 'dw', conv_output_bias: bool = False, conv_attn_ratio: float = 1 / 16,
            init_values: Optional[float] = None, rel_pos_type: str = 'bias', rel_pos_dim: int = 512) -> Dict[str, Any]:
    """timm's own MaxViT recipe: expansion from the input width, SiLU, widening in the attention's output."""
    return dict(
        conv=dict(stride_mode=stride_mode, expand_output=False, output_bias=conv_output_bias,
                  attn_ratio=conv_attn_ratio, act_layer='silu'),
        transformer=dict(expand_first=False, init_values=init_values, rel_pos_type=rel_pos_type,
                         rel_pos_dim=rel_pos_dim))


def _next(no_block_attn: bool = False, init_values: Tuple[Optional[float], Optional[float]] = (1e-6, 1e-6),
          rel_pos_type: str = 'mlp') -> Dict[str, Any]:
    """MaxxViT: ConvNeXt conv blocks (channel LayerNorm) with MaxViT attention."""
    return dict(
        conv=dict(block_type='convnext', expand_output=False, init_values=init_values[0], norm_layer='layernorm2d',
                  norm_layer_cl='layernorm'),
        transformer=dict(expand_first=False, no_block_attn=no_block_attn, init_values=init_values[1],
                         rel_pos_type=rel_pos_type))


# the TensorFlow MaxViT ports: 'same' padding, tanh-approximated GELU, interleaved q/k/v heads, TF bias table
_TF = dict(conv=dict(norm_eps=1e-3, act_layer='gelu_tanh', padding='same'),
           transformer=dict(norm_eps=1e-5, act_layer='gelu_tanh', head_first=False, rel_pos_type='bias_tf'))

_MAX = dict(block_type=('M',) * 4)
_W64 = dict(embed_dim=(64, 128, 256, 512))
_W96 = dict(embed_dim=(96, 192, 384, 768))
_W128 = dict(embed_dim=(128, 256, 512, 1024))
_W192 = dict(embed_dim=(192, 384, 768, 1536))


def _row(*parts: Mapping[str, Any], **kwargs: Any) -> Dict[str, Any]:
    row: Dict[str, Any] = {}
    for part in parts:
        row.update(part)
    row.update(kwargs)
    return row


def _tf(width: Mapping[str, Any], depths: Tuple[int, ...], stem: int, img_size: int, **kwargs: Any) -> Dict[str, Any]:
    return _row(width, _MAX, _TF, depths=depths, stem_width=stem, stem_bias=True, mlp_head=True, img_size=img_size,
                **kwargs)


VARIANTS: Dict[str, Dict[str, Any]] = {
    # timm's CoAtNets
    'coatnet_pico_rw_224': _row(_W64, _rw_max(conv_output_bias=True, conv_attn_ratio=0.25), depths=(2, 3, 5, 2),
                                stem_width=(32, 64)),
    'coatnet_nano_rw_224': _row(_W64, _rw_max(stride_mode='pool', conv_output_bias=True, conv_attn_ratio=0.25),
                                depths=(3, 4, 6, 3), stem_width=(32, 64)),
    'coatnet_0_rw_224': _row(_W96, _rw_coat(conv_attn_early=True, transformer_shortcut_bias=False),
                             depths=(2, 3, 7, 2), stem_width=(32, 64)),
    'coatnet_1_rw_224': _row(_W96, _rw_coat(stride_mode='dw', conv_attn_early=True, transformer_shortcut_bias=False),
                             depths=(2, 6, 14, 2), stem_width=(32, 64)),
    'coatnet_2_rw_224': _row(_W128, _rw_coat(stride_mode='dw', conv_attn_act_layer='silu'), depths=(2, 6, 14, 2),
                             stem_width=(64, 128)),
    'coatnet_3_rw_224': _row(_W192, _rw_coat(stride_mode='dw', conv_attn_act_layer='silu', init_values=1e-6),
                             depths=(2, 6, 14, 2), stem_width=(96, 192), num_classes=11821),
    'coatnet_bn_0_rw_224': _row(_W96, _rw_coat(stride_mode='dw', conv_attn_early=True,
                                               transformer_shortcut_bias=False, transformer_norm_layer='batchnorm2d'),
                                depths=(2, 3, 7, 2), stem_width=(32, 64)),
    'coatnet_rmlp_nano_rw_224': _row(_W64, _rw_max(conv_output_bias=True, conv_attn_ratio=0.25, rel_pos_type='mlp',
                                                   rel_pos_dim=384), depths=(3, 4, 6, 3), stem_width=(32, 64)),
    'coatnet_rmlp_0_rw_224': _row(_W96, _rw_coat(stride_mode='dw', rel_pos_type='mlp'), depths=(2, 3, 7, 2),
                                  stem_width=(32, 64)),
    'coatnet_rmlp_1_rw_224': _row(_W96, _rw_coat(pool_type='max', conv_attn_early=True,
                                                 transformer_shortcut_bias=False, rel_pos_type='mlp',
                                                 rel_pos_dim=384), depths=(2, 6, 14, 2), stem_width=(32, 64)),
    'coatnet_rmlp_1_rw2_224': _row(_W96, _rw_coat(stride_mode='dw', rel_pos_type='mlp'), depths=(2, 6, 14, 2),
                                   stem_width=(32, 64)),
    'coatnet_rmlp_2_rw_224': _row(_W128, _rw_coat(stride_mode='dw', conv_attn_act_layer='silu', init_values=1e-6,
                                                  rel_pos_type='mlp'), depths=(2, 6, 14, 2), stem_width=(64, 128)),
    'coatnet_rmlp_2_rw_384': _row(_W128, _rw_coat(stride_mode='dw', conv_attn_act_layer='silu', init_values=1e-6,
                                                  rel_pos_type='mlp'), depths=(2, 6, 14, 2), stem_width=(64, 128),
                                  img_size=384),
    'coatnet_rmlp_3_rw_224': _row(_W192, _rw_coat(stride_mode='dw', conv_attn_act_layer='silu', init_values=1e-6,
                                                  rel_pos_type='mlp'), depths=(2, 6, 14, 2), stem_width=(96, 192)),
    'coatnet_nano_cc_224': _row(_W64, _rw_coat(), depths=(3, 4, 6, 3), stem_width=(32, 64),
                                block_type=('C', 'C', ('C', 'T'), ('C', 'T'))),
    'coatnext_nano_rw_224': _row(_W64, _next(init_values=(1e-5, None), rel_pos_type='bias'), depths=(3, 4, 6, 3),
                                 stem_width=(32, 64), weight_init='normal'),
    # CoAtNets after the paper (untrained)
    'coatnet_0_224': _row(_W96, depths=(2, 3, 5, 2), stem_width=64, mlp_head=True),
    'coatnet_1_224': _row(_W96, depths=(2, 6, 14, 2), stem_width=64, mlp_head=True),
    'coatnet_2_224': _row(_W128, depths=(2, 6, 14, 2), stem_width=128, mlp_head=True),
    'coatnet_3_224': _row(_W192, depths=(2, 6, 14, 2), stem_width=192, mlp_head=True),
    'coatnet_4_224': _row(_W192, depths=(2, 12, 28, 2), stem_width=192, mlp_head=True),
    'coatnet_5_224': _row(embed_dim=(256, 512, 1280, 2048), depths=(2, 12, 28, 2), stem_width=192,
                          mlp_head=True),
    # timm's MaxViTs
    'maxvit_pico_rw_256': _row(_MAX, _rw_max(), embed_dim=(32, 64, 128, 256), depths=(2, 2, 5, 2),
                               stem_width=(24, 32), img_size=256),
    'maxvit_nano_rw_256': _row(_W64, _MAX, _rw_max(), depths=(1, 2, 3, 1), stem_width=(32, 64), img_size=256),
    'maxvit_tiny_rw_224': _row(_W64, _MAX, _rw_max(), depths=(2, 2, 5, 2), stem_width=(32, 64)),
    'maxvit_tiny_rw_256': _row(_W64, _MAX, _rw_max(), depths=(2, 2, 5, 2), stem_width=(32, 64), img_size=256),
    'maxvit_tiny_pm_256': _row(_W64, _rw_max(), block_type=('PM',) * 4, depths=(2, 2, 5, 2), stem_width=(32, 64),
                               img_size=256),
    'maxvit_rmlp_pico_rw_256': _row(_MAX, _rw_max(rel_pos_type='mlp'), embed_dim=(32, 64, 128, 256),
                                    depths=(2, 2, 5, 2), stem_width=(24, 32), img_size=256),
    'maxvit_rmlp_nano_rw_256': _row(_W64, _MAX, _rw_max(rel_pos_type='mlp'), depths=(1, 2, 3, 1),
                                    stem_width=(32, 64), img_size=256),
    'maxvit_rmlp_tiny_rw_256': _row(_W64, _MAX, _rw_max(rel_pos_type='mlp'), depths=(2, 2, 5, 2),
                                    stem_width=(32, 64), img_size=256),
    'maxvit_rmlp_small_rw_224': _row(_W96, _MAX, _rw_max(rel_pos_type='mlp', init_values=1e-6), depths=(2, 2, 5, 2),
                                     stem_width=(32, 64)),
    'maxvit_rmlp_small_rw_256': _row(_W96, _MAX, _rw_max(rel_pos_type='mlp', init_values=1e-6), depths=(2, 2, 5, 2),
                                     stem_width=(32, 64), img_size=256),
    'maxvit_rmlp_base_rw_224': _row(_W96, _MAX, _rw_max(rel_pos_type='mlp'), depths=(2, 6, 14, 2),
                                    stem_width=(32, 64), mlp_head=True),
    'maxvit_rmlp_base_rw_384': _row(_W96, _MAX, _rw_max(rel_pos_type='mlp'), depths=(2, 6, 14, 2),
                                    stem_width=(32, 64), mlp_head=True, img_size=384),
    # MaxxViT (ConvNeXt conv blocks) and MaxxViT-V2 (wider, grid attention only)
    'maxxvit_rmlp_nano_rw_256': _row(_W64, _MAX, _next(), depths=(1, 2, 3, 1), stem_width=(32, 64), img_size=256,
                                     weight_init='normal'),
    'maxxvit_rmlp_tiny_rw_256': _row(_W64, _MAX, _next(), depths=(2, 2, 5, 2), stem_width=(32, 64), img_size=256),
    'maxxvit_rmlp_small_rw_256': _row(_W96, _MAX, _next(), depths=(2, 2, 5, 2), stem_width=(48, 96), img_size=256),
    'maxxvitv2_nano_rw_256': _row(_W96, _MAX, _next(no_block_attn=True, rel_pos_type='bias'), depths=(1, 2, 3, 1),
                                  stem_width=(48, 96), img_size=256, weight_init='normal'),
    'maxxvitv2_rmlp_base_rw_224': _row(_W128, _MAX, _next(no_block_attn=True), depths=(2, 6, 12, 2),
                                       stem_width=(64, 128)),
    'maxxvitv2_rmlp_base_rw_384': _row(_W128, _MAX, _next(no_block_attn=True), depths=(2, 6, 12, 2),
                                       stem_width=(64, 128), img_size=384),
    'maxxvitv2_rmlp_large_rw_224': _row(_MAX, _next(no_block_attn=True), embed_dim=(160, 320, 640, 1280),
                                        depths=(2, 6, 16, 2), stem_width=(80, 160), mlp_head=True),
    # MaxViT ported from the official TensorFlow weights
    **{f'maxvit_{size}_tf_{side}': _tf(width, depths, stem, side)
       for size, width, depths, stem in (('tiny', _W64, (2, 2, 5, 2), 64), ('small', _W96, (2, 2, 5, 2), 64),
                                         ('base', _W96, (2, 6, 14, 2), 64), ('large', _W128, (2, 6, 14, 2), 128))
       for side in (224, 384, 512)},
    'maxvit_xlarge_tf_224': _tf(_W192, (2, 6, 14, 2), 192, 224, num_classes=21843),
    'maxvit_xlarge_tf_384': _tf(_W192, (2, 6, 14, 2), 192, 384),
    'maxvit_xlarge_tf_512': _tf(_W192, (2, 6, 14, 2), 192, 512),
    # timm's test models
    'test_maxvit': _row(_MAX, _rw_max(), embed_dim=(32, 64, 96, 128), depths=(1, 1, 1, 1), stem_width=(16, 32),
                        img_size=160),
    'test_coatnet': _row(_rw_max(stride_mode='pool', conv_output_bias=True, conv_attn_ratio=0.25),
                         embed_dim=(32, 64, 96, 128), depths=(1, 1, 2, 1), stem_width=(16, 32), img_size=160),
}

SPEC = FamilySpec(
    name='maxxvit', model=MaxxVit, variants=VARIANTS, default_cfg=DEFAULT_CFG,
    feature_cls=('list', 'dict', 'hook', 'fx', 'getter'), default_feature_cls='list', output_strides=OUTPUT_STRIDES,
    export=('torch.export', 'onnx', 'compile'),  # no dynamic_hw: the partition sizes follow the input's sides
    # weight_init only initializes training from scratch: rows that differ in it run the same forward code
    checkpoint_filter=checkpoint_filter_fn, size_args=('weight_init',),
    input_multiple=INPUT_MULTIPLE, min_input_size=INPUT_MULTIPLE, img_size_arg='img_size')
