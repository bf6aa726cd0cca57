"""Cross Stage Partial networks (Wang et al., 'CSPNet: A New Backbone that can Enhance Learning Capability of CNN'),
DarkNet (YOLOv3) and the 'cs3' networks (CSP stages with a single transition, DarkNet / edge / bottleneck blocks),
with timm's parameter names so its checkpoints load unchanged.

A network is a stem, a sequence of stages and a classifier head. A cross stage (``'csp'``, ``'cs3'``) expands its
input with a 1x1 conv and splits it in two halves: one half runs the stage's blocks, the other skips them, and a
1x1 transition merges both. A ``'dark'`` stage simply runs its blocks after a downsampling conv. Every stage
setting is given per stage or once for all stages (the last value repeats).

``output_stride`` 16 or 8 keeps the later stages at stride 1 and dilates their 3x3 convolutions instead; the stage
that takes over a stride dilates its downsampling conv by the previous dilation (capped at 2), as timm does.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..checks import check_choice, check_int, check_int_tuple
from ..family import FamilySpec
from ..layers import ClassifierHead, ConvNormAct, DropPath, create_act_layer, get_attn, make_divisible
from ..layers.drop import drop_path_rates
from ..layers.head_api import HeadApi, reset_classifier_head
from ..layers.output_stride import stride_or_dilate
from ..layers.stage_intermediates import StagedFeatures, run_sequence, tap_positions
from ..layers.weight_init import kaiming_normal_, normal_

__all__ = ['CspNet', 'CrossStage', 'CrossStage3', 'DarkStage', 'BottleneckBlock', 'DarkBlock', 'EdgeBlock', 'SPEC',
           'VARIANTS']

OUTPUT_STRIDES = (8, 16, 32)
STAGE_TYPES = ('csp', 'cs3', 'dark')
BLOCK_TYPES = ('bottle', 'dark', 'edge')
STEM_STRIDES = (1, 2, 4)
STEM_POOLS = ('', 'max')
DEFAULT_CFG = dict(
    input_size=(3, 256, 256), pool_size=(8, 8), interpolation='bilinear', crop_pct=0.887, crop_mode='center',
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), first_conv='stem.conv1.conv', classifier='head.fc',
    num_classes=1000)
# timm's 'group' of a transition conv joins the group of its stage's last block (its MATCH_PREV_GROUP ordinal)
_MATCH_PREVIOUS_GROUP = (99999,)


def _per_stage(name: str, value: Any, num_stages: int) -> Tuple[Any, ...]:
    """``value`` as one entry per stage: a scalar repeats, a shorter sequence repeats its last entry."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if not values:
        raise ValueError(f'{name} must be a value or a non-empty sequence (one entry per stage), got {value!r}')
    if len(values) > num_stages:
        raise ValueError(f'{name} has {len(values)} entries for {num_stages} stages: {values}')
    return values + (values[-1],) * (num_stages - len(values))


def _make_attn(attn_layer: Optional[str], attn_kwargs: Optional[Mapping[str, Any]], channels: int,
               act_layer: str) -> nn.Module:
    if not attn_layer:
        return nn.Identity()
    return get_attn(attn_layer)(channels, act_layer=act_layer, **dict(attn_kwargs or {}))


class BottleneckBlock(nn.Module):
    """ResNe(X)t bottleneck: 1x1 ``conv1``, 3x3 ``conv2`` (grouped, dilated), optional attention ``attn2``, 1x1
    ``conv3`` without activation, residual sum, then ``act3``.

    >>> BottleneckBlock(64, 64, bottle_ratio=0.5)(torch.ones(1, 64, 8, 8)).shape
    torch.Size([1, 64, 8, 8])
    """

    def __init__(self, in_chs: int, out_chs: int, dilation: int = 1, bottle_ratio: float = 0.25, groups: int = 1,
                 act_layer: str = 'relu', attn_layer: Optional[str] = None,
                 attn_kwargs: Optional[Mapping[str, Any]] = None, drop_path: float = 0.) -> None:
        super().__init__()
        mid_chs = int(round(out_chs * bottle_ratio))
        self.conv1 = ConvNormAct(in_chs, mid_chs, 1, act_layer=act_layer)
        self.conv2 = ConvNormAct(mid_chs, mid_chs, 3, dilation=dilation, groups=groups, act_layer=act_layer)
        self.attn2 = _make_attn(attn_layer, attn_kwargs, mid_chs, act_layer)
        self.conv3 = ConvNormAct(mid_chs, out_chs, 1, apply_act=False, act_layer=act_layer)
        self.attn3 = nn.Identity()  # timm's slot for attention after conv3, unused by every published network
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()
        self.act3 = create_act_layer(act_layer)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.attn3(self.conv3(self.attn2(self.conv2(self.conv1(x)))))
        return self.act3(self.drop_path(y) + x)


