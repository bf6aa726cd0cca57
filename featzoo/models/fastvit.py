"""FastViT and the MobileCLIP image towers (``fastvit_mci*``): a MobileOne stem, stages of RepMixer blocks (a
depthwise token mixer that re-parameterizes into one conv) with large-kernel patch embeddings between them, and in
the hybrid rows attention stages behind a conditional position encoding (RepCPE); a squeeze-excited MobileOne conv
and a linear head (an image-text projection for the MobileCLIP tags).

The blocks hold the training-time (multi-branch) weights timm publishes; :meth:`FastVit.reparameterize` fuses
them into the inference form (one conv per block), which computes the same function.

Parameter names follow timm's ``fastvit`` module so its checkpoints load unchanged (Apple's original layout is
renamed by :func:`checkpoint_filter_fn`).

Papers: "FastViT: A Fast Hybrid Vision Transformer using Structural Reparameterization",
https://arxiv.org/abs/2303.14189; "MobileCLIP: Fast Image-Text Models through Multi-Modal Reinforced Training",
https://arxiv.org/abs/2311.17049

>>> model = SPEC.build('fastvit_t8', num_classes=10)
>>> [f['reduction'] for f in model.feature_info]
[4, 8, 16, 32]
"""
from __future__ import annotations

import bisect
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from ..checks import check_choice, check_int
from ..family import FamilySpec
from ..layers import ClassifierHead, ConvNormAct, DropPath, LayerNorm2d, SEModule, create_conv2d, drop_path_rates
from ..layers.activations import create_act_layer
from ..layers.head_api import HeadApi, reset_classifier_head
from ..layers.stage_intermediates import StagedFeatures, run_sequence
from ..layers.pooling import POOL_TYPES
from ..layers.weight_init import trunc_normal_

TOKEN_MIXERS = ('repmixer', 'attention')
NORM_LAYERS = ('batchnorm', 'layernorm')
DEFAULT_CFG = dict(
    input_size=(3, 256, 256), pool_size=(8, 8), interpolation='bicubic', crop_pct=0.9, crop_mode='center',
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
    first_conv=('stem.0.conv_kxk.0.conv', 'stem.0.conv_scale.conv'), classifier='head.fc', num_classes=1000)


def _groups(group_size: int, channels: int) -> int:
    """Groups of a conv over ``channels`` with ``group_size`` channels each (0: dense, 1: depthwise)."""
    if not group_size:
        return 1
    if channels % group_size:
        raise ValueError(f'group_size={group_size} does not divide {channels} channels')
    return channels // group_size


def _fuse_conv_bn(weight: torch.Tensor, bn: nn.BatchNorm2d) -> Tuple[torch.Tensor, torch.Tensor]:
    """The kernel and bias of a conv (``weight``, no bias) followed by batch norm in eval mode."""
    scale = bn.weight / (bn.running_var + bn.eps).sqrt()
    return weight * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


