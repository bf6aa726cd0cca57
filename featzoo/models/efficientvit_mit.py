"""EfficientViT (MIT Han Lab): a conv stem, two stages of (fused) inverted residuals, then stages whose blocks
pair lite multi-scale linear attention (ReLU-kernel global attention over q/k/v aggregated at several scales)
with an inverted-residual conv; a conv + MLP head. ``EfficientViT-B`` rows (``efficientvit_b*``) and the larger
``EfficientViT-L`` rows (``large=True``: fused convs early, GELU, wider expansions) share the code here.

Parameter names follow timm's ``efficientvit_mit`` module so its checkpoints load unchanged.

Paper: "EfficientViT: Multi-Scale Linear Attention for High-Resolution Dense Prediction",
https://arxiv.org/abs/2205.14756

>>> model = SPEC.build('efficientvit_b0', num_classes=10)
>>> [f['reduction'] for f in model.feature_info]
[4, 8, 16, 32]
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ..checks import check_int_tuple
from ..family import FamilySpec
from ..features.notrace import register_notrace_function
from ..layers import DropPath, SelectAdaptivePool2d, create_conv2d, drop_path_rates
from ..layers.activations import create_act_layer
from ..layers.head_api import HeadApi
from ..layers.stage_intermediates import StagedFeatures
from ..layers.pooling import POOL_TYPES

DEFAULT_CFG = dict(
    input_size=(3, 224, 224), pool_size=(7, 7), interpolation='bicubic', crop_pct=0.95, crop_mode='center',
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), first_conv='stem.in_conv.conv',
    classifier='head.classifier.4', num_classes=1000)
# pooling that keeps the width: the head's MLP is sized for it
HEAD_POOL_TYPES = tuple(p for p in POOL_TYPES if p and p != 'catavgmax')

NormFn = Optional[Callable[[int], nn.Module]]


def _triple(value: Any, n: int) -> Tuple[Any, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * n


class ConvNormAct(nn.Module):
    """Dropout (off in every published row), ``conv``, optional ``norm`` and activation ``act``."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
                 bias: bool = False, norm_layer: NormFn = None, act_layer: Optional[str] = None) -> None:
        super().__init__()
        self.dropout = nn.Dropout(0.0)
        self.conv = create_conv2d(in_chs, out_chs, kernel_size, stride=stride, groups=groups, bias=bias)
        self.norm = norm_layer(out_chs) if norm_layer is not None else nn.Identity()
        self.act = create_act_layer(act_layer, inplace=True) if act_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(self.dropout(x))))


class LocalBlock(nn.Module):
    """The conv blocks, each a chain of :class:`ConvNormAct` named as timm names them.

    ``ds``: depthwise kxk, pointwise (``depth_conv``, ``point_conv``); ``conv``: kxk, kxk (``conv1``, ``conv2``);
    ``mb``: 1x1 expand, depthwise kxk, 1x1 (``inverted_conv``, ``depth_conv``, ``point_conv``); ``fused``: kxk
    expand, 1x1 (``spatial_conv``, ``point_conv``). ``bias``/``norm``/``act`` give one entry per conv; the last
    conv of each is linear.

    >>> LocalBlock('mb', 8, 16, 2, 4.0, 'hard_swish', (False,) * 3, (nn.BatchNorm2d,) * 3)(torch.ones(1, 8, 8, 8)).shape
    torch.Size([1, 16, 4, 4])
    """

    NAMES = {'ds': ('depth_conv', 'point_conv'), 'conv': ('conv1', 'conv2'),
             'mb': ('inverted_conv', 'depth_conv', 'point_conv'), 'fused': ('spatial_conv', 'point_conv')}

    def __init__(self, kind: str, in_chs: int, out_chs: int, stride: int, expand_ratio: float, act_layer: str,
                 bias: Sequence[bool], norm: Sequence[NormFn], kernel_size: int = 3) -> None:
        super().__init__()
        mid = round(in_chs * expand_ratio)
        k = kernel_size
        if kind == 'ds':
            specs = [(in_chs, in_chs, k, stride, in_chs), (in_chs, out_chs, 1, 1, 1)]
        elif kind == 'conv':
            specs = [(in_chs, mid, k, stride, 1), (mid, out_chs, k, 1, 1)]
        elif kind == 'mb':
            specs = [(in_chs, mid, 1, 1, 1), (mid, mid, k, stride, mid), (mid, out_chs, 1, 1, 1)]
        else:
            specs = [(in_chs, mid, k, stride, 1), (mid, out_chs, 1, 1, 1)]
        last = len(specs) - 1
        for i, (name, (cin, cout, ks, s, groups)) in enumerate(zip(self.NAMES[kind], specs)):
            self.add_module(name, ConvNormAct(cin, cout, ks, s, groups, bias=bias[i], norm_layer=norm[i],
                                              act_layer=None if i == last else act_layer))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.children():
            x = conv(x)
        return x