class DarkBlock(nn.Module):
    """DarkNet residual: 1x1 ``conv1``, optional attention, 3x3 ``conv2`` (activated), residual sum.

    >>> DarkBlock(32, 32)(torch.ones(1, 32, 8, 8)).shape
    torch.Size([1, 32, 8, 8])
    """

    kernel_sizes = (1, 3)  # of conv1 and conv2; the 3x3 one is the grouped, dilated one

    def __init__(self, in_chs: int, out_chs: int, dilation: int = 1, bottle_ratio: float = 0.5, groups: int = 1,
                 act_layer: str = 'relu', attn_layer: Optional[str] = None,
                 attn_kwargs: Optional[Mapping[str, Any]] = None, drop_path: float = 0.) -> None:
        super().__init__()
        mid_chs = int(round(out_chs * bottle_ratio))
        spatial = dict(dilation=dilation, groups=groups)
        k1, k2 = self.kernel_sizes
        self.conv1 = ConvNormAct(in_chs, mid_chs, k1, act_layer=act_layer, **(spatial if k1 == 3 else {}))
        self.attn = _make_attn(attn_layer, attn_kwargs, mid_chs, act_layer)
        self.conv2 = ConvNormAct(mid_chs, out_chs, k2, act_layer=act_layer, **(spatial if k2 == 3 else {}))
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop_path(self.conv2(self.attn(self.conv1(x)))) + x


class EdgeBlock(DarkBlock):
    """Fused-MBConv-like residual: 3x3 ``conv1`` (grouped, dilated), optional attention, 1x1 ``conv2``, residual sum.

    The same children as :class:`DarkBlock` with the kernel sizes swapped.

    >>> EdgeBlock(32, 32, bottle_ratio=1.5).conv1.out_channels
    48
    """

    kernel_sizes = (3, 1)


_BLOCKS = {'bottle': BottleneckBlock, 'dark': DarkBlock, 'edge': EdgeBlock}


def _make_down(in_chs: int, out_chs: int, stride: int, first_dilation: int, groups: int, avg_down: bool,
               act_layer: str) -> nn.Module:
    """The stage's downsampling step: a strided 3x3 conv, or (``avg_down``) a 2x2 average pool then a 1x1 conv.

    A dilated stage's average pool is dropped rather than made dense (as timm builds it)."""
    if avg_down:
        return nn.Sequential(nn.AvgPool2d(2) if stride == 2 else nn.Identity(),
                             ConvNormAct(in_chs, out_chs, 1, groups=groups, act_layer=act_layer))
    return ConvNormAct(in_chs, out_chs, 3, stride=stride, dilation=first_dilation, groups=groups,
                       act_layer=act_layer)


def _make_blocks(block_type: str, in_chs: int, out_chs: int, depth: int, dilation: int, bottle_ratio: float,
                 groups: int, act_layer: str, attn_layer: Optional[str], attn_kwargs: Optional[Mapping[str, Any]],
                 rates: Sequence[float]) -> nn.Sequential:
    block_cls = _BLOCKS[block_type]
    blocks = nn.Sequential()
    for i in range(depth):
        blocks.add_module(str(i), block_cls(
            in_chs if i == 0 else out_chs, out_chs, dilation=dilation, bottle_ratio=bottle_ratio, groups=groups,
            act_layer=act_layer, attn_layer=attn_layer, attn_kwargs=attn_kwargs, drop_path=rates[i]))
    return blocks