def _identity_kernel(channels: int, groups: int, kernel_size: int, like: torch.Tensor) -> torch.Tensor:
    """A (grouped) conv kernel that passes each channel through unchanged."""
    per_group = channels // groups
    kernel = torch.zeros(channels, per_group, kernel_size, kernel_size, dtype=like.dtype, device=like.device)
    index = torch.arange(channels, device=like.device)
    kernel[index, index % per_group, kernel_size // 2, kernel_size // 2] = 1
    return kernel


def _pad_kernel(kernel: torch.Tensor, size: int) -> torch.Tensor:
    pad = (size - kernel.shape[-1]) // 2
    return F.pad(kernel, [pad] * 4)


def _fused_conv(in_chs: int, out_chs: int, kernel_size: int, stride: int, dilation: int, groups: int,
                kernel: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    conv = create_conv2d(in_chs, out_chs, kernel_size, stride=stride, dilation=dilation, groups=groups, bias=True)
    conv.to(device=kernel.device, dtype=kernel.dtype)
    with torch.no_grad():
        conv.weight.copy_(kernel)
        conv.bias.copy_(bias)
    return conv


class MobileOneBlock(nn.Module):
    """MobileOne's re-parameterizable conv: ``num_conv_branches`` parallel kxk conv-norms, a 1x1 conv-norm
    (``conv_scale``) and a norm-only ``identity`` where the shape holds, summed, then squeeze-excite and
    activation. :meth:`reparameterize` folds the branches into ``reparam_conv``.

    >>> MobileOneBlock(8, 8, 3, group_size=1)(torch.ones(1, 8, 6, 6)).shape
    torch.Size([1, 8, 6, 6])
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                 group_size: int = 0, use_se: bool = False, use_act: bool = True, use_scale_branch: bool = True,
                 num_conv_branches: int = 1, act_layer: str = 'gelu') -> None:
        super().__init__()
        self.in_chs, self.out_chs, self.kernel_size = in_chs, out_chs, kernel_size
        self.stride, self.dilation = stride, dilation
        self.groups = _groups(group_size, in_chs)
        self.se = SEModule(out_chs, rd_divisor=1) if use_se else nn.Identity()
        self.reparam_conv: Optional[nn.Conv2d] = None
        self.identity = nn.BatchNorm2d(in_chs) if in_chs == out_chs and stride == 1 else None
        self.conv_kxk = nn.ModuleList([
            ConvNormAct(in_chs, out_chs, kernel_size, stride=stride, dilation=dilation, groups=self.groups,
                        apply_act=False) for _ in range(num_conv_branches)]) if num_conv_branches > 0 else None
        self.conv_scale = (ConvNormAct(in_chs, out_chs, 1, stride=stride, groups=self.groups, apply_act=False)
                           if kernel_size > 1 and use_scale_branch else None)
        self.act = create_act_layer(act_layer) if use_act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.act(self.se(self.reparam_conv(x)))
        out = self.identity(x) if self.identity is not None else None
        branches = ([self.conv_scale] if self.conv_scale is not None else []) + list(self.conv_kxk or [])
        for branch in branches:
            out = branch(x) if out is None else out + branch(x)
        return self.act(self.se(out))

    def fused_kernel_bias(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """The one kxk kernel and bias that compute the sum of the branches (eval-mode norms)."""
        kernel, bias = 0, 0
        for branch in self.conv_kxk or []:
            k, b = _fuse_conv_bn(branch.conv.weight, branch.bn)
            kernel, bias = kernel + k, bias + b
        if self.conv_scale is not None:
            k, b = _fuse_conv_bn(self.conv_scale.conv.weight, self.conv_scale.bn)
            kernel, bias = kernel + _pad_kernel(k, self.kernel_size), bias + b
        if self.identity is not None:
            eye = _identity_kernel(self.in_chs, self.groups, self.kernel_size, self.identity.weight)
            k, b = _fuse_conv_bn(eye, self.identity)
            kernel, bias = kernel + k, bias + b
        return kernel, bias

    def reparameterize(self) -> None:
        """Replace the branches by one conv that computes their sum."""
        if self.reparam_conv is not None:
            return
        kernel, bias = self.fused_kernel_bias()
        self.reparam_conv = _fused_conv(self.in_chs, self.out_chs, self.kernel_size, self.stride, self.dilation,
                                        self.groups, kernel.detach(), bias.detach())
        self.identity = self.conv_kxk = self.conv_scale = None


class ReparamLargeKernelConv(nn.Module):
    """A large-kernel conv-norm with a parallel small-kernel conv-norm (RepLKNet), then optional squeeze-excite and
    activation.

    >>> ReparamLargeKernelConv(8, 16, 7, stride=2, group_size=1)(torch.ones(1, 8, 8, 8)).shape
    torch.Size([1, 16, 4, 4])
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int, group_size: int,
                 small_kernel: int = 3, dilation: int = 1, use_se: bool = False,
                 act_layer: Optional[str] = None) -> None:
        super().__init__()
        self.in_chs, self.out_chs, self.kernel_size = in_chs, out_chs, kernel_size
        self.stride, self.dilation = stride, dilation
        self.groups = _groups(group_size, in_chs)
        self.reparam_conv: Optional[nn.Conv2d] = None
        self.large_conv = ConvNormAct(in_chs, out_chs, kernel_size, stride=stride, dilation=dilation,
                                      groups=self.groups, apply_act=False)
        self.small_conv = ConvNormAct(in_chs, out_chs, small_kernel, stride=stride, dilation=dilation,
                                      groups=self.groups, apply_act=False)
        self.se = SEModule(out_chs, rd_ratio=0.25) if use_se else nn.Identity()
        self.act = create_act_layer(act_layer) if act_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            out = self.reparam_conv(x)
        else:
            out = self.large_conv(x) + self.small_conv(x)
        return self.act(self.se(out))

    def reparameterize(self) -> None:
        if self.reparam_conv is not None:
            return
        kernel, bias = _fuse_conv_bn(self.large_conv.conv.weight, self.large_conv.bn)
        small_kernel, small_bias = _fuse_conv_bn(self.small_conv.conv.weight, self.small_conv.bn)
        kernel = kernel + _pad_kernel(small_kernel, self.kernel_size)
        self.reparam_conv = _fused_conv(self.in_chs, self.out_chs, self.kernel_size, self.stride, self.dilation,
                                        self.groups, kernel.detach(), (bias + small_bias).detach())
        self.large_conv = self.small_conv = None


class PatchEmbed(nn.Module):
    """Downsampling between stages: a depthwise large-kernel conv (``proj.0``) then a 1x1 MobileOne (``proj.1``).

    >>> PatchEmbed(7, 2, 8, 16)(torch.ones(1, 8, 8, 8)).shape
    torch.Size([1, 16, 4, 4])
    """

    def __init__(self, patch_size: int, stride: int, in_chs: int, embed_dim: int, dilation: int = 1,
                 act_layer: str = 'gelu', lkc_use_act: bool = False, use_se: bool = False) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            # the published weights were trained without this activation, the MobileCLIP towers with it
            ReparamLargeKernelConv(in_chs, embed_dim, patch_size, stride, group_size=1, dilation=dilation,
                                   use_se=use_se, act_layer=act_layer if lkc_use_act else None),
            MobileOneBlock(embed_dim, embed_dim, 1, act_layer=act_layer))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class LayerScale2d(nn.Module):
    """Per-channel scale ``gamma`` of shape (C, 1, 1) on NCHW maps."""

    def __init__(self, dim: int, init_values: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim, 1, 1), float(init_values)))  # no Python ref on the meta device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class RepMixer(nn.Module):
    """Token mixing by ``x + gamma * (mixer(x) - norm(x))`` with depthwise MobileOne convs (``norm`` is the
    identity branch alone); re-parameterizes into one depthwise conv.

    >>> RepMixer(8)(torch.ones(1, 8, 5, 5)).shape
    torch.Size([1, 8, 5, 5])
    """

    def __init__(self, dim: int, kernel_size: int = 3, dilation: int = 1,
                 layer_scale_init_value: Optional[float] = 1e-5) -> None:
        super().__init__()
        self.dim, self.kernel_size, self.dilation = dim, kernel_size, dilation
        self.reparam_conv: Optional[nn.Conv2d] = None
        self.norm = MobileOneBlock(dim, dim, kernel_size, dilation=dilation, group_size=1, use_act=False,
                                   use_scale_branch=False, num_conv_branches=0)
        self.mixer = MobileOneBlock(dim, dim, kernel_size, dilation=dilation, group_size=1, use_act=False)
        self.layer_scale = (LayerScale2d(dim, layer_scale_init_value) if layer_scale_init_value is not None
                            else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.reparam_conv(x)
        return x + self.layer_scale(self.mixer(x) - self.norm(x))

    def reparameterize(self) -> None:
        if self.reparam_conv is not None:
            return
        mixer_kernel, mixer_bias = self.mixer.fused_kernel_bias()
        norm_kernel, norm_bias = self.norm.fused_kernel_bias()
        scale = (self.layer_scale.gamma if isinstance(self.layer_scale, LayerScale2d)
                 else torch.ones(self.dim, 1, 1, dtype=mixer_kernel.dtype, device=mixer_kernel.device))
        eye = _identity_kernel(self.dim, self.dim, self.kernel_size, mixer_kernel)
        kernel = eye + scale.unsqueeze(-1) * (mixer_kernel - norm_kernel)
        bias = scale.flatten() * (mixer_bias - norm_bias)
        self.reparam_conv = _fused_conv(self.dim, self.dim, self.kernel_size, 1, self.dilation, self.dim,
                                        kernel.detach(), bias.detach())
        self.norm = self.mixer = self.layer_scale = None


class ConvMlp(nn.Module):
    """Depthwise 7x7 conv-norm, then a 1x1-conv MLP.

    >>> ConvMlp(8, 24)(torch.ones(1, 8, 5, 5)).shape
    torch.Size([1, 8, 5, 5])
    """

    def __init__(self, in_chs: int, hidden_channels: int, dilation: int = 1, act_layer: str = 'gelu',
                 drop: float = 0.0) -> None:
        super().__init__()
        self.conv = ConvNormAct(in_chs, in_chs, 7, dilation=dilation, groups=in_chs, apply_act=False)
        self.fc1 = nn.Conv2d(in_chs, hidden_channels, kernel_size=1)
        self.act = create_act_layer(act_layer)
        self.fc2 = nn.Conv2d(hidden_channels, in_chs, kernel_size=1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.fc1(self.conv(x))))
        return self.drop(self.fc2(x))


