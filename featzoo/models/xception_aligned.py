"""Aligned Xception (the DeepLab variant) and its pre-activation form.

Parameter names follow timm's ``xception_aligned`` module so its checkpoints load unchanged.

Paper: "Encoder-Decoder with Atrous Separable Convolution for Semantic Image Segmentation",
https://arxiv.org/abs/1802.02611
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..checks import check_choice, check_int, check_rate
from ..family import FamilySpec
from ..layers import BatchNormAct2d, ClassifierHead, ConvNormAct, DropPath, create_conv2d
from ..layers.head_api import HeadApi, reset_classifier_head
from ..layers.stage_intermediates import run_sequence

# The strided feature levels are taken inside a block (the input of its last, strided separable conv), so only the
# hook and fx wrappers can reach them.
OUTPUT_STRIDES = (8, 16, 32)
DEFAULT_CFG = dict(
    input_size=(3, 299, 299), pool_size=(10, 10), interpolation='bicubic', crop_pct=0.903, crop_mode='center',
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), first_conv='stem.0.conv', classifier='head.fc')

# Entry flow as (out_channels, stride) per block; the middle flow repeats blocks at the last entry width and the exit
# flow is the same for every variant. TensorFlow-ported weights use batch-norm eps 1e-3.
_ENTRY = ((128, 2), (256, 2), (728, 2))
VARIANTS: Dict[str, Dict[str, Any]] = {
    'xception41': dict(entry_flow=_ENTRY, middle_depth=8, norm_eps=1e-3),
    'xception65': dict(entry_flow=_ENTRY, middle_depth=16, norm_eps=1e-3),
    'xception71': dict(entry_flow=((128, 2), (256, 1), (256, 2), (728, 1), (728, 2)), middle_depth=16, norm_eps=1e-3),
    'xception41p': dict(entry_flow=_ENTRY, middle_depth=8, preact=True, norm_eps=1e-5),
    'xception65p': dict(entry_flow=_ENTRY, middle_depth=16, preact=True, norm_eps=1e-3),
}

_EXIT_WIDTHS = ((1024, 1024), (1536, 1536, 2048))
_POOL_TYPES = ('', 'avg', 'max', 'avgmax', 'catavgmax')


class SeparableConv2d(nn.Module):
    """Depthwise conv, norm, optional act, then pointwise conv, norm, optional act.

    >>> SeparableConv2d(8, 16, stride=2)(torch.ones(1, 8, 8, 8)).shape
    torch.Size([1, 16, 4, 4])
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1, dilation: int = 1,
                 with_act: bool = True, norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.conv_dw = create_conv2d(in_chs, in_chs, kernel_size, stride=stride, dilation=dilation, depthwise=True)
        self.bn_dw = nn.BatchNorm2d(in_chs, eps=norm_eps)
        self.act_dw = nn.ReLU(inplace=True) if with_act else nn.Identity()
        self.conv_pw = create_conv2d(in_chs, out_chs, 1)
        self.bn_pw = nn.BatchNorm2d(out_chs, eps=norm_eps)
        self.act_pw = nn.ReLU(inplace=True) if with_act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act_dw(self.bn_dw(self.conv_dw(x)))
        return self.act_pw(self.bn_pw(self.conv_pw(x)))


