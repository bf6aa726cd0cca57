"""MobileNetV3 (large, small): the EfficientNet trunk with MobileNetV3's 'efficient head'.

The head pools first, then runs a 1x1 convolution with bias and an activation (no norm) before the classifier, so
``forward_features`` returns the last stage's map and ``head_hidden_size`` (the pre-logits width) differs from
``num_features``. Squeeze-excite uses a hard-sigmoid gate, ReLU inside, and a width rounded to a multiple of 8 of
the expanded channels. Stage strings use the notation of :mod:`featzoo.layers.efficientnet_blocks`.

Parameter names equal timm's ``MobileNetV3`` so its checkpoints load unchanged.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from ..family import FamilySpec
from ..layers.activations import ActLayer, create_act_layer
from ..layers.efficientnet_blocks import (
    EfficientTrunk, SEConfig, check_model_args, check_pool, init_weights_goog)
from ..layers.padding import create_conv2d
from ..layers.pooling import SelectAdaptivePool2d

OUTPUT_STRIDES = (8, 16, 32)
DEFAULT_CFG = dict(
    input_size=(3, 224, 224), interpolation='bicubic', crop_pct=0.875, crop_mode='center',
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), first_conv='conv_stem', classifier='classifier')

MNV3_SE = SEConfig(from_expanded=True, round_divisible=True, gate_layer='hard_sigmoid', force_act='relu')

# Default constructor arguments per architecture; a variant row overrides them, user arguments override the row.
ARCHS: Dict[str, dict] = {
    'large': dict(
        block_defs=(
            ('ds_r1_k3_s1_e1_c16_nre',), ('ir_r1_k3_s2_e4_c24_nre', 'ir_r1_k3_s1_e3_c24_nre'),
            ('ir_r3_k5_s2_e3_c40_se0.25_nre',), ('ir_r1_k3_s2_e6_c80', 'ir_r1_k3_s1_e2.5_c80', 'ir_r2_k3_s1_e2.3_c80'),
            ('ir_r2_k3_s1_e6_c112_se0.25',), ('ir_r3_k5_s2_e6_c160_se0.25',), ('cn_r1_k1_s1_c960',)),
        head_hidden=1280),
    'small': dict(
        block_defs=(
            ('ds_r1_k3_s2_e1_c16_se0.25_nre',), ('ir_r1_k3_s2_e4.5_c24_nre', 'ir_r1_k3_s1_e3.67_c24_nre'),
            ('ir_r1_k5_s2_e4_c40_se0.25', 'ir_r2_k5_s1_e6_c40_se0.25'), ('ir_r2_k5_s1_e3_c48_se0.25',),
            ('ir_r3_k5_s2_e6_c96_se0.25',), ('cn_r1_k1_s1_c576',)),
        head_hidden=1024),
}

_TF = dict(pad_type='same', bn_eps=1e-3)

VARIANTS: Dict[str, dict] = {
    'mobilenetv3_large_075': dict(arch='large', channel_multiplier=0.75),
    'mobilenetv3_large_100': dict(arch='large', channel_multiplier=1.0),
    'mobilenetv3_small_050': dict(arch='small', channel_multiplier=0.5),
    'mobilenetv3_small_075': dict(arch='small', channel_multiplier=0.75),
    'mobilenetv3_small_100': dict(arch='small', channel_multiplier=1.0),
    'tf_mobilenetv3_large_100': dict(arch='large', channel_multiplier=1.0, **_TF),
    'tf_mobilenetv3_small_100': dict(arch='small', channel_multiplier=1.0, **_TF),
}


class MobileNetV3(EfficientTrunk):
    """Stem, inverted-residual stages, then pool -> 1x1 conv (bias) -> activation -> classifier.

    >>> model = MobileNetV3(ARCHS['small']['block_defs'], num_classes=10, channel_multiplier=0.5)
    >>> model(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 10])
    """

    def __init__(
            self,
            block_defs: Sequence[Sequence[str]],
            num_classes: int = 1000,
            in_chans: int = 3,
            stem_size: int = 16,
            fix_stem: Optional[bool] = None,
            head_hidden: int = 1280,
            head_bias: bool = True,
            channel_multiplier: float = 1.0,
            depth_multiplier: float = 1.0,
            act_layer: ActLayer = 'hard_swish',
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
        if fix_stem is None:
            # The published narrow models keep the 16-channel stem (timm's rule).
            fix_stem = channel_multiplier < 0.75
        norm_kwargs = dict(eps=bn_eps, momentum=bn_momentum)
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.num_features = self._init_trunk(
            block_defs, in_chans, stem_size, fix_stem, channel_multiplier, depth_multiplier, False, act_layer,
            pad_type, norm_kwargs, MNV3_SE, output_stride, drop_path_rate)
        self.head_hidden_size = head_hidden
        self.global_pool = SelectAdaptivePool2d(global_pool)
        self.conv_head = create_conv2d(self.num_features * self.global_pool.feat_mult(), head_hidden, 1,
                                       padding=pad_type, bias=head_bias)
        self.norm_head = nn.Identity()
        self.act2 = create_act_layer(act_layer, inplace=True)
        self.flatten = nn.Flatten(1) if global_pool else nn.Identity()
        self.classifier = nn.Linear(head_hidden, num_classes) if num_classes > 0 else nn.Identity()
        init_weights_goog(self)

    def group_matcher(self, coarse: bool = False) -> Dict[str, object]:
        """Parameter groups (stem, blocks) for layer-wise learning-rate decay, as timm names them.

        >>> sorted(model.group_matcher())  # doctest: +SKIP
        ['blocks', 'stem']
        """
        return dict(stem=r'^conv_stem|bn1', blocks=r'^blocks\.(\d+)' if coarse else r'^blocks\.(\d+)\.(\d+)')

    def no_weight_decay(self) -> Set[str]:
        """Parameter names to exclude from weight decay (none here).

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
        x = self.flatten(x)
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

        ``norm`` has no effect (there is no final norm).

        >>> feats = model.forward_intermediates(torch.zeros(1, 3, 64, 64), intermediates_only=True)  # doctest: +SKIP
        """
        if output_fmt != 'NCHW':
            raise ValueError(f"output_fmt={output_fmt!r} is not supported here; valid: 'NCHW'")
        x, intermediates, _ = self._trunk_intermediates(x, indices, stop_early)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, Sequence[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the stages after the last selected level; the head goes too when pruned or asked for.

        >>> model.prune_intermediate_layers([0, 1])  # doctest: +SKIP
        [0, 1]
        """
        taken, dropped, num_chs = self._prune_trunk(indices)
        if dropped:
            self.num_features = num_chs
        if dropped or prune_head:
            self.conv_head = nn.Identity()
            self.norm_head = nn.Identity()
            self.act2 = nn.Identity()
            self.reset_classifier(0, '')
        return taken


def _from_arch(arch: str, **kwargs: Any) -> MobileNetV3:
    """A MobileNetV3 of architecture ``arch`` (a key of :data:`ARCHS`) with its defaults overridden by ``kwargs``."""
    if arch not in ARCHS:
        raise ValueError(f'unknown mobilenetv3 architecture {arch!r}; valid: {sorted(ARCHS)}')
    return MobileNetV3(**{**ARCHS[arch], **kwargs})


SPEC = FamilySpec(
    name='mobilenetv3', model=_from_arch, variants=VARIANTS, default_cfg=DEFAULT_CFG,
    feature_cls=('list', 'dict', 'hook', 'fx', 'getter'), default_feature_cls='list', output_strides=OUTPUT_STRIDES,
    export=('torch.export', 'dynamic_hw', 'onnx', 'compile'))
