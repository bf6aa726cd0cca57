"""ConvNeXt: a patchify stem and four stages of depthwise 7x7 conv + inverted-MLP blocks with layer scale.

Parameter names follow timm's ``convnext`` module so its checkpoints load unchanged.

Paper: "A ConvNet for the 2020s", https://arxiv.org/abs/2201.03545
"""
from __future__ import annotations

from functools import partial
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..checks import check_choice, check_int, check_rate
from ..features.info import normalize_out_indices
from ..family import FamilySpec
from ..layers import ClassifierHead, DropPath, LayerNorm2d, create_conv2d, drop_path_rates, make_divisible, trunc_normal_
from ..layers.activations import ActLayer, create_act_layer
from ..layers.head_api import HeadApi
from ..layers.mlp import GlobalResponseNormMlp, Mlp
from ..layers.norm import RmsNorm, RmsNorm2d, SimpleNorm, SimpleNorm2d
from ..layers.norm_mlp_head import NORM_MLP_POOL_TYPES, NormMlpClassifierHead
from ..layers.output_stride import stride_or_dilate
from ..layers.pooling import POOL_TYPES
from ..layers.stage_intermediates import run_sequence, stage_group_matcher

OUTPUT_STRIDES = (8, 16, 32)
STEM_TYPES = ('patch', 'overlap', 'overlap_tiered', 'overlap_act')
# norm name -> (layer for NCHW maps, layer for channels-last rows); both keep timm's parameter names
NORM_LAYERS = {
    'layernorm': (LayerNorm2d, nn.LayerNorm),
    'rmsnorm': (RmsNorm2d, RmsNorm),
    'simplenorm': (SimpleNorm2d, SimpleNorm),
}
DEFAULT_CFG = dict(
    input_size=(3, 224, 224), pool_size=(7, 7), interpolation='bicubic', crop_pct=0.875, crop_mode='center',
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), first_conv='stem.0', classifier='head.fc')

