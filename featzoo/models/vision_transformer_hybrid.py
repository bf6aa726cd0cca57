"""Hybrid Vision Transformers: a ViT whose patch embedding is a CNN trunk (``patch_embed.backbone``) followed by a
projection to tokens (``patch_embed.proj``).

Trunks, by the row's ``trunk``:

- ``'resnetv2'``: BiT-style ResNetV2 without pre-activation, 'SAME'-padded weight-standardized convolutions and
  group norm (:class:`~featzoo.models.resnetv2.ResNetV2`); ``trunk_layers=()`` is its stem alone (R+ViT-Ti).
- ``'resnet'``: a ResNet-D of :mod:`featzoo.models.resnet` (``trunk_variant``) cut after ``trunk_stages`` stages.
- ``'conv_stem'``: MobileCLIP's convolutional stem (three patchifying convolutions, the last one the projection).

The transformer is :class:`~featzoo.models.vision_transformer.VisionTransformer`, so everything it offers (dynamic
input sizes, ``forward_intermediates``, the simple feature pyramid) holds here; the token grid's stride is the
trunk's stride times the patch.
"""
from __future__ import annotations

import inspect
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from ..family import FamilySpec
from ..features.notrace import register_notrace_module
from ..layers.hybrid_embed import HybridEmbed
from ..layers.norm import BatchNormAct2d
from ..layers.std_conv import StdConv2dSame
from .resnet import VARIANTS as RESNET_VARIANTS
from .resnet import ResNet
from .resnetv2 import ResNetV2, conv_factory, create_stem, norm_factory
from .vision_transformer import VisionTransformer, checkpoint_filter_fn, create_feature_pyramid

DEFAULT_CFG = dict(
    input_size=(3, 224, 224), interpolation='bicubic', crop_pct=0.9, crop_mode='center',
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), first_conv='patch_embed.backbone.stem.conv', classifier='head')

TRUNKS = ('resnetv2', 'resnet', 'conv_stem')

# its 'SAME' padding is computed from the input size, which FX cannot branch on: traced as one call
register_notrace_module(StdConv2dSame)
_RESNETV2_CHANNELS = (256, 512, 1024, 2048)
_RESNETV2_STEM = 64


