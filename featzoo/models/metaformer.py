"""MetaFormer baselines: PoolFormer (v1, v2), ConvFormer and CAFormer. One skeleton (a 7x7 stride-4 stem, four stages
of norm -> token mixer -> residual, norm -> MLP -> residual blocks, a pool -> norm -> classifier head) with the token
mixer swapped: average pooling minus identity (PoolFormer), an inverted separable conv (ConvFormer), separable convs
then global self-attention (CAFormer). The v2 baselines add StarReLU, residual scales and an MLP classifier head.

Parameter names follow timm's ``metaformer`` module so its checkpoints load unchanged (the original sail-sg layouts
are renamed by :func:`checkpoint_filter_fn`).

Dilation for ``output_stride`` 8 and 16: a stage whose stride is given up keeps its downsampling conv at stride 1
(dilated as the stage before it), and its pooling windows and depthwise convs are dilated; self-attention is global
over the tokens and has no window to dilate, so CAFormer's attention stages simply attend over the finer grid.

Papers: "MetaFormer Is Actually What You Need for Vision", https://arxiv.org/abs/2111.11418; "MetaFormer Baselines
for Vision", https://arxiv.org/abs/2210.13452

>>> model = SPEC.build('caformer_s18', num_classes=10)
>>> [f['reduction'] for f in model.feature_info]
[4, 8, 16, 32]
"""
from __future__ import annotations

import re
from collections import OrderedDict
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..checks import check_choice, check_int, check_int_tuple
from ..family import FamilySpec
from ..layers import DropPath, LayerNorm2d, drop_path_rates, trunc_normal_
from ..layers.activations import ActLayer, get_act_layer
from ..layers.dilated_avg_pool import DilatedAvgPool2d
from ..layers.head_api import HeadApi
from ..layers.mlp import Mlp
from ..layers.norm_mlp_head import NORM_MLP_POOL_TYPES
from ..layers.pooling import SelectAdaptivePool2d
from ..layers.squared_relu import SquaredReLU, StarReLU
from ..layers.stage_intermediates import StagedFeatures, run_sequence, stage_group_matcher
from .vision_transformer import Attention

OUTPUT_STRIDES = (8, 16, 32)
TOKEN_MIXERS = ('pooling', 'sepconv', 'attention')


