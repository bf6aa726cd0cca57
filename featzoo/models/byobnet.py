"""Bring-your-own-blocks networks: one trunk (a stem, stages of typed blocks, an optional 1x1 final conv) that timm's
``byobnet`` module configures into RegNetZ, RepVGG, MobileOne, GENet, the ``*ts``/``*t`` ResNe(X)ts with squeeze-
excite, ECA or global-context attention, and the quad-stem ResNet-51q/61q. Parameter names follow timm's ByobNet so
its checkpoints, including the training-time (multi-branch) RepVGG and MobileOne weights, load unchanged.

A row gives, per stage, the block type, depth, width, stride, group size and bottleneck ratio; see :class:`ByobNet`.

>>> model = SPEC.build('regnetz_b16', num_classes=10)
>>> [f['module'] for f in model.feature_info]
['stem', 'stages.0', 'stages.1', 'stages.2', 'final_conv']
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..checks import check_choice
from ..family import FamilySpec
from ..layers import BatchNormAct2d, ClassifierHead, ConvNormAct, DropPath, EcaModule, SEModule, drop_path_rates
from ..layers.activations import create_act_layer
from ..layers.attention_pool2d import AttentionPool2d
from ..layers.global_context import GlobalContext
from ..layers.head_api import HeadApi
from ..layers.helpers import make_divisible, to_2tuple
from ..layers.output_stride import stride_or_dilate
from ..layers.stage_intermediates import StagedFeatures, run_tapped
from ..layers.non_local_attn import BatNonLocalAttn
from ..layers.norm_act import EvoNorm2dS0a
from ..layers.norm_mlp_head import NormMlpClassifierHead
from ..layers.padding import create_conv2d
from ..layers.weight_init import init_fan_out_normal_
from .resnet import make_aa
from .resnetv2 import shortcut_pool

OUTPUT_STRIDES = (8, 16, 32)
DEFAULT_CFG = dict(
    input_size=(3, 224, 224), pool_size=(7, 7), interpolation='bilinear', crop_pct=0.875, crop_mode='center',
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), first_conv='stem.conv', classifier='head.fc',
    num_classes=1000)

BLOCK_TYPES = ('basic', 'bottle', 'dark', 'edge', 'rep', 'one')
STEM_TYPES = ('3x3', 'tiered', 'deep', 'quad', 'quad2', 'rep', 'one')
STEM_POOLS = ('', 'maxpool', 'avg2')
DOWNSAMPLE_TYPES = ('', 'avg', 'conv1x1')
ATTN_TYPES = {'se': SEModule, 'eca': EcaModule, 'gca': partial(GlobalContext, fuse_add=True, fuse_scale=False),
              'bat': BatNonLocalAttn}
NORM_TYPES = ('batch', 'evos16')
HEAD_TYPES = ('classifier', 'attn_abs', 'mlp')


class Layers:
    """The layer factories one network's blocks share: conv-norm-act, a bare norm, the activation, the attention.

    >>> Layers(act_layer='silu').conv_norm_act(8, 16, 3, stride=2).bn.act
    SiLU(inplace=True)
    """

    def __init__(self, act_layer: str = 'relu', norm: str = 'batch', attn_layer: Optional[str] = None,
                 attn_kwargs: Optional[Dict[str, Any]] = None, aa_layer: Optional[str] = None) -> None:
        if aa_layer not in (None, 'avg'):
            raise ValueError(f"unknown aa_layer {aa_layer!r}; valid: 'avg' or None")
        check_choice('norm', norm, NORM_TYPES)
        if attn_layer is not None and attn_layer not in ATTN_TYPES:
            raise ValueError(f'unknown attn_layer {attn_layer!r}; valid: {sorted(ATTN_TYPES)} or None')
        self.act_layer = act_layer
        self.norm = norm
        self.attn_layer = attn_layer
        self.attn_kwargs = dict(attn_kwargs or {})
        self.aa_layer = aa_layer

    def conv_norm_act(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                      groups: int = 1, apply_act: bool = True) -> ConvNormAct:
        if self.aa_layer and stride > 1:  # the conv runs at stride 1, the anti-aliasing pool takes the stride
            module: ConvNormAct = ConvNormActAa(in_chs, out_chs, kernel_size, dilation=dilation, groups=groups,
                                                apply_act=apply_act, act_layer=self.act_layer)
            module.aa = make_aa(self.aa_layer, out_chs, stride)
        else:
            module = ConvNormAct(in_chs, out_chs, kernel_size, stride=stride, dilation=dilation, groups=groups,
                                 apply_act=apply_act, act_layer=self.act_layer)
        if self.norm == 'evos16':  # EvoNorm carries its own non-linearity; the module keeps its child names
            module.bn = EvoNorm2dS0a(out_chs, group_size=16, apply_act=apply_act)
        return module

    def norm_act(self, channels: int, apply_act: bool = True) -> nn.Module:
        return BatchNormAct2d(channels, apply_act=apply_act, act_layer=self.act_layer)

    def act(self) -> nn.Module:
        return create_act_layer(self.act_layer, inplace=True)

    def attn(self, channels: int) -> nn.Module:
        """The attention module on ``channels`` (an identity when the network has none)."""
        if self.attn_layer is None:
            return nn.Identity()
        return ATTN_TYPES[self.attn_layer](channels, **self.attn_kwargs)

    def with_attn(self, attn_layer: Optional[str]) -> 'Layers':
        return Layers(self.act_layer, self.norm, attn_layer, self.attn_kwargs, self.aa_layer)

    def without_aa(self) -> 'Layers':
        return Layers(self.act_layer, self.norm, self.attn_layer, self.attn_kwargs)


class ConvNormActAa(ConvNormAct):
    """Conv, norm-act, then an anti-aliasing pool ``aa`` that does the striding."""

    aa: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.aa(self.bn(self.conv(x)))


def _groups(group_size: Optional[int], channels: int) -> int:
    """Groups of a conv over ``channels`` with ``group_size`` channels each (0/None: dense, 1: depthwise)."""
    if not group_size:
        return 1
    if channels % group_size:
        raise ValueError(f'group_size={group_size} does not divide {channels} channels')
    return channels // group_size


def create_shortcut(downsample: str, in_chs: int, out_chs: int, stride: int, dilation: Tuple[int, int],
                    layers: Layers, natural_stride: Optional[int] = None) -> Optional[nn.Module]:
    """The residual path: identity where the shape holds, else a projection (``'avg'``: avg pool then 1x1 conv,
    ``'conv1x1'``: strided 1x1 conv), or None (``''``: no residual connection across a change of shape).

    ``natural_stride``, the block's stride in the stride-32 network, decides for a dilated block: timm also projects
    where a stage of stride 1 follows a dilated one (its first convolution keeps the smaller dilation), which adds
    parameters the published weights lack (gernet_l/m at output_stride 16 or 8); here that block keeps its identity.

    >>> create_shortcut('avg', 64, 64, 1, (1, 2), Layers(), natural_stride=1)
    Identity()
    """
    keeps_shape = stride == 1 and dilation[0] == dilation[1] if natural_stride is None else natural_stride == 1
    if in_chs == out_chs and keeps_shape:
        return nn.Identity()
    if not downsample:
        return None
    if downsample == 'avg':
        return DownsampleAvg(in_chs, out_chs, stride, dilation[0], layers)
    return layers.conv_norm_act(in_chs, out_chs, 1, stride=stride, dilation=dilation[0], apply_act=False)


class DownsampleAvg(nn.Module):
    """2x2 average pool (see :func:`featzoo.models.resnetv2.shortcut_pool`), then a 1x1 conv and norm."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, dilation: int, layers: Layers) -> None:
        super().__init__()
        self.pool = shortcut_pool(stride, dilation)
        self.conv = layers.conv_norm_act(in_chs, out_chs, 1, apply_act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pool(x))


