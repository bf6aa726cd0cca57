"""MobileNetV4 blocks and their stage builder: universal inverted residuals, mobile multi-query attention, layer scale
and anti-aliased downsampling.

Stage strings extend the notation of :mod:`featzoo.layers.efficientnet_blocks` with two block types:

- ``uir`` (universal inverted bottleneck): ``a`` kernel of the depthwise conv before the expansion (0: none), ``k``
  kernel of the depthwise conv between expansion and projection (0: none), ``p`` kernel of the depthwise conv after
  the projection (0: none), ``e`` expansion ratio, ``c`` output channels, ``s`` stride, ``r`` repeats. ``a0_k3`` is
  an inverted residual, ``a3_k0`` a ConvNeXt-like block, ``a0_k0`` a feed-forward block, ``a3_k5`` "extra depthwise".
- ``mqa`` (multi-query attention): ``h`` heads, ``d`` key and value width, ``v`` stride of the depthwise convolutions
  that shrink keys and values (1: none), ``k`` their kernel, ``c`` output channels, stride ``s1`` only.

``cn`` and ``er`` blocks come from :mod:`featzoo.layers.efficientnet_blocks`, with an anti-aliasing pool taking the
stride when the model asks for one. Parameter names follow timm's MobileNetV4 so its checkpoints load unchanged.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from .activations import ActLayer
from .blur_pool import BlurPool2d
from .conv_bn_act import ConvNormAct
from .drop import DropPath
from .efficientnet_blocks import (BlockSpec, ConvBnAct, EdgeResidual, add_skip, decode_block,
                                  limit_output_stride)
from .helpers import make_divisible
from .norm import BatchNormAct2d
from .padding import create_conv2d

AA_LAYERS = ('avg', 'blur', 'blurpc')
_UIR_KEYS = {'r', 'k', 's', 'e', 'c', 'a', 'p', 'se'}
_MQA_KEYS = {'r', 'k', 's', 'c', 'h', 'd', 'v'}
_OPTION = re.compile(r'^([a-z]+)(\d[\d.]*)$')


def make_aa(aa_layer: Optional[str], channels: int, stride: int) -> nn.Module:
    """The anti-aliasing pool that takes a convolution's stride: 2x2 average ('avg'), or a 3x3 binomial blur with
    reflected ('blur') or zero ('blurpc') borders. No parameters or persistent buffers, so keys never change.

    >>> make_aa('blurpc', 4, 2)(torch.ones(1, 4, 8, 8)).shape
    torch.Size([1, 4, 4, 4])
    """
    if aa_layer == 'avg':
        return nn.AvgPool2d(kernel_size=stride, stride=stride)
    if aa_layer in ('blur', 'blurpc'):
        return BlurPool2d(channels, stride=stride, pad_mode='constant' if aa_layer == 'blurpc' else 'reflect')
    raise ValueError(f'unknown aa_layer {aa_layer!r}; valid: {AA_LAYERS} or None')


def check_aa_layer(aa_layer: Optional[str]) -> None:
    if aa_layer is not None and aa_layer not in AA_LAYERS:
        raise ValueError(f'unknown aa_layer {aa_layer!r}; valid: {AA_LAYERS} or None')


class ConvNormActAa(ConvNormAct):
    """:class:`ConvNormAct` whose stride, when an anti-aliasing pool is given, moves to a pool (``aa``) after the
    norm; a strided convolution otherwise.

    >>> ConvNormActAa(8, 8, 3, stride=2, groups=8, aa_layer='avg')(torch.ones(1, 8, 8, 8)).shape
    torch.Size([1, 8, 4, 4])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 padding: str = '', dilation: int = 1, groups: int = 1, apply_act: bool = True,
                 act_layer: ActLayer = 'relu', norm_kwargs: Optional[Dict[str, float]] = None,
                 aa_layer: Optional[str] = None) -> None:
        norm_kwargs = dict(norm_kwargs or {})
        use_aa = aa_layer is not None and stride > 1
        super().__init__(in_channels, out_channels, kernel_size, stride=1 if use_aa else stride, padding=padding,
                         dilation=dilation, groups=groups, apply_act=apply_act, act_layer=act_layer,
                         norm_eps=norm_kwargs.get('eps', 1e-5))
        self.bn.momentum = norm_kwargs.get('momentum', 0.1)
        self.aa = make_aa(aa_layer, out_channels, stride) if use_aa else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.aa(self.bn(self.conv(x)))