def local_block(in_chs: int, out_chs: int, stride: int, expand_ratio: float, norm_layer: Callable[[int], nn.Module],
                act_layer: str, fewer_norm: bool = False, fused: bool = False) -> LocalBlock:
    """The conv block of a position: depthwise-separable (plain conv with ``fused``) without expansion, else an
    inverted residual (fused with ``fused``); ``fewer_norm`` puts biases instead of norms on all but the last conv.
    """
    if expand_ratio == 1:
        kind = 'conv' if fused else 'ds'
    else:
        kind = 'fused' if fused else 'mb'
    count = len(LocalBlock.NAMES[kind])
    bias = tuple(i < count - 1 for i in range(count)) if fewer_norm else (False,) * count
    norm = tuple(None if i < count - 1 else norm_layer for i in range(count)) if fewer_norm else (norm_layer,) * count
    return LocalBlock(kind, in_chs, out_chs, stride, expand_ratio, act_layer, bias, norm)


@register_notrace_function  # reads the autocast state of the tensors' device
def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float) -> torch.Tensor:
    """ReLU-kernel linear attention: ``q (k^T [v, 1])`` normalized by its last column, computed in float32 (also
    under autocast, as the reference does).

    >>> linear_attention(torch.ones(1, 2, 5, 4), torch.ones(1, 2, 5, 4), torch.ones(1, 2, 5, 5), 1e-5).shape
    torch.Size([1, 2, 5, 4])
    """
    if q.device.type in ('cpu', 'cuda') and torch.is_autocast_enabled(q.device.type):
        with torch.autocast(device_type=q.device.type, enabled=False):
            return linear_attention(q, k, v, eps)
    dtype = v.dtype
    q, k, v = q.float(), k.float(), v.float()
    out = q @ (k.transpose(-1, -2) @ v)
    return (out[..., :-1] / (out[..., -1:] + eps)).to(dtype)


