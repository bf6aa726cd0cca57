"""MobileNetV3 and the networks timm builds with the same class: MobileNetV3 (large, small, minimal, the first
'rw' port), FBNetV3, PP-LCNet and MobileNetV4 (conv, anti-aliased, hybrid with mobile multi-query attention).

All share MobileNetV3's 'efficient head': it pools first, then runs a 1x1 convolution and an activation before the
classifier (MobileNetV4 normalizes after that convolution instead of adding a bias), so ``forward_features`` returns
the last stage's map and ``head_hidden_size`` (the pre-logits width) differs from ``num_features``. Stage strings
use the notation of :mod:`featzoo.layers.efficientnet_blocks`, and MobileNetV4's that of
:mod:`featzoo.layers.mobilenetv4_blocks`. Every architecture dilates to output stride 16 or 8 as timm's feature
model does (MobileNetV4's anti-aliasing pools go with the strides they replace; attention stays global).

Parameter names equal timm's ``MobileNetV3`` so its checkpoints load unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Dict, Optional, Sequence

import torch
from torch import nn

from ..family import FamilySpec
from ..layers.activations import ActLayer, create_act_layer
from ..layers.efficientnet_blocks import (
    EfficientTrunk, SEConfig, SqueezeExcite, check_model_args, check_pool, init_weights_goog, round_channels)
from ..layers.helpers import make_divisible
from ..layers.mobilenetv4_blocks import MultiQueryAttention2d, build_mnv4_stages, check_aa_layer, decode_mnv4_arch
from ..layers.norm import BatchNormAct2d
from ..layers.padding import create_conv2d
from ..layers.pooling import SelectAdaptivePool2d

OUTPUT_STRIDES = (8, 16, 32)
DEFAULT_CFG = dict(
    input_size=(3, 224, 224), interpolation='bicubic', crop_pct=0.875, crop_mode='center',
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), first_conv='conv_stem', classifier='classifier')

@dataclass(frozen=True)
class FBNetSEConfig(SEConfig):
    """FBNetV3's squeeze-excite: its reduced width rounds up to the next multiple of 8 unless rounding to the
    nearest keeps 95 % of it (the shared rule keeps 90 %)."""

    round_limit: float = 0.95

    def build(self, channels: int, se_ratio: float, exp_ratio: float, act_layer: ActLayer,
              rd_channels: Optional[int] = None) -> SqueezeExcite:
        if rd_channels is None:
            rd_channels = make_divisible(channels * se_ratio / exp_ratio, 8, round_limit=self.round_limit)
        return SqueezeExcite(channels, rd_channels, act_layer=act_layer, gate_layer=self.gate_layer)


# How each architecture sizes and gates its squeeze-excite (the reduced width is rounded as the reference does).
SE_STYLES: Dict[str, SEConfig] = {
    # MobileNetV3: ratio of the expanded width, rounded to a multiple of 8, ReLU inside, hard-sigmoid gate
    'mnv3': SEConfig(from_expanded=True, round_divisible=True, gate_layer='hard_sigmoid', force_act='relu'),
    # mobilenetv3_rw: the block's own activation inside and a width rounded to the nearest integer
    'rw': SEConfig(from_expanded=True, gate_layer='hard_sigmoid'),
    # LCNet: nearest-integer width, ReLU inside
    'lcnet': SEConfig(from_expanded=True, gate_layer='hard_sigmoid', force_act='relu'),
    # FBNetV3: ratio of the block input (divided by the expansion), multiple of 8, the block's activation inside
    'fbnet': FBNetSEConfig(from_expanded=False, round_divisible=True, gate_layer='hard_sigmoid'),
}

_MNV3_LARGE = (
    ('ds_r1_k3_s1_e1_c16_nre',), ('ir_r1_k3_s2_e4_c24_nre', 'ir_r1_k3_s1_e3_c24_nre'),
    ('ir_r3_k5_s2_e3_c40_se0.25_nre',), ('ir_r1_k3_s2_e6_c80', 'ir_r1_k3_s1_e2.5_c80', 'ir_r2_k3_s1_e2.3_c80'),
    ('ir_r2_k3_s1_e6_c112_se0.25',), ('ir_r3_k5_s2_e6_c160_se0.25',), ('cn_r1_k1_s1_c960',))
_MNV3_SMALL = (
    ('ds_r1_k3_s2_e1_c16_se0.25_nre',), ('ir_r1_k3_s2_e4.5_c24_nre', 'ir_r1_k3_s1_e3.67_c24_nre'),
    ('ir_r1_k5_s2_e4_c40_se0.25', 'ir_r2_k5_s1_e6_c40_se0.25'), ('ir_r2_k5_s1_e3_c48_se0.25',),
    ('ir_r3_k5_s2_e6_c96_se0.25',), ('cn_r1_k1_s1_c576',))
_MNV4_HEAD = dict(head_hidden=1280, head_bias=False, head_norm=True, fix_stem_below=1.0)

# Default constructor arguments per architecture; a variant row overrides them, user arguments override the row.
# ``fix_stem_below``: the channel multiplier below which the stem keeps its unscaled width (when fix_stem is None).
ARCHS: Dict[str, dict] = {
    'large': dict(block_defs=_MNV3_LARGE, head_hidden=1280),
    'small': dict(block_defs=_MNV3_SMALL, head_hidden=1024),
    # the 'minimal' variants: ReLU throughout, 3x3 depthwise kernels, no squeeze-excite
    'large_minimal': dict(
        block_defs=(
            ('ds_r1_k3_s1_e1_c16',), ('ir_r1_k3_s2_e4_c24', 'ir_r1_k3_s1_e3_c24'), ('ir_r3_k3_s2_e3_c40',),
            ('ir_r1_k3_s2_e6_c80', 'ir_r1_k3_s1_e2.5_c80', 'ir_r2_k3_s1_e2.3_c80'), ('ir_r2_k3_s1_e6_c112',),
            ('ir_r3_k3_s2_e6_c160',), ('cn_r1_k1_s1_c960',)),
        head_hidden=1280, act_layer='relu'),
    'small_minimal': dict(
        block_defs=(
            ('ds_r1_k3_s2_e1_c16',), ('ir_r1_k3_s2_e4.5_c24', 'ir_r1_k3_s1_e3.67_c24'),
            ('ir_r1_k3_s2_e4_c40', 'ir_r2_k3_s1_e6_c40'), ('ir_r2_k3_s1_e3_c48',), ('ir_r3_k3_s2_e6_c96',),
            ('cn_r1_k1_s1_c576',)),
        head_hidden=1024, act_layer='relu'),
    # the first port: no skip on the first block, no head bias, a squeeze-excite of its own
    'rw': dict(block_defs=(('ds_r1_k3_s1_e1_c16_nre_noskip',),) + _MNV3_LARGE[1:], head_hidden=1280,
               head_bias=False, se_style='rw', fix_stem_below=0.0),
    'fbnetv3_b': dict(
        block_defs=(
            ('ds_r2_k3_s1_e1_c16',), ('ir_r1_k5_s2_e4_c24', 'ir_r3_k5_s1_e2_c24'),
            ('ir_r1_k5_s2_e5_c40_se0.25', 'ir_r4_k5_s1_e3_c40_se0.25'), ('ir_r1_k5_s2_e5_c72', 'ir_r4_k3_s1_e3_c72'),
            ('ir_r1_k3_s1_e5_c120_se0.25', 'ir_r5_k5_s1_e3_c120_se0.25'),
            ('ir_r1_k3_s2_e6_c184_se0.25', 'ir_r5_k5_s1_e4_c184_se0.25', 'ir_r1_k5_s1_e6_c224_se0.25'),
            ('cn_r1_k1_s1_c1344',)),
        stem_size=16, head_hidden=1984, head_bias=False, se_style='fbnet', fix_stem_below=0.0),
    'fbnetv3_d': dict(
        block_defs=(
            ('ds_r2_k3_s1_e1_c16',), ('ir_r1_k3_s2_e5_c24', 'ir_r5_k3_s1_e2_c24'),
            ('ir_r1_k5_s2_e4_c40_se0.25', 'ir_r4_k3_s1_e3_c40_se0.25'), ('ir_r1_k3_s2_e5_c72', 'ir_r4_k3_s1_e3_c72'),
            ('ir_r1_k3_s1_e5_c128_se0.25', 'ir_r6_k5_s1_e3_c128_se0.25'),
            ('ir_r1_k3_s2_e6_c208_se0.25', 'ir_r5_k5_s1_e5_c208_se0.25', 'ir_r1_k5_s1_e6_c240_se0.25'),
            ('cn_r1_k1_s1_c1440',)),
        stem_size=24, head_hidden=1984, head_bias=False, se_style='fbnet', fix_stem_below=0.0),
    'fbnetv3_g': dict(
        block_defs=(
            ('ds_r3_k3_s1_e1_c24',), ('ir_r1_k5_s2_e4_c40', 'ir_r4_k5_s1_e2_c40'),
            ('ir_r1_k5_s2_e4_c56_se0.25', 'ir_r4_k5_s1_e3_c56_se0.25'), ('ir_r1_k5_s2_e5_c104', 'ir_r4_k3_s1_e3_c104'),
            ('ir_r1_k3_s1_e5_c160_se0.25', 'ir_r8_k5_s1_e3_c160_se0.25'),
            ('ir_r1_k3_s2_e6_c264_se0.25', 'ir_r6_k5_s1_e5_c264_se0.25', 'ir_r2_k5_s1_e6_c288_se0.25'),
            ('cn_r1_k1_s1_c1728',)),
        stem_size=32, head_hidden=1984, head_bias=False, se_style='fbnet', fix_stem_below=0.0),
    # PP-LCNet: depthwise-separable blocks with activated projections, no final 1x1 stage
    'lcnet': dict(
        block_defs=(('dsa_r1_k3_s1_c32',), ('dsa_r2_k3_s2_c64',), ('dsa_r2_k3_s2_c128',),
                    ('dsa_r1_k3_s2_c256', 'dsa_r1_k5_s1_c256'), ('dsa_r4_k5_s1_c256',), ('dsa_r2_k5_s2_c512_se0.25',)),
        head_hidden=1280, se_style='lcnet', fix_stem_below=0.0),
    # MobileNetV4 (stage strings: featzoo.layers.mobilenetv4_blocks); the head normalizes after its 1x1 conv
    'mnv4_conv_small': dict(
        block_defs=(
            ('cn_r1_k3_s2_e1_c32', 'cn_r1_k1_s1_e1_c32'), ('cn_r1_k3_s2_e1_c96', 'cn_r1_k1_s1_e1_c64'),
            ('uir_r1_a5_k5_s2_e3_c96', 'uir_r4_a0_k3_s1_e2_c96', 'uir_r1_a3_k0_s1_e4_c96'),
            ('uir_r1_a3_k3_s2_e6_c128', 'uir_r1_a5_k5_s1_e4_c128', 'uir_r1_a0_k5_s1_e4_c128',
             'uir_r1_a0_k5_s1_e3_c128', 'uir_r2_a0_k3_s1_e4_c128'),
            ('cn_r1_k1_s1_c960',)),
        stem_size=32, act_layer='relu', **_MNV4_HEAD),
    'mnv4_conv_medium': dict(
        block_defs=(
            ('er_r1_k3_s2_e4_c48',), ('uir_r1_a3_k5_s2_e4_c80', 'uir_r1_a3_k3_s1_e2_c80'),
            ('uir_r1_a3_k5_s2_e6_c160', 'uir_r2_a3_k3_s1_e4_c160', 'uir_r1_a3_k5_s1_e4_c160',
             'uir_r1_a3_k3_s1_e4_c160', 'uir_r1_a3_k0_s1_e4_c160', 'uir_r1_a0_k0_s1_e2_c160',
             'uir_r1_a3_k0_s1_e4_c160'),
            ('uir_r1_a5_k5_s2_e6_c256', 'uir_r1_a5_k5_s1_e4_c256', 'uir_r2_a3_k5_s1_e4_c256',
             'uir_r1_a0_k0_s1_e4_c256', 'uir_r1_a3_k0_s1_e4_c256', 'uir_r1_a3_k5_s1_e2_c256',
             'uir_r1_a5_k5_s1_e4_c256', 'uir_r2_a0_k0_s1_e4_c256', 'uir_r1_a5_k0_s1_e2_c256'),
            ('cn_r1_k1_s1_c960',)),
        stem_size=32, act_layer='relu', **_MNV4_HEAD),
    'mnv4_conv_large': dict(
        block_defs=(
            ('er_r1_k3_s2_e4_c48',), ('uir_r1_a3_k5_s2_e4_c96', 'uir_r1_a3_k3_s1_e4_c96'),
            ('uir_r1_a3_k5_s2_e4_c192', 'uir_r3_a3_k3_s1_e4_c192', 'uir_r1_a3_k5_s1_e4_c192',
             'uir_r5_a5_k3_s1_e4_c192', 'uir_r1_a3_k0_s1_e4_c192'),
            ('uir_r4_a5_k5_s2_e4_c512', 'uir_r1_a5_k0_s1_e4_c512', 'uir_r1_a5_k3_s1_e4_c512',
             'uir_r2_a5_k0_s1_e4_c512', 'uir_r1_a5_k3_s1_e4_c512', 'uir_r1_a5_k5_s1_e4_c512',
             'uir_r3_a5_k0_s1_e4_c512'),
            ('cn_r1_k1_s1_c960',)),
        stem_size=24, act_layer='relu', **_MNV4_HEAD),
    'mnv4_hybrid_medium': dict(
        block_defs=(
            ('er_r1_k3_s2_e4_c48',), ('uir_r1_a3_k5_s2_e4_c80', 'uir_r1_a3_k3_s1_e2_c80'),
            ('uir_r1_a3_k5_s2_e6_c160', 'uir_r1_a0_k0_s1_e2_c160', 'uir_r1_a3_k3_s1_e4_c160',
             'uir_r1_a3_k5_s1_e4_c160', 'mqa_r1_k3_h4_s1_v2_d64_c160', 'uir_r1_a3_k3_s1_e4_c160',
             'mqa_r1_k3_h4_s1_v2_d64_c160', 'uir_r1_a3_k0_s1_e4_c160', 'mqa_r1_k3_h4_s1_v2_d64_c160',
             'uir_r1_a3_k3_s1_e4_c160', 'mqa_r1_k3_h4_s1_v2_d64_c160', 'uir_r1_a3_k0_s1_e4_c160'),
            ('uir_r1_a5_k5_s2_e6_c256', 'uir_r1_a5_k5_s1_e4_c256', 'uir_r2_a3_k5_s1_e4_c256',
             'uir_r1_a0_k0_s1_e2_c256', 'uir_r1_a3_k5_s1_e2_c256', 'uir_r1_a0_k0_s1_e2_c256',
             'uir_r1_a0_k0_s1_e4_c256', 'mqa_r1_k3_h4_s1_d64_c256', 'uir_r1_a3_k0_s1_e4_c256',
             'mqa_r1_k3_h4_s1_d64_c256', 'uir_r1_a5_k5_s1_e4_c256', 'mqa_r1_k3_h4_s1_d64_c256',
             'uir_r1_a5_k0_s1_e4_c256', 'mqa_r1_k3_h4_s1_d64_c256', 'uir_r1_a5_k0_s1_e4_c256'),
            ('cn_r1_k1_s1_c960',)),
        stem_size=32, act_layer='relu', layer_scale_init_value=1e-5, **_MNV4_HEAD),
    'mnv4_hybrid_large': dict(
        block_defs=(
            ('er_r1_k3_s2_e4_c48',), ('uir_r1_a3_k5_s2_e4_c96', 'uir_r1_a3_k3_s1_e4_c96'),
            ('uir_r1_a3_k5_s2_e4_c192', 'uir_r3_a3_k3_s1_e4_c192', 'uir_r1_a3_k5_s1_e4_c192',
             'uir_r2_a5_k3_s1_e4_c192', 'mqa_r1_k3_h8_s1_v2_d48_c192', 'uir_r1_a5_k3_s1_e4_c192',
             'mqa_r1_k3_h8_s1_v2_d48_c192', 'uir_r1_a5_k3_s1_e4_c192', 'mqa_r1_k3_h8_s1_v2_d48_c192',
             'uir_r1_a5_k3_s1_e4_c192', 'mqa_r1_k3_h8_s1_v2_d48_c192', 'uir_r1_a3_k0_s1_e4_c192'),
            ('uir_r4_a5_k5_s2_e4_c512', 'uir_r1_a5_k0_s1_e4_c512', 'uir_r1_a5_k3_s1_e4_c512',
             'uir_r2_a5_k0_s1_e4_c512', 'uir_r1_a5_k3_s1_e4_c512', 'uir_r1_a5_k5_s1_e4_c512',
             'mqa_r1_k3_h8_s1_d64_c512', 'uir_r1_a5_k0_s1_e4_c512', 'mqa_r1_k3_h8_s1_d64_c512',
             'uir_r1_a5_k0_s1_e4_c512', 'mqa_r1_k3_h8_s1_d64_c512', 'uir_r1_a5_k0_s1_e4_c512',
             'mqa_r1_k3_h8_s1_d64_c512', 'uir_r1_a5_k0_s1_e4_c512'),
            ('cn_r1_k1_s1_c960',)),
        stem_size=24, act_layer='gelu', layer_scale_init_value=1e-5, **_MNV4_HEAD),
}

_TF = dict(pad_type='same', bn_eps=1e-3)

VARIANTS: Dict[str, dict] = {
    'mobilenetv3_large_075': dict(arch='large', channel_multiplier=0.75),
    'mobilenetv3_large_100': dict(arch='large', channel_multiplier=1.0),
    'mobilenetv3_large_150d': dict(arch='large', channel_multiplier=1.5, depth_multiplier=1.2),
    'mobilenetv3_small_050': dict(arch='small', channel_multiplier=0.5),
    'mobilenetv3_small_075': dict(arch='small', channel_multiplier=0.75),
    'mobilenetv3_small_100': dict(arch='small', channel_multiplier=1.0),
    'mobilenetv3_rw': dict(arch='rw', bn_eps=1e-3),
    'tf_mobilenetv3_large_075': dict(arch='large', channel_multiplier=0.75, **_TF),
    'tf_mobilenetv3_large_100': dict(arch='large', channel_multiplier=1.0, **_TF),
    'tf_mobilenetv3_large_minimal_100': dict(arch='large_minimal', channel_multiplier=1.0, **_TF),
    'tf_mobilenetv3_small_075': dict(arch='small', channel_multiplier=0.75, **_TF),
    'tf_mobilenetv3_small_100': dict(arch='small', channel_multiplier=1.0, **_TF),
    'tf_mobilenetv3_small_minimal_100': dict(arch='small_minimal', channel_multiplier=1.0, **_TF),
    'fbnetv3_b': dict(arch='fbnetv3_b'),
    'fbnetv3_d': dict(arch='fbnetv3_d'),
    'fbnetv3_g': dict(arch='fbnetv3_g'),
    'lcnet_035': dict(arch='lcnet', channel_multiplier=0.35),
    'lcnet_050': dict(arch='lcnet', channel_multiplier=0.5),
    'lcnet_075': dict(arch='lcnet', channel_multiplier=0.75),
    'lcnet_100': dict(arch='lcnet', channel_multiplier=1.0),
    'lcnet_150': dict(arch='lcnet', channel_multiplier=1.5),
    'mobilenetv4_conv_small_035': dict(arch='mnv4_conv_small', channel_multiplier=0.35),
    'mobilenetv4_conv_small_050': dict(arch='mnv4_conv_small', channel_multiplier=0.5),
    'mobilenetv4_conv_small': dict(arch='mnv4_conv_small', channel_multiplier=1.0),
    'mobilenetv4_conv_medium': dict(arch='mnv4_conv_medium', channel_multiplier=1.0),
    'mobilenetv4_conv_large': dict(arch='mnv4_conv_large', channel_multiplier=1.0),
    'mobilenetv4_hybrid_medium': dict(arch='mnv4_hybrid_medium', channel_multiplier=1.0),
    'mobilenetv4_hybrid_medium_075': dict(arch='mnv4_hybrid_medium', channel_multiplier=0.75),
    'mobilenetv4_hybrid_large': dict(arch='mnv4_hybrid_large', channel_multiplier=1.0),
    'mobilenetv4_hybrid_large_075': dict(arch='mnv4_hybrid_large', channel_multiplier=0.75),
    # anti-aliased downsampling: the stride moves from the strided conv to a 2x2 average or a zero-padded blur
    'mobilenetv4_conv_aa_medium': dict(arch='mnv4_conv_medium', channel_multiplier=1.0, aa_layer='avg'),
    'mobilenetv4_conv_blur_medium': dict(arch='mnv4_conv_medium', channel_multiplier=1.0, aa_layer='blurpc'),
    'mobilenetv4_conv_aa_large': dict(arch='mnv4_conv_large', channel_multiplier=1.0, aa_layer='avg'),
}


class MobileNetV3(EfficientTrunk):
    """Stem, stages, then pool -> 1x1 conv -> activation (or norm + activation) -> classifier.

    Stages are MobileNetV3-style strings (``ds``, ``dsa``, ``ir``, ``er``, ``cn``) or MobileNetV4 ones (``cn``,
    ``er``, ``uir``, ``mqa``; see :mod:`featzoo.layers.mobilenetv4_blocks`). ``head_norm`` selects MobileNetV4's head
    (bias-free conv, batch norm with the activation); ``layer_scale_init_value`` scales MobileNetV4's residual
    branches; ``aa_layer`` ('avg', 'blur', 'blurpc') moves MobileNetV4's strides to anti-aliasing pools.
    ``se_style`` (a key of :data:`SE_STYLES`) sizes and gates the squeeze-excite of MobileNetV3-style stages.

    >>> model = MobileNetV3(ARCHS['small']['block_defs'], num_classes=10, channel_multiplier=0.5)
    >>> model(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 10])
    """

    head_layers = ('conv_head', 'norm_head', 'act2')  # after the pooling

    def __init__(self, block_defs: Sequence[Sequence[str]], num_classes: int = 1000, in_chans: int = 3,
                 stem_size: int = 16, fix_stem: Optional[bool] = None, head_hidden: int = 1280, head_bias: bool = True,
                 head_norm: bool = False, channel_multiplier: float = 1.0, depth_multiplier: float = 1.0,
                 act_layer: ActLayer = 'hard_swish', se_style: str = 'mnv3', aa_layer: Optional[str] = None,
                 layer_scale_init_value: Optional[float] = None, pad_type: str = '', bn_eps: float = 1e-5,
                 bn_momentum: float = 0.1, output_stride: int = 32, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, global_pool: str = 'avg') -> None:
        super().__init__()
        check_model_args(num_classes, in_chans, output_stride, OUTPUT_STRIDES, channel_multiplier, depth_multiplier,
                         pad_type, drop_rate, drop_path_rate, global_pool)
        if se_style not in SE_STYLES:
            raise ValueError(f'unknown se_style {se_style!r}; valid: {sorted(SE_STYLES)}')
        check_aa_layer(aa_layer)
        if layer_scale_init_value is not None and (
                isinstance(layer_scale_init_value, bool) or not isinstance(layer_scale_init_value, (int, float))):
            raise TypeError(f'layer_scale_init_value must be a number or None, got {layer_scale_init_value!r}')
        if fix_stem is None:
            # The published narrow MobileNetV3s keep the 16-channel stem (timm's rule).
            fix_stem = channel_multiplier < 0.75
        norm_kwargs = dict(eps=bn_eps, momentum=bn_momentum)
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        if _is_mnv4(block_defs) or aa_layer is not None:
            if depth_multiplier != 1.0:
                raise ValueError(f'depth_multiplier={depth_multiplier!r}: MobileNetV4 stages take no depth scaling; '
                                 'valid: 1.0')
            self.num_features = self._init_mnv4_trunk(
                block_defs, in_chans, stem_size, fix_stem, channel_multiplier, act_layer, pad_type, norm_kwargs,
                aa_layer, layer_scale_init_value, output_stride, drop_path_rate)
        else:
            self.num_features = self._init_trunk(
                block_defs, in_chans, stem_size, fix_stem, channel_multiplier, depth_multiplier, False, act_layer,
                pad_type, norm_kwargs, SE_STYLES[se_style], output_stride, drop_path_rate)
        self.head_hidden_size = head_hidden
        self.global_pool = SelectAdaptivePool2d(global_pool)
        pooled_chs = self.num_features * self.global_pool.feat_mult()
        if head_norm:
            # MobileNetV4: the norm replaces the conv's bias and carries the activation
            self.conv_head = create_conv2d(pooled_chs, head_hidden, 1, padding=pad_type, bias=False)
            self.norm_head = BatchNormAct2d(head_hidden, act_layer=act_layer, **norm_kwargs)
            self.act2 = nn.Identity()
        else:
            self.conv_head = create_conv2d(pooled_chs, head_hidden, 1, padding=pad_type, bias=head_bias)
            self.norm_head = nn.Identity()
            self.act2 = create_act_layer(act_layer, inplace=True)
        self.flatten = nn.Flatten(1) if global_pool else nn.Identity()
        self.classifier = nn.Linear(head_hidden, num_classes) if num_classes > 0 else nn.Identity()
        init_weights_goog(self)
        for module in self.modules():
            if isinstance(module, MultiQueryAttention2d):
                module.reset_parameters()

    def _init_mnv4_trunk(self, block_defs: Sequence[Sequence[str]], in_chans: int, stem_size: int, fix_stem: bool,
                         channel_multiplier: float, act_layer: ActLayer, pad_type: str,
                         norm_kwargs: Dict[str, float], aa_layer: Optional[str],
                         layer_scale_init_value: Optional[float], output_stride: int, drop_path_rate: float) -> int:
        """The trunk of :meth:`EfficientTrunk._init_trunk` (same module names and level rules) from MobileNetV4
        stage strings."""
        round_chs = partial(round_channels, multiplier=channel_multiplier)
        stages = decode_mnv4_arch(block_defs)
        stem_chs = stem_size if fix_stem else round_chs(stem_size)
        self.grad_checkpointing = False
        self.conv_stem = create_conv2d(in_chans, stem_chs, 3, stride=2, padding=pad_type)
        self.bn1 = BatchNormAct2d(stem_chs, act_layer=act_layer, **norm_kwargs)
        stage_modules, self.feature_info, out_chs = build_mnv4_stages(
            stages, stem_chs, round_chs, act_layer, output_stride=output_stride, pad_type=pad_type,
            norm_kwargs=norm_kwargs, aa_layer=aa_layer, drop_path_rate=drop_path_rate,
            layer_scale_init_value=layer_scale_init_value)
        self.blocks = nn.Sequential(*stage_modules)
        self.stage_ends = [0 if level['module'] == 'bn1' else int(str(level['module']).split('.')[1]) + 1
                           for level in self.feature_info]
        return out_chs

    def group_matcher(self, coarse: bool = False) -> Dict[str, object]:
        """Parameter groups (stem, blocks) for layer-wise learning-rate decay, as timm names them.

        >>> sorted(model.group_matcher())  # doctest: +SKIP
        ['blocks', 'stem']
        """
        return dict(stem=r'^conv_stem|bn1', blocks=r'^blocks\.(\d+)' if coarse else r'^blocks\.(\d+)\.(\d+)')

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier (``num_classes=0`` removes it) and optionally the pooling.

        The head convolution is sized for the pooled width, so a pooling that changes it (``'catavgmax'`` vs
        ``'avg'``) is refused while the head convolution exists.

        >>> model.reset_classifier(0)  # doctest: +SKIP
        """
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f'num_classes must be an int >= 0, got {num_classes!r}')
        if global_pool is None:
            global_pool = self.global_pool.pool_type
        check_pool(num_classes, global_pool)
        pool = SelectAdaptivePool2d(global_pool)
        if isinstance(self.conv_head, nn.Identity):
            self.head_hidden_size = self.num_features * pool.feat_mult()
        elif self.conv_head.in_channels != self.num_features * pool.feat_mult():
            raise ValueError(f'global_pool={global_pool!r} changes the pooled width to '
                             f'{self.num_features * pool.feat_mult()} but the head convolution expects '
                             f'{self.conv_head.in_channels}; keep a pooling of the same width')
        ref = self.conv_stem.weight
        self.num_classes = num_classes
        self.global_pool = pool.train(self.training)
        self.flatten = (nn.Flatten(1) if global_pool else nn.Identity()).train(self.training)
        classifier = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()
        self.classifier = classifier.to(device=ref.device, dtype=ref.dtype).train(self.training)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Last stage's unpooled map, ``(B, num_features, H / 32, W / 32)`` at output_stride 32.

        >>> model.forward_features(torch.zeros(1, 3, 224, 224)).shape  # doctest: +SKIP
        torch.Size([1, 960, 7, 7])
        """
        return self._forward_trunk(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, 1x1 head conv, activation, flatten, dropout, classify; ``pre_logits`` stops before the classifier.

        >>> model.forward_head(torch.zeros(1, 960, 7, 7), pre_logits=True).shape  # doctest: +SKIP
        torch.Size([1, 1280])
        """
        x = self.global_pool(x)
        x = self.act2(self.norm_head(self.conv_head(x)))
        return self._classify(self.flatten(x), pre_logits)



