"""VoVNet v1/v2 (Lee et al., 'An Energy and GPU-Computation Efficient Backbone Network' and 'CenterMask'), with
timm's parameter names.

A one-shot-aggregation (OSA) block runs a chain of 3x3 convolutions and concatenates the input with every link's
output once, at the end, before a 1x1 projection; v2 ('ese_*') adds a residual and effective squeeze-excitation.
For ``output_stride`` 16 or 8 the later stages' max-pools keep stride 1 and their convolutions are dilated, so
sampling the dilated maps every ``32 / output_stride`` pixels gives the stride-32 maps wherever no global
operation (the ESE gate averages the whole map) is involved.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import torch
from torch import nn

from ..checks import check_choice, check_int, check_int_tuple
from ..family import FamilySpec
from ..layers import BatchNormAct2d, ClassifierHead, ConvNormAct, DropPath, EcaModule, create_act_layer
from ..layers.drop import drop_path_rates
from ..layers.dense_pool import DensePool2d
from ..layers.head_api import HeadApi, reset_classifier_head
from ..layers.output_stride import stride_or_dilate
from ..layers.stage_intermediates import StagedFeatures, run_sequence, tap_positions
from ..layers.norm_act import EvoNorm2dS0
from ..layers.weight_init import kaiming_convs_

__all__ = ['VovNet', 'OsaBlock', 'OsaStage', 'SeparableConvNormAct', 'EffectiveSEModule', 'SPEC', 'VARIANTS']

OUTPUT_STRIDES = (8, 16, 32)
DEFAULT_CFG = dict(
    input_size=(3, 224, 224), pool_size=(7, 7), interpolation='bicubic', crop_pct=0.875, crop_mode='center',
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), first_conv='stem.0.conv', classifier='head.fc')

_V1 = dict(stem_chs=(64, 64, 128), stage_conv_chs=(128, 160, 192, 224), stage_out_chs=(256, 512, 768, 1024),
           layer_per_block=5, residual=False, depthwise=False, attn='')
_V2 = dict(_V1, residual=True, attn='ese')
_V2_19 = dict(_V2, layer_per_block=3, block_per_stage=(1, 1, 1, 1))
_SLIM = dict(stage_conv_chs=(64, 80, 96, 112), stage_out_chs=(112, 256, 384, 512))

VARIANTS: Dict[str, Dict[str, Any]] = {
    'vovnet39a': dict(_V1, block_per_stage=(1, 1, 2, 2)),
    'vovnet57a': dict(_V1, block_per_stage=(1, 1, 4, 3)),
    'ese_vovnet19b_slim_dw': dict(_V2_19, **_SLIM, stem_chs=(64, 64, 64), depthwise=True),
    'ese_vovnet19b_dw': dict(_V2_19, stem_chs=(64, 64, 64), depthwise=True),
    'ese_vovnet19b_slim': dict(_V2_19, **_SLIM),
    'ese_vovnet39b': dict(_V2, block_per_stage=(1, 1, 2, 2)),
    'ese_vovnet57b': dict(_V2, block_per_stage=(1, 1, 4, 3)),
    'ese_vovnet99b': dict(_V2, block_per_stage=(1, 3, 9, 3)),
    'eca_vovnet39b': dict(_V2, block_per_stage=(1, 1, 2, 2), attn='eca'),
    'ese_vovnet39b_evos': dict(_V2, block_per_stage=(1, 1, 2, 2), norm_layer='evonorms0'),
}

ATTN_TYPES = ('', 'ese', 'eca')
NORM_LAYERS = ('batchnorm', 'evonorms0')


def norm_act(norm_layer: str, channels: int, act_layer: str) -> nn.Module:
    """The norm + activation after each conv: batch norm with ``act_layer``, or EvoNorm-S0 (its own non-linearity,
    32 groups; the 'evos' variant).

    >>> norm_act('evonorms0', 64, 'relu').__class__.__name__
    'EvoNorm2dS0'
    """
    if norm_layer == 'evonorms0':
        return EvoNorm2dS0(channels)
    return BatchNormAct2d(channels, act_layer=act_layer)


def conv_norm_act(in_chs: int, out_chs: int, kernel_size: int, norm_layer: str = 'batchnorm', **kwargs: Any
                  ) -> ConvNormAct:
    """A :class:`ConvNormAct` whose ``bn`` is ``norm_layer``'s (same children, so the same state_dict keys)."""
    layer = ConvNormAct(in_chs, out_chs, kernel_size, **kwargs)
    if norm_layer != 'batchnorm':
        layer.bn = norm_act(norm_layer, out_chs, kwargs.get('act_layer', 'relu'))
    return layer