class RepConditionalPosEnc(nn.Module):
    """Conditional position encoding ``x + dwconv7x7(x)``; re-parameterizes into the conv alone.

    >>> RepConditionalPosEnc(8)(torch.ones(1, 8, 5, 5)).shape
    torch.Size([1, 8, 5, 5])
    """

    def __init__(self, dim: int, spatial_shape: int = 7, dilation: int = 1) -> None:
        super().__init__()
        self.dim, self.kernel_size, self.dilation = dim, spatial_shape, dilation
        self.reparam_conv: Optional[nn.Conv2d] = None
        self.pos_enc = nn.Conv2d(dim, dim, spatial_shape, padding=dilation * (spatial_shape // 2), dilation=dilation,
                                 groups=dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.reparam_conv(x)
        return self.pos_enc(x) + x

    def reparameterize(self) -> None:
        if self.reparam_conv is not None:
            return
        kernel = _identity_kernel(self.dim, self.dim, self.kernel_size, self.pos_enc.weight) + self.pos_enc.weight
        self.reparam_conv = _fused_conv(self.dim, self.dim, self.kernel_size, 1, self.dilation, self.dim,
                                        kernel.detach(), self.pos_enc.bias.detach())
        self.pos_enc = None


class Attention(nn.Module):
    """Multi-head self-attention over the pixels of an NCHW map (heads of ``head_dim`` channels, no qkv bias).

    >>> Attention(64)(torch.ones(1, 64, 3, 4)).shape
    torch.Size([1, 64, 3, 4])
    """

    def __init__(self, dim: int, head_dim: int = 32, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % head_dim:
            raise ValueError(f'attention width {dim} is not a multiple of head_dim={head_dim}')
        self.head_dim, self.num_heads = head_dim, dim // head_dim
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        tokens = x.flatten(2).transpose(-2, -1)
        q, k, v = self.qkv(tokens).reshape(B, H * W, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
        out = self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, H * W, C)))
        return out.transpose(-2, -1).reshape(B, C, H, W)


def _drop_path(rate: float) -> nn.Module:
    return DropPath(rate) if rate > 0 else nn.Identity()


def _layer_scale(dim: int, init_value: Optional[float]) -> nn.Module:
    return LayerScale2d(dim, init_value) if init_value is not None else nn.Identity()


class RepMixerBlock(nn.Module):
    """MetaFormer block with :class:`RepMixer` as token mixer and a layer-scaled :class:`ConvMlp`."""

    def __init__(self, dim: int, kernel_size: int = 3, mlp_ratio: float = 4.0, dilation: int = 1,
                 act_layer: str = 'gelu', proj_drop: float = 0.0, drop_path: float = 0.0,
                 layer_scale_init_value: Optional[float] = 1e-5) -> None:
        super().__init__()
        self.token_mixer = RepMixer(dim, kernel_size, dilation, layer_scale_init_value)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), dilation, act_layer, proj_drop)
        self.layer_scale = _layer_scale(dim, layer_scale_init_value)
        self.drop_path = _drop_path(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.token_mixer(x)
        return x + self.drop_path(self.layer_scale(self.mlp(x)))


class AttentionBlock(nn.Module):
    """MetaFormer block with normed multi-head self-attention as token mixer and a :class:`ConvMlp`, both
    layer-scaled residuals."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, dilation: int = 1, act_layer: str = 'gelu',
                 norm_layer: str = 'batchnorm', proj_drop: float = 0.0, drop_path: float = 0.0,
                 layer_scale_init_value: Optional[float] = 1e-5) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(dim) if norm_layer == 'batchnorm' else LayerNorm2d(dim, eps=1e-5)
        self.token_mixer = Attention(dim)
        self.layer_scale_1 = _layer_scale(dim, layer_scale_init_value)
        self.drop_path1 = _drop_path(drop_path)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), dilation, act_layer, proj_drop)
        self.layer_scale_2 = _layer_scale(dim, layer_scale_init_value)
        self.drop_path2 = _drop_path(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.layer_scale_1(self.token_mixer(self.norm(x))))
        return x + self.drop_path2(self.layer_scale_2(self.mlp(x)))


class FastVitStage(nn.Module):
    """Optional :class:`PatchEmbed` downsample, optional RepCPE position encoding, then the blocks.

    ``dilation`` is (the downsample's dilation, the blocks' dilation): a stride given up for ``output_stride``
    dilates what follows it.
    """

    def __init__(self, dim: int, dim_out: int, depth: int, token_mixer: str, downsample: bool = True,
                 stride: int = 2, dilation: Tuple[int, int] = (1, 1), se_downsample: bool = False,
                 down_patch_size: int = 7, pos_emb: bool = False, kernel_size: int = 3, mlp_ratio: float = 4.0,
                 act_layer: str = 'gelu', norm_layer: str = 'batchnorm', proj_drop_rate: float = 0.0,
                 drop_path_rates: Sequence[float] = (), layer_scale_init_value: Optional[float] = 1e-5,
                 lkc_use_act: bool = False) -> None:
        super().__init__()
        self.grad_checkpointing = False
        if downsample:
            self.downsample: nn.Module = PatchEmbed(down_patch_size, stride, dim, dim_out, dilation[0], act_layer,
                                                    lkc_use_act, se_downsample)
        else:
            self.downsample = nn.Identity()
        self.pos_emb = RepConditionalPosEnc(dim_out, dilation=dilation[1]) if pos_emb else nn.Identity()
        rates = list(drop_path_rates) or [0.0] * depth
        blocks: List[nn.Module] = []
        for i in range(depth):
            if token_mixer == 'repmixer':
                blocks.append(RepMixerBlock(dim_out, kernel_size, mlp_ratio, dilation[1], act_layer, proj_drop_rate,
                                            rates[i], layer_scale_init_value))
            else:
                blocks.append(AttentionBlock(dim_out, mlp_ratio, dilation[1], act_layer, norm_layer, proj_drop_rate,
                                             rates[i], layer_scale_init_value))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pos_emb(self.downsample(x))
        return run_sequence(self.blocks, x, self.grad_checkpointing and torch.is_grad_enabled())


def _output_strides(embed_dims: Sequence[int], downsamples: Sequence[bool]) -> Tuple[int, ...]:
    """The output strides a network takes: 8 up to its natural stride (4 after the stem, x2 per downsample).

    >>> _output_strides((48, 96, 192, 384), (False, True, True, True))
    (8, 16, 32)
    """
    natural = 4 * 2 ** sum(bool(d) or a != b for d, a, b in zip(downsamples, embed_dims[:1] + tuple(embed_dims),
                                                                 embed_dims))
    return tuple(2 ** i for i in range(3, natural.bit_length()))


def _per_stage(name: str, value: Any, num_stages: int) -> Tuple[Any, ...]:
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,) * num_stages
    if len(values) != num_stages:
        raise ValueError(f'{name} must have one entry per stage ({num_stages}), got {len(values)}: {values}')
    return values


class FastVit(StagedFeatures, HeadApi, nn.Module):
    """Stem (three MobileOne blocks, stride 4), ``stages.0``..``stages.{n-1}``, ``final_conv`` (a depthwise
    squeeze-excited MobileOne widening by ``cls_ratio``) and a pooled linear head.

    Per stage: ``layers`` (depth), ``embed_dims``, ``mlp_ratios``, ``token_mixers`` ('repmixer' | 'attention'),
    ``downsamples`` (a stride-2 patch embedding; implied by a change of width), ``se_downsamples``, ``pos_embs``
    (RepCPE before the blocks). Later stages trade stride for dilation below ``output_stride``.

    >>> FastVit(layers=(1, 1, 1, 1), embed_dims=(32, 32, 64, 64), num_classes=3)(torch.ones(1, 3, 64, 64)).shape
    torch.Size([1, 3])
    """

    checkpoint_stages = 'stages'
    features_end = 'final_conv'  # it never feeds a level

    def __init__(self, layers: Sequence[int] = (2, 2, 6, 2), embed_dims: Sequence[int] = (64, 128, 256, 512),
                 mlp_ratios: Union[float, Sequence[float]] = 4.0,
                 token_mixers: Union[str, Sequence[str]] = 'repmixer',
                 downsamples: Union[bool, Sequence[bool]] = (False, True, True, True),
                 se_downsamples: Union[bool, Sequence[bool]] = False, pos_embs: Union[bool, Sequence[bool]] = False,
                 repmixer_kernel_size: int = 3, down_patch_size: int = 7, layer_scale_init_value: float = 1e-5,
                 lkc_use_act: bool = False, stem_use_scale_branch: bool = True, cls_ratio: float = 2.0,
                 norm_layer: str = 'batchnorm', act_layer: str = 'gelu', num_classes: int = 1000,
                 in_chans: int = 3, global_pool: str = 'avg', output_stride: Optional[int] = None,
                 drop_rate: float = 0.0,
                 proj_drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        check_choice('norm_layer', norm_layer, NORM_LAYERS)
        check_choice('global_pool', global_pool, POOL_TYPES)
        num_stages = len(layers)
        for depth in layers:
            check_int('each layers entry', depth, 1)
        embed_dims = _per_stage('embed_dims', embed_dims, num_stages)
        mlp_ratios = _per_stage('mlp_ratios', mlp_ratios, num_stages)
        token_mixers = _per_stage('token_mixers', token_mixers, num_stages)
        downsamples = _per_stage('downsamples', downsamples, num_stages)
        se_downsamples = _per_stage('se_downsamples', se_downsamples, num_stages)
        pos_embs = _per_stage('pos_embs', pos_embs, num_stages)
        for mixer in token_mixers:
            check_choice('each token_mixers entry', mixer, TOKEN_MIXERS)
        strides = _output_strides(embed_dims, downsamples)
        output_stride = strides[-1] if output_stride is None else output_stride
        check_choice('output_stride', output_stride, strides)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.drop_rate = drop_rate

        self.stem = nn.Sequential(
            MobileOneBlock(in_chans, embed_dims[0], 3, stride=2, act_layer=act_layer,
                           use_scale_branch=stem_use_scale_branch),
            MobileOneBlock(embed_dims[0], embed_dims[0], 3, stride=2, group_size=1, act_layer=act_layer,
                           use_scale_branch=stem_use_scale_branch),
            MobileOneBlock(embed_dims[0], embed_dims[0], 1, act_layer=act_layer,
                           use_scale_branch=stem_use_scale_branch))
        net_stride, dilation = 4, 1
        prev_dim = embed_dims[0]
        rates = drop_path_rates(drop_path_rate, list(layers))
        self.feature_info: List[Dict[str, Any]] = []
        stages = []
        for i in range(num_stages):
            downsample = downsamples[i] or prev_dim != embed_dims[i]
            stride, first_dilation = 2, dilation
            if downsample and net_stride >= output_stride:
                dilation *= 2
                stride = 1
            elif downsample:
                net_stride *= 2
            stages.append(FastVitStage(
                prev_dim, embed_dims[i], layers[i], token_mixers[i], downsample=downsample, stride=stride,
                dilation=(first_dilation, dilation), se_downsample=se_downsamples[i],
                down_patch_size=down_patch_size, pos_emb=pos_embs[i], kernel_size=repmixer_kernel_size,
                mlp_ratio=mlp_ratios[i], act_layer=act_layer, norm_layer=norm_layer, proj_drop_rate=proj_drop_rate,
                drop_path_rates=rates[i], layer_scale_init_value=layer_scale_init_value, lkc_use_act=lkc_use_act))
            prev_dim = embed_dims[i]
            self.feature_info.append(dict(num_chs=prev_dim, reduction=net_stride, module=f'stages.{i}'))
        self.stages = nn.Sequential(*stages)
        self.num_stages = num_stages
        self.num_features = int(prev_dim * cls_ratio)
        self.final_conv: nn.Module = MobileOneBlock(prev_dim, self.num_features, 3, dilation=dilation, group_size=1,
                                                    use_se=True, act_layer=act_layer)
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self.head_hidden_size = self.num_features * self.head.global_pool.feat_mult()
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, ConvMlp):
                for conv in (m.conv.conv, m.fc1, m.fc2):
                    trunc_normal_(conv.weight, std=0.02)
                    if conv.bias is not None:
                        nn.init.zeros_(conv.bias)
            elif isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    # ---- the contract ------------------------------------------------------------------------------------------
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter-group regexes: the stem, then stages (``coarse``) or each stage's downsample and blocks.

        >>> SPEC.build('fastvit_t8').group_matcher()['stem']
        '^stem'
        """
        return dict(stem=r'^stem', blocks=r'^stages\.(\d+)' if coarse else [
            (r'^stages\.(\d+).downsample', (0,)), (r'^stages\.(\d+).pos_emb', (0,)),
            (r'^stages\.(\d+)\.\w+\.(\d+)', None)])

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier (``num_classes=0`` removes it); ``global_pool=None`` keeps the pooling.

        >>> m = SPEC.build('fastvit_t8'); m.reset_classifier(0, ''); m(torch.ones(1, 3, 64, 64)).shape
        torch.Size([1, 768, 2, 2])
        """
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f'num_classes must be an int >= 0 (0 removes the classifier), got {num_classes!r}')
        if global_pool is not None:
            check_choice('global_pool', global_pool, POOL_TYPES)
        reset_classifier_head(self, num_classes, global_pool)
        if global_pool is not None:
            self.global_pool = global_pool

    def reparameterize(self) -> None:
        """Fuse every re-parameterizable block into its inference form (one conv each); the model computes the
        same function in eval mode, with fewer and different parameters.

        >>> m = SPEC.build('fastvit_t8').eval(); x = torch.randn(1, 3, 64, 64); ref = m(x); m.reparameterize()
        >>> bool((m(x) - ref).abs().max() < 1e-3)
        True
        """
        for module in list(self.modules()):
            if module is not self and callable(getattr(module, 'reparameterize', None)):
                module.reparameterize()

    def _prune_end(self, last: int, num_levels: int, prune_norm: bool, prune_head: bool) -> None:
        # ``final_conv`` and the classifier go unless every stage stays and neither pruning asks for them
        if prune_norm or prune_head or last < num_levels - 1:
            self.final_conv = nn.Identity()
            self.num_features = self.head_hidden_size = self.feature_info[last]['num_chs']
            self.reset_classifier(0, '')

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final map (after ``final_conv``), NCHW.

        >>> SPEC.build('fastvit_t8').forward_features(torch.ones(1, 3, 64, 64)).shape
        torch.Size([1, 768, 2, 2])
        """
        return self.final_conv(self.stages(self.stem(x)))


def _convert_original(state_dict: Mapping[str, torch.Tensor], model: FastVit) -> Dict[str, torch.Tensor]:
    """Apple's layout (``patch_embed``, a flat ``network`` list, ``rbr_*`` branches) renamed to this one."""
    prefix = 'image_encoder.model.' if any(k.startswith('image_encoder.model.') for k in state_dict) else ''
    # a downsample (``network.N.proj``) opens each stage after the first
    stage_starts = sorted({int(m.group(1)) for k in state_dict if (m := re.match(r'^(?:.*?)network\.(\d+)\.proj', k))})
    renames = (('patch_embed', 'stem'), ('rbr_conv', 'conv_kxk'), ('rbr_scale', 'conv_scale'),
               ('rbr_skip', 'identity'), ('conv_exp', 'final_conv'), ('lkb_origin', 'large_conv'),
               ('convffn', 'mlp'), ('se.reduce', 'se.fc1'), ('se.expand', 'se.fc2'), ('dist_head', 'head_dist'))
    out: Dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if prefix:
            if not key.startswith(prefix):
                continue
            key = key[len(prefix):]
        for old, new in renames:
            key = key.replace(old, new)
        key = re.sub(r'layer_scale_([0-9])$', r'layer_scale_\1.gamma', key)
        if key.endswith('layer_scale'):
            key += '.gamma'
        if key == 'head.proj':  # a CLIP projection (in, out) becomes the linear head with a zero bias
            value = value.T
            key = 'head.fc.weight'
            out['head.fc.bias'] = torch.zeros(value.shape[0], dtype=value.dtype)
        elif key.startswith('head.') and not key.startswith('head.fc.'):
            key = 'head.fc.' + key[len('head.'):]
        match = re.match(r'^network\.(\d+)\.(.*)$', key)
        if match:
            index, rest = int(match.group(1)), match.group(2)
            stage = bisect.bisect_right(stage_starts, index)
            if rest.startswith('proj'):
                key = f'stages.{stage}.downsample.{rest}'
            elif rest.startswith('pe.'):
                key = f'stages.{stage}.pos_emb.pos_enc.{rest[len("pe."):]}'
            else:
                key = f'stages.{stage}.blocks.{rest}'
        out[key] = value
    return out


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: FastVit) -> Dict[str, torch.Tensor]:
    """timm-layout checkpoints unchanged; OpenCLIP's ``visual.trunk`` prefix dropped; Apple's originals renamed.

    >>> sorted(checkpoint_filter_fn({'module.visual.trunk.stem.0.conv_kxk.0.conv.weight': 1}, None))
    ['stem.0.conv_kxk.0.conv.weight']
    """
    if 'stem.0.conv_kxk.0.conv.weight' in state_dict or 'stem.0.conv_scale.conv.weight' in state_dict:
        return state_dict
    for prefix in ('module.visual.trunk.', 'visual.trunk.'):
        if any(k.startswith(prefix) for k in state_dict):
            return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    return _convert_original(state_dict.get('state_dict', state_dict), model)