# The small timm-original widths use 1x1 convolutions for the MLP (faster at low width), the paper's sizes use
# channels-last linear layers; both store the same parameter shapes apart from the 1x1 kernel dims.
_V2 = dict(use_grn=True, ls_init_value=None)
VARIANTS: Dict[str, Dict[str, Any]] = {
    'convnext_atto': dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320), conv_mlp=True),
    'convnext_femto': dict(depths=(2, 2, 6, 2), dims=(48, 96, 192, 384), conv_mlp=True),
    'convnext_pico': dict(depths=(2, 2, 6, 2), dims=(64, 128, 256, 512), conv_mlp=True),
    'convnext_nano': dict(depths=(2, 2, 8, 2), dims=(80, 160, 320, 640), conv_mlp=True),
    'convnext_tiny': dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)),
    'convnext_small': dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768)),
    'convnext_base': dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024)),
    'convnext_large': dict(depths=(3, 3, 27, 3), dims=(192, 384, 768, 1536)),
    'convnext_xlarge': dict(depths=(3, 3, 27, 3), dims=(256, 512, 1024, 2048)),
    'convnext_xxlarge': dict(depths=(3, 4, 30, 3), dims=(384, 768, 1536, 3072), norm_eps=1e-5),
    'convnext_large_mlp': dict(depths=(3, 3, 27, 3), dims=(192, 384, 768, 1536), head_hidden_size=1536),
    'convnext_tiny_hnf': dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768), head_norm_first=True, conv_mlp=True),
    # overlapping stems ('ols') and mean-free norms
    'convnext_atto_ols': dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320), conv_mlp=True, stem_type='overlap_tiered'),
    'convnext_femto_ols': dict(depths=(2, 2, 6, 2), dims=(48, 96, 192, 384), conv_mlp=True,
                               stem_type='overlap_tiered'),
    'convnext_pico_ols': dict(depths=(2, 2, 6, 2), dims=(64, 128, 256, 512), conv_mlp=True, stem_type='overlap_tiered'),
    'convnext_nano_ols': dict(depths=(2, 2, 8, 2), dims=(80, 160, 320, 640), conv_mlp=True, stem_type='overlap'),
    'convnext_atto_rms': dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320), conv_mlp=True, norm_layer='rmsnorm'),
    # timm names these 'rms' but builds them with SimpleNorm (x / std)
    'convnext_zepto_rms': dict(depths=(2, 2, 4, 2), dims=(32, 64, 128, 256), conv_mlp=True, norm_layer='simplenorm'),
    'convnext_zepto_rms_ols': dict(depths=(2, 2, 4, 2), dims=(32, 64, 128, 256), conv_mlp=True,
                                   norm_layer='simplenorm', stem_type='overlap_act'),
    # ConvNeXt V2: global response norm in the MLP instead of layer scale
    'convnextv2_atto': dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320), conv_mlp=True, **_V2),
    'convnextv2_femto': dict(depths=(2, 2, 6, 2), dims=(48, 96, 192, 384), conv_mlp=True, **_V2),
    'convnextv2_pico': dict(depths=(2, 2, 6, 2), dims=(64, 128, 256, 512), conv_mlp=True, **_V2),
    'convnextv2_nano': dict(depths=(2, 2, 8, 2), dims=(80, 160, 320, 640), conv_mlp=True, **_V2),
    'convnextv2_tiny': dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768), **_V2),
    'convnextv2_small': dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768), **_V2),
    'convnextv2_base': dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024), **_V2),
    'convnextv2_large': dict(depths=(3, 3, 27, 3), dims=(192, 384, 768, 1536), **_V2),
    'convnextv2_huge': dict(depths=(3, 3, 27, 3), dims=(352, 704, 1408, 2816), **_V2),
    # timm's tiny test networks
    'test_convnext': dict(depths=(1, 2, 4, 2), dims=(24, 32, 48, 64), norm_eps=1e-5, act_layer='gelu_tanh'),
    'test_convnext2': dict(depths=(1, 1, 1, 1), dims=(32, 64, 96, 128), norm_eps=1e-5, act_layer='gelu_tanh'),
    'test_convnext3': dict(depths=(1, 1, 1, 1), dims=(32, 64, 96, 128), norm_eps=1e-5, kernel_sizes=(7, 5, 5, 3),
                           act_layer='silu'),
}