class GroupNorm1NoBias(nn.GroupNorm):
    """GroupNorm with one group (a LayerNorm over C, H, W) and a per-channel weight but no bias, eps 1e-6.

    >>> sorted(GroupNorm1NoBias(8).state_dict())
    ['weight']
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__(1, num_channels, eps=eps)
        self.bias = None


# norm name -> (layer for NCHW maps, layer for the token rows of attention stages); the 'nobias' norms of the
# MetaFormer baselines carry a weight only, with the eps 1e-6 of the original code
NORM_LAYERS: Dict[str, Tuple[Callable[[int], nn.Module], Callable[[int], nn.Module]]] = {
    'groupnorm1': (partial(nn.GroupNorm, 1), partial(nn.GroupNorm, 1)),
    'groupnorm1_nobias': (GroupNorm1NoBias, GroupNorm1NoBias),
    'layernorm_nobias': (partial(LayerNorm2d, eps=1e-6, bias=False), partial(nn.LayerNorm, eps=1e-6, bias=False)),
}
MLP_ACTIVATIONS: Dict[str, ActLayer] = {'star_relu': StarReLU}
ATTENTION_HEAD_DIM = 32
DEFAULT_CFG = dict(
    input_size=(3, 224, 224), pool_size=(7, 7), interpolation='bicubic', crop_pct=1.0, crop_mode='center',
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), first_conv='stem.conv', classifier='head.fc',
    num_classes=1000)

# PoolFormer v1: GroupNorm with bias, GELU MLPs with bias, layer scale, no norm before the downsampling convs and a
# linear classifier; the MetaFormer-baseline rows keep the constructor's defaults for everything they do not name.
_POOLFORMER_V1 = dict(token_mixers='pooling', norm_layer='groupnorm1', downsample_norm=False, mlp_act='gelu',
                      mlp_bias=True, res_scale_init_values=None, use_mlp_head=False)
_POOLFORMER_V2 = dict(token_mixers='pooling', norm_layer='groupnorm1_nobias', use_mlp_head=False)
_CAFORMER = dict(token_mixers=('sepconv', 'sepconv', 'attention', 'attention'))
_S12, _S24, _S36 = (2, 2, 6, 2), (4, 4, 12, 4), (6, 6, 18, 6)
_M48, _S18, _X36 = (8, 8, 24, 8), (3, 3, 9, 3), (3, 12, 18, 3)
_DIMS_S, _DIMS_M = (64, 128, 320, 512), (96, 192, 384, 768)
_DIMS_CM, _DIMS_CB = (96, 192, 384, 576), (128, 256, 512, 768)
VARIANTS: Dict[str, Dict[str, Any]] = {
    'poolformer_s12': dict(depths=_S12, dims=_DIMS_S, layer_scale_init_values=1e-5, **_POOLFORMER_V1),
    'poolformer_s24': dict(depths=_S24, dims=_DIMS_S, layer_scale_init_values=1e-5, **_POOLFORMER_V1),
    'poolformer_s36': dict(depths=_S36, dims=_DIMS_S, layer_scale_init_values=1e-6, **_POOLFORMER_V1),
    'poolformer_m36': dict(depths=_S36, dims=_DIMS_M, layer_scale_init_values=1e-6, **_POOLFORMER_V1),
    'poolformer_m48': dict(depths=_M48, dims=_DIMS_M, layer_scale_init_values=1e-6, **_POOLFORMER_V1),
    'poolformerv2_s12': dict(depths=_S12, dims=_DIMS_S, **_POOLFORMER_V2),
    'poolformerv2_s24': dict(depths=_S24, dims=_DIMS_S, **_POOLFORMER_V2),
    'poolformerv2_s36': dict(depths=_S36, dims=_DIMS_S, **_POOLFORMER_V2),
    'poolformerv2_m36': dict(depths=_S36, dims=_DIMS_M, **_POOLFORMER_V2),
    'poolformerv2_m48': dict(depths=_M48, dims=_DIMS_M, **_POOLFORMER_V2),
    'convformer_s18': dict(depths=_S18, dims=_DIMS_S, token_mixers='sepconv'),
    'convformer_s36': dict(depths=_X36, dims=_DIMS_S, token_mixers='sepconv'),
    'convformer_m36': dict(depths=_X36, dims=_DIMS_CM, token_mixers='sepconv'),
    'convformer_b36': dict(depths=_X36, dims=_DIMS_CB, token_mixers='sepconv'),
    'caformer_s18': dict(depths=_S18, dims=_DIMS_S, **_CAFORMER),
    'caformer_s36': dict(depths=_X36, dims=_DIMS_S, **_CAFORMER),
    'caformer_m36': dict(depths=_X36, dims=_DIMS_CM, **_CAFORMER),
    'caformer_b36': dict(depths=_X36, dims=_DIMS_CB, **_CAFORMER),
}


class Scale(nn.Module):
    """A learned per-channel multiplier ``scale`` (layer scale of a branch, or res scale of a shortcut), on NCHW maps
    or, with ``channels_last``, on (..., C) tokens.

    >>> Scale(4, 0.5)(torch.ones(1, 4, 1, 1)).flatten().tolist()
    [0.5, 0.5, 0.5, 0.5]
    """

    def __init__(self, dim: int, init_value: float = 1.0, channels_last: bool = False) -> None:
        super().__init__()
        self.shape = (dim,) if channels_last else (dim, 1, 1)
        self.scale = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.view(self.shape)


class Pooling(nn.Module):
    """PoolFormer's token mixer: a 3x3 average (over the positions inside the map) minus the input itself (the
    block's residual adds the input back). ``dilation`` spreads the window's taps for dilated stages.

    >>> Pooling(4)(torch.ones(1, 4, 5, 5)).abs().max().item()
    0.0
    """

    def __init__(self, dim: int, pool_size: int = 3, dilation: int = 1) -> None:
        super().__init__()
        if dilation == 1:
            self.pool: nn.Module = nn.AvgPool2d(pool_size, stride=1, padding=pool_size // 2, count_include_pad=False)
        else:
            self.pool = DilatedAvgPool2d(dim, pool_size, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x) - x


class SepConv(nn.Module):
    """ConvFormer's token mixer: MobileNetV2's inverted separable conv without norms, 1x1 expansion (x2) -> StarReLU
    -> depthwise 7x7 -> 1x1 projection, all without bias.

    >>> SepConv(8, dilation=2)(torch.ones(1, 8, 6, 6)).shape
    torch.Size([1, 8, 6, 6])
    """

    def __init__(self, dim: int, expansion_ratio: float = 2.0, kernel_size: int = 7, dilation: int = 1) -> None:
        super().__init__()
        hidden = int(expansion_ratio * dim)
        self.pwconv1 = nn.Conv2d(dim, hidden, kernel_size=1, bias=False)
        self.act1 = StarReLU()
        self.dwconv = nn.Conv2d(hidden, hidden, kernel_size=kernel_size, padding=dilation * (kernel_size // 2),
                                dilation=dilation, groups=hidden, bias=False)
        self.act2 = nn.Identity()
        self.pwconv2 = nn.Conv2d(hidden, dim, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pwconv2(self.act2(self.dwconv(self.act1(self.pwconv1(x)))))


def _token_mixer(kind: str, dim: int, dilation: int, proj_drop: float) -> nn.Module:
    if kind == 'pooling':
        return Pooling(dim, dilation=dilation)
    if kind == 'sepconv':
        return SepConv(dim, dilation=dilation)
    # heads of 32 channels, without biases, as the CAFormer weights were trained
    return Attention(dim, num_heads=dim // ATTENTION_HEAD_DIM, qkv_bias=False, proj_bias=False, proj_drop=proj_drop)


class MlpHead(nn.Module):
    """The MetaFormer baselines' classifier: ``fc1`` (x4) -> SquaredReLU -> LayerNorm -> dropout -> ``fc2``.

    >>> MlpHead(8, 10)(torch.ones(2, 8)).shape
    torch.Size([2, 10])
    """

    def __init__(self, dim: int, num_classes: int, mlp_ratio: float = 4.0, drop_rate: float = 0.0) -> None:
        super().__init__()
        hidden = int(mlp_ratio * dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = SquaredReLU()
        self.norm = nn.LayerNorm(hidden, eps=1e-6)
        self.head_drop = nn.Dropout(drop_rate)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.head_drop(self.norm(self.act(self.fc1(x)))))


class MetaFormerBlock(nn.Module):
    """``x = res_scale1(x) + layer_scale1(mixer(norm1(x)))``, then the same with an MLP (ratio 4); the scales are
    identities where their init value is None. ``channels_last`` blocks (attention stages) run on (B, N, C) tokens.

    >>> MetaFormerBlock(8, 'pooling', layer_scale_init_value=1e-5)(torch.ones(1, 8, 4, 4)).shape
    torch.Size([1, 8, 4, 4])
    """

    def __init__(self, dim: int, token_mixer: str = 'pooling', mlp_act: ActLayer = StarReLU, mlp_bias: bool = False,
                 norm_layer: Callable[[int], nn.Module] = NORM_LAYERS['layernorm_nobias'][0],
                 proj_drop: float = 0.0, drop_path: float = 0.0, dilation: int = 1,
                 layer_scale_init_value: Optional[float] = None, res_scale_init_value: Optional[float] = None
                 ) -> None:
        super().__init__()
        channels_last = token_mixer == 'attention'

        def scale(init_value: Optional[float]) -> nn.Module:
            return nn.Identity() if init_value is None else Scale(dim, init_value, channels_last=channels_last)

        self.norm1 = norm_layer(dim)
        self.token_mixer = _token_mixer(token_mixer, dim, dilation, proj_drop)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.layer_scale1 = scale(layer_scale_init_value)
        self.res_scale1 = scale(res_scale_init_value)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, 4 * dim, act_layer=mlp_act, bias=mlp_bias, drop=proj_drop, use_conv=not channels_last)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.layer_scale2 = scale(layer_scale_init_value)
        self.res_scale2 = scale(res_scale_init_value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.res_scale1(x) + self.layer_scale1(self.drop_path1(self.token_mixer(self.norm1(x))))
        return self.res_scale2(x) + self.layer_scale2(self.drop_path2(self.mlp(self.norm2(x))))


class Downsampling(nn.Module):
    """Optional norm, then a conv that changes the width (3x3, stride 2 between stages; the 7x7 stride-4 stem uses
    :class:`Stem`). At stride 1 (a dilated stage) the conv is dilated and padded to keep the map's size.

    >>> Downsampling(8, 16, norm_layer=None)(torch.ones(1, 8, 8, 8)).shape
    torch.Size([1, 16, 4, 4])
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 2, dilation: int = 1,
                 norm_layer: Optional[Callable[[int], nn.Module]] = None) -> None:
        super().__init__()
        self.norm = norm_layer(in_chs) if norm_layer is not None else nn.Identity()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size=3, stride=stride, padding=dilation, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.norm(x))


