"""TinyViT ("TinyViT: Fast Pretraining Distillation for Small Vision Transformers", Wu et al., 2022): a
convolutional stem and MBConv stage, then three stages of windowed attention with a LeViT-style learned bias per
(absolute) offset inside the window, each block followed by a depthwise convolution and an MLP. Parameter names
follow timm's TinyVit so its checkpoints load unchanged.

Windows are padded at the bottom/right when the map is not a multiple of the window, so any input size works with
the model as built; the four stage outputs (strides 4, 8, 16, 32) are the feature levels.
"""
from __future__ import annotations

import itertools
from functools import partial
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from ..checks import check_int, check_int_tuple
from ..family import FamilySpec
from ..features.notrace import register_notrace_module
from ..layers import DropPath, drop_path_rates
from ..layers.activations import ActLayer, get_act_layer
from ..layers.head_api import HeadApi
from ..layers.intermediates import IndicesArg, feature_take_indices
from ..layers.norm import LayerNorm2d
from ..layers.norm_mlp_head import NormMlpClassifierHead
from ..layers.token_model import check_heads, run_checkpointed
from ..layers.weight_init import trunc_normal_linears_

DEFAULT_CFG = dict(
    input_size=(3, 224, 224), pool_size=(7, 7), interpolation='bicubic', crop_pct=0.95, crop_mode='center',
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), first_conv='patch_embed.conv1.conv',
    classifier='head.fc', num_classes=1000)


class ConvNorm(nn.Sequential):
    """A bias-free convolution (``conv``) and its batch norm (``bn``)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, padding: int = 0,
                 groups: int = 1, bn_weight_init: float = 1.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 convolutions with an activation between them (stride 4)."""

    def __init__(self, in_chs: int, out_chs: int, act_layer: type) -> None:
        super().__init__()
        self.stride = 4
        self.conv1 = ConvNorm(in_chs, out_chs // 2, 3, 2, 1)
        self.act = act_layer()
        self.conv2 = ConvNorm(out_chs // 2, out_chs, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act(self.conv1(x)))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expansion, 3x3 depthwise, 1x1 projection; the activation follows the residual sum."""

    def __init__(self, in_chs: int, out_chs: int, expand_ratio: float, act_layer: type, drop_path: float) -> None:
        super().__init__()
        mid_chs = int(in_chs * expand_ratio)
        self.conv1 = ConvNorm(in_chs, mid_chs)
        self.act1 = act_layer()
        self.conv2 = ConvNorm(mid_chs, mid_chs, 3, 1, 1, groups=mid_chs)
        self.act2 = act_layer()
        self.conv3 = ConvNorm(mid_chs, out_chs, bn_weight_init=0.0)
        self.act3 = act_layer()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.act3(self.drop_path(self.conv3(y)) + x)


class PatchMerging(nn.Module):
    """Halve the resolution between stages: 1x1 to the new width, stride-2 3x3 depthwise, 1x1."""

    def __init__(self, dim: int, out_dim: int, act_layer: type) -> None:
        super().__init__()
        self.conv1 = ConvNorm(dim, out_dim)
        self.act1 = act_layer()
        self.conv2 = ConvNorm(out_dim, out_dim, 3, 2, 1, groups=out_dim)
        self.act2 = act_layer()
        self.conv3 = ConvNorm(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.act2(self.conv2(self.act1(self.conv1(x)))))


class ConvLayer(nn.Module):
    """The first stage: MBConv blocks at constant width (``blocks``)."""

    def __init__(self, dim: int, depth: int, act_layer: type, drop_path: Sequence[float],
                 conv_expand_ratio: float = 4.0) -> None:
        super().__init__()
        self.dim = dim
        self.depth = depth
        self.blocks = nn.Sequential(*[MBConv(dim, dim, conv_expand_ratio, act_layer, drop_path[i])
                                      for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class NormMlp(nn.Module):
    """LayerNorm then a two-layer MLP (``norm``, ``fc1``, ``act``, ``fc2``)."""

    def __init__(self, in_features: int, hidden_features: int, act_layer: type, drop: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_features)
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(self.norm(x))))))


