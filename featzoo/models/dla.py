"""Deep Layer Aggregation (Yu et al., 'Deep Layer Aggregation'), with ResNeXt and Res2Net(eXt) blocks (Gao et al.,
'Res2Net: A New Multi-scale Backbone Architecture'), with timm's parameter names so its checkpoints load unchanged.

Two plain conv levels follow a 7x7 stem; each later level is a tree: its leaves are residual blocks, and an
aggregation node (``root``) concatenates a subtree's outputs (and, for a level root, the level's downsampled input)
and mixes them with a 1x1 conv.

``output_stride`` 16 or 8 (timm has no dilated DLA): a level that would downsample keeps stride 1 instead. Its
first block's strided 3x3 convs run dense (dilated by the previous dilation), the 2x2 max-pool that feeds the
shortcut and the aggregation becomes a stride-1 pool padded with -inf at the bottom/right, Res2Net's 3x3
average-pool becomes a stride-1 pool, and every later 3x3 conv of the level is dilated by the new dilation.
Sampling a dilated level every ``32 / output_stride`` pixels therefore gives the stride-32 level exactly (for input
sides divisible by 32).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Type

import torch
from torch import nn

from ..checks import check_choice, check_int, check_int_tuple
from ..family import FamilySpec
from ..layers import create_classifier
from ..layers.dense_pool import DensePool2d
from ..layers.head_api import HeadApi
from ..layers.pool_classifier import reset_pool_classifier
from ..layers.stage_intermediates import StagedFeatures
from ..layers.weight_init import normal_

__all__ = ['DLA', 'DlaBasic', 'DlaBottleneck', 'DlaBottle2neck', 'DlaRoot', 'DlaTree', 'DensePool2d', 'SPEC',
           'VARIANTS']

OUTPUT_STRIDES = (8, 16, 32)
NUM_LEVELS = 6
DEFAULT_CFG = dict(
    input_size=(3, 224, 224), pool_size=(7, 7), interpolation='bilinear', crop_pct=0.875, crop_mode='center',
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), first_conv='base_layer.0', classifier='fc',
    num_classes=1000)


class DlaBasic(nn.Module):
    """Two 3x3 conv + batch norm with a residual (DLA-34).

    >>> DlaBasic(16, 16)(torch.ones(1, 16, 8, 8)).shape
    torch.Size([1, 16, 8, 8])
    """

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 first_dilation: Optional[int] = None, cardinality: int = 1, base_width: int = 64) -> None:
        super().__init__()
        first_dilation = first_dilation or dilation
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=first_dilation, dilation=first_dilation,
                               bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)

    def forward(self, x: torch.Tensor, shortcut: Optional[torch.Tensor] = None) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (x if shortcut is None else shortcut))


def _mid_planes(outplanes: int, cardinality: int, base_width: int) -> int:
    # the bottlenecks expand by 2: the width is computed on the output, then halved
    return int(math.floor(outplanes * (base_width / 64)) * cardinality) // 2


class DlaBottleneck(nn.Module):
    """1x1, grouped 3x3, 1x1 bottleneck with a residual (DLA-X when ``cardinality`` > 1).

    >>> DlaBottleneck(64, 64, cardinality=32, base_width=4).conv2.groups
    32
    """

    def __init__(self, inplanes: int, outplanes: int, stride: int = 1, dilation: int = 1,
                 first_dilation: Optional[int] = None, cardinality: int = 1, base_width: int = 64) -> None:
        super().__init__()
        first_dilation = first_dilation or dilation
        mid_planes = _mid_planes(outplanes, cardinality, base_width)
        self.conv1 = nn.Conv2d(inplanes, mid_planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_planes)
        self.conv2 = nn.Conv2d(mid_planes, mid_planes, 3, stride=stride, padding=first_dilation,
                               dilation=first_dilation, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_planes)
        self.conv3 = nn.Conv2d(mid_planes, outplanes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(outplanes)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, shortcut: Optional[torch.Tensor] = None) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if shortcut is None else shortcut))


class DlaBottle2neck(nn.Module):
    """Res2Net bottleneck: the 1x1 conv's output is split in ``scale`` groups; each of the first ``scale - 1``
    runs a 3x3 conv (after adding the previous group's result, except in a level's first block, which
    downsamples); the last group passes through (average-pooled in the first block); a 1x1 conv merges them.

    >>> DlaBottle2neck(128, 128, cardinality=8, base_width=4)(torch.ones(1, 128, 8, 8)).shape
    torch.Size([1, 128, 8, 8])
    """

    def __init__(self, inplanes: int, outplanes: int, stride: int = 1, dilation: int = 1,
                 first_dilation: Optional[int] = None, cardinality: int = 8, base_width: int = 4,
                 scale: int = 4) -> None:
        super().__init__()
        first_dilation = first_dilation or dilation
        # a level's first block: it downsamples, or (dilated) stands where the downsampling was
        self.is_first = stride > 1 or first_dilation != dilation
        self.scale = scale
        self.width = mid_planes = _mid_planes(outplanes, cardinality, base_width)
        self.conv1 = nn.Conv2d(inplanes, mid_planes * scale, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_planes * scale)
        num_convs = max(1, scale - 1)
        self.convs = nn.ModuleList([
            nn.Conv2d(mid_planes, mid_planes, 3, stride=stride, padding=first_dilation, dilation=first_dilation,
                      groups=cardinality, bias=False) for _ in range(num_convs)])
        self.bns = nn.ModuleList([nn.BatchNorm2d(mid_planes) for _ in range(num_convs)])
        if not self.is_first:
            self.pool: Optional[nn.Module] = None
        elif stride > 1:
            self.pool = nn.AvgPool2d(kernel_size=3, stride=stride, padding=1)
        else:
            self.pool = DensePool2d('avg', 3, first_dilation)
        self.conv3 = nn.Conv2d(mid_planes * scale, outplanes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(outplanes)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, shortcut: Optional[torch.Tensor] = None) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        groups = torch.split(out, self.width, 1)
        outputs = []
        carried = groups[0]
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            carried = groups[i] if i == 0 or self.is_first else carried + groups[i]
            carried = self.relu(bn(conv(carried)))
            outputs.append(carried)
        if self.scale > 1:
            outputs.append(self.pool(groups[-1]) if self.pool is not None else groups[-1])
        out = self.bn3(self.conv3(torch.cat(outputs, 1)))
        return self.relu(out + (x if shortcut is None else shortcut))


_BLOCKS: Dict[str, Type[nn.Module]] = {'basic': DlaBasic, 'bottleneck': DlaBottleneck, 'bottle2neck': DlaBottle2neck}


class DlaRoot(nn.Module):
    """Aggregation node: 1x1 conv + batch norm over the concatenated children, optionally plus the first child.

    >>> DlaRoot(32, 16, shortcut=True)([torch.ones(1, 16, 4, 4), torch.ones(1, 16, 4, 4)]).shape
    torch.Size([1, 16, 4, 4])
    """

    def __init__(self, in_channels: int, out_channels: int, shortcut: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = shortcut

    def forward(self, children: List[torch.Tensor]) -> torch.Tensor:
        x = self.bn(self.conv(torch.cat(children, 1)))
        if self.shortcut:
            x = x + children[0]
        return self.relu(x)


class DlaTree(nn.Module):
    """A tree of ``levels`` depth: at depth 1, two blocks (``tree1``, ``tree2``) and a ``root``; deeper, two
    subtrees whose second one aggregates the first's output (and the level root's input) in its root.

    >>> DlaTree(2, DlaBasic, 16, 32, stride=2, level_root=True)(torch.ones(1, 16, 8, 8)).shape
    torch.Size([1, 32, 4, 4])
    """

    def __init__(self, levels: int, block: Type[nn.Module], in_channels: int, out_channels: int, stride: int = 1,
                 dilation: int = 1, first_dilation: Optional[int] = None, cardinality: int = 1,
                 base_width: int = 64, level_root: bool = False, root_dim: int = 0,
                 root_shortcut: bool = False) -> None:
        super().__init__()
        first_dilation = first_dilation or dilation
        root_dim = root_dim or 2 * out_channels
        if level_root:
            root_dim += in_channels
        if stride > 1:
            self.downsample: nn.Module = nn.MaxPool2d(stride, stride=stride)
        elif first_dilation != dilation:
            self.downsample = DensePool2d('max', 2, first_dilation)
        else:
            self.downsample = nn.Identity()
        self.project: nn.Module = nn.Identity()
        block_args = dict(dilation=dilation, cardinality=cardinality, base_width=base_width)
        if levels == 1:
            self.tree1 = block(in_channels, out_channels, stride, first_dilation=first_dilation, **block_args)
            self.tree2 = block(out_channels, out_channels, 1, **block_args)
            if in_channels != out_channels:
                self.project = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                             nn.BatchNorm2d(out_channels))
            self.root: Optional[DlaRoot] = DlaRoot(root_dim, out_channels, root_shortcut)
        else:
            tree_args = dict(block_args, root_shortcut=root_shortcut)
            self.tree1 = DlaTree(levels - 1, block, in_channels, out_channels, stride,
                                 first_dilation=first_dilation, **tree_args)
            self.tree2 = DlaTree(levels - 1, block, out_channels, out_channels, root_dim=root_dim + out_channels,
                                 **tree_args)
            self.root = None
        self.level_root = level_root
        self.levels = levels

    def forward(self, x: torch.Tensor, children: Optional[List[torch.Tensor]] = None) -> torch.Tensor:
        children = [] if children is None else children
        bottom = self.downsample(x)
        if self.level_root:
            children = children + [bottom]
        if self.root is None:
            x1 = self.tree1(x)
            return self.tree2(x1, children + [x1])
        x1 = self.tree1(x, self.project(bottom))
        x2 = self.tree2(x1)
        return self.root([x2, x1] + children)


class DLA(StagedFeatures, HeadApi, nn.Module):
    """``base_layer`` (7x7 stem), conv levels ``level0`` / ``level1``, trees ``level2``..``level5``, and a 1x1-conv
    classifier (``global_pool``, ``fc``, ``flatten``).

    >>> m = DLA(levels=(1, 1, 1, 1, 1, 1), channels=(8, 8, 16, 16, 32, 32), block='basic', num_classes=10)
    >>> m(torch.ones(1, 3, 64, 64)).shape
    torch.Size([1, 10])
    """

    classifier_name = 'fc'
    stem_name = 'base_layer'  # the levels are level0..level5 (StagedFeatures' stages)
    checkpoint_unit = 'stage'

    def __init__(self, levels: Sequence[int], channels: Sequence[int], block: str = 'bottle2neck',
                 cardinality: int = 1, base_width: int = 64, shortcut_root: bool = False, output_stride: int = 32,
                 num_classes: int = 1000, in_chans: int = 3, global_pool: str = 'avg', drop_rate: float = 0.,
                 drop_path_rate: Optional[float] = None) -> None:
        super().__init__()
        if drop_path_rate:
            raise ValueError(f'drop_path_rate={drop_path_rate!r}: DLA has no drop-path branches; valid: None or 0 '
                             f'(drop_rate sets the dropout before the classifier)')
        levels = check_int_tuple('levels', levels, NUM_LEVELS)
        self.channels = channels = check_int_tuple('channels', channels, NUM_LEVELS)
        block_cls = _BLOCKS[check_choice('block', block, tuple(_BLOCKS))]
        self.cardinality = check_int('cardinality', cardinality, 1)
        self.base_width = check_int('base_width', base_width, 1)
        check_choice('output_stride', output_stride, OUTPUT_STRIDES)
        self.num_classes = check_int('num_classes', num_classes, 0)
        self.in_chans = check_int('in_chans', in_chans, 1)
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        self.base_layer = nn.Sequential(
            nn.Conv2d(self.in_chans, channels[0], kernel_size=7, padding=3, bias=False),
            nn.BatchNorm2d(channels[0]), nn.ReLU(inplace=True))
        self.level0 = self._make_conv_level(channels[0], channels[0], levels[0])
        self.level1 = self._make_conv_level(channels[0], channels[1], levels[1], stride=2)
        self.feature_info = [dict(num_chs=channels[0], reduction=1, module='level0'),
                             dict(num_chs=channels[1], reduction=2, module='level1')]
        reduction, dilation = 2, 1
        tree_args = dict(cardinality=cardinality, base_width=base_width, root_shortcut=shortcut_root)
        for i in range(2, NUM_LEVELS):
            previous_dilation = dilation
            stride = 2
            if reduction >= output_stride:
                stride, dilation = 1, dilation * 2
            reduction *= stride
            self.add_module(f'level{i}', DlaTree(
                levels[i], block_cls, channels[i - 1], channels[i], stride, dilation=dilation,
                first_dilation=previous_dilation, level_root=i > 2, **tree_args))
            self.feature_info.append(dict(num_chs=channels[i], reduction=reduction, module=f'level{i}'))

        self.num_features = channels[-1]
        self.global_pool, self.head_drop, self.fc = create_classifier(
            self.num_features, self.num_classes, pool_type=global_pool, use_conv=True, drop_rate=drop_rate)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        self.flatten: nn.Module = nn.Flatten(1) if global_pool else nn.Identity()
        self._init_weights()

    @staticmethod
    def _make_conv_level(inplanes: int, planes: int, convs: int, stride: int = 1) -> nn.Sequential:
        layers: List[nn.Module] = []
        for i in range(convs):
            layers += [nn.Conv2d(inplanes if i == 0 else planes, planes, 3, stride=stride if i == 0 else 1,
                                 padding=1, bias=False),
                       nn.BatchNorm2d(planes), nn.ReLU(inplace=True)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                normal_(m.weight, std=math.sqrt(2. / fan_out))

    def _stage_list(self) -> List[nn.Module]:
        return [getattr(self, f'level{i}') for i in range(NUM_LEVELS)]

    def _keep_stages(self, count: int) -> None:
        for i in range(count, NUM_LEVELS):
            setattr(self, f'level{i}', nn.Identity())

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Regex rules that group parameter names into the stem and blocks (trees, then their roots).

        >>> SPEC.build('dla34').group_matcher(coarse=True)['stem']
        '^base_layer'
        """
        if coarse:
            return dict(stem=r'^base_layer', blocks=r'^level(\d+)')
        return dict(stem=r'^base_layer', blocks=[(r'^level(\d+)\.tree(\d+)', None), (r'^level(\d+)\.root', (2,)),
                                                 (r'^level(\d+)', (1,))])

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier (``num_classes=0`` removes it); ``global_pool=''`` also removes the pooling.

        >>> m = SPEC.build('dla34'); m.reset_classifier(0); m(torch.ones(1, 3, 64, 64)).shape
        torch.Size([1, 512])
        """
        pool_type = reset_pool_classifier(self, check_int('num_classes', num_classes, 0), global_pool, 'fc',
                                          use_conv=True)
        self.flatten = (nn.Flatten(1) if pool_type else nn.Identity()).train(self.training)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The unpooled map after ``level5``.

        >>> SPEC.build('dla34').forward_features(torch.ones(1, 3, 64, 64)).shape
        torch.Size([1, 512, 2, 2])
        """
        return self._forward_stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x))
        if pre_logits:
            return self.flatten(x)
        return self.flatten(self.fc(x))