class Stem(nn.Module):
    """7x7 conv at stride 4 (padding 2), then an optional norm.

    >>> Stem(3, 8, norm_layer=None)(torch.ones(1, 3, 64, 64)).shape
    torch.Size([1, 8, 16, 16])
    """

    def __init__(self, in_chs: int, out_chs: int, norm_layer: Optional[Callable[[int], nn.Module]] = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size=7, stride=4, padding=2)
        self.norm = norm_layer(out_chs) if norm_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class MetaFormerStage(nn.Module):
    """Downsampling where the width changes (timm's rule: the first stage has none), then the blocks; an attention
    stage lays the map out as (B, H*W, C) tokens for its blocks and back.

    >>> MetaFormerStage(8, 32, depth=1, token_mixer='attention')(torch.ones(1, 8, 8, 8)).shape
    torch.Size([1, 32, 4, 4])
    """

    def __init__(self, in_chs: int, out_chs: int, depth: int = 2, token_mixer: str = 'pooling', stride: int = 2,
                 dilation: int = 1, first_dilation: int = 1,
                 downsample_norm: Optional[Callable[[int], nn.Module]] = NORM_LAYERS['layernorm_nobias'][0],
                 norm_layer: str = 'layernorm_nobias', drop_path_rates: Optional[Sequence[float]] = None,
                 **block_kwargs: Any) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.use_nchw = token_mixer != 'attention'
        self.downsample: nn.Module = nn.Identity() if in_chs == out_chs else Downsampling(
            in_chs, out_chs, stride=stride, dilation=first_dilation, norm_layer=downsample_norm)
        rates = list(drop_path_rates) if drop_path_rates is not None else [0.0] * depth
        block_norm = NORM_LAYERS[norm_layer][0 if self.use_nchw else 1]
        self.blocks = nn.Sequential(*[
            MetaFormerBlock(out_chs, token_mixer, norm_layer=block_norm, drop_path=rates[i], dilation=dilation,
                            **block_kwargs)
            for i in range(depth)])

    def _run_blocks(self, x: torch.Tensor) -> torch.Tensor:
        return run_sequence(self.blocks, x, self.grad_checkpointing and not torch.jit.is_scripting())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.use_nchw:
            return self._run_blocks(x)
        batch, channels, height, width = x.shape
        x = self._run_blocks(x.flatten(2).transpose(1, 2))
        return x.transpose(1, 2).reshape(batch, channels, height, width)


