"""Blocks, architecture-string decoder and stage builder shared by the EfficientNet and MobileNet families.

A stage is written as one or more compact strings such as ``'ir_r2_k3_s2_e6_c24_se0.25'``: the block type first
(``ir`` inverted residual, ``ds`` depthwise-separable, ``dsa`` depthwise-separable with an activated projection,
``er`` edge residual / fused MBConv, ``cn`` plain conv), then options in any order:

``r`` repeats, ``k`` kernel size, ``s`` stride of the first block (1 or 2), ``e`` expansion ratio, ``c`` output
channels, ``se`` squeeze-excite ratio, ``a`` / ``p`` kernel of the expansion / projection convolution, ``n<code>``
activation override (``re`` relu, ``r6`` relu6, ``hs`` hard-swish, ``sw`` swish, ``mi`` mish), ``skip`` / ``noskip``,
``gs`` channels per convolution group, ``fc`` input width an ``er`` block sizes its expansion from, ``cc`` CondConv
experts of an ``ir`` block, ``d1`` a space-to-depth entry (``ds`` / ``ir``). A kernel written ``k3.5.7`` (or
``a1.1``, ``p1.1``) is a mixed-kernel convolution, one kernel per channel split (MixNet).

Module and parameter names follow timm's blocks of the same kind, so its checkpoints load unchanged.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from functools import partial
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from .activations import ActLayer, create_act_layer
from .drop import DropPath
from .global_context import GlobalContext
from .head_api import HeadApi
from .helpers import make_divisible
from .intermediates import IndicesArg
from .mixed_conv import CondConv2d, create_conv2d_any
from .norm import BatchNormAct2d
from .padding import create_conv2d
from .pooling import POOL_TYPES
from .weight_init import normal_, uniform_

KernelSize = Union[int, Tuple[int, ...]]
# builds a norm + activation layer: norm_layer(channels, act_layer=..., apply_act=...)
NormLayer = Callable[..., nn.Module]
# builds an anti-aliasing downsampler: aa_layer(channels=..., stride=...)
AaLayer = Callable[..., nn.Module]

BLOCK_TYPES = ('ir', 'ds', 'dsa', 'er', 'cn')
ACT_CODES = {'re': 'relu', 'r6': 'relu6', 'hs': 'hard_swish', 'sw': 'swish', 'mi': 'mish'}
_NUMERIC_KEYS = {'r', 'k', 's', 'e', 'c', 'se', 'a', 'p', 'gs', 'fc', 'cc', 'd'}
_KERNEL_KEYS = ('k', 'a', 'p')
DEPTH_TRUNCS = ('ceil', 'round')
_OPTION = re.compile(r'^([a-z]+)(\d[\d.]*)$')


@dataclass(frozen=True)
class BlockSpec:
    """One decoded block definition (before depth scaling, so ``repeats`` is the unscaled count).

    >>> decode_block('ir_r2_k3_s2_e6_c24_se0.25').exp_ratio
    6.0
    """

    block_type: str
    out_chs: int
    stride: int
    repeats: int
    kernel_size: KernelSize = 3
    exp_ratio: float = 1.0
    se_ratio: float = 0.0
    exp_kernel_size: KernelSize = 1
    pw_kernel_size: KernelSize = 1
    act_layer: Optional[str] = None
    skip: Optional[bool] = None  # None: the block type's default; True / False: forced by 'skip' / 'noskip'
    group_size: Optional[int] = None  # None: the block type's default (depthwise for 'ds'/'ir', dense for 'er'/'cn')
    force_in_chs: int = 0
    num_experts: int = 0
    s2d: bool = False


def _int_option(options: Dict[str, str], key: str, block_str: str) -> int:
    value = options[key]
    if not value.isdigit():
        raise ValueError(f'block string {block_str!r}: option {key!r} needs an integer, got {value!r}')
    return int(value)


def _kernel_option(options: Dict[str, str], key: str, block_str: str, default: int) -> KernelSize:
    """An int kernel size, or a tuple of them for a mixed-kernel convolution written with dots (``k3.5.7``)."""
    if key not in options:
        return default
    parts = options[key].split('.')
    if not all(part.isdigit() and int(part) > 0 for part in parts):
        raise ValueError(f'block string {block_str!r}: option {key!r} needs an integer kernel size or several '
                         f'joined by dots (k3.5.7), got {options[key]!r}')
    return int(parts[0]) if len(parts) == 1 else tuple(int(part) for part in parts)


def decode_block(block_str: str) -> BlockSpec:
    """Decode one architecture string into a :class:`BlockSpec`.

    >>> decode_block('ds_r1_k3_s1_c16_nre')
    BlockSpec(block_type='ds', out_chs=16, stride=1, repeats=1, kernel_size=3, exp_ratio=1.0, se_ratio=0.0, \
exp_kernel_size=1, pw_kernel_size=1, act_layer='relu', skip=None, group_size=None, force_in_chs=0, num_experts=0, \
s2d=False)
    >>> decode_block('ir_r1_k3.5.7_a1.1_s2_e6_c40').kernel_size
    (3, 5, 7)
    """
    if not isinstance(block_str, str) or not block_str:
        raise TypeError(f'a block definition must be a non-empty string like "ir_r1_k3_s1_e6_c16", got {block_str!r}')
    block_type, *ops = block_str.split('_')
    if block_type not in BLOCK_TYPES:
        raise ValueError(f'block string {block_str!r}: unknown block type {block_type!r}; valid: {BLOCK_TYPES}')
    options: Dict[str, str] = {}
    act_layer = None
    skip = None
    for op in ops:
        if op in ('skip', 'noskip'):
            skip = op == 'skip'
            continue
        if op.startswith('n') and op[1:] in ACT_CODES:
            act_layer = ACT_CODES[op[1:]]
            continue
        match = _OPTION.match(op)
        if match is None or match.group(1) not in _NUMERIC_KEYS:
            raise ValueError(f'block string {block_str!r}: cannot read option {op!r}; valid keys: '
                             f'{sorted(_NUMERIC_KEYS)}, n<{"|".join(ACT_CODES)}>, skip, noskip')
        options[match.group(1)] = match.group(2)
    required = ('r', 'k', 's', 'c') + (('e',) if block_type in ('ir', 'er') else ())
    missing = [key for key in required if key not in options]
    if missing:
        raise ValueError(f'block string {block_str!r} lacks option(s) {missing}; '
                         f'a {block_type!r} block needs {required}')
    stride = _int_option(options, 's', block_str)
    if stride not in (1, 2):
        raise ValueError(f'block string {block_str!r}: stride {stride} is not supported; valid: 1, 2')
    repeats = _int_option(options, 'r', block_str)
    if repeats < 1:
        raise ValueError(f'block string {block_str!r}: repeats must be >= 1, got {repeats}')
    allowed = {'fc': ('er',), 'cc': ('ir',), 'd': ('ds', 'ir')}
    for key, types in allowed.items():
        if key in options and block_type not in types:
            raise ValueError(f'block string {block_str!r}: option {key!r} only applies to {types} blocks')
    kernel_size = _kernel_option(options, 'k', block_str, 3)
    if block_type == 'cn' and not isinstance(kernel_size, int):
        raise ValueError(f"block string {block_str!r}: a 'cn' block takes one kernel size, got {kernel_size}")
    s2d = bool(_int_option(options, 'd', block_str)) if 'd' in options else False
    if s2d and stride != 1:
        raise ValueError(f"block string {block_str!r}: a space-to-depth block ('d1') downsamples itself; it needs s1")
    return BlockSpec(
        block_type=block_type,
        out_chs=_int_option(options, 'c', block_str),
        stride=stride,
        repeats=repeats,
        kernel_size=kernel_size,
        # 'ds' and 'cn' blocks have no expansion even when a string carries 'e1'.
        exp_ratio=float(options['e']) if block_type in ('ir', 'er') else 1.0,
        se_ratio=float(options.get('se', 0.0)),
        exp_kernel_size=_kernel_option(options, 'a', block_str, 1),
        pw_kernel_size=_kernel_option(options, 'p', block_str, 1),
        act_layer=act_layer,
        skip=skip,
        group_size=_int_option(options, 'gs', block_str) if 'gs' in options else None,
        force_in_chs=_int_option(options, 'fc', block_str) if 'fc' in options else 0,
        num_experts=_int_option(options, 'cc', block_str) if 'cc' in options else 0,
        s2d=s2d,
    )


def _scale_stage(specs: Sequence[BlockSpec], multiplier: float, depth_trunc: str = 'ceil') -> List[BlockSpec]:
    """Expand one stage's definitions into per-block specs, scaling the stage depth by ``multiplier``.

    The total depth is rounded up (``depth_trunc='round'``: to the nearest, at least 1), then shared out from the
    last definition backwards (timm's EfficientNet rule), which keeps a stage's leading single blocks single for as
    long as possible.
    """
    remaining = sum(spec.repeats for spec in specs)
    if depth_trunc == 'round':
        remaining_scaled = max(1, round(remaining * multiplier))
    else:
        remaining_scaled = int(math.ceil(remaining * multiplier))
    counts = []
    for spec in reversed(specs):
        # Same float expression as timm so that rounding ties fall the same way.
        count = max(1, round(spec.repeats / remaining * remaining_scaled))
        counts.append(count)
        remaining -= spec.repeats
        remaining_scaled -= count
    out: List[BlockSpec] = []
    for spec, count in zip(specs, reversed(counts)):
        out.extend([spec] * count)
    return out


def _is_positive_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def decode_arch(block_defs: Sequence[Sequence[str]], depth_multiplier: Union[float, Sequence[float]] = 1.0,
                fix_first_last: bool = False, depth_trunc: str = 'ceil', group_size: Optional[int] = None,
                experts_multiplier: int = 1) -> List[List[BlockSpec]]:
    """Decode per-stage architecture strings into per-block specs, with depth scaling.

    ``depth_multiplier`` is one number or one per stage. ``fix_first_last`` keeps the first and last stages at their
    unscaled depth (EfficientNet-Lite, MobileNetV2-d); ``depth_trunc`` rounds the scaled depths up (``'ceil'``) or
    to the nearest (``'round'``). ``group_size`` sets the convolution group size of every block whose string gives
    none; ``experts_multiplier`` multiplies the CondConv experts of the blocks that have them.

    >>> [len(stage) for stage in decode_arch([['ds_r1_k3_s1_c16'], ['ir_r2_k3_s2_e6_c24']], 1.5)]
    [2, 3]
    """
    if isinstance(block_defs, str) or not block_defs:
        raise TypeError(f'block_defs must be a non-empty list of stages (lists of block strings), got {block_defs!r}')
    if isinstance(depth_multiplier, (list, tuple)):
        if len(depth_multiplier) != len(block_defs) or not all(_is_positive_number(m) for m in depth_multiplier):
            raise ValueError(f'depth_multiplier as a sequence needs one positive number per stage '
                             f'({len(block_defs)}), got {depth_multiplier!r}')
        multipliers = tuple(depth_multiplier)
    elif not _is_positive_number(depth_multiplier):
        raise ValueError(f'depth_multiplier must be a positive number, got {depth_multiplier!r}')
    else:
        multipliers = (depth_multiplier,) * len(block_defs)
    if depth_trunc not in DEPTH_TRUNCS:
        raise ValueError(f'depth_trunc={depth_trunc!r} is not supported; valid: {DEPTH_TRUNCS}')
    if group_size is not None and (isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 0):
        raise ValueError(f'group_size must be None or an int >= 0 (0: dense, 1: depthwise), got {group_size!r}')
    if isinstance(experts_multiplier, bool) or not isinstance(experts_multiplier, int) or experts_multiplier < 1:
        raise ValueError(f'experts_multiplier must be an int >= 1, got {experts_multiplier!r}')
    stages = []
    last = len(block_defs) - 1
    for idx, stage_strs in enumerate(block_defs):
        if isinstance(stage_strs, str) or not stage_strs:
            raise TypeError(f'stage {idx} must be a non-empty list of block strings, got {stage_strs!r}')
        specs = [decode_block(s) for s in stage_strs]
        specs = [replace(
            spec,
            group_size=group_size if spec.group_size is None else spec.group_size,
            num_experts=spec.num_experts * experts_multiplier) for spec in specs]
        multiplier = 1.0 if fix_first_last and idx in (0, last) else multipliers[idx]
        stages.append(_scale_stage(specs, multiplier, depth_trunc))
    return stages


def round_channels(channels: int, multiplier: float = 1.0, divisor: int = 8, round_limit: float = 0.9) -> int:
    """Scale a channel count by ``multiplier`` and round it to a multiple of ``divisor``.

    >>> round_channels(32, 1.1)
    32
    >>> round_channels(1280, 1.4)
    1792
    """
    if not multiplier:
        return channels
    return make_divisible(channels * multiplier, divisor, round_limit=round_limit)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation as the EfficientNet/MobileNet blocks use it (``conv_reduce``, ``conv_expand``).

    >>> SqueezeExcite(32, 8)(torch.ones(1, 32, 4, 4)).shape
    torch.Size([1, 32, 4, 4])
    """

    def __init__(self, channels: int, rd_channels: int, act_layer: ActLayer = 'relu',
                 gate_layer: ActLayer = 'sigmoid') -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, rd_channels, 1, bias=True)
        self.act1 = create_act_layer(act_layer, inplace=True)
        self.conv_expand = nn.Conv2d(rd_channels, channels, 1, bias=True)
        self.gate = create_act_layer(gate_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.conv_expand(self.act1(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        return x * self.gate(scale)


@dataclass(frozen=True)
class SEConfig:
    """How a family sizes and builds its squeeze-excite.

    ``from_expanded``: the ratio applies to the expanded width as is (MobileNetV3); otherwise it is relative to
    the block input, so it is divided by the expansion ratio (EfficientNet). ``round_divisible``: reduced width
    rounded to a multiple of 8 instead of to the nearest integer. ``force_act``: activation replacing the block's.
    ``layer``: ``'se'`` squeeze-excite, or ``'gc'`` global context (its reduced width rounded up, timm's rule).

    >>> SEConfig().build(96, 0.25, 6.0, 'swish').conv_reduce.out_channels
    4
    """

    from_expanded: bool = False
    round_divisible: bool = False
    gate_layer: str = 'sigmoid'
    force_act: Optional[str] = None
    layer: str = 'se'

    def build(self, channels: int, se_ratio: float, exp_ratio: float, act_layer: ActLayer,
              rd_channels: Optional[int] = None) -> nn.Module:
        """The attention module over ``channels``; ``rd_channels`` fixes its reduced width (pruned models)."""
        ratio = se_ratio if self.from_expanded else se_ratio / exp_ratio
        if self.layer == 'gc':
            return GlobalContext(channels, rd_ratio=ratio, rd_channels=rd_channels, act_layer=act_layer)
        if rd_channels is None:
            reduced = channels * ratio
            rd_channels = make_divisible(reduced, 8) if self.round_divisible else round(reduced)
        return SqueezeExcite(channels, rd_channels, act_layer=self.force_act or act_layer, gate_layer=self.gate_layer)


SE_LAYERS = ('se', 'gc')


def _norm_act(channels: int, norm_kwargs: Dict[str, float], act_layer: ActLayer, apply_act: bool = True,
              norm_layer: Optional[NormLayer] = None) -> nn.Module:
    if norm_layer is not None:
        return norm_layer(channels, act_layer=act_layer, apply_act=apply_act)
    return BatchNormAct2d(channels, apply_act=apply_act, act_layer=act_layer, inplace=True, **norm_kwargs)


def _drop_path(rate: float) -> nn.Module:
    return DropPath(rate) if rate else nn.Identity()


def conv_groups(group_size: Optional[int], channels: int) -> int:
    """Groups of a convolution over ``channels`` with ``group_size`` channels each (0 or None: one dense group).

    >>> conv_groups(1, 32), conv_groups(8, 32), conv_groups(0, 32)
    (32, 4, 1)
    """
    if not group_size:
        return 1
    if channels % group_size:
        raise ValueError(f'group_size={group_size} does not divide the {channels} channels of a convolution')
    return channels // group_size


def _aa(aa_layer: Optional[AaLayer], channels: int, stride: int) -> nn.Module:
    """The anti-aliasing downsampler a strided block puts after its strided convolution (which then keeps stride 1)."""
    return aa_layer(channels=channels, stride=stride) if aa_layer is not None and stride > 1 else nn.Identity()


def add_skip(block: nn.Module, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The end of a block with an optional residual: ``block.drop_path(out) + x`` when ``block.has_skip``, else
    ``out``."""
    return block.drop_path(out) + x if block.has_skip else out


class ConvBnAct(nn.Module):
    """``cn``: one convolution with norm and activation; a residual only when forced with ``skip``.

    >>> ConvBnAct(8, 8, 3, skip=True)(torch.ones(1, 8, 4, 4)).shape
    torch.Size([1, 8, 4, 4])
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                 pad_type: str = '', skip: bool = False, act_layer: ActLayer = 'relu',
                 norm_kwargs: Optional[Dict[str, float]] = None, drop_path_rate: float = 0.0, group_size: int = 0,
                 norm_layer: Optional[NormLayer] = None, aa_layer: Optional[AaLayer] = None) -> None:
        super().__init__()
        self.has_skip = skip and stride == 1 and in_chs == out_chs
        use_aa = aa_layer is not None and stride > 1
        self.conv = create_conv2d(in_chs, out_chs, kernel_size, stride=1 if use_aa else stride, dilation=dilation,
                                  padding=pad_type, groups=conv_groups(group_size, in_chs))
        self.bn1 = _norm_act(out_chs, norm_kwargs or {}, act_layer, norm_layer=norm_layer)
        self.aa = _aa(aa_layer, out_chs, stride)
        self.drop_path = _drop_path(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.aa(self.bn1(self.conv(x)))
        return add_skip(self, out, x)


class _SpaceToDepthEntry:
    """Mixin: the 2x2 stride-2 convolution (``conv_s2d``, ``bn_s2d``) that starts a space-to-depth region.

    It folds each 2x2 patch into channels (4x the width), so the block's own depthwise kernel halves (rounded up).
    """

    def _init_s2d(self, s2d: int, in_chs: int, dw_kernel_size: KernelSize, pad_type: str,
                  norm_kwargs: Dict[str, float], act_layer: ActLayer,
                  norm_layer: Optional[NormLayer]) -> Tuple[int, KernelSize, str]:
        if s2d != 1:
            self.conv_s2d = None
            self.bn_s2d = None
            return in_chs, dw_kernel_size, pad_type
        if not isinstance(dw_kernel_size, int):
            raise ValueError(f'a space-to-depth block takes one depthwise kernel size, got {dw_kernel_size}')
        s2d_chs = in_chs * 4
        self.conv_s2d = create_conv2d(in_chs, s2d_chs, 2, stride=2, padding='same')
        self.bn_s2d = _norm_act(s2d_chs, norm_kwargs, act_layer, norm_layer=norm_layer)
        dw_kernel_size = (dw_kernel_size + 1) // 2
        return s2d_chs, dw_kernel_size, 'same' if dw_kernel_size == 2 else pad_type

    def _s2d(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv_s2d is not None:
            x = self.bn_s2d(self.conv_s2d(x))
        return x


class DepthwiseSeparableConv(_SpaceToDepthEntry, nn.Module):
    """``ds`` / ``dsa``: depthwise conv, optional squeeze-excite, pointwise projection (activated for ``dsa``).

    >>> DepthwiseSeparableConv(16, 16)(torch.ones(1, 16, 4, 4)).shape
    torch.Size([1, 16, 4, 4])
    """

    def __init__(self, in_chs: int, out_chs: int, dw_kernel_size: KernelSize = 3, stride: int = 1,
                 dilation: int = 1, pad_type: str = '', noskip: bool = False, pw_kernel_size: KernelSize = 1,
                 pw_act: bool = False, act_layer: ActLayer = 'relu', norm_kwargs: Optional[Dict[str, float]] = None,
                 se_layer: Optional[Callable[[int], nn.Module]] = None, drop_path_rate: float = 0.0,
                 group_size: int = 1, s2d: int = 0, norm_layer: Optional[NormLayer] = None,
                 aa_layer: Optional[AaLayer] = None) -> None:
        super().__init__()
        norm_kwargs = norm_kwargs or {}
        self.has_skip = stride == 1 and in_chs == out_chs and not noskip
        in_chs, dw_kernel_size, dw_pad_type = self._init_s2d(
            s2d, in_chs, dw_kernel_size, pad_type, norm_kwargs, act_layer, norm_layer)
        use_aa = aa_layer is not None and stride > 1 and s2d != 1
        self.conv_dw = create_conv2d_any(in_chs, in_chs, dw_kernel_size, stride=1 if use_aa else stride,
                                         dilation=dilation, padding=dw_pad_type,
                                         groups=conv_groups(group_size, in_chs))
        self.bn1 = _norm_act(in_chs, norm_kwargs, act_layer, norm_layer=norm_layer)
        self.aa = _aa(aa_layer if use_aa else None, in_chs, stride)
        self.se = se_layer(in_chs) if se_layer is not None else nn.Identity()
        self.conv_pw = create_conv2d_any(in_chs, out_chs, pw_kernel_size, padding=pad_type)
        self.bn2 = _norm_act(out_chs, norm_kwargs, act_layer, apply_act=pw_act, norm_layer=norm_layer)
        self.drop_path = _drop_path(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.aa(self.bn1(self.conv_dw(self._s2d(x))))
        out = self.bn2(self.conv_pw(self.se(out)))
        return add_skip(self, out, x)


class InvertedResidual(_SpaceToDepthEntry, nn.Module):
    """``ir`` (MBConv): pointwise expansion, depthwise conv, optional squeeze-excite, linear projection.

    ``mid_chs`` fixes the expanded width (pruned models) instead of deriving it from ``exp_ratio``.

    >>> InvertedResidual(16, 24, stride=2, exp_ratio=6.0)(torch.ones(1, 16, 8, 8)).shape
    torch.Size([1, 24, 4, 4])
    """

    def __init__(self, in_chs: int, out_chs: int, dw_kernel_size: KernelSize = 3, stride: int = 1,
                 dilation: int = 1, pad_type: str = '', noskip: bool = False, exp_ratio: float = 1.0,
                 exp_kernel_size: KernelSize = 1, pw_kernel_size: KernelSize = 1, act_layer: ActLayer = 'relu',
                 norm_kwargs: Optional[Dict[str, float]] = None,
                 se_layer: Optional[Callable[[int], nn.Module]] = None, drop_path_rate: float = 0.0,
                 group_size: int = 1, s2d: int = 0, norm_layer: Optional[NormLayer] = None,
                 aa_layer: Optional[AaLayer] = None, mid_chs: Optional[int] = None, num_experts: int = 0) -> None:
        super().__init__()
        norm_kwargs = norm_kwargs or {}
        self.has_skip = in_chs == out_chs and stride == 1 and not noskip
        in_chs, dw_kernel_size, dw_pad_type = self._init_s2d(
            s2d, in_chs, dw_kernel_size, pad_type, norm_kwargs, act_layer, norm_layer)
        use_aa = aa_layer is not None and stride > 1 and s2d != 1
        mid_chs = mid_chs or make_divisible(in_chs * exp_ratio)
        self.conv_pw = create_conv2d_any(in_chs, mid_chs, exp_kernel_size, padding=pad_type, num_experts=num_experts)
        self.bn1 = _norm_act(mid_chs, norm_kwargs, act_layer, norm_layer=norm_layer)
        self.conv_dw = create_conv2d_any(mid_chs, mid_chs, dw_kernel_size, stride=1 if use_aa else stride,
                                         dilation=dilation, padding=dw_pad_type,
                                         groups=conv_groups(group_size, mid_chs), num_experts=num_experts)
        self.bn2 = _norm_act(mid_chs, norm_kwargs, act_layer, norm_layer=norm_layer)
        self.aa = _aa(aa_layer if use_aa else None, mid_chs, stride)
        self.se = se_layer(mid_chs) if se_layer is not None else nn.Identity()
        self.conv_pwl = create_conv2d_any(mid_chs, out_chs, pw_kernel_size, padding=pad_type,
                                          num_experts=num_experts)
        self.bn3 = _norm_act(out_chs, norm_kwargs, act_layer, apply_act=False, norm_layer=norm_layer)
        self.drop_path = _drop_path(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn1(self.conv_pw(self._s2d(x)))
        out = self.se(self.aa(self.bn2(self.conv_dw(out))))
        out = self.bn3(self.conv_pwl(out))
        return add_skip(self, out, x)


class CondConvResidual(InvertedResidual):
    """``ir`` with CondConv experts (``cc<n>``): every convolution mixes ``num_experts`` kernels per sample, routed
    by a sigmoid of a linear map of the pooled block input (``routing_fn``).

    >>> CondConvResidual(16, 16, exp_ratio=4.0, num_experts=4)(torch.ones(2, 16, 8, 8)).shape
    torch.Size([2, 16, 8, 8])
    """

    def __init__(self, in_chs: int, out_chs: int, dw_kernel_size: int = 3, stride: int = 1, dilation: int = 1,
                 pad_type: str = '', noskip: bool = False, exp_ratio: float = 1.0, exp_kernel_size: int = 1,
                 pw_kernel_size: int = 1, act_layer: ActLayer = 'relu',
                 norm_kwargs: Optional[Dict[str, float]] = None,
                 se_layer: Optional[Callable[[int], nn.Module]] = None, drop_path_rate: float = 0.0,
                 group_size: int = 1, norm_layer: Optional[NormLayer] = None, num_experts: int = 4) -> None:
        super().__init__(in_chs, out_chs, dw_kernel_size, stride=stride, dilation=dilation, pad_type=pad_type,
                         noskip=noskip, exp_ratio=exp_ratio, exp_kernel_size=exp_kernel_size,
                         pw_kernel_size=pw_kernel_size, act_layer=act_layer, norm_kwargs=norm_kwargs,
                         se_layer=se_layer, drop_path_rate=drop_path_rate, group_size=group_size,
                         norm_layer=norm_layer, num_experts=num_experts)
        self.num_experts = num_experts
        self.routing_fn = nn.Linear(in_chs, num_experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        routing = torch.sigmoid(self.routing_fn(x.mean((2, 3))))
        out = self.bn1(self.conv_pw(x, routing))
        out = self.se(self.bn2(self.conv_dw(out, routing)))
        out = self.bn3(self.conv_pwl(out, routing))
        return add_skip(self, out, x)


class EdgeResidual(nn.Module):
    """``er`` (fused MBConv): a full expansion convolution carrying the stride, then a linear projection.

    ``force_in_chs`` sizes the expansion from another width than the input (EfficientNet-EdgeTPU's first block);
    ``mid_chs`` fixes it outright.

    >>> EdgeResidual(24, 48, stride=2, exp_ratio=4.0)(torch.ones(1, 24, 8, 8)).shape
    torch.Size([1, 48, 4, 4])
    """

    def __init__(self, in_chs: int, out_chs: int, exp_kernel_size: int = 3, stride: int = 1, dilation: int = 1,
                 pad_type: str = '', noskip: bool = False, exp_ratio: float = 1.0, pw_kernel_size: int = 1,
                 act_layer: ActLayer = 'relu', norm_kwargs: Optional[Dict[str, float]] = None,
                 se_layer: Optional[Callable[[int], nn.Module]] = None, drop_path_rate: float = 0.0,
                 group_size: int = 0, force_in_chs: int = 0, norm_layer: Optional[NormLayer] = None,
                 aa_layer: Optional[AaLayer] = None, mid_chs: Optional[int] = None) -> None:
        super().__init__()
        norm_kwargs = norm_kwargs or {}
        mid_chs = mid_chs or make_divisible((force_in_chs or in_chs) * exp_ratio)
        self.has_skip = in_chs == out_chs and stride == 1 and not noskip
        use_aa = aa_layer is not None and stride > 1
        self.conv_exp = create_conv2d_any(in_chs, mid_chs, exp_kernel_size, stride=1 if use_aa else stride,
                                          dilation=dilation, padding=pad_type,
                                          groups=conv_groups(group_size, mid_chs))
        self.bn1 = _norm_act(mid_chs, norm_kwargs, act_layer, norm_layer=norm_layer)
        self.aa = _aa(aa_layer, mid_chs, stride)
        self.se = se_layer(mid_chs) if se_layer is not None else nn.Identity()
        self.conv_pwl = create_conv2d_any(mid_chs, out_chs, pw_kernel_size, padding=pad_type)
        self.bn2 = _norm_act(out_chs, norm_kwargs, act_layer, apply_act=False, norm_layer=norm_layer)
        self.drop_path = _drop_path(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.se(self.aa(self.bn1(self.conv_exp(x))))
        out = self.bn2(self.conv_pwl(out))
        return add_skip(self, out, x)


def _make_block(spec: BlockSpec, in_chs: int, out_chs: int, stride: int, dilation: int, act_layer: ActLayer,
                pad_type: str, norm_kwargs: Dict[str, float], se_config: SEConfig,
                drop_path_rate: float, norm_layer: Optional[NormLayer] = None, aa_layer: Optional[AaLayer] = None,
                s2d: int = 0, exp_ratio: Optional[float] = None, mid_chs: Optional[int] = None,
                se_chs: Optional[int] = None, force_in_chs: int = 0) -> nn.Module:
    common = dict(stride=stride, dilation=dilation, pad_type=pad_type, act_layer=act_layer, norm_kwargs=norm_kwargs,
                  drop_path_rate=drop_path_rate, norm_layer=norm_layer)
    if spec.group_size is not None:
        common['group_size'] = spec.group_size
    if spec.block_type == 'cn':
        return ConvBnAct(in_chs, out_chs, spec.kernel_size, skip=spec.skip is True, aa_layer=aa_layer, **common)
    exp_ratio = spec.exp_ratio if exp_ratio is None else exp_ratio
    se_layer = None
    if spec.se_ratio:
        # the entry of a space-to-depth region sizes its squeeze-excite from the input before the 4x fold
        se_ratio = spec.se_ratio / 4 if s2d == 1 else spec.se_ratio
        se_layer = partial(se_config.build, se_ratio=se_ratio, exp_ratio=exp_ratio, act_layer=act_layer,
                           rd_channels=se_chs)
    if spec.block_type in ('ds', 'dsa'):
        return DepthwiseSeparableConv(
            in_chs, out_chs, spec.kernel_size, pw_kernel_size=spec.pw_kernel_size, pw_act=spec.block_type == 'dsa',
            noskip=spec.block_type == 'dsa' or spec.skip is False, se_layer=se_layer, s2d=s2d, aa_layer=aa_layer,
            **common)
    if spec.block_type == 'ir' and spec.num_experts:
        return CondConvResidual(
            in_chs, out_chs, spec.kernel_size, exp_ratio=exp_ratio, exp_kernel_size=spec.exp_kernel_size,
            pw_kernel_size=spec.pw_kernel_size, noskip=spec.skip is False, se_layer=se_layer,
            num_experts=spec.num_experts, **common)
    if spec.block_type == 'ir':
        return InvertedResidual(
            in_chs, out_chs, spec.kernel_size, exp_ratio=exp_ratio, exp_kernel_size=spec.exp_kernel_size,
            pw_kernel_size=spec.pw_kernel_size, noskip=spec.skip is False, se_layer=se_layer, s2d=s2d,
            aa_layer=aa_layer, mid_chs=mid_chs, **common)
    return EdgeResidual(
        in_chs, out_chs, spec.kernel_size, exp_ratio=exp_ratio, pw_kernel_size=spec.pw_kernel_size,
        noskip=spec.skip is False, se_layer=se_layer, force_in_chs=force_in_chs, aa_layer=aa_layer,
        mid_chs=mid_chs, **common)


BlockWidths = Sequence[Tuple[int, Sequence[Tuple[int, int]]]]


def _check_block_widths(block_widths: BlockWidths, stages: Sequence[Sequence[BlockSpec]]) -> None:
    counts = [len(stage) for stage in stages]
    given = [len(widths) for _, widths in block_widths]
    if given != counts:
        raise ValueError(f'block_widths lists {given} blocks per stage, but the architecture has {counts}')


def build_stages(
        stages: Sequence[Sequence[BlockSpec]],
        in_chs: int,
        round_chs: Callable[[int], int],
        act_layer: ActLayer,
        se_config: SEConfig,
        output_stride: int = 32,
        pad_type: str = '',
        norm_kwargs: Optional[Dict[str, float]] = None,
        drop_path_rate: float = 0.0,
        norm_layer: Optional[NormLayer] = None,
        aa_layer: Optional[AaLayer] = None,
        block_widths: Optional[BlockWidths] = None,
) -> Tuple[List[nn.Sequential], List[Dict[str, object]], int]:
    """Instantiate decoded stages after a stride-2 stem of ``in_chs`` channels.

    Returns the stages (one ``nn.Sequential`` each), the feature levels and the last stage's channels. A level
    ends every stage that is followed by a strided stage, plus the last stage; the stem is a level of its own
    when the first block is strided. Strides that would take the network past ``output_stride`` are dropped and
    the depthwise convolutions from the next block on are dilated instead (doubling per dropped stride).

    A space-to-depth entry (``d1``) downsamples by 2 itself and widens the blocks up to the next strided block 4x;
    that block drops its stride instead (and its expansion ratio by 4), so no level ends inside the region.
    ``block_widths`` gives, per stage, its output width and each block's (expanded width, squeeze-excite width),
    replacing the derived ones (pruned models).

    >>> stages, info, chs = build_stages(decode_arch([['ds_r1_k3_s1_c16'], ['ir_r1_k3_s2_e6_c24']]), 32,
    ...                                  round_chs=round_channels, act_layer='relu', se_config=SEConfig())
    >>> [(level['module'], level['reduction']) for level in info], chs
    ([('blocks.0', 2), ('blocks.1', 4)], 24)
    """
    norm_kwargs = dict(norm_kwargs or {})
    if block_widths is not None:
        _check_block_widths(block_widths, stages)
    total_blocks = sum(len(stage) for stage in stages)
    reduction, dilation = 2, 1
    feature_info: List[Dict[str, object]] = []
    if stages[0][0].stride > 1 or stages[0][0].s2d:
        feature_info.append(dict(num_chs=in_chs, reduction=reduction, module='bn1'))
    built: List[nn.Sequential] = []
    block_idx = 0
    space2depth = 0  # 0: none, 1: the entry block, 2: inside the region (until the next strided block)
    for stage_idx, stage in enumerate(stages):
        blocks = []
        for i, spec in enumerate(stage):
            stride = spec.stride if i == 0 else 1
            exp_ratio = spec.exp_ratio
            block_s2d = 0
            if not space2depth and spec.s2d:
                space2depth = 1
                reduction *= 2
            if space2depth:
                if space2depth == 2 and stride == 2:
                    stride = 1
                    exp_ratio /= 4
                    space2depth = 0
                else:
                    block_s2d = space2depth
            block_dilation = dilation  # a block keeps its input dilation; the blocks after it see the new one
            stride, reduction, dilation = limit_output_stride(stride, reduction, dilation, output_stride)
            out_chs = round_chs(spec.out_chs)
            mid_chs = se_chs = None
            if block_widths is not None:
                out_chs = block_widths[stage_idx][0]
                mid_chs, se_chs = block_widths[stage_idx][1][i]
            if block_s2d:
                out_chs *= 4
            blocks.append(_make_block(
                spec, in_chs, out_chs, stride, block_dilation, spec.act_layer or act_layer, pad_type, norm_kwargs,
                se_config, drop_path_rate * block_idx / total_blocks, norm_layer=norm_layer, aa_layer=aa_layer,
                s2d=block_s2d, exp_ratio=exp_ratio, mid_chs=mid_chs, se_chs=se_chs,
                force_in_chs=round_chs(spec.force_in_chs) if spec.force_in_chs else 0))
            in_chs = out_chs
            block_idx += 1
            if i == len(stage) - 1:
                # a level never ends inside a space-to-depth region (its closing block drops the stride)
                ends_level = stage_idx == len(stages) - 1 or (stages[stage_idx + 1][0].stride > 1 and not space2depth)
            if space2depth == 1:
                space2depth = 2
        built.append(nn.Sequential(*blocks))
        if ends_level:
            feature_info.append(dict(num_chs=in_chs, reduction=reduction, module=f'blocks.{stage_idx}'))
    return built, feature_info, in_chs


def limit_output_stride(stride: int, reduction: int, dilation: int, output_stride: int) -> Tuple[int, int, int]:
    """A block's ``stride``, and the network's ``reduction`` and ``dilation`` after it, when the reduction may not
    pass ``output_stride``: a stride that would pass it becomes dilation (of the blocks that follow).

    >>> limit_output_stride(2, 8, 1, 16), limit_output_stride(2, 16, 1, 16)
    ((2, 16, 1), (1, 16, 2))
    """
    if stride > 1:
        if reduction * stride > output_stride:
            return 1, reduction, dilation * stride
        reduction *= stride
    return stride, reduction, dilation


def run_blocks(stages: Iterable[nn.Module], x: torch.Tensor, grad_checkpointing: bool) -> torch.Tensor:
    """Run ``stages`` in order, checkpointing each block when ``grad_checkpointing`` is set (saves training memory).

    >>> run_blocks(nn.Sequential(nn.Sequential(nn.Identity())), torch.ones(1), False)
    tensor([1.])
    """
    for stage in stages:
        if grad_checkpointing and not torch.jit.is_scripting():
            for block in stage:
                x = checkpoint(block, x, use_reentrant=False)
        else:
            x = stage(x)
    return x


PAD_TYPES = ('', 'same')


def check_model_args(num_classes: int, in_chans: int, output_stride: int, output_strides: Sequence[int],
                     channel_multiplier: float, depth_multiplier: float, pad_type: str, drop_rate: float,
                     drop_path_rate: float, global_pool: str) -> None:
    """Reject constructor values the EfficientNet-style models cannot build, naming the valid ones.

    >>> check_model_args(1000, 3, 32, (8, 16, 32), 1.0, 1.0, '', 0.0, 0.0, 'avg')
    """
    def is_int(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if not is_int(num_classes) or num_classes < 0:
        raise ValueError(f'num_classes must be an int >= 0 (0 removes the classifier), got {num_classes!r}')
    if not is_int(in_chans) or in_chans < 1:
        raise ValueError(f'in_chans must be an int >= 1, got {in_chans!r}')
    if output_stride not in output_strides:
        raise ValueError(f'output_stride={output_stride!r} is not supported; valid: {tuple(output_strides)}')
    if not _is_positive_number(channel_multiplier):
        raise ValueError(f'channel_multiplier must be a positive number, got {channel_multiplier!r}')
    per_stage = isinstance(depth_multiplier, (list, tuple)) and depth_multiplier
    depths = depth_multiplier if per_stage else (depth_multiplier,)
    if not all(_is_positive_number(value) for value in depths):
        raise ValueError(f'depth_multiplier must be a positive number (or one per stage), got {depth_multiplier!r}')
    if pad_type not in PAD_TYPES:
        raise ValueError(f"pad_type={pad_type!r} is not supported; valid: {PAD_TYPES} ('same' = TensorFlow padding)")
    for name, value in (('drop_rate', drop_rate), ('drop_path_rate', drop_path_rate)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
            raise ValueError(f'{name} must be a number in [0, 1), got {value!r}')
    check_pool(num_classes, global_pool)


def check_pool(num_classes: int, global_pool: str) -> None:
    """A classifier needs pooled features: ``global_pool=''`` is only valid together with ``num_classes=0``.

    >>> check_pool(0, '')
    """
    if global_pool not in POOL_TYPES:
        raise ValueError(f'unknown global_pool {global_pool!r}; valid: {POOL_TYPES}')
    if not global_pool and num_classes:
        raise ValueError(f"global_pool='' (no pooling) needs num_classes=0, got num_classes={num_classes}; "
                         f"pass num_classes=0 or a pool type from {POOL_TYPES[1:]}")


def take_indices(indices: Optional[Union[int, Sequence[int]]], num_levels: int) -> List[int]:
    """Feature levels selected by ``indices``: None = all, an int n = the last n, a sequence may count from the end.

    >>> take_indices(2, 5), take_indices([0, -1], 5)
    ([3, 4], [0, 4])
    """
    if indices is None:
        return list(range(num_levels))
    if isinstance(indices, int) and not isinstance(indices, bool):
        if not 1 <= indices <= num_levels:
            raise ValueError(f'indices={indices} (the last n levels) must be in [1, {num_levels}]')
        return list(range(num_levels - indices, num_levels))
    taken = []
    for idx in indices:
        if isinstance(idx, bool) or not isinstance(idx, int) or not -num_levels <= idx < num_levels:
            raise ValueError(f'feature level index {idx!r} in {list(indices)} is out of range; '
                             f'valid: ints in [{-num_levels}, {num_levels - 1}]')
        taken.append(idx % num_levels)
    if not taken:
        raise ValueError(f'indices is empty; give at least one level index in [{-num_levels}, {num_levels - 1}]')
    return taken


class EfficientTrunk(HeadApi, nn.Module):
    """Stride-2 stem (``conv_stem``, ``bn1``) and decoded stages (``blocks``) of the EfficientNet-style models.

    Subclasses call :meth:`_init_trunk` and add their head; this class supplies gradient checkpointing and the
    intermediate-feature helpers over the levels in ``feature_info``.
    """

    classifier_name = 'classifier'
    #: the head's layers (by attribute name) that go with the classifier when the model is pruned
    head_layers: Tuple[str, ...] = ()
    #: the head's conv runs before the pooling (``forward_features`` ends with it): ``prune_norm`` drops it too, and
    #: without it the features are the last level's
    head_in_features: bool = False

    def _init_trunk(self, block_defs: Sequence[Sequence[str]], in_chans: int, stem_size: int, fix_stem: bool,
                    channel_multiplier: float, depth_multiplier: float, fix_first_last: bool, act_layer: ActLayer,
                    pad_type: str, norm_kwargs: Dict[str, float], se_config: SEConfig, output_stride: int,
                    drop_path_rate: float, stem_kernel_size: int = 3, depth_trunc: str = 'ceil',
                    group_size: Optional[int] = None, experts_multiplier: int = 1, channel_divisor: int = 8,
                    round_limit: float = 0.9, norm_layer: Optional[NormLayer] = None,
                    aa_layer: Optional[AaLayer] = None, block_widths: Optional[BlockWidths] = None) -> int:
        """Build the stem and the stages; the keyword arguments after ``drop_path_rate`` are the rarer options of
        :func:`decode_arch`, :func:`round_channels` and :func:`build_stages`. Returns the last stage's width."""
        round_chs = partial(round_channels, multiplier=channel_multiplier, divisor=channel_divisor,
                            round_limit=round_limit)
        stages = decode_arch(block_defs, depth_multiplier, fix_first_last, depth_trunc=depth_trunc,
                             group_size=group_size, experts_multiplier=experts_multiplier)
        stem_chs = stem_size if fix_stem else round_chs(stem_size)
        self.grad_checkpointing = False
        self.conv_stem = create_conv2d(in_chans, stem_chs, stem_kernel_size, stride=2, padding=pad_type)
        self.bn1 = _norm_act(stem_chs, norm_kwargs, act_layer, norm_layer=norm_layer)
        stage_modules, self.feature_info, out_chs = build_stages(
            stages, stem_chs, round_chs, act_layer, se_config, output_stride=output_stride, pad_type=pad_type,
            norm_kwargs=norm_kwargs, drop_path_rate=drop_path_rate, norm_layer=norm_layer, aa_layer=aa_layer,
            block_widths=block_widths)
        self.blocks = nn.Sequential(*stage_modules)
        # Position of each level in the run "stem, blocks.0, blocks.1, ...": 0 is the stem.
        self.stage_ends = [0 if level['module'] == 'bn1' else int(str(level['module']).split('.')[1]) + 1
                           for level in self.feature_info]
        return out_chs

    def _forward_trunk(self, x: torch.Tensor) -> torch.Tensor:
        return run_blocks(self.blocks, self.bn1(self.conv_stem(x)), self.grad_checkpointing)

    def _trunk_intermediates(self, x: torch.Tensor, indices, stop_early: bool
                             ) -> Tuple[torch.Tensor, List[torch.Tensor], bool]:
        """Final trunk output, the selected levels' outputs, and whether every stage ran."""
        wanted = {self.stage_ends[i] for i in take_indices(indices, len(self.stage_ends))}
        x = self.bn1(self.conv_stem(x))
        intermediates = [x] if 0 in wanted else []
        stages = self.blocks[:max(wanted)] if stop_early else self.blocks
        for pos, stage in enumerate(stages, start=1):
            x = run_blocks((stage,), x, self.grad_checkpointing)
            if pos in wanted:
                intermediates.append(x)
        return x, intermediates, len(stages) == len(self.blocks)

    def _after_trunk(self, x: torch.Tensor) -> torch.Tensor:
        """What ``forward_features`` applies after the last stage: nothing here (a subclass adds its head conv)."""
        return x

    def forward_intermediates(self, x: torch.Tensor, indices: IndicesArg = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = 'NCHW', intermediates_only: bool = False,
                              ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """The stem's and the stages' outputs selected by ``indices`` (None = all, n = last n) and, unless
        ``intermediates_only``, the final features (``_after_trunk`` applied only when every stage ran). ``norm``
        has no effect: no final norm separates the levels from the head."""
        if output_fmt != 'NCHW':
            raise ValueError(f"output_fmt={output_fmt!r} is not supported here; valid: 'NCHW'")
        x, intermediates, ran_all = self._trunk_intermediates(x, indices, stop_early)
        if intermediates_only:
            return intermediates
        return (self._after_trunk(x) if ran_all else x), intermediates

    def _classify(self, x: torch.Tensor, pre_logits: bool) -> torch.Tensor:
        """Dropout at ``drop_rate`` then, unless ``pre_logits``, the classifier: the end of ``forward_head``."""
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.classifier(x)

    def prune_intermediate_layers(self, indices: IndicesArg = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop the stages after the last selected level; the head layers and the classifier go with them, or when
        ``prune_head`` (or, for a head conv inside the features, ``prune_norm``) asks. Returns the selected levels.

        >>> from featzoo.models.efficientnet import SPEC
        >>> m = SPEC.build('mobilenetv2_035'); m.prune_intermediate_layers([0, 1]), m.num_features
        ([0, 1], 8)
        """
        taken = take_indices(indices, len(self.stage_ends))
        last = max(taken)
        keep = self.stage_ends[last]
        dropped = keep < len(self.blocks)
        self.blocks = self.blocks[:keep]
        if dropped or prune_head or (prune_norm and self.head_in_features):
            if dropped or self.head_in_features:
                self.num_features = int(self.feature_info[last]['num_chs'])
            for name in self.head_layers:
                setattr(self, name, nn.Identity())
            self.reset_classifier(0, '')
        return taken


def init_weights_goog(module: nn.Module) -> None:
    """TensorFlow-reference initialization: fan-out normal convolutions, unit norms, uniform linear layers.

    >>> init_weights_goog(nn.Linear(4, 2))
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, CondConv2d)):  # a CondConv expert draws as the plain conv it stands for
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.weight.size(0))
            uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)


__all__ = [
    'BlockSpec', 'decode_block', 'decode_arch', 'round_channels', 'SqueezeExcite', 'SEConfig', 'ConvBnAct',
    'DepthwiseSeparableConv', 'InvertedResidual', 'EdgeResidual', 'build_stages', 'limit_output_stride', 'run_blocks',
    'add_skip', 'init_weights_goog', 'check_model_args', 'check_pool', 'take_indices', 'EfficientTrunk', 'PAD_TYPES', 'CondConvResidual',
    'conv_groups', 'SE_LAYERS', 'DEPTH_TRUNCS', 'BlockWidths', 'NormLayer', 'AaLayer', 'KernelSize',
]