class ResidualBlock(nn.Module):
    """The residual blocks of byobnet; they differ only in their convolutions and where the attention sits.

    ``basic``: kxk -> kxk (attention on the output); ``bottle``: 1x1 -> kxk (-> kxk) -> 1x1 (attention on the
    bottleneck width); ``dark``: 1x1 -> kxk; ``edge``: kxk -> 1x1. ``bottle_in`` sizes the bottleneck from the
    input width (RegNetZ); ``linear_out`` drops the activation after the sum.

    >>> ResidualBlock('bottle', 64, 256, layers=Layers(), bottle_ratio=0.25)(torch.ones(1, 64, 8, 8)).shape
    torch.Size([1, 256, 8, 8])
    """

    def __init__(self, block: str, in_chs: int, out_chs: int, layers: Layers, kernel_size: int = 3, stride: int = 1,
                 dilation: Tuple[int, int] = (1, 1), group_size: Optional[int] = None, bottle_ratio: float = 1.0,
                 downsample: str = 'avg', linear_out: bool = False, extra_conv: bool = False,
                 bottle_in: bool = False, drop_path_rate: float = 0.0, natural_stride: Optional[int] = None) -> None:
        super().__init__()
        self.block = block
        mid_chs = make_divisible((in_chs if bottle_in else out_chs) * bottle_ratio)
        groups = _groups(group_size, mid_chs)
        cna = layers.conv_norm_act
        self.shortcut = create_shortcut(downsample, in_chs, out_chs, stride, dilation, layers, natural_stride)
        attn_last = block in ('basic', 'dark')
        if block == 'basic':
            self.conv1_kxk = cna(in_chs, mid_chs, kernel_size, stride=stride, dilation=dilation[0])
            self.attn = nn.Identity()
            self.conv2_kxk = cna(mid_chs, out_chs, kernel_size, dilation=dilation[1], groups=groups, apply_act=False)
        elif block == 'bottle':
            self.conv1_1x1 = cna(in_chs, mid_chs, 1)
            self.conv2_kxk = cna(mid_chs, mid_chs, kernel_size, stride=stride, dilation=dilation[0], groups=groups)
            self.conv2b_kxk = (cna(mid_chs, mid_chs, kernel_size, dilation=dilation[1], groups=groups)
                               if extra_conv else nn.Identity())
            self.attn = layers.attn(mid_chs)
            self.conv3_1x1 = cna(mid_chs, out_chs, 1, apply_act=False)
        elif block == 'dark':
            self.conv1_1x1 = cna(in_chs, mid_chs, 1)
            self.attn = nn.Identity()
            self.conv2_kxk = cna(mid_chs, out_chs, kernel_size, stride=stride, dilation=dilation[0], groups=groups,
                                 apply_act=False)
        elif block == 'edge':
            self.conv1_kxk = cna(in_chs, mid_chs, kernel_size, stride=stride, dilation=dilation[0], groups=groups)
            self.attn = layers.attn(mid_chs)
            self.conv2_1x1 = cna(mid_chs, out_chs, 1, apply_act=False)
        else:
            raise ValueError(f'unknown residual block {block!r}; valid: basic, bottle, dark, edge')
        self.attn_last = layers.attn(out_chs) if attn_last else nn.Identity()
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.act = nn.Identity() if linear_out else layers.act()

    def last_norm(self) -> nn.Module:
        last = {'basic': 'conv2_kxk', 'bottle': 'conv3_1x1', 'dark': 'conv2_kxk', 'edge': 'conv2_1x1'}[self.block]
        return getattr(self, last).bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        if self.block == 'basic':
            x = self.conv2_kxk(self.attn(self.conv1_kxk(x)))
        elif self.block == 'bottle':
            x = self.conv3_1x1(self.attn(self.conv2b_kxk(self.conv2_kxk(self.conv1_1x1(x)))))
        elif self.block == 'dark':
            x = self.conv2_kxk(self.attn(self.conv1_1x1(x)))
        else:
            x = self.conv2_1x1(self.attn(self.conv1_kxk(x)))
        x = self.drop_path(self.attn_last(x))
        if self.shortcut is not None:
            x = x + self.shortcut(shortcut)
        return self.act(x)


