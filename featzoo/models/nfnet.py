"""Normalizer-free networks: NF-ResNet and NF-RegNet ("Characterizing signal propagation to close the performance gap
in unnormalized ResNets", Brock et al., 2021), NFNet-F0..F7 ("High-Performance Large-Scale Image Recognition Without
Normalization", Brock et al., 2021; ``dm_`` rows load DeepMind's JAX weights) and timm's ECA-NFNet-L rows.

No block normalizes its activations. Every convolution standardizes its weights (:class:`ScaledStdConv2d`) and the
residual branches are scaled so that the variance of the trunk grows by a known amount per block: a block reads its
input divided by the expected standard deviation (``beta``) and adds its output times ``alpha``. The activation's
variance correction ``gamma`` is folded into the convolutions, or (``gamma_in_act``, DeepMind's layout) applied after
each activation. Parameter names follow timm's NormFreeNet so its checkpoints load unchanged.

>>> model = SPEC.build('test_nfnet', num_classes=10)
>>> [(f['module'], f['reduction']) for f in model.feature_info]
[('stem.conv3', 2), ('stages.0', 4), ('stages.1', 8), ('stages.2', 16), ('final_conv', 32)]
"""
from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from ..checks import check_choice, check_int_tuple
from ..family import FamilySpec
from ..layers import ClassifierHead, DropPath, create_act_layer, drop_path_rates, get_attn, make_divisible
from ..layers.head_api import HeadApi, reset_classifier_head
from ..layers.output_stride import stride_or_dilate
from ..layers.stage_intermediates import StagedFeatures, run_sequence, tap_positions
from ..layers.scaled_std_conv import ScaledStdConv2d, ScaledStdConv2dSame
from ..layers.weight_init import kaiming_normal_, normal_
from .resnet import AvgPool2dSame

OUTPUT_STRIDES = (8, 16, 32)
STEM_TYPES = ('3x3', '7x7', '3x3_pool', '7x7_pool', 'deep', 'deep_tiered', 'deep_pool', 'deep_quad')
DEFAULT_CFG = dict(
    input_size=(3, 224, 224), pool_size=(7, 7), interpolation='bicubic', crop_pct=0.9, crop_mode='center',
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), first_conv='stem.conv1', classifier='head.fc',
    num_classes=1000)

# The factor that restores unit second moment after each non-linearity applied to unit Gaussian inputs (constants of
# DeepMind's NFNet release); only the activations the published rows use are listed.
NONLINEARITY_GAMMA = {
    'identity': 1.0,
    'gelu': 1.7015043497085571,
    'relu': 1.7139588594436646,
    'relu6': 1.7131484746932983,
    'elu': 1.2716004848480225,
    'celu': 1.270926833152771,
    'leaky_relu': 1.70590341091156,
    'selu': 1.0008515119552612,
    'sigmoid': 4.803835391998291,
    'silu': 1.7881293296813965,
    'tanh': 1.5939117670059204,
}

ActFactory = Callable[..., nn.Module]
ConvFactory = Callable[..., nn.Module]


class GammaAct(nn.Module):
    """An activation whose output is multiplied by its variance correction ``gamma`` (DeepMind's layout).

    >>> float(GammaAct('relu', 2.0)(torch.tensor([-1.0, 3.0]))[1])
    6.0
    """

    def __init__(self, act_layer: str, gamma: float, inplace: bool = False) -> None:
        super().__init__()
        self.act = create_act_layer(act_layer)
        self.gamma = gamma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x) * self.gamma


