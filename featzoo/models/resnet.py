"""ResNet, ResNeXt, SE-ResNet(Xt) and ECA-ResNet, with the 'd' (deep stem, average-pool shortcut) and 't'
(tiered deep stem) refinements. Parameter names follow timm's ResNet so its checkpoints load unchanged.

Other families built on this trunk (ResNeSt) pass their own block class to :class:`ResNet`.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from ..family import FamilySpec
from ..layers import DropPath, EcaModule, create_classifier, get_attn
from ..layers.activations import ActLayer, get_act_layer
from ..layers.blur_pool import BlurPool2d
from ..layers.head_api import HeadApi
from ..layers.helpers import get_padding
from ..layers.intermediates import feature_take_indices, prune_head_after
from ..layers.weight_init import kaiming_convs_

OUTPUT_STRIDES = (8, 16, 32)
AA_LAYERS = (None, 'avg', 'blur')
NORM_LAYERS = ('batchnorm', 'groupnorm')
DEFAULT_CFG = dict(input_size=(3, 224, 224), interpolation='bilinear', crop_pct=0.875, crop_mode='center',
                   mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), first_conv='conv1', classifier='fc',
                   num_classes=1000)


def make_norm(norm_layer: str, channels: int) -> nn.Module:
    """The trunk's norm: batch norm, or group norm with 32 groups (ResNet-50-GN).

    >>> make_norm('groupnorm', 64).num_groups
    32
    """
    return nn.GroupNorm(32, channels) if norm_layer == 'groupnorm' else nn.BatchNorm2d(channels)


def make_aa(aa_layer: Optional[str], channels: int, stride: int) -> nn.Module:
    """The anti-aliasing step that takes a strided convolution's stride: a ``stride`` x ``stride`` average pool
    ('avg') or a binomial blur subsampled by ``stride`` ('blur'); nothing without ``aa_layer``.

    >>> make_aa('avg', 8, 2)
    AvgPool2d(kernel_size=2, stride=2, padding=0)
    """
    if aa_layer == 'avg':
        return nn.AvgPool2d(stride)
    if aa_layer == 'blur':
        return BlurPool2d(channels, stride=stride)
    return nn.Identity()


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None,
                 cardinality: int = 1, base_width: int = 64, reduce_first: int = 1, dilation: int = 1,
                 first_dilation: Optional[int] = None, act_layer: ActLayer = 'relu', attn_layer: Optional[str] = None,
                 drop_path: float = 0.0, aa_layer: Optional[str] = None, norm_layer: str = 'batchnorm',
                 attn_kwargs: Optional[Dict[str, Any]] = None) -> None:
        super().__init__()
        if cardinality != 1 or base_width != 64:
            raise ValueError(f'BasicBlock takes cardinality=1 and base_width=64, got {cardinality} and {base_width}')
        act = get_act_layer(act_layer)
        first_planes = planes // reduce_first
        outplanes = planes * self.expansion
        first_dilation = first_dilation or dilation
        # anti-aliasing takes the stride from the convolution (and, as timm, also sits where a dilation starts)
        use_aa = aa_layer is not None and (stride == 2 or first_dilation != dilation)
        self.conv1 = nn.Conv2d(inplanes, first_planes, 3, stride=1 if use_aa else stride, padding=first_dilation,
                               dilation=first_dilation, bias=False)
        self.bn1 = make_norm(norm_layer, first_planes)
        self.drop_block = nn.Identity()
        self.act1 = act(inplace=True)
        self.aa = make_aa(aa_layer if use_aa else None, first_planes, stride)
        self.conv2 = nn.Conv2d(first_planes, outplanes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = make_norm(norm_layer, outplanes)
        attn = get_attn(attn_layer)
        self.se = attn(outplanes, **(attn_kwargs or {})) if attn else None
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
                 drop_path: float = 0.0, aa_layer: Optional[str] = None, norm_layer: str = 'batchnorm',
                 attn_kwargs: Optional[Dict[str, Any]] = None,
                 pruned_widths: Optional[Tuple[int, int, int]] = None) -> None:
        super().__init__()
        act = get_act_layer(act_layer)
        width = int(math.floor(planes * (base_width / 64)) * cardinality)
        first_planes = width // reduce_first
        outplanes = designed_outplanes = planes * self.expansion
        if pruned_widths is not None:  # channel-pruned weights: the widths of conv1, conv2 and conv3 as stored
            first_planes, width, outplanes = pruned_widths
        first_dilation = first_dilation or dilation
        use_aa = aa_layer is not None and (stride == 2 or first_dilation != dilation)  # as in BasicBlock
        self.conv1 = nn.Conv2d(inplanes, first_planes, 1, bias=False)
        self.bn1 = make_norm(norm_layer, first_planes)
        self.act1 = act(inplace=True)
        self.conv2 = nn.Conv2d(first_planes, width, 3, stride=1 if use_aa else stride, padding=first_dilation,
                               dilation=first_dilation, groups=cardinality, bias=False)
        self.bn2 = make_norm(norm_layer, width)
        self.drop_block = nn.Identity()
        self.act2 = act(inplace=True)
        self.aa = make_aa(aa_layer if use_aa else None, width, stride)
        self.conv3 = nn.Conv2d(width, outplanes, 1, bias=False)
        self.bn3 = make_norm(norm_layer, outplanes)
        attn = get_attn(attn_layer)
        if attn is not None and pruned_widths is not None and attn is not EcaModule:
            raise ValueError(f'pruned widths take ECA attention only (its kernel follows the designed width), '
                             f'got attn_layer={attn_layer!r}')
        # ECA's kernel size is fixed by the width the network was designed with, pruned or not
        self.se = attn(designed_outplanes, **(attn_kwargs or {})) if attn else None
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
                  avg_down: bool, kernel_size: int = 1, norm_layer: str = 'batchnorm') -> nn.Sequential:
    """Projection for the residual path: strided 1x1 convolution, or average pool then 1x1 ('d' variants)."""
    if avg_down:
        if stride == 1 and dilation == 1:
            pool: nn.Module = nn.Identity()
        elif dilation > 1 and stride == 1:
            pool = AvgPool2dSame((2, 2), (1, 1), ceil_mode=True, count_include_pad=False)
        else:
            pool = nn.AvgPool2d(2, stride if dilation == 1 else 1, ceil_mode=True, count_include_pad=False)
        return nn.Sequential(pool, nn.Conv2d(in_channels, out_channels, 1, bias=False),
                             make_norm(norm_layer, out_channels))
    kernel_size = 1 if stride == 1 and dilation == 1 else kernel_size
    first_dilation = first_dilation if kernel_size > 1 else 1
    padding = get_padding(kernel_size, stride, first_dilation)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=first_dilation,
                  bias=False),
        make_norm(norm_layer, out_channels))


BlockType = Union[str, Type[nn.Module]]


def _block_class(block: BlockType) -> Type[nn.Module]:
    if isinstance(block, str):
        blocks = {'basic': BasicBlock, 'bottleneck': Bottleneck}
        if block not in blocks:
            raise ValueError(f'unknown block {block!r}; valid: {sorted(blocks)}')
        return blocks[block]
    return block


class ResNet(HeadApi, nn.Module):
    """ResNet trunk: stem (7x7 or three 3x3 convolutions), max pool, four stages ``layer1..4``, pooled classifier.

    ``output_stride`` 16 or 8 keeps the later stages at stride 1 and dilates them instead.

    >>> ResNet('basic', (1, 1, 1, 1), num_classes=10)(torch.randn(1, 3, 64, 64)).shape
    torch.Size([1, 10])
    """

    def __init__(self, block: Union[BlockType, Sequence[BlockType]], layers: Sequence[int], num_classes: int = 1000,
                 in_chans: int = 3, output_stride: int = 32, global_pool: str = 'avg', cardinality: int = 1,
                 base_width: int = 64, stem_width: int = 64, stem_type: str = '', avg_down: bool = False,
                 down_kernel_size: int = 1, block_reduce_first: int = 1, channels: Sequence[int] = (64, 128, 256, 512),
                 act_layer: ActLayer = 'relu', drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 zero_init_last: bool = True, block_args: Optional[Dict[str, Any]] = None,
                 aa_layer: Optional[str] = None, norm_layer: str = 'batchnorm', replace_stem_pool: bool = False,
                 pruned_widths: Optional[Sequence[Tuple[int, int, int]]] = None) -> None:
        super().__init__()
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(f'output_stride={output_stride!r} is not supported; valid: {OUTPUT_STRIDES}')
        if stem_type not in ('', 'deep', 'deep_tiered'):
            raise ValueError(f"unknown stem_type {stem_type!r}; valid: '', 'deep', 'deep_tiered'")
        if aa_layer not in AA_LAYERS:
            raise ValueError(f'unknown aa_layer {aa_layer!r}; valid: {AA_LAYERS}')
        if norm_layer not in NORM_LAYERS:
            raise ValueError(f'unknown norm_layer {norm_layer!r}; valid: {NORM_LAYERS}')
        blocks_per_stage = list(block) if isinstance(block, (list, tuple)) else [block] * len(layers)
        if len(blocks_per_stage) != len(layers):
            raise ValueError(f'block gives {len(blocks_per_stage)} stage blocks for {len(layers)} stages')
        block_classes = [_block_class(b) for b in blocks_per_stage]
        if pruned_widths is not None and (len(pruned_widths) != sum(layers) or any(
                c is not Bottleneck for c in block_classes)):
            raise ValueError(f'pruned_widths needs one (conv1, conv2, conv3) width triple per bottleneck block '
                             f'({sum(layers)}), got {len(pruned_widths)}')
        norm = partial(make_norm, norm_layer)
        act = get_act_layer(act_layer)
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        deep = stem_type.startswith('deep')
        inplanes = stem_width * 2 if deep else 64
        if deep:
            mid = (3 * (stem_width // 4), stem_width) if stem_type == 'deep_tiered' else (stem_width, stem_width)
            self.conv1 = nn.Sequential(
                nn.Conv2d(in_chans, mid[0], 3, stride=2, padding=1, bias=False), norm(mid[0]), act(inplace=True),
                nn.Conv2d(mid[0], mid[1], 3, padding=1, bias=False), norm(mid[1]), act(inplace=True),
                nn.Conv2d(mid[1], inplanes, 3, padding=1, bias=False))
        else:
            self.conv1 = nn.Conv2d(in_chans, inplanes, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm(inplanes)
        self.act1 = act(inplace=True)
        # the stem's stride-2 pool; its name stays 'maxpool' whatever replaces it, for the checkpoints' sake
        if replace_stem_pool:  # a strided 3x3 convolution (ResNet-RS)
            self.maxpool: nn.Module = nn.Sequential(*[layer for layer in (
                nn.Conv2d(inplanes, inplanes, 3, stride=1 if aa_layer else 2, padding=1, bias=False),
                make_aa(aa_layer, inplanes, 2) if aa_layer else None,
                norm(inplanes), act(inplace=True)) if layer is not None])
        elif aa_layer == 'avg':
            self.maxpool = nn.AvgPool2d(2)
        elif aa_layer == 'blur':
            self.maxpool = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), BlurPool2d(inplanes, stride=2))
        else:
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.feature_info: List[Dict[str, Any]] = [dict(num_chs=inplanes, reduction=2, module='act1')]

        total_blocks = sum(layers)
        block_idx = 0
        net_stride, dilation, prev_dilation = 4, 1, 1
        extra = dict(block_args or {})
        # passed only when set: blocks of other families (ResNeSt) built on this trunk take neither
        if aa_layer is not None:
            extra['aa_layer'] = aa_layer
        if norm_layer != 'batchnorm':
            extra['norm_layer'] = norm_layer
        for stage_idx, (block_cls, planes, depth) in enumerate(zip(block_classes, channels, layers)):
            stride = 1 if stage_idx == 0 else 2
            if net_stride >= output_stride:
                dilation *= stride
                stride = 1
            else:
                net_stride *= stride
            stage_pruned = pruned_widths[block_idx:block_idx + depth] if pruned_widths else [None] * depth
            out_ch = stage_pruned[0][2] if pruned_widths else planes * block_cls.expansion
            downsample = None
            if stride != 1 or inplanes != out_ch:
                downsample = make_shortcut(inplanes, out_ch, stride, dilation, prev_dilation, avg_down,
                                           down_kernel_size, norm_layer)
            blocks = []
            for i in range(depth):
                dpr = drop_path_rate * block_idx / max(total_blocks - 1, 1)
                blocks.append(block_cls(
                    inplanes, planes, stride if i == 0 else 1, downsample if i == 0 else None,
                    cardinality=cardinality, base_width=base_width, reduce_first=block_reduce_first,
                    dilation=dilation, first_dilation=prev_dilation, act_layer=act_layer, drop_path=dpr,
                    **(dict(pruned_widths=stage_pruned[i]) if pruned_widths else {}), **extra))
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
        kaiming_convs_(self)
        if zero_init_last:
            for m in self.modules():
                if hasattr(m, 'zero_init_last'):
                    m.zero_init_last()

    def group_matcher(self, coarse: bool = False) -> Dict[str, str]:
        """Regexes grouping parameter names into stem and blocks (per stage when ``coarse``)."""
        return dict(stem=r'^conv1|bn1|maxpool', blocks=r'^layer(\d+)' if coarse else r'^layer(\d+)\.(\d+)')

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
        prune_head_after(self, last, 5, prune_head)
        return take

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        return x if pre_logits else self.fc(x)


_B, _BN = 'basic', 'bottleneck'
_D = dict(stem_width=32, stem_type='deep', avg_down=True)          # 'd': deep stem, avg-pool shortcut
_T = dict(stem_width=32, stem_type='deep_tiered', avg_down=True)   # 't': tiered deep stem, avg-pool shortcut
_X32 = dict(cardinality=32)
_SE = dict(block_args=dict(attn_layer='se'))
_ECA = dict(block_args=dict(attn_layer='eca'))
_C = dict(stem_width=32, stem_type='deep')                        # 'c': deep stem only
_S = dict(stem_width=64, stem_type='deep')                        # 's': wide deep stem
_AA = dict(aa_layer='avg')                                         # 'aa': 2x2 average pool takes the strides
_BLUR = dict(aa_layer='blur')                                      # 'blur': binomial blur takes the strides
# ResNet-RS: 'd' trunk, a strided convolution for the stem pool, squeeze-excite at a quarter of the width
_RS = dict(stem_width=32, stem_type='deep', avg_down=True, replace_stem_pool=True,
           block_args=dict(attn_layer='se', attn_kwargs=dict(rd_ratio=0.25)))

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
    'ecaresnet200d': dict(block=_BN, layers=(3, 24, 36, 3), **_D, **_ECA),
    'ecaresnetlight': dict(block=_BN, layers=(1, 1, 11, 3), stem_width=32, avg_down=True, **_ECA),
    'ecaresnext26t_32x4d': dict(block=_BN, layers=(2, 2, 2, 2), base_width=4, **_X32, **_T, **_ECA),
    'ecaresnext50t_32x4d': dict(block=_BN, layers=(3, 4, 6, 3), base_width=4, **_X32, **_T, **_ECA),
    'resnet50c': dict(block=_BN, layers=(3, 4, 6, 3), **_C),
    'resnet50s': dict(block=_BN, layers=(3, 4, 6, 3), **_S),
    'resnet101c': dict(block=_BN, layers=(3, 4, 23, 3), **_C),
    'resnet101s': dict(block=_BN, layers=(3, 4, 23, 3), **_S),
    'resnet152c': dict(block=_BN, layers=(3, 8, 36, 3), **_C),
    'resnet152s': dict(block=_BN, layers=(3, 8, 36, 3), **_S),
    'resnet200': dict(block=_BN, layers=(3, 24, 36, 3)),
    'resnet50_gn': dict(block=_BN, layers=(3, 4, 6, 3), norm_layer='groupnorm'),
    'resnext101_32x16d': dict(block=_BN, layers=(3, 4, 23, 3), base_width=16, **_X32),
    'resnext101_32x32d': dict(block=_BN, layers=(3, 4, 23, 3), base_width=32, **_X32),
    'resnext101_64x4d': dict(block=_BN, layers=(3, 4, 23, 3), base_width=4, cardinality=64),
    'seresnet50t': dict(block=_BN, layers=(3, 4, 6, 3), **_T, **_SE),
    'seresnet152d': dict(block=_BN, layers=(3, 8, 36, 3), **_D, **_SE),
    'seresnet200d': dict(block=_BN, layers=(3, 24, 36, 3), **_D, **_SE),
    'seresnet269d': dict(block=_BN, layers=(3, 30, 48, 8), **_D, **_SE),
    'seresnext26t_32x4d': dict(block=_BN, layers=(2, 2, 2, 2), base_width=4, **_X32, **_T, **_SE),
    'seresnext101_32x8d': dict(block=_BN, layers=(3, 4, 23, 3), base_width=8, **_X32, **_SE),
    'seresnext101_64x4d': dict(block=_BN, layers=(3, 4, 23, 3), base_width=4, cardinality=64, **_SE),
    'seresnext101d_32x8d': dict(block=_BN, layers=(3, 4, 23, 3), base_width=8, **_X32, **_D, **_SE),
    # SENet-154 as a ResNet: 64-wide deep stem, 3x3 projection shortcuts, halved first convolutions
    'senet154': dict(block=_BN, layers=(3, 8, 36, 3), cardinality=64, base_width=4, stem_type='deep',
                     down_kernel_size=3, block_reduce_first=2, **_SE),
    'resnetblur18': dict(block=_B, layers=(2, 2, 2, 2), **_BLUR),
    'resnetblur50': dict(block=_BN, layers=(3, 4, 6, 3), **_BLUR),
    'resnetblur50d': dict(block=_BN, layers=(3, 4, 6, 3), **_BLUR, **_D),
    'resnetblur101d': dict(block=_BN, layers=(3, 4, 23, 3), **_BLUR, **_D),
    'resnetaa34d': dict(block=_B, layers=(3, 4, 6, 3), **_AA, **_D),
    'resnetaa50': dict(block=_BN, layers=(3, 4, 6, 3), **_AA),
    'resnetaa50d': dict(block=_BN, layers=(3, 4, 6, 3), **_AA, **_D),
    'resnetaa101d': dict(block=_BN, layers=(3, 4, 23, 3), **_AA, **_D),
    'seresnetaa50d': dict(block=_BN, layers=(3, 4, 6, 3), **_AA, **_D, **_SE),
    'seresnextaa101d_32x8d': dict(block=_BN, layers=(3, 4, 23, 3), base_width=8, **_X32, **_D, **_AA, **_SE),
    'seresnextaa201d_32x8d': dict(block=_BN, layers=(3, 24, 36, 4), base_width=8, **_X32, stem_width=64,
                                  stem_type='deep', avg_down=True, **_AA, **_SE),
    'resnetrs50': dict(block=_BN, layers=(3, 4, 6, 3), **_RS),
    'resnetrs101': dict(block=_BN, layers=(3, 4, 23, 3), **_RS),
    'resnetrs152': dict(block=_BN, layers=(3, 8, 36, 3), **_RS),
    'resnetrs200': dict(block=_BN, layers=(3, 24, 36, 3), **_RS),
    'resnetrs270': dict(block=_BN, layers=(4, 29, 53, 4), **_RS),
    'resnetrs350': dict(block=_BN, layers=(4, 36, 72, 4), **_RS),
    'resnetrs420': dict(block=_BN, layers=(4, 44, 87, 4), **_RS),
    # channel-pruned ECA-ResNet-D weights (https://arxiv.org/abs/2002.08258): stored (conv1, conv2, conv3) widths
    'ecaresnet50d_pruned': dict(block=_BN, layers=(3, 4, 6, 3), **_D, **_ECA, pruned_widths=(
        (47, 18, 19), (52, 22, 19), (64, 35, 19), (85, 37, 171), (107, 80, 171), (120, 85, 171), (125, 87, 171),
        (198, 126, 818), (255, 232, 818), (256, 233, 818), (253, 235, 818), (256, 225, 818), (256, 239, 818),
        (492, 237, 2022), (512, 500, 2022), (512, 490, 2022))),
    'ecaresnet101d_pruned': dict(block=_BN, layers=(3, 4, 23, 3), **_D, **_ECA, pruned_widths=(
        (45, 25, 26), (53, 20, 26), (60, 27, 26), (81, 24, 142), (93, 49, 142), (102, 54, 142), (122, 78, 142),
        (101, 25, 278), (239, 160, 278), (234, 156, 278), (250, 176, 278), (253, 191, 278), (251, 175, 278),
        (230, 128, 278), (244, 154, 278), (244, 159, 278), (238, 97, 278), (244, 149, 278), (253, 181, 278),
        (245, 119, 278), (255, 216, 278), (256, 201, 278), (253, 149, 278), (254, 141, 278), (256, 190, 278),
        (256, 217, 278), (255, 156, 278), (256, 155, 278), (256, 232, 278), (256, 214, 278), (499, 289, 2042),
        (512, 512, 2042), (512, 502, 2042))),
    # timm's tiny test network: a different block per stage
    'test_resnet': dict(block=(_B, _B, _BN, _B), layers=(1, 1, 1, 1), stem_width=16, stem_type='deep', avg_down=True,
                        channels=(32, 48, 48, 96)),
}


SPEC = FamilySpec(
    name='resnet', model=ResNet, variants=VARIANTS, default_cfg=DEFAULT_CFG,
    feature_cls=('list', 'dict', 'hook', 'fx', 'getter'), default_feature_cls='list', output_strides=OUTPUT_STRIDES,
    export=('torch.export', 'dynamic_hw', 'onnx', 'compile'))