class ConvNeXtBlock(nn.Module):
    """Depthwise conv, norm, MLP (ratio 4; with ``use_grn`` ConvNeXt V2's global response norm inside), optional
    layer scale ``gamma``, residual.

    >>> ConvNeXtBlock(16, dilation=2)(torch.ones(1, 16, 8, 8)).shape
    torch.Size([1, 16, 8, 8])
    """

    # gamma scales the output channels of mlp.fc2 and nothing else (optimize_for_inference folds it in there)
    foldable_scales = {'gamma': 'mlp.fc2'}

    def __init__(self, dim: int, kernel_size: int = 7, dilation: int = 1, mlp_ratio: float = 4.0,
                 conv_mlp: bool = False, conv_bias: bool = True, ls_init_value: Optional[float] = 1e-6,
                 norm_eps: float = 1e-6, drop_path: float = 0.0, use_grn: bool = False,
                 act_layer: ActLayer = 'gelu', norm_layer: str = 'layernorm') -> None:
        super().__init__()
        self.use_conv_mlp = conv_mlp
        self.conv_dw = create_conv2d(dim, dim, kernel_size, dilation=dilation, depthwise=True, bias=conv_bias)
        self.norm = NORM_LAYERS[norm_layer][0 if conv_mlp else 1](dim, eps=norm_eps)
        mlp = GlobalResponseNormMlp if use_grn else Mlp
        self.mlp = mlp(dim, int(mlp_ratio * dim), act_layer=act_layer, use_conv=conv_mlp)
        self.gamma = nn.Parameter(torch.full((dim,), float(ls_init_value))) if ls_init_value is not None else None
        # In- and out-width and stride never differ inside a stage here, so the residual needs no projection.
        self.shortcut = nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_dw(x)
        if self.use_conv_mlp:
            x = self.mlp(self.norm(x))
        else:
            x = self.mlp(self.norm(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        if self.gamma is not None:
            x = x.mul(self.gamma.reshape(1, -1, 1, 1))
        return self.drop_path(x) + self.shortcut(shortcut)


class ConvNeXtStage(nn.Module):
    """Optional downsample (LayerNorm + 2x2 conv) followed by a run of blocks.

    ``dilation`` is (downsample conv dilation, block dilation); a stride removed for output_stride leaves a 2x2
    stride-1 conv, padded 'same' as timm does so the feature map keeps its size.

    >>> ConvNeXtStage(8, 16, stride=2, depth=1)(torch.ones(1, 8, 8, 8)).shape
    torch.Size([1, 16, 4, 4])
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 7, stride: int = 2, depth: int = 2,
                 dilation: Tuple[int, int] = (1, 1), drop_path_rates: Optional[Sequence[float]] = None,
                 ls_init_value: Optional[float] = 1e-6, conv_mlp: bool = False, conv_bias: bool = True,
                 norm_eps: float = 1e-6, use_grn: bool = False, act_layer: ActLayer = 'gelu',
                 norm_layer: str = 'layernorm') -> None:
        super().__init__()
        self.grad_checkpointing = False
        if in_chs != out_chs or stride > 1 or dilation[0] != dilation[1]:
            ds_kernel = 2 if stride > 1 or dilation[0] != dilation[1] else 1
            self.downsample: nn.Module = nn.Sequential(
                NORM_LAYERS[norm_layer][0](in_chs, eps=norm_eps),
                create_conv2d(in_chs, out_chs, ds_kernel, stride=stride, dilation=dilation[0],
                              padding='same' if dilation[1] > 1 else 0, bias=conv_bias),
            )
        else:
            self.downsample = nn.Identity()
        rates = list(drop_path_rates) if drop_path_rates else [0.0] * depth
        self.blocks = nn.Sequential(*[
            ConvNeXtBlock(out_chs, kernel_size=kernel_size, dilation=dilation[1], conv_mlp=conv_mlp,
                          conv_bias=conv_bias, ls_init_value=ls_init_value, norm_eps=norm_eps, drop_path=rates[i],
                          use_grn=use_grn, act_layer=act_layer, norm_layer=norm_layer)
            for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        checkpointed = self.grad_checkpointing and not torch.jit.is_scripting()
        return run_sequence(self.blocks, self.downsample(x), checkpointed)


def _check_args(depths: Sequence[int], dims: Sequence[int], kernel_sizes: Sequence[int], num_classes: int,
                in_chans: int, output_stride: int, global_pool: str, drop_rate: float, drop_path_rate: float,
                patch_size: int, stem_type: str, norm_layer: str, head_norm_first: bool,
                head_hidden_size: Optional[int]) -> None:
    check_choice('stem_type', stem_type, STEM_TYPES)
    check_choice('norm_layer', norm_layer, tuple(NORM_LAYERS))
    if head_norm_first and head_hidden_size:
        raise ValueError(f'head_hidden_size={head_hidden_size!r} needs the pooled-norm head; with '
                         f'head_norm_first=True leave it None')
    check_choice('output_stride', output_stride, OUTPUT_STRIDES)
    for name, value, low in (('num_classes', num_classes, 0), ('in_chans', in_chans, 1), ('patch_size', patch_size, 1)):
        check_int(name, value, low)
    for name, value in (('depths', depths), ('dims', dims), ('kernel_sizes', kernel_sizes)):
        if len(value) != 4 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
            raise ValueError(f'{name}={tuple(value)!r} is invalid; valid: 4 positive ints, one per stage')
    check_choice('global_pool', global_pool, POOL_TYPES if head_norm_first else NORM_MLP_POOL_TYPES)
    check_rate('drop_rate', drop_rate)
    check_rate('drop_path_rate', drop_path_rate)


class ConvNeXt(HeadApi, nn.Module):
    """ConvNeXt (V1 and, with ``use_grn=True, ls_init_value=None``, V2) with a patchify or overlapping stem, four
    stages and a pool -> norm -> (MLP) -> classifier head (norm -> pool -> classifier with ``head_norm_first``).

    ``norm_layer`` is 'layernorm', 'rmsnorm' or 'simplenorm'; ``act_layer`` is the blocks' activation.

    >>> model = ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), num_classes=10)
    >>> model(torch.ones(1, 3, 64, 64)).shape
    torch.Size([1, 10])
    """

    checkpoint_stages = 'stages'

    def __init__(self, depths: Sequence[int] = (3, 3, 9, 3), dims: Sequence[int] = (96, 192, 384, 768),
                 kernel_sizes: Union[int, Sequence[int]] = 7, ls_init_value: Optional[float] = 1e-6,
                 patch_size: int = 4, conv_mlp: bool = False, conv_bias: bool = True,
                 head_hidden_size: Optional[int] = None, head_init_scale: float = 1.0, norm_eps: float = 1e-6,
                 num_classes: int = 1000, in_chans: int = 3, output_stride: int = 32, global_pool: str = 'avg',
                 drop_rate: float = 0.0, drop_path_rate: Optional[float] = 0.0, stem_type: str = 'patch',
                 head_norm_first: bool = False, use_grn: bool = False, act_layer: ActLayer = 'gelu',
                 norm_layer: str = 'layernorm') -> None:
        super().__init__()
        drop_path_rate = drop_path_rate or 0.0
        if isinstance(kernel_sizes, int):
            kernel_sizes = (kernel_sizes,) * 4
        _check_args(depths, dims, kernel_sizes, num_classes, in_chans, output_stride, global_pool, drop_rate,
                    drop_path_rate, patch_size, stem_type, norm_layer, head_norm_first, head_hidden_size)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        norm_2d = partial(NORM_LAYERS[norm_layer][0], eps=norm_eps)

        if stem_type == 'patch':
            self.stem = nn.Sequential(
                nn.Conv2d(in_chans, dims[0], kernel_size=patch_size, stride=patch_size, bias=conv_bias),
                norm_2d(dims[0]),
            )
            stem_stride = patch_size
        else:
            # two overlapping stride-2 3x3 convolutions; 'tiered' halves the first width, 'act' adds an activation
            mid_chs = make_divisible(dims[0] // 2) if 'tiered' in stem_type else dims[0]
            self.stem = nn.Sequential(*[layer for layer in (
                nn.Conv2d(in_chans, mid_chs, kernel_size=3, stride=2, padding=1, bias=conv_bias),
                create_act_layer(act_layer) if 'act' in stem_type else None,
                nn.Conv2d(mid_chs, dims[0], kernel_size=3, stride=2, padding=1, bias=conv_bias),
                norm_2d(dims[0]),
            ) if layer is not None])
            stem_stride = 4
        self.feature_info: List[Dict[str, Any]] = []
        rates = drop_path_rates(drop_path_rate, list(depths))
        stages = []
        in_chs, reduction, dilation = dims[0], stem_stride, 1
        for i in range(4):
            # Stage 0 only downsamples when the stem stopped at stride 2 (timm's rule, kept for its stems).
            stride = 2 if reduction == 2 or i > 0 else 1
            stride, reduction, dilation = stride_or_dilate(reduction, dilation, output_stride, stride)
            # The downsample conv of a dilated stage reads the previous stage's grid, at most dilated by 2.
            first_dilation = 1 if dilation in (1, 2) else 2
            stages.append(ConvNeXtStage(
                in_chs, dims[i], kernel_size=kernel_sizes[i], stride=stride, depth=depths[i],
                dilation=(first_dilation, dilation), drop_path_rates=rates[i], ls_init_value=ls_init_value,
                conv_mlp=conv_mlp, conv_bias=conv_bias, norm_eps=norm_eps, use_grn=use_grn, act_layer=act_layer,
                norm_layer=norm_layer))
            in_chs = dims[i]
            self.feature_info.append(dict(num_chs=in_chs, reduction=reduction, module=f'stages.{i}'))
        self.stages = nn.Sequential(*stages)
        self.num_features = in_chs
        if head_norm_first:
            # norm -> pool -> classifier, the usual order of other networks
            self.norm_pre: nn.Module = norm_2d(self.num_features)
            self.head: nn.Module = ClassifierHead(self.num_features, num_classes, pool_type=global_pool,
                                                  drop_rate=drop_rate)
        else:
            # the original ConvNeXt weights normalize after pooling, in the head, so nothing sits here
            self.norm_pre = nn.Identity()
            self.head = NormMlpClassifierHead(
                self.num_features, num_classes, hidden_size=head_hidden_size, pool_type=global_pool,
                drop_rate=drop_rate, norm_layer=norm_2d, act_layer='gelu')
        self.head_hidden_size = self._head_width()
        self._init_weights(head_init_scale)

    def _head_width(self) -> int:
        if isinstance(self.head, NormMlpClassifierHead):
            return self.head.num_features
        return self.num_features * self.head.global_pool.feat_mult()

    def _reset_head(self, num_classes: int, global_pool: Optional[str], reset_other: bool = False) -> None:
        if isinstance(self.head, NormMlpClassifierHead):
            self.head.reset(num_classes, global_pool, reset_other=reset_other, in_features=self.num_features)
        else:
            # ClassifierHead holds nothing but the classifier: a new one, where the old one lived
            pool = self.head.global_pool.pool_type if global_pool is None else global_pool
            param = next(self.parameters())
            self.head = ClassifierHead(self.num_features, num_classes, pool_type=pool, drop_rate=self.drop_rate).to(
                param.device, param.dtype).train(self.training)
        self.head_hidden_size = self._head_width()

    def _init_weights(self, head_init_scale: float) -> None:
        for name, module in self.named_modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
                if name.startswith('head.') and isinstance(module, nn.Linear):
                    with torch.no_grad():
                        module.weight.mul_(head_init_scale)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Regexes grouping parameters into stem, per-stage (coarse) or per-block groups.

        >>> ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 8, 8, 8)).group_matcher(coarse=True)['stem']
        '^stem'
        """
        matcher = stage_group_matcher(coarse)
        if not coarse:
            matcher['blocks'].append((r'^norm_pre', (99999,)))  # the norm before the head joins the last group
        return matcher

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None,
                         reset_other: bool = False) -> None:
        """Replace the classifier (``num_classes=0`` removes it), optionally the pooling (``''`` = none) and,
        with ``reset_other``, drop the head's norm and pre-logits MLP.

        >>> model = ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 8, 8, 8))
        >>> model.reset_classifier(0)
        >>> model(torch.ones(1, 3, 64, 64)).shape
        torch.Size([1, 8])
        """
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f'num_classes={num_classes!r} is invalid; valid: an int >= 0')
        pool_types = NORM_MLP_POOL_TYPES if isinstance(self.head, NormMlpClassifierHead) else POOL_TYPES
        if global_pool is not None and global_pool not in pool_types:
            raise ValueError(f'global_pool={global_pool!r} is invalid; valid: {pool_types}')
        self.num_classes = num_classes
        self._reset_head(num_classes, global_pool, reset_other=reset_other)

    def forward_intermediates(
            self, x: torch.Tensor, indices: Optional[Union[int, Sequence[int]]] = None, norm: bool = False,
            stop_early: bool = False, output_fmt: str = 'NCHW', intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Stage outputs selected by ``indices`` (all by default; an int n = the last n), as timm returns them.

        ``norm`` applies ``norm_pre`` to the last stage's output (a no-op for the standard head ordering).

        >>> m = ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32))
        >>> [t.shape[1] for t in m.forward_intermediates(torch.ones(1, 3, 64, 64), indices=2, intermediates_only=True)]
        [24, 32]
        """
        if output_fmt != 'NCHW':
            raise ValueError(f"output_fmt={output_fmt!r} is not supported by ConvNeXt; valid: 'NCHW'")
        num_stages = len(self.stages)
        take = normalize_out_indices(range(num_stages) if indices is None else indices, num_stages)
        stages = self.stages[:max(take) + 1] if stop_early else self.stages
        x = self.stem(x)
        intermediates = []
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take:
                intermediates.append(self.norm_pre(x) if norm and i == num_stages - 1 else x)
        if intermediates_only:
            return intermediates
        if len(stages) == num_stages:
            x = self.norm_pre(x)
        return x, intermediates

    def prune_intermediate_layers(self, indices: Union[int, Sequence[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop the stages after the last one in ``indices`` (and the head); returns the kept stage indices.

        >>> m = ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32))
        >>> m.prune_intermediate_layers((0, 1)), m.num_features
        ([0, 1], 16)
        """
        num_stages = len(self.stages)
        take = normalize_out_indices(indices, num_stages)
        last = max(take)
        truncated = last < num_stages - 1
        if prune_norm or truncated:
            # norm_pre is sized for, and only applied to, the final stage
            self.norm_pre = nn.Identity()
        self.stages = self.stages[:last + 1]
        if truncated:
            self.feature_info = self.feature_info[:last + 1]
            self.num_features = self.feature_info[last]['num_chs']
        if prune_head or truncated:
            self.num_classes = 0
            self._reset_head(0, '', reset_other=True)
        return list(take)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Unpooled map of the last stage, ``(N, num_features, H/32, W/32)`` at output_stride 32.

        >>> ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 8, 8, 8)).forward_features(torch.ones(1, 3, 64, 64)).shape
        torch.Size([1, 8, 2, 2])
        """
        return self.norm_pre(self.stages(self.stem(x)))


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Fit a timm-layout checkpoint to ``model``: the FCMAE-pretrained ConvNeXt V2 weights have no head norm, which
    then keeps its initial identity values (ones and zeros), as timm leaves it when it loads them.

    >>> m = SPEC.build('convnextv2_atto', num_classes=0)
    >>> sd = {k: v for k, v in m.state_dict().items() if not k.startswith('head.norm.')}
    >>> sorted(k for k in checkpoint_filter_fn(sd, m) if k.startswith('head.'))
    ['head.norm.bias', 'head.norm.weight']
    """
    out = dict(state_dict)
    head_norm = getattr(getattr(model, 'head', None), 'norm', None)
    has_stages = any(k.startswith('stages.') for k in out)
    if has_stages and isinstance(head_norm, nn.Module) and not any(k.startswith('head.norm.') for k in out):
        for name, value in head_norm.state_dict().items():
            out[f'head.norm.{name}'] = torch.ones_like(value) if name == 'weight' else torch.zeros_like(value)
    return out


SPEC = FamilySpec(
    name='convnext', model=ConvNeXt, variants=VARIANTS, default_cfg=DEFAULT_CFG,
    feature_cls=('list', 'dict', 'hook', 'fx', 'getter'), default_feature_cls='list', output_strides=OUTPUT_STRIDES,
    export=('torch.export', 'dynamic_hw', 'onnx', 'compile'), checkpoint_filter=checkpoint_filter_fn,
    size_args=('norm_eps',))  # a norm's epsilon is a constant, not a code path