PerStage = Union[Any, Sequence[Any]]


def _per_stage(name: str, value: PerStage, num_stages: int) -> List[Any]:
    """One value per stage: a single value repeated, or a sequence of exactly ``num_stages`` values."""
    if isinstance(value, (list, tuple)):
        if len(value) != num_stages:
            raise ValueError(f'{name}={tuple(value)!r} has {len(value)} entries; valid: one value or {num_stages} '
                             f'(one per stage)')
        return list(value)
    return [value] * num_stages


def _check_scale(name: str, values: Sequence[Any]) -> None:
    for value in values:
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise TypeError(f'{name} entries must be floats or None (no scale), got {value!r}')


class MetaFormer(StagedFeatures, HeadApi, nn.Module):
    """The MetaFormer skeleton: ``stem``, four ``stages`` with a token mixer per stage ('pooling', 'sepconv' or
    'attention'), and ``head`` (``global_pool`` -> ``norm`` -> ``flatten`` -> ``drop`` -> ``fc``, where ``fc`` is a
    linear layer or, with ``use_mlp_head``, an :class:`MlpHead`).

    ``norm_layer`` is one of :data:`NORM_LAYERS` (attention stages take its token-row form); ``mlp_act`` is
    'star_relu' or any shared activation name; ``layer_scale_init_values`` / ``res_scale_init_values`` give one value
    or one per stage (None: no scale).

    >>> model = MetaFormer(depths=(1, 1, 1, 1), dims=(32, 64, 96, 128), token_mixers='sepconv', num_classes=10)
    >>> model(torch.ones(1, 3, 64, 64)).shape
    torch.Size([1, 10])
    """

    checkpoint_stages = 'stages'  # set_grad_checkpointing (HeadApi) flags each stage
    pruned_head_args = dict(reset_other=True)  # the head's norm was sized for the last stage too

    def __init__(self, depths: Sequence[int] = _S12, dims: Sequence[int] = _DIMS_S,
                 token_mixers: PerStage = 'pooling', norm_layer: str = 'layernorm_nobias',
                 mlp_act: ActLayer = 'star_relu', mlp_bias: bool = False, downsample_norm: bool = True,
                 layer_scale_init_values: PerStage = None,
                 res_scale_init_values: PerStage = (None, None, 1.0, 1.0), use_mlp_head: bool = True,
                 num_classes: int = 1000, in_chans: int = 3, global_pool: str = 'avg', output_stride: int = 32,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, proj_drop_rate: float = 0.0) -> None:
        super().__init__()
        depths = check_int_tuple('depths', depths, minimum=1)
        dims = check_int_tuple('dims', dims, length=len(depths), minimum=1)
        num_stages = len(depths)
        mixers = _per_stage('token_mixers', token_mixers, num_stages)
        for mixer in mixers:
            check_choice('token_mixers entry', mixer, TOKEN_MIXERS)
        for mixer, dim in zip(mixers, dims):
            if mixer == 'attention' and dim % ATTENTION_HEAD_DIM:
                raise ValueError(f'dims entry {dim} of an attention stage is invalid; valid: a multiple of '
                                 f'{ATTENTION_HEAD_DIM} (the head width)')
        check_choice('norm_layer', norm_layer, tuple(NORM_LAYERS))
        check_choice('output_stride', output_stride, OUTPUT_STRIDES)
        check_choice('global_pool', global_pool, NORM_MLP_POOL_TYPES)
        layer_scales = _per_stage('layer_scale_init_values', layer_scale_init_values, num_stages)
        res_scales = _per_stage('res_scale_init_values', res_scale_init_values, num_stages)
        _check_scale('layer_scale_init_values', layer_scales)
        _check_scale('res_scale_init_values', res_scales)
        mlp_act = MLP_ACTIVATIONS.get(mlp_act, mlp_act) if isinstance(mlp_act, str) else mlp_act
        get_act_layer(mlp_act)  # ValueError naming the valid activations
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.use_mlp_head = use_mlp_head
        self.num_features = self.head_hidden_size = dims[-1]

        ds_norm = NORM_LAYERS['layernorm_nobias'][0] if downsample_norm else None
        self.stem = Stem(in_chans, dims[0], norm_layer=ds_norm)
        rates = drop_path_rates(drop_path_rate, list(depths))
        self.feature_info: List[Dict[str, Any]] = []
        stages = []
        reduction, dilation, prev_dim = 4, 1, dims[0]
        for i in range(num_stages):
            stride, first_dilation = (1 if prev_dim == dims[i] else 2), dilation
            if stride > 1 and reduction >= output_stride:
                dilation *= stride
                stride = 1
            reduction *= stride
            stages.append(MetaFormerStage(
                prev_dim, dims[i], depth=depths[i], token_mixer=mixers[i], stride=stride, dilation=dilation,
                first_dilation=first_dilation, downsample_norm=ds_norm, norm_layer=norm_layer,
                drop_path_rates=rates[i], mlp_act=mlp_act, mlp_bias=mlp_bias, proj_drop=proj_drop_rate,
                layer_scale_init_value=layer_scales[i], res_scale_init_value=res_scales[i]))
            prev_dim = dims[i]
            self.feature_info.append(dict(num_chs=dims[i], reduction=reduction, module=f'stages.{i}'))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(OrderedDict([
            ('global_pool', SelectAdaptivePool2d(global_pool)),
            ('norm', LayerNorm2d(self.num_features, eps=1e-6)),
            ('flatten', nn.Flatten(1) if global_pool else nn.Identity()),
            ('drop', nn.Dropout(drop_rate)),
            ('fc', self._classifier(num_classes)),
        ]))
        self.apply(self._init_weights)

    def _classifier(self, num_classes: int) -> nn.Module:
        if num_classes == 0:
            return nn.Identity()
        if self.use_mlp_head:
            return MlpHead(self.num_features, num_classes)
        return nn.Linear(self.num_features, num_classes)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Regexes grouping parameters into the stem and per-stage (coarse) or per-block groups.

        >>> SPEC.build('poolformer_s12').group_matcher()['stem']
        '^stem'
        """
        return stage_group_matcher(coarse)

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None,
                         reset_other: bool = False) -> None:
        """Replace the classifier (``num_classes=0`` removes it), optionally the pooling (``''`` = none) and, with
        ``reset_other``, drop the head's norm.

        >>> model = SPEC.build('poolformer_s12')
        >>> model.reset_classifier(0)
        >>> model(torch.ones(1, 3, 64, 64)).shape
        torch.Size([1, 512])
        """
        check_int('num_classes', num_classes, 0)
        param = next(self.parameters())
        if global_pool is not None:
            check_choice('global_pool', global_pool, NORM_MLP_POOL_TYPES)
            self.head.global_pool = SelectAdaptivePool2d(global_pool).train(self.head.training)
            self.head.flatten = (nn.Flatten(1) if global_pool else nn.Identity()).train(self.head.training)
        if reset_other:
            self.head.norm = nn.Identity().train(self.head.training)
        self.num_classes = num_classes
        self.head.fc = self._classifier(num_classes).to(param.device, param.dtype).train(self.head.training)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, norm, flatten, dropout and classify; ``pre_logits=True`` stops before the classifier."""
        x = self.head.drop(self.head.flatten(self.head.norm(self.head.global_pool(x))))
        return x if pre_logits else self.head.fc(x)