def _is_mnv4(block_defs: Sequence[Sequence[str]]) -> bool:
    """Whether the stages use MobileNetV4's universal inverted residual or attention blocks."""
    return any(isinstance(block, str) and block.split('_')[0] in ('uir', 'mqa')
               for stage in block_defs if not isinstance(stage, str) for block in stage)


def _from_arch(arch: str, **kwargs: Any) -> MobileNetV3:
    """A MobileNetV3 of architecture ``arch`` (a key of :data:`ARCHS`) with its defaults overridden by ``kwargs``."""
    if arch not in ARCHS:
        raise ValueError(f'unknown mobilenetv3 architecture {arch!r}; valid: {sorted(ARCHS)}')
    args = {**ARCHS[arch], **kwargs}
    fix_stem_below = args.pop('fix_stem_below', 0.75)
    if args.get('fix_stem') is None:
        multiplier = args.get('channel_multiplier', 1.0)
        args['fix_stem'] = isinstance(multiplier, (int, float)) and multiplier < fix_stem_below
    return MobileNetV3(**args)


SPEC = FamilySpec(
    name='mobilenetv3', model=_from_arch, variants=VARIANTS, default_cfg=DEFAULT_CFG,
    feature_cls=('list', 'dict', 'hook', 'fx', 'getter'), default_feature_cls='list', output_strides=OUTPUT_STRIDES,
    export=('torch.export', 'dynamic_hw', 'onnx', 'compile'))