_SA = dict(token_mixers=('repmixer',) * 3 + ('attention',), pos_embs=(False,) * 3 + (True,))
_MCI = dict(_SA, mlp_ratios=3.0, se_downsamples=(False, False, True, True), lkc_use_act=True)
_MCI_L = dict(mlp_ratios=4.0, token_mixers=('repmixer',) * 3 + ('attention',) * 2, pos_embs=(False,) * 3 + (True,) * 2,
              downsamples=(False, True, True, True, True), lkc_use_act=True, norm_layer='layernorm',
              stem_use_scale_branch=False)

VARIANTS: Dict[str, Dict[str, Any]] = {
    'fastvit_t8': dict(layers=(2, 2, 4, 2), embed_dims=(48, 96, 192, 384), mlp_ratios=3.0),
    'fastvit_t12': dict(layers=(2, 2, 6, 2), embed_dims=(64, 128, 256, 512), mlp_ratios=3.0),
    'fastvit_s12': dict(layers=(2, 2, 6, 2), embed_dims=(64, 128, 256, 512), mlp_ratios=4.0),
    'fastvit_sa12': dict(_SA, layers=(2, 2, 6, 2), embed_dims=(64, 128, 256, 512), mlp_ratios=4.0),
    'fastvit_sa24': dict(_SA, layers=(4, 4, 12, 4), embed_dims=(64, 128, 256, 512), mlp_ratios=4.0),
    'fastvit_sa36': dict(_SA, layers=(6, 6, 18, 6), embed_dims=(64, 128, 256, 512), mlp_ratios=4.0),
    'fastvit_ma36': dict(_SA, layers=(6, 6, 18, 6), embed_dims=(76, 152, 304, 608), mlp_ratios=4.0),
    'fastvit_mci0': dict(_MCI, layers=(2, 6, 10, 2), embed_dims=(64, 128, 256, 512)),
    'fastvit_mci1': dict(_MCI, layers=(4, 12, 20, 4), embed_dims=(64, 128, 256, 512)),
    'fastvit_mci2': dict(_MCI, layers=(4, 12, 24, 4), embed_dims=(80, 160, 320, 640)),
    'fastvit_mci3': dict(_MCI_L, layers=(2, 12, 24, 4, 2), embed_dims=(96, 192, 384, 768, 1536)),
    'fastvit_mci4': dict(_MCI_L, layers=(2, 12, 24, 4, 4), embed_dims=(128, 256, 512, 1024, 2048)),
}


