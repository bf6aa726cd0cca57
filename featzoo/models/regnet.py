"""RegNet-X and RegNet-Y ("Designing Network Design Spaces", Radosavovic et al., 2020).

Each variant is six numbers: the initial width ``w0``, the width slope ``wa``, the width multiplier ``wm``, the
total ``depth``, the ``group_size`` of the 3x3 convolutions and the squeeze-excite ratio ``se_ratio`` (zero for
RegNet-X). Stage widths and depths are derived from them by the paper's quantized linear rule, with the same float32
arithmetic as timm so that every published checkpoint gets exactly the shapes it was trained with.

>>> model = SPEC.build('regnety_032', num_classes=10)
>>> [f['num_chs'] for f in model.feature_info]
[32, 72, 216, 576, 1512]
"""
from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..family import FamilySpec
from ..layers import BatchNormAct2d, ClassifierHead, ConvNormAct, DropPath, SEModule, create_conv2d, drop_path_rates
from ..layers.activations import ActLayer, create_act_layer
from ..layers.helpers import make_divisible
from ..layers.norm_act import GroupNormAct
from ..layers.output_stride import stride_or_dilate
from ..layers.stage_intermediates import StagedFeatures
from ..layers.weight_init import init_fan_out_normal_
from ..layers.head_api import HeadApi, reset_classifier_head
from .resnetv2 import shortcut_pool

OUTPUT_STRIDES = (8, 16, 32)
DEFAULT_CFG = dict(
    input_size=(3, 224, 224), pool_size=(7, 7), interpolation='bicubic', crop_pct=0.95, crop_mode='center',
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), first_conv='stem.conv', classifier='head.fc')

_Z = dict(bottle_ratio=4.0, downsample=None, linear_out=True, act_layer='silu')

# (w0, wa, wm, depth, group_size, se_ratio); the trailing digits of a name are the model's FLOPs in 1e8.
VARIANTS: Dict[str, dict] = {
    'regnetx_002': dict(w0=24, wa=36.44, wm=2.49, depth=13, group_size=8),
    'regnetx_004': dict(w0=24, wa=24.48, wm=2.54, depth=22, group_size=16),
    'regnetx_006': dict(w0=48, wa=36.97, wm=2.24, depth=16, group_size=24),
    'regnetx_008': dict(w0=56, wa=35.73, wm=2.28, depth=16, group_size=16),
    'regnetx_016': dict(w0=80, wa=34.01, wm=2.25, depth=18, group_size=24),
    'regnetx_032': dict(w0=88, wa=26.31, wm=2.25, depth=25, group_size=48),
    'regnetx_040': dict(w0=96, wa=38.65, wm=2.43, depth=23, group_size=40),
    'regnetx_064': dict(w0=184, wa=60.83, wm=2.07, depth=17, group_size=56),
    'regnetx_080': dict(w0=80, wa=49.56, wm=2.88, depth=23, group_size=120),
    'regnetx_120': dict(w0=168, wa=73.36, wm=2.37, depth=19, group_size=112),
    'regnetx_160': dict(w0=216, wa=55.59, wm=2.1, depth=22, group_size=128),
    'regnetx_320': dict(w0=320, wa=69.86, wm=2.0, depth=23, group_size=168),
    'regnety_002': dict(w0=24, wa=36.44, wm=2.49, depth=13, group_size=8, se_ratio=0.25),
    'regnety_004': dict(w0=48, wa=27.89, wm=2.09, depth=16, group_size=8, se_ratio=0.25),
    'regnety_006': dict(w0=48, wa=32.54, wm=2.32, depth=15, group_size=16, se_ratio=0.25),
    'regnety_008': dict(w0=56, wa=38.84, wm=2.4, depth=14, group_size=16, se_ratio=0.25),
    'regnety_016': dict(w0=48, wa=20.71, wm=2.65, depth=27, group_size=24, se_ratio=0.25),
    'regnety_032': dict(w0=80, wa=42.63, wm=2.66, depth=21, group_size=24, se_ratio=0.25),
    'regnety_040': dict(w0=96, wa=31.41, wm=2.24, depth=22, group_size=64, se_ratio=0.25),
    'regnety_064': dict(w0=112, wa=33.22, wm=2.27, depth=25, group_size=72, se_ratio=0.25),
    'regnety_080': dict(w0=192, wa=76.82, wm=2.19, depth=17, group_size=56, se_ratio=0.25),
    'regnety_120': dict(w0=168, wa=73.36, wm=2.37, depth=19, group_size=112, se_ratio=0.25),
    'regnety_160': dict(w0=200, wa=106.23, wm=2.48, depth=18, group_size=112, se_ratio=0.25),
    'regnety_320': dict(w0=232, wa=115.89, wm=2.53, depth=20, group_size=232, se_ratio=0.25),
    'regnety_640': dict(w0=352, wa=147.48, wm=2.4, depth=20, group_size=328, se_ratio=0.25),
    'regnety_1280': dict(w0=456, wa=160.83, wm=2.52, depth=27, group_size=264, se_ratio=0.25),
    'regnety_2560': dict(w0=640, wa=230.83, wm=2.53, depth=27, group_size=373, se_ratio=0.25),
    # torchvision's weights: its rounding of widths to the group size
    'regnetx_004_tv': dict(w0=24, wa=24.48, wm=2.54, depth=22, group_size=16, group_min_ratio=0.9),
    'regnety_008_tv': dict(w0=56, wa=38.84, wm=2.4, depth=14, group_size=16, se_ratio=0.25, group_min_ratio=0.9),
    'regnety_080_tv': dict(w0=192, wa=76.82, wm=2.19, depth=17, group_size=56, se_ratio=0.25, group_min_ratio=0.9),
    # SiLU and group norm (16 channels per group)
    'regnety_040_sgn': dict(w0=96, wa=31.41, wm=2.24, depth=22, group_size=64, se_ratio=0.25, act_layer='silu',
                            norm_group_size=16),
    # RegNet-V: pre-activation blocks
    'regnetv_040': dict(w0=96, wa=31.41, wm=2.24, depth=22, group_size=64, se_ratio=0.25, preact=True,
                        act_layer='silu'),
    'regnetv_064': dict(w0=112, wa=33.22, wm=2.27, depth=25, group_size=72, se_ratio=0.25, preact=True,
                        act_layer='silu', downsample='avg'),
    # RegNet-Z: inverted bottlenecks (x4) with linear outputs, residuals only where shapes agree, 1x1 head conv
    'regnetz_005': dict(w0=16, wa=10.7, wm=2.51, depth=21, group_size=4, se_ratio=0.25, **_Z, num_features=1024),
    'regnetz_040': dict(w0=48, wa=14.5, wm=2.226, depth=28, group_size=8, se_ratio=0.25, **_Z),
    'regnetz_040_h': dict(w0=48, wa=14.5, wm=2.226, depth=28, group_size=8, se_ratio=0.25, **_Z, num_features=1536),
}

