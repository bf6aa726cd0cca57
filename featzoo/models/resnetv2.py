"""ResNet V2: pre-activation residual networks ("Identity Mappings in Deep Residual Networks", He et al., 2016),
including Big Transfer (BiT, Kolesnikov et al., 2020) with weight-standardized convolutions and group norm, and the
timm-trained ResNetV2s with batch norm, EvoNorm or filter response norm. Parameter names follow timm's ResNetV2 so its
checkpoints load unchanged.

The stem (:func:`create_stem`) and the stages (:class:`ResNetStage`) take the convolution and norm by name, and the
trunk can be built without pre-activation (``preact=False``) and with any number of stages: the ViT-hybrid backbones
are this trunk with a 'SAME'-padded stem and three (or no) stages.

>>> model = SPEC.build('resnetv2_50x1_bit', num_classes=10)
>>> [f['module'] for f in model.feature_info]
['stem.conv', 'stages.0', 'stages.1', 'stages.2', 'stages.3']
"""
from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..family import FamilySpec
from ..layers import (BatchNormAct2d, ClassifierHead, DropPath, MaxPool2dSame, create_act_layer, create_conv2d,
                      drop_path_rates)
from ..layers.helpers import make_divisible
from ..layers.stage_intermediates import StagedFeatures, run_sequence, tap_positions
from ..layers.norm_act import EvoNorm2dS0, FilterResponseNormTlu2d, GroupNormAct
from ..layers.std_conv import StdConv2d, StdConv2dSame
from ..layers.weight_init import kaiming_normal_, normal_
from ..layers.head_api import HeadApi, reset_classifier_head
from .resnet import AvgPool2dSame

OUTPUT_STRIDES = (8, 16, 32)
DEFAULT_CFG = dict(
    input_size=(3, 224, 224), pool_size=(7, 7), interpolation='bilinear', crop_pct=0.875, crop_mode='center',
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), first_conv='stem.conv', classifier='head.fc', num_classes=1000)

# conv (name) -> factory (in_chs, out_chs, kernel_size, stride=, dilation=, groups=) of a bias-free convolution
CONV_TYPES = ('conv', 'std', 'std_same')
# norm (name) -> factory (channels, apply_act=) of a norm layer carrying the block's non-linearity
NORM_TYPES = ('batch', 'group', 'evos', 'frn')
STEM_TYPES = ('', 'fixed', 'same', 'deep', 'deep_fixed', 'deep_same', 'tiered')

ConvFactory = Callable[..., nn.Module]
NormFactory = Callable[..., nn.Module]


def conv_factory(conv: str, std_eps: float = 1e-6) -> ConvFactory:
    """The convolution a ResNetV2 is built with: plain ('conv'), weight-standardized with symmetric padding ('std')
    or with TensorFlow 'SAME' padding ('std_same').

    >>> conv_factory('std', 1e-8)(3, 8, 3).eps
    1e-08
    """
    if conv == 'conv':
        return partial(create_conv2d, bias=False)
    if conv == 'std':
        return partial(StdConv2d, eps=std_eps)
    if conv == 'std_same':
        return partial(StdConv2dSame, eps=std_eps)
    raise ValueError(f'unknown conv {conv!r}; valid: {CONV_TYPES}')


def norm_factory(norm: str, act_layer: str = 'relu') -> NormFactory:
    """The norm (with its activation) a ResNetV2 is built with: 'batch', 'group' (32 groups), 'evos' (EvoNorm-S0)
    or 'frn' (filter response norm with a thresholded linear unit).

    >>> norm_factory('group')(64).num_groups
    32
    """
    if norm == 'batch':
        return partial(BatchNormAct2d, act_layer=act_layer)
    if norm == 'group':
        return partial(GroupNormAct, num_groups=32, act_layer=act_layer)
    if norm == 'evos':
        return EvoNorm2dS0
    if norm == 'frn':
        return FilterResponseNormTlu2d
    raise ValueError(f'unknown norm {norm!r}; valid: {NORM_TYPES}')


def shortcut_pool(stride: int, dilation: int) -> nn.Module:
    """The 2x2 average pool of an avg-pool ('d') shortcut: strided, or at stride 1 with 'SAME' padding once the
    stage is dilated, or nothing.

    >>> type(shortcut_pool(2, 1)).__name__, type(shortcut_pool(1, 2)).__name__, type(shortcut_pool(1, 1)).__name__
    ('AvgPool2d', 'AvgPool2dSame', 'Identity')
    """
    if dilation > 1:
        return AvgPool2dSame(2, 1, ceil_mode=True, count_include_pad=False)
    if stride > 1:
        return nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
    return nn.Identity()


