"""MobileViT and MobileViT-v2: byobnet trunks whose last three stages each end in a block that unfolds the map into
patches and runs a transformer across the patches (v1: multi-head attention on tokens; v2: separable linear
attention on NCHW-laid-out patches). timm builds both on its ByobNet, so the trunk here is
:class:`featzoo.models.byobnet.ByobNet` with these blocks appended to its stages (``stage_tail``), and timm's
checkpoints load unchanged.

Papers: "MobileViT: Light-weight, General-purpose, and Mobile-friendly Vision Transformer",
https://arxiv.org/abs/2110.02178; "Separable Self-attention for Mobile Vision Transformers",
https://arxiv.org/abs/2206.02680

>>> model = SPEC.build('mobilevit_xxs', num_classes=10)
>>> [f['reduction'] for f in model.feature_info]
[2, 4, 8, 16, 32]
"""
from __future__ import annotations

import math
from functools import partial
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ..family import FamilySpec
from ..features.notrace import register_notrace_module
from ..layers import DropPath, make_divisible, to_2tuple
from ..layers.mlp import Mlp
from .byobnet import ByobNet, Layers
from .vision_transformer import Block, block_options

OUTPUT_STRIDES = (8, 16, 32)
DEFAULT_CFG = dict(
    input_size=(3, 256, 256), pool_size=(8, 8), interpolation='bicubic', crop_pct=0.9, crop_mode='center',
    mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), first_conv='stem.conv', classifier='head.fc', num_classes=1000)


def _patch_grid(height: int, width: int, patch: Tuple[int, int]) -> Tuple[int, int]:
    """Patches per column and per row once the map is resampled up to whole patches."""
    return math.ceil(height / patch[0]), math.ceil(width / patch[1])