def offset_index(resolution: Tuple[int, int], device: Optional[torch.device] = None) -> torch.Tensor:
    """For every (query, key) pair of a window, the index of their absolute offset ``(|dy|, |dx|)`` in order of
    first appearance (LeViT's attention-bias layout), shape ``(N, N)``.

    >>> offset_index((1, 2))
    tensor([[0, 1],
            [1, 0]])
    """
    points = list(itertools.product(range(resolution[0]), range(resolution[1])))
    offsets: Dict[Tuple[int, int], int] = {}
    index = []
    for p in points:
        for q in points:
            index.append(offsets.setdefault((abs(p[0] - q[0]), abs(p[1] - q[1])), len(offsets)))
    return torch.tensor(index, dtype=torch.long, device=device).view(len(points), len(points))


class Attention(nn.Module):
    """Pre-normed multi-head attention over one window's tokens (B, N, C) with a learned bias per head and offset
    (``attention_biases``, gathered through the non-persistent ``attention_bias_idxs``)."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: int = 1,
                 resolution: Tuple[int, int] = (7, 7)) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.val_dim = int(attn_ratio * key_dim)
        self.out_dim = self.val_dim * num_heads
        self.resolution = resolution
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, num_heads * (self.val_dim + 2 * key_dim))
        self.proj = nn.Linear(self.out_dim, dim)
        num_points = resolution[0] * resolution[1]
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, num_points))
        self.register_buffer('attention_bias_idxs', torch.empty(num_points, num_points, dtype=torch.long),
                             persistent=False)
        if not self.attention_biases.is_meta:
            self.init_non_persistent_buffers()

    def init_non_persistent_buffers(self) -> None:
        """Recompute the offset index (after building on the meta device)."""
        self.attention_bias_idxs = offset_index(self.resolution, device=self.attention_biases.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        # gathered with the buffer as it is, so FX reads it from the module rather than baking in a constant
        bias = self.attention_biases[:, self.attention_bias_idxs]
        qkv = self.qkv(self.norm(x)).view(B, N, self.num_heads, -1)
        q, k, v = (t.permute(0, 2, 1, 3) for t in qkv.split([self.key_dim, self.key_dim, self.val_dim], dim=3))
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(x.transpose(1, 2).reshape(B, N, self.out_dim))


@register_notrace_module  # window padding is computed from the map size, which FX cannot branch on
class TinyVitBlock(nn.Module):
    """Windowed attention (maps padded at the bottom/right to whole windows), a 3x3 depthwise convolution
    (``local_conv``), then the MLP; channels-last maps (B, H, W, C) in and out.

    >>> TinyVitBlock(32, 2, window_size=4)(torch.ones(1, 6, 5, 32)).shape
    torch.Size([1, 6, 5, 32])
    """

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, mlp_ratio: float = 4.0, drop: float = 0.0,
                 drop_path: float = 0.0, local_conv_size: int = 3, act_layer: type = nn.GELU) -> None:
        super().__init__()
        self.dim = dim
        self.num_heads = check_heads(dim, num_heads, 'width')
        self.window_size = window_size
        self.attn = Attention(dim, dim // num_heads, num_heads, attn_ratio=1, resolution=(window_size, window_size))
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.mlp = NormMlp(dim, int(dim * mlp_ratio), act_layer, drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.local_conv = ConvNorm(dim, dim, local_conv_size, 1, local_conv_size // 2, groups=dim)

    def _window_attention(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        ws = self.window_size
        pad_b, pad_r = (ws - H % ws) % ws, (ws - W % ws) % ws
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        nh, nw = (H + pad_b) // ws, (W + pad_r) // ws
        windows = x.view(B, nh, ws, nw, ws, C).transpose(2, 3).reshape(B * nh * nw, ws * ws, C)
        x = self.attn(windows).view(B, nh, nw, ws, ws, C).transpose(2, 3).reshape(B, nh * ws, nw * ws, C)
        return x[:, :H, :W] if pad_b or pad_r else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        x = x + self.drop_path1(self._window_attention(x))
        x = self.local_conv(x.permute(0, 3, 1, 2)).reshape(B, C, H * W).transpose(1, 2)
        x = x + self.drop_path2(self.mlp(x))
        return x.view(B, H, W, C)


class TinyVitStage(nn.Module):
    """Patch merging (``downsample``) then attention blocks; NCHW in and out."""

    def __init__(self, dim: int, out_dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float,
                 drop: float, drop_path: Sequence[float], local_conv_size: int, act_layer: type) -> None:
        super().__init__()
        self.depth = depth
        self.out_dim = out_dim
        self.downsample = PatchMerging(dim, out_dim, act_layer)
        self.blocks = nn.Sequential(*[
            TinyVitBlock(out_dim, num_heads, window_size, mlp_ratio, drop, drop_path[i], local_conv_size, act_layer)
            for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        return self.blocks(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class TinyVit(HeadApi, nn.Module):
    """Stem (stride 4), an MBConv stage, three attention stages each halving the resolution, and a pooled
    LayerNorm + linear head.

    >>> m = TinyVit(embed_dims=(16, 32, 32, 64), depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4), num_classes=3)
    >>> m(torch.ones(1, 3, 64, 64)).shape, [f['reduction'] for f in m.feature_info]
    (torch.Size([1, 3]), [4, 8, 16, 32])
    """

    def __init__(self, in_chans: int = 3, num_classes: int = 1000, global_pool: str = 'avg',
                 embed_dims: Sequence[int] = (96, 192, 384, 768), depths: Sequence[int] = (2, 2, 6, 2),
                 num_heads: Sequence[int] = (3, 6, 12, 24), window_sizes: Sequence[int] = (7, 7, 14, 7),
                 mlp_ratio: float = 4.0, drop_rate: float = 0.0, proj_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.1, mbconv_expand_ratio: float = 4.0, local_conv_size: int = 3,
                 act_layer: ActLayer = 'gelu', output_stride: Optional[int] = None) -> None:
        super().__init__()
        embed_dims = check_int_tuple('embed_dims', embed_dims)
        depths = check_int_tuple('depths', depths, length=len(embed_dims))
        num_heads = check_int_tuple('num_heads', num_heads, length=len(embed_dims))
        window_sizes = check_int_tuple('window_sizes', window_sizes, length=len(embed_dims))
        check_int('local_conv_size', local_conv_size, 1)
        if output_stride not in (None, 32):
            raise ValueError(f'output_stride={output_stride!r} is not supported: TinyViT has stride 32 only')
        act = get_act_layer(act_layer)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.depths = depths
        self.num_stages = len(depths)
        self.mlp_ratio = mlp_ratio
        self.grad_checkpointing = False

        self.patch_embed = PatchEmbed(in_chans, embed_dims[0], act)
        rates = drop_path_rates(drop_path_rate, list(depths))
        self.stages = nn.Sequential()
        stride = self.patch_embed.stride
        self.feature_info: List[Dict[str, Any]] = []
        for i in range(self.num_stages):
            if i == 0:
                stage: nn.Module = ConvLayer(embed_dims[0], depths[0], act, rates[0], mbconv_expand_ratio)
            else:
                stage = TinyVitStage(embed_dims[i - 1], embed_dims[i], depths[i], num_heads[i], window_sizes[i],
                                     mlp_ratio, proj_drop_rate, rates[i], local_conv_size, act)
                stride *= 2
            self.stages.append(stage)
            self.feature_info.append(dict(num_chs=embed_dims[i], reduction=stride, module=f'stages.{i}'))
        self.num_features = embed_dims[-1]
        self.head = NormMlpClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate,
                                          norm_layer=partial(LayerNorm2d, eps=1e-5))
        self.head_hidden_size = self.head.num_features
        trunc_normal_linears_(self)

    def no_weight_decay(self) -> Set[str]:
        """The attention-bias tables.

        >>> sorted(SPEC.build('tiny_vit_5m_224').no_weight_decay())[0]
        'stages.1.blocks.0.attn.attention_biases'
        """
        return {name for name, _ in self.named_parameters() if 'attention_biases' in name}

    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter-group regexes: the stem, then stages (``coarse``) or each downsample and block."""
        return dict(stem=r'^patch_embed', blocks=r'^stages\.(\d+)' if coarse else [
            (r'^stages\.(\d+).downsample', (0,)), (r'^stages\.(\d+)\.\w+\.(\d+)', None)])

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier (``num_classes=0`` removes it); ``global_pool=None`` keeps the pooling.

        >>> m = SPEC.build('tiny_vit_5m_224'); m.reset_classifier(0, ''); m(torch.ones(1, 3, 64, 64)).shape
        torch.Size([1, 320, 2, 2])
        """
        check_int('num_classes', num_classes, 0)
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)
        self.head_hidden_size = self.head.num_features

    def _run_stage(self, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return run_checkpointed(self.grad_checkpointing, stage, x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for stage in self.stages:
            x = self._run_stage(stage, x)
        return x

    def forward_intermediates(self, x: torch.Tensor, indices: IndicesArg = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = 'NCHW', intermediates_only: bool = False,
                              ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """The outputs of the stages selected by ``indices`` (timm's semantics), NCHW; ``norm`` has no effect
        (the head's norm follows the pooling).

        >>> m = SPEC.build('tiny_vit_5m_224')
        >>> [t.shape[1] for t in m.forward_intermediates(torch.ones(1, 3, 64, 64), 2, intermediates_only=True)]
        [160, 320]
        """
        if output_fmt != 'NCHW':
            raise ValueError(f"output_fmt={output_fmt!r} is not supported by TinyViT; valid: 'NCHW'")
        take, last = feature_take_indices(len(self.stages), indices)
        intermediates = []
        x = self.patch_embed(x)
        stages = list(self.stages)[:last + 1] if stop_early else list(self.stages)
        for i, stage in enumerate(stages):
            x = self._run_stage(stage, x)
            if i in take:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(self, indices: IndicesArg = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop the stages after the last of ``indices`` (and the head); returns the absolute indices kept.

        >>> m = SPEC.build('tiny_vit_5m_224'); m.prune_intermediate_layers((1,)), len(m.stages)
        ([1], 2)
        """
        take, last = feature_take_indices(len(self.stages), indices)
        prune_end = last < len(self.stages) - 1
        self.stages = self.stages[:last + 1]
        if prune_end:
            self.num_features = self.feature_info[last]['num_chs']
        if prune_head or prune_end:
            self.num_classes = 0
            self.head.reset(0, '', reset_other=True, in_features=self.num_features)
            self.head_hidden_size = self.head.num_features
        return take


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: TinyVit) -> Dict[str, torch.Tensor]:
    """Adapt a checkpoint (timm's, or the original release under ``'model'``): drop the computed offset indices and
    resample bias tables learned for another window size (bicubic, as timm).

    >>> m = SPEC.build('tiny_vit_5m_224', window_sizes=(7, 7, 7, 7))
    >>> sd = checkpoint_filter_fn(SPEC.build('tiny_vit_5m_224').state_dict(), m)
    >>> sd['stages.2.blocks.0.attn.attention_biases'].shape
    torch.Size([5, 49])
    """
    state_dict = state_dict.get('model', state_dict)
    target = model.state_dict()
    out: Dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.endswith('attention_bias_idxs'):
            continue
        if key.endswith('attention_biases') and key in target and value.shape != target[key].shape:
            heads, new_len = target[key].shape
            old_side, new_side = int(value.shape[1] ** 0.5), int(new_len ** 0.5)
            grid = value.float().reshape(1, heads, old_side, old_side)
            value = F.interpolate(grid, size=(new_side, new_side), mode='bicubic', antialias=True)
            value = value.reshape(heads, new_len).to(state_dict[key].dtype)
        out[key] = value
    return out


def _row(embed_dims: Tuple[int, ...], num_heads: Tuple[int, ...], window_sizes: Tuple[int, ...] = (7, 7, 14, 7),
         drop_path_rate: float = 0.1) -> Dict[str, Any]:
    return dict(embed_dims=embed_dims, depths=(2, 2, 6, 2), num_heads=num_heads, window_sizes=window_sizes,
                drop_path_rate=drop_path_rate)


_21M = dict(embed_dims=(96, 192, 384, 576), num_heads=(3, 6, 12, 18))

VARIANTS: Dict[str, Dict[str, Any]] = {
    'tiny_vit_5m_224': _row((64, 128, 160, 320), (2, 4, 5, 10), drop_path_rate=0.0),
    'tiny_vit_11m_224': _row((64, 128, 256, 448), (2, 4, 8, 14)),
    'tiny_vit_21m_224': _row(**_21M, drop_path_rate=0.2),
    'tiny_vit_21m_384': _row(**_21M, window_sizes=(12, 12, 24, 12)),
    'tiny_vit_21m_512': _row(**_21M, window_sizes=(16, 16, 32, 16)),
}


SPEC = FamilySpec(
    name='tiny_vit', model=TinyVit, variants=VARIANTS, default_cfg=DEFAULT_CFG,
    feature_cls=('list', 'dict', 'hook', 'fx', 'getter'), default_feature_cls='list', output_strides=(32,),
    size_args=('window_sizes', 'drop_path_rate'),
    export=('torch.export', 'onnx', 'compile'),
    checkpoint_filter=checkpoint_filter_fn)