def head_is_projection(variant: str, row: Mapping[str, Any], tag: Mapping[str, Any]) -> bool:
    """The MobileCLIP towers' tags (``apple_mclip*``) end in a 512- or 768-wide image-text projection.

    >>> head_is_projection('fastvit_mci0', VARIANTS['fastvit_mci0'], dict(tag='apple_mclip', num_classes=512))
    True
    >>> head_is_projection('fastvit_t8', VARIANTS['fastvit_t8'], dict(tag='apple_in1k', num_classes=1000))
    False
    """
    return tag.get('tag', '').startswith('apple_mclip') and tag.get('num_classes', 0) > 0


def _natural_stride(name: str, row: Mapping[str, Any]) -> int:
    dims = row['embed_dims']
    return _output_strides(dims, _per_stage('downsamples', row.get('downsamples', (False, True, True, True)),
                                            len(dims)))[-1]


def _spec_strides(name: str, row: Mapping[str, Any]) -> Tuple[int, ...]:
    """8, 16 and 32 for the all-RepMixer rows, whose dilated stages are convolutions only; the natural stride
    alone where a dilated stage would be an attention stage."""
    if row.get('token_mixers', 'repmixer') == 'repmixer':
        return _output_strides(row['embed_dims'], row.get('downsamples', (False, True, True, True)))
    return (_natural_stride(name, row),)


SPEC = FamilySpec(
    name='fastvit', model=FastVit, variants=VARIANTS, default_cfg=DEFAULT_CFG,
    feature_cls=('list', 'dict', 'hook', 'fx', 'getter'), default_feature_cls='list', output_strides=_spec_strides,
    # timm's features_only default for the five-stage MobileCLIP towers: the first four stages
    default_out_indices=lambda name, row: (0, 1, 2, 3) if len(row['layers']) > 4 else None,
    export=('torch.export', 'dynamic_hw', 'onnx', 'compile'), checkpoint_filter=checkpoint_filter_fn,
    size_args=('mlp_ratios',), input_multiple=_natural_stride, min_input_size=_natural_stride, head_is_projection=head_is_projection)