class ConvBnActAa(ConvBnAct):
    """``cn`` block whose stride moves to an anti-aliasing pool after the norm when ``aa_layer`` is given."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, aa_layer: Optional[str] = None,
                 **kwargs) -> None:
        use_aa = aa_layer is not None and stride > 1
        super().__init__(in_chs, out_chs, kernel_size, stride=1 if use_aa else stride, **kwargs)
        self.has_skip = self.has_skip and stride == 1
        self.aa = make_aa(aa_layer, out_chs, stride) if use_aa else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.aa(self.bn1(self.conv(x)))
        return add_skip(self, out, x)


class EdgeResidualAa(EdgeResidual):
    """``er`` (fused MBConv) whose stride moves to an anti-aliasing pool after the expansion's norm."""

    def __init__(self, in_chs: int, out_chs: int, exp_kernel_size: int = 3, stride: int = 1,
                 aa_layer: Optional[str] = None, **kwargs) -> None:
        use_aa = aa_layer is not None and stride > 1
        super().__init__(in_chs, out_chs, exp_kernel_size, stride=1 if use_aa else stride, **kwargs)
        self.has_skip = self.has_skip and stride == 1
        self.aa = make_aa(aa_layer, self.conv_exp.out_channels, stride) if use_aa else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.se(self.aa(self.bn1(self.conv_exp(x))))
        out = self.bn2(self.conv_pwl(out))
        return add_skip(self, out, x)


class LayerScale2d(nn.Module):
    """Per-channel learned scale of an NCHW map (``gamma``), initialized small so a residual branch starts quiet.

    >>> LayerScale2d(2, 0.5)(torch.ones(1, 2, 1, 1)).flatten().tolist()
    [0.5, 0.5]
    """

    def __init__(self, dim: int, init_value: float = 1e-5) -> None:
        super().__init__()
        self.init_value = init_value
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1)


def _drop_path(rate: float) -> nn.Module:
    return DropPath(rate) if rate else nn.Identity()


def _layer_scale(dim: int, init_value: Optional[float]) -> nn.Module:
    return LayerScale2d(dim, init_value) if init_value is not None else nn.Identity()