STEM_STRIDES = (2, 4)


class SeparableConvNormAct(nn.Module):
    """Depthwise ``conv_dw`` (k x k), pointwise ``conv_pw`` (1x1), then ``bn`` with activation.

    >>> SeparableConvNormAct(16, 32, stride=2)(torch.ones(1, 16, 8, 8)).shape
    torch.Size([1, 32, 4, 4])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 dilation: int = 1, act_layer: str = 'relu', norm_layer: str = 'batchnorm') -> None:
        super().__init__()
        padding = ((stride - 1) + dilation * (kernel_size - 1)) // 2
        self.conv_dw = nn.Conv2d(in_channels, in_channels, kernel_size, stride=stride, padding=padding,
                                 dilation=dilation, groups=in_channels, bias=False)
        self.conv_pw = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = norm_act(norm_layer, out_channels, act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv_pw(self.conv_dw(x)))


class EffectiveSEModule(nn.Module):
    """'Effective' squeeze-excitation (CenterMask): one full-width 1x1 conv ``fc`` on the pooled map, hard-sigmoid gate.

    >>> EffectiveSEModule(8)(torch.ones(1, 8, 4, 4)).shape
    torch.Size([1, 8, 4, 4])
    """

    def __init__(self, channels: int, gate_layer: str = 'hard_sigmoid') -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, kernel_size=1)
        self.gate = create_act_layer(gate_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc(x.mean((2, 3), keepdim=True)))


class OsaBlock(nn.Module):
    """One-shot aggregation: ``layer_per_block`` chained 3x3 convs (``conv_mid``), the input and all their outputs
    concatenated once and projected by ``conv_concat``; then optional attention, drop-path and residual.

    >>> OsaBlock(64, 32, 128, layer_per_block=3)(torch.ones(1, 64, 8, 8)).shape
    torch.Size([1, 128, 8, 8])
    """

    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, layer_per_block: int, residual: bool = False,
                 depthwise: bool = False, attn: str = '', act_layer: str = 'relu', dilation: int = 1,
                 drop_path_rate: float = 0., norm_layer: str = 'batchnorm') -> None:
        super().__init__()
        self.residual = residual
        if depthwise and in_chs != mid_chs:
            self.conv_reduction: nn.Module = conv_norm_act(in_chs, mid_chs, 1, norm_layer, act_layer=act_layer)
        else:
            self.conv_reduction = nn.Identity()
        convs = []
        next_in = mid_chs if depthwise else in_chs
        for _ in range(layer_per_block):
            if depthwise:
                convs.append(SeparableConvNormAct(mid_chs, mid_chs, 3, dilation=dilation, act_layer=act_layer,
                                                  norm_layer=norm_layer))
            else:
                convs.append(conv_norm_act(next_in, mid_chs, 3, norm_layer, dilation=dilation, act_layer=act_layer))
            next_in = mid_chs
        # a list, not a Sequential: the block concatenates every link's output, it does not just chain them
        self.conv_mid = nn.ModuleList(convs)
        self.conv_concat = conv_norm_act(in_chs + layer_per_block * mid_chs, out_chs, 1, norm_layer,
                                         act_layer=act_layer)
        if attn == 'ese':
            self.attn: nn.Module = EffectiveSEModule(out_chs)
        elif attn == 'eca':
            self.attn = EcaModule(out_chs)
        else:
            self.attn = nn.Identity()
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0. else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [x]
        y = self.conv_reduction(x)
        for conv in self.conv_mid:
            y = conv(y)
            outputs.append(y)
        y = self.conv_concat(torch.cat(outputs, dim=1))
        y = self.drop_path(self.attn(y))
        if self.residual:
            y = y + x
        return y


class OsaStage(nn.Module):
    """An optional downsampling max-pool (``pool``) then OSA ``blocks``; attention only in the last block and the
    residual from the second block on, as in timm.

    >>> OsaStage(64, 32, 128, 2, 3)(torch.ones(1, 64, 8, 8)).shape
    torch.Size([1, 128, 4, 4])
    """

    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, block_per_stage: int, layer_per_block: int,
                 downsample: bool = True, residual: bool = True, depthwise: bool = False, attn: str = 'ese',
                 act_layer: str = 'relu', stride: int = 2, pool_dilation: int = 1, dilation: int = 1,
                 drop_path_rates: Optional[Sequence[float]] = None, norm_layer: str = 'batchnorm') -> None:
        super().__init__()
        self.grad_checkpointing = False
        if not downsample:
            self.pool: nn.Module = nn.Identity()
        elif stride == 2:
            self.pool = nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)
        else:
            self.pool = DensePool2d('max', 3, pool_dilation)
        rates = list(drop_path_rates) if drop_path_rates is not None else [0.] * block_per_stage
        blocks = []
        for i in range(block_per_stage):
            blocks.append(OsaBlock(
                in_chs if i == 0 else out_chs, mid_chs, out_chs, layer_per_block, residual=residual and i > 0,
                depthwise=depthwise, attn=attn if i == block_per_stage - 1 else '', act_layer=act_layer,
                dilation=dilation, drop_path_rate=rates[i], norm_layer=norm_layer))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_sequence(self.blocks, self.pool(x), self.grad_checkpointing and torch.is_grad_enabled())


class VovNet(StagedFeatures, HeadApi, nn.Module):
    """VoVNet: a three-conv stem (``stem``), OSA stages (``stages``) and a classifier head (``head``).

    >>> m = VovNet(stem_chs=(16, 16, 32), stage_conv_chs=(16, 16, 16, 16), stage_out_chs=(32, 32, 32, 64),
    ...            block_per_stage=(1, 1, 1, 1), layer_per_block=2, num_classes=10)
    >>> m(torch.ones(1, 3, 64, 64)).shape
    torch.Size([1, 10])
    """

    checkpoint_stages = 'stages'

    def __init__(self, stem_chs: Sequence[int] = (64, 64, 128), stage_conv_chs: Sequence[int] = (128, 160, 192, 224),
                 stage_out_chs: Sequence[int] = (256, 512, 768, 1024), block_per_stage: Sequence[int] = (1, 1, 2, 2),
                 layer_per_block: int = 5, residual: bool = True, depthwise: bool = False, attn: str = 'ese',
                 stem_stride: int = 4, in_chans: int = 3, num_classes: int = 1000, global_pool: str = 'avg',
                 output_stride: int = 32, act_layer: str = 'relu', norm_layer: str = 'batchnorm', drop_rate: float = 0.,
                 drop_path_rate: Optional[float] = 0.) -> None:
        super().__init__()
        stem_chs = check_int_tuple('stem_chs', stem_chs, 3)
        stage_conv_chs = check_int_tuple('stage_conv_chs', stage_conv_chs)
        num_stages = len(stage_conv_chs)
        stage_out_chs = check_int_tuple('stage_out_chs', stage_out_chs, num_stages)
        block_per_stage = check_int_tuple('block_per_stage', block_per_stage, num_stages)
        layer_per_block = check_int('layer_per_block', layer_per_block, 1)
        in_chans = check_int('in_chans', in_chans, 1)
        num_classes = check_int('num_classes', num_classes, 0)
        check_choice('norm_layer', norm_layer, NORM_LAYERS)
        check_choice('attn', attn, ATTN_TYPES)
        check_choice('stem_stride', stem_stride, STEM_STRIDES)
        check_choice('output_stride', output_stride, OUTPUT_STRIDES)
        drop_path_rate = drop_path_rate or 0.
        global_pool = 'avg' if global_pool is None else global_pool
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate

        norm_args = dict(act_layer=act_layer, norm_layer=norm_layer)
        conv_type = SeparableConvNormAct if depthwise else conv_norm_act
        self.stem = nn.Sequential(
            conv_norm_act(in_chans, stem_chs[0], 3, stride=2, **norm_args),
            conv_type(stem_chs[0], stem_chs[1], 3, stride=1, **norm_args),
            conv_type(stem_chs[1], stem_chs[2], 3, stride=stem_stride // 2, **norm_args),
        )
        self.feature_info = [dict(num_chs=stem_chs[1] if stem_stride == 4 else stem_chs[2], reduction=2,
                                  module='stem.1' if stem_stride == 4 else 'stem.2')]
        self.stem_taps = tap_positions(self.stem, self.feature_info)

        stride, dilation = stem_stride, 1
        rates = drop_path_rates(drop_path_rate, block_per_stage)
        in_chs = stem_chs[-1]
        stages = []
        for i in range(num_stages):
            # with a stride-4 stem the first stage works at the stem's resolution
            downsample = stem_stride == 2 or i > 0
            pool_stride, pool_dilation = 1, dilation
            if downsample:
                pool_stride, stride, dilation = stride_or_dilate(stride, dilation, output_stride)
            stages.append(OsaStage(
                in_chs, stage_conv_chs[i], stage_out_chs[i], block_per_stage[i], layer_per_block,
                downsample=downsample, residual=residual, depthwise=depthwise, attn=attn, act_layer=act_layer,
                stride=pool_stride, pool_dilation=pool_dilation, dilation=dilation, drop_path_rates=rates[i],
                norm_layer=norm_layer))
            in_chs = stage_out_chs[i]
            self.feature_info.append(dict(num_chs=in_chs, reduction=stride, module=f'stages.{i}'))
        self.stages = nn.Sequential(*stages)
        self.num_features = in_chs

        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self.head_hidden_size = self.num_features * self.head.global_pool.feat_mult()
        kaiming_convs_(self)
        if isinstance(self.head.fc, nn.Linear):  # the head's classifier is the only linear layer
            nn.init.zeros_(self.head.fc.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Regex rules that group parameter names into stem and blocks (for layer-wise learning-rate decay).

        >>> SPEC.build('ese_vovnet19b_dw').group_matcher()['stem']
        '^stem'
        """
        return dict(stem=r'^stem', blocks=r'^stages\.(\d+)' if coarse else r'^stages\.(\d+)\.blocks\.(\d+)')

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier (``num_classes=0`` removes it); ``global_pool=''`` also removes the pooling.

        >>> m = SPEC.build('ese_vovnet19b_dw'); m.reset_classifier(0); m(torch.ones(1, 3, 64, 64)).shape
        torch.Size([1, 1024])
        """
        reset_classifier_head(self, check_int('num_classes', num_classes, 0), global_pool)


SPEC = FamilySpec(
    name='vovnet', model=VovNet, variants=VARIANTS, default_cfg=DEFAULT_CFG,
    feature_cls=('list', 'dict', 'hook', 'fx', 'getter'), default_feature_cls='list', output_strides=OUTPUT_STRIDES,
    export=('torch.export', 'dynamic_hw', 'onnx', 'compile'))