@register_notrace_module  # the map is resampled to whole patches only when its size asks for it
class MobileVitBlock(nn.Module):
    """MobileViT v1: a local kxk conv-norm-act and a 1x1 projection to ``transformer_dim``; the map is cut into
    ``patch_size`` patches and each of the patch's pixel positions runs a transformer across all patches; folded
    back, projected to ``out_chs`` and fused with the block's input by a kxk conv.

    A map that is not a whole number of patches is resampled (bilinear) up to one and back, as the reference does.

    >>> MobileVitBlock(16, 16, Layers('silu'), transformer_dim=24, transformer_depth=1)(torch.ones(1, 16, 8, 8)).shape
    torch.Size([1, 16, 8, 8])
    """

    def __init__(self, in_chs: int, out_chs: int, layers: Layers, dilation: Tuple[int, int] = (1, 1),
                 drop_path_rate: float = 0.0, transformer_dim: Optional[int] = None, transformer_depth: int = 2,
                 patch_size: int = 2, num_heads: int = 4, mlp_ratio: float = 2.0, kernel_size: int = 3) -> None:
        super().__init__()
        transformer_dim = transformer_dim or in_chs
        self.conv_kxk = layers.conv_norm_act(in_chs, in_chs, kernel_size, dilation=dilation[0])
        self.conv_1x1 = nn.Conv2d(in_chs, transformer_dim, kernel_size=1, bias=False)
        options = block_options(mlp_ratio=mlp_ratio, qkv_bias=True, act_layer=layers.act_layer,
                                norm_layer=partial(nn.LayerNorm, eps=1e-5))
        self.transformer = nn.Sequential(*[Block(transformer_dim, num_heads, options, drop_path=drop_path_rate)
                                           for _ in range(transformer_depth)])
        self.norm = nn.LayerNorm(transformer_dim, eps=1e-5)
        self.conv_proj = layers.conv_norm_act(transformer_dim, out_chs, 1)
        self.conv_fusion = layers.conv_norm_act(in_chs + out_chs, out_chs, kernel_size)
        self.patch_size = to_2tuple(patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_1x1(self.conv_kxk(x))
        B, C, H, W = x.shape
        ph, pw = self.patch_size
        nh, nw = _patch_grid(H, W, self.patch_size)
        resample = (nh * ph, nw * pw) != (H, W)
        if resample:
            x = F.interpolate(x, size=(nh * ph, nw * pw), mode='bilinear', align_corners=False)
        # (B, C, nh, ph, nw, pw) -> one sequence of nh * nw patches per (image, pixel position in the patch)
        x = x.reshape(B, C, nh, ph, nw, pw).permute(0, 3, 5, 2, 4, 1).reshape(B * ph * pw, nh * nw, C)
        x = self.norm(self.transformer(x))
        x = x.reshape(B, ph, pw, nh, nw, C).permute(0, 5, 3, 1, 4, 2).reshape(B, C, nh * ph, nw * pw)
        if resample:
            x = F.interpolate(x, size=(H, W), mode='bilinear', align_corners=False)
        x = self.conv_proj(x)
        return self.conv_fusion(torch.cat((shortcut, x), dim=1))


class LinearSelfAttention(nn.Module):
    """Separable self-attention on (B, C, P, N) patches: one score per patch (softmax over the N patches) weighs
    the keys into a context vector per pixel position, which gates the ReLU'd values.

    >>> LinearSelfAttention(8)(torch.ones(1, 8, 4, 6)).shape
    torch.Size([1, 8, 4, 6])
    """

    def __init__(self, embed_dim: int, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.qkv_proj = nn.Conv2d(embed_dim, 1 + 2 * embed_dim, kernel_size=1)
        self.attn_drop = nn.Dropout(attn_drop)
        self.out_proj = nn.Conv2d(embed_dim, embed_dim, kernel_size=1)
        self.out_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query, key, value = self.qkv_proj(x).split([1, self.embed_dim, self.embed_dim], dim=1)
        scores = self.attn_drop(F.softmax(query, dim=-1))
        context = (key * scores).sum(dim=-1, keepdim=True)
        return self.out_drop(self.out_proj(F.relu(value) * context.expand_as(value)))


class LinearTransformerBlock(nn.Module):
    """Pre-norm block of MobileViT-v2: linear self-attention and a 1x1-conv MLP, each residual, on (B, C, P, N).

    >>> LinearTransformerBlock(8)(torch.ones(1, 8, 4, 6)).shape
    torch.Size([1, 8, 4, 6])
    """

    def __init__(self, embed_dim: int, mlp_ratio: float = 2.0, drop_path: float = 0.0,
                 act_layer: str = 'silu') -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(1, embed_dim)
        self.attn = LinearSelfAttention(embed_dim)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.GroupNorm(1, embed_dim)
        self.mlp = Mlp(embed_dim, int(embed_dim * mlp_ratio), act_layer=act_layer, use_conv=True)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


@register_notrace_module  # the map is resampled to whole patches only when its size asks for it
class MobileVitV2Block(nn.Module):
    """MobileViT-v2: a depthwise kxk conv-norm-act and a 1x1 projection to ``bottle_ratio * in_chs``; the patches
    are laid out (B, C, pixels per patch, patches) for :class:`LinearTransformerBlock`; folded back and projected
    to ``out_chs`` without activation.

    A map that is not a whole number of patches is resampled (bilinear, corners aligned) up to one first, and the
    block's output keeps that size, as the reference does.

    >>> MobileVitV2Block(16, 16, Layers('silu'), transformer_depth=1)(torch.ones(1, 16, 8, 8)).shape
    torch.Size([1, 16, 8, 8])
    """

    def __init__(self, in_chs: int, out_chs: int, layers: Layers, dilation: Tuple[int, int] = (1, 1),
                 drop_path_rate: float = 0.0, bottle_ratio: float = 0.5, transformer_depth: int = 2,
                 patch_size: int = 2, mlp_ratio: float = 2.0, kernel_size: int = 3) -> None:
        super().__init__()
        transformer_dim = make_divisible(bottle_ratio * in_chs)
        self.conv_kxk = layers.conv_norm_act(in_chs, in_chs, kernel_size, dilation=dilation[0], groups=in_chs)
        self.conv_1x1 = nn.Conv2d(in_chs, transformer_dim, kernel_size=1, bias=False)
        self.transformer = nn.Sequential(*[
            LinearTransformerBlock(transformer_dim, mlp_ratio, drop_path=drop_path_rate, act_layer=layers.act_layer)
            for _ in range(transformer_depth)])
        self.norm = nn.GroupNorm(1, transformer_dim)
        self.conv_proj = layers.conv_norm_act(transformer_dim, out_chs, 1, apply_act=False)
        self.patch_size = to_2tuple(patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        ph, pw = self.patch_size
        nh, nw = _patch_grid(H, W, self.patch_size)
        if (nh * ph, nw * pw) != (H, W):
            x = F.interpolate(x, size=(nh * ph, nw * pw), mode='bilinear', align_corners=True)
        x = self.conv_1x1(self.conv_kxk(x))
        C = x.shape[1]
        x = x.reshape(B, C, nh, ph, nw, pw).permute(0, 1, 3, 5, 2, 4).reshape(B, C, ph * pw, nh * nw)
        x = self.norm(self.transformer(x))
        x = x.reshape(B, C, ph, pw, nh, nw).permute(0, 1, 4, 2, 5, 3).reshape(B, C, nh * ph, nw * pw)
        return self.conv_proj(x)


TAIL_BLOCKS = {'mobilevit': MobileVitBlock, 'mobilevit2': MobileVitV2Block}


def _inverted_residual(depth: int, channels: int, stride: int, ratio: float = 4.0) -> Dict[str, Any]:
    """One stage of inverted residuals: a depthwise bottleneck ``ratio`` times wider than its input, linear out."""
    return dict(depth=depth, channels=channels, stride=stride, ratio=ratio)


def _row(stages: Tuple[Dict[str, Any], ...], tails: Tuple[Optional[Dict[str, Any]], ...], stem_chs: int,
         **kwargs: Any) -> Dict[str, Any]:
    """A ByobNet row from per-stage inverted-residual specs and the block that ends each stage (or None)."""
    return dict(
        block='bottle', depths=tuple(s['depth'] for s in stages), channels=tuple(s['channels'] for s in stages),
        strides=tuple(s['stride'] for s in stages), bottle_ratio=tuple(s['ratio'] for s in stages), group_size=1,
        block_kwargs=dict(bottle_in=True, linear_out=True), stem_chs=stem_chs, downsample='', stage_tail=tails,
        **kwargs)


def _v1(widths: Tuple[int, ...], dims: Tuple[int, int, int], num_features: int, ratio: float = 4.0,
        **kwargs: Any) -> Dict[str, Any]:
    stages = (_inverted_residual(1, widths[0], 1, ratio), _inverted_residual(3, widths[1], 2, ratio),
              *(_inverted_residual(1, w, 2, ratio) for w in widths[2:]))
    tails = (None, None, *(dict(type='mobilevit', transformer_dim=dim, transformer_depth=depth, patch_size=2)
                           for dim, depth in zip(dims, (2, 4, 3))))
    return _row(stages, tails, stem_chs=16, num_features=num_features, **kwargs)


def _v2(multiplier: float) -> Dict[str, Any]:
    widths = tuple(int(c * multiplier) for c in (64, 128, 256, 384, 512))
    stages = (_inverted_residual(1, widths[0], 1, 2.0), _inverted_residual(2, widths[1], 2, 2.0),
              *(_inverted_residual(1, w, 2, 2.0) for w in widths[2:]))
    tails = (None, None, *(dict(type='mobilevit2', transformer_depth=depth, patch_size=2) for depth in (2, 4, 3)))
    return _row(stages, tails, stem_chs=int(32 * multiplier), act_layer='silu')


VARIANTS: Dict[str, Dict[str, Any]] = {
    'mobilevit_xxs': _v1((16, 24, 48, 64, 80), (64, 80, 96), 320, ratio=2.0, act_layer='silu'),
    'mobilevit_xs': _v1((32, 48, 64, 80, 96), (96, 120, 144), 384, act_layer='silu'),
    'mobilevit_s': _v1((32, 64, 96, 128, 160), (144, 192, 240), 640, act_layer='silu'),
    'mobilevitv2_050': _v2(0.5),
    'mobilevitv2_075': _v2(0.75),
    'mobilevitv2_100': _v2(1.0),
    'mobilevitv2_125': _v2(1.25),
    'mobilevitv2_150': _v2(1.5),
    'mobilevitv2_175': _v2(1.75),
    'mobilevitv2_200': _v2(2.0),
}

# the last stage (stride 32) unfolds 2x2 patches: whole patches at every stride this family takes
PATCH_MULTIPLE = 64

SPEC = FamilySpec(
    name='mobilevit', model=partial(ByobNet, tail_blocks=TAIL_BLOCKS), variants=VARIANTS, default_cfg=DEFAULT_CFG,
    feature_cls=('list', 'dict', 'hook', 'fx', 'getter'), default_feature_cls='list', output_strides=OUTPUT_STRIDES,
    # no dynamic_hw: the blocks branch on whether the map is a whole number of patches
    export=('torch.export', 'onnx', 'compile'), size_args=('bottle_ratio',),
    input_multiple=PATCH_MULTIPLE, min_input_size=PATCH_MULTIPLE)