class DownsampleConv(nn.Module):
    """Projection shortcut: a strided 1x1 convolution (then a norm without activation when not pre-activated)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, dilation: int, preact: bool, conv_layer: ConvFactory,
                 norm_layer: NormFactory) -> None:
        super().__init__()
        self.conv = conv_layer(in_chs, out_chs, 1, stride=stride)
        self.norm = nn.Identity() if preact else norm_layer(out_chs, apply_act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class DownsampleAvg(nn.Module):
    """Projection shortcut of the 'd' variants: 2x2 average pool (stride 1 with 'SAME' padding once dilated), then
    a 1x1 convolution."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, dilation: int, preact: bool, conv_layer: ConvFactory,
                 norm_layer: NormFactory) -> None:
        super().__init__()
        self.pool = shortcut_pool(stride, dilation)
        self.conv = conv_layer(in_chs, out_chs, 1, stride=1)
        self.norm = nn.Identity() if preact else norm_layer(out_chs, apply_act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(self.pool(x)))


class PreActBasic(nn.Module):
    """Pre-activation basic block: norm-act, 3x3, norm-act, 3x3; the shortcut (when projected) reads the
    pre-activated input.

    >>> PreActBasic(8, 16, stride=2, conv_layer=conv_factory('conv'), norm_layer=norm_factory('batch'),
    ...             proj_layer=DownsampleConv)(torch.ones(1, 8, 8, 8)).shape
    torch.Size([1, 16, 4, 4])
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, dilation: int = 1, first_dilation: int = 1,
                 bottle_ratio: float = 1.0, groups: int = 1, conv_layer: ConvFactory = StdConv2d,
                 norm_layer: NormFactory = GroupNormAct, proj_layer: Optional[Callable[..., nn.Module]] = None,
                 drop_path_rate: float = 0.0, act_layer: str = 'relu') -> None:
        super().__init__()
        mid_chs = make_divisible(out_chs * bottle_ratio)
        needs_projection = stride != 1 or first_dilation != dilation or in_chs != out_chs
        self.downsample = (proj_layer(in_chs, out_chs, stride, dilation, True, conv_layer, norm_layer)
                           if proj_layer is not None and needs_projection else None)
        self.norm1 = norm_layer(in_chs)
        self.conv1 = conv_layer(in_chs, mid_chs, 3, stride=stride, dilation=first_dilation, groups=groups)
        self.norm2 = norm_layer(mid_chs)
        self.conv2 = conv_layer(mid_chs, out_chs, 3, dilation=dilation, groups=groups)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_preact = self.norm1(x)
        shortcut = x if self.downsample is None else self.downsample(x_preact)
        x = self.conv2(self.norm2(self.conv1(x_preact)))
        return self.drop_path(x) + shortcut


class Bottleneck(nn.Module):
    """Bottleneck: 1x1, 3x3 (stride, dilation, groups), 1x1.

    Pre-activated (``preact=True``, ResNetV2/BiT): each conv follows a norm-act and the projection shortcut reads
    the pre-activated input. Post-activated (the ViT-hybrid trunks, ResNet v1.5 order): each conv is followed by a
    norm, the last without activation, and the sum is activated.

    >>> Bottleneck(64, 256, conv_layer=conv_factory('std'), norm_layer=norm_factory('group'),
    ...            proj_layer=DownsampleConv)(torch.ones(1, 64, 4, 4)).shape
    torch.Size([1, 256, 4, 4])
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, dilation: int = 1, first_dilation: int = 1,
                 bottle_ratio: float = 0.25, groups: int = 1, conv_layer: ConvFactory = StdConv2d,
                 norm_layer: NormFactory = GroupNormAct, proj_layer: Optional[Callable[..., nn.Module]] = None,
                 drop_path_rate: float = 0.0, act_layer: str = 'relu', preact: bool = True) -> None:
        super().__init__()
        self.preact = preact
        mid_chs = make_divisible(out_chs * bottle_ratio)
        self.downsample = (proj_layer(in_chs, out_chs, stride, dilation, preact, conv_layer, norm_layer)
                           if proj_layer is not None else None)
        # registration order follows the computation, so state_dict keys come in timm's order
        norm_widths = (in_chs, mid_chs, mid_chs) if preact else (mid_chs, mid_chs, out_chs)
        convs = ((in_chs, mid_chs, 1, {}),
                 (mid_chs, mid_chs, 3, dict(stride=stride, dilation=first_dilation, groups=groups)),
                 (mid_chs, out_chs, 1, {}))
        for i, ((cin, cout, k, kw), norm_chs) in enumerate(zip(convs, norm_widths), start=1):
            norm = norm_layer(norm_chs, apply_act=preact or i < 3)
            conv = conv_layer(cin, cout, k, **kw)
            if preact:
                self.add_module(f'norm{i}', norm)
                self.add_module(f'conv{i}', conv)
            else:
                self.add_module(f'conv{i}', conv)
                self.add_module(f'norm{i}', norm)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.act3 = nn.Identity() if preact else create_act_layer(act_layer, inplace=True)

    def zero_init_last(self) -> None:
        if self.preact:
            nn.init.zeros_(self.conv3.weight)
        elif getattr(self.norm3, 'weight', None) is not None:
            nn.init.zeros_(self.norm3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preact:
            x_preact = self.norm1(x)
            shortcut = x if self.downsample is None else self.downsample(x_preact)
            x = self.conv1(x_preact)
            x = self.conv2(self.norm2(x))
            x = self.conv3(self.norm3(x))
            return self.drop_path(x) + shortcut
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.norm1(self.conv1(x))
        x = self.norm2(self.conv2(x))
        x = self.norm3(self.conv3(x))
        return self.act3(self.drop_path(x) + shortcut)


BLOCK_TYPES = {'basic': PreActBasic, 'bottleneck': Bottleneck}


class ResNetStage(nn.Module):
    """``blocks.0`` .. ``blocks.{depth-1}``; the first block changes width and resolution through its projection.

    A dilated stage starts its first block at the previous (at most 2) dilation, as the reference does.

    >>> stage = ResNetStage(64, 256, stride=2, dilation=1, depth=2, block_fn=Bottleneck,
    ...                     conv_layer=conv_factory('std'), norm_layer=norm_factory('group'))
    >>> stage(torch.ones(1, 64, 8, 8)).shape
    torch.Size([1, 256, 4, 4])
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int, dilation: int, depth: int,
                 block_fn: Callable[..., nn.Module], conv_layer: ConvFactory, norm_layer: NormFactory,
                 bottle_ratio: float = 0.25, groups: int = 1, avg_down: bool = False,
                 drop_path_rates: Optional[Sequence[float]] = None, act_layer: str = 'relu') -> None:
        super().__init__()
        self.grad_checkpointing = False
        first_dilation = 1 if dilation in (1, 2) else 2
        proj_layer: Optional[Callable[..., nn.Module]] = DownsampleAvg if avg_down else DownsampleConv
        self.blocks = nn.Sequential()
        for i in range(depth):
            self.blocks.add_module(str(i), block_fn(
                in_chs if i == 0 else out_chs, out_chs, stride=stride if i == 0 else 1, dilation=dilation,
                first_dilation=first_dilation, bottle_ratio=bottle_ratio, groups=groups, conv_layer=conv_layer,
                norm_layer=norm_layer, proj_layer=proj_layer,
                drop_path_rate=drop_path_rates[i] if drop_path_rates else 0.0, act_layer=act_layer))
            first_dilation = dilation
            proj_layer = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_sequence(self.blocks, x, self.grad_checkpointing and torch.is_grad_enabled())


def create_stem(in_chs: int, out_chs: int, stem_type: str, preact: bool, conv_layer: ConvFactory,
                norm_layer: NormFactory) -> Tuple[nn.Sequential, str]:
    """The stem (a 7x7 or three 3x3 convolutions, then a 3x3 stride-2 max pool) and the name of its stride-2
    feature module (the last convolution when pre-activated, else its norm).

    ``stem_type``: '' (PyTorch padding), 'fixed' (BiT: one pixel of zero padding before an unpadded pool), 'same'
    (TensorFlow 'SAME' pool), each optionally 'deep' (three 3x3 convolutions), or 'tiered' (a deep stem with
    3/8 and 1/2 of the width in its first two convolutions).

    >>> stem, tap = create_stem(3, 64, 'fixed', True, conv_factory('std'), norm_factory('group'))
    >>> list(dict(stem.named_children())), tap
    (['conv', 'pad', 'pool'], 'conv')
    """
    if stem_type not in STEM_TYPES:
        raise ValueError(f'unknown stem_type {stem_type!r}; valid: {STEM_TYPES}')
    layers: 'OrderedDict[str, nn.Module]' = OrderedDict()
    deep = 'deep' in stem_type or 'tiered' in stem_type
    if deep:
        mid = (3 * out_chs // 8, out_chs // 2) if 'tiered' in stem_type else (out_chs // 2, out_chs // 2)
        layers['conv1'] = conv_layer(in_chs, mid[0], 3, stride=2)
        layers['norm1'] = norm_layer(mid[0])
        layers['conv2'] = conv_layer(mid[0], mid[1], 3, stride=1)
        layers['norm2'] = norm_layer(mid[1])
        layers['conv3'] = conv_layer(mid[1], out_chs, 3, stride=1)
        if not preact:
            layers['norm3'] = norm_layer(out_chs)
    else:
        layers['conv'] = conv_layer(in_chs, out_chs, 7, stride=2)
        if not preact:
            layers['norm'] = norm_layer(out_chs)
    if 'fixed' in stem_type:
        layers['pad'] = nn.ConstantPad2d(1, 0.0)
        layers['pool'] = nn.MaxPool2d(kernel_size=3, stride=2, padding=0)
    elif 'same' in stem_type:
        layers['pool'] = MaxPool2dSame(3, stride=2)
    else:
        layers['pool'] = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    tap = ('conv3' if deep else 'conv') if preact else ('norm3' if deep else 'norm')
    return nn.Sequential(layers), tap


class ResNetV2(StagedFeatures, HeadApi, nn.Module):
    """Stem, ``stages.0`` .. ``stages.{n-1}``, a final norm (pre-activation only) and a pooled 1x1-conv classifier.

    ``width_factor`` multiplies every width (BiT-M x3 ...); ``output_stride`` 16 or 8 dilates the later stages.

    >>> ResNetV2((1, 1, 1, 1), block='basic', channels=(8, 16, 32, 64), stem_chs=8, conv='conv', norm='batch',
    ...          num_classes=5)(torch.ones(1, 3, 64, 64)).shape
    torch.Size([1, 5])
    """

    checkpoint_stages = 'stages'
    features_end, end_is_norm, prune_trims_feature_info = 'norm', True, False

    def __init__(self, layers: Sequence[int], channels: Sequence[int] = (256, 512, 1024, 2048),
                 num_classes: int = 1000, in_chans: int = 3, global_pool: str = 'avg', output_stride: int = 32,
                 width_factor: int = 1, stem_chs: int = 64, stem_type: str = '', avg_down: bool = False,
                 preact: bool = True, block: str = 'bottleneck', bottle_ratio: Optional[float] = None,
                 conv: str = 'std', std_eps: float = 1e-6, norm: str = 'group', act_layer: str = 'relu',
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, zero_init_last: bool = False) -> None:
        super().__init__()
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(f'output_stride={output_stride!r} is not supported; valid: {OUTPUT_STRIDES}')
        if block not in BLOCK_TYPES:
            raise ValueError(f'unknown block {block!r}; valid: {sorted(BLOCK_TYPES)}')
        if not preact and block != 'bottleneck':
            raise ValueError(f"preact=False takes block='bottleneck' only, got {block!r}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        conv_layer = conv_factory(conv, std_eps)
        norm_layer = norm_factory(norm, act_layer)
        block_fn = BLOCK_TYPES[block] if preact else partial(Bottleneck, preact=False)
        if bottle_ratio is None:
            bottle_ratio = 1.0 if block == 'basic' else 0.25

        stem_chs = make_divisible(stem_chs * width_factor)
        self.stem, stem_tap = create_stem(in_chans, stem_chs, stem_type, preact, conv_layer, norm_layer)
        self.feature_info: List[Dict[str, Any]] = [dict(num_chs=stem_chs, reduction=2, module=f'stem.{stem_tap}')]
        self.stem_taps = tap_positions(self.stem, self.feature_info)

        prev_chs, net_stride, dilation = stem_chs, 4, 1
        rates = drop_path_rates(drop_path_rate, list(layers))
        self.stages = nn.Sequential()
        for i, (depth, width) in enumerate(zip(layers, channels)):
            out_chs = make_divisible(width * width_factor)
            stride = 1 if i == 0 else 2
            if net_stride >= output_stride:
                dilation *= stride
                stride = 1
            self.stages.add_module(str(i), ResNetStage(
                prev_chs, out_chs, stride=stride, dilation=dilation, depth=depth, block_fn=block_fn,
                conv_layer=conv_layer, norm_layer=norm_layer, bottle_ratio=bottle_ratio, avg_down=avg_down,
                drop_path_rates=rates[i], act_layer=act_layer))
            prev_chs = out_chs
            net_stride *= stride
            self.feature_info.append(dict(num_chs=prev_chs, reduction=net_stride, module=f'stages.{i}'))

        self.num_features = prev_chs
        self.norm = norm_layer(self.num_features) if preact else nn.Identity()
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate,
                                   use_conv=True)
        self.head_hidden_size = self.num_features * self.head.global_pool.feat_mult()
        self._init_weights(zero_init_last)

    def _init_weights(self, zero_init_last: bool) -> None:
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear) or (name == 'head.fc' and isinstance(m, nn.Conv2d)):
                normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif zero_init_last and hasattr(m, 'zero_init_last'):
                m.zero_init_last()

    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter-group regexes: the stem, then stages (``coarse``) or blocks, the final norm last.

        >>> SPEC.build('resnetv2_18').group_matcher(coarse=True)['blocks']
        '^stages\\\\.(\\\\d+)'
        """
        return dict(stem=r'^stem', blocks=r'^stages\.(\d+)' if coarse else [
            (r'^stages\.(\d+)\.blocks\.(\d+)', None), (r'^norm', (99999,))])

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier (``num_classes=0`` removes it); ``global_pool=None`` keeps the pooling.

        >>> m = SPEC.build('resnetv2_18'); m.reset_classifier(0, ''); m(torch.ones(1, 3, 64, 64)).shape
        torch.Size([1, 512, 2, 2])
        """
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f'num_classes must be an int >= 0 (0 removes the classifier), got {num_classes!r}')
        # the pool type is always passed: a 1x1-conv classifier is rebuilt as one (not as a Linear)
        pool_type = self.head.global_pool.pool_type if global_pool is None else global_pool
        reset_classifier_head(self, num_classes, pool_type)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final map, after the last stage and the final norm (NCHW).

        >>> SPEC.build('resnetv2_18').forward_features(torch.ones(1, 3, 64, 64)).shape
        torch.Size([1, 512, 2, 2])
        """
        return self.norm(self.stages(self.stem(x)))


_BIT = dict(stem_type='fixed', conv='std', std_eps=1e-8, norm='group')       # Big Transfer
_BASIC = dict(block='basic', channels=(64, 128, 256, 512), conv='conv', norm='batch')
_BN = dict(conv='conv', norm='batch')                                           # timm-trained, batch norm
_D = dict(stem_type='deep', avg_down=True)                                      # deep stem, avg-pool shortcut

VARIANTS: Dict[str, Dict[str, Any]] = {
    'resnetv2_18': dict(layers=(2, 2, 2, 2), **_BASIC),
    'resnetv2_18d': dict(layers=(2, 2, 2, 2), **_BASIC, **_D),
    'resnetv2_34': dict(layers=(3, 4, 6, 3), **_BASIC),
    'resnetv2_34d': dict(layers=(3, 4, 6, 3), **_BASIC, **_D),
    'resnetv2_50': dict(layers=(3, 4, 6, 3), **_BN),
    'resnetv2_50d': dict(layers=(3, 4, 6, 3), **_BN, **_D),
    'resnetv2_50t': dict(layers=(3, 4, 6, 3), **_BN, stem_type='tiered', avg_down=True),
    'resnetv2_101': dict(layers=(3, 4, 23, 3), **_BN),
    'resnetv2_101d': dict(layers=(3, 4, 23, 3), **_BN, **_D),
    'resnetv2_152': dict(layers=(3, 8, 36, 3), **_BN),
    'resnetv2_152d': dict(layers=(3, 8, 36, 3), **_BN, **_D),
    'resnetv2_50d_gn': dict(layers=(3, 4, 6, 3), conv='conv', norm='group', **_D),
    'resnetv2_50d_evos': dict(layers=(3, 4, 6, 3), conv='conv', norm='evos', **_D),
    'resnetv2_50d_frn': dict(layers=(3, 4, 6, 3), conv='conv', norm='frn', **_D),
    'resnetv2_50x1_bit': dict(layers=(3, 4, 6, 3), width_factor=1, **_BIT),
    'resnetv2_50x3_bit': dict(layers=(3, 4, 6, 3), width_factor=3, **_BIT),
    'resnetv2_101x1_bit': dict(layers=(3, 4, 23, 3), width_factor=1, **_BIT),
    'resnetv2_101x3_bit': dict(layers=(3, 4, 23, 3), width_factor=3, **_BIT),
    'resnetv2_152x2_bit': dict(layers=(3, 8, 36, 3), width_factor=2, **_BIT),
    'resnetv2_152x4_bit': dict(layers=(3, 8, 36, 3), width_factor=4, **_BIT),
}


SPEC = FamilySpec(
    name='resnetv2', model=ResNetV2, variants=VARIANTS, default_cfg=DEFAULT_CFG,
    feature_cls=('list', 'dict', 'hook', 'fx', 'getter'), default_feature_cls='list', output_strides=OUTPUT_STRIDES,
    export=('torch.export', 'dynamic_hw', 'onnx', 'compile'), size_args=('width_factor',))
