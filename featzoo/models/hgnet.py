"""PP-HGNet and PP-HGNetV2 (PaddlePaddle's "high-performance GPU networks"), with timm's parameter names.

A stage optionally halves the resolution with a depthwise 3x3 conv (no activation), then runs blocks that, like
VoVNet's one-shot aggregation, chain ``layer_per_block`` convs and concatenate the block input with every link's
output before aggregating them with 1x1 convs. V1 aggregates with one conv followed by an effective squeeze-excitation
(sigmoid gate); V2 with a squeeze and an excitation 1x1 conv, uses "light" links (1x1 then depthwise k x k) in its
last two stages, has a stem with a two-path (pool / convs) branch, and in its small variants scales and shifts every
activation by a learnable scalar pair (``lab``). The head pools, widens with a 1x1 conv (``last_conv``) and classifies.

For ``output_stride`` 16 or 8 (timm's HGNet takes no ``output_stride``) the stages past it run their downsampling
conv at stride 1 with the previous dilation and dilate their k x k convs by twice that, as timm dilates ResNets.

>>> m = SPEC.build('hgnetv2_b0')
>>> [f['num_chs'] for f in m.feature_info], m.num_features, m.head_hidden_size
([64, 256, 512, 1024], 1024, 2048)
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ..checks import check_bool, check_choice, check_int, check_int_tuple
from ..family import FamilySpec
from ..layers import ConvNormAct, DropPath, SelectAdaptivePool2d, drop_path_rates
from ..layers.head_api import HeadApi
from ..layers.output_stride import stride_or_dilate
from ..layers.stage_intermediates import StagedFeatures, run_sequence, stage_group_matcher
from ..layers.weight_init import kaiming_normal_

__all__ = ['HighPerfGpuNet', 'HighPerfGpuBlock', 'HighPerfGpuStage', 'LearnableAffineBlock', 'SPEC', 'VARIANTS']

OUTPUT_STRIDES = (8, 16, 32)
STEM_TYPES = ('v1', 'v2')
AGG_TYPES = ('ese', 'se')
DEFAULT_CFG = dict(
    input_size=(3, 224, 224), pool_size=(7, 7), interpolation='bicubic', crop_pct=0.965, crop_mode='center',
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), classifier='head.fc',
    test_input_size=(3, 288, 288), test_crop_pct=1.0,
    first_conv=('stem.stem1.conv', 'stem.stem.0.conv'))  # V2's stem, V1's (every tag names its own)

# V1: plain k=3 links everywhere, ESE aggregation; V2: light k=5 links in the last two stages, squeeze-excitation
# aggregation, and (b0-b3) learnable affine scalars after every activation
_V1 = dict(stem_type='v1', agg='ese', light_block=(False,) * 4, kernel_size=(3,) * 4, use_lab=False)
_V2 = dict(stem_type='v2', agg='se', light_block=(False, False, True, True), kernel_size=(3, 3, 5, 5), use_lab=False)
_V2_LAB = dict(_V2, use_lab=True)

VARIANTS: Dict[str, Dict[str, Any]] = {
    'hgnet_tiny': dict(_V1, stem_chs=(48, 48, 96), stage_mid_chs=(96, 128, 160, 192),
                       stage_out_chs=(224, 448, 512, 768), block_per_stage=(1, 1, 2, 1), layer_per_block=5),
    'hgnet_small': dict(_V1, stem_chs=(64, 64, 128), stage_mid_chs=(128, 160, 192, 224),
                        stage_out_chs=(256, 512, 768, 1024), block_per_stage=(1, 1, 2, 1), layer_per_block=6),
    'hgnet_base': dict(_V1, stem_chs=(96, 96, 160), stage_mid_chs=(192, 224, 256, 288),
                       stage_out_chs=(320, 640, 960, 1280), block_per_stage=(1, 2, 3, 2), layer_per_block=7),
    'hgnetv2_b0': dict(_V2_LAB, stem_chs=(16, 16), stage_mid_chs=(16, 32, 64, 128),
                       stage_out_chs=(64, 256, 512, 1024), block_per_stage=(1, 1, 2, 1), layer_per_block=3),
    'hgnetv2_b1': dict(_V2_LAB, stem_chs=(24, 32), stage_mid_chs=(32, 48, 96, 192),
                       stage_out_chs=(64, 256, 512, 1024), block_per_stage=(1, 1, 2, 1), layer_per_block=3),
    'hgnetv2_b2': dict(_V2_LAB, stem_chs=(24, 32), stage_mid_chs=(32, 64, 128, 256),
                       stage_out_chs=(96, 384, 768, 1536), block_per_stage=(1, 1, 3, 1), layer_per_block=4),
    'hgnetv2_b3': dict(_V2_LAB, stem_chs=(24, 32), stage_mid_chs=(32, 64, 128, 256),
                       stage_out_chs=(128, 512, 1024, 2048), block_per_stage=(1, 1, 3, 1), layer_per_block=5),
    'hgnetv2_b4': dict(_V2, stem_chs=(32, 48), stage_mid_chs=(48, 96, 192, 384),
                       stage_out_chs=(128, 512, 1024, 2048), block_per_stage=(1, 1, 3, 1), layer_per_block=6),
    'hgnetv2_b5': dict(_V2, stem_chs=(32, 64), stage_mid_chs=(64, 128, 256, 512),
                       stage_out_chs=(128, 512, 1024, 2048), block_per_stage=(1, 2, 5, 2), layer_per_block=6),
    'hgnetv2_b6': dict(_V2, stem_chs=(48, 96), stage_mid_chs=(96, 192, 384, 768),
                       stage_out_chs=(192, 512, 1024, 2048), block_per_stage=(2, 3, 6, 3), layer_per_block=6),
}


class LearnableAffineBlock(nn.Module):
    """``scale * x + bias`` with one learnable scalar each (PP-HGNetV2's "LAB" after an activation).

    >>> LearnableAffineBlock(2.0, 1.0)(torch.ones(1, 2, 1, 1)).flatten().tolist()
    [3.0, 3.0]
    """

    def __init__(self, scale_value: float = 1.0, bias_value: float = 0.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([scale_value]))
        self.bias = nn.Parameter(torch.tensor([bias_value]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x + self.bias


class ConvBnActLab(ConvNormAct):
    """:class:`ConvNormAct` (ReLU, or none) followed by ``lab``: a :class:`LearnableAffineBlock` when the conv is
    activated and ``use_lab``, else an identity (timm's keys: ``conv``, ``bn``, ``lab``).

    >>> sorted(ConvBnActLab(4, 8, 3, use_lab=True).state_dict())[-2:]
    ['lab.bias', 'lab.scale']
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                 groups: int = 1, use_act: bool = True, use_lab: bool = False) -> None:
        super().__init__(in_chs, out_chs, kernel_size, stride=stride, dilation=dilation, groups=groups,
                         apply_act=use_act)
        self.lab: nn.Module = LearnableAffineBlock() if use_act and use_lab else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lab(self.bn(self.conv(x)))


class LightConvBnAct(nn.Module):
    """A "light" link: 1x1 ``conv1`` without activation, then depthwise k x k ``conv2`` with it.

    >>> LightConvBnAct(8, 16, 5)(torch.ones(1, 8, 6, 6)).shape
    torch.Size([1, 16, 6, 6])
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, dilation: int = 1, use_lab: bool = False) -> None:
        super().__init__()
        self.conv1 = ConvBnActLab(in_chs, out_chs, 1, use_act=False, use_lab=use_lab)
        self.conv2 = ConvBnActLab(out_chs, out_chs, kernel_size, dilation=dilation, groups=out_chs, use_lab=use_lab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class SigmoidEseModule(nn.Module):
    """Effective squeeze-excitation with a sigmoid gate: one full-width 1x1 ``conv`` (with bias) on the mean of the
    map. (VoVNet's variant names its conv ``fc`` and gates with a hard sigmoid.)

    >>> SigmoidEseModule(8)(torch.ones(1, 8, 4, 4)).shape
    torch.Size([1, 8, 4, 4])
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(self.conv(x.mean((2, 3), keepdim=True)))


class StemV1(nn.Module):
    """PP-HGNet's stem: a chain of 3x3 convs (``stem``, the first at stride 2), then a 3x3 / 2 max-pool.

    >>> StemV1((3, 8, 8, 16))(torch.ones(1, 3, 32, 32)).shape
    torch.Size([1, 16, 8, 8])
    """

    def __init__(self, chs: Sequence[int]) -> None:
        super().__init__()
        self.stem = nn.Sequential(*[ConvBnActLab(chs[i], chs[i + 1], 3, stride=2 if i == 0 else 1)
                                    for i in range(len(chs) - 1)])
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stem(x))


class StemV2(nn.Module):
    """PP-HGNetV2's stem: a stride-2 3x3 conv, then a 2x2 max-pool beside two 2x2 convs (each input padded by one
    zero row and column at the bottom/right, so both paths keep the size), concatenated; a stride-2 3x3 conv and a
    1x1 conv finish it.

    >>> StemV2(3, 8, 16)(torch.ones(1, 3, 32, 32)).shape
    torch.Size([1, 16, 8, 8])
    """

    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, use_lab: bool = False) -> None:
        super().__init__()
        self.stem1 = ConvBnActLab(in_chs, mid_chs, 3, stride=2, use_lab=use_lab)
        self.stem2a = ConvBnActLab(mid_chs, mid_chs // 2, 2, use_lab=use_lab)
        self.stem2b = ConvBnActLab(mid_chs // 2, mid_chs, 2, use_lab=use_lab)
        self.stem3 = ConvBnActLab(mid_chs * 2, mid_chs, 3, stride=2, use_lab=use_lab)
        self.stem4 = ConvBnActLab(mid_chs, out_chs, 1, use_lab=use_lab)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=1, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(self.stem1(x), (0, 1, 0, 1))
        convs = self.stem2b(F.pad(self.stem2a(x), (0, 1, 0, 1)))
        x = torch.cat([self.pool(x), convs], dim=1)
        return self.stem4(self.stem3(x))


class HighPerfGpuBlock(nn.Module):
    """``layer_num`` chained links (``layers``), the input and all their outputs concatenated and aggregated
    (``aggregation``: 1x1 conv + sigmoid ESE for 'ese'; squeeze to ``out_chs // 2`` and excite back for 'se'); with
    ``residual``, drop-path and the input added.

    >>> HighPerfGpuBlock(16, 8, 32, layer_num=3, agg='se')(torch.ones(1, 16, 6, 6)).shape
    torch.Size([1, 32, 6, 6])
    """

    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, layer_num: int, kernel_size: int = 3,
                 dilation: int = 1, residual: bool = False, light_block: bool = False, use_lab: bool = False,
                 agg: str = 'ese', drop_path_rate: float = 0.) -> None:
        super().__init__()
        self.residual = residual
        links = []
        for i in range(layer_num):
            link_in = in_chs if i == 0 else mid_chs
            if light_block:
                links.append(LightConvBnAct(link_in, mid_chs, kernel_size, dilation=dilation, use_lab=use_lab))
            else:
                links.append(ConvBnActLab(link_in, mid_chs, kernel_size, dilation=dilation, use_lab=use_lab))
        # a list, not a Sequential: every link's output is kept for the concatenation
        self.layers = nn.ModuleList(links)
        total_chs = in_chs + layer_num * mid_chs
        if agg == 'se':
            self.aggregation = nn.Sequential(
                ConvBnActLab(total_chs, out_chs // 2, 1, use_lab=use_lab),
                ConvBnActLab(out_chs // 2, out_chs, 1, use_lab=use_lab))
        else:
            self.aggregation = nn.Sequential(
                ConvBnActLab(total_chs, out_chs, 1, use_lab=use_lab),
                SigmoidEseModule(out_chs))
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [x]
        y = x
        for link in self.layers:
            y = link(y)
            outputs.append(y)
        y = self.aggregation(torch.cat(outputs, dim=1))
        if self.residual:
            y = self.drop_path(y) + x
        return y


class HighPerfGpuStage(nn.Module):
    """An optional depthwise 3x3 ``downsample`` conv (no activation), then ``blocks``: the first block changes the
    width and has no residual, the others do.

    >>> HighPerfGpuStage(16, 8, 32, 2, 3)(torch.ones(1, 16, 8, 8)).shape
    torch.Size([1, 32, 4, 4])
    """

    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, block_num: int, layer_num: int,
                 downsample: bool = True, stride: int = 2, first_dilation: int = 1, dilation: int = 1,
                 light_block: bool = False, kernel_size: int = 3, use_lab: bool = False, agg: str = 'ese',
                 drop_path_rates: Optional[Sequence[float]] = None) -> None:
        super().__init__()
        self.grad_checkpointing = False
        if downsample:
            self.downsample: nn.Module = ConvBnActLab(in_chs, in_chs, 3, stride=stride, dilation=first_dilation,
                                                      groups=in_chs, use_act=False, use_lab=use_lab)
        else:
            self.downsample = nn.Identity()
        rates = list(drop_path_rates) if drop_path_rates is not None else [0.] * block_num
        self.blocks = nn.Sequential(*[
            HighPerfGpuBlock(in_chs if i == 0 else out_chs, mid_chs, out_chs, layer_num, kernel_size=kernel_size,
                             dilation=dilation, residual=i > 0, light_block=light_block, use_lab=use_lab, agg=agg,
                             drop_path_rate=rates[i])
            for i in range(block_num)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_sequence(self.blocks, self.downsample(x), self.grad_checkpointing and torch.is_grad_enabled())


class HgnetHead(nn.Module):
    """Global pooling, then (with ``hidden_size``) a bias-free 1x1 conv to ``hidden_size`` with ReLU (and ``lab``)
    named ``last_conv``, dropout, flatten and the classifier ``fc``. Poolings that change the width are refused.

    >>> HgnetHead(16, 10, hidden_size=32)(torch.ones(2, 16, 3, 3)).shape
    torch.Size([2, 10])
    """

    def __init__(self, in_features: int, num_classes: int, pool_type: str = 'avg', drop_rate: float = 0.,
                 hidden_size: Optional[int] = 2048, use_lab: bool = False) -> None:
        super().__init__()
        self.in_features = in_features
        self.num_features = in_features
        self.global_pool, self.flatten = self._pool(num_classes, pool_type)
        if hidden_size is not None:
            self.num_features = hidden_size
            layers = [nn.Conv2d(in_features, hidden_size, 1, bias=False), nn.ReLU()]
            if use_lab:
                layers.append(LearnableAffineBlock())
            self.last_conv: nn.Module = nn.Sequential(*layers)
        else:
            self.last_conv = nn.Identity()
        self.dropout = nn.Dropout(drop_rate)
        self.fc: nn.Module = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    @staticmethod
    def _pool(num_classes: int, pool_type: str) -> Tuple[nn.Module, nn.Module]:
        pool = SelectAdaptivePool2d(pool_type)
        if pool.feat_mult() != 1:
            raise ValueError(f'global_pool={pool_type!r} changes the pooled width, which the HGNet head (a 1x1 conv '
                             f"sized for the map's channels) cannot take; use 'avg', 'max', 'avgmax' or ''")
        if not pool_type and num_classes > 0:
            raise ValueError(f"global_pool='' leaves an unpooled map that a classifier cannot take: it needs "
                             f'num_classes=0, got num_classes={num_classes}')
        return pool, nn.Flatten(1) if pool_type else nn.Identity()

    def reset(self, num_classes: int, pool_type: Optional[str] = None, reset_other: bool = False,
              in_features: Optional[int] = None) -> None:
        """A new classifier (and pooling); ``reset_other`` drops ``last_conv``; ``in_features`` gives the new input
        width of a head without ``last_conv``. Nothing changes when an argument is refused."""
        if pool_type is None:
            pool = None
            if not self.global_pool.pool_type and num_classes > 0:
                raise ValueError(f"the model has no global pooling (global_pool=''): a classifier needs one; pass "
                                 f"global_pool='avg' with num_classes={num_classes}")
        else:
            pool = self._pool(num_classes, pool_type)
        keeps_last_conv = not reset_other and not isinstance(self.last_conv, nn.Identity)
        if in_features is not None and in_features != self.in_features and keeps_last_conv:
            raise ValueError(f'the head convolution takes {self.in_features} channels, not {in_features}: '
                             f'reset it too (reset_other=True)')
        ref = next(self.parameters(), None)
        if pool is not None:
            self.global_pool, self.flatten = pool
        if reset_other:
            self.last_conv = nn.Identity()
            self.num_features = self.in_features
        if in_features is not None and in_features != self.in_features:
            self.in_features = self.num_features = in_features
        fc: nn.Module = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if ref is not None:
            fc = fc.to(device=ref.device, dtype=ref.dtype)
        self.fc = fc
        for module in (self.global_pool, self.flatten, self.fc):
            module.train(self.training)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.flatten(self.dropout(self.last_conv(self.global_pool(x))))
        return x if pre_logits else self.fc(x)


class HighPerfGpuNet(StagedFeatures, HeadApi, nn.Module):
    """PP-HGNet / PP-HGNetV2: ``stem`` (stride 4), four ``stages`` and ``head``. ``head_hidden_size`` None or 0
    leaves out the head's 1x1 conv.

    >>> m = HighPerfGpuNet(stem_chs=(8, 8), stage_mid_chs=(8, 8, 8, 8), stage_out_chs=(16, 16, 32, 32),
    ...                    block_per_stage=(1, 1, 2, 1), layer_per_block=2, stem_type='v2', agg='se',
    ...                    head_hidden_size=64, num_classes=10)
    >>> m(torch.ones(1, 3, 64, 64)).shape
    torch.Size([1, 10])
    """

    checkpoint_stages = 'stages'  # HeadApi.set_grad_checkpointing flags each stage
    # a cut model keeps an average pool, as timm's, and loses the head's 1x1 conv with the classifier
    pruned_head_args = dict(global_pool='avg', reset_other=True)

    def __init__(self, stem_chs: Sequence[int] = (48, 48, 96), stage_mid_chs: Sequence[int] = (96, 128, 160, 192),
                 stage_out_chs: Sequence[int] = (224, 448, 512, 768), block_per_stage: Sequence[int] = (1, 1, 2, 1),
                 layer_per_block: int = 5, stem_type: str = 'v1', agg: str = 'ese',
                 light_block: Sequence[bool] = (False,) * 4, kernel_size: Sequence[int] = (3,) * 4,
                 use_lab: bool = False, head_hidden_size: Optional[int] = 2048, in_chans: int = 3,
                 num_classes: int = 1000, global_pool: str = 'avg', output_stride: int = 32, drop_rate: float = 0.,
                 drop_path_rate: float = 0.) -> None:
        super().__init__()
        stem_type = check_choice('stem_type', stem_type, STEM_TYPES)
        agg = check_choice('agg', agg, AGG_TYPES)
        stem_chs = check_int_tuple('stem_chs', stem_chs, 2 if stem_type == 'v2' else None)
        num_stages = len(check_int_tuple('stage_mid_chs', stage_mid_chs))
        stage_mid_chs = tuple(stage_mid_chs)
        stage_out_chs = check_int_tuple('stage_out_chs', stage_out_chs, num_stages)
        block_per_stage = check_int_tuple('block_per_stage', block_per_stage, num_stages)
        kernel_size = check_int_tuple('kernel_size', kernel_size, num_stages)
        layer_per_block = check_int('layer_per_block', layer_per_block, 1)
        if isinstance(light_block, (str, bytes)) or not isinstance(light_block, Sequence) \
                or len(light_block) != num_stages:
            raise ValueError(f'light_block must be {num_stages} booleans (one per stage), got {light_block!r}')
        light_block = tuple(check_bool('each light_block entry', v) for v in light_block)
        use_lab = check_bool('use_lab', use_lab)
        # 0 as well as None: the shared build reads a None argument as "the default" (2048)
        if head_hidden_size is not None:
            head_hidden_size = check_int('head_hidden_size', head_hidden_size, 0) or None
        in_chans = check_int('in_chans', in_chans, 1)
        num_classes = check_int('num_classes', num_classes, 0)
        output_stride = check_choice('output_stride', output_stride, OUTPUT_STRIDES)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.use_lab = use_lab

        if stem_type == 'v2':
            self.stem: nn.Module = StemV2(in_chans, stem_chs[0], stem_chs[1], use_lab=use_lab)
        else:
            self.stem = StemV1((in_chans,) + stem_chs)

        stride, dilation = 4, 1
        rates = drop_path_rates(drop_path_rate or 0., block_per_stage)
        in_chs = stem_chs[-1]
        stages = []
        self.feature_info: List[Dict[str, Any]] = []
        for i in range(num_stages):
            downsample = i > 0
            conv_stride, first_dilation = 1, dilation
            if downsample:
                conv_stride, stride, dilation = stride_or_dilate(stride, dilation, output_stride)
            stages.append(HighPerfGpuStage(
                in_chs, stage_mid_chs[i], stage_out_chs[i], block_per_stage[i], layer_per_block,
                downsample=downsample, stride=conv_stride, first_dilation=first_dilation, dilation=dilation,
                light_block=light_block[i], kernel_size=kernel_size[i], use_lab=use_lab, agg=agg,
                drop_path_rates=rates[i]))
            in_chs = stage_out_chs[i]
            self.feature_info.append(dict(num_chs=in_chs, reduction=stride, module=f'stages.{i}'))
        self.stages = nn.Sequential(*stages)
        self.num_features = in_chs

        self.head = HgnetHead(in_chs, num_classes, pool_type=global_pool, drop_rate=drop_rate,
                              hidden_size=head_hidden_size, use_lab=use_lab)
        self.head_hidden_size = self.head.num_features
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Regex rules grouping parameter names into the stem and blocks (a stage's downsample conv joins its first
        block), as timm's.

        >>> SPEC.build('hgnetv2_b0').group_matcher(coarse=True)['blocks']
        '^stages\\\\.(\\\\d+)'
        """
        return stage_group_matcher(coarse)

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None, reset_other: bool = False
                         ) -> None:
        """Replace the classifier (``num_classes=0`` removes it) and optionally the pooling; ``reset_other`` also
        removes the head's 1x1 conv, so that pre-logits are the pooled ``num_features``.

        >>> m = SPEC.build('hgnetv2_b0'); m.reset_classifier(0); m(torch.ones(1, 3, 64, 64)).shape
        torch.Size([1, 2048])
        >>> m.reset_classifier(0, reset_other=True); m(torch.ones(1, 3, 64, 64)).shape
        torch.Size([1, 1024])
        """
        num_classes = check_int('num_classes', num_classes, 0)
        self.head.reset(num_classes, global_pool, reset_other=reset_other, in_features=self.num_features)
        self.num_classes = num_classes
        self.head_hidden_size = self.head.num_features


SPEC = FamilySpec(
    name='hgnet', model=HighPerfGpuNet, variants=VARIANTS, default_cfg=DEFAULT_CFG,
    feature_cls=('list', 'dict', 'hook', 'fx', 'getter'), default_feature_cls='list', output_strides=OUTPUT_STRIDES,
    export=('torch.export', 'dynamic_hw', 'onnx', 'compile'), size_args=('stage_mid_chs',))