class CrossStage(nn.Module):
    """CSP stage: optional ``conv_down``, 1x1 ``conv_exp``; one half of its output runs ``blocks`` and the 1x1
    ``conv_transition_b``, the other half skips them; ``conv_transition`` merges the two.

    >>> CrossStage(32, 64, stride=2, dilation=1, depth=1, expand_ratio=2., bottle_ratio=0.5)(
    ...     torch.ones(1, 32, 8, 8)).shape
    torch.Size([1, 64, 4, 4])
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int, dilation: int, depth: int, block_ratio: float = 1.,
                 bottle_ratio: float = 1., expand_ratio: float = 1., groups: int = 1,
                 first_dilation: Optional[int] = None, avg_down: bool = False, down_growth: bool = False,
                 cross_linear: bool = False, block_type: str = 'bottle', act_layer: str = 'relu',
                 attn_layer: Optional[str] = None, attn_kwargs: Optional[Mapping[str, Any]] = None,
                 drop_path_rates: Optional[Sequence[float]] = None) -> None:
        super().__init__()
        first_dilation = first_dilation or dilation
        down_chs = out_chs if down_growth else in_chs
        self.expand_chs = int(round(out_chs * expand_ratio))
        block_out_chs = int(round(out_chs * block_ratio))
        if stride != 1 or first_dilation != dilation:
            self.conv_down: nn.Module = _make_down(in_chs, down_chs, stride, first_dilation, groups, avg_down,
                                                   act_layer)
            in_chs = down_chs
        else:
            self.conv_down = nn.Identity()
        self.conv_exp = ConvNormAct(in_chs, self.expand_chs, 1, apply_act=not cross_linear, act_layer=act_layer)
        self.blocks = _make_blocks(block_type, self.expand_chs // 2, block_out_chs, depth, dilation, bottle_ratio,
                                   groups, act_layer, attn_layer, attn_kwargs, drop_path_rates or [0.] * depth)
        self._add_transitions(block_out_chs if depth else self.expand_chs // 2, out_chs, act_layer)

    def _add_transitions(self, blocks_out_chs: int, out_chs: int, act_layer: str) -> None:
        self.conv_transition_b = ConvNormAct(blocks_out_chs, self.expand_chs // 2, 1, act_layer=act_layer)
        self.conv_transition = ConvNormAct(self.expand_chs, out_chs, 1, act_layer=act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_exp(self.conv_down(x))
        skip, through = x.split(self.expand_chs // 2, dim=1)
        through = self.conv_transition_b(self.blocks(through))
        return self.conv_transition(torch.cat([skip, through], dim=1))


class CrossStage3(CrossStage):
    """'cs3' stage: as :class:`CrossStage` without ``conv_transition_b``; the first half runs the blocks and comes
    first in the merge.

    >>> CrossStage3(32, 64, stride=2, dilation=1, depth=1, block_ratio=0.5, block_type='dark')(
    ...     torch.ones(1, 32, 8, 8)).shape
    torch.Size([1, 64, 4, 4])
    """

    def _add_transitions(self, blocks_out_chs: int, out_chs: int, act_layer: str) -> None:
        self.conv_transition = ConvNormAct(self.expand_chs, out_chs, 1, act_layer=act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_exp(self.conv_down(x))
        through, skip = x.split(self.expand_chs // 2, dim=1)
        return self.conv_transition(torch.cat([self.blocks(through), skip], dim=1))


class DarkStage(nn.Module):
    """DarkNet stage: ``conv_down`` then ``blocks``.

    >>> DarkStage(32, 64, stride=2, dilation=1, depth=1, bottle_ratio=0.5, block_type='dark')(
    ...     torch.ones(1, 32, 8, 8)).shape
    torch.Size([1, 64, 4, 4])
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int, dilation: int, depth: int, block_ratio: float = 1.,
                 bottle_ratio: float = 1., groups: int = 1, first_dilation: Optional[int] = None,
                 avg_down: bool = False, block_type: str = 'bottle', act_layer: str = 'relu',
                 attn_layer: Optional[str] = None, attn_kwargs: Optional[Mapping[str, Any]] = None,
                 drop_path_rates: Optional[Sequence[float]] = None) -> None:
        super().__init__()
        self.conv_down = _make_down(in_chs, out_chs, stride, first_dilation or dilation, groups, avg_down, act_layer)
        self.blocks = _make_blocks(block_type, out_chs, int(round(out_chs * block_ratio)), depth, dilation,
                                   bottle_ratio, groups, act_layer, attn_layer, attn_kwargs,
                                   drop_path_rates or [0.] * depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.conv_down(x))