# ---- the original sail-sg checkpoints --------------------------------------------------------------------------------

def _original_key(key: str, poolformer_v1: bool) -> str:
    """A key of the original PoolFormer / MetaFormer-baselines code in timm's layout."""
    if poolformer_v1:
        # one flat 'network' list: stage 0, downsample 1, stage 1, ... and 'layer_scale_<n>' tensors
        key = re.sub(r'layer_scale_([0-9]+)', r'layer_scale\1.scale', key)
        match = re.match(r'^network\.([0-9]+)\.(.*)$', key)
        if match:
            position, rest = int(match.group(1)), match.group(2)
            if position % 2:
                key = f'downsample_layers.{(position + 1) // 2}.{rest}'
            else:
                key = f'stages.{position // 2}.{rest}'
    key = re.sub(r'^downsample_layers\.([0-9]+)', r'stages.\1.downsample', key)
    key = key.replace('downsample.proj', 'downsample.conv').replace('patch_embed.proj', 'patch_embed.conv')
    key = re.sub(r'^stages\.([0-9]+)\.([0-9]+)\.', r'stages.\1.blocks.\2.', key)
    key = key.replace('stages.0.downsample', 'stem').replace('patch_embed', 'stem')
    key = key.replace('pre_norm', 'norm').replace('post_norm', 'norm')
    key = re.sub(r'^head\.', 'head.fc.', key)
    return re.sub(r'^norm\.', 'head.norm.', key)


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """timm-layout checkpoints pass unchanged; the original sail-sg ones (a flat ``network`` list for PoolFormer v1,
    ``downsample_layers`` and unnested blocks for the baselines) are renamed to timm's layout, and tensors stored in
    another shape with the same elements (layer scales of shape (C, 1, 1)) take the model's shape."""
    if 'stem.conv.weight' in state_dict:
        return state_dict
    poolformer_v1 = 'network.0.0.mlp.fc1.weight' in state_dict
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    out = {}
    for key, value in state_dict.items():
        key = _original_key(key, poolformer_v1)
        shape = shapes.get(key)
        if shape is not None and value.shape != shape and value.numel() == shape.numel():
            value = value.reshape(shape)
        out[key] = value
    return out


SPEC = FamilySpec(
    name='metaformer', model=MetaFormer, variants=VARIANTS, default_cfg=DEFAULT_CFG,
    feature_cls=('list', 'dict', 'hook', 'fx', 'getter'), default_feature_cls='list', output_strides=OUTPUT_STRIDES,
    export=('torch.export', 'dynamic_hw', 'onnx', 'compile'), checkpoint_filter=checkpoint_filter_fn,
    # any side works from the 3 px the 7x7 stride-4 stem (padding 2) needs for one output position on
    min_input_size=3,
    # an initial value of the layer scales, not a code path (every PoolFormer v1 row has them)
    size_args=('layer_scale_init_values',))