_WIDTH_QUANT = 8
_STEM_WIDTH = 32


def regnet_stages(w0: int, wa: float, wm: float, depth: int, group_size: int, bottle_ratio: float = 1.0,
                  group_min_ratio: float = 0.0) -> List[Tuple[int, int, int]]:
    """Per-stage ``(width, depth, group_size)`` from the RegNet design parameters.

    Block widths follow ``w0 + wa * i`` snapped to the nearest power of ``wm`` times ``w0`` and to a multiple of
    8; runs of equal width form a stage. The bottleneck width (``width * bottle_ratio``) is then rounded to a
    multiple of the (possibly shrunk) group size: to the nearest one, or with ``group_min_ratio`` torchvision's way
    (never below that fraction of the width). The arithmetic is float32 on purpose: the published checkpoints
    were shaped by it.

    >>> regnet_stages(w0=24, wa=36.44, wm=2.49, depth=13, group_size=8)
    [(24, 1, 8), (56, 1, 8), (152, 4, 8), (368, 7, 8)]
    """
    if not (isinstance(depth, int) and depth > 0):
        raise ValueError(f'RegNet depth must be a positive int, got {depth!r}')
    if not (isinstance(group_size, int) and group_size > 0):
        raise ValueError(f'RegNet group_size must be a positive int, got {group_size!r}')
    if not (wa >= 0 and w0 > 0 and wm > 1 and w0 % _WIDTH_QUANT == 0):
        raise ValueError(f'invalid RegNet widths w0={w0!r}, wa={wa!r}, wm={wm!r}: need wa >= 0, wm > 1 and w0 a '
                         f'positive multiple of {_WIDTH_QUANT}')
    # Explicit CPU: the index generator builds models under a meta-device context.
    linear = torch.arange(depth, dtype=torch.float32, device='cpu') * wa + w0
    steps = torch.round(torch.log(linear / w0) / math.log(wm))
    block_widths = torch.round(w0 * torch.pow(wm, steps) / _WIDTH_QUANT) * _WIDTH_QUANT
    widths, depths = torch.unique(block_widths.int(), return_counts=True)
    stages = []
    for width, stage_depth in zip(widths.tolist(), depths.tolist()):
        bottleneck = int(width * bottle_ratio)
        groups = min(group_size, bottleneck)
        if group_min_ratio:
            bottleneck = make_divisible(bottleneck, groups, group_min_ratio)
        else:
            # Python's round (half to even), as the reference implementation uses.
            bottleneck = int(round(bottleneck / groups) * groups)
        stages.append((int(bottleneck / bottle_ratio), stage_depth, groups))
    return stages