class PreSeparableConv2d(nn.Module):
    """Optional norm+act, then depthwise and pointwise convs with no norm between them (pre-activation form).

    >>> PreSeparableConv2d(8, 16)(torch.ones(1, 8, 8, 8)).shape
    torch.Size([1, 16, 8, 8])
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1, dilation: int = 1,
                 first_act: bool = True, norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.norm = BatchNormAct2d(in_chs, eps=norm_eps, act_layer='relu') if first_act else nn.Identity()
        self.conv_dw = create_conv2d(in_chs, in_chs, kernel_size, stride=stride, dilation=dilation, depthwise=True)
        self.conv_pw = create_conv2d(in_chs, out_chs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_pw(self.conv_dw(self.norm(x)))


def _init_widths(block: nn.Module, in_chs: int, out_chs: Tuple[int, int, int], stride: int, no_skip: bool,
                 project: Optional[bool]) -> bool:
    """Record an Xception block's ``in_channels``, ``out_channels`` and ``no_skip``; whether its shortcut projects
    (by default when the width or the resolution changes)."""
    block.in_channels = in_chs
    block.out_channels = out_chs[-1]
    block.no_skip = no_skip
    if project is None:
        project = block.out_channels != in_chs or stride != 1
    return not no_skip and project


class XceptionModule(nn.Module):
    """Three separable convs (the last one strided) with a projection or identity shortcut.

    >>> XceptionModule(8, (16, 16, 16), stride=2)(torch.ones(1, 8, 8, 8)).shape
    torch.Size([1, 16, 4, 4])
    """

    def __init__(self, in_chs: int, out_chs: Tuple[int, int, int], stride: int = 1, dilation: int = 1,
                 start_with_relu: bool = True, no_skip: bool = False, norm_eps: float = 1e-5,
                 drop_path: float = 0.0, project: Optional[bool] = None) -> None:
        super().__init__()
        if _init_widths(self, in_chs, out_chs, stride, no_skip, project):
            self.shortcut: Optional[nn.Module] = ConvNormAct(in_chs, self.out_channels, 1, stride=stride,
                                                             apply_act=False, norm_eps=norm_eps)
        else:
            self.shortcut = None
        self.stack = nn.Sequential()
        for i, width in enumerate(out_chs):
            if start_with_relu:
                # The first ReLU must not work in place: the block input is still needed by the shortcut.
                self.stack.add_module(f'act{i + 1}', nn.ReLU(inplace=i > 0))
            self.stack.add_module(f'conv{i + 1}', SeparableConv2d(
                in_chs, width, 3, stride=stride if i == 2 else 1, dilation=dilation,
                with_act=not start_with_relu, norm_eps=norm_eps))
            in_chs = width
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stack(x)
        if self.no_skip:
            return out
        skip = self.shortcut(x) if self.shortcut is not None else x
        return self.drop_path(out) + skip


class PreXceptionModule(nn.Module):
    """Pre-activation Xception block: norm+act first, shared by the residual branch and the shortcut.

    >>> PreXceptionModule(8, (16, 16, 16), stride=2)(torch.ones(1, 8, 8, 8)).shape
    torch.Size([1, 16, 4, 4])
    """

    def __init__(self, in_chs: int, out_chs: Tuple[int, int, int], stride: int = 1, dilation: int = 1,
                 no_skip: bool = False, norm_eps: float = 1e-5, drop_path: float = 0.0,
                 project: Optional[bool] = None) -> None:
        super().__init__()
        if _init_widths(self, in_chs, out_chs, stride, no_skip, project):
            self.shortcut: nn.Module = create_conv2d(in_chs, self.out_channels, 1, stride=stride)
        else:
            self.shortcut = nn.Identity()
        self.norm = BatchNormAct2d(in_chs, eps=norm_eps, act_layer='relu')
        self.stack = nn.Sequential()
        for i, width in enumerate(out_chs):
            self.stack.add_module(f'conv{i + 1}', PreSeparableConv2d(
                in_chs, width, 3, stride=stride if i == 2 else 1, dilation=dilation, first_act=i > 0,
                norm_eps=norm_eps))
            in_chs = width
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        out = self.stack(x)
        if self.no_skip:
            return out
        return self.drop_path(out) + self.shortcut(x)


def _block_plan(entry_flow: Sequence[Tuple[int, int]], middle_depth: int) -> List[Dict[str, Any]]:
    """Expand the compact (entry, middle depth) description into one dict per block."""
    plan, in_chs = [], 64
    for width, stride in entry_flow:
        plan.append(dict(in_chs=in_chs, out_chs=(width,) * 3, stride=stride, no_skip=False, start_with_relu=True))
        in_chs = width
    plan += [dict(in_chs=in_chs, out_chs=(in_chs,) * 3, stride=1, no_skip=False, start_with_relu=True)
             for _ in range(middle_depth)]
    plan.append(dict(in_chs=in_chs, out_chs=(in_chs,) + _EXIT_WIDTHS[0], stride=2, no_skip=False,
                     start_with_relu=True))
    plan.append(dict(in_chs=_EXIT_WIDTHS[0][-1], out_chs=_EXIT_WIDTHS[1], stride=1, no_skip=True,
                     start_with_relu=False))
    return plan


def _check_args(entry_flow: Sequence[Tuple[int, int]], middle_depth: int, num_classes: int, in_chans: int,
                output_stride: int, global_pool: str, drop_rate: float, drop_path_rate: float) -> None:
    check_choice('output_stride', output_stride, OUTPUT_STRIDES)
    check_int('num_classes', num_classes, 0)
    check_int('in_chans', in_chans, 1)
    check_int('middle_depth', middle_depth, 0)
    check_choice('global_pool', global_pool, _POOL_TYPES)
    check_rate('drop_rate', drop_rate)
    check_rate('drop_path_rate', drop_path_rate)
    def valid_pair(block: Any) -> bool:
        return (isinstance(block, (tuple, list)) and len(block) == 2 and all(isinstance(v, int) for v in block)
                and block[0] >= 1 and block[1] in (1, 2))

    if not entry_flow or not all(valid_pair(b) for b in entry_flow):
        raise ValueError(f'entry_flow={entry_flow!r} is invalid; valid: a non-empty sequence of '
                         f'(out_channels >= 1, stride in (1, 2)) pairs')


class XceptionAligned(HeadApi, nn.Module):
    """Aligned Xception: a two-conv stem, entry/middle/exit flows of separable-conv blocks, and a pooled classifier.

    >>> model = XceptionAligned(entry_flow=((16, 2), (32, 2), (64, 2)), middle_depth=1, num_classes=10)
    >>> model(torch.ones(1, 3, 64, 64)).shape
    torch.Size([1, 10])
    """

    def __init__(self, entry_flow: Sequence[Tuple[int, int]] = _ENTRY, middle_depth: int = 8, preact: bool = False,
                 norm_eps: float = 1e-3, num_classes: int = 1000, in_chans: int = 3, output_stride: int = 32,
                 global_pool: str = 'avg', drop_rate: float = 0.0, drop_path_rate: Optional[float] = 0.0) -> None:
        super().__init__()
        drop_path_rate = drop_path_rate or 0.0
        _check_args(entry_flow, middle_depth, num_classes, in_chans, output_stride, global_pool, drop_rate,
                    drop_path_rate)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        self.stem = nn.Sequential(
            ConvNormAct(in_chans, 32, 3, stride=2, norm_eps=norm_eps),
            create_conv2d(32, 64, 3) if preact else ConvNormAct(32, 64, 3, norm_eps=norm_eps),
        )

        plan = _block_plan(entry_flow, middle_depth)
        self.feature_info: List[Dict[str, Any]] = []
        self.blocks = nn.Sequential()
        stride, dilation = 2, 1
        for i, cfg in enumerate(plan):
            rate = drop_path_rate * i / max(len(plan) - 1, 1)
            block_stride = cfg['stride']
            block_dilation = dilation
            if block_stride > 1:
                # The level is the input of the last separable conv: full width of the block's second conv.
                tap = f'blocks.{i}.stack.conv2' if preact else f'blocks.{i}.stack.act3'
                self.feature_info.append(dict(num_chs=cfg['out_chs'][-2], reduction=stride, module=tap))
                if stride * block_stride > output_stride:
                    # This block keeps its own dilation; every later block sees the enlarged one.
                    dilation *= block_stride
                    block_stride = 1
                else:
                    stride *= block_stride
            # The projection shortcut is decided by the block's stride at output_stride 32, so a block whose stride
            # was removed keeps it (at stride 1) and the stride-32 weights load at every output_stride. timm drops
            # it there (xception71 at output_stride 8), which changes the parameter set.
            project = cfg['out_chs'][-1] != cfg['in_chs'] or cfg['stride'] != 1
            if preact:
                block: nn.Module = PreXceptionModule(
                    cfg['in_chs'], cfg['out_chs'], stride=block_stride, dilation=block_dilation,
                    no_skip=cfg['no_skip'], norm_eps=norm_eps, drop_path=rate, project=project)
            else:
                block = XceptionModule(
                    cfg['in_chs'], cfg['out_chs'], stride=block_stride, dilation=block_dilation,
                    start_with_relu=cfg['start_with_relu'], no_skip=cfg['no_skip'], norm_eps=norm_eps,
                    drop_path=rate, project=project)
            self.blocks.add_module(str(i), block)
        self.num_features = plan[-1]['out_chs'][-1]
        self.feature_info.append(dict(num_chs=self.num_features, reduction=stride, module=f'blocks.{len(plan) - 1}'))

        # Not in place: the last block's output is itself a feature level, read before this activation.
        self.act = nn.ReLU() if preact else nn.Identity()
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self.head_hidden_size = self.num_features * self.head.global_pool.feat_mult()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Regexes grouping parameters into stem and per-block groups (for layer-wise learning-rate decay).

        >>> sorted(XceptionAligned(middle_depth=0).group_matcher())
        ['blocks', 'stem']
        """
        return dict(stem=r'^stem', blocks=r'^blocks\.(\d+)')

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier (``num_classes=0`` removes it) and optionally the pooling (``''`` = none).

        >>> model = XceptionAligned(middle_depth=0)
        >>> model.reset_classifier(0, '')
        >>> model(torch.ones(1, 3, 64, 64)).shape
        torch.Size([1, 2048, 2, 2])
        """
        check_int('num_classes', num_classes, 0)
        if global_pool is not None:
            check_choice('global_pool', global_pool, _POOL_TYPES)
        reset_classifier_head(self, num_classes, global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Unpooled feature map of the last block, ``(N, num_features, H/32, W/32)`` at output_stride 32.

        >>> XceptionAligned(middle_depth=0).forward_features(torch.ones(1, 3, 64, 64)).shape
        torch.Size([1, 2048, 2, 2])
        """
        checkpointed = self.grad_checkpointing and not torch.jit.is_scripting()
        return self.act(run_sequence(self.blocks, self.stem(x), checkpointed))


SPEC = FamilySpec(
    name='xception_aligned', model=XceptionAligned, variants=VARIANTS, default_cfg=DEFAULT_CFG,
    feature_cls=('hook', 'fx'), default_feature_cls='hook', output_strides=OUTPUT_STRIDES,
    export=('torch.export', 'dynamic_hw', 'onnx', 'compile'))
