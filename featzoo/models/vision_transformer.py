"""Plain Vision Transformers: ViT (augreg, in21k, MIIL), CLIP / OpenCLIP image towers (with quick-GELU), SigLIP and
SigLIP 2 (attention-pool head), DINOv2 (with registers, giant with SwiGLU), AIMv2, BEiT-3, RADIO, TIPSv2,
FlexiViT, I-JEPA, InternViT, and timm's own register / GAP / parallel / differential-attention models.

One model class covers them all; the variant table holds what differs (widths, patch size, norms, activation,
MLP and block kind, prefix tokens, pooling head). Parameter names follow timm's, so its checkpoints load unchanged.

Inputs of any size divisible by the patch work by default: the position embedding is resampled (bicubic, as timm's
``dynamic_img_size=True``) whenever the patch grid differs from the one it was learned on, and left untouched at
that size, so outputs there equal timm's static model. ``dynamic_img_size=False`` restores the fixed-size model.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from functools import partial
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from ..family import FamilySpec
from ..layers.activations import ActLayer, create_act_layer, get_act_layer
from ..layers.attention_pool import AttentionPoolLatent
from ..layers.drop import DropPath
from ..layers.helpers import to_2tuple
from ..layers.mlp import Mlp, SwiGLU, SwiGLUPacked
from ..layers.patch_embed import PatchEmbed
from ..layers.pos_embed import resample_abs_pos_embed
from ..layers.pyramid import token_pyramid
from ..layers.token_model import TokenModelApi, check_img_size, pool_tokens
from ..layers.token_pos_table import resized_pos_table
from ..layers.weight_init import normal_, trunc_normal_, trunc_normal_linears_

DEFAULT_CFG = dict(
    input_size=(3, 224, 224), interpolation='bicubic', crop_pct=0.9, crop_mode='center',
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), first_conv='patch_embed.proj', classifier='head')


def vit_row(patch_size: int, embed_dim: int, depth: int, num_heads: int, **kwargs: Any) -> Dict[str, Any]:
    """A variant row: the four size arguments every ViT has, then whatever else differs.

    >>> vit_row(16, 192, 12, 3, img_size=384)['img_size']
    384
    """
    return dict(patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads, **kwargs)


# Presets of the model kinds (rows give the size, the published input side and what else differs)
_CLIP = dict(pre_norm=True, norm_eps=1e-5)  # OpenAI / OpenCLIP image towers
_CLIP_QUICK = dict(_CLIP, act_layer='quick_gelu')
_SIGLIP = dict(class_token=False, global_pool='map')
_SIGLIP2 = dict(_SIGLIP, act_layer='gelu_tanh')
_GAP = dict(class_token=False, global_pool='avg', fc_norm=False)
_SIGLIP2_GAP = dict(_GAP, act_layer='gelu_tanh')
_REG_GAP = dict(class_token=False, no_embed_class=True, global_pool='avg', init_values=1e-5)
_AIMV2 = dict(_GAP, qkv_bias=False, proj_bias=False, act_layer='silu', norm_layer='rmsnorm', norm_eps=1e-5,
              embed_norm=True, mlp_layer='swiglu')
_GIANT_GLU = dict(mlp_layer='swiglu_packed', act_layer='silu')  # DINOv2-g and TIPSv2-g
_XP = dict(pre_norm=True, no_embed_class=True, norm_layer='rmsnorm', block_type='parallel_scaling', qkv_bias=False,
           qk_norm=True)
_RADIO = dict(no_embed_class=True, final_norm=False, img_size=512)
_BEIT3 = dict(scale_attn_norm=True, scale_mlp_norm=True, global_pool='avg', norm_eps=1e-5)
_SO150M2 = dict(mlp_ratio=2.6153846153846154, init_values=1e-5, qkv_bias=False, class_token=False, reg_tokens=1,
                global_pool='avg')
_GIANT_MLP = 4.363636363636363  # 1408 * 48 / 11
_GIGANTIC_MLP = 4.923076923076923  # 1664 * 64 / 13
_SO400M_MLP = 3.7362

VARIANTS: Dict[str, Dict[str, Any]] = {
    # AIMv2: four sizes (width, heads, MLP ratio; 24 blocks), each at 224 (the default side), 336 and 448
    **{f'aimv2_{size}_patch14_{side}': vit_row(14, width, 24, heads, **_AIMV2, mlp_ratio=mlp_ratio,
                                               **({} if side == 224 else dict(img_size=side)))
       for size, width, heads, mlp_ratio in (('1b', 2048, 16, 2.75), ('3b', 3072, 24, 2.6667),
                                             ('huge', 1536, 12, 2.6667), ('large', 1024, 8, 2.75))
       for side in (224, 336, 448)},
    'beit3_base_patch16_224': vit_row(16, 768, 12, 12, **_BEIT3),
    'beit3_giant_patch14_224': vit_row(14, 1408, 40, 16, **_BEIT3, mlp_ratio=4.3637),
    'beit3_giant_patch14_336': vit_row(14, 1408, 40, 16, **_BEIT3, img_size=336, mlp_ratio=4.3637),
    'beit3_large_patch16_224': vit_row(16, 1024, 24, 16, **_BEIT3),
    'eva_large_patch14_196': vit_row(14, 1024, 24, 16, global_pool='avg', img_size=196),
    'eva_large_patch14_336': vit_row(14, 1024, 24, 16, global_pool='avg', img_size=336),
    'flexivit_base': vit_row(16, 768, 12, 12, no_embed_class=True, img_size=240),
    'flexivit_large': vit_row(16, 1024, 24, 16, no_embed_class=True, img_size=240),
    'flexivit_small': vit_row(16, 384, 12, 6, no_embed_class=True, img_size=240),
    'test_vit': vit_row(16, 64, 6, 2, mlp_ratio=3, img_size=160),
    'test_vit2': vit_row(16, 64, 8, 2, mlp_ratio=3, class_token=False, reg_tokens=1, global_pool='avg',
        init_values=1e-5, img_size=160),
    'test_vit3': vit_row(16, 96, 9, 3, **_SIGLIP, mlp_ratio=2, reg_tokens=1, pool_include_prefix=True, init_values=1e-5,
        img_size=160),
    'test_vit4': vit_row(16, 96, 9, 3, mlp_ratio=3, class_token=False, reg_tokens=1, global_pool='avg',
        init_values=1e-5, norm_layer='rmsnorm', img_size=160),
    'vit_base_patch8_224': vit_row(8, 768, 12, 12),
    'vit_base_patch14_dinov2': vit_row(14, 768, 12, 12, init_values=1e-5, img_size=518),
    'vit_base_patch14_reg1_tipsv2': vit_row(14, 768, 12, 12, init_values=1.0, reg_tokens=1, no_embed_class=True,
        img_size=448),
    'vit_base_patch14_reg4_dinov2': vit_row(14, 768, 12, 12, init_values=1e-5, reg_tokens=4, no_embed_class=True,
        img_size=518),
    'vit_base_patch16_18x2_224': vit_row(16, 768, 18, 12, init_values=1e-5, block_type='parallel_things'),
    'vit_base_patch16_224': vit_row(16, 768, 12, 12),
    'vit_base_patch16_224_miil': vit_row(16, 768, 12, 12, qkv_bias=False),
    'vit_base_patch16_384': vit_row(16, 768, 12, 12, img_size=384),
    'vit_base_patch16_clip_224': vit_row(16, 768, 12, 12, **_CLIP),
    'vit_base_patch16_clip_384': vit_row(16, 768, 12, 12, **_CLIP, img_size=384),
    'vit_base_patch16_clip_quickgelu_224': vit_row(16, 768, 12, 12, **_CLIP_QUICK),
    'vit_base_patch16_gap_224': vit_row(16, 768, 12, 16, **_GAP),
    'vit_base_patch16_plus_240': vit_row(16, 896, 12, 14, init_values=1e-5, img_size=240),
    'vit_base_patch16_plus_clip_240': vit_row(16, 896, 12, 14, **_CLIP, img_size=240),
    'vit_base_patch16_radio_v3': vit_row(16, 768, 12, 12, **_RADIO, init_values=1e-5, reg_tokens=7),
    'vit_base_patch16_reg4_gap_256': vit_row(16, 768, 12, 12, class_token=False, no_embed_class=True, global_pool='avg',
        reg_tokens=4, img_size=256),
    'vit_base_patch16_rpn_224': vit_row(16, 768, 12, 12, qkv_bias=False, init_values=1e-5, class_token=False,
        block_type='res_post', global_pool='avg'),
    'vit_base_patch16_siglip_224': vit_row(16, 768, 12, 12, **_SIGLIP),
    'vit_base_patch16_siglip_256': vit_row(16, 768, 12, 12, **_SIGLIP, img_size=256),
    'vit_base_patch16_siglip_384': vit_row(16, 768, 12, 12, **_SIGLIP, img_size=384),
    'vit_base_patch16_siglip_512': vit_row(16, 768, 12, 12, **_SIGLIP, img_size=512),
    'vit_base_patch16_siglip_gap_224': vit_row(16, 768, 12, 12, **_GAP),
    'vit_base_patch16_siglip_gap_256': vit_row(16, 768, 12, 12, **_GAP, img_size=256),
    'vit_base_patch16_siglip_gap_384': vit_row(16, 768, 12, 12, **_GAP, img_size=384),
    'vit_base_patch16_siglip_gap_512': vit_row(16, 768, 12, 12, **_GAP, img_size=512),
    'vit_base_patch16_xp_224': vit_row(16, 768, 12, 12, **_XP),
    'vit_base_patch32_224': vit_row(32, 768, 12, 12),
    'vit_base_patch32_384': vit_row(32, 768, 12, 12, img_size=384),
    'vit_base_patch32_clip_224': vit_row(32, 768, 12, 12, **_CLIP),
    'vit_base_patch32_clip_256': vit_row(32, 768, 12, 12, **_CLIP, img_size=256),
    'vit_base_patch32_clip_384': vit_row(32, 768, 12, 12, **_CLIP, img_size=384),
    'vit_base_patch32_clip_448': vit_row(32, 768, 12, 12, **_CLIP, img_size=448),
    'vit_base_patch32_clip_quickgelu_224': vit_row(32, 768, 12, 12, **_CLIP_QUICK),
    'vit_base_patch32_plus_256': vit_row(32, 896, 12, 14, init_values=1e-5, img_size=256),
    'vit_base_patch32_siglip_256': vit_row(32, 768, 12, 12, **_SIGLIP2, img_size=256),
    'vit_base_patch32_siglip_gap_256': vit_row(32, 768, 12, 12, **_SIGLIP2_GAP, img_size=256),
    'vit_betwixt_patch16_gap_256': vit_row(16, 640, 12, 10, **_GAP, qkv_bias=False, init_values=1e-6, img_size=256),
    'vit_betwixt_patch16_reg1_gap_256': vit_row(16, 640, 12, 10, **_REG_GAP, reg_tokens=1, img_size=256),
    'vit_betwixt_patch16_reg4_gap_256': vit_row(16, 640, 12, 10, **_REG_GAP, reg_tokens=4, img_size=256),
    'vit_betwixt_patch16_reg4_gap_384': vit_row(16, 640, 12, 10, **_REG_GAP, reg_tokens=4, img_size=384),
    'vit_betwixt_patch32_clip_224': vit_row(32, 640, 12, 10, **_CLIP),
    'vit_dlittle_patch16_reg1_gap_256': vit_row(16, 320, 14, 5, **_REG_GAP, mlp_ratio=5.6, reg_tokens=1,
        attn_type='diff', img_size=256),
    'vit_dpwee_patch16_reg1_gap_256': vit_row(16, 256, 16, 4, **_REG_GAP, mlp_ratio=5, reg_tokens=1,
        block_type='diff_parallel_scaling', img_size=256),
    'vit_dwee_patch16_reg1_gap_256': vit_row(16, 256, 14, 4, **_REG_GAP, mlp_ratio=5, reg_tokens=1, attn_type='diff',
        img_size=256),
    'vit_giant_patch14_224': vit_row(14, 1408, 40, 16, mlp_ratio=_GIANT_MLP),
    'vit_giant_patch14_clip_224': vit_row(14, 1408, 40, 16, **_CLIP, mlp_ratio=_GIANT_MLP),
    'vit_giant_patch14_dinov2': vit_row(14, 1536, 40, 24, **_GIANT_GLU, init_values=1e-5, mlp_ratio=5.33334,
        img_size=518),
    'vit_giant_patch14_reg1_tipsv2': vit_row(14, 1536, 40, 24, **_GIANT_GLU, init_values=1.0, mlp_ratio=5.33334,
        reg_tokens=1, no_embed_class=True, img_size=448),
    'vit_giant_patch14_reg4_dinov2': vit_row(14, 1536, 40, 24, **_GIANT_GLU, init_values=1e-5, mlp_ratio=5.33334,
        reg_tokens=4, no_embed_class=True, img_size=518),
    'vit_giant_patch16_gap_224': vit_row(16, 1408, 40, 16, **_GAP, mlp_ratio=_GIANT_MLP),
    'vit_giant_patch16_radio_v3': vit_row(16, 1536, 40, 24, **_RADIO, reg_tokens=7),
    'vit_giantopt_patch16_siglip_256': vit_row(16, 1536, 40, 16, **_SIGLIP2, img_size=256),
    'vit_giantopt_patch16_siglip_384': vit_row(16, 1536, 40, 16, **_SIGLIP2, img_size=384),
    'vit_giantopt_patch16_siglip_gap_256': vit_row(16, 1536, 40, 16, **_SIGLIP2_GAP, img_size=256),
    'vit_giantopt_patch16_siglip_gap_384': vit_row(16, 1536, 40, 16, **_SIGLIP2_GAP, img_size=384),
    'vit_gigantic_patch14_224': vit_row(14, 1664, 48, 16, mlp_ratio=_GIGANTIC_MLP),
    'vit_gigantic_patch14_clip_224': vit_row(14, 1664, 48, 16, **_CLIP, mlp_ratio=_GIGANTIC_MLP),
    'vit_gigantic_patch14_clip_378': vit_row(14, 1664, 48, 16, **_CLIP, mlp_ratio=_GIGANTIC_MLP, img_size=378),
    'vit_gigantic_patch14_clip_quickgelu_224': vit_row(14, 1664, 48, 16, **_CLIP_QUICK, mlp_ratio=_GIGANTIC_MLP),
    'vit_huge_patch14_224': vit_row(14, 1280, 32, 16),
    'vit_huge_patch14_clip_224': vit_row(14, 1280, 32, 16, **_CLIP),
    'vit_huge_patch14_clip_336': vit_row(14, 1280, 32, 16, **_CLIP, img_size=336),
    'vit_huge_patch14_clip_378': vit_row(14, 1280, 32, 16, **_CLIP, img_size=378),
    'vit_huge_patch14_clip_quickgelu_224': vit_row(14, 1280, 32, 16, **_CLIP_QUICK),
    'vit_huge_patch14_clip_quickgelu_378': vit_row(14, 1280, 32, 16, **_CLIP_QUICK, img_size=378),
    'vit_huge_patch14_gap_224': vit_row(14, 1280, 32, 16, **_GAP),
    'vit_huge_patch14_xp_224': vit_row(14, 1280, 32, 16, **_XP),
    'vit_huge_patch16_gap_448': vit_row(16, 1280, 32, 16, **_GAP, img_size=448),
    'vit_huge_patch16_radio_v3': vit_row(16, 1280, 32, 16, **_RADIO, reg_tokens=7),
    'vit_huge_patch16_radio_v4': vit_row(16, 1280, 32, 16, **_RADIO, reg_tokens=9),
    'vit_intern300m_patch14_448': vit_row(14, 1024, 24, 16, init_values=0.1, final_norm=False, img_size=448),
    'vit_large_patch14_224': vit_row(14, 1024, 24, 16),
    'vit_large_patch14_clip_224': vit_row(14, 1024, 24, 16, **_CLIP),
    'vit_large_patch14_clip_336': vit_row(14, 1024, 24, 16, **_CLIP, img_size=336),
    'vit_large_patch14_clip_quickgelu_224': vit_row(14, 1024, 24, 16, **_CLIP_QUICK),
    'vit_large_patch14_clip_quickgelu_336': vit_row(14, 1024, 24, 16, **_CLIP_QUICK, img_size=336),
    'vit_large_patch14_dinov2': vit_row(14, 1024, 24, 16, init_values=1e-5, img_size=518),
    'vit_large_patch14_reg1_tipsv2': vit_row(14, 1024, 24, 16, init_values=1.0, reg_tokens=1, no_embed_class=True,
        img_size=448),
    'vit_large_patch14_reg4_dinov2': vit_row(14, 1024, 24, 16, init_values=1e-5, reg_tokens=4, no_embed_class=True,
        img_size=518),
    'vit_large_patch14_xp_224': vit_row(14, 1024, 24, 16, **_XP),
    'vit_large_patch16_224': vit_row(16, 1024, 24, 16),
    'vit_large_patch16_384': vit_row(16, 1024, 24, 16, img_size=384),
    'vit_large_patch16_radio_v3': vit_row(16, 1024, 24, 16, **_RADIO, init_values=1e-5, reg_tokens=7),
    'vit_large_patch16_siglip_256': vit_row(16, 1024, 24, 16, **_SIGLIP, img_size=256),
    'vit_large_patch16_siglip_384': vit_row(16, 1024, 24, 16, **_SIGLIP, img_size=384),
    'vit_large_patch16_siglip_512': vit_row(16, 1024, 24, 16, **_SIGLIP2, img_size=512),
    'vit_large_patch16_siglip_gap_256': vit_row(16, 1024, 24, 16, **_GAP, img_size=256),
    'vit_large_patch16_siglip_gap_384': vit_row(16, 1024, 24, 16, **_GAP, img_size=384),
    'vit_large_patch16_siglip_gap_512': vit_row(16, 1024, 24, 16, **_SIGLIP2_GAP, img_size=512),
    'vit_large_patch32_224': vit_row(32, 1024, 24, 16),
    'vit_large_patch32_384': vit_row(32, 1024, 24, 16, img_size=384),
    'vit_little_patch16_reg1_gap_256': vit_row(16, 320, 14, 5, **_REG_GAP, mlp_ratio=5.6, reg_tokens=1, img_size=256),
    'vit_little_patch16_reg4_gap_256': vit_row(16, 320, 14, 5, **_REG_GAP, mlp_ratio=5.6, reg_tokens=4, img_size=256),
    'vit_medium_patch16_clip_224': vit_row(16, 512, 12, 8, **_CLIP),
    'vit_medium_patch16_gap_240': vit_row(16, 512, 12, 8, **_GAP, qkv_bias=False, init_values=1e-6, img_size=240),
    'vit_medium_patch16_gap_256': vit_row(16, 512, 12, 8, **_GAP, qkv_bias=False, init_values=1e-6, img_size=256),
    'vit_medium_patch16_gap_384': vit_row(16, 512, 12, 8, **_GAP, qkv_bias=False, init_values=1e-6, img_size=384),
    'vit_medium_patch16_reg1_gap_256': vit_row(16, 512, 12, 8, **_REG_GAP, reg_tokens=1, img_size=256),
    'vit_medium_patch16_reg4_gap_256': vit_row(16, 512, 12, 8, **_REG_GAP, reg_tokens=4, img_size=256),
    'vit_medium_patch32_clip_224': vit_row(32, 512, 12, 8, **_CLIP),
    'vit_mediumd_patch16_reg4_gap_256': vit_row(16, 512, 20, 8, **_REG_GAP, reg_tokens=4, img_size=256),
    'vit_mediumd_patch16_reg4_gap_384': vit_row(16, 512, 20, 8, **_REG_GAP, reg_tokens=4, img_size=384),
    'vit_pwee_patch16_reg1_gap_256': vit_row(16, 256, 16, 4, **_REG_GAP, mlp_ratio=5, reg_tokens=1,
        block_type='parallel_scaling', img_size=256),
    'vit_small_patch8_224': vit_row(8, 384, 12, 6),
    'vit_small_patch14_dinov2': vit_row(14, 384, 12, 6, init_values=1e-5, img_size=518),
    'vit_small_patch14_reg4_dinov2': vit_row(14, 384, 12, 6, init_values=1e-5, reg_tokens=4, no_embed_class=True,
        img_size=518),
    'vit_small_patch16_18x2_224': vit_row(16, 384, 18, 6, init_values=1e-5, block_type='parallel_things'),
    'vit_small_patch16_36x1_224': vit_row(16, 384, 36, 6, init_values=1e-5),
    'vit_small_patch16_224': vit_row(16, 384, 12, 6),
    'vit_small_patch16_384': vit_row(16, 384, 12, 6, img_size=384),
    'vit_small_patch32_224': vit_row(32, 384, 12, 6),
    'vit_small_patch32_384': vit_row(32, 384, 12, 6, img_size=384),
    'vit_so150m2_patch16_reg1_gap_256': vit_row(16, 832, 21, 13, **_SO150M2, img_size=256),
    'vit_so150m2_patch16_reg1_gap_384': vit_row(16, 832, 21, 13, **_SO150M2, img_size=384),
    'vit_so150m2_patch16_reg1_gap_448': vit_row(16, 832, 21, 13, **_SO150M2, img_size=448),
    'vit_so150m_patch16_reg4_gap_256': vit_row(16, 896, 18, 14, **_GAP, mlp_ratio=2.572, reg_tokens=4, img_size=256),
    'vit_so150m_patch16_reg4_gap_384': vit_row(16, 896, 18, 14, **_GAP, mlp_ratio=2.572, reg_tokens=4, img_size=384),
    'vit_so150m_patch16_reg4_map_256': vit_row(16, 896, 18, 14, **_SIGLIP, mlp_ratio=2.572, reg_tokens=4, img_size=256),
    'vit_so400m_patch14_reg1_tipsv2': vit_row(14, 1152, 27, 16, init_values=1.0, mlp_ratio=3.736111111111111,
        reg_tokens=1, no_embed_class=True, img_size=448),
    'vit_so400m_patch14_siglip_224': vit_row(14, 1152, 27, 16, **_SIGLIP, mlp_ratio=_SO400M_MLP),
    'vit_so400m_patch14_siglip_378': vit_row(14, 1152, 27, 16, **_SIGLIP, mlp_ratio=_SO400M_MLP, img_size=378),
    'vit_so400m_patch14_siglip_384': vit_row(14, 1152, 27, 16, **_SIGLIP, mlp_ratio=_SO400M_MLP, img_size=384),
    'vit_so400m_patch14_siglip_gap_224': vit_row(14, 1152, 27, 16, **_GAP, mlp_ratio=_SO400M_MLP),
    'vit_so400m_patch14_siglip_gap_378': vit_row(14, 1152, 27, 16, **_GAP, mlp_ratio=_SO400M_MLP, img_size=378),
    'vit_so400m_patch14_siglip_gap_384': vit_row(14, 1152, 27, 16, **_GAP, mlp_ratio=_SO400M_MLP, img_size=384),
    'vit_so400m_patch14_siglip_gap_448': vit_row(14, 1152, 27, 16, **_GAP, mlp_ratio=_SO400M_MLP, img_size=448),
    'vit_so400m_patch14_siglip_gap_896': vit_row(14, 1152, 27, 16, **_GAP, mlp_ratio=_SO400M_MLP, img_size=896),
    'vit_so400m_patch16_radio_v4': vit_row(16, 1152, 27, 16, **_RADIO, mlp_ratio=3.736111111111111, reg_tokens=9),
    'vit_so400m_patch16_siglip_256': vit_row(16, 1152, 27, 16, **_SIGLIP2, mlp_ratio=_SO400M_MLP, img_size=256),
    'vit_so400m_patch16_siglip_384': vit_row(16, 1152, 27, 16, **_SIGLIP2, mlp_ratio=_SO400M_MLP, img_size=384),
    'vit_so400m_patch16_siglip_512': vit_row(16, 1152, 27, 16, **_SIGLIP2, mlp_ratio=_SO400M_MLP, img_size=512),
    'vit_so400m_patch16_siglip_gap_256': vit_row(16, 1152, 27, 16, **_SIGLIP2_GAP, mlp_ratio=_SO400M_MLP, img_size=256),
    'vit_so400m_patch16_siglip_gap_384': vit_row(16, 1152, 27, 16, **_SIGLIP2_GAP, mlp_ratio=_SO400M_MLP, img_size=384),
    'vit_so400m_patch16_siglip_gap_512': vit_row(16, 1152, 27, 16, **_SIGLIP2_GAP, mlp_ratio=_SO400M_MLP, img_size=512),
    'vit_tiny_patch16_224': vit_row(16, 192, 12, 3),
    'vit_tiny_patch16_384': vit_row(16, 192, 12, 3, img_size=384),
    'vit_wee_patch16_reg1_gap_256': vit_row(16, 256, 14, 4, **_REG_GAP, mlp_ratio=5, reg_tokens=1, img_size=256),
    'vit_xsmall_patch16_clip_224': vit_row(16, 256, 10, 4, **_CLIP),
}

GLOBAL_POOLS = ('', 'token', 'avg', 'avgmax', 'max', 'map')


def _check_choice(name: str, value: Any, valid: Sequence[Any]) -> None:
    if value not in valid:
        raise ValueError(f'{name}={value!r} is invalid; valid: {tuple(valid)}')


def _check_rate(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f'{name}={value!r} is invalid; it must be a float in [0, 1)')
    return float(value)


def _check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f'{name}={value!r} is invalid; it must be an int >= {minimum}')
    return value


NormLayer = Callable[[int], nn.Module]
NORM_LAYERS = ('layernorm', 'rmsnorm')
MLP_LAYERS: Dict[str, Callable[..., nn.Module]] = {'mlp': Mlp, 'swiglu': SwiGLU, 'swiglu_packed': SwiGLUPacked}
BLOCK_TYPES = ('block', 'res_post', 'parallel_things', 'parallel_scaling', 'diff_parallel_scaling')
ATTN_TYPES = ('attn', 'diff')


def make_norm(kind: str = 'layernorm', eps: float = 1e-6) -> NormLayer:
    """A norm constructor ``(channels) -> module`` by name: ``'layernorm'`` or ``'rmsnorm'`` (weight only).

    >>> make_norm('rmsnorm', 1e-5)(8)
    RMSNorm((8,), eps=1e-05, elementwise_affine=True)
    """
    _check_choice('norm_layer', kind, NORM_LAYERS)
    return partial(nn.LayerNorm if kind == 'layernorm' else nn.RMSNorm, eps=eps)


class QuickGELU(nn.Module):
    """OpenAI CLIP's sigmoid approximation of GELU: ``x * sigmoid(1.702 x)``.

    >>> QuickGELU()(torch.zeros(2)).tolist()
    [0.0, 0.0]
    """

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def resolve_act(act_layer: ActLayer) -> ActLayer:
    """An activation by name, with ``'quick_gelu'`` (CLIP) on top of the shared names.

    >>> resolve_act('quick_gelu').__name__
    'QuickGELU'
    """
    if act_layer == 'quick_gelu':
        return QuickGELU
    get_act_layer(act_layer)  # ValueError naming the valid activations
    return act_layer


class _HeadAttention(nn.Module):
    """Multi-head attention of q, k, v given as tokens (B, N, C): plain scaled dot-product, or differential
    (``diff=True``: two softmax maps of half-width heads, the second subtracted with a learned weight ``lambda``).

    Subclasses own the projections; this holds what both the plain block and the parallel block share.
    """

    def _init_core(self, dim: int, num_heads: int, qk_norm: bool, attn_drop: float, norm_layer: NormLayer,
                   diff: bool = False, depth: int = 0) -> None:
        if dim % num_heads or (diff and dim % (2 * num_heads)):
            raise ValueError(f'embed_dim={dim} must be divisible by {"2 * " if diff else ""}num_heads={num_heads}')
        self.num_heads = num_heads
        self.diff = diff
        self.head_dim = dim // num_heads // (2 if diff else 1)
        self.q_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.attn_drop = nn.Dropout(attn_drop)
        if diff:
            self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2 = (
                nn.Parameter(torch.empty(self.head_dim)) for _ in range(4))
            # the Differential Transformer's depth schedule of the subtracted map's offset
            self.lambda_init = 0.8 - 0.6 * math.exp(-0.3 * depth)
            self.sub_norm = nn.RMSNorm(2 * self.head_dim, eps=1e-5)

    def _reset_lambdas(self) -> None:
        if self.diff:
            for p in (self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2):
                normal_(p, std=0.1)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        B, N, C = q.shape
        drop = self.attn_drop.p if self.training else 0.0
        if not self.diff:
            q, k, v = (t.reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
            x = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v, dropout_p=drop)
            return x.transpose(1, 2).reshape(B, N, C)
        H, D = self.num_heads, self.head_dim
        # 2H half-width query/key heads pair up (2h, 2h + 1) against H full-width value heads
        q = self.q_norm(q.reshape(B, N, 2 * H, D).transpose(1, 2)).reshape(B, H, 2, N, D)
        k = self.k_norm(k.reshape(B, N, 2 * H, D).transpose(1, 2)).reshape(B, H, 2, N, D)
        v = v.reshape(B, N, H, 2 * D).transpose(1, 2)
        lam = (torch.exp(torch.sum(self.lambda_q1 * self.lambda_k1, dim=-1).float())
               - torch.exp(torch.sum(self.lambda_q2 * self.lambda_k2, dim=-1).float()) + self.lambda_init).type_as(q)
        first = F.scaled_dot_product_attention(q[:, :, 0], k[:, :, 0], v, dropout_p=drop)
        second = F.scaled_dot_product_attention(q[:, :, 1], k[:, :, 1], v, dropout_p=drop)
        x = self.sub_norm(first - lam * second) * (1 - self.lambda_init)
        return x.transpose(1, 2).reshape(B, N, C)


class Attention(_HeadAttention):
    """Multi-head self-attention on tokens (B, N, C): one fused ``qkv`` projection, optional q/k norms, an optional
    ``norm`` before the output ``proj`` (BEiT-3's scale norm), plain or differential (``diff=True``).

    >>> Attention(32, num_heads=4)(torch.ones(2, 5, 32)).shape
    torch.Size([2, 5, 32])
    >>> Attention(32, num_heads=2, diff=True)(torch.ones(1, 5, 32)).shape
    torch.Size([1, 5, 32])
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True, qk_norm: bool = False,
                 scale_norm: bool = False, proj_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 norm_layer: NormLayer = make_norm(), diff: bool = False, depth: int = 0) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self._init_core(dim, num_heads, qk_norm, attn_drop, norm_layer, diff, depth)
        self.norm = norm_layer(dim) if scale_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)
        self._reset_lambdas()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.proj_drop(self.proj(self.norm(self._attend(q, k, v))))