class RepBlock(nn.Module):
    """The training-time form of a re-parameterizable block: parallel kxk conv-norm branches (one for RepVGG,
    ``num_conv_branches`` for MobileOne), a 1x1 conv-norm branch (``conv_1x1`` for RepVGG, ``conv_scale`` for
    MobileOne, none for a 1x1 block) and a norm-only identity branch where the shape holds; summed, then attention
    and activation. Holds exactly the weights timm publishes for these blocks.

    >>> RepBlock('rep', 32, 32, layers=Layers())(torch.ones(1, 32, 8, 8)).shape
    torch.Size([1, 32, 8, 8])
    """

    def __init__(self, block: str, in_chs: int, out_chs: int, layers: Layers, kernel_size: int = 3, stride: int = 1,
                 dilation: Tuple[int, int] = (1, 1), group_size: Optional[int] = None, num_conv_branches: int = 1,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        if block not in ('rep', 'one'):
            raise ValueError(f"unknown re-parameterizable block {block!r}; valid: 'rep', 'one'")
        self.mobileone = block == 'one'
        groups = _groups(group_size, in_chs)
        use_identity = in_chs == out_chs and stride == 1 and dilation[0] == dilation[1]
        self.identity = layers.norm_act(out_chs, apply_act=False) if use_identity else None
        kxk = partial(layers.conv_norm_act, in_chs, out_chs, kernel_size, stride=stride, dilation=dilation[0],
                      groups=groups, apply_act=False)
        one_by_one = partial(layers.conv_norm_act, in_chs, out_chs, 1, stride=stride, groups=groups, apply_act=False)
        if self.mobileone:
            self.conv_kxk: nn.Module = nn.ModuleList([kxk() for _ in range(num_conv_branches)])
            self.conv_scale = one_by_one() if kernel_size > 1 else None
        else:
            self.conv_kxk = kxk()
            self.conv_1x1 = one_by_one()
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 and use_identity else nn.Identity()
        self.attn = layers.attn(out_chs)
        self.act = layers.act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mobileone:
            branches = ([self.conv_scale(x)] if self.conv_scale is not None else []) + [c(x) for c in self.conv_kxk]
            out = branches[0]
            for branch in branches[1:]:
                out = out + branch
        else:
            out = self.conv_1x1(x) + self.conv_kxk(x)
        out = self.drop_path(out)
        if self.identity is not None:
            out = out + self.identity(x)
        return self.act(self.attn(out))


class Stem(nn.Sequential):
    """A stack of 3x3 convolutions (``conv1``..``convN``), the first with stride 2, reaching stride 4 by a pool
    (``'maxpool'``) or, without one, by striding the last conv. The first ``num_rep - num_act`` convs are bare.

    ``tap`` is the index of the child whose output is the stride-2 feature level (None when there is none).

    >>> stem = Stem(3, (24, 32, 64), pool='', layers=Layers()); stem.tap, stem(torch.ones(1, 3, 32, 32)).shape
    (1, torch.Size([1, 64, 8, 8]))
    """

    def __init__(self, in_chs: int, widths: Sequence[int], pool: str, layers: Layers,
                 num_act: Optional[int] = None) -> None:
        super().__init__()
        num_rep = len(widths)
        strides = [2] + [1] * (num_rep - 1)
        if not pool:
            strides[-1] = 2
        num_act = num_rep if num_act is None else num_act
        self.tap: Optional[int] = None
        self.levels: List[Dict[str, Any]] = []  # (channels, reduction, child) of the stride-2 level
        prev_chs, reduction = in_chs, 1
        for i, (width, stride) in enumerate(zip(widths, strides)):
            if i > 0 and stride > 1:
                self.tap = i - 1
                self.levels.append(dict(num_chs=prev_chs, reduction=reduction, module=f'conv{i}'))
            if i >= num_rep - num_act:
                conv: nn.Module = layers.conv_norm_act(prev_chs, width, 3, stride=stride)
            else:
                conv = create_conv2d(prev_chs, width, 3, stride=stride)
            self.add_module(f'conv{i + 1}', conv)
            prev_chs, reduction = width, reduction * stride
        if pool:
            check_choice('stem_pool', pool, STEM_POOLS)
            self.tap = num_rep - 1
            self.levels.append(dict(num_chs=prev_chs, reduction=reduction, module=f'conv{num_rep}'))
            self.add_module('pool', nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if pool == 'maxpool'
                            else nn.AvgPool2d(2))
        self.out_chs = prev_chs

    def prune_to_tap(self) -> None:
        """Replace what follows the stride-2 level with identities (nothing after it is needed)."""
        if self.tap is not None:
            for name in list(self._modules)[self.tap + 1:]:
                setattr(self, name, nn.Identity())


def create_stem(in_chs: int, out_chs: Union[int, Sequence[int]], stem_type: str, pool: str, layers: Layers
                ) -> Tuple[nn.Module, List[Dict[str, Any]], Dict[str, Any]]:
    """The stem, the feature levels it holds below its output, and its output level. ``out_chs`` as a tuple
    gives the width of each 3x3 conv of a '3x3' stem (CLIP ResNets).

    >>> stem, levels, out = create_stem(3, 64, 'tiered', 'maxpool', Layers()); levels, out
    ([{'num_chs': 64, 'reduction': 2, 'module': 'stem.conv3'}], {'num_chs': 64, 'reduction': 4, 'module': 'stem.pool'})
    """
    check_choice('stem_type', stem_type, STEM_TYPES)
    if not isinstance(out_chs, int):
        if stem_type != '3x3':
            raise ValueError(f"stem_chs as a tuple takes stem_type='3x3', got {stem_type!r}")
        stem: nn.Module = Stem(in_chs, tuple(out_chs), pool, layers)
    elif stem_type in ('quad', 'quad2'):
        widths = [round(out_chs * 0.5 ** i) for i in range(4)][::-1]
        stem = Stem(in_chs, widths, pool, layers, num_act=2 if stem_type == 'quad2' else None)
    elif stem_type == 'tiered':
        stem = Stem(in_chs, (3 * out_chs // 8, out_chs // 2, out_chs), pool, layers)
    elif stem_type == 'deep':
        stem = Stem(in_chs, (out_chs,) * 3, pool, layers)
    elif pool:
        raise ValueError(f'stem_type={stem_type!r} takes no stem_pool, got {pool!r}')
    elif stem_type in ('rep', 'one'):
        stem = RepBlock(stem_type, in_chs, out_chs, layers, stride=2)
    else:
        stem = layers.conv_norm_act(in_chs, out_chs, 3, stride=2)
    if isinstance(stem, Stem):
        last = list(dict(stem.named_children()))[-1]
        return (stem, [dict(f, module=f"stem.{f['module']}") for f in stem.levels],
                dict(num_chs=stem.out_chs, reduction=4, module=f'stem.{last}'))
    return stem, [], dict(num_chs=out_chs, reduction=2, module='stem')


def _per_stage(value: Any, num_stages: int) -> Tuple[Any, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * num_stages


class ByobNet(StagedFeatures, HeadApi, nn.Module):
    """Stem, ``stages.0``..``stages.{n-1}`` (each an ``nn.Sequential`` of blocks), ``final_conv`` and a classifier.

    Per stage (a value or a tuple with one entry per stage): ``block`` type, ``depths``, ``channels``, ``strides``,
    ``group_size`` (0: dense, 1: depthwise), ``bottle_ratio``. A MobileOne depth unit is a depthwise 3x3 block and
    a pointwise 1x1 block, the last ``se_blocks[i]`` units of stage ``i`` with squeeze-excite. RepVGG's
    ``rep_groups`` groups every second block of a stage. ``block_kwargs`` go to the bottleneck blocks
    (``bottle_in``, ``linear_out``, ``extra_conv``). Later stages trade stride for dilation below
    ``output_stride``.

    ``stage_tail`` appends one more block to a stage (None: none): a dict whose ``type`` names a constructor in
    ``tail_blocks`` and whose other entries are its arguments. The constructor is called as ``(in_chs, out_chs,
    layers, dilation=, drop_path_rate=, **arguments)``; families that build on this trunk (MobileViT) supply their
    blocks this way.

    Heads (``head_type``): 'classifier' (pool, linear), 'mlp' (pool, batch norm, ``head_hidden_size`` MLP, linear)
    or 'attn_abs' (CLIP attention pooling with a position table for ``img_size``; resampled to other sizes).

    >>> ByobNet(block='bottle', depths=(1, 1, 1, 1), channels=(32, 64, 96, 128), strides=2, group_size=16,
    ...         bottle_ratio=2, stem_chs=16, num_classes=3)(torch.ones(1, 3, 64, 64)).shape
    torch.Size([1, 3])
    """

    last_stage_end = 'final_conv'  # feature_info's last level
    checkpoint_unit = 'block'

    def __init__(self, block: Union[str, Sequence[str]], depths: Sequence[int], channels: Sequence[int],
                 strides: Union[int, Sequence[int]] = 2, group_size: Union[int, Sequence[int]] = 0,
                 bottle_ratio: Union[float, Sequence[float]] = 1.0, stem_chs: Union[int, Sequence[int]] = 32,
                 stem_type: str = '3x3', aa_layer: Optional[str] = None, head_type: str = 'classifier',
                 head_hidden_size: Optional[int] = None, img_size: Union[int, Sequence[int]] = 224,
                 stem_pool: str = '', downsample: str = 'conv1x1', num_features: int = 0, act_layer: str = 'relu',
                 norm: str = 'batch', attn_layer: Optional[str] = None, attn_kwargs: Optional[Dict[str, Any]] = None,
                 block_kwargs: Optional[Dict[str, Any]] = None, rep_groups: int = 0,
                 stage_tail: Optional[Sequence[Optional[Dict[str, Any]]]] = None,
                 tail_blocks: Optional[Dict[str, Callable[..., nn.Module]]] = None,
                 se_blocks: Optional[Sequence[int]] = None, num_conv_branches: int = 1, num_classes: int = 1000,
                 in_chans: int = 3, global_pool: Optional[str] = None, output_stride: int = 32,
                 drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, zero_init_last: bool = True) -> None:
        super().__init__()
        check_choice('output_stride', output_stride, OUTPUT_STRIDES)
        check_choice('head_type', head_type, HEAD_TYPES)
        check_choice('downsample', downsample, DOWNSAMPLE_TYPES)
        num_stages = len(depths)
        blocks, strides = _per_stage(block, num_stages), _per_stage(strides, num_stages)
        group_sizes, ratios = _per_stage(group_size, num_stages), _per_stage(bottle_ratio, num_stages)
        for name in blocks:
            check_choice('block', name, BLOCK_TYPES)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        layers = Layers(act_layer, norm, attn_layer, attn_kwargs, aa_layer)

        # the stem's output level is reported only when the first stage reduces it
        self.stem, self.feature_info, prev_level = create_stem(in_chans, stem_chs, stem_type, stem_pool,
                                                               layers.without_aa())
        net_stride = prev_level['reduction']
        stage_ends = [0] * len(self.feature_info)
        prev_chs, dilation = prev_level['num_chs'], 1
        # the attention head's position grid is the natural (stride-32) grid of img_size, so a dilated model
        # holds the same parameters; the forward pass resamples the table to the grid it gets
        feat_size = [side // net_stride for side in to_2tuple(img_size)]
        tails = self._check_tails(stage_tail, tail_blocks or {}, num_stages)
        units = [(d * 2 if b == 'one' else d) + (tail is not None) for b, d, tail in zip(blocks, depths, tails)]
        rates = drop_path_rates(drop_path_rate, units)
        self.stages = nn.Sequential()
        for i in range(num_stages):
            stride = strides[i]
            if stride != 1:
                self.feature_info.append(prev_level)
                stage_ends.append(i)
            feat_size = [side // strides[i] for side in feat_size]
            stride, net_stride, dilation = stride_or_dilate(net_stride, dilation, output_stride, stride)
            first_dilation = 1 if dilation in (1, 2) else 2
            stage = []
            for j, spec in enumerate(self._stage_blocks(blocks[i], depths[i], channels[i], group_sizes[i],
                                                        (se_blocks or (0,) * num_stages)[i], rep_groups)):
                kind, out_chs, gs, extra, attn = spec
                out_chs = prev_chs if out_chs is None else out_chs
                block_layers = layers if attn is None else layers.with_attn(attn)
                common = dict(stride=stride if j == 0 else 1, dilation=(first_dilation, dilation), group_size=gs,
                              drop_path_rate=rates[i][j])
                if kind in ('rep', 'one'):
                    stage.append(RepBlock(kind, prev_chs, out_chs, block_layers, num_conv_branches=num_conv_branches,
                                          **extra, **common))
                else:
                    stage.append(ResidualBlock(kind, prev_chs, out_chs, block_layers, bottle_ratio=ratios[i],
                                               downsample=downsample, natural_stride=strides[i] if j == 0 else 1,
                                               **(block_kwargs or {}), **common))
                first_dilation = dilation
                prev_chs = out_chs
            if tails[i] is not None:
                tail = dict(tails[i])
                make_tail = (tail_blocks or {})[tail.pop('type')]
                stage.append(make_tail(prev_chs, channels[i], layers, dilation=(first_dilation, dilation),
                                       drop_path_rate=rates[i][len(stage)], **tail))
                prev_chs = channels[i]
            self.stages.add_module(str(i), nn.Sequential(*stage))
            prev_level = dict(num_chs=prev_chs, reduction=net_stride, module=f'stages.{i}')

        if num_features:
            self.num_features = num_features
            self.final_conv: nn.Module = layers.conv_norm_act(prev_chs, num_features, 1)
        else:
            self.num_features = prev_chs
            self.final_conv = nn.Identity()
        self.feature_info.append(dict(num_chs=self.num_features, reduction=net_stride, module='final_conv'))
        self.stage_ends = stage_ends + [num_stages]
        self.head: nn.Module
        if head_type == 'attn_abs':
            global_pool = 'token' if global_pool is None else global_pool
            self.head = AttentionPool2d(self.num_features, feat_size=feat_size, out_features=num_classes,
                                        embed_dim=head_hidden_size, pool_type=global_pool, drop_rate=drop_rate)
            self.head_hidden_size = self.head.embed_dim
        elif head_type == 'mlp':
            global_pool = 'avg' if global_pool is None else global_pool
            self.head = NormMlpClassifierHead(self.num_features, num_classes, hidden_size=head_hidden_size,
                                              pool_type=global_pool, drop_rate=drop_rate, norm_layer=nn.BatchNorm2d,
                                              act_layer=act_layer)
            self.head_hidden_size = self.head.num_features
        else:
            global_pool = 'avg' if global_pool is None else global_pool
            self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate)
            self.head_hidden_size = self.num_features * self.head.global_pool.feat_mult()
        self.global_pool = global_pool
        self._init_weights(zero_init_last)

    @staticmethod
    def _check_tails(stage_tail: Optional[Sequence[Optional[Dict[str, Any]]]],
                     tail_blocks: Dict[str, Callable[..., nn.Module]], num_stages: int
                     ) -> Tuple[Optional[Dict[str, Any]], ...]:
        if stage_tail is None:
            return (None,) * num_stages
        if len(stage_tail) != num_stages:
            raise ValueError(f'stage_tail must have one entry (a dict or None) per stage ({num_stages}), '
                             f'got {len(stage_tail)}')
        for tail in stage_tail:
            if tail is not None and (not isinstance(tail, dict) or tail.get('type') not in tail_blocks):
                raise ValueError(f'stage_tail entry {tail!r} must be None or a dict whose type is one of '
                                 f'{sorted(tail_blocks)}')
        return tuple(stage_tail)

    @staticmethod
    def _stage_blocks(kind: str, depth: int, out_chs: int, group_size: int, se_units: int, rep_groups: int
                      ) -> List[Tuple[str, Optional[int], int, Dict[str, Any], Optional[str]]]:
        """(type, out_chs (None: the input width), group size, extra arguments, attention override) per block."""
        if kind == 'one':
            specs = []
            for unit in range(depth):
                attn = 'se' if unit >= depth - se_units else None
                specs.append(('one', None, 1, {}, attn))                       # depthwise 3x3
                specs.append(('one', out_chs, 0, dict(kernel_size=1), attn))   # pointwise 1x1
            return specs
        if kind == 'rep' and rep_groups:
            return [(kind, out_chs, out_chs // rep_groups if j % 2 else 0, {}, None) for j in range(depth)]
        return [(kind, out_chs, group_size, {}, None)] * depth

    def _init_weights(self, zero_init_last: bool) -> None:
        init_fan_out_normal_(self)
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, ResidualBlock) and m.shortcut is not None:
                    norm = m.last_norm()
                    if isinstance(norm, nn.BatchNorm2d):
                        nn.init.zeros_(norm.weight)

    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter-group regexes: the stem, then stages (``coarse``) or blocks, the final conv last.

        >>> SPEC.build('repvgg_a0').group_matcher()['stem']
        '^stem'
        """
        return dict(stem=r'^stem', blocks=[(r'^stages\.(\d+)' if coarse else r'^stages\.(\d+)\.(\d+)', None),
                                           (r'^final_conv', (99999,))])

    def get_classifier(self) -> nn.Module:
        """The final linear layer (``nn.Identity`` when ``num_classes == 0``).

        >>> SPEC.build('repvgg_a0', num_classes=3).get_classifier().out_features
        3
        """
        return self.head.proj if isinstance(self.head, AttentionPool2d) else self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier (``num_classes=0`` removes it); ``global_pool=None`` keeps the pooling.

        >>> m = SPEC.build('repvgg_a0'); m.reset_classifier(0, ''); m(torch.ones(1, 3, 64, 64)).shape
        torch.Size([1, 1280, 2, 2])
        """
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f'num_classes must be an int >= 0 (0 removes the classifier), got {num_classes!r}')
        ref = next(self.parameters())
        self.num_classes = num_classes
        if isinstance(self.head, AttentionPool2d):
            self.head.reset(num_classes, global_pool)  # the attention's input width is fixed
        elif isinstance(self.head, NormMlpClassifierHead):
            self.head.reset(num_classes, global_pool, in_features=self.num_features)
            self.head_hidden_size = self.head.num_features
        else:
            self.head.in_features = self.num_features
            self.head.reset(num_classes, global_pool)
            self.head_hidden_size = self.num_features * self.head.global_pool.feat_mult()
        self.head.to(device=ref.device, dtype=ref.dtype)
        self.head.train(self.training)
        if global_pool is not None:
            self.global_pool = global_pool

    def _num_stem_levels(self) -> int:
        return self.stage_ends.count(0)

    def _stage_level_ends(self) -> List[int]:
        return self.stage_ends[self._num_stem_levels():]

    def _forward_stem(self, x: torch.Tensor, stop: int = -1) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        # the stride-2 level sits inside a deep stem; a single-conv or block stem is a level as a whole, unless the
        # first stage keeps its stride (MobileViT-v2)
        if not isinstance(self.stem, Stem) or self.stem.tap is None:
            x = self.stem(x)
            return x, [x][:self._num_stem_levels()]
        return run_tapped(self.stem, x, (self.stem.tap,))

    def _prune_stem(self, last: int) -> None:
        if isinstance(self.stem, Stem):
            self.stem.prune_to_tap()

    def _prune_end(self, last: int, num_levels: int, prune_norm: bool, prune_head: bool) -> None:
        # the attention and MLP heads are sized for the final width, so they give way to a bare head
        prune_end = self.stage_ends[last] < self.stage_ends[-1]
        if prune_end:
            self.final_conv = nn.Identity()
            self.num_features = self.head_hidden_size = self.feature_info[last]['num_chs']
        if prune_head or prune_end:
            if isinstance(self.head, AttentionPool2d):
                ref = next(self.parameters())
                self.head = ClassifierHead(self.num_features, 0, pool_type='').to(ref.device, ref.dtype)
                self.head.train(self.training)
                self.num_classes, self.global_pool, self.head_hidden_size = 0, '', self.num_features
            elif isinstance(self.head, NormMlpClassifierHead):
                self.num_classes = 0
                self.head.reset(0, '', reset_other=True, in_features=self.num_features)
                self.head_hidden_size = self.head.num_features
                self.global_pool = ''
            else:
                self.reset_classifier(0, '')

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final map (after ``final_conv``), NCHW.

        >>> SPEC.build('repvgg_a0').forward_features(torch.ones(1, 3, 64, 64)).shape
        torch.Size([1, 1280, 2, 2])
        """
        return self.final_conv(self._forward_stages(x))


def _scaled(widths: Sequence[int], factors: Sequence[float]) -> Tuple[int, ...]:
    return tuple(int(w * f) for w, f in zip(widths, factors))


_BASE = (64, 128, 256, 512)  # RepVGG and MobileOne widths before their per-stage multipliers
_REPVGG = dict(block='rep', stem_type='rep', stem_chs=64)
_MOBILEONE = dict(block='one', stem_type='one', stem_chs=64, depths=(2, 8, 10, 1))
_GENET = dict(block=('basic', 'basic', 'bottle', 'bottle', 'bottle'), strides=(2, 2, 2, 2, 1),
              group_size=(0, 0, 0, 1, 1), bottle_ratio=(1.0, 1.0, 0.25, 3.0, 3.0))
_RESNEXT26TS = dict(block='bottle', depths=(2, 2, 2, 2), channels=(256, 512, 1024, 2048), strides=(1, 2, 2, 2),
                    group_size=32, bottle_ratio=0.25, stem_chs=64, stem_type='tiered', stem_pool='maxpool',
                    act_layer='silu')
_RESNET33TS = dict(block='bottle', depths=(2, 3, 3, 2), channels=(256, 512, 1536, 1536), strides=(1, 2, 2, 2),
                   bottle_ratio=0.25, stem_chs=64, stem_type='tiered', num_features=1280, act_layer='silu')
_RESNET50 = dict(block='bottle', depths=(3, 4, 6, 3), channels=(256, 512, 1024, 2048), strides=(1, 2, 2, 2),
                 bottle_ratio=0.25, stem_chs=64, stem_type='tiered')
_QUAD = dict(channels=(256, 512, 1536, 1536), strides=(1, 2, 2, 2), group_size=(32, 32, 32, 1),
             bottle_ratio=(0.25, 0.25, 0.25, 1.0), stem_chs=128, num_features=2048, act_layer='silu')
_REGNETZ = dict(block='bottle', downsample='', act_layer='silu', attn_layer='se', attn_kwargs=dict(rd_ratio=0.25),
                block_kwargs=dict(bottle_in=True, linear_out=True))
_Z16 = dict(_REGNETZ, depths=(2, 6, 12, 2), channels=(48, 96, 192, 288), group_size=16, stem_chs=32,
            num_features=1536)
_Z8 = dict(_REGNETZ, depths=(3, 6, 12, 3), channels=(64, 128, 256, 384), strides=(1, 2, 2, 2), group_size=8,
           stem_chs=64, stem_type='tiered', num_features=1792)

# OpenAI CLIP ResNets: three-conv stem with a 2x2 average pool, anti-aliased (average-pooled) strides and
# shortcuts, attention-pool head ('_gap': a plain pooled classifier)
_CLIP_GAP = dict(block='bottle', channels=(256, 512, 1024, 2048), strides=(1, 2, 2, 2), bottle_ratio=0.25,
                 stem_chs=(32, 32, 64), stem_pool='avg2', downsample='avg', aa_layer='avg')
_CLIP = dict(_CLIP_GAP, head_type='attn_abs')


def _x(width_factor: float) -> Dict[str, Any]:
    """The widths of a CLIP ResNet scaled by ``width_factor`` (RN50x4, x16, x64)."""
    return dict(channels=tuple(int(round(c * width_factor)) for c in _CLIP_GAP['channels']),
                stem_chs=tuple(int(round(c * width_factor)) for c in _CLIP_GAP['stem_chs']))


VARIANTS: Dict[str, Dict[str, Any]] = {
    'gernet_l': dict(_GENET, depths=(1, 2, 6, 5, 4), channels=(128, 192, 640, 640, 640), num_features=2560),
    'gernet_m': dict(_GENET, depths=(1, 2, 6, 4, 1), channels=(128, 192, 640, 640, 640), num_features=2560),
    'gernet_s': dict(_GENET, depths=(1, 3, 7, 2, 1), channels=(48, 48, 384, 560, 256), stem_chs=13,
                     num_features=1920),
    'repvgg_a0': dict(_REPVGG, depths=(2, 4, 14, 1), channels=_scaled(_BASE, (0.75, 0.75, 0.75, 2.5)), stem_chs=48),
    'repvgg_a1': dict(_REPVGG, depths=(2, 4, 14, 1), channels=_scaled(_BASE, (1, 1, 1, 2.5))),
    'repvgg_a2': dict(_REPVGG, depths=(2, 4, 14, 1), channels=_scaled(_BASE, (1.5, 1.5, 1.5, 2.75))),
    'repvgg_b0': dict(_REPVGG, depths=(4, 6, 16, 1), channels=_scaled(_BASE, (1, 1, 1, 2.5))),
    'repvgg_b1': dict(_REPVGG, depths=(4, 6, 16, 1), channels=_scaled(_BASE, (2, 2, 2, 4))),
    'repvgg_b1g4': dict(_REPVGG, depths=(4, 6, 16, 1), channels=_scaled(_BASE, (2, 2, 2, 4)), rep_groups=4),
    'repvgg_b2': dict(_REPVGG, depths=(4, 6, 16, 1), channels=_scaled(_BASE, (2.5, 2.5, 2.5, 5))),
    'repvgg_b2g4': dict(_REPVGG, depths=(4, 6, 16, 1), channels=_scaled(_BASE, (2.5, 2.5, 2.5, 5)), rep_groups=4),
    'repvgg_b3': dict(_REPVGG, depths=(4, 6, 16, 1), channels=_scaled(_BASE, (3, 3, 3, 5))),
    'repvgg_b3g4': dict(_REPVGG, depths=(4, 6, 16, 1), channels=_scaled(_BASE, (3, 3, 3, 5)), rep_groups=4),
    'repvgg_d2se': dict(_REPVGG, depths=(8, 14, 24, 1), channels=_scaled(_BASE, (2.5, 2.5, 2.5, 5)),
                        attn_layer='se', attn_kwargs=dict(rd_ratio=0.0625, rd_divisor=1)),
    'mobileone_s0': dict(_MOBILEONE, channels=_scaled(_BASE, (0.75, 1.0, 1.0, 2.0)), stem_chs=48,
                         num_conv_branches=4),
    'mobileone_s1': dict(_MOBILEONE, channels=_scaled(_BASE, (1.5, 1.5, 2.0, 2.5))),
    'mobileone_s2': dict(_MOBILEONE, channels=_scaled(_BASE, (1.5, 2.0, 2.5, 4.0))),
    'mobileone_s3': dict(_MOBILEONE, channels=_scaled(_BASE, (2.0, 2.5, 3.0, 4.0))),
    'mobileone_s4': dict(_MOBILEONE, channels=_scaled(_BASE, (3.0, 3.5, 3.5, 4.0)), se_blocks=(0, 0, 5, 1)),
    'resnet51q': dict(_QUAD, block='bottle', depths=(2, 4, 6, 4), stem_type='quad2'),
    'resnet61q': dict(_QUAD, block=('edge', 'bottle', 'bottle', 'bottle'), depths=(1, 4, 6, 4), stem_type='quad',
                      group_size=(0, 32, 32, 1), bottle_ratio=(1.0, 0.25, 0.25, 1.0),
                      block_kwargs=dict(extra_conv=True)),
    'resnext26ts': dict(_RESNEXT26TS),
    'gcresnext26ts': dict(_RESNEXT26TS, attn_layer='gca'),
    'seresnext26ts': dict(_RESNEXT26TS, attn_layer='se'),
    'eca_resnext26ts': dict(_RESNEXT26TS, attn_layer='eca'),
    'bat_resnext26ts': dict(_RESNEXT26TS, attn_layer='bat', attn_kwargs=dict(block_size=8)),
    'resnet32ts': dict(_RESNET33TS, num_features=0),
    'resnet33ts': dict(_RESNET33TS),
    'gcresnet33ts': dict(_RESNET33TS, attn_layer='gca'),
    'seresnet33ts': dict(_RESNET33TS, attn_layer='se'),
    'eca_resnet33ts': dict(_RESNET33TS, attn_layer='eca'),
    'gcresnet50t': dict(_RESNET50, attn_layer='gca'),
    'gcresnext50ts': dict(_RESNET50, group_size=32, stem_pool='maxpool', act_layer='silu', attn_layer='gca'),
    'regnetz_b16': dict(_Z16, bottle_ratio=3),
    'regnetz_c16': dict(_Z16, bottle_ratio=4),
    'regnetz_d32': dict(_Z8, bottle_ratio=4, group_size=32),
    'regnetz_d8': dict(_Z8, bottle_ratio=4),
    'regnetz_e8': dict(_Z8, depths=(3, 8, 16, 3), channels=(96, 192, 384, 512), bottle_ratio=4, num_features=2048),
    'regnetz_b16_evos': dict(_Z16, bottle_ratio=3, norm='evos16'),
    'regnetz_c16_evos': dict(_Z16, bottle_ratio=4, norm='evos16'),
    'regnetz_d8_evos': dict(_Z8, bottle_ratio=4, norm='evos16', stem_type='deep'),
    'resnet50_clip': dict(_CLIP, depths=(3, 4, 6, 3)),
    'resnet101_clip': dict(_CLIP, depths=(3, 4, 23, 3)),
    'resnet50x4_clip': dict(_CLIP, depths=(4, 6, 10, 6), **_x(1.25), img_size=288),
    'resnet50x16_clip': dict(_CLIP, depths=(6, 8, 18, 8), **_x(1.5), img_size=384),
    'resnet50x64_clip': dict(_CLIP, depths=(3, 15, 36, 10), **_x(2.0), img_size=448),
    'resnet50_clip_gap': dict(_CLIP_GAP, depths=(3, 4, 6, 3)),
    'resnet101_clip_gap': dict(_CLIP_GAP, depths=(3, 4, 23, 3)),
    'resnet50x4_clip_gap': dict(_CLIP_GAP, depths=(4, 6, 10, 6), **_x(1.25)),
    'resnet50x16_clip_gap': dict(_CLIP_GAP, depths=(6, 8, 18, 8), **_x(1.5)),
    'resnet50x64_clip_gap': dict(_CLIP_GAP, depths=(3, 15, 36, 10), **_x(2.0)),
    'resnet50_mlp': dict(_CLIP_GAP, depths=(3, 4, 6, 3), head_type='mlp', head_hidden_size=1024),
    'test_byobnet': dict(block=('edge', 'dark', 'basic', 'bottle'), depths=(1, 1, 1, 1), channels=(32, 64, 128, 256),
                         group_size=(0, 0, 32, 64), bottle_ratio=(0.5, 0.5, 0.25, 0.25), stem_chs=24,
                         downsample='avg', attn_layer='se', attn_kwargs=dict(rd_ratio=0.25)),
}

def _input_multiple(name: str, row: Dict[str, Any]) -> int:
    """Bilinear attention needs every stage's map to be a multiple of its block size (the last stage at 1/32)."""
    if row.get('attn_layer') == 'bat':
        return 32 * row['attn_kwargs']['block_size']
    return 1


def _export(name: str, row: Dict[str, Any]) -> Tuple[str, ...]:
    """Bilinear attention reshapes the map into blocks of the size the input gives: torch.export then fixes the
    input size (the symbolic sizes through the stem's strided convolutions are not provably multiples of the block)."""
    fixed_size = row.get('attn_layer') == 'bat'
    return ('torch.export', 'onnx', 'compile') if fixed_size else ('torch.export', 'dynamic_hw', 'onnx', 'compile')


SPEC = FamilySpec(
    name='byobnet', model=ByobNet, variants=VARIANTS, default_cfg=DEFAULT_CFG,
    feature_cls=('list', 'dict', 'hook', 'fx', 'getter'), default_feature_cls='list', output_strides=OUTPUT_STRIDES,
    export=_export, size_args=('bottle_ratio', 'head_hidden_size'),
    img_size_arg=lambda name, row: 'img_size' if row.get('head_type') == 'attn_abs' else None,
    input_multiple=_input_multiple, min_input_size=_input_multiple)