def conv_norm_act(in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, dilation: int = 1, groups: int = 1,
                  apply_act: bool = True, act_layer: ActLayer = 'relu',
                  norm_group_size: Optional[int] = None) -> ConvNormAct:
    """:class:`ConvNormAct` whose norm is batch norm, or group norm of ``norm_group_size`` channels per group.

    >>> conv_norm_act(8, 32, 1, norm_group_size=16).bn.num_groups
    2
    """
    layer = ConvNormAct(in_chs, out_chs, kernel_size, stride=stride, dilation=dilation, groups=groups,
                        apply_act=apply_act, act_layer=act_layer)
    if norm_group_size:
        layer.bn = GroupNormAct(out_chs, group_size=norm_group_size, apply_act=apply_act, act_layer=act_layer)
    return layer


def make_regnet_shortcut(kind: Optional[str], in_chs: int, out_chs: int, stride: int, dilation: Tuple[int, int],
                         preact: bool = False, norm_group_size: Optional[int] = None) -> Optional[nn.Module]:
    """The residual path of a block: identity where shapes agree; else a strided 1x1 projection ('conv1x1'), a
    2x2 average pool then a 1x1 projection ('avg'), or None (``kind=None``: the block has no residual at all).
    Pre-activated blocks project without a norm.

    >>> make_regnet_shortcut(None, 8, 16, 2, (1, 1)) is None
    True
    """
    if in_chs == out_chs and stride == 1 and dilation[0] == dilation[1]:
        return nn.Identity()
    if not kind:
        return None
    if kind == 'avg':
        stride, pool = 1, shortcut_pool(stride, dilation[0])
    if preact:
        conv: nn.Module = create_conv2d(in_chs, out_chs, 1, stride=stride)
    else:
        conv = conv_norm_act(in_chs, out_chs, 1, stride=stride, apply_act=False, norm_group_size=norm_group_size)
    return nn.Sequential(pool, conv) if kind == 'avg' else conv