class LayerScale(nn.Module):
    """Learned per-channel scale of a residual branch (``gamma``), on channels-last tensors.

    >>> LayerScale(4, 0.5)(torch.ones(1, 4)).tolist()
    [[0.5, 0.5, 0.5, 0.5]]
    """

    def __init__(self, dim: int, init_values: float = 1e-5) -> None:
        super().__init__()
        self.init_values = init_values
        self.gamma = nn.Parameter(torch.empty(dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Set every scale back to ``init_values``.

        >>> ls = LayerScale(2, 0.5); ls.reset_parameters(); ls.gamma.tolist()
        [0.5, 0.5]
        """
        nn.init.constant_(self.gamma, self.init_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


def _drop_path(rate: float) -> nn.Module:
    return DropPath(rate) if rate > 0.0 else nn.Identity()


def _attention(dim: int, num_heads: int, cfg: Dict[str, Any], depth: int) -> Attention:
    return Attention(dim, num_heads, qkv_bias=cfg['qkv_bias'], qk_norm=cfg['qk_norm'],
                     scale_norm=cfg['scale_attn_norm'], proj_bias=cfg['proj_bias'], attn_drop=cfg['attn_drop'],
                     proj_drop=cfg['proj_drop'], norm_layer=cfg['norm_layer'], diff=cfg['attn_type'] == 'diff',
                     depth=depth)


def _mlp(dim: int, cfg: Dict[str, Any]) -> nn.Module:
    return MLP_LAYERS[cfg['mlp_layer']](dim, int(dim * cfg['mlp_ratio']), act_layer=cfg['act_layer'],
                                        norm_layer=cfg['norm_layer'] if cfg['scale_mlp_norm'] else None,
                                        bias=cfg['proj_bias'], drop=cfg['proj_drop'])


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``, each branch optionally
    layer-scaled (``ls1``, ``ls2``) and stochastically dropped. ``cfg`` holds the options every block of a model
    shares (see :func:`block_options`).

    >>> Block(32, 4, block_options(init_values=1e-5))(torch.ones(1, 3, 32)).shape
    torch.Size([1, 3, 32])
    """

    def __init__(self, dim: int, num_heads: int, cfg: Dict[str, Any], drop_path: float = 0.0, depth: int = 0) -> None:
        super().__init__()
        init_values = cfg['init_values']
        self.norm1 = cfg['norm_layer'](dim)
        self.attn = _attention(dim, num_heads, cfg, depth)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path1 = _drop_path(drop_path)
        self.norm2 = cfg['norm_layer'](dim)
        self.mlp = _mlp(dim, cfg)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path2 = _drop_path(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class ResPostBlock(nn.Module):
    """Post-norm residual block (ViT-B 'rpn'): ``x + norm1(attn(x))`` then ``x + norm2(mlp(x))``; the norms'
    weights start at ``init_values`` and play the layer scale's part.

    >>> ResPostBlock(32, 4, block_options(init_values=1e-5))(torch.ones(1, 3, 32)).shape
    torch.Size([1, 3, 32])
    """

    def __init__(self, dim: int, num_heads: int, cfg: Dict[str, Any], drop_path: float = 0.0, depth: int = 0) -> None:
        super().__init__()
        self.init_values = cfg['init_values']
        self.attn = _attention(dim, num_heads, cfg, depth)
        self.norm1 = cfg['norm_layer'](dim)
        self.drop_path1 = _drop_path(drop_path)
        self.mlp = _mlp(dim, cfg)
        self.norm2 = cfg['norm_layer'](dim)
        self.drop_path2 = _drop_path(drop_path)
        if self.init_values is not None:
            nn.init.constant_(self.norm1.weight, self.init_values)
            nn.init.constant_(self.norm2.weight, self.init_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.norm1(self.attn(x)))
        return x + self.drop_path2(self.norm2(self.mlp(x)))


class ParallelThingsBlock(nn.Module):
    """``num_parallel`` attention branches summed into the residual, then as many MLP branches ('Three things
    everyone should know about ViTs'); each branch is ``norm -> attn|mlp -> ls -> drop_path``.

    >>> ParallelThingsBlock(32, 4, block_options())(torch.ones(1, 3, 32)).shape
    torch.Size([1, 3, 32])
    """

    def __init__(self, dim: int, num_heads: int, cfg: Dict[str, Any], drop_path: float = 0.0, depth: int = 0,
                 num_parallel: int = 2) -> None:
        super().__init__()
        init_values = cfg['init_values']

        def branch(name: str, body: nn.Module) -> nn.Sequential:
            return nn.Sequential(OrderedDict([
                ('norm', cfg['norm_layer'](dim)), (name, body),
                ('ls', LayerScale(dim, init_values) if init_values else nn.Identity()),
                ('drop_path', _drop_path(drop_path))]))

        self.num_parallel = num_parallel
        self.attns = nn.ModuleList([branch('attn', _attention(dim, num_heads, cfg, depth))
                                    for _ in range(num_parallel)])
        self.ffns = nn.ModuleList([branch('mlp', _mlp(dim, cfg)) for _ in range(num_parallel)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + torch.stack([attn(x) for attn in self.attns]).sum(dim=0)
        return x + torch.stack([ffn(x) for ffn in self.ffns]).sum(dim=0)


class ParallelScalingBlock(_HeadAttention):
    """Attention and MLP side by side from one norm and one input projection (ViT-22B style): ``in_proj`` yields the
    MLP's hidden units and q, k, v at once; the two results are projected back (separately, or by one ``out_proj``
    for the differential variant, ``diff=True``) and added to the residual once.

    >>> ParallelScalingBlock(32, 4, block_options(qkv_bias=False))(torch.ones(1, 3, 32)).shape
    torch.Size([1, 3, 32])
    >>> ParallelScalingBlock(32, 2, block_options(), diff=True).out_proj.in_features
    160
    """

    def __init__(self, dim: int, num_heads: int, cfg: Dict[str, Any], drop_path: float = 0.0, depth: int = 0,
                 diff: bool = False) -> None:
        super().__init__()
        if cfg['scale_attn_norm'] or cfg['scale_mlp_norm'] or cfg['mlp_layer'] != 'mlp':
            raise ValueError("the parallel scaling block has a plain MLP and no scale norms: it needs "
                             "mlp_layer='mlp', scale_attn_norm=False and scale_mlp_norm=False")
        hidden = int(cfg['mlp_ratio'] * dim)
        self.in_norm = cfg['norm_layer'](dim)
        self.in_proj = nn.Linear(dim, hidden + 3 * dim, bias=cfg['qkv_bias'])
        self.in_split = [hidden, dim, dim, dim]
        # without a qkv bias the MLP keeps its own input bias
        self.mlp_bias = None if cfg['qkv_bias'] else nn.Parameter(torch.zeros(hidden))
        self._init_core(dim, num_heads, cfg['qk_norm'], cfg['attn_drop'], cfg['norm_layer'], diff, depth)
        self.mlp_drop = nn.Dropout(cfg['proj_drop'])
        self.mlp_act = create_act_layer(cfg['act_layer'])
        if diff:
            self.out_proj = nn.Linear(dim + hidden, dim, bias=cfg['proj_bias'])
        else:
            self.attn_out_proj = nn.Linear(dim, dim, bias=cfg['proj_bias'])
            self.mlp_out_proj = nn.Linear(hidden, dim, bias=cfg['proj_bias'])
        self.ls = LayerScale(dim, cfg['init_values']) if cfg['init_values'] is not None else nn.Identity()
        self.drop_path = _drop_path(drop_path)
        self._reset_lambdas()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_mlp, q, k, v = torch.split(self.in_proj(self.in_norm(x)), self.in_split, dim=-1)
        if self.mlp_bias is not None:
            x_mlp = x_mlp + self.mlp_bias
        x_attn = self._attend(q, k, v)
        x_mlp = self.mlp_drop(self.mlp_act(x_mlp))
        if self.diff:
            y = self.out_proj(torch.cat((x_attn, x_mlp), dim=-1))
        else:
            y = self.attn_out_proj(x_attn) + self.mlp_out_proj(x_mlp)
        return x + self.drop_path(self.ls(y))


BLOCKS: Dict[str, Callable[..., nn.Module]] = {
    'block': Block, 'res_post': ResPostBlock, 'parallel_things': ParallelThingsBlock,
    'parallel_scaling': ParallelScalingBlock, 'diff_parallel_scaling': partial(ParallelScalingBlock, diff=True)}


def block_options(mlp_ratio: float = 4.0, qkv_bias: bool = True, qk_norm: bool = False, proj_bias: bool = True,
                  init_values: Optional[float] = None, proj_drop: float = 0.0, attn_drop: float = 0.0,
                  act_layer: ActLayer = 'gelu', norm_layer: NormLayer = make_norm(), mlp_layer: str = 'mlp',
                  attn_type: str = 'attn', scale_attn_norm: bool = False,
                  scale_mlp_norm: bool = False) -> Dict[str, Any]:
    """The options every block of one model shares, checked once.

    >>> block_options(mlp_layer='swiglu')['mlp_layer']
    'swiglu'
    """
    _check_choice('mlp_layer', mlp_layer, tuple(MLP_LAYERS))
    _check_choice('attn_type', attn_type, ATTN_TYPES)
    return dict(mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_norm=qk_norm, proj_bias=proj_bias,
                init_values=init_values, proj_drop=proj_drop, attn_drop=attn_drop, act_layer=resolve_act(act_layer),
                norm_layer=norm_layer, mlp_layer=mlp_layer, attn_type=attn_type, scale_attn_norm=scale_attn_norm,
                scale_mlp_norm=scale_mlp_norm)


class VisionTransformer(TokenModelApi, nn.Module):
    """A plain ViT: patch embedding, prefix tokens (class, distillation, registers), learned position embedding,
    ``depth`` identical blocks, a final norm and a linear head.

    ``forward_features`` returns the full token sequence (B, prefix + H * W, C), as timm's does.

    >>> m = VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_classes=10)
    >>> m(torch.randn(1, 3, 32, 32)).shape, m.forward_features(torch.randn(1, 3, 48, 32)).shape
    (torch.Size([1, 10]), torch.Size([1, 25, 64]))
    """

    no_weight_decay_names = ('pos_embed', 'cls_token', 'reg_token', 'dist_token')

    def __init__(self, img_size: Union[int, Tuple[int, int]] = 224, patch_size: Union[int, Tuple[int, int]] = 16,
                 in_chans: int = 3, num_classes: int = 1000, global_pool: str = 'token', embed_dim: int = 768,
                 depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 qk_norm: bool = False, proj_bias: bool = True, init_values: Optional[float] = None,
                 class_token: bool = True, reg_tokens: int = 0, distilled: bool = False,
                 no_embed_class: bool = False, pre_norm: bool = False, final_norm: bool = True,
                 fc_norm: Optional[bool] = None, dynamic_img_size: bool = True, dynamic_img_pad: bool = False,
                 drop_rate: float = 0.0, pos_drop_rate: float = 0.0, proj_drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0, act_layer: ActLayer = 'gelu',
                 norm_layer: str = 'layernorm', norm_eps: float = 1e-6, embed_norm: bool = False,
                 mlp_layer: str = 'mlp', block_type: str = 'block', attn_type: str = 'attn',
                 scale_attn_norm: bool = False, scale_mlp_norm: bool = False, pool_include_prefix: bool = False,
                 output_stride: Optional[int] = None, embed_layer: Optional[Callable[..., nn.Module]] = None) -> None:
        super().__init__()
        _check_choice('global_pool', global_pool, GLOBAL_POOLS)
        _check_choice('block_type', block_type, BLOCK_TYPES)
        _check_positive_int('num_classes', num_classes, 0)
        _check_positive_int('in_chans', in_chans)
        _check_positive_int('embed_dim', embed_dim)
        _check_positive_int('depth', depth)
        _check_positive_int('num_heads', num_heads)
        _check_positive_int('reg_tokens', reg_tokens, 0)
        for name, rate in (('drop_rate', drop_rate), ('pos_drop_rate', pos_drop_rate),
                           ('proj_drop_rate', proj_drop_rate), ('attn_drop_rate', attn_drop_rate),
                           ('drop_path_rate', drop_path_rate)):
            _check_rate(name, rate)
        norm = make_norm(norm_layer, norm_eps)
        block_cfg = block_options(mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_norm=qk_norm, proj_bias=proj_bias,
                                  init_values=init_values, proj_drop=proj_drop_rate, attn_drop=attn_drop_rate,
                                  act_layer=act_layer, norm_layer=norm, mlp_layer=mlp_layer, attn_type=attn_type,
                                  scale_attn_norm=scale_attn_norm, scale_mlp_norm=scale_mlp_norm)
        if global_pool == 'token' and not class_token:
            raise ValueError("global_pool='token' reads the class token, so it needs class_token=True; "
                             "valid without one: '', 'avg', 'avgmax', 'max', 'map'")
        if distilled:
            if not class_token or reg_tokens:
                raise ValueError('distilled=True (DeiT) needs class_token=True and reg_tokens=0, '
                                 f'got class_token={class_token}, reg_tokens={reg_tokens}')
            if global_pool != 'token':
                raise ValueError(f"distilled=True averages the class and distillation heads, so global_pool must be "
                                 f"'token'; got {global_pool!r}")
        if img_size is None:
            raise ValueError('img_size=None is invalid: the position embedding needs a reference size; give an int '
                             'or (height, width), e.g. 224')
        patch = to_2tuple(patch_size)
        if len(patch) != 2 or any(isinstance(p, bool) or not isinstance(p, int) or p < 1 for p in patch):
            raise ValueError(f'patch_size must be a positive int or a pair of them, got {patch_size!r}')

        use_fc_norm = global_pool in ('avg', 'avgmax', 'max') if fc_norm is None else fc_norm
        self._set_token_model_attrs(num_classes, in_chans, global_pool, embed_dim,
                                    num_prefix_tokens=int(class_token) + int(distilled) + reg_tokens)
        self.has_class_token = class_token
        self.distilled = distilled
        self.num_reg_tokens = reg_tokens
        self.no_embed_class = no_embed_class
        self.pool_include_prefix = pool_include_prefix
        self.dynamic_img_size = dynamic_img_size
        self.distilled_training = False

        # CLIP-style pre-norm models drop the patch bias; the layout stays NHWC so the grid size is at hand
        if embed_layer is None:
            self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, bias=not pre_norm,
                                          output_fmt='NHWC', dynamic_img_pad=dynamic_img_pad,
                                          norm_layer=norm if embed_norm else None)
        else:
            # hybrids (a CNN trunk before the patch projection) bring their own embedding with PatchEmbed's
            # interface: NHWC output, grid_size, num_patches, feat_ratio(), set_input_size(), dynamic_img_pad
            self.patch_embed = embed_layer(img_size=img_size, patch_size=patch_size, in_chans=in_chans,
                                           embed_dim=embed_dim, bias=not pre_norm)
        reduction = self.patch_embed.feat_ratio()
        # as in timm, a reference size with a remainder is accepted (the patch convolution crops it): published
        # rows need it (vit_so400m_patch14_siglip_384); set_input_size asks for a multiple
        if output_stride is not None and output_stride != reduction:
            raise ValueError(f'output_stride={output_stride!r} is not supported: a ViT has one stride, that of its '
                             f'patch embedding, {reduction}; valid: {reduction} or None')
        self.cls_token = nn.Parameter(torch.empty(1, 1, embed_dim)) if class_token else None
        self.reg_token = nn.Parameter(torch.empty(1, reg_tokens, embed_dim)) if reg_tokens else None
        embed_len = self.patch_embed.num_patches + (0 if no_embed_class else self.num_prefix_tokens)
        self.pos_embed = nn.Parameter(torch.empty(1, embed_len, embed_dim))
        # registered after pos_embed so the state_dict order is timm's for DeiT distilled
        self.dist_token = nn.Parameter(torch.empty(1, 1, embed_dim)) if distilled else None
        self.pos_drop = nn.Dropout(pos_drop_rate)
        self.norm_pre = norm(embed_dim) if pre_norm else nn.Identity()

        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        block = BLOCKS[block_type]
        self.blocks = nn.Sequential(*[block(embed_dim, num_heads, block_cfg, drop_path=rates[i], depth=i)
                                      for i in range(depth)])
        self.feature_info = [dict(num_chs=embed_dim, reduction=reduction, module=f'blocks.{i}') for i in range(depth)]
        self.norm = norm(embed_dim) if final_norm and not use_fc_norm else nn.Identity()
        # SigLIP's head: learned-query attention pooling ('map')
        self.attn_pool = AttentionPoolLatent(embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, norm_layer=norm,
                                             act_layer=block_cfg['act_layer']) if global_pool == 'map' else None
        self.fc_norm = norm(embed_dim) if final_norm and use_fc_norm else nn.Identity()
        self._add_linear_head(num_classes, drop_rate)
        if distilled:
            self.head_dist = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        """Initialize for training from scratch (truncated normal linears, tiny prefix tokens), as timm does.

        Skipped in effect on the meta device, where weights are about to be loaded.

        >>> m = VisionTransformer(depth=1, embed_dim=32, num_heads=2); m.init_weights()
        >>> float(m.head.bias.detach().abs().max())
        0.0
        """
        trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            normal_(self.cls_token, std=1e-6)
        if self.reg_token is not None:
            normal_(self.reg_token, std=1e-6)
        if self.dist_token is not None:
            trunc_normal_(self.dist_token, std=0.02)
        trunc_normal_linears_(self)
        if self.attn_pool is not None:
            self.attn_pool.init_weights()

    # ---- the model contract -------------------------------------------------------------------------------------

    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Regexes grouping parameters into stem and per-block groups (for layer-wise learning-rate decay).

        >>> sorted(VisionTransformer(depth=1, embed_dim=32, num_heads=2).group_matcher())
        ['blocks', 'stem']
        """
        tokens = 'cls_token|pos_embed|patch_embed|dist_token' if self.distilled else \
            'cls_token|reg_token|pos_embed|patch_embed|norm_pre'
        return dict(stem=f'^{tokens}', blocks=[(r'^blocks\.(\d+)', None), (r'^norm', (99999,))])

    def set_distilled_training(self, enable: bool = True) -> None:
        """DeiT distilled only: in training mode return (class logits, distillation logits) instead of their mean.

        >>> m = VisionTransformer(depth=1, embed_dim=32, num_heads=2, distilled=True); m.set_distilled_training()
        """
        self.distilled_training = enable

    def get_classifier(self) -> Union[nn.Module, Tuple[nn.Module, nn.Module]]:
        """The classifier (``head``), or ``(head, head_dist)`` for DeiT distilled, as timm returns.

        >>> VisionTransformer(depth=1, embed_dim=32, num_heads=2, num_classes=5).get_classifier()
        Linear(in_features=32, out_features=5, bias=True)
        """
        return (self.head, self.head_dist) if self.distilled else self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier by a fresh one with ``num_classes`` outputs (0: none), optionally changing pooling.

        >>> m = VisionTransformer(depth=1, embed_dim=32, num_heads=2); m.reset_classifier(0, 'avg'); m.head
        Identity()
        """
        _check_positive_int('num_classes', num_classes, 0)
        if global_pool is not None:
            # an attention pool can be kept or dropped here, not created (its weights would be untrained)
            valid = [p for p in GLOBAL_POOLS if p != 'map' or self.attn_pool is not None]
            if self.distilled:
                valid = ['', 'token']
            elif not self.has_class_token:
                valid.remove('token')
            _check_choice('global_pool', global_pool, valid)
            # the distilled head always reads its two tokens; it has no other pooling to switch to
            if not self.distilled:
                self.global_pool = global_pool
            if global_pool != 'map':
                self.attn_pool = None
        self.num_classes = num_classes
        dd = dict(device=self.pos_embed.device, dtype=self.pos_embed.dtype)
        self.head = nn.Linear(self.embed_dim, num_classes, **dd) if num_classes > 0 else nn.Identity()
        self.head.train(self.training)
        if self.distilled:
            self.head_dist = nn.Linear(self.embed_dim, num_classes, **dd) if num_classes > 0 else nn.Identity()
            self.head_dist.train(self.training)

    def set_input_size(self, img_size: Union[int, Tuple[int, int]]) -> None:
        """Make ``img_size`` the model's reference size: the position embedding is resampled (bicubic) to its patch
        grid, so a model with ``dynamic_img_size=False`` then takes that size, and others compute there without
        resampling at run time. The size must be a multiple of the patch (unless ``dynamic_img_pad``).

        >>> m = VisionTransformer(img_size=32, patch_size=8, depth=1, embed_dim=32, num_heads=2)
        >>> m.set_input_size((48, 32)); m.pos_embed.shape
        torch.Size([1, 25, 32])
        """
        size = check_img_size(img_size, self.patch_embed.feat_ratio(as_scalar=False),
                              bool(self.patch_embed.dynamic_img_pad))
        old_grid = self.patch_embed.grid_size
        self.patch_embed.set_input_size(size)
        if self.patch_embed.grid_size != old_grid:
            prefix = 0 if self.no_embed_class else self.num_prefix_tokens
            self.pos_embed = resized_pos_table(self.pos_embed, self.patch_embed.grid_size, old_grid, prefix)

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        # x: patch grid, channels last (B, H, W, C)
        B, H, W, C = x.shape
        x = x.reshape(B, H * W, C)
        if self.dynamic_img_size:
            pos_embed = resample_abs_pos_embed(self.pos_embed, (H, W), self.patch_embed.grid_size,
                                               num_prefix_tokens=0 if self.no_embed_class else self.num_prefix_tokens)
        else:
            pos_embed = self.pos_embed
        prefix = []
        if self.cls_token is not None:
            prefix.append(self.cls_token.expand(B, -1, -1))
        if self.dist_token is not None:
            prefix.append(self.dist_token.expand(B, -1, -1))
        if self.reg_token is not None:
            prefix.append(self.reg_token.expand(B, -1, -1))
        if self.no_embed_class:
            # DINOv2 with registers, DeiT III: the prefix tokens carry no position
            x = x + pos_embed
            if prefix:
                x = torch.cat(prefix + [x], dim=1)
        else:
            if prefix:
                x = torch.cat(prefix + [x], dim=1)
            x = x + pos_embed
        return self.pos_drop(x)

    def _embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[Any, Any], Tuple[()]]:
        x = self.patch_embed(x)
        grid = (x.shape[1], x.shape[2])
        return self.norm_pre(self._pos_embed(x)), grid, ()

    def pool(self, x: torch.Tensor, pool_type: Optional[str] = None) -> torch.Tensor:
        """Reduce tokens to one vector per image (``'token'``: the class token; others over the patch tokens).

        >>> VisionTransformer(depth=1, embed_dim=32, num_heads=2).pool(torch.ones(2, 5, 32), 'avgmax').shape
        torch.Size([2, 32])
        """
        if self.attn_pool is not None:
            return self.attn_pool(x if self.pool_include_prefix else x[:, self.num_prefix_tokens:])
        return pool_tokens(x, self.global_pool if pool_type is None else pool_type,
                           None if self.pool_include_prefix else self.num_prefix_tokens)

    def forward_head(self, x: torch.Tensor,
                     pre_logits: bool = False) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """Pool, normalize (``fc_norm``), dropout and classify the tokens of :meth:`forward_features`.

        >>> m = VisionTransformer(depth=1, embed_dim=32, num_heads=2, num_classes=7)
        >>> m.forward_head(torch.ones(2, 5, 32), pre_logits=True).shape
        torch.Size([2, 32])
        """
        if self.distilled:
            cls, dist = self.head_drop(x[:, 0]), self.head_drop(x[:, 1])
            if pre_logits:
                return (cls + dist) / 2
            cls, dist = self.head(cls), self.head_dist(dist)
            if self.distilled_training and self.training:
                return cls, dist
            return (cls + dist) / 2
        x = self.head_drop(self.fc_norm(self.pool(x)))
        return x if pre_logits else self.head(x)


# ---- builders and adapters for the factory --------------------------------------------------------------------------

def output_strides(variant: str, row: Any = None) -> Tuple[int, ...]:
    """The output strides ``variant`` accepts: only its patch size.

    >>> output_strides('vit_small_patch14_dinov2')
    (14,)
    """
    row = VARIANTS[variant] if row is None else row
    return (max(to_2tuple(row['patch_size'])),)


def _checkpoint_grid(model: VisionTransformer, num_tokens: int) -> Tuple[int, int]:
    side = math.isqrt(num_tokens)
    if side * side == num_tokens:
        return side, side
    # a non-square grid can only be recovered from the image size the weights were trained at
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    size = cfg.get('input_size')
    if size is not None:
        patch = model.patch_embed.patch_size
        grid = (size[-2] // patch[0], size[-1] // patch[1])
        if grid[0] * grid[1] == num_tokens:
            return grid
    raise ValueError(f'cannot tell the patch grid of a position embedding with {num_tokens} patch tokens: it is not '
                     f'square and not the grid of the pretrained input size {size}')


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: VisionTransformer) -> Dict[str, torch.Tensor]:
    """Adapt a checkpoint to ``model``: resample ``pos_embed`` to the model's grid (bicubic, as timm), and convert
    the layouts timm converts for these architectures (DeiT III ``gamma_1``, original DINOv2 keys, old
    ``pre_logits`` layers).

    >>> m = SPEC.build('vit_tiny_patch16_224', img_size=32)
    >>> sd = SPEC.build('vit_tiny_patch16_224').state_dict()
    >>> checkpoint_filter_fn(sd, m)['pos_embed'].shape
    torch.Size([1, 5, 192])
    """
    state_dict = dict(state_dict)
    if 'mask_token' in state_dict:
        # Meta's DINOv2 release: registers are prefix tokens outside the position embedding in timm's layout,
        # so the class token absorbs its position entry
        state_dict.pop('mask_token')
        if 'register_tokens' in state_dict:
            state_dict['reg_token'] = state_dict.pop('register_tokens')
            pos = state_dict['pos_embed']
            state_dict['cls_token'] = state_dict['cls_token'] + pos[:, :1]
            state_dict['pos_embed'] = pos[:, 1:]
    out: Dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith('pre_logits'):
            continue
        if '.gamma_' in key:
            key = key.replace('.gamma_1', '.ls1.gamma').replace('.gamma_2', '.ls2.gamma')
        if key == 'pos_embed' and getattr(model, 'pos_embed', None) is not None:
            prefix = 0 if model.no_embed_class else model.num_prefix_tokens
            old_grid = _checkpoint_grid(model, value.shape[1] - prefix)
            if tuple(value.shape) != tuple(model.pos_embed.shape) or old_grid != tuple(model.patch_embed.grid_size):
                value = resample_abs_pos_embed(value, model.patch_embed.grid_size, old_grid, num_prefix_tokens=prefix)
        out[key] = value
    return out


def create_feature_pyramid(model: VisionTransformer, out_indices: Optional[Sequence[int]] = None) -> Dict[str, Any]:
    """Arguments for the getter wrapper that turn four tapped blocks into a simple pyramid of strides 4, 8, 16, 32
    (:func:`featzoo.layers.pyramid.token_pyramid`, which the other single-stride token families use as well).

    >>> extra = create_feature_pyramid(SPEC.build('vit_tiny_patch16_224'), (2, 5, 8, 11))
    >>> [level['reduction'] for level in extra['pyramid_levels']]
    [4, 8, 16, 32]
    """
    return token_pyramid(model, out_indices)


_CLASSIFIER_TAG_MARKS = ('in1k', 'in12k', 'in21k', 'in22k', '_ft_')


def head_is_projection(variant: str, row: Mapping[str, Any], tag: Mapping[str, Any]) -> bool:
    """True for the CLIP / OpenCLIP image towers as published (a head of 512-1280 outputs that projects into the
    text tower's space); their ImageNet fine-tunes classify. (SigLIP towers publish no head: their attention pool's
    output is the joint embedding already.)

    >>> head_is_projection('vit_base_patch16_clip_224', VARIANTS['vit_base_patch16_clip_224'],
    ...                    dict(tag='openai', num_classes=512))
    True
    >>> head_is_projection('vit_base_patch16_clip_224', VARIANTS['vit_base_patch16_clip_224'],
    ...                    dict(tag='openai_ft_in1k', num_classes=1000))
    False
    """
    name = tag.get('tag', '')
    return (bool(row.get('pre_norm')) and tag.get('num_classes', 0) > 0
            and not any(mark in name for mark in _CLASSIFIER_TAG_MARKS))


def vit_family_spec(name: str, variants: Mapping[str, Mapping[str, Any]], default_cfg: Mapping[str, Any],
                    **overrides: Any) -> FamilySpec:
    """The family contract of a module whose variants are all :class:`VisionTransformer` rows (this one, DeiT).

    >>> vit_family_spec('tiny_vits', {'vit_t': vit_row(16, 64, 2, 2)}, DEFAULT_CFG).build('vit_t').embed_dim
    64
    """
    spec = dict(
        name=name, model=VisionTransformer, variants=variants, default_cfg=default_cfg,
        feature_cls=('getter', 'fx'), default_feature_cls='getter', output_strides=output_strides,
        default_out_indices=3,  # timm's default feature levels for ViTs: the last three blocks
        input_multiple=lambda variant, row: max(to_2tuple(row['patch_size'])), img_size_arg='img_size',
        # no dynamic_hw: the position-embedding resample branches on the grid
        export=('torch.export', 'onnx', 'compile'),
        checkpoint_filter=checkpoint_filter_fn, feature_pyramid=create_feature_pyramid)
    spec.update(overrides)
    return FamilySpec(**spec)


SPEC = vit_family_spec('vision_transformer', VARIANTS, DEFAULT_CFG, head_is_projection=head_is_projection)
