"""ResNet, ResNeXt, SE-ResNet(Xt) and ECA-ResNet, with the 'd' (deep stem, average-pool shortcut) and 't'
(tiered deep stem) refinements. Parameter names follow timm's ResNet so its checkpoints load unchanged.

Other families built on this trunk (ResNeSt) pass their own block class to :class:`ResNet`.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Type, Union

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from ..family import FamilySpec
from ..layers import DropPath, create_classifier, get_attn
from ..layers.activations import ActLayer, get_act_layer
from ..layers.helpers import get_padding
from ..layers.intermediates import feature_take_indices
from ..layers.weight_init import kaiming_normal_

OUTPUT_STRIDES = (8, 16, 32)
DEFAULT_CFG = dict(input_size=(3, 224, 224), interpolation='bilinear', crop_pct=0.875, crop_mode='center',
                   mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), first_conv='conv1', classifier='fc',
                   num_classes=1000)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None,
                 cardinality: int = 1, base_width: int = 64, reduce_first: int = 1, dilation: int = 1,
                 first_dilation: Optional[int] = None, act_layer: ActLayer = 'relu', attn_layer: Optional[str] = None,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        if cardinality != 1 or base_width != 64:
            raise ValueError(f'BasicBlock takes cardinality=1 and base_width=64, got {cardinality} and {base_width}')
        act = get_act_layer(act_layer)
        first_planes = planes // reduce_first
        outplanes = planes * self.expansion
        first_dilation = first_dilation or dilation
        self.conv1 = nn.Conv2d(inplanes, first_planes, 3, stride=stride, padding=first_dilation,
                               dilation=first_dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(first_planes)
        self.drop_block = nn.Identity()
        self.act1 = act(inplace=True)
        self.aa = nn.Identity()
        self.conv2 = nn.Conv2d(first_planes, outplanes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(outplanes)
        attn = get_attn(attn_layer)
        self.se = attn(outplanes) if attn else None
        self.act2 = act(inplace=True)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path > 0 else None

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.act1(self.drop_block(self.bn1(self.conv1(x))))
        x = self.aa(x)
        x = self.bn2(self.conv2(x))
        if self.se is not None:
            x = self.se(x)
        if self.drop_path is not None:
            x = self.drop_path(x)
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        x += shortcut  # in place, as timm: one activation-sized allocation less per block
        return self.act2(x)


class Bottleneck(nn.Module):
    """1x1 reduce, grouped 3x3, 1x1 expand, with a residual connection (ResNet-50 and deeper, ResNeXt)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None,
                 cardinality: int = 1, base_width: int = 64, reduce_first: int = 1, dilation: int = 1,
                 first_dilation: Optional[int] = None, act_layer: ActLayer = 'relu', attn_layer: Optional[str] = None,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        act = get_act_layer(act_layer)
        width = int(math.floor(planes * (base_width / 64)) * cardinality)
        first_planes = width // reduce_first
        outplanes = planes * self.expansion
        first_dilation = first_dilation or dilation
        self.conv1 = nn.Conv2d(inplanes, first_planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(first_planes)
        self.act1 = act(inplace=True)
        self.conv2 = nn.Conv2d(first_planes, width, 3, stride=stride, padding=first_dilation, dilation=first_dilation,
                               groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.drop_block = nn.Identity()
        self.act2 = act(inplace=True)
        self.aa = nn.Identity()
        self.conv3 = nn.Conv2d(width, outplanes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(outplanes)
        attn = get_attn(attn_layer)
        self.se = attn(outplanes) if attn else None
        self.act3 = act(inplace=True)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path > 0 else None

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.drop_block(self.bn2(self.conv2(x))))
        x = self.aa(x)
        x = self.bn3(self.conv3(x))
        if self.se is not None:
            x = self.se(x)
        if self.drop_path is not None:
            x = self.drop_path(x)
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        x += shortcut  # in place, as timm: one activation-sized allocation less per block
        return self.act3(x)


class AvgPool2dSame(nn.AvgPool2d):
    """2x2 average pool with stride 1 and TensorFlow-style 'SAME' zero padding (dilated 'd' shortcuts)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # 'SAME' for a 2x2 window at stride 1 is always one extra row and column (bottom/right); a constant keeps
        # the module traceable by FX
        x = F.pad(x, (0, 1, 0, 1))
        return F.avg_pool2d(x, self.kernel_size, self.stride, 0, self.ceil_mode, self.count_include_pad)


def make_shortcut(in_channels: int, out_channels: int, stride: int, dilation: int, first_dilation: int,
                  avg_down: bool, kernel_size: int = 1) -> nn.Sequential:
    """Projection for the residual path: strided 1x1 convolution, or average pool then 1x1 ('d' variants)."""
    if avg_down:
        if stride == 1 and dilation == 1:
            pool: nn.Module = nn.Identity()
        elif dilation > 1 and stride == 1:
            pool = AvgPool2dSame((2, 2), (1, 1), ceil_mode=True, count_include_pad=False)
        else:
            pool = nn.AvgPool2d(2, stride if dilation == 1 else 1, ceil_mode=True, count_include_pad=False)
        return nn.Sequential(pool, nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
    kernel_size = 1 if stride == 1 and dilation == 1 else kernel_size
    first_dilation = first_dilation if kernel_size > 1 else 1
    padding = get_padding(kernel_size, stride, first_dilation)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=first_dilation,
                  bias=False),
        nn.BatchNorm2d(out_channels))


def _block_class(block: Union[str, Type[nn.Module]]) -> Type[nn.Module]:
    if isinstance(block, str):
        blocks = {'basic': BasicBlock, 'bottleneck': Bottleneck}
        if block not in blocks:
            raise ValueError(f'unknown block {block!r}; valid: {sorted(blocks)}')
        return blocks[block]
    return block


class ResNet(nn.Module):
    """ResNet trunk: stem (7x7 or three 3x3 convolutions), max pool, four stages ``layer1..4``, pooled classifier.

    ``output_stride`` 16 or 8 keeps the later stages at stride 1 and dilates them instead.

    >>> ResNet('basic', (1, 1, 1, 1), num_classes=10)(torch.randn(1, 3, 64, 64)).shape
    torch.Size([1, 10])
    """

    def __init__(self, block: Union[str, Type[nn.Module]], layers: Sequence[int], num_classes: int = 1000,
                 in_chans: int = 3, output_stride: int = 32, global_pool: str = 'avg', cardinality: int = 1,
                 base_width: int = 64, stem_width: int = 64, stem_type: str = '', avg_down: bool = False,
                 down_kernel_size: int = 1, block_reduce_first: int = 1, channels: Sequence[int] = (64, 128, 256, 512),
                 act_layer: ActLayer = 'relu', drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 zero_init_last: bool = True, block_args: Optional[Dict[str, Any]] = None) -> None:
        super().__init__()
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(f'output_stride={output_stride!r} is not supported; valid: {OUTPUT_STRIDES}')
        if stem_type not in ('', 'deep', 'deep_tiered'):
            raise ValueError(f"unknown stem_type {stem_type!r}; valid: '', 'deep', 'deep_tiered'")
        block_cls = _block_class(block)
        act = get_act_layer(act_layer)
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        deep = stem_type.startswith('deep')
        inplanes = stem_width * 2 if deep else 64
        if deep:
            mid = (3 * (stem_width // 4), stem_width) if stem_type == 'deep_tiered' else (stem_width, stem_width)
            self.conv1 = nn.Sequential(
                nn.Conv2d(in_chans, mid[0], 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(mid[0]), act(inplace=True),
                nn.Conv2d(mid[0], mid[1], 3, padding=1, bias=False), nn.BatchNorm2d(mid[1]), act(inplace=True),
                nn.Conv2d(mid[1], inplanes, 3, padding=1, bias=False))
        else:
            self.conv1 = nn.Conv2d(in_chans, inplanes, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.act1 = act(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.feature_info: List[Dict[str, Any]] = [dict(num_chs=inplanes, reduction=2, module='act1')]

        total_blocks = sum(layers)
        block_idx = 0
        net_stride, dilation, prev_dilation = 4, 1, 1
        extra = dict(block_args or {})
        for stage_idx, (planes, depth) in enumerate(zip(channels, layers)):
            stride = 1 if stage_idx == 0 else 2
            if net_stride >= output_stride:
                dilation *= stride
                stride = 1
            else:
                net_stride *= stride
            out_ch = planes * block_cls.expansion
            downsample = None
            if stride != 1 or inplanes != out_ch:
                downsample = make_shortcut(inplanes, out_ch, stride, dilation, prev_dilation, avg_down,
                                           down_kernel_size)
            blocks = []
            for i in range(depth):
                dpr = drop_path_rate * block_idx / max(total_blocks - 1, 1)
                blocks.append(block_cls(
                    inplanes, planes, stride if i == 0 else 1, downsample if i == 0 else None,
                    cardinality=cardinality, base_width=base_width, reduce_first=block_reduce_first,
                    dilation=dilation, first_dilation=prev_dilation, act_layer=act_layer, drop_path=dpr, **extra))
                prev_dilation = dilation
                inplanes = out_ch
                block_idx += 1
            name = f'layer{stage_idx + 1}'
            self.add_module(name, nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=inplanes, reduction=net_stride, module=name))

        self.num_features = self.head_hidden_size = inplanes
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        self._init_weights(zero_init_last)

    def _init_weights(self, zero_init_last: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
        if zero_init_last:
            for m in self.modules():
                if hasattr(m, 'zero_init_last'):
                    m.zero_init_last()

    def group_matcher(self, coarse: bool = False) -> Dict[str, str]:
        """Regexes grouping parameter names into stem and blocks (per stage when ``coarse``)."""
        return dict(stem=r'^conv1|bn1|maxpool', blocks=r'^layer(\d+)' if coarse else r'^layer(\d+)\.(\d+)')

    def no_weight_decay(self) -> set:
        return set()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations during backward instead of storing them."""
        self.grad_checkpointing = enable

    def get_classifier(self, name_only: bool = False) -> Union[str, nn.Module]:
        return 'fc' if name_only else self.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier (``num_classes=0`` removes it; ``global_pool=''`` removes pooling)."""
        self.num_classes = num_classes
        pool_type = self.global_pool.pool_type if global_pool is None else global_pool
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=pool_type)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = self._run_stage(stage, x)
        return x

    def _run_stage(self, stage: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            for block in stage:
                x = checkpoint(block, x, use_reentrant=False)
            return x
        return stage(x)

    def forward_intermediates(self, x: torch.Tensor, indices=None, norm: bool = False, stop_early: bool = False,
                              output_fmt: str = 'NCHW', intermediates_only: bool = False):
        """The stem output and each stage's output (timm's semantics: ``indices`` int = last n, or positions).

        >>> [t.shape[1] for t in SPEC.build('resnet18').forward_intermediates(torch.ones(1, 3, 64, 64), indices=2,
        ...                                                               intermediates_only=True)]
        [256, 512]
        """
        if output_fmt != 'NCHW':
            raise ValueError(f"output_fmt={output_fmt!r} is not supported here; valid: 'NCHW'")
        take, last = feature_take_indices(len(self.feature_info), indices)
        out = []
        x = self.act1(self.bn1(self.conv1(x)))
        if 0 in take:
            out.append(x)
        x = self.maxpool(x)
        stages = [self.layer1, self.layer2, self.layer3, self.layer4]
        for i, stage in enumerate(stages[:last] if stop_early else stages, start=1):
            x = self._run_stage(stage, x)
            if i in take:
                out.append(x)
        return out if intermediates_only else (x, out)

    def prune_intermediate_layers(self, indices=1, prune_norm: bool = False, prune_head: bool = True):
        """Drop the stages after the last index needed (and the classifier); returns the kept indices."""
        take, last = feature_take_indices(len(self.feature_info), indices)
        for i in range(last + 1, 5):
            setattr(self, f'layer{i}', nn.Sequential())
        if last == 0:
            self.maxpool = nn.Identity()
        if last < 4:
            self.num_features = self.head_hidden_size = self.feature_info[last]['num_chs']
        if prune_head or last < 4:
            self.reset_classifier(0, '')
        return take

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


_B, _BN = 'basic', 'bottleneck'
_D = dict(stem_width=32, stem_type='deep', avg_down=True)          # 'd': deep stem, avg-pool shortcut
_T = dict(stem_width=32, stem_type='deep_tiered', avg_down=True)   # 't': tiered deep stem, avg-pool shortcut
_X32 = dict(cardinality=32)
_SE = dict(block_args=dict(attn_layer='se'))
_ECA = dict(block_args=dict(attn_layer='eca'))

VARIANTS: Dict[str, Dict[str, Any]] = {
    'resnet10t': dict(block=_B, layers=(1, 1, 1, 1), **_T),
    'resnet14t': dict(block=_BN, layers=(1, 1, 1, 1), **_T),
    'resnet18': dict(block=_B, layers=(2, 2, 2, 2)),
    'resnet18d': dict(block=_B, layers=(2, 2, 2, 2), **_D),
    'resnet26': dict(block=_BN, layers=(2, 2, 2, 2)),
    'resnet26d': dict(block=_BN, layers=(2, 2, 2, 2), **_D),
    'resnet26t': dict(block=_BN, layers=(2, 2, 2, 2), **_T),
    'resnet34': dict(block=_B, layers=(3, 4, 6, 3)),
    'resnet34d': dict(block=_B, layers=(3, 4, 6, 3), **_D),
    'resnet50': dict(block=_BN, layers=(3, 4, 6, 3)),
    'resnet50d': dict(block=_BN, layers=(3, 4, 6, 3), **_D),
    'resnet50t': dict(block=_BN, layers=(3, 4, 6, 3), **_T),
    'resnet101': dict(block=_BN, layers=(3, 4, 23, 3)),
    'resnet101d': dict(block=_BN, layers=(3, 4, 23, 3), **_D),
    'resnet152': dict(block=_BN, layers=(3, 8, 36, 3)),
    'resnet152d': dict(block=_BN, layers=(3, 8, 36, 3), **_D),
    'resnet200d': dict(block=_BN, layers=(3, 24, 36, 3), **_D),
    'wide_resnet50_2': dict(block=_BN, layers=(3, 4, 6, 3), base_width=128),
    'wide_resnet101_2': dict(block=_BN, layers=(3, 4, 23, 3), base_width=128),
    'resnext50_32x4d': dict(block=_BN, layers=(3, 4, 6, 3), base_width=4, **_X32),
    'resnext50d_32x4d': dict(block=_BN, layers=(3, 4, 6, 3), base_width=4, **_X32, **_D),
    'resnext101_32x4d': dict(block=_BN, layers=(3, 4, 23, 3), base_width=4, **_X32),
    'resnext101_32x8d': dict(block=_BN, layers=(3, 4, 23, 3), base_width=8, **_X32),
    'seresnet18': dict(block=_B, layers=(2, 2, 2, 2), **_SE),
    'seresnet34': dict(block=_B, layers=(3, 4, 6, 3), **_SE),
    'seresnet50': dict(block=_BN, layers=(3, 4, 6, 3), **_SE),
    'seresnet101': dict(block=_BN, layers=(3, 4, 23, 3), **_SE),
    'seresnet152': dict(block=_BN, layers=(3, 8, 36, 3), **_SE),
    'seresnext26d_32x4d': dict(block=_BN, layers=(2, 2, 2, 2), base_width=4, **_X32, **_D, **_SE),
    'seresnext50_32x4d': dict(block=_BN, layers=(3, 4, 6, 3), base_width=4, **_X32, **_SE),
    'seresnext101_32x4d': dict(block=_BN, layers=(3, 4, 23, 3), base_width=4, **_X32, **_SE),
    'ecaresnet26t': dict(block=_BN, layers=(2, 2, 2, 2), **_T, **_ECA),
    'ecaresnet50d': dict(block=_BN, layers=(3, 4, 6, 3), **_D, **_ECA),
    'ecaresnet50t': dict(block=_BN, layers=(3, 4, 6, 3), **_T, **_ECA),
    'ecaresnet101d': dict(block=_BN, layers=(3, 4, 23, 3), **_D, **_ECA),
    'ecaresnet269d': dict(block=_BN, layers=(3, 30, 48, 8), **_D, **_ECA),
}


SPEC = FamilySpec(
    name='resnet', model=ResNet, variants=VARIANTS, default_cfg=DEFAULT_CFG,
    feature_cls=('list', 'dict', 'hook', 'fx', 'getter'), default_feature_cls='list', output_strides=OUTPUT_STRIDES,
    export=('torch.export', 'dynamic_hw', 'onnx', 'compile'))