class ConvStemLayer(nn.Module):
    """One patchifying convolution (``conv``) and, except in the last layer, a batch norm with GELU (``bn``)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, last: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride=kernel_size, bias=last)
        self.bn = nn.Identity() if last else BatchNormAct2d(out_chs, act_layer='gelu')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


def conv_stem(in_chans: int, channels: Sequence[int], kernel_sizes: Sequence[int]) -> nn.Sequential:
    """MobileCLIP's stem: non-overlapping convolutions (kernel = stride), the last with a bias and no norm.

    >>> conv_stem(3, (8, 8, 16), (4, 2, 2))(torch.ones(1, 3, 32, 32)).shape
    torch.Size([1, 16, 2, 2])
    """
    widths = [in_chans] + list(channels)
    return nn.Sequential(*[ConvStemLayer(widths[i], widths[i + 1], k, last=i == len(channels) - 1)
                           for i, k in enumerate(kernel_sizes)])


def build_trunk(trunk: str, in_chans: int, trunk_layers: Sequence[int] = (), trunk_variant: Optional[str] = None,
                trunk_stages: int = 4, embed_dim: int = 768) -> Tuple[nn.Module, int, int]:
    """The CNN trunk of a row, its stride and its output width.

    >>> _, stride, width = build_trunk('resnetv2', 3, trunk_layers=(3, 4, 9)); stride, width
    (16, 1024)
    """
    if trunk == 'resnetv2':
        layers = tuple(trunk_layers)
        if len(layers) > len(_RESNETV2_CHANNELS):
            raise ValueError(f'trunk_layers={layers} has {len(layers)} stages; the ResNetV2 trunk has at most '
                             f'{len(_RESNETV2_CHANNELS)}')
        conv_layer, norm_layer = conv_factory('std_same', 1e-8), norm_factory('group')
        if not layers:
            # R+ViT-Ti: the stem alone, registered directly under the embedding as timm does
            stem, _ = create_stem(in_chans, _RESNETV2_STEM, 'same', False, conv_layer, norm_layer)
            return stem, 4, _RESNETV2_STEM
        backbone = ResNetV2(layers, num_classes=0, global_pool='', in_chans=in_chans, preact=False,
                            stem_type='same', conv='std_same', std_eps=1e-8, norm='group')
        return backbone, 4 * 2 ** (len(layers) - 1), backbone.num_features
    if trunk == 'resnet':
        if trunk_variant not in RESNET_VARIANTS:
            raise ValueError(f'trunk_variant={trunk_variant!r} is not a resnet variant; e.g. resnet26d, resnet50d')
        if isinstance(trunk_stages, bool) or trunk_stages not in (1, 2, 3, 4):
            raise ValueError(f'trunk_stages={trunk_stages!r} is invalid; valid: 1, 2, 3, 4')
        backbone = ResNet(**RESNET_VARIANTS[trunk_variant], num_classes=0, global_pool='', in_chans=in_chans)
        level = backbone.feature_info[trunk_stages]
        if trunk_stages < 4:
            backbone.prune_intermediate_layers((trunk_stages,))
        return backbone, level['reduction'], level['num_chs']
    if trunk == 'conv_stem':
        kernels = (4, 2, 2)
        return conv_stem(in_chans, (embed_dim // 4, embed_dim // 4, embed_dim), kernels), 16, embed_dim
    raise ValueError(f'unknown trunk {trunk!r}; valid: {TRUNKS}')


# the transformer's own arguments, passed through; the embedding is the trunk's
_VIT_ARGS = frozenset(inspect.signature(VisionTransformer).parameters) - {'embed_layer', 'dynamic_img_pad'}


def vision_transformer_hybrid(trunk: str, trunk_layers: Sequence[int] = (), trunk_variant: Optional[str] = None,
                              trunk_stages: int = 4, in_chans: int = 3, embed_dim: int = 768, patch_size: int = 1,
                              output_stride: Optional[int] = None, **kwargs: Any) -> VisionTransformer:
    """A :class:`VisionTransformer` embedding images with the CNN ``trunk`` (see the module docstring); the other
    arguments are the ViT's.

    >>> m = vision_transformer_hybrid('resnetv2', trunk_layers=(), patch_size=8, embed_dim=32, depth=1, num_heads=2,
    ...                               img_size=64)
    >>> m.feature_info[0]['reduction'], m.forward_features(torch.ones(1, 3, 64, 64)).shape
    (32, torch.Size([1, 5, 32]))
    """
    unknown = sorted(set(kwargs) - _VIT_ARGS)
    if unknown:
        valid = sorted(_VIT_ARGS | {'trunk', 'trunk_layers', 'trunk_variant', 'trunk_stages', 'in_chans', 'embed_dim',
                                    'patch_size', 'output_stride'})
        raise TypeError(f'vision_transformer_hybrid got unexpected argument(s) {unknown}; valid: {valid}')
    backbone, stride, width = build_trunk(trunk, in_chans, trunk_layers, trunk_variant, trunk_stages, embed_dim)
    project = trunk != 'conv_stem'  # MobileCLIP's last stem convolution is the projection

    def embed_layer(img_size: Any, patch_size: Any, in_chans: int, embed_dim: int, bias: bool) -> HybridEmbed:
        return HybridEmbed(backbone, feature_ratio=stride, feature_dim=width, img_size=img_size,
                           patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim, bias=bias, proj=project)

    return VisionTransformer(in_chans=in_chans, embed_dim=embed_dim, patch_size=patch_size, embed_layer=embed_layer,
                             output_stride=output_stride, **kwargs)


def _row(trunk: str, embed_dim: int, depth: int, num_heads: int, **kwargs: Any) -> Dict[str, Any]:
    return dict(trunk=trunk, embed_dim=embed_dim, depth=depth, num_heads=num_heads, **kwargs)


_R26 = dict(trunk_layers=(2, 2, 2, 2))
_R50_S16 = dict(trunk_layers=(3, 4, 9))
_R50_S32 = dict(trunk_layers=(3, 4, 6, 3))
_TINY = dict(trunk_layers=(), patch_size=8)

VARIANTS: Dict[str, Dict[str, Any]] = {
    'vit_tiny_r_s16_p8_224': _row('resnetv2', 192, 12, 3, **_TINY),
    'vit_tiny_r_s16_p8_384': _row('resnetv2', 192, 12, 3, **_TINY, img_size=384),
    'vit_small_r26_s32_224': _row('resnetv2', 384, 12, 6, **_R26),
    'vit_small_r26_s32_384': _row('resnetv2', 384, 12, 6, **_R26, img_size=384),
    'vit_base_r26_s32_224': _row('resnetv2', 768, 12, 12, **_R26),
    'vit_base_r50_s16_224': _row('resnetv2', 768, 12, 12, **_R50_S16),
    'vit_base_r50_s16_384': _row('resnetv2', 768, 12, 12, **_R50_S16, img_size=384),
    'vit_large_r50_s32_224': _row('resnetv2', 1024, 24, 16, **_R50_S32),
    'vit_large_r50_s32_384': _row('resnetv2', 1024, 24, 16, **_R50_S32, img_size=384),
    'vit_small_resnet26d_224': _row('resnet', 768, 8, 8, trunk_variant='resnet26d', mlp_ratio=3),
    'vit_small_resnet50d_s16_224': _row('resnet', 768, 8, 8, trunk_variant='resnet50d', trunk_stages=3,
                                        mlp_ratio=3),
    'vit_base_resnet26d_224': _row('resnet', 768, 12, 12, trunk_variant='resnet26d'),
    'vit_base_resnet50d_224': _row('resnet', 768, 12, 12, trunk_variant='resnet50d'),
    'vit_base_mci_224': _row('conv_stem', 768, 12, 12, no_embed_class=True),
}


def total_stride(variant: str, row: Mapping[str, Any]) -> int:
    """The stride of the token grid: the trunk's stride times the patch.

    >>> total_stride('vit_tiny_r_s16_p8_224', VARIANTS['vit_tiny_r_s16_p8_224'])
    32
    """
    trunk, patch = row['trunk'], row.get('patch_size', 1)
    if trunk == 'resnetv2':
        layers = row.get('trunk_layers', ())
        return (4 * 2 ** (len(layers) - 1) if layers else 4) * patch
    if trunk == 'resnet':
        return 2 ** (row.get('trunk_stages', 4) + 1) * patch
    return 16 * patch


def head_is_projection(variant: str, row: Mapping[str, Any], tag: Mapping[str, Any]) -> bool:
    """True for MobileCLIP's image towers, whose 512-wide head projects into the text tower's space.

    >>> head_is_projection('vit_base_mci_224', VARIANTS['vit_base_mci_224'], dict(tag='apple_mclip', num_classes=512))
    True
    """
    return row['trunk'] == 'conv_stem' and tag.get('num_classes', 0) > 0 and 'mclip' in tag.get('tag', '')


SPEC = FamilySpec(
    name='vision_transformer_hybrid', model=vision_transformer_hybrid, variants=VARIANTS, default_cfg=DEFAULT_CFG,
    feature_cls=('getter', 'fx'), default_feature_cls='getter',
    output_strides=lambda variant, row: (total_stride(variant, row),),
    default_out_indices=3,  # timm's default for these models: the last three blocks
    input_multiple=total_stride, min_input_size=total_stride, img_size_arg='img_size',
    size_args=('trunk_layers', 'trunk_variant'),
    export=('torch.export', 'onnx', 'compile'),
    checkpoint_filter=checkpoint_filter_fn, feature_pyramid=create_feature_pyramid,
    head_is_projection=head_is_projection)
