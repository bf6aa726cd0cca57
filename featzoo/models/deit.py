"""DeiT (Data-efficient Image Transformers, with and without the distillation token) and DeiT III.

Every DeiT is a :class:`~featzoo.models.vision_transformer.VisionTransformer` row: the distilled models add a
distillation token and a second head (their outputs averaged at inference), DeiT III moves the position embedding
off the class token and adds layer scale. Parameter names follow timm's, so its checkpoints load unchanged.

>>> SPEC.build('deit_tiny_distilled_patch16_224', depth=1).num_prefix_tokens
2
"""
from __future__ import annotations

from typing import Any, Dict

from .vision_transformer import vit_family_spec, vit_row

DEFAULT_CFG = dict(
    input_size=(3, 224, 224), interpolation='bicubic', crop_pct=0.9, crop_mode='center',
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), first_conv='patch_embed.proj', classifier='head')

_DEIT3 = dict(no_embed_class=True, init_values=1e-6)

VARIANTS: Dict[str, Dict[str, Any]] = {
    'deit3_base_patch16_224': vit_row(16, 768, 12, 12, **_DEIT3),
    'deit3_base_patch16_384': vit_row(16, 768, 12, 12, **_DEIT3, img_size=384),
    'deit3_huge_patch14_224': vit_row(14, 1280, 32, 16, **_DEIT3),
    'deit3_large_patch16_224': vit_row(16, 1024, 24, 16, **_DEIT3),
    'deit3_large_patch16_384': vit_row(16, 1024, 24, 16, **_DEIT3, img_size=384),
    'deit3_medium_patch16_224': vit_row(16, 512, 12, 8, **_DEIT3),
    'deit3_small_patch16_224': vit_row(16, 384, 12, 6, **_DEIT3),
    'deit3_small_patch16_384': vit_row(16, 384, 12, 6, **_DEIT3, img_size=384),
    'deit_base_distilled_patch16_224': vit_row(16, 768, 12, 12, distilled=True),
    'deit_base_distilled_patch16_384': vit_row(16, 768, 12, 12, distilled=True, img_size=384),
    'deit_base_patch16_224': vit_row(16, 768, 12, 12),
    'deit_base_patch16_384': vit_row(16, 768, 12, 12, img_size=384),
    'deit_small_distilled_patch16_224': vit_row(16, 384, 12, 6, distilled=True),
    'deit_small_patch16_224': vit_row(16, 384, 12, 6),
    'deit_tiny_distilled_patch16_224': vit_row(16, 192, 12, 3, distilled=True),
    'deit_tiny_patch16_224': vit_row(16, 192, 12, 3),
}

SPEC = vit_family_spec('deit', VARIANTS, DEFAULT_CFG)
