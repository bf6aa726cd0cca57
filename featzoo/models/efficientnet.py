"""timm's ``efficientnet`` module: one model class for EfficientNet (B0-B8, L2, Lite, EdgeTPU, CondConv, X/H,
pruned, GroupNorm/EvoNorm/blur experiments), EfficientNetV2, MixNet, MnasNet, SPNASNet, FBNet-C, TinyNet,
MobileNet V1/V2 and MobileNet-EdgeTPU(V2); the architectures are stage strings.

Every variant is a row of ``VARIANTS`` naming an architecture of ``ARCHS`` (its stage strings, see
:mod:`featzoo.layers.efficientnet_blocks` for the notation, and its defaults) plus what the variant changes: width
and depth multipliers, the head rule, norm layer, squeeze-excite kind, anti-aliasing, per-block widths of the pruned
models. ``tf_`` rows (and the pruned ones) use TensorFlow 'SAME' padding and batch-norm epsilon 1e-3, as the ported
TensorFlow weights need.

Parameter names equal timm's ``EfficientNet`` so its checkpoints load unchanged.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..checks import check_choice
from ..family import FamilySpec
from ..layers.activations import ActLayer
from ..layers.blur_pool import BlurPool2d
from ..layers.efficientnet_blocks import (
    SE_LAYERS, AaLayer, BlockWidths, EfficientTrunk, NormLayer, SEConfig, check_model_args, check_pool,
    init_weights_goog, round_channels)
from ..layers.layer_norm_act import LayerNormAct2d
from ..layers.norm import BatchNormAct2d
from ..layers.norm_act import EvoNorm2dS0, GroupNormAct
from ..layers.padding import create_conv2d
from ..layers.pool_classifier import reset_pool_classifier
from ..layers.pooling import create_classifier

OUTPUT_STRIDES = (8, 16, 32)
DEFAULT_CFG = dict(
    input_size=(3, 224, 224), interpolation='bicubic', crop_pct=0.875, crop_mode='center',
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), first_conv='conv_stem', classifier='classifier')

# Width of the 1x1 head convolution: scaled with the network, fixed, or scaled but never below ``head_chs``.
HEAD_RULES = ('scale', 'fixed', 'at_least')
NORM_LAYERS = ('batchnorm', 'groupnorm', 'layernorm', 'evonorm_s0')
AA_LAYERS = (None, 'blurpc')


def _stages(*stages: Union[str, Tuple[str, ...]]) -> Tuple[Tuple[str, ...], ...]:
    """Stage strings as the nested tuples ``block_defs`` takes: a stage of one definition may be a bare string."""
    return tuple((stage,) if isinstance(stage, str) else tuple(stage) for stage in stages)


_EFFICIENTNET_STAGES = _stages(
    'ds_r1_k3_s1_e1_c16_se0.25', 'ir_r2_k3_s2_e6_c24_se0.25', 'ir_r2_k5_s2_e6_c40_se0.25',
    'ir_r3_k3_s2_e6_c80_se0.25', 'ir_r3_k5_s1_e6_c112_se0.25', 'ir_r4_k5_s2_e6_c192_se0.25',
    'ir_r1_k3_s1_e6_c320_se0.25')


def _edgetpu_v2_stages(chs: Sequence[int], group_size: int) -> Tuple[Tuple[str, ...], ...]:
    """MobileNet-EdgeTPU-V2: the same stage pattern at seven widths, some fused blocks grouped by ``group_size``."""
    c = chs
    return _stages(
        f'cn_r1_k1_s1_c{c[0]}',
        (f'er_r1_k3_s2_e8_c{c[1]}', f'er_r1_k3_s1_e4_gs{group_size}_c{c[1]}'),
        (f'er_r1_k3_s2_e8_c{c[2]}', f'er_r1_k3_s1_e4_gs{group_size}_c{c[2]}', f'er_r1_k3_s1_e4_c{c[2]}',
         f'er_r1_k3_s1_e4_gs{group_size}_c{c[2]}'),
        (f'er_r1_k3_s2_e8_c{c[3]}', f'ir_r3_k3_s1_e4_c{c[3]}'),
        (f'ir_r1_k3_s1_e8_c{c[4]}', f'ir_r3_k3_s1_e4_c{c[4]}'),
        (f'ir_r1_k3_s2_e8_c{c[5]}', f'ir_r3_k3_s1_e4_c{c[5]}'),
        f'ir_r1_k3_s1_e8_c{c[6]}')


def with_stage_counts(block_defs: Sequence[Sequence[str]], stage_repeats: Optional[Sequence[int]] = None,
                      stage_chs: Optional[Sequence[int]] = None) -> Tuple[Tuple[str, ...], ...]:
    """``block_defs`` with the repeats (``r``) and output widths (``c``) of its single-definition stages replaced:
    EfficientNetV2-M, -L and -XL are one layout at three sizes.

    >>> with_stage_counts([['ir_r2_k3_s2_e4_c48'], ['ir_r3_k3_s1_e6_c64_se0.25']], (4, 5), (32, 96))
    (('ir_r4_k3_s2_e4_c32',), ('ir_r5_k3_s1_e6_c96_se0.25',))
    """
    out = []
    for idx, stage in enumerate(block_defs):
        stage = tuple(stage)
        if stage_repeats is None and stage_chs is None:
            out.append(stage)
            continue
        if len(stage) != 1:
            raise ValueError(f'stage_repeats / stage_chs need one block definition per stage; stage {idx} has '
                             f'{list(stage)}')
        ops = stage[0].split('_')
        for key, values in (('r', stage_repeats), ('c', stage_chs)):
            if values is None:
                continue
            if len(values) != len(block_defs):
                raise ValueError(f'stage_{"repeats" if key == "r" else "chs"}={tuple(values)} needs one value per '
                                 f'stage ({len(block_defs)})')
            ops = [f'{key}{values[idx]}' if op[:1] == key and op[1:].isdigit() else op for op in ops]
        out.append(('_'.join(ops),))
    return tuple(out)


# Default constructor arguments per architecture; a variant row overrides them, user arguments override the row.
ARCHS: Dict[str, dict] = {
    'efficientnet': dict(block_defs=_EFFICIENTNET_STAGES, act_layer='swish'),
    'efficientnet_pruned': dict(block_defs=_EFFICIENTNET_STAGES, act_layer='swish'),  # rows give block_widths
    'efficientnet_lite': dict(
        block_defs=tuple((stage[0].replace('_se0.25', ''),) for stage in _EFFICIENTNET_STAGES),
        fix_stem=True, fix_first_last=True, head_rule='fixed', act_layer='relu6'),
    'efficientnet_condconv': dict(
        block_defs=_EFFICIENTNET_STAGES[:4] + tuple((stage[0] + '_cc4',) for stage in _EFFICIENTNET_STAGES[4:]),
        act_layer='swish'),
    'efficientnet_edge': dict(
        block_defs=_stages('er_r1_k3_s1_e4_c24_fc24_noskip', 'er_r2_k3_s2_e8_c32', 'er_r4_k3_s2_e8_c48',
                           'ir_r5_k5_s2_e8_c96', 'ir_r4_k5_s1_e8_c144', 'ir_r2_k5_s2_e8_c192'),
        act_layer='relu'),
    # EfficientNet-X (version 1) and -H (version 2): a space-to-depth stem block, then fused blocks
    'efficientnet_x': dict(
        block_defs=_stages('ds_r1_k3_s1_e1_c16_se0.25_d1', 'er_r2_k3_s2_e6_c24_se0.25_nre',
                           'er_r2_k5_s2_e6_c40_se0.25_nre', *_EFFICIENTNET_STAGES[3:]),
        act_layer='swish'),
    'efficientnet_h': dict(
        block_defs=_stages('ds_r1_k3_s1_e1_c16_se0.25_d1', 'er_r2_k3_s2_e4_c24_se0.25_nre',
                           'er_r2_k5_s2_e4_c40_se0.25_nre', 'ir_r3_k3_s2_e4_c80_se0.25',
                           *_EFFICIENTNET_STAGES[4:]),
        act_layer='swish'),
    'efficientnetv2_base': dict(
        block_defs=_stages('cn_r1_k3_s1_e1_c16_skip', 'er_r2_k3_s2_e4_c32', 'er_r2_k3_s2_e4_c48',
                           'ir_r3_k3_s2_e4_c96_se0.25', 'ir_r5_k3_s1_e6_c112_se0.25', 'ir_r8_k3_s2_e6_c192_se0.25'),
        round_limit=0.0, act_layer='silu'),
    'efficientnetv2_s': dict(
        block_defs=_stages('cn_r2_k3_s1_e1_c24_skip', 'er_r4_k3_s2_e4_c48', 'er_r4_k3_s2_e4_c64',
                           'ir_r6_k3_s2_e4_c128_se0.25', 'ir_r9_k3_s1_e6_c160_se0.25', 'ir_r15_k3_s2_e6_c256_se0.25'),
        stem_size=24, act_layer='silu'),
    # the 'rw' small layout, trained in timm before the reference was published
    'efficientnetv2_rw': dict(
        block_defs=_stages('er_r2_k3_s1_e1_c24', 'er_r4_k3_s2_e4_c48', 'er_r4_k3_s2_e4_c64',
                           'ir_r6_k3_s2_e4_c128_se0.25', 'ir_r9_k3_s1_e6_c160_se0.25', 'ir_r15_k3_s2_e6_c272_se0.25'),
        stem_size=24, head_chs=1792, act_layer='silu'),
    # EfficientNetV2-M; -L and -XL are rows giving its repeats and widths (stage_repeats, stage_chs)
    'efficientnetv2_m': dict(
        block_defs=_stages('cn_r3_k3_s1_e1_c24_skip', 'er_r5_k3_s2_e4_c48', 'er_r5_k3_s2_e4_c80',
                           'ir_r7_k3_s2_e4_c160_se0.25', 'ir_r14_k3_s1_e6_c176_se0.25', 'ir_r18_k3_s2_e6_c304_se0.25',
                           'ir_r5_k3_s1_e6_c512_se0.25'),
        stem_size=24, head_rule='fixed', act_layer='silu'),
    'test_efficientnet': dict(
        block_defs=_stages('cn_r1_k3_s1_e1_c16_skip', 'er_r1_k3_s2_e4_c24', 'er_r1_k3_s2_e4_c32',
                           'ir_r1_k3_s2_e4_c48_se0.25', 'ir_r1_k3_s2_e4_c64_se0.25'),
        stem_size=24, head_chs=256, round_limit=0.0, act_layer='silu'),
    'mnasnet_a1': dict(
        block_defs=_stages('ds_r1_k3_s1_e1_c16_noskip', 'ir_r2_k3_s2_e6_c24', 'ir_r3_k5_s2_e3_c40_se0.25',
                           'ir_r4_k3_s2_e6_c80', 'ir_r2_k3_s1_e6_c112_se0.25', 'ir_r3_k5_s2_e6_c160_se0.25',
                           'ir_r1_k3_s1_e6_c320'),
        head_rule='fixed', act_layer='relu'),
    'mnasnet_b1': dict(
        block_defs=_stages('ds_r1_k3_s1_c16_noskip', 'ir_r3_k3_s2_e3_c24', 'ir_r3_k5_s2_e3_c40',
                           'ir_r3_k5_s2_e6_c80', 'ir_r2_k3_s1_e6_c96', 'ir_r4_k5_s2_e6_c192',
                           'ir_r1_k3_s1_e6_c320_noskip'),
        head_rule='fixed', act_layer='relu'),
    'mnasnet_small': dict(
        block_defs=_stages('ds_r1_k3_s1_c8', 'ir_r1_k3_s2_e3_c16', 'ir_r2_k3_s2_e6_c16', 'ir_r4_k5_s2_e6_c32_se0.25',
                           'ir_r3_k3_s1_e6_c32_se0.25', 'ir_r3_k5_s2_e6_c88_se0.25', 'ir_r1_k3_s1_e6_c144'),
        stem_size=8, head_rule='fixed', act_layer='relu'),
    'mobilenetv1': dict(
        block_defs=_stages('dsa_r1_k3_s1_c64', 'dsa_r2_k3_s2_c128', 'dsa_r2_k3_s2_c256', 'dsa_r6_k3_s2_c512',
                           'dsa_r2_k3_s2_c1024'),
        head_chs=1024, head_conv=False, head_rule='at_least', act_layer='relu6'),
    'mobilenetv2': dict(
        block_defs=_stages('ds_r1_k3_s1_c16', 'ir_r2_k3_s2_e6_c24', 'ir_r3_k3_s2_e6_c32', 'ir_r4_k3_s2_e6_c64',
                           'ir_r3_k3_s1_e6_c96', 'ir_r3_k3_s2_e6_c160', 'ir_r1_k3_s1_e6_c320'),
        head_rule='at_least', act_layer='relu6'),
    'fbnetc': dict(
        block_defs=_stages(
            'ir_r1_k3_s1_e1_c16', ('ir_r1_k3_s2_e6_c24', 'ir_r2_k3_s1_e1_c24'),
            ('ir_r1_k5_s2_e6_c32', 'ir_r1_k5_s1_e3_c32', 'ir_r1_k5_s1_e6_c32', 'ir_r1_k3_s1_e6_c32'),
            ('ir_r1_k5_s2_e6_c64', 'ir_r1_k5_s1_e3_c64', 'ir_r2_k5_s1_e6_c64'),
            ('ir_r3_k5_s1_e6_c112', 'ir_r1_k5_s1_e3_c112'), 'ir_r4_k5_s2_e6_c184', 'ir_r1_k3_s1_e6_c352'),
        stem_size=16, head_chs=1984, head_rule='fixed', act_layer='relu'),
    'spnasnet': dict(
        block_defs=_stages(
            'ds_r1_k3_s1_c16_noskip', 'ir_r3_k3_s2_e3_c24', ('ir_r1_k5_s2_e6_c40', 'ir_r3_k3_s1_e3_c40'),
            ('ir_r1_k5_s2_e6_c80', 'ir_r3_k3_s1_e3_c80'), ('ir_r1_k5_s1_e6_c96', 'ir_r3_k5_s1_e3_c96'),
            'ir_r4_k5_s2_e6_c192', 'ir_r1_k3_s1_e6_c320_noskip'),
        head_rule='fixed', act_layer='relu'),
    # MixNet: relu in the first two stages, swish (nsw) after; mixed depthwise kernels and grouped 1x1s
    'mixnet_s': dict(
        block_defs=_stages(
            'ds_r1_k3_s1_e1_c16', ('ir_r1_k3_a1.1_p1.1_s2_e6_c24', 'ir_r1_k3_a1.1_p1.1_s1_e3_c24'),
            ('ir_r1_k3.5.7_s2_e6_c40_se0.5_nsw', 'ir_r3_k3.5_a1.1_p1.1_s1_e6_c40_se0.5_nsw'),
            ('ir_r1_k3.5.7_p1.1_s2_e6_c80_se0.25_nsw', 'ir_r2_k3.5_p1.1_s1_e6_c80_se0.25_nsw'),
            ('ir_r1_k3.5.7_a1.1_p1.1_s1_e6_c120_se0.5_nsw', 'ir_r2_k3.5.7.9_a1.1_p1.1_s1_e3_c120_se0.5_nsw'),
            ('ir_r1_k3.5.7.9.11_s2_e6_c200_se0.5_nsw', 'ir_r2_k3.5.7.9_p1.1_s1_e6_c200_se0.5_nsw')),
        stem_size=16, head_chs=1536, head_rule='fixed', act_layer='relu'),
    'mixnet_m': dict(
        block_defs=_stages(
            'ds_r1_k3_s1_e1_c24', ('ir_r1_k3.5.7_a1.1_p1.1_s2_e6_c32', 'ir_r1_k3_a1.1_p1.1_s1_e3_c32'),
            ('ir_r1_k3.5.7.9_s2_e6_c40_se0.5_nsw', 'ir_r3_k3.5_a1.1_p1.1_s1_e6_c40_se0.5_nsw'),
            ('ir_r1_k3.5.7_s2_e6_c80_se0.25_nsw', 'ir_r3_k3.5.7.9_a1.1_p1.1_s1_e6_c80_se0.25_nsw'),
            ('ir_r1_k3_s1_e6_c120_se0.5_nsw', 'ir_r3_k3.5.7.9_a1.1_p1.1_s1_e3_c120_se0.5_nsw'),
            ('ir_r1_k3.5.7.9_s2_e6_c200_se0.5_nsw', 'ir_r3_k3.5.7.9_p1.1_s1_e6_c200_se0.5_nsw')),
        stem_size=24, head_chs=1536, head_rule='fixed', depth_trunc='round', act_layer='relu'),
    'tinynet': dict(
        block_defs=_EFFICIENTNET_STAGES, fix_stem=True, head_rule='at_least', depth_trunc='round', act_layer='swish'),
    'mobilenet_edgetpu': dict(
        block_defs=_stages(
            'cn_r1_k1_s1_c16', ('er_r1_k3_s2_e8_c32', 'er_r3_k3_s1_e4_c32'),
            ('er_r1_k3_s2_e8_c48', 'er_r3_k3_s1_e4_c48'), ('ir_r1_k3_s2_e8_c96', 'ir_r3_k3_s1_e4_c96'),
            ('ir_r1_k3_s1_e8_c96_noskip', 'ir_r3_k3_s1_e4_c96'), ('ir_r1_k5_s2_e8_c160', 'ir_r3_k5_s1_e4_c160'),
            'ir_r1_k3_s1_e8_c192'),
        head_rule='fixed', act_layer='relu'),
    # MobileNet-EdgeTPU-V2 XS; the S, M and L rows give their widths, fused-group size and stem (edgetpu_chs, ...)
    'mobilenet_edgetpu_v2': dict(head_rule='fixed', act_layer='relu'),
}

# Per-stage (output width, per-block (expanded width, squeeze-excite width)) of timm's knapsack-pruned EfficientNets
# (the widths its pruned-model description files give the layers).
PRUNED_WIDTHS: Dict[str, BlockWidths] = {
    'b1': (
        (16, ((32, 8), (16, 4))),
        (12, ((48, 4), (62, 6), (48, 6))),
        (35, ((70, 6), (61, 10), (51, 10))),
        (74, ((175, 10), (188, 20), (137, 20), (164, 20))),
        (67, ((399, 20), (201, 28), (160, 28), (213, 28))),
        (192, ((637, 27), (806, 48), (798, 48), (891, 48), (990, 48))),
        (320, ((1152, 48), (1912, 80))),
    ),
    'b2': (
        (16, ((32, 8), (16, 4))),
        (17, ((54, 4), (69, 6), (61, 6))),
        (42, ((86, 6), (72, 12), (98, 12))),
        (85, ((245, 12), (274, 22), (254, 22), (292, 22))),
        (116, ((502, 22), (315, 30), (354, 30), (443, 30))),
        (208, ((719, 30), (1148, 52), (1160, 52), (1182, 52), (1228, 52))),
        (352, ((1248, 52), (2112, 88))),
    ),
    'b3': (
        (24, ((40, 10), (24, 6))),
        (12, ((27, 6), (49, 8), (48, 8))),
        (40, ((83, 8), (90, 12), (85, 12))),
        (93, ((215, 12), (261, 24), (219, 24), (254, 24), (236, 24))),
        (120, ((480, 24), (235, 34), (217, 34), (226, 33), (340, 34))),
        (232, ((802, 34), (1030, 58), (924, 58), (1016, 58), (1130, 58), (1266, 58))),
        (384, ((1392, 58), (2301, 96))),
    ),
}

_TF = dict(pad_type='same', bn_eps=1e-3)

# (channel_multiplier, depth_multiplier) of the compound-scaled series
_B_SCALES = {'b0': (1.0, 1.0), 'b1': (1.0, 1.1), 'b2': (1.1, 1.2), 'b3': (1.2, 1.4), 'b4': (1.4, 1.8),
             'b5': (1.6, 2.2), 'b6': (1.8, 2.6), 'b7': (2.0, 3.1), 'b8': (2.2, 3.6), 'l2': (4.3, 5.3)}
_LITE_SCALES = {f'lite{i}': scale for i, scale in enumerate(
    [(1.0, 1.0), (1.0, 1.1), (1.1, 1.2), (1.2, 1.4), (1.4, 1.8)])}
_EDGE_SCALES = {'es': (1.0, 1.0), 'em': (1.0, 1.1), 'el': (1.2, 1.4)}
_CC_ROWS = {'cc_b0_4e': (1.0, 1.0, 1), 'cc_b0_8e': (1.0, 1.0, 2), 'cc_b1_8e': (1.0, 1.1, 2)}
_V2_BASE_SCALES = {'b0': (1.0, 1.0), 'b1': (1.0, 1.1), 'b2': (1.1, 1.2), 'b3': (1.2, 1.4)}
_TINYNET_SCALES = {'a': (1.0, 1.2), 'b': (0.75, 1.1), 'c': (0.54, 0.85), 'd': (0.54, 0.695), 'e': (0.51, 0.6)}
# (stage widths, fused-block group size, stem width, stem kernel, head width)
_EDGETPU_V2_SIZES = {
    'xs': ((16, 32, 48, 96, 144, 160, 192), 64, 32, 3, 1280),
    's': ((24, 48, 64, 128, 160, 192, 256), 64, 64, 5, 1280),
    'm': ((32, 64, 80, 160, 192, 240, 320), 64, 64, 5, 1344),
    'l': ((32, 64, 96, 192, 240, 256, 384), 128, 64, 7, 1408),
}
_EDGETPU_V2_DEFAULTS = dict(stem_size=32, stem_kernel_size=3, head_chs=1280)
_MIXNET_SCALES = {'m': (1.0, 1.0), 'l': (1.3, 1.0), 'xl': (1.6, 1.2), 'xxl': (2.4, 1.3)}


def _scaled(arch: str, scale: Tuple[float, float], **extra: Any) -> dict:
    return dict(arch=arch, channel_multiplier=scale[0], depth_multiplier=scale[1], **extra)


def _variants() -> Dict[str, dict]:
    rows: Dict[str, dict] = {}
    for prefix, extra in (('', {}), ('tf_', _TF)):
        rows.update({f'{prefix}efficientnet_{k}': _scaled('efficientnet', s, **extra) for k, s in _B_SCALES.items()})
        rows.update({f'{prefix}efficientnet_{k}': _scaled('efficientnet_lite', s, **extra)
                     for k, s in _LITE_SCALES.items()})
        rows.update({f'{prefix}efficientnet_{k}': _scaled('efficientnet_edge', s, **extra)
                     for k, s in _EDGE_SCALES.items()})
        rows.update({f'{prefix}efficientnet_{k}': _scaled('efficientnet_condconv', (cm, dm), experts_multiplier=e,
                                                            **extra) for k, (cm, dm, e) in _CC_ROWS.items()})
        rows[f'{prefix}efficientnetv2_s'] = dict(arch='efficientnetv2_s', **extra)
        rows[f'{prefix}efficientnetv2_m'] = dict(arch='efficientnetv2_m', **extra)
        rows[f'{prefix}efficientnetv2_l'] = dict(arch='efficientnetv2_m', stage_repeats=(4, 7, 7, 10, 19, 25, 7),
                                                 stage_chs=(32, 64, 96, 192, 224, 384, 640), stem_size=32, **extra)
        rows[f'{prefix}efficientnetv2_xl'] = dict(arch='efficientnetv2_m', stage_repeats=(4, 8, 8, 16, 24, 32, 8),
                                                  stage_chs=(32, 64, 96, 192, 256, 512, 640), stem_size=32, **extra)
    del rows['efficientnet_b8'], rows['efficientnet_l2']  # re-added below in timm's order of names; same rows
    rows['efficientnet_b8'] = _scaled('efficientnet', _B_SCALES['b8'])
    rows['efficientnet_l2'] = _scaled('efficientnet', _B_SCALES['l2'])
    for name in ('es', 'el'):  # weight-pruned (sparse) checkpoints of the same architecture
        rows[f'efficientnet_{name}_pruned'] = _scaled('efficientnet_edge', _EDGE_SCALES[name])
    for name in ('b1', 'b2', 'b3'):  # channel-pruned: their own per-block widths
        rows[f'efficientnet_{name}_pruned'] = _scaled('efficientnet_pruned', _B_SCALES[name],
                                                      block_widths=PRUNED_WIDTHS[name], **_TF)
    rows.update({f'tf_efficientnetv2_{k}': _scaled('efficientnetv2_base', s, **_TF)
                 for k, s in _V2_BASE_SCALES.items()})
    rows.update({
        'efficientnet_b0_gn': dict(arch='efficientnet', norm_layer='groupnorm', norm_group_size=8),
        'efficientnet_b0_g8_gn': dict(arch='efficientnet', group_size=8, norm_layer='groupnorm', norm_group_size=8),
        'efficientnet_b0_g16_evos': dict(arch='efficientnet', group_size=16, channel_divisor=16),
        'efficientnet_b3_gn': _scaled('efficientnet', _B_SCALES['b3'], channel_divisor=16, norm_layer='groupnorm',
                                      norm_group_size=16),
        'efficientnet_b3_g8_gn': _scaled('efficientnet', _B_SCALES['b3'], group_size=8, channel_divisor=16,
                                         norm_layer='groupnorm', norm_group_size=16),
        'efficientnet_blur_b0': dict(arch='efficientnet', aa_layer='blurpc'),
        'efficientnet_x_b3': _scaled('efficientnet_x', (1.2, 1.4)),
        'efficientnet_x_b5': _scaled('efficientnet_x', (1.6, 2.2)),
        'efficientnet_h_b5': _scaled('efficientnet_h', (1.92, 2.2)),
        'efficientnetv2_rw_t': _scaled('efficientnetv2_s', (0.8, 0.9)),
        'gc_efficientnetv2_rw_t': _scaled('efficientnetv2_s', (0.8, 0.9), se_layer='gc'),
        'efficientnetv2_rw_s': dict(arch='efficientnetv2_rw'),
        'efficientnetv2_rw_m': _scaled('efficientnetv2_rw', (1.2, (1.2,) * 4 + (1.6,) * 2)),
        'fbnetc_100': dict(arch='fbnetc'),
        'spnasnet_100': dict(arch='spnasnet'),
        'mnasnet_small': dict(arch='mnasnet_small'),
        'mixnet_s': dict(arch='mixnet_s'),
        'tf_mixnet_s': dict(arch='mixnet_s', **_TF),
        'mobilenetv1_100': dict(arch='mobilenetv1'),
        'mobilenetv1_100h': dict(arch='mobilenetv1', head_conv=True),
        'mobilenetv1_125': dict(arch='mobilenetv1', channel_multiplier=1.25),
        'mobilenetv2_110d': _scaled('mobilenetv2', (1.1, 1.2), fix_stem=True, fix_first_last=True, head_rule='fixed'),
        'mobilenetv2_120d': _scaled('mobilenetv2', (1.2, 1.4), fix_stem=True, fix_first_last=True, head_rule='fixed'),
        'mobilenet_edgetpu_100': dict(arch='mobilenet_edgetpu'),
    })
    for width, scale in (('050', 0.5), ('075', 0.75), ('100', 1.0), ('140', 1.4)):
        rows[f'mnasnet_{width}'] = dict(arch='mnasnet_b1', channel_multiplier=scale)
        rows[f'semnasnet_{width}'] = dict(arch='mnasnet_a1', channel_multiplier=scale)
    for width, scale in (('035', 0.35), ('050', 0.5), ('075', 0.75), ('100', 1.0), ('140', 1.4)):
        rows[f'mobilenetv2_{width}'] = dict(arch='mobilenetv2', channel_multiplier=scale)
    for size, scale in _MIXNET_SCALES.items():
        rows[f'mixnet_{size}'] = _scaled('mixnet_m', scale)
        if size in ('m', 'l'):
            rows[f'tf_mixnet_{size}'] = _scaled('mixnet_m', scale, **_TF)
    rows.update({f'tinynet_{k}': _scaled('tinynet', s) for k, s in _TINYNET_SCALES.items()})
    for size, (chs, group, stem, stem_kernel, head) in _EDGETPU_V2_SIZES.items():
        row = dict(arch='mobilenet_edgetpu_v2', edgetpu_chs=chs, edgetpu_group_size=group, stem_size=stem,
                   stem_kernel_size=stem_kernel, head_chs=head)
        rows[f'mobilenet_edgetpu_v2_{size}'] = {k: v for k, v in row.items() if v != _EDGETPU_V2_DEFAULTS.get(k)}
    rows['test_efficientnet'] = dict(arch='test_efficientnet')
    for norm, suffix in (('groupnorm', 'gn'), ('layernorm', 'ln'), ('evonorm_s0', 'evos')):
        rows[f'test_efficientnet_{suffix}'] = dict(arch='test_efficientnet', norm_layer=norm, norm_group_size=8)
    return rows


VARIANTS: Dict[str, dict] = _variants()


def head_width(head_chs: int, head_rule: str, channel_multiplier: float, divisor: int = 8,
               round_limit: float = 0.9) -> int:
    """Width of the 1x1 head convolution: scaled with the network, fixed, or scaled but never below ``head_chs``.

    >>> head_width(1280, 'scale', 1.4), head_width(1280, 'at_least', 0.5), head_width(1280, 'fixed', 2.0)
    (1792, 1280, 1280)
    """
    if head_rule not in HEAD_RULES:
        raise ValueError(f'head_rule={head_rule!r} is not supported; valid: {HEAD_RULES}')
    scaled = round_channels(head_chs, channel_multiplier, divisor=divisor, round_limit=round_limit)
    if head_rule == 'scale':
        return scaled
    if head_rule == 'at_least':
        return max(head_chs, scaled)
    return head_chs


def norm_act_factory(norm_layer: str, bn_eps: float, bn_momentum: float, group_size: int) -> Optional[NormLayer]:
    """The norm + activation layer ``norm_layer`` names (None: the blocks' batch norm with ``bn_eps``/``bn_momentum``).

    >>> norm_act_factory('groupnorm', 1e-5, 0.1, 8)(32, act_layer='relu', apply_act=True).num_groups
    4
    """
    if norm_layer not in NORM_LAYERS:
        raise ValueError(f'norm_layer={norm_layer!r} is not supported; valid: {NORM_LAYERS}')
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f'norm_group_size must be an int >= 1, got {group_size!r}')
    if norm_layer == 'groupnorm':
        return partial(GroupNormAct, group_size=group_size)
    if norm_layer == 'layernorm':
        return LayerNormAct2d
    if norm_layer == 'evonorm_s0':
        return partial(EvoNorm2dS0, group_size=group_size)
    return None


def _aa_factory(aa_layer: Optional[str]) -> Optional[AaLayer]:
    if aa_layer not in AA_LAYERS:
        raise ValueError(f'aa_layer={aa_layer!r} is not supported; valid: {AA_LAYERS}')
    # 'blurpc': a 3-tap binomial blur over zero padding in place of each block's strided convolution
    return partial(BlurPool2d, pad_mode='constant') if aa_layer == 'blurpc' else None


class EfficientNet(EfficientTrunk):
    """Stem, MBConv / fused-MBConv / depthwise-separable stages, 1x1 head convolution, pooling, a linear classifier.

    >>> model = EfficientNet(ARCHS['mobilenetv2']['block_defs'], num_classes=10, channel_multiplier=0.35)
    >>> model(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 10])
    """

    head_layers, head_in_features = ('conv_head', 'bn2'), True

    def __init__(self, block_defs: Sequence[Sequence[str]], num_classes: int = 1000, in_chans: int = 3,
                 stem_size: int = 32, stem_kernel_size: int = 3, fix_stem: bool = False, head_chs: int = 1280,
                 head_rule: str = 'scale', head_conv: bool = True, channel_multiplier: float = 1.0,
                 depth_multiplier: Union[float, Sequence[float]] = 1.0, depth_trunc: str = 'ceil',
                 fix_first_last: bool = False, channel_divisor: int = 8, round_limit: float = 0.9,
                 group_size: Optional[int] = None, experts_multiplier: int = 1, act_layer: ActLayer = 'swish',
                 norm_layer: str = 'batchnorm', norm_group_size: int = 8, se_layer: str = 'se',
                 aa_layer: Optional[str] = None, block_widths: Optional[BlockWidths] = None, pad_type: str = '',
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1, output_stride: int = 32, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, global_pool: str = 'avg') -> None:
        super().__init__()
        check_model_args(num_classes, in_chans, output_stride, OUTPUT_STRIDES, channel_multiplier, depth_multiplier,
                         pad_type, drop_rate, drop_path_rate, global_pool)
        check_choice('se_layer', se_layer, SE_LAYERS)
        if isinstance(channel_divisor, bool) or not isinstance(channel_divisor, int) or channel_divisor < 1:
            raise ValueError(f'channel_divisor must be an int >= 1, got {channel_divisor!r}')
        head_features = head_width(head_chs, head_rule, channel_multiplier, channel_divisor, round_limit)
        norm_kwargs = dict(eps=bn_eps, momentum=bn_momentum)
        make_norm = norm_act_factory(norm_layer, bn_eps, bn_momentum, norm_group_size)
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        trunk_chs = self._init_trunk(
            block_defs, in_chans, stem_size, fix_stem, channel_multiplier, depth_multiplier, fix_first_last,
            act_layer, pad_type, norm_kwargs, SEConfig(layer=se_layer), output_stride, drop_path_rate,
            stem_kernel_size=stem_kernel_size, depth_trunc=depth_trunc, group_size=group_size,
            experts_multiplier=experts_multiplier, channel_divisor=channel_divisor, round_limit=round_limit,
            norm_layer=make_norm, aa_layer=_aa_factory(aa_layer), block_widths=block_widths)
        if not isinstance(head_conv, bool):
            raise TypeError(f'head_conv must be True or False, got {head_conv!r}')
        if head_conv:
            self.conv_head = create_conv2d(trunk_chs, head_features, 1, padding=pad_type)
            self.bn2 = (make_norm(head_features, act_layer=act_layer, apply_act=True) if make_norm is not None else
                        BatchNormAct2d(head_features, act_layer=act_layer, inplace=True, **norm_kwargs))
            self.num_features = head_features
        else:
            self.conv_head = nn.Identity()
            self.bn2 = nn.Identity()
            self.num_features = trunk_chs
        self.global_pool, self.classifier = create_classifier(self.num_features, num_classes, pool_type=global_pool)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        init_weights_goog(self)

    def group_matcher(self, coarse: bool = False) -> Dict[str, object]:
        """Parameter groups (stem, blocks, head) for layer-wise learning-rate decay, as timm names them.

        >>> sorted(model.group_matcher())  # doctest: +SKIP
        ['blocks', 'stem']
        """
        return dict(
            stem=r'^conv_stem|bn1',
            blocks=[(r'^blocks\.(\d+)' if coarse else r'^blocks\.(\d+)\.(\d+)', None), (r'conv_head|bn2', (99999,))],
        )

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier (``num_classes=0`` removes it) and optionally the pooling.

        >>> model.reset_classifier(0, '')  # doctest: +SKIP
        """
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f'num_classes must be an int >= 0, got {num_classes!r}')
        if global_pool is None:
            global_pool = self.global_pool.pool_type
        check_pool(num_classes, global_pool)
        reset_pool_classifier(self, num_classes, global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Unpooled head-convolution map, ``(B, num_features, H / 32, W / 32)`` at output_stride 32.

        >>> model.forward_features(torch.zeros(1, 3, 224, 224)).shape  # doctest: +SKIP
        torch.Size([1, 1280, 7, 7])
        """
        return self._after_trunk(self._forward_trunk(x))

    def _after_trunk(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv_head(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, dropout, classify; ``pre_logits=True`` stops before the classifier.

        >>> model.forward_head(torch.zeros(1, 1280, 7, 7), pre_logits=True).shape  # doctest: +SKIP
        torch.Size([1, 1280])
        """
        return self._classify(self.global_pool(x), pre_logits)



def _from_arch(arch: str, stage_repeats: Optional[Sequence[int]] = None, stage_chs: Optional[Sequence[int]] = None,
               edgetpu_chs: Optional[Sequence[int]] = None, edgetpu_group_size: int = 64,
               **kwargs: Any) -> EfficientNet:
    """An EfficientNet of architecture ``arch`` (a key of :data:`ARCHS`) with its defaults overridden by ``kwargs``;
    ``stage_repeats`` / ``stage_chs`` rewrite the architecture's per-stage repeats and widths, ``edgetpu_chs`` /
    ``edgetpu_group_size`` size the MobileNet-EdgeTPU-V2 layout."""
    if arch not in ARCHS:
        raise ValueError(f'unknown efficientnet architecture {arch!r}; valid: {sorted(ARCHS)}')
    args = {**ARCHS[arch], **kwargs}
    if arch == 'mobilenet_edgetpu_v2':
        chs = (16, 32, 48, 96, 144, 160, 192) if edgetpu_chs is None else tuple(edgetpu_chs)
        if len(chs) != 7:
            raise ValueError(f'edgetpu_chs needs 7 stage widths, got {chs}')
        args.setdefault('block_defs', _edgetpu_v2_stages(chs, edgetpu_group_size))
    elif edgetpu_chs is not None:
        raise ValueError(f'edgetpu_chs only applies to the mobilenet_edgetpu_v2 architecture, not {arch!r}')
    args['block_defs'] = with_stage_counts(args['block_defs'], stage_repeats, stage_chs)
    return EfficientNet(**args)


def _export(name: str, row: Dict[str, Any]) -> Tuple[str, ...]:
    """CondConv runs each sample's mixed kernel as one grouped convolution whose group count is the batch size:
    torch.export keeps it symbolic, ONNX's Conv takes only a constant group count, so no ONNX with a dynamic batch."""
    if row.get('arch') == 'efficientnet_condconv':
        return ('torch.export', 'dynamic_hw', 'compile')
    return ('torch.export', 'dynamic_hw', 'onnx', 'compile')


SPEC = FamilySpec(
    name='efficientnet', model=_from_arch, variants=VARIANTS, default_cfg=DEFAULT_CFG,
    feature_cls=('list', 'dict', 'hook', 'fx', 'getter'), default_feature_cls='list', output_strides=OUTPUT_STRIDES,
    export=_export,
    # counts and widths only: repeats, per-stage / per-block widths, rounding, norm groups, experts, epsilon
    size_args=('stage_repeats', 'stage_chs', 'edgetpu_chs', 'edgetpu_group_size', 'block_widths', 'stem_size',
               'stem_kernel_size', 'head_rule', 'fix_first_last', 'channel_divisor', 'round_limit', 'depth_trunc',
               'norm_group_size', 'experts_multiplier', 'bn_eps'))