class DownsampleAvg(nn.Module):
    """Shortcut projection: a 2x2 average pool (stride 1 with 'SAME' padding once the stage is dilated), then a
    1x1 convolution."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, dilation: int, conv_layer: ConvFactory) -> None:
        super().__init__()
        if dilation > 1:
            self.pool: nn.Module = AvgPool2dSame(2, 1, ceil_mode=True, count_include_pad=False)
        elif stride > 1:
            self.pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
        else:
            self.pool = nn.Identity()
        self.conv = conv_layer(in_chs, out_chs, 1, stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pool(x))


class NormFreeBlock(nn.Module):
    """Pre-activation bottleneck without normalization: ``x + alpha * branch(act(x) * beta)``.

    The branch is 1x1, grouped 3x3 (two of them with ``extra_conv``, NFNet-F), 1x1, with channel attention between
    the 3x3 and the last 1x1 (``reg``, NF-RegNet) or after the last 1x1. A projected shortcut reads the scaled,
    activated input. ``skipinit`` adds a learned scalar gain on the branch (DeepMind's NFNets).

    >>> conv = partial(ScaledStdConv2d, gamma=1.7)
    >>> NormFreeBlock(16, 32, stride=2, act_layer=partial(create_act_layer, 'relu'),
    ...               conv_layer=conv)(torch.ones(1, 16, 8, 8)).shape
    torch.Size([1, 32, 4, 4])
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, dilation: int = 1, first_dilation: int = 1,
                 alpha: float = 1.0, beta: float = 1.0, bottle_ratio: float = 0.25, group_size: Optional[int] = None,
                 ch_div: int = 1, reg: bool = True, extra_conv: bool = False, skipinit: bool = False,
                 attn_layer: Optional[Callable[[int], nn.Module]] = None, attn_gain: float = 2.0,
                 act_layer: ActFactory = nn.ReLU, conv_layer: ConvFactory = ScaledStdConv2d,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        # NF-RegNets size the bottleneck from the input width, the others from the output width (as ResNets)
        mid_chs = make_divisible((in_chs if reg else out_chs) * bottle_ratio, ch_div)
        groups = mid_chs // group_size if group_size else 1
        if group_size and group_size % ch_div == 0:
            mid_chs = group_size * groups  # a whole number of groups
        self.alpha = alpha
        self.beta = beta
        self.attn_gain = attn_gain
        needs_projection = in_chs != out_chs or stride != 1 or dilation != first_dilation
        self.downsample = (DownsampleAvg(in_chs, out_chs, stride, dilation, conv_layer)
                           if needs_projection else None)
        self.act1 = act_layer()
        self.conv1 = conv_layer(in_chs, mid_chs, 1)
        self.act2 = act_layer()
        self.conv2 = conv_layer(mid_chs, mid_chs, 3, stride=stride, dilation=first_dilation, groups=groups)
        self.act2b = act_layer() if extra_conv else None
        self.conv2b = (conv_layer(mid_chs, mid_chs, 3, stride=1, dilation=dilation, groups=groups)
                       if extra_conv else None)
        self.attn = attn_layer(mid_chs) if reg and attn_layer is not None else None
        self.act3 = act_layer()
        self.conv3 = conv_layer(mid_chs, out_chs, 1, gain_init=1.0 if skipinit else 0.0)
        self.attn_last = attn_layer(out_chs) if not reg and attn_layer is not None else None
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.skipinit_gain = nn.Parameter(torch.zeros(())) if skipinit else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scaled = self.act1(x) * self.beta
        shortcut = x if self.downsample is None else self.downsample(scaled)
        out = self.conv1(scaled)
        out = self.conv2(self.act2(out))
        if self.conv2b is not None:
            out = self.conv2b(self.act2b(out))
        if self.attn is not None:
            out = self.attn_gain * self.attn(out)
        out = self.conv3(self.act3(out))
        if self.attn_last is not None:
            out = self.attn_gain * self.attn_last(out)
        out = self.drop_path(out)
        if self.skipinit_gain is not None:
            out = out * self.skipinit_gain
        return out * self.alpha + shortcut


def create_stem(in_chs: int, out_chs: int, stem_type: str, conv_layer: ConvFactory,
                act_layer: ActFactory) -> Tuple[nn.Sequential, int, Dict[str, Any]]:
    """The stem, its stride, and its stride-2 feature level.

    '3x3' / '7x7': one strided convolution (NF-RegNet / NF-ResNet), '_pool' adds a 3x3 max pool; 'deep' stems are
    three 3x3 convolutions ('tiered': 3/8 and 1/2 of the width first), 'deep_quad' (NFNet-F) four, the last strided.
    A deep stem's feature level is its stride-2 convolution before the last.

    >>> stem, stride, level = create_stem(3, 128, 'deep_quad', ScaledStdConv2d, nn.GELU)
    >>> list(dict(stem.named_children())), stride, level['module']
    (['conv1', 'act2', 'conv2', 'act3', 'conv3', 'act4', 'conv4'], 4, 'stem.conv3')
    """
    stem_stride = 2
    level = dict(num_chs=out_chs, reduction=2, module='stem.conv')
    layers: 'OrderedDict[str, nn.Module]' = OrderedDict()
    if 'deep' in stem_type:
        if 'quad' in stem_type:
            widths, strides = (out_chs // 8, out_chs // 4, out_chs // 2, out_chs), (2, 1, 1, 2)
            stem_stride = 4
            level = dict(num_chs=out_chs // 2, reduction=2, module='stem.conv3')
        else:
            first = 3 * out_chs // 8 if 'tiered' in stem_type else out_chs // 2
            widths, strides = (first, out_chs // 2, out_chs), (2, 1, 1)
            level = dict(num_chs=out_chs // 2, reduction=2, module='stem.conv2')
        prev = in_chs
        for i, (width, stride) in enumerate(zip(widths, strides)):
            layers[f'conv{i + 1}'] = conv_layer(prev, width, 3, stride=stride)
            if i < len(widths) - 1:
                layers[f'act{i + 2}'] = act_layer()
            prev = width
    else:
        kernel = 3 if '3x3' in stem_type else 7
        layers['conv'] = conv_layer(in_chs, out_chs, kernel, stride=2)
    if 'pool' in stem_type:
        layers['pool'] = nn.MaxPool2d(3, stride=2, padding=1)
        stem_stride = 4
    return nn.Sequential(layers), stem_stride, level


class NormFreeNet(StagedFeatures, HeadApi, nn.Module):
    """Stem, ``stages.0..3`` of :class:`NormFreeBlock`, an optional 1x1 ``final_conv``, a final activation and a
    pooled linear classifier.

    ``depths`` / ``channels``: blocks and output widths per stage (widths times ``width_factor``, rounded to
    ``ch_div``); ``num_features``: the final convolution's width (0: none). ``output_stride`` 16 or 8 dilates the
    later stages.

    >>> NormFreeNet((1, 1, 1, 1), (16, 32, 48, 64), stem_type='3x3', num_classes=5)(torch.ones(1, 3, 64, 64)).shape
    torch.Size([1, 5])
    """

    # the last level is taken after ``final_conv``, before the final activation
    last_stage_end, features_end, prune_trims_feature_info = 'final_conv', 'final_act', False
    checkpoint_unit = 'stage'

    def __init__(self, depths: Sequence[int], channels: Sequence[int], num_classes: int = 1000, in_chans: int = 3,
                 global_pool: str = 'avg', output_stride: int = 32, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, alpha: float = 0.2, stem_type: str = '3x3',
                 stem_chs: Optional[int] = None, group_size: Optional[int] = None, attn_layer: Optional[str] = None,
                 attn_kwargs: Optional[Mapping[str, Any]] = None, attn_gain: float = 2.0, width_factor: float = 1.0,
                 bottle_ratio: float = 0.5, num_features: int = 0, ch_div: int = 8, reg: bool = False,
                 extra_conv: bool = False, gamma_in_act: bool = False, same_padding: bool = False,
                 std_conv_eps: float = 1e-5, skipinit: bool = False, zero_init_fc: bool = False,
                 act_layer: str = 'silu') -> None:
        super().__init__()
        check_choice('output_stride', output_stride, OUTPUT_STRIDES)
        check_choice('stem_type', stem_type, STEM_TYPES)
        check_choice('act_layer', act_layer, tuple(NONLINEARITY_GAMMA))
        depths = check_int_tuple('depths', depths)
        channels = check_int_tuple('channels', channels, length=len(depths))
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        gamma = NONLINEARITY_GAMMA[act_layer]
        conv_cls = ScaledStdConv2dSame if same_padding else ScaledStdConv2d
        if gamma_in_act:
            act: ActFactory = partial(GammaAct, act_layer, gamma)
            conv_layer: ConvFactory = partial(conv_cls, eps=std_conv_eps)
        else:
            act = partial(create_act_layer, act_layer)
            conv_layer = partial(conv_cls, gamma=gamma, eps=std_conv_eps)
        attn_cls = get_attn(attn_layer)
        attn = partial(attn_cls, **dict(attn_kwargs or {})) if attn_cls is not None else None

        stem_chs = make_divisible((stem_chs or channels[0]) * width_factor, ch_div)
        self.stem, stem_stride, stem_level = create_stem(in_chans, stem_chs, stem_type, conv_layer, act)
        self.stem_taps = tap_positions(self.stem, [stem_level])
        self.feature_info: List[Dict[str, Any]] = [stem_level]

        rates = drop_path_rates(drop_path_rate, list(depths))
        prev_chs, net_stride, dilation = stem_chs, stem_stride, 1
        expected_var = 1.0
        self.stages = nn.Sequential()
        for stage_idx, depth in enumerate(depths):
            # a stem that already pooled to stride 4 leaves the first stage at full resolution
            stride = 1 if stage_idx == 0 and stem_stride > 2 else 2
            stride, net_stride, dilation = stride_or_dilate(net_stride, dilation, output_stride, stride)
            first_dilation = 1 if dilation in (1, 2) else 2
            out_chs = make_divisible(channels[stage_idx] * width_factor, ch_div)
            blocks = []
            for block_idx in range(depth):
                first_block = stage_idx == 0 and block_idx == 0
                blocks.append(NormFreeBlock(
                    prev_chs, out_chs, stride=stride if block_idx == 0 else 1, dilation=dilation,
                    first_dilation=first_dilation, alpha=alpha, beta=1.0 / expected_var ** 0.5,
                    bottle_ratio=1.0 if reg and first_block else bottle_ratio, group_size=group_size, ch_div=ch_div,
                    reg=reg, extra_conv=extra_conv, skipinit=skipinit, attn_layer=attn, attn_gain=attn_gain,
                    act_layer=act, conv_layer=conv_layer, drop_path_rate=rates[stage_idx][block_idx]))
                # the variance restarts at a stage's first block (its shortcut is projected), then grows by alpha^2
                if block_idx == 0:
                    expected_var = 1.0
                expected_var += alpha ** 2
                first_dilation = dilation
                prev_chs = out_chs
            self.stages.add_module(str(stage_idx), nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=prev_chs, reduction=net_stride, module=f'stages.{stage_idx}'))

        if num_features:
            self.num_features = make_divisible(width_factor * num_features, ch_div)
            self.final_conv: nn.Module = conv_layer(prev_chs, self.num_features, 1)
            self.feature_info[-1] = dict(num_chs=self.num_features, reduction=net_stride, module='final_conv')
        else:
            self.num_features = prev_chs
            self.final_conv = nn.Identity()
        self.final_act = act()
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self.head_hidden_size = self.num_features * self.head.global_pool.feat_mult()
        self._init_weights(zero_init_fc)

    def _init_weights(self, zero_init_fc: bool) -> None:
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear) and 'fc' in name:
                if zero_init_fc:
                    nn.init.zeros_(m.weight)
                else:
                    normal_(m.weight, 0.0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                kaiming_normal_(m.weight, mode='fan_in', nonlinearity='linear')
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter-group regexes: the stem, then stages (``coarse``) or blocks, the final convolution last.

        >>> SPEC.build('test_nfnet').group_matcher()['blocks'][0][0]
        '^stages\\\\.(\\\\d+)\\\\.(\\\\d+)'
        """
        return dict(stem=r'^stem', blocks=[(r'^stages\.(\d+)' if coarse else r'^stages\.(\d+)\.(\d+)', None),
                                           (r'^final_conv', (99999,))])

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier (``num_classes=0`` removes it); ``global_pool=None`` keeps the pooling.

        >>> m = SPEC.build('test_nfnet'); m.reset_classifier(0, ''); m(torch.ones(1, 3, 64, 64)).shape
        torch.Size([1, 192, 2, 2])
        """
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f'num_classes must be an int >= 0 (0 removes the classifier), got {num_classes!r}')
        if global_pool is not None and global_pool == self.head.global_pool.pool_type:
            global_pool = None  # the same pooling: only the classifier is new
        reset_classifier_head(self, num_classes, global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final map after the final activation (NCHW).

        >>> SPEC.build('test_nfnet').forward_features(torch.ones(1, 3, 64, 64)).shape
        torch.Size([1, 192, 2, 2])
        """
        x = run_sequence(self.stages, self.stem(x), self.grad_checkpointing and torch.is_grad_enabled())
        return self.final_act(self.final_conv(x))


# ---- the table -------------------------------------------------------------------------------------------------------

def _nf_resnet(depths: Tuple[int, ...], attn_layer: Optional[str] = None, **attn_kwargs: Any) -> Dict[str, Any]:
    """NF-ResNet: 7x7 stem and max pool, bottlenecks of a quarter width, ReLU, no final convolution."""
    return dict(depths=depths, channels=(256, 512, 1024, 2048), stem_type='7x7_pool', stem_chs=64, bottle_ratio=0.25,
                act_layer='relu', attn_layer=attn_layer, attn_kwargs=attn_kwargs)


def _nf_regnet(depths: Tuple[int, ...], channels: Tuple[int, ...] = (48, 104, 208, 440)) -> Dict[str, Any]:
    """NF-RegNet-B: 3x3 stem, groups of 8, 2.25x inverted bottlenecks sized from the input with squeeze-excite in the
    middle, 3/4 width, a final 1x1 convolution."""
    return dict(depths=depths, channels=channels, stem_type='3x3', group_size=8, width_factor=0.75, bottle_ratio=2.25,
                num_features=1280 * channels[-1] // 440, reg=True, attn_layer='se', attn_kwargs=dict(rd_ratio=0.5))


def _nfnet(depths: Tuple[int, ...], channels: Tuple[int, ...] = (256, 512, 1536, 1536), group_size: int = 128,
           bottle_ratio: float = 0.5, feat_mult: float = 2.0, act_layer: str = 'gelu', attn_layer: str = 'se',
           attn_kwargs: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """NFNet-F (and timm's lighter L rows): four-convolution stem, two grouped 3x3 per block, attention after the
    block, a final 1x1 convolution ``feat_mult`` times the last width."""
    return dict(depths=depths, channels=channels, stem_type='deep_quad', stem_chs=128, group_size=group_size,
                bottle_ratio=bottle_ratio, extra_conv=True, num_features=int(channels[-1] * feat_mult),
                act_layer=act_layer, attn_layer=attn_layer,
                attn_kwargs=dict(rd_ratio=0.5) if attn_kwargs is None else attn_kwargs)


def _dm_nfnet(depths: Tuple[int, ...]) -> Dict[str, Any]:
    """NFNet-F as DeepMind trained it: gamma applied after each activation, TensorFlow 'SAME' padding, skipinit."""
    return dict(_nfnet(depths), gamma_in_act=True, same_padding=True, skipinit=True)


_F_DEPTHS = {f'f{i}': (i + 1, 2 * (i + 1), 6 * (i + 1), 3 * (i + 1)) for i in range(8)}
_LIGHT = dict(group_size=64, bottle_ratio=0.25, act_layer='silu')
_ECA_LIGHT = dict(_LIGHT, attn_layer='eca', attn_kwargs={})

VARIANTS: Dict[str, Dict[str, Any]] = {
    **{f'dm_nfnet_{f}': _dm_nfnet(_F_DEPTHS[f]) for f in ('f0', 'f1', 'f2', 'f3', 'f4', 'f5', 'f6')},
    **{f'nfnet_{f}': _nfnet(_F_DEPTHS[f]) for f in _F_DEPTHS},
    'nfnet_l0': _nfnet(_F_DEPTHS['f0'], feat_mult=1.5, attn_kwargs=dict(rd_ratio=0.25, rd_divisor=8), **_LIGHT),
    'eca_nfnet_l0': _nfnet(_F_DEPTHS['f0'], feat_mult=1.5, **_ECA_LIGHT),
    'eca_nfnet_l1': _nfnet(_F_DEPTHS['f1'], feat_mult=2.0, **_ECA_LIGHT),
    'eca_nfnet_l2': _nfnet(_F_DEPTHS['f2'], feat_mult=2.0, **_ECA_LIGHT),
    'eca_nfnet_l3': _nfnet(_F_DEPTHS['f3'], feat_mult=2.0, **_ECA_LIGHT),
    'nf_regnet_b0': _nf_regnet((1, 3, 6, 6)),
    'nf_regnet_b1': _nf_regnet((2, 4, 7, 7)),
    'nf_regnet_b2': _nf_regnet((2, 4, 8, 8), (56, 112, 232, 488)),
    'nf_regnet_b3': _nf_regnet((2, 5, 9, 9), (56, 128, 248, 528)),
    'nf_regnet_b4': _nf_regnet((2, 6, 11, 11), (64, 144, 288, 616)),
    'nf_regnet_b5': _nf_regnet((3, 7, 14, 14), (80, 168, 336, 704)),
    'nf_resnet26': _nf_resnet((2, 2, 2, 2)),
    'nf_resnet50': _nf_resnet((3, 4, 6, 3)),
    'nf_resnet101': _nf_resnet((3, 4, 23, 3)),
    'nf_seresnet26': _nf_resnet((2, 2, 2, 2), 'se', rd_ratio=1 / 16),
    'nf_seresnet50': _nf_resnet((3, 4, 6, 3), 'se', rd_ratio=1 / 16),
    'nf_seresnet101': _nf_resnet((3, 4, 23, 3), 'se', rd_ratio=1 / 16),
    'nf_ecaresnet26': _nf_resnet((2, 2, 2, 2), 'eca'),
    'nf_ecaresnet50': _nf_resnet((3, 4, 6, 3), 'eca'),
    'nf_ecaresnet101': _nf_resnet((3, 4, 23, 3), 'eca'),
    'test_nfnet': _nfnet((1, 1, 1, 1), channels=(32, 64, 96, 128), feat_mult=1.5, group_size=8, bottle_ratio=0.25,
                         act_layer='silu', attn_kwargs=dict(rd_ratio=0.25, rd_divisor=8)),
}


SPEC = FamilySpec(
    name='nfnet', model=NormFreeNet, variants=VARIANTS, default_cfg=DEFAULT_CFG,
    feature_cls=('list', 'dict', 'hook', 'fx', 'getter'), default_feature_cls='list', output_strides=OUTPUT_STRIDES,
    export=('torch.export', 'dynamic_hw', 'onnx', 'compile'), size_args=('bottle_ratio',))