class RegNetBottleneck(nn.Module):
    """1x1 -> grouped 3x3 (stride, dilation) -> optional squeeze-excite -> 1x1, plus a projection shortcut.

    The squeeze width is taken from the block's *input* width, as in the RegNet-Y definition.

    >>> RegNetBottleneck(32, 64, stride=2, group_size=16, se_ratio=0.25)(torch.ones(1, 32, 8, 8)).shape
    torch.Size([1, 64, 4, 4])
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, dilation: Tuple[int, int] = (1, 1),
                 group_size: int = 1, se_ratio: float = 0.0, drop_path_rate: float = 0.0, bottle_ratio: float = 1.0,
                 downsample: Optional[str] = 'conv1x1', linear_out: bool = False, act_layer: ActLayer = 'relu',
                 norm_group_size: Optional[int] = None) -> None:
        super().__init__()
        mid = int(round(out_chs * bottle_ratio))
        norm_act = dict(act_layer=act_layer, norm_group_size=norm_group_size)
        self.conv1 = conv_norm_act(in_chs, mid, 1, **norm_act)
        self.conv2 = conv_norm_act(mid, mid, 3, stride=stride, dilation=dilation[0], groups=mid // group_size,
                                   **norm_act)
        self.se = _squeeze_excite(in_chs, mid, se_ratio, act_layer)
        self.conv3 = conv_norm_act(mid, out_chs, 1, apply_act=False, **norm_act)
        self.act3 = nn.Identity() if linear_out else create_act_layer(act_layer)
        self.downsample = make_regnet_shortcut(downsample, in_chs, out_chs, stride, dilation,
                                               norm_group_size=norm_group_size)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def zero_init_last(self) -> None:
        """Zero the last norm's scale so the block starts as its shortcut (training from scratch).

        >>> b = RegNetBottleneck(32, 32, group_size=8); b.zero_init_last(); int(b.conv3.bn.weight.count_nonzero())
        0
        """
        nn.init.zeros_(self.conv3.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv3(self.se(self.conv2(self.conv1(x))))
        if self.downsample is not None:
            x = self.drop_path(x) + self.downsample(shortcut)
        return self.act3(x)


def _squeeze_excite(in_chs: int, channels: int, se_ratio: float, act_layer: ActLayer) -> nn.Module:
    # RegNet-Y's squeeze width follows the block's input width, not the width it gates
    if not se_ratio:
        return nn.Identity()
    return SEModule(channels, rd_channels=int(round(in_chs * se_ratio)), act_layer=act_layer)


class RegNetPreBottleneck(nn.Module):
    """Pre-activation form of :class:`RegNetBottleneck` (RegNet-V): norm + activation before each convolution,
    the residual taken after the first norm, no activation at the end.

    >>> RegNetPreBottleneck(32, 64, stride=2, group_size=16, se_ratio=0.25)(torch.ones(1, 32, 8, 8)).shape
    torch.Size([1, 64, 4, 4])
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, dilation: Tuple[int, int] = (1, 1),
                 group_size: int = 1, se_ratio: float = 0.0, drop_path_rate: float = 0.0, bottle_ratio: float = 1.0,
                 downsample: Optional[str] = 'conv1x1', act_layer: ActLayer = 'relu') -> None:
        # batch norm only, and no output activation to leave out: no norm_group_size or linear_out here
        super().__init__()
        mid = int(round(out_chs * bottle_ratio))
        self.norm1 = BatchNormAct2d(in_chs, act_layer=act_layer)
        self.conv1 = create_conv2d(in_chs, mid, 1)
        self.norm2 = BatchNormAct2d(mid, act_layer=act_layer)
        self.conv2 = create_conv2d(mid, mid, 3, stride=stride, dilation=dilation[0], groups=mid // group_size)
        self.se = _squeeze_excite(in_chs, mid, se_ratio, act_layer)
        self.norm3 = BatchNormAct2d(mid, act_layer=act_layer)
        self.conv3 = create_conv2d(mid, out_chs, 1)
        self.downsample = make_regnet_shortcut(downsample, in_chs, out_chs, stride, dilation, preact=True)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def zero_init_last(self) -> None:
        """Nothing to zero: the block ends in a convolution, not a norm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        shortcut = x
        x = self.conv2(self.norm2(self.conv1(x)))
        x = self.conv3(self.norm3(self.se(x)))
        if self.downsample is not None:
            x = self.drop_path(x) + self.downsample(shortcut)
        return x


class RegStage(nn.Module):
    """Blocks ``b1`` .. ``bN`` of one width; the first one changes resolution and width.

    A dilated stage keeps its first block at the previous (at most 2) dilation so that the receptive field grows
    the way the reference implementation's does.
    """

    def __init__(self, depth: int, in_chs: int, out_chs: int, stride: int, dilation: int, group_size: int,
                 se_ratio: float, drop_path_rates: List[float], preact: bool = False, **block_args: Any) -> None:
        super().__init__()
        self.grad_checkpointing = False
        block = RegNetPreBottleneck if preact else RegNetBottleneck
        first_dilation = 1 if dilation in (1, 2) else 2
        for i in range(depth):
            self.add_module(f'b{i + 1}', block(
                in_chs if i == 0 else out_chs, out_chs, stride=stride if i == 0 else 1,
                dilation=(first_dilation, dilation), group_size=group_size, se_ratio=se_ratio,
                drop_path_rate=drop_path_rates[i], **block_args))
            first_dilation = dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.children():
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


class RegNet(StagedFeatures, HeadApi, nn.Module):
    """RegNet-X (``se_ratio=0``) and RegNet-Y: a 3x3 stride-2 stem, four stages ``s1``..``s4``, pooled classifier.

    >>> RegNet(w0=24, wa=36.44, wm=2.49, depth=13, group_size=8, num_classes=5)(torch.ones(1, 3, 64, 64)).shape
    torch.Size([1, 5])
    """

    # the stem's map is the first level; ``final_conv`` (a widening conv, an activation or nothing) follows them
    stem_is_level, features_end, prune_trims_feature_info = True, 'final_conv', False

    def __init__(self, w0: int, wa: float, wm: float, depth: int, group_size: int, se_ratio: float = 0.0,
                 num_classes: int = 1000, in_chans: int = 3, global_pool: str = 'avg', output_stride: int = 32,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, zero_init_last: bool = True,
                 bottle_ratio: float = 1.0, group_min_ratio: float = 0.0, downsample: Optional[str] = 'conv1x1',
                 linear_out: bool = False, preact: bool = False, num_features: int = 0, act_layer: ActLayer = 'relu',
                 norm_group_size: Optional[int] = None) -> None:
        super().__init__()
        _check_args(num_classes=num_classes, in_chans=in_chans, output_stride=output_stride, drop_rate=drop_rate,
                    drop_path_rate=drop_path_rate, se_ratio=se_ratio, downsample=downsample)
        stages = regnet_stages(w0, wa, wm, depth, group_size, bottle_ratio, group_min_ratio)
        if len(stages) != 4:
            raise ValueError(f'RegNet parameters w0={w0}, wa={wa}, wm={wm}, depth={depth} give {len(stages)} stages '
                             f'({[s[0] for s in stages]}); a RegNet needs exactly 4')
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate

        block_args: Dict[str, Any] = dict(preact=preact, bottle_ratio=bottle_ratio, downsample=downsample,
                                          act_layer=act_layer)
        if not preact:
            block_args.update(linear_out=linear_out, norm_group_size=norm_group_size)
        elif norm_group_size:
            raise ValueError('pre-activation RegNet blocks take batch norm only; leave norm_group_size None')
        if preact:  # the first block's norm follows
            self.stem: nn.Module = create_conv2d(in_chans, _STEM_WIDTH, 3, stride=2)
        else:
            self.stem = conv_norm_act(in_chans, _STEM_WIDTH, 3, stride=2, act_layer=act_layer,
                                      norm_group_size=norm_group_size)
        self.feature_info = [dict(num_chs=_STEM_WIDTH, reduction=2, module='stem')]
        rates = drop_path_rates(drop_path_rate, [d for _, d, _ in stages])
        in_chs, net_stride, dilation = _STEM_WIDTH, 2, 1
        for i, (width, stage_depth, groups) in enumerate(stages):
            stride, net_stride, dilation = stride_or_dilate(net_stride, dilation, output_stride)
            self.add_module(f's{i + 1}', RegStage(stage_depth, in_chs, width, stride, dilation, groups, se_ratio,
                                                  rates[i], **block_args))
            self.feature_info.append(dict(num_chs=width, reduction=net_stride, module=f's{i + 1}'))
            in_chs = width

        # a 1x1 widening convolution (RegNet-Z), the activation that linear-output and pre-activated blocks leave to
        # the end, or an identity kept so the module layout and the sequential step list match the reference
        if num_features:
            self.final_conv: nn.Module = conv_norm_act(in_chs, num_features, 1, act_layer=act_layer,
                                                       norm_group_size=norm_group_size)
            in_chs = num_features
        elif linear_out or preact:
            self.final_conv = create_act_layer(act_layer)
        else:
            self.final_conv = nn.Identity()
        self.num_features = in_chs
        self.head = ClassifierHead(in_chs, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self.head_hidden_size = in_chs * self.head.global_pool.feat_mult()
        self._init_weights(zero_init_last)

    def _init_weights(self, zero_init_last: bool) -> None:
        init_fan_out_normal_(self)
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, RegNetBottleneck):
                    m.zero_init_last()

    def group_matcher(self, coarse: bool = False) -> Dict[str, str]:
        """Parameter-group regexes (stem, then per stage or per block).

        >>> SPEC.build('regnetx_002').group_matcher(coarse=True)['blocks']
        '^s(\\\\d+)'
        """
        return dict(stem=r'^stem', blocks=r'^s(\d+)' if coarse else r'^s(\d+)\.b(\d+)')

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of storing its activations.

        >>> m = SPEC.build('regnetx_002'); m.set_grad_checkpointing(); m.s1.grad_checkpointing
        True
        """
        for stage in self.children():
            if isinstance(stage, RegStage):
                stage.grad_checkpointing = enable

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier (``num_classes=0`` removes it); ``global_pool=None`` keeps the pooling.

        >>> m = SPEC.build('regnetx_002'); m.reset_classifier(0, ''); m(torch.ones(1, 3, 64, 64)).shape
        torch.Size([1, 368, 2, 2])
        """
        _check_args(num_classes=num_classes)
        reset_classifier_head(self, num_classes, global_pool)

    def _stage_list(self) -> Tuple[nn.Module, ...]:
        return self.s1, self.s2, self.s3, self.s4

    def _keep_stages(self, count: int) -> None:
        for i in range(count + 1, 5):
            setattr(self, f's{i}', nn.Identity())

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Unpooled feature map of the last stage (NCHW).

        >>> SPEC.build('regnetx_002').forward_features(torch.ones(1, 3, 64, 64)).shape
        torch.Size([1, 368, 2, 2])
        """
        x = self.stem(x)
        x = self.s1(x)
        x = self.s2(x)
        x = self.s3(x)
        x = self.s4(x)
        return self.final_conv(x)


def _check_args(**kwargs) -> None:
    """Raise ValueError/TypeError for constructor values a RegNet cannot take."""
    for name, value in kwargs.items():
        if name in ('num_classes', 'in_chans'):
            low = 0 if name == 'num_classes' else 1
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f'{name} must be an int, got {value!r}')
            if value < low:
                raise ValueError(f'{name} must be >= {low}, got {value!r}')
        elif name == 'output_stride':
            if value not in OUTPUT_STRIDES:
                raise ValueError(f'output_stride {value!r} is not supported; valid: {OUTPUT_STRIDES}')
        elif name in ('drop_rate', 'drop_path_rate'):
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f'{name} must be a float in [0, 1), got {value!r}')
        elif name == 'downsample':
            if value not in (None, '', 'conv1x1', 'avg'):
                raise ValueError(f"downsample={value!r} is invalid; valid: 'conv1x1', 'avg' or None (no shortcut)")
        elif name == 'se_ratio':
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f'se_ratio must be a float in [0, 1], got {value!r}')


