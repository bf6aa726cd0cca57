"""EfficientNet (B0-B7, Lite, V2) and MobileNetV2: one model class, architectures as stage strings.

Every variant is a row of ``VARIANTS`` naming an architecture of ``ARCHS`` (its stage strings, see
:mod:`featzoo.layers.efficientnet_blocks` for the notation) plus width/depth multipliers. ``tf_`` rows use
TensorFlow 'SAME' padding and batch-norm epsilon 1e-3, as the ported TensorFlow weights need.

Parameter names equal timm's ``EfficientNet`` so its checkpoints load unchanged.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from ..family import FamilySpec
from ..layers.activations import ActLayer
from ..layers.efficientnet_blocks import (
    EfficientTrunk, SEConfig, check_model_args, check_pool, init_weights_goog, round_channels)
from ..layers.norm import BatchNormAct2d
from ..layers.padding import create_conv2d
from ..layers.pooling import create_classifier

OUTPUT_STRIDES = (8, 16, 32)
DEFAULT_CFG = dict(
    input_size=(3, 224, 224), interpolation='bicubic', crop_pct=0.875, crop_mode='center',
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), first_conv='conv_stem', classifier='classifier')

HEAD_RULES = ('scale', 'fixed', 'at_least')

# Default constructor arguments per architecture; a variant row overrides them, user arguments override the row.
ARCHS: Dict[str, dict] = {
    'efficientnet': dict(
        block_defs=(
            ('ds_r1_k3_s1_e1_c16_se0.25',), ('ir_r2_k3_s2_e6_c24_se0.25',), ('ir_r2_k5_s2_e6_c40_se0.25',),
            ('ir_r3_k3_s2_e6_c80_se0.25',), ('ir_r3_k5_s1_e6_c112_se0.25',), ('ir_r4_k5_s2_e6_c192_se0.25',),
            ('ir_r1_k3_s1_e6_c320_se0.25',)),
        stem_size=32, head_chs=1280, head_rule='scale', act_layer='swish'),
    'efficientnet_lite': dict(
        block_defs=(
            ('ds_r1_k3_s1_e1_c16',), ('ir_r2_k3_s2_e6_c24',), ('ir_r2_k5_s2_e6_c40',), ('ir_r3_k3_s2_e6_c80',),
            ('ir_r3_k5_s1_e6_c112',), ('ir_r4_k5_s2_e6_c192',), ('ir_r1_k3_s1_e6_c320',)),
        stem_size=32, fix_stem=True, fix_first_last=True, head_chs=1280, head_rule='fixed', act_layer='relu6'),
    'mobilenetv2': dict(
        block_defs=(
            ('ds_r1_k3_s1_c16',), ('ir_r2_k3_s2_e6_c24',), ('ir_r3_k3_s2_e6_c32',), ('ir_r4_k3_s2_e6_c64',),
            ('ir_r3_k3_s1_e6_c96',), ('ir_r3_k3_s2_e6_c160',), ('ir_r1_k3_s1_e6_c320',)),
        stem_size=32, head_chs=1280, head_rule='at_least', act_layer='relu6'),
    'efficientnetv2_s': dict(
        block_defs=(
            ('cn_r2_k3_s1_e1_c24_skip',), ('er_r4_k3_s2_e4_c48',), ('er_r4_k3_s2_e4_c64',),
            ('ir_r6_k3_s2_e4_c128_se0.25',), ('ir_r9_k3_s1_e6_c160_se0.25',), ('ir_r15_k3_s2_e6_c256_se0.25',)),
        stem_size=24, head_chs=1280, head_rule='scale', act_layer='silu'),
    'efficientnetv2_m': dict(
        block_defs=(
            ('cn_r3_k3_s1_e1_c24_skip',), ('er_r5_k3_s2_e4_c48',), ('er_r5_k3_s2_e4_c80',),
            ('ir_r7_k3_s2_e4_c160_se0.25',), ('ir_r14_k3_s1_e6_c176_se0.25',), ('ir_r18_k3_s2_e6_c304_se0.25',),
            ('ir_r5_k3_s1_e6_c512_se0.25',)),
        stem_size=24, head_chs=1280, head_rule='fixed', act_layer='silu'),
    'efficientnetv2_l': dict(
        block_defs=(
            ('cn_r4_k3_s1_e1_c32_skip',), ('er_r7_k3_s2_e4_c64',), ('er_r7_k3_s2_e4_c96',),
            ('ir_r10_k3_s2_e4_c192_se0.25',), ('ir_r19_k3_s1_e6_c224_se0.25',), ('ir_r25_k3_s2_e6_c384_se0.25',),
            ('ir_r7_k3_s1_e6_c640_se0.25',)),
        stem_size=32, head_chs=1280, head_rule='fixed', act_layer='silu'),
}

_TF = dict(pad_type='same', bn_eps=1e-3)
# MobileNetV2 '-d' variants keep stem, head and first/last stage depth unscaled.
_FIXED_ENDS = dict(fix_stem=True, fix_first_last=True, head_rule='fixed')

VARIANTS: Dict[str, dict] = {
    'efficientnet_b0': dict(arch='efficientnet', channel_multiplier=1.0, depth_multiplier=1.0),
    'efficientnet_b1': dict(arch='efficientnet', channel_multiplier=1.0, depth_multiplier=1.1),
    'efficientnet_b2': dict(arch='efficientnet', channel_multiplier=1.1, depth_multiplier=1.2),
    'efficientnet_b3': dict(arch='efficientnet', channel_multiplier=1.2, depth_multiplier=1.4),
    'efficientnet_b4': dict(arch='efficientnet', channel_multiplier=1.4, depth_multiplier=1.8),
    'efficientnet_b5': dict(arch='efficientnet', channel_multiplier=1.6, depth_multiplier=2.2),
    'efficientnet_b6': dict(arch='efficientnet', channel_multiplier=1.8, depth_multiplier=2.6),
    'efficientnet_b7': dict(arch='efficientnet', channel_multiplier=2.0, depth_multiplier=3.1),
    'efficientnet_lite0': dict(arch='efficientnet_lite', channel_multiplier=1.0, depth_multiplier=1.0),
    'efficientnet_lite1': dict(arch='efficientnet_lite', channel_multiplier=1.0, depth_multiplier=1.1),
    'efficientnet_lite2': dict(arch='efficientnet_lite', channel_multiplier=1.1, depth_multiplier=1.2),
    'efficientnet_lite3': dict(arch='efficientnet_lite', channel_multiplier=1.2, depth_multiplier=1.4),
    'efficientnet_lite4': dict(arch='efficientnet_lite', channel_multiplier=1.4, depth_multiplier=1.8),
    'tf_efficientnet_b0': dict(arch='efficientnet', channel_multiplier=1.0, depth_multiplier=1.0, **_TF),
    'tf_efficientnet_b1': dict(arch='efficientnet', channel_multiplier=1.0, depth_multiplier=1.1, **_TF),
    'tf_efficientnet_b2': dict(arch='efficientnet', channel_multiplier=1.1, depth_multiplier=1.2, **_TF),
    'tf_efficientnet_b3': dict(arch='efficientnet', channel_multiplier=1.2, depth_multiplier=1.4, **_TF),
    'tf_efficientnet_b4': dict(arch='efficientnet', channel_multiplier=1.4, depth_multiplier=1.8, **_TF),
    'tf_efficientnet_b5': dict(arch='efficientnet', channel_multiplier=1.6, depth_multiplier=2.2, **_TF),
    'tf_efficientnet_b6': dict(arch='efficientnet', channel_multiplier=1.8, depth_multiplier=2.6, **_TF),
    'tf_efficientnet_b7': dict(arch='efficientnet', channel_multiplier=2.0, depth_multiplier=3.1, **_TF),
    'tf_efficientnet_lite0': dict(arch='efficientnet_lite', channel_multiplier=1.0, depth_multiplier=1.0, **_TF),
    'tf_efficientnet_lite1': dict(arch='efficientnet_lite', channel_multiplier=1.0, depth_multiplier=1.1, **_TF),
    'tf_efficientnet_lite2': dict(arch='efficientnet_lite', channel_multiplier=1.1, depth_multiplier=1.2, **_TF),
    'tf_efficientnet_lite3': dict(arch='efficientnet_lite', channel_multiplier=1.2, depth_multiplier=1.4, **_TF),
    'tf_efficientnet_lite4': dict(arch='efficientnet_lite', channel_multiplier=1.4, depth_multiplier=1.8, **_TF),
    'tf_efficientnetv2_s': dict(arch='efficientnetv2_s', **_TF),
    'tf_efficientnetv2_m': dict(arch='efficientnetv2_m', **_TF),
    'tf_efficientnetv2_l': dict(arch='efficientnetv2_l', **_TF),
    'mobilenetv2_035': dict(arch='mobilenetv2', channel_multiplier=0.35),
    'mobilenetv2_050': dict(arch='mobilenetv2', channel_multiplier=0.5),
    'mobilenetv2_100': dict(arch='mobilenetv2', channel_multiplier=1.0),
    'mobilenetv2_110d': dict(arch='mobilenetv2', channel_multiplier=1.1, depth_multiplier=1.2, **_FIXED_ENDS),
    'mobilenetv2_120d': dict(arch='mobilenetv2', channel_multiplier=1.2, depth_multiplier=1.4, **_FIXED_ENDS),
    'mobilenetv2_140': dict(arch='mobilenetv2', channel_multiplier=1.4),
}


def head_width(head_chs: int, head_rule: str, channel_multiplier: float) -> int:
    """Width of the 1x1 head convolution: scaled with the network, fixed, or scaled but never below ``head_chs``.

    >>> head_width(1280, 'scale', 1.4), head_width(1280, 'at_least', 0.5), head_width(1280, 'fixed', 2.0)
    (1792, 1280, 1280)
    """
    if head_rule not in HEAD_RULES:
        raise ValueError(f'head_rule={head_rule!r} is not supported; valid: {HEAD_RULES}')
    scaled = round_channels(head_chs, channel_multiplier)
    if head_rule == 'scale':
        return scaled
    if head_rule == 'at_least':
        return max(head_chs, scaled)
    return head_chs


class EfficientNet(EfficientTrunk):
    """Stem, MBConv / fused-MBConv stages, 1x1 head convolution, pooling and a linear classifier.

    >>> model = EfficientNet(ARCHS['mobilenetv2']['block_defs'], num_classes=10, channel_multiplier=0.35)
    >>> model(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 10])
    """

    def __init__(
            self,
            block_defs: Sequence[Sequence[str]],
            num_classes: int = 1000,
            in_chans: int = 3,
            stem_size: int = 32,
            fix_stem: bool = False,
            head_chs: int = 1280,
            head_rule: str = 'scale',
            channel_multiplier: float = 1.0,
            depth_multiplier: float = 1.0,
            fix_first_last: bool = False,
            act_layer: ActLayer = 'swish',
            pad_type: str = '',
            bn_eps: float = 1e-5,
            bn_momentum: float = 0.1,
            output_stride: int = 32,
            drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
            global_pool: str = 'avg',
    ) -> None:
        super().__init__()
        check_model_args(num_classes, in_chans, output_stride, OUTPUT_STRIDES, channel_multiplier, depth_multiplier,
                         pad_type, drop_rate, drop_path_rate, global_pool)
        num_features = head_width(head_chs, head_rule, channel_multiplier)
        norm_kwargs = dict(eps=bn_eps, momentum=bn_momentum)
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        trunk_chs = self._init_trunk(
            block_defs, in_chans, stem_size, fix_stem, channel_multiplier, depth_multiplier, fix_first_last,
            act_layer, pad_type, norm_kwargs, SEConfig(), output_stride, drop_path_rate)
        self.conv_head = create_conv2d(trunk_chs, num_features, 1, padding=pad_type)
        self.bn2 = BatchNormAct2d(num_features, act_layer=act_layer, inplace=True, **norm_kwargs)
        self.num_features = num_features
        self.global_pool, self.classifier = create_classifier(num_features, num_classes, pool_type=global_pool)
        self.head_hidden_size = num_features * self.global_pool.feat_mult()
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

    def no_weight_decay(self) -> Set[str]:
        """Parameter names to exclude from weight decay (none here; norms are excluded by the optimizer).

        >>> model.no_weight_decay()  # doctest: +SKIP
        set()
        """
        return set()

    def get_classifier(self) -> nn.Module:
        """The final linear layer (``nn.Identity`` when ``num_classes == 0``).

        >>> model.get_classifier()  # doctest: +SKIP
        Linear(in_features=1280, out_features=1000, bias=True)
        """
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier (``num_classes=0`` removes it) and optionally the pooling.

        >>> model.reset_classifier(0, '')  # doctest: +SKIP
        """
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f'num_classes must be an int >= 0, got {num_classes!r}')
        if global_pool is None:
            global_pool = self.global_pool.pool_type
        check_pool(num_classes, global_pool)
        ref = self.conv_stem.weight
        self.num_classes = num_classes
        global_pool_mod, classifier = create_classifier(self.num_features, num_classes, pool_type=global_pool)
        self.global_pool = global_pool_mod.train(self.training)
        self.classifier = classifier.to(device=ref.device, dtype=ref.dtype).train(self.training)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Unpooled head-convolution map, ``(B, num_features, H / 32, W / 32)`` at output_stride 32.

        >>> model.forward_features(torch.zeros(1, 3, 224, 224)).shape  # doctest: +SKIP
        torch.Size([1, 1280, 7, 7])
        """
        x = self._forward_trunk(x)
        return self.bn2(self.conv_head(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, dropout, classify; ``pre_logits=True`` stops before the classifier.

        >>> model.forward_head(torch.zeros(1, 1280, 7, 7), pre_logits=True).shape  # doctest: +SKIP
        torch.Size([1, 1280])
        """
        x = self.global_pool(x)
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, Sequence[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Outputs of the feature levels in ``indices`` (None = all, n = last n), and the final features.

        ``norm`` has no effect (no final norm separates the levels from the head). The head convolution runs only
        when every stage ran.

        >>> feats = model.forward_intermediates(torch.zeros(1, 3, 64, 64), intermediates_only=True)  # doctest: +SKIP
        """
        if output_fmt != 'NCHW':
            raise ValueError(f"output_fmt={output_fmt!r} is not supported here; valid: 'NCHW'")
        x, intermediates, ran_all = self._trunk_intermediates(x, indices, stop_early)
        if intermediates_only:
            return intermediates
        if ran_all:
            x = self.bn2(self.conv_head(x))
        return x, intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, Sequence[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the stages after the last selected level; the head convolution and classifier go with them.

        >>> model.prune_intermediate_layers([0, 1])  # doctest: +SKIP
        [0, 1]
        """
        taken, dropped, num_chs = self._prune_trunk(indices)
        if prune_norm or prune_head or dropped:
            self.conv_head = nn.Identity()
            self.bn2 = nn.Identity()
            self.num_features = num_chs
            self.reset_classifier(0, '')
        return taken


def _from_arch(arch: str, **kwargs: Any) -> EfficientNet:
    """A EfficientNet of architecture ``arch`` (a key of :data:`ARCHS`) with its defaults overridden by ``kwargs``."""
    if arch not in ARCHS:
        raise ValueError(f'unknown efficientnet architecture {arch!r}; valid: {sorted(ARCHS)}')
    return EfficientNet(**{**ARCHS[arch], **kwargs})


SPEC = FamilySpec(
    name='efficientnet', model=_from_arch, variants=VARIANTS, default_cfg=DEFAULT_CFG,
    feature_cls=('list', 'dict', 'hook', 'fx', 'getter'), default_feature_cls='list', output_strides=OUTPUT_STRIDES,
    export=('torch.export', 'dynamic_hw', 'onnx', 'compile'))