_NARROW = (16, 32, 64, 64, 128, 256)
_WIDE = (16, 32, 128, 256, 512, 1024)
_X = dict(cardinality=32, base_width=4)

VARIANTS: Dict[str, Dict[str, Any]] = {
    'dla34': dict(levels=(1, 1, 1, 2, 2, 1), channels=(16, 32, 64, 128, 256, 512), block='basic'),
    'dla46_c': dict(levels=(1, 1, 1, 2, 2, 1), channels=_NARROW, block='bottleneck'),
    'dla46x_c': dict(levels=(1, 1, 1, 2, 2, 1), channels=_NARROW, block='bottleneck', **_X),
    'dla60x_c': dict(levels=(1, 1, 1, 2, 3, 1), channels=_NARROW, block='bottleneck', **_X),
    'dla60': dict(levels=(1, 1, 1, 2, 3, 1), channels=_WIDE, block='bottleneck'),
    'dla60x': dict(levels=(1, 1, 1, 2, 3, 1), channels=_WIDE, block='bottleneck', **_X),
    'dla102': dict(levels=(1, 1, 1, 3, 4, 1), channels=_WIDE, block='bottleneck', shortcut_root=True),
    'dla102x': dict(levels=(1, 1, 1, 3, 4, 1), channels=_WIDE, block='bottleneck', shortcut_root=True, **_X),
    'dla102x2': dict(levels=(1, 1, 1, 3, 4, 1), channels=_WIDE, block='bottleneck', shortcut_root=True,
                     cardinality=64, base_width=4),
    'dla169': dict(levels=(1, 1, 2, 3, 5, 1), channels=_WIDE, block='bottleneck', shortcut_root=True),
    'dla60_res2net': dict(levels=(1, 1, 1, 2, 3, 1), channels=_WIDE, block='bottle2neck', cardinality=1,
                          base_width=28),
    'dla60_res2next': dict(levels=(1, 1, 1, 2, 3, 1), channels=_WIDE, block='bottle2neck', cardinality=8,
                           base_width=4),
}


SPEC = FamilySpec(
    name='dla', model=DLA, variants=VARIANTS, default_cfg=DEFAULT_CFG,
    feature_cls=('list', 'dict', 'hook', 'fx', 'getter'), default_feature_cls='list', output_strides=OUTPUT_STRIDES,
    default_out_indices=(1, 2, 3, 4, 5),  # timm's: the stride-1 level0 only on request
    export=('torch.export', 'dynamic_hw', 'onnx', 'compile'),
    # a tree's max-pool floors odd sides where its strided convs round them up: every strided level needs even sides
    input_multiple=32, min_input_size=32,
    size_args=('levels', 'cardinality', 'base_width'))