# torchvision's block-internal names -> featzoo's (timm's); applied after the block prefix is rewritten.
_TORCHVISION_BLOCK_NAMES = (
    ('f.a.0.', 'conv1.conv.'), ('f.a.1.', 'conv1.bn.'), ('f.b.0.', 'conv2.conv.'), ('f.b.1.', 'conv2.bn.'),
    ('f.se.', 'se.'), ('f.c.0.', 'conv3.conv.'), ('f.c.1.', 'conv3.bn.'),
    ('proj.0.', 'downsample.conv.'), ('proj.1.', 'downsample.bn.'),
)
_TORCHVISION_BLOCK = re.compile(r'^trunk_output\.block(\d+)\.block\d+-(\d+)\.(.*)$')


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: Optional[nn.Module] = None
                         ) -> Dict[str, torch.Tensor]:
    """Accept torchvision RegNet checkpoints (``stem.0``, ``trunk_output.block1.block1-0.f.a.0`` ...) by renaming
    their keys; featzoo/timm checkpoints pass through unchanged.

    >>> sorted(checkpoint_filter_fn({'stem.0.weight': torch.ones(1), 'fc.bias': torch.ones(1),
    ...     'trunk_output.block2.block2-0.f.b.1.weight': torch.ones(1)}))
    ['head.fc.bias', 's2.b1.conv2.bn.weight', 'stem.conv.weight']
    """
    if 'stem.0.weight' not in state_dict:
        return state_dict
    out = {}
    for key, value in state_dict.items():
        match = _TORCHVISION_BLOCK.match(key)
        if match:
            stage, index, rest = match.groups()
            for old, new in _TORCHVISION_BLOCK_NAMES:
                if rest.startswith(old):
                    rest = new + rest[len(old):]
                    break
            key = f's{stage}.b{int(index) + 1}.{rest}'
        elif key.startswith('stem.0.'):
            key = 'stem.conv.' + key[len('stem.0.'):]
        elif key.startswith('stem.1.'):
            key = 'stem.bn.' + key[len('stem.1.'):]
        elif key.startswith('fc.'):
            key = 'head.' + key
        out[key] = value
    return out


SPEC = FamilySpec(
    name='regnet', model=RegNet, variants=VARIANTS, default_cfg=DEFAULT_CFG,
    feature_cls=('list', 'dict', 'hook', 'fx', 'getter'), default_feature_cls='list', output_strides=OUTPUT_STRIDES,
    export=('torch.export', 'dynamic_hw', 'onnx', 'compile'), checkpoint_filter=checkpoint_filter_fn)