class CspNet(StagedFeatures, HeadApi, nn.Module):
    """Stem (``stem.conv1``... and an optional ``stem.pool``), ``stages`` and a classifier ``head``.

    Stage settings (``strides``, ``groups``, ``block_ratio``, ``bottle_ratio``, ``expand_ratio``, ``avg_down``,
    ``attn_layer``, ``attn_kwargs``, ``stage_type``, ``block_type``, ``cross_linear``, ``down_growth``) take one value
    or one per stage (a short sequence repeats its last entry).

    >>> m = CspNet(stem_chs=(16, 32), depths=(1, 1), channels=(32, 64), block_ratio=0.5, stage_type='cs3',
    ...            block_type='dark', num_classes=10)
    >>> m(torch.ones(1, 3, 64, 64)).shape, [f['reduction'] for f in m.feature_info]
    (torch.Size([1, 10]), [2, 4, 8])
    """

    def __init__(self, stem_chs: Union[int, Sequence[int]] = 32, stem_kernel: int = 3, stem_stride: int = 2,
                 stem_padding: Union[str, int] = '', stem_pool: str = '',
                 depths: Sequence[int] = (3, 3, 5, 2), channels: Sequence[int] = (128, 256, 512, 1024),
                 strides: Any = 2, groups: Any = 1, block_ratio: Any = 1., bottle_ratio: Any = 1.,
                 expand_ratio: Any = 1., avg_down: Any = False, attn_layer: Any = None, attn_kwargs: Any = None,
                 stage_type: Any = 'csp', block_type: Any = 'bottle', cross_linear: Any = False,
                 down_growth: Any = False, act_layer: str = 'leaky_relu', in_chans: int = 3, num_classes: int = 1000,
                 global_pool: str = 'avg', output_stride: int = 32, drop_rate: float = 0.,
                 drop_path_rate: Optional[float] = 0., zero_init_last: bool = True) -> None:
        super().__init__()
        stem_chs = check_int_tuple('stem_chs', stem_chs if isinstance(stem_chs, (tuple, list)) else (stem_chs,))
        depths = check_int_tuple('depths', depths, minimum=0)
        num_stages = len(depths)
        channels = check_int_tuple('channels', channels, num_stages)
        check_int('stem_kernel', stem_kernel, 1)
        check_choice('stem_stride', stem_stride, STEM_STRIDES)
        check_choice('stem_pool', stem_pool, STEM_POOLS)
        if stem_pool and stem_stride != 4:
            raise ValueError(f"stem_pool={stem_pool!r} needs stem_stride=4 (the pool takes the second stride), "
                             f"got stem_stride={stem_stride}")
        check_choice('output_stride', output_stride, OUTPUT_STRIDES)
        self.num_classes = check_int('num_classes', num_classes, 0)
        self.in_chans = check_int('in_chans', in_chans, 1)
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        stage_args = dict(strides=strides, groups=groups, block_ratio=block_ratio, bottle_ratio=bottle_ratio,
                          expand_ratio=expand_ratio, avg_down=avg_down, attn_layer=attn_layer, attn_kwargs=attn_kwargs,
                          stage_type=stage_type, block_type=block_type, cross_linear=cross_linear,
                          down_growth=down_growth)
        per_stage = {k: _per_stage(k, v, num_stages) for k, v in stage_args.items()}
        for kind in per_stage['stage_type']:
            check_choice('stage_type', kind, STAGE_TYPES)
        for kind in per_stage['block_type']:
            check_choice('block_type', kind, BLOCK_TYPES)
        for stride in per_stage['strides']:
            check_choice('each strides entry', stride, (1, 2))
        for attn in per_stage['attn_layer']:
            get_attn(attn)  # ValueError naming the valid attention layers

        # stem: the first conv takes a stride of 2 (or 4 without a pool, the last conv taking the second)
        stem_levels: List[Dict[str, Any]] = []
        self.stem = nn.Sequential()
        prev_chs, reduction, tap = self.in_chans, 1, None
        for i, chs in enumerate(stem_chs):
            stride = 2 if (i == 0 and stem_stride > 1) or (
                i == len(stem_chs) - 1 and stem_stride > 2 and not stem_pool) else 1
            if stride > 1 and tap is not None:
                stem_levels.append(tap)
            self.stem.add_module(f'conv{i + 1}', ConvNormAct(
                prev_chs, chs, stem_kernel, stride=stride, padding=stem_padding if i == 0 else '',
                act_layer=act_layer))
            prev_chs, reduction = chs, reduction * stride
            tap = dict(num_chs=chs, reduction=reduction, module=f'stem.conv{i + 1}')
        if stem_pool:
            stem_levels.append(tap)
            self.stem.add_module('pool', nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
            reduction *= 2
            tap = dict(num_chs=prev_chs, reduction=reduction, module='stem.pool')

        # stages: a level ends wherever the next stage downsamples, and after the last stage
        rates = drop_path_rates(drop_path_rate or 0., depths)
        self.feature_info = stem_levels
        dilation = 1
        stages = []
        for i in range(num_stages):
            stride = per_stage['strides'][i]
            if stride > 1 and tap is not None:
                self.feature_info.append(tap)
            stride, reduction, dilation = stride_or_dilate(reduction, dilation, output_stride, stride)
            common = dict(stride=stride, dilation=dilation, first_dilation=1 if dilation in (1, 2) else 2,
                          depth=depths[i], block_ratio=per_stage['block_ratio'][i],
                          bottle_ratio=per_stage['bottle_ratio'][i], groups=per_stage['groups'][i],
                          avg_down=per_stage['avg_down'][i], block_type=per_stage['block_type'][i],
                          act_layer=act_layer, attn_layer=per_stage['attn_layer'][i],
                          attn_kwargs=per_stage['attn_kwargs'][i], drop_path_rates=rates[i])
            if per_stage['stage_type'][i] == 'dark':
                stages.append(DarkStage(prev_chs, channels[i], **common))
            else:
                stage_cls = CrossStage if per_stage['stage_type'][i] == 'csp' else CrossStage3
                stages.append(stage_cls(prev_chs, channels[i], expand_ratio=per_stage['expand_ratio'][i],
                                        down_growth=per_stage['down_growth'][i],
                                        cross_linear=per_stage['cross_linear'][i], **common))
            prev_chs = channels[i]
            tap = dict(num_chs=prev_chs, reduction=reduction, module=f'stages.{i}')
        self.feature_info.append(tap)
        self.stages = nn.Sequential(*stages)
        self.stem_taps = tap_positions(self.stem, self.feature_info)

        self.num_features = prev_chs
        self.head = ClassifierHead(prev_chs, self.num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self.head_hidden_size = self.num_features * self.head.global_pool.feat_mult()
        self._init_weights(zero_init_last)

    def _init_weights(self, zero_init_last: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
            elif zero_init_last and hasattr(m, 'zero_init_last'):
                m.zero_init_last()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Regex rules that group parameter names into the stem and blocks; transitions join their stage's last
        block (as timm groups them).

        >>> SPEC.build('darknet17').group_matcher(coarse=True)['stem']
        '^stem'
        """
        if coarse:
            return dict(stem=r'^stem', blocks=r'^stages\.(\d+)')
        return dict(stem=r'^stem', blocks=[(r'^stages\.(\d+)\.blocks\.(\d+)', None),
                                           (r'^stages\.(\d+)\..*transition', _MATCH_PREVIOUS_GROUP),
                                           (r'^stages\.(\d+)', (0,))])

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier (``num_classes=0`` removes it); ``global_pool=''`` also removes the pooling.

        >>> m = SPEC.build('darknet17'); m.reset_classifier(0); m(torch.ones(1, 3, 64, 64)).shape
        torch.Size([1, 1024])
        """
        reset_classifier_head(self, check_int('num_classes', num_classes, 0), global_pool)

    checkpoint_unit = 'stage'

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The unpooled map after the last stage.

        >>> SPEC.build('darknet17').forward_features(torch.ones(1, 3, 64, 64)).shape
        torch.Size([1, 1024, 2, 2])
        """
        return run_sequence(self.stages, self.stem(x), self.grad_checkpointing and torch.is_grad_enabled())


def _cs3(width: float = 1.0, depth: float = 1.0, focus: bool = False, **stage_args: Any) -> Dict[str, Any]:
    """A 'cs3' row: four CSP-3 stages of DarkNet blocks, widths and depths scaled from the 'l' size."""
    stem = (dict(stem_chs=make_divisible(64 * width), stem_kernel=6, stem_padding=2) if focus
            else dict(stem_chs=tuple(make_divisible(c * width) for c in (32, 64))))
    row = dict(stem, depths=tuple(int(d * depth) for d in (3, 6, 9, 3)),
               channels=tuple(make_divisible(c * width) for c in (128, 256, 512, 1024)), block_ratio=0.5,
               stage_type='cs3', block_type='dark', act_layer='silu')
    row.update(stage_args)
    return row


_RESNET_STAGES = dict(depths=(3, 3, 5, 2), strides=(1, 2), cross_linear=True, stem_stride=4, stem_pool='max')
_RESNET_STEM = dict(stem_chs=64, stem_kernel=7)
_DEEP_STEM = dict(stem_chs=(32, 32, 64))
_DARK = dict(stem_stride=1, channels=(64, 128, 256, 512, 1024), bottle_ratio=0.5, stage_type='dark',
             block_type='dark')
_S, _M, _X = dict(width=0.5, depth=0.5), dict(width=0.75, depth=0.67), dict(width=1.25, depth=1.33)
_SE_QUARTER = dict(attn_layer='se', attn_kwargs=dict(rd_ratio=0.25))

VARIANTS: Dict[str, Dict[str, Any]] = {
    'cspresnet50': dict(_RESNET_STAGES, **_RESNET_STEM, channels=(128, 256, 512, 1024), expand_ratio=2.,
                        bottle_ratio=0.5),
    'cspresnet50d': dict(_RESNET_STAGES, **_DEEP_STEM, channels=(128, 256, 512, 1024), expand_ratio=2.,
                         bottle_ratio=0.5),
    'cspresnet50w': dict(_RESNET_STAGES, **_DEEP_STEM, channels=(256, 512, 1024, 2048), bottle_ratio=0.25,
                         block_ratio=0.5),
    'cspresnext50': dict(_RESNET_STAGES, **_RESNET_STEM, channels=(256, 512, 1024, 2048), groups=32,
                         block_ratio=0.5),
    'cspdarknet53': dict(stem_chs=32, stem_stride=1, depths=(1, 2, 8, 8, 4), channels=(64, 128, 256, 512, 1024),
                         expand_ratio=(2., 1.), bottle_ratio=(0.5, 1.), block_ratio=(1., 0.5), down_growth=True,
                         block_type='dark'),
    'darknet17': dict(_DARK, stem_chs=32, depths=(1, 1, 1, 1, 1)),
    'darknet21': dict(_DARK, stem_chs=32, depths=(1, 1, 1, 2, 2)),
    'sedarknet21': dict(_DARK, stem_chs=32, depths=(1, 1, 1, 2, 2), attn_layer='se'),
    'darknet53': dict(_DARK, stem_chs=32, depths=(1, 2, 8, 8, 4)),
    'darknetaa53': dict(_DARK, stem_chs=32, depths=(1, 2, 8, 8, 4), avg_down=True),
    'cs3darknet_s': _cs3(**_S),
    'cs3darknet_m': _cs3(**_M),
    'cs3darknet_l': _cs3(),
    'cs3darknet_x': _cs3(**_X),
    'cs3darknet_focus_s': _cs3(**_S, focus=True),
    'cs3darknet_focus_m': _cs3(**_M, focus=True),
    'cs3darknet_focus_l': _cs3(focus=True),
    'cs3darknet_focus_x': _cs3(**_X, focus=True),
    'cs3sedarknet_l': _cs3(**_SE_QUARTER),
    'cs3sedarknet_x': _cs3(**_X, attn_layer='se'),
    'cs3sedarknet_xdw': dict(stem_chs=(32, 64), depths=(3, 6, 12, 4), channels=(256, 512, 1024, 2048),
                             groups=(1, 1, 256, 512), bottle_ratio=0.5, block_ratio=0.5, attn_layer='se',
                             act_layer='silu'),
    'cs3edgenet_x': _cs3(**_X, bottle_ratio=1.5, block_type='edge'),
    'cs3se_edgenet_x': _cs3(**_X, bottle_ratio=1.5, block_type='edge', **_SE_QUARTER),
}


SPEC = FamilySpec(
    name='cspnet', model=CspNet, variants=VARIANTS, default_cfg=DEFAULT_CFG,
    feature_cls=('list', 'dict', 'hook', 'fx', 'getter'), default_feature_cls='list', output_strides=OUTPUT_STRIDES,
    export=('torch.export', 'dynamic_hw', 'onnx', 'compile'), size_args=('stem_chs', 'channels', 'depths'))