class UniversalInvertedResidual(nn.Module):
    """``uir``: optional depthwise conv, pointwise expansion, optional depthwise conv, linear projection, optional
    depthwise conv, layer scale; a residual when the shape is kept.

    The first depthwise conv present carries the stride (the middle one when both start and middle exist, as in the
    reference). Every depthwise conv takes the block's dilation: in a strided block that is the dilation before the
    stride, right for the convs up to and including the strided one; the published tables have no end conv, the
    only one that comes after the stride.

    >>> UniversalInvertedResidual(16, 16, 3, 5, exp_ratio=4.0)(torch.ones(1, 16, 8, 8)).shape
    torch.Size([1, 16, 8, 8])
    """

    def __init__(self, in_chs: int, out_chs: int, dw_kernel_size_start: int = 0, dw_kernel_size_mid: int = 3,
                 dw_kernel_size_end: int = 0, stride: int = 1, dilation: int = 1, pad_type: str = '',
                 noskip: bool = False, exp_ratio: float = 1.0, act_layer: ActLayer = 'relu',
                 norm_kwargs: Optional[Dict[str, float]] = None, aa_layer: Optional[str] = None,
                 drop_path_rate: float = 0.0, layer_scale_init_value: Optional[float] = 1e-5) -> None:
        super().__init__()
        if stride > 1 and not (dw_kernel_size_start or dw_kernel_size_mid or dw_kernel_size_end):
            raise ValueError(f'a uir block with stride {stride} needs a depthwise conv (a, k or p > 0) to carry it')
        if stride > 1 and aa_layer is not None and not (dw_kernel_size_start or dw_kernel_size_mid):
            raise ValueError('a uir block whose stride sits on the end depthwise conv (a0, k0) cannot use aa_layer')
        common = dict(padding=pad_type, dilation=dilation, act_layer=act_layer, norm_kwargs=norm_kwargs)
        self.has_skip = in_chs == out_chs and stride == 1 and not noskip
        if dw_kernel_size_start:
            self.dw_start: nn.Module = ConvNormActAa(
                in_chs, in_chs, dw_kernel_size_start, stride=1 if dw_kernel_size_mid else stride, groups=in_chs,
                apply_act=False, aa_layer=aa_layer, **common)
        else:
            self.dw_start = nn.Identity()
        mid_chs = make_divisible(in_chs * exp_ratio)
        self.pw_exp = ConvNormActAa(in_chs, mid_chs, 1, padding=pad_type, act_layer=act_layer,
                                    norm_kwargs=norm_kwargs)
        if dw_kernel_size_mid:
            self.dw_mid: nn.Module = ConvNormActAa(mid_chs, mid_chs, dw_kernel_size_mid, stride=stride,
                                                   groups=mid_chs, aa_layer=aa_layer, **common)
        else:
            self.dw_mid = nn.Identity()  # kept as a module so that hooks find the same names in every block
        self.se = nn.Identity()
        self.pw_proj = ConvNormActAa(mid_chs, out_chs, 1, padding=pad_type, apply_act=False, act_layer=act_layer,
                                     norm_kwargs=norm_kwargs)
        if dw_kernel_size_end:
            end_stride = stride if not (dw_kernel_size_start or dw_kernel_size_mid) else 1
            self.dw_end: nn.Module = ConvNormActAa(out_chs, out_chs, dw_kernel_size_end, stride=end_stride,
                                                   groups=out_chs, apply_act=False, **common)
        else:
            self.dw_end = nn.Identity()
        self.layer_scale = _layer_scale(out_chs, layer_scale_init_value)
        self.drop_path = _drop_path(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pw_exp(self.dw_start(x))
        out = self.pw_proj(self.se(self.dw_mid(out)))
        out = self.layer_scale(self.dw_end(out))
        return add_skip(self, out, x)


class MultiQueryAttention2d(nn.Module):
    """Multi-query attention on an NCHW map: ``num_heads`` query heads share one key and one value head.

    With ``kv_stride > 1`` keys and values are first shrunk by a strided depthwise conv and a batch norm each
    (``down_conv``, ``norm``), so attention costs ``HW x HW / kv_stride^2``. Projections are 1x1 convs without bias.
    The attention is global, so a dilated network (output stride 8 or 16) attends over the denser map as a larger
    image would; the shrinking convs take the dilation like every other spatial conv in the stage.

    >>> MultiQueryAttention2d(32, num_heads=2, key_dim=8, value_dim=8, kv_stride=2)(torch.ones(1, 32, 6, 6)).shape
    torch.Size([1, 32, 6, 6])
    """

    def __init__(self, dim: int, dim_out: Optional[int] = None, num_heads: int = 8, key_dim: int = 64,
                 value_dim: int = 64, kv_stride: int = 1, dw_kernel_size: int = 3, dilation: int = 1,
                 padding: str = '', norm_kwargs: Optional[Dict[str, float]] = None, attn_drop: float = 0.0,
                 proj_drop: float = 0.0) -> None:
        super().__init__()
        norm_kwargs = norm_kwargs or {}
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.value_dim = value_dim
        self.kv_stride = kv_stride
        self.attn_drop = attn_drop
        self.query = nn.Sequential()
        self.query.add_module('proj', create_conv2d(dim, num_heads * key_dim, 1))
        self.key = self._shared_head(dim, key_dim, dw_kernel_size, dilation, padding, norm_kwargs)
        self.value = self._shared_head(dim, value_dim, dw_kernel_size, dilation, padding, norm_kwargs)
        self.output = nn.Sequential()
        self.output.add_module('proj', create_conv2d(num_heads * value_dim, dim_out or dim, 1))
        self.output.add_module('drop', nn.Dropout(proj_drop))
        self.reset_parameters()

    def _shared_head(self, dim: int, head_dim: int, kernel_size: int, dilation: int, padding: str,
                     norm_kwargs: Dict[str, float]) -> nn.Sequential:
        head = nn.Sequential()
        if self.kv_stride > 1:
            head.add_module('down_conv', create_conv2d(dim, dim, kernel_size, stride=self.kv_stride,
                                                       dilation=dilation, padding=padding, groups=dim))
            head.add_module('norm', nn.BatchNorm2d(dim, **norm_kwargs))
        head.add_module('proj', create_conv2d(dim, head_dim, 1, padding=padding))
        return head

    def reset_parameters(self) -> None:
        """Xavier-uniform projections and shrinking convs (what the reference trains the hybrids from)."""
        convs = [self.query.proj, self.key.proj, self.value.proj, self.output.proj]
        if self.kv_stride > 1:
            convs += [self.key.down_conv, self.value.down_conv]
        for conv in convs:
            nn.init.xavier_uniform_(conv.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        # The copies below give SDPA and the output projection the memory layouts of the reference: CPU kernels round
        # differently per layout, and through a dozen attention blocks that alone exceeds the parity tolerance.
        # (B, heads * key_dim, H, W) -> (B, heads, H * W, key_dim)
        q = self.query(x).reshape(batch, self.num_heads, self.key_dim, -1).transpose(-1, -2).contiguous()
        # the single key / value head, (B, 1, H' * W', dim), broadcast over the query heads
        k = self.key(x).flatten(2).transpose(1, 2).unsqueeze(1).contiguous()
        v = self.value(x).flatten(2).transpose(1, 2).unsqueeze(1).contiguous()
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        # (B, heads, H * W, value_dim) -> (B, heads * value_dim, H, W), channels ordered head-major
        out = out.transpose(1, 2).reshape(batch, height, width, -1).permute(0, 3, 1, 2).contiguous()
        return self.output(out)


class MobileAttention(nn.Module):
    """``mqa`` block: batch norm, multi-query attention, layer scale, residual.

    >>> MobileAttention(32, 32, num_heads=2, key_dim=8, kv_stride=2)(torch.ones(1, 32, 4, 4)).shape
    torch.Size([1, 32, 4, 4])
    """

    def __init__(self, in_chs: int, out_chs: int, dw_kernel_size: int = 3, dilation: int = 1, pad_type: str = '',
                 num_heads: int = 8, key_dim: int = 64, value_dim: int = 64, kv_stride: int = 1,
                 noskip: bool = False, norm_kwargs: Optional[Dict[str, float]] = None, drop_path_rate: float = 0.0,
                 layer_scale_init_value: Optional[float] = 1e-5) -> None:
        super().__init__()
        norm_kwargs = norm_kwargs or {}
        self.has_skip = in_chs == out_chs and not noskip
        self.norm = BatchNormAct2d(in_chs, apply_act=False, **norm_kwargs)
        self.attn = MultiQueryAttention2d(
            in_chs, dim_out=out_chs, num_heads=num_heads, key_dim=key_dim, value_dim=value_dim, kv_stride=kv_stride,
            dw_kernel_size=dw_kernel_size, dilation=dilation, padding=pad_type, norm_kwargs=norm_kwargs)
        self.layer_scale = _layer_scale(out_chs, layer_scale_init_value)
        self.drop_path = _drop_path(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer_scale(self.attn(self.norm(x)))
        return add_skip(self, out, x)


@dataclass(frozen=True)
class UIRSpec:
    """A decoded ``uir`` string (``repeats`` unscaled)."""

    out_chs: int
    stride: int
    repeats: int
    exp_ratio: float
    dw_kernel_size_start: int = 0
    dw_kernel_size_mid: int = 3
    dw_kernel_size_end: int = 0
    noskip: bool = False
    block_type: str = 'uir'


@dataclass(frozen=True)
class MQASpec:
    """A decoded ``mqa`` string (``repeats`` unscaled)."""

    out_chs: int
    repeats: int
    num_heads: int
    key_dim: int
    kv_stride: int = 1
    dw_kernel_size: int = 3
    noskip: bool = False
    stride: int = 1
    block_type: str = 'mqa'


AnySpec = Union[BlockSpec, UIRSpec, MQASpec]


def _read_options(block_str: str, keys: set, required: Sequence[str]) -> Tuple[Dict[str, float], bool]:
    options: Dict[str, float] = {}
    noskip = False
    for op in block_str.split('_')[1:]:
        if op == 'noskip':
            noskip = True
            continue
        match = _OPTION.match(op)
        if match is None or match.group(1) not in keys:
            raise ValueError(f'block string {block_str!r}: cannot read option {op!r}; valid keys: {sorted(keys)}, '
                             'noskip')
        options[match.group(1)] = float(match.group(2))
    missing = [key for key in required if key not in options]
    if missing:
        raise ValueError(f'block string {block_str!r} lacks option(s) {missing}; it needs {tuple(required)}')
    for key, value in options.items():
        if key not in ('e', 'se') and value != int(value):
            raise ValueError(f'block string {block_str!r}: option {key!r} needs an integer, got {value}')
    if options['r'] < 1:
        raise ValueError(f'block string {block_str!r}: repeats must be >= 1, got {int(options["r"])}')
    if options['s'] not in (1, 2):
        raise ValueError(f'block string {block_str!r}: stride {int(options["s"])} is not supported; valid: 1, 2')
    return options, noskip


def decode_mnv4_block(block_str: str) -> AnySpec:
    """Decode one MobileNetV4 stage string: ``uir`` and ``mqa`` here, every other type by
    :func:`featzoo.layers.efficientnet_blocks.decode_block`.

    >>> decode_mnv4_block('uir_r2_a3_k0_s1_e4_c160').dw_kernel_size_start
    3
    >>> decode_mnv4_block('mqa_r1_k3_h4_s1_v2_d64_c160').kv_stride
    2
    """
    if not isinstance(block_str, str) or not block_str:
        raise TypeError(f'a block definition must be a non-empty string like "uir_r1_a3_k5_s2_e4_c80", '
                        f'got {block_str!r}')
    block_type = block_str.split('_')[0]
    if block_type == 'uir':
        opts, noskip = _read_options(block_str, _UIR_KEYS, ('r', 'k', 's', 'e', 'c'))
        if opts.get('se'):
            raise ValueError(f'block string {block_str!r}: uir blocks take no squeeze-excite here')
        return UIRSpec(out_chs=int(opts['c']), stride=int(opts['s']), repeats=int(opts['r']), exp_ratio=opts['e'],
                       dw_kernel_size_start=int(opts.get('a', 0)), dw_kernel_size_mid=int(opts['k']),
                       dw_kernel_size_end=int(opts.get('p', 0)), noskip=noskip)
    if block_type == 'mqa':
        opts, noskip = _read_options(block_str, _MQA_KEYS, ('r', 'k', 'h', 's', 'd', 'c'))
        if opts['s'] != 1:
            raise ValueError(f'block string {block_str!r}: mqa blocks keep the resolution; valid stride: s1')
        return MQASpec(out_chs=int(opts['c']), repeats=int(opts['r']), num_heads=int(opts['h']),
                       key_dim=int(opts['d']), kv_stride=int(opts.get('v', 1)), dw_kernel_size=int(opts['k']),
                       noskip=noskip)
    return decode_block(block_str)


def decode_mnv4_arch(block_defs: Sequence[Sequence[str]]) -> List[List[AnySpec]]:
    """Per-stage lists of per-block specs (each definition repeated ``r`` times; MobileNetV4 has no depth scaling).

    >>> [len(stage) for stage in decode_mnv4_arch([['er_r1_k3_s2_e4_c48'], ['uir_r2_a3_k5_s2_e4_c80']])]
    [1, 2]
    """
    if isinstance(block_defs, str) or not block_defs:
        raise TypeError(f'block_defs must be a non-empty list of stages (lists of block strings), got {block_defs!r}')
    stages = []
    for idx, stage_strs in enumerate(block_defs):
        if isinstance(stage_strs, str) or not stage_strs:
            raise TypeError(f'stage {idx} must be a non-empty list of block strings, got {stage_strs!r}')
        stage: List[AnySpec] = []
        for spec in map(decode_mnv4_block, stage_strs):
            stage.extend([spec] * spec.repeats)
        stages.append(stage)
    return stages


def _make_mnv4_block(spec: AnySpec, in_chs: int, out_chs: int, stride: int, dilation: int, act_layer: ActLayer,
                     pad_type: str, norm_kwargs: Dict[str, float], aa_layer: Optional[str], drop_path_rate: float,
                     layer_scale_init_value: Optional[float]) -> nn.Module:
    if isinstance(spec, UIRSpec):
        return UniversalInvertedResidual(
            in_chs, out_chs, spec.dw_kernel_size_start, spec.dw_kernel_size_mid, spec.dw_kernel_size_end,
            stride=stride, dilation=dilation, pad_type=pad_type, noskip=spec.noskip, exp_ratio=spec.exp_ratio,
            act_layer=act_layer, norm_kwargs=norm_kwargs, aa_layer=aa_layer, drop_path_rate=drop_path_rate,
            layer_scale_init_value=layer_scale_init_value)
    if isinstance(spec, MQASpec):
        return MobileAttention(
            in_chs, out_chs, spec.dw_kernel_size, dilation=dilation, pad_type=pad_type, num_heads=spec.num_heads,
            key_dim=spec.key_dim, value_dim=spec.key_dim, kv_stride=spec.kv_stride, noskip=spec.noskip,
            norm_kwargs=norm_kwargs, drop_path_rate=drop_path_rate, layer_scale_init_value=layer_scale_init_value)
    if spec.se_ratio:
        raise ValueError(f'{spec.block_type} block with se{spec.se_ratio}: MobileNetV4 stages take no squeeze-excite')
    common = dict(dilation=dilation, pad_type=pad_type, act_layer=spec.act_layer or act_layer,
                  norm_kwargs=norm_kwargs, drop_path_rate=drop_path_rate, aa_layer=aa_layer)
    if spec.block_type == 'cn':
        return ConvBnActAa(in_chs, out_chs, spec.kernel_size, stride=stride, skip=spec.skip is True, **common)
    if spec.block_type == 'er':
        return EdgeResidualAa(in_chs, out_chs, spec.kernel_size, stride=stride, exp_ratio=spec.exp_ratio,
                              pw_kernel_size=spec.pw_kernel_size, noskip=spec.skip is False, **common)
    raise ValueError(f'block type {spec.block_type!r} is not a MobileNetV4 block; valid: cn, er, uir, mqa')


def build_mnv4_stages(
        stages: Sequence[Sequence[AnySpec]],
        in_chs: int,
        round_chs,
        act_layer: ActLayer,
        output_stride: int = 32,
        pad_type: str = '',
        norm_kwargs: Optional[Dict[str, float]] = None,
        aa_layer: Optional[str] = None,
        drop_path_rate: float = 0.0,
        layer_scale_init_value: Optional[float] = None,
) -> Tuple[List[nn.Sequential], List[Dict[str, object]], int]:
    """Instantiate decoded MobileNetV4 stages after a stride-2 stem of ``in_chs`` channels.

    Returns the stages, the feature levels and the last stage's channels, with the rules of
    :func:`featzoo.layers.efficientnet_blocks.build_stages`: a level ends every stage followed by a strided one, and
    the last; strides past ``output_stride`` become dilation of the following blocks (whose anti-aliasing pool then
    goes, as it only ever comes with a stride). Layer scale applies to the ``uir`` and ``mqa`` blocks.

    >>> stages, info, chs = build_mnv4_stages(decode_mnv4_arch([['er_r1_k3_s2_e4_c48'], ['uir_r1_a3_k5_s2_e4_c80']]),
    ...                                       32, round_chs=lambda c: c, act_layer='relu')
    >>> [(level['module'], level['reduction']) for level in info], chs
    ([('bn1', 2), ('blocks.0', 4), ('blocks.1', 8)], 80)
    """
    norm_kwargs = dict(norm_kwargs or {})
    check_aa_layer(aa_layer)
    total_blocks = sum(len(stage) for stage in stages)
    reduction, dilation = 2, 1
    feature_info: List[Dict[str, object]] = []
    if stages[0][0].stride > 1:
        feature_info.append(dict(num_chs=in_chs, reduction=reduction, module='bn1'))
    built: List[nn.Sequential] = []
    block_idx = 0
    for stage_idx, stage in enumerate(stages):
        blocks = []
        for i, spec in enumerate(stage):
            stride = spec.stride if i == 0 else 1
            block_dilation = dilation
            stride, reduction, dilation = limit_output_stride(stride, reduction, dilation, output_stride)
            out_chs = round_chs(spec.out_chs)
            blocks.append(_make_mnv4_block(
                spec, in_chs, out_chs, stride, block_dilation, act_layer, pad_type, norm_kwargs, aa_layer,
                drop_path_rate * block_idx / total_blocks, layer_scale_init_value))
            in_chs = out_chs
            block_idx += 1
        built.append(nn.Sequential(*blocks))
        if stage_idx == len(stages) - 1 or stages[stage_idx + 1][0].stride > 1:
            feature_info.append(dict(num_chs=in_chs, reduction=reduction, module=f'blocks.{stage_idx}'))
    return built, feature_info, in_chs


__all__ = [
    'AA_LAYERS', 'make_aa', 'check_aa_layer', 'ConvNormActAa', 'ConvBnActAa', 'EdgeResidualAa', 'LayerScale2d',
    'UniversalInvertedResidual', 'MultiQueryAttention2d', 'MobileAttention', 'UIRSpec', 'MQASpec',
    'decode_mnv4_block', 'decode_mnv4_arch', 'build_mnv4_stages',
]