class LiteMLA(nn.Module):
    """Lite multi-scale linear attention: 1x1 ``qkv``, extra q/k/v from depthwise ``scales`` convs then grouped
    1x1s (``aggreg``), ReLU linear attention per head at every scale, concatenated, 1x1 ``proj`` with norm.

    >>> LiteMLA(32, 32, dim=8, norm_layer=nn.BatchNorm2d)(torch.ones(1, 32, 6, 6)).shape
    torch.Size([1, 32, 6, 6])
    """

    def __init__(self, in_chs: int, out_chs: int, dim: int = 8, heads_ratio: float = 1.0,
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d, scales: Sequence[int] = (5,),
                 eps: float = 1e-5) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps
        heads = int(in_chs // dim * heads_ratio)
        total = heads * dim
        self.qkv = ConvNormAct(in_chs, 3 * total, 1)
        self.aggreg = nn.ModuleList([nn.Sequential(
            nn.Conv2d(3 * total, 3 * total, scale, padding=scale // 2, groups=3 * total, bias=False),
            nn.Conv2d(3 * total, 3 * total, 1, groups=3 * heads, bias=False)) for scale in scales])
        self.kernel_func = nn.ReLU(inplace=False)
        self.proj = ConvNormAct(total * (1 + len(scales)), out_chs, 1, norm_layer=norm_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        qkv = self.qkv(x)
        qkv = torch.cat([qkv] + [op(qkv) for op in self.aggreg], dim=1)
        qkv = qkv.reshape(B, -1, 3 * self.dim, H * W).transpose(-1, -2)
        q, k, v = qkv.chunk(3, dim=-1)
        v = F.pad(v, (0, 1), mode='constant', value=1.0)
        out = linear_attention(self.kernel_func(q), self.kernel_func(k), v, self.eps)
        return self.proj(out.transpose(-1, -2).reshape(B, -1, H, W))


class ResidualBlock(nn.Module):
    """``main(x)`` plus ``shortcut(x)`` (no residual where ``shortcut`` is None). ``drop_path`` (stochastic depth
    on the residual branch, featzoo's addition for training; timm's rows have none) is off by default."""

    def __init__(self, main: nn.Module, shortcut: Optional[nn.Module] = None, drop_path: float = 0.0) -> None:
        super().__init__()
        self.pre_norm = nn.Identity()
        self.main = main
        self.shortcut = shortcut
        self.drop_path = DropPath(drop_path) if drop_path > 0 and shortcut is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.main(self.pre_norm(x))
        if self.shortcut is not None:
            out = self.drop_path(out) + self.shortcut(x)
        return out


class EfficientVitBlock(nn.Module):
    """A residual :class:`LiteMLA` (``context_module``) then a residual inverted-residual conv (``local_module``)."""

    def __init__(self, dim: int, head_dim: int, expand_ratio: float, norm_layer: Callable[[int], nn.Module],
                 act_layer: str, drop_path: float = 0.0) -> None:
        super().__init__()
        self.context_module = ResidualBlock(LiteMLA(dim, dim, dim=head_dim, norm_layer=norm_layer), nn.Identity(),
                                            drop_path)
        self.local_module = ResidualBlock(
            local_block(dim, dim, 1, expand_ratio, norm_layer, act_layer, fewer_norm=True), nn.Identity(), drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.local_module(self.context_module(x))


class Stem(nn.Sequential):
    """A stride-2 3x3 conv (``in_conv``), then ``depth`` residual depthwise-separable (``large``: plain) convs."""

    def __init__(self, in_chs: int, out_chs: int, depth: int, norm_layer: Callable[[int], nn.Module],
                 act_layer: str, large: bool = False) -> None:
        super().__init__()
        self.add_module('in_conv', ConvNormAct(in_chs, out_chs, 3, 2, norm_layer=norm_layer, act_layer=act_layer))
        for i in range(depth):
            self.add_module(f'res{i}', ResidualBlock(
                local_block(out_chs, out_chs, 1, 1, norm_layer, act_layer, fused=large), nn.Identity()))


class EfficientVitStage(nn.Module):
    """A stride-2 conv block without residual, then conv blocks or, in an attention stage, EfficientViT blocks."""

    def __init__(self, in_chs: int, out_chs: int, depth: int, norm_layer: Callable[[int], nn.Module],
                 act_layer: str, head_dim: int, large: bool, vit_stage: bool, fewer_norm: bool,
                 expand_ratio: float = 4.0, drop_path_rates: Sequence[float] = ()) -> None:
        super().__init__()
        fused = large and not fewer_norm
        if large:
            down_ratio, block_ratio, vit_ratio, extra = (24 if vit_stage else 16), 4, 6, depth
        else:
            down_ratio = block_ratio = vit_ratio = expand_ratio
            extra = depth if vit_stage else depth - 1
        blocks: List[nn.Module] = [ResidualBlock(local_block(in_chs, out_chs, 2, down_ratio, norm_layer, act_layer,
                                                             fewer_norm=vit_stage or fewer_norm, fused=fused))]
        rates = list(drop_path_rates) or [0.0] * extra
        for i in range(extra):
            if vit_stage:
                blocks.append(EfficientVitBlock(out_chs, head_dim, vit_ratio, norm_layer, act_layer, rates[i]))
            else:
                blocks.append(ResidualBlock(local_block(out_chs, out_chs, 1, block_ratio, norm_layer, act_layer,
                                                        fewer_norm=fewer_norm, fused=fused), nn.Identity(),
                                            rates[i]))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class ClassifierHead(nn.Module):
    """1x1 conv-norm-act to ``widths[0]``, global pool, linear to ``widths[1]`` (no bias), layer norm, activation,
    dropout, classifier (``classifier.4``). ``reset(..., reset_other=True)`` drops the conv and the MLP (pruned
    backbones), leaving pool and classifier.
    """

    def __init__(self, in_chs: int, widths: Sequence[int], num_classes: int, act_layer: str, pool_type: str = 'avg',
                 drop_rate: float = 0.0, norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.in_features = in_chs
        self.num_features = widths[-1]
        self.in_conv = ConvNormAct(in_chs, widths[0], 1, norm_layer=nn.BatchNorm2d, act_layer=act_layer)
        self.global_pool = SelectAdaptivePool2d(pool_type, flatten=True)
        self.classifier = nn.Sequential(
            nn.Linear(widths[0], widths[1], bias=False), nn.LayerNorm(widths[1], eps=norm_eps),
            create_act_layer(act_layer, inplace=True), nn.Dropout(drop_rate),
            nn.Linear(widths[1], num_classes) if num_classes > 0 else nn.Identity())

    def reset(self, num_classes: int, pool_type: Optional[str] = None, reset_other: bool = False,
              in_features: Optional[int] = None) -> None:
        if pool_type is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type, flatten=True)
        if reset_other:
            self.in_conv = nn.Identity()
            for i in range(3):
                self.classifier[i] = nn.Identity()
            self.num_features = self.in_features
        if in_features is not None and in_features != self.in_features and isinstance(self.in_conv, nn.Identity):
            self.in_features = self.num_features = in_features
        self.classifier[-1] = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(self.in_conv(x))
        if pre_logits:
            for i in range(4):
                x = self.classifier[i](x)
            return x
        return self.classifier(x)


def _check_head_pool(global_pool: str) -> str:
    if global_pool not in HEAD_POOL_TYPES:
        raise ValueError(f'global_pool={global_pool!r} is not supported by the EfficientViT head (it pools to the '
                         f'width its MLP takes); valid: {HEAD_POOL_TYPES}')
    return global_pool


class EfficientVit(StagedFeatures, HeadApi, nn.Module):
    """Stem (``widths[0]``, ``depths[0]`` residual convs), four stages (``widths[1:]``, ``depths[1:]``), the MLP head.

    B rows: inverted residuals expanded by ``expand_ratio`` and attention from the third stage, Hardswish.
    ``large`` (L rows): plain/fused convs in the stem and first two stages, attention only in the last, GELU (tanh),
    norms with ``norm_eps``. ``drop_path_rate`` adds stochastic depth to the stages' residual branches (timm's
    model has none; off by default).

    >>> EfficientVit((8, 16, 32, 64, 128), (1, 1, 1, 1, 1), head_dim=16, head_widths=(64, 80), num_classes=3)(
    ...     torch.ones(1, 3, 64, 64)).shape
    torch.Size([1, 3])
    """

    # a cut model keeps the head's pooling and loses its conv and MLP with the classifier
    prune_trims_feature_info, pruned_head_args = False, dict(global_pool=None, reset_other=True)
    checkpoint_unit = 'stage'

    def __init__(self, widths: Sequence[int], depths: Sequence[int], head_dim: int = 32,
                 head_widths: Sequence[int] = (1024, 1280), large: bool = False, expand_ratio: float = 4.0,
                 act_layer: Optional[str] = None, norm_eps: Optional[float] = None, num_classes: int = 1000,
                 in_chans: int = 3, global_pool: str = 'avg', drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        widths = check_int_tuple('widths', widths, length=5)
        depths = check_int_tuple('depths', depths, length=5, minimum=0)
        head_widths = check_int_tuple('head_widths', head_widths, length=2)
        _check_head_pool(global_pool)
        act_layer = act_layer or ('gelu_tanh' if large else 'hard_swish')
        norm_eps = norm_eps if norm_eps is not None else (1e-7 if large else 1e-5)
        norm_layer = partial(nn.BatchNorm2d, eps=norm_eps)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.grad_checkpointing = False

        self.stem = Stem(in_chans, widths[0], depths[0], norm_layer, act_layer, large=large)
        self.feature_info: List[Dict[str, Any]] = []
        self.stages = nn.Sequential()
        stride, prev = 2, widths[0]
        vit_stages = [i >= 3 if large else i >= 2 for i in range(4)]
        # residual blocks per stage (the first block of a stage has none): stochastic depth grows along them
        residual = [d if large or vit else max(d - 1, 0) for d, vit in zip(depths[1:], vit_stages)]
        rates = drop_path_rates(drop_path_rate, residual)
        for i, (width, depth) in enumerate(zip(widths[1:], depths[1:])):
            self.stages.append(EfficientVitStage(prev, width, depth, norm_layer, act_layer, head_dim, large,
                                                 vit_stage=vit_stages[i], fewer_norm=large and i >= 2,
                                                 expand_ratio=expand_ratio, drop_path_rates=rates[i]))
            stride *= 2
            prev = width
            self.feature_info.append(dict(num_chs=width, reduction=stride, module=f'stages.{i}'))
        self.num_features = prev
        self.head = ClassifierHead(prev, head_widths, num_classes, act_layer, global_pool, drop_rate,
                                   norm_eps=norm_eps)
        self.head_hidden_size = self.head.num_features

    # ---- the contract ------------------------------------------------------------------------------------------
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter-group regexes: the stem, then stages (``coarse``) or blocks.

        >>> SPEC.build('efficientvit_b0').group_matcher()['stem']
        '^stem'
        """
        return dict(stem=r'^stem', blocks=r'^stages\.(\d+)' if coarse else [
            (r'^stages\.(\d+).downsample', (0,)), (r'^stages\.(\d+)\.\w+\.(\d+)', None)])

    def get_classifier(self) -> nn.Module:
        """The final linear layer (``nn.Identity`` when ``num_classes == 0``)."""
        return self.head.classifier[-1]

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None, reset_other: bool = False
                         ) -> None:
        """Replace the classifier (``num_classes=0`` removes it) and optionally the pooling, which must keep the
        width the head's MLP takes (``reset_other`` also drops the conv and MLP before the classifier).

        >>> m = SPEC.build('efficientvit_b0'); m.reset_classifier(0); m(torch.ones(1, 3, 64, 64)).shape
        torch.Size([1, 1280])
        """
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f'num_classes must be an int >= 0 (0 removes the classifier), got {num_classes!r}')
        if global_pool is not None:
            _check_head_pool(global_pool)
        ref = next(self.parameters())
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool, reset_other=reset_other, in_features=self.num_features)
        self.head.to(device=ref.device, dtype=ref.dtype)
        self.head.train(self.training)
        self.head_hidden_size = self.head.num_features
        if global_pool is not None:
            self.global_pool = global_pool

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's map, NCHW.

        >>> SPEC.build('efficientvit_b0').forward_features(torch.ones(1, 3, 64, 64)).shape
        torch.Size([1, 128, 2, 2])
        """
        return self._forward_stages(x)


VARIANTS: Dict[str, Dict[str, Any]] = {
    'efficientvit_b0': dict(widths=(8, 16, 32, 64, 128), depths=(1, 2, 2, 2, 2), head_dim=16,
                            head_widths=(1024, 1280)),
    'efficientvit_b1': dict(widths=(16, 32, 64, 128, 256), depths=(1, 2, 3, 3, 4), head_dim=16,
                            head_widths=(1536, 1600)),
    'efficientvit_b2': dict(widths=(24, 48, 96, 192, 384), depths=(1, 3, 4, 4, 6), head_dim=32,
                            head_widths=(2304, 2560)),
    'efficientvit_b3': dict(widths=(32, 64, 128, 256, 512), depths=(1, 4, 6, 6, 9), head_dim=32,
                            head_widths=(2304, 2560)),
    'efficientvit_l1': dict(widths=(32, 64, 128, 256, 512), depths=(1, 1, 1, 6, 6), head_dim=32,
                            head_widths=(3072, 3200), large=True),
    'efficientvit_l2': dict(widths=(32, 64, 128, 256, 512), depths=(1, 2, 2, 8, 8), head_dim=32,
                            head_widths=(3072, 3200), large=True),
    'efficientvit_l3': dict(widths=(64, 128, 256, 512, 1024), depths=(1, 2, 2, 8, 8), head_dim=32,
                            head_widths=(6144, 6400), large=True),
}

SPEC = FamilySpec(
    name='efficientvit_mit', model=EfficientVit, variants=VARIANTS, default_cfg=DEFAULT_CFG,
    feature_cls=('list', 'dict', 'hook', 'fx', 'getter'), default_feature_cls='list', output_strides=(32,),
    export=('torch.export', 'dynamic_hw', 'onnx', 'compile'), size_args=('head_dim', 'head_widths'),
    input_multiple=32, min_input_size=32)
