"""ResNeSt ("ResNeSt: Split-Attention Networks", Zhang et al., 2020).

A ResNet-D trunk (deep 3x3 stem, average-pool shortcuts) from :mod:`featzoo.models.resnet` whose bottleneck 3x3
convolution is a split-attention convolution, with the stride moved to an average pool ("avd") before or after it.
Parameter names follow timm's ResNeSt so its checkpoints load unchanged.

>>> model = SPEC.build('resnest14d', num_classes=10)
>>> [f['module'] for f in model.feature_info]
['act1', 'layer1', 'layer2', 'layer3', 'layer4']
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import nn

from ..family import FamilySpec
from ..layers import DropPath
from ..layers.activations import ActLayer, get_act_layer
from ..layers.split_attn import SplitAttn
from .resnet import ResNet

OUTPUT_STRIDES = (8, 16, 32)
DEFAULT_CFG = dict(
    input_size=(3, 224, 224), pool_size=(7, 7), interpolation='bilinear', crop_pct=0.875, crop_mode='center',
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), first_conv='conv1.0', classifier='fc')


class ResNestBottleneck(nn.Module):
    """1x1 reduce, split-attention 3x3 (``radix`` splits, ``cardinality`` groups), 1x1 expand, residual add.

    With ``avd`` a strided block keeps its convolutions at stride 1 and downsamples with a 3x3 average pool,
    placed after ``conv1`` (``avd_first``) or after ``conv2``. ``radix=0`` uses a plain grouped 3x3 convolution.

    >>> ResNestBottleneck(64, 16, radix=2, avd=True).eval()(torch.ones(1, 64, 8, 8)).shape
    torch.Size([1, 64, 8, 8])
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None,
                 cardinality: int = 1, base_width: int = 64, reduce_first: int = 1, dilation: int = 1,
                 first_dilation: Optional[int] = None, act_layer: ActLayer = 'relu', drop_path: float = 0.0,
                 radix: int = 1, avd: bool = False, avd_first: bool = False) -> None:
        super().__init__()
        if reduce_first != 1:
            raise ValueError(f'ResNeSt blocks take reduce_first=1, got {reduce_first!r}')
        if not (isinstance(radix, int) and radix >= 0):
            raise ValueError(f'ResNeSt radix must be an int >= 0 (0 = plain grouped conv), got {radix!r}')
        act = get_act_layer(act_layer)
        group_width = int(planes * (base_width / 64.)) * cardinality
        outplanes = planes * self.expansion
        first_dilation = first_dilation or dilation
        avd_stride = 0
        if avd and stride > 1:
            avd_stride, stride = stride, 1
        self.radix = radix

        self.conv1 = nn.Conv2d(inplanes, group_width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(group_width)
        self.act1 = act(inplace=True)
        self.avd_first = nn.AvgPool2d(3, avd_stride, padding=1) if avd_stride > 0 and avd_first else None
        if radix >= 1:
            # Split attention carries its own norm and activation, so the block's slots stay empty.
            self.conv2: nn.Module = SplitAttn(group_width, group_width, 3, stride=stride, padding=first_dilation,
                                              dilation=first_dilation, groups=cardinality, radix=radix,
                                              act_layer=act_layer)
            self.bn2: nn.Module = nn.Identity()
            self.drop_block = nn.Identity()
            self.act2: nn.Module = nn.Identity()
        else:
            self.conv2 = nn.Conv2d(group_width, group_width, 3, stride=stride, padding=first_dilation,
                                   dilation=first_dilation, groups=cardinality, bias=False)
            self.bn2 = nn.BatchNorm2d(group_width)
            self.drop_block = nn.Identity()
            self.act2 = act(inplace=True)
        self.avd_last = nn.AvgPool2d(3, avd_stride, padding=1) if avd_stride > 0 and not avd_first else None
        self.conv3 = nn.Conv2d(group_width, outplanes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(outplanes)
        self.act3 = act(inplace=True)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path > 0 else None

    def zero_init_last(self) -> None:
        """Zero the last norm's scale so the block starts as an identity (training from scratch).

        >>> b = ResNestBottleneck(64, 16); b.zero_init_last(); int(b.bn3.weight.count_nonzero())
        0
        """
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        out = self.act1(self.bn1(self.conv1(x)))
        if self.avd_first is not None:
            out = self.avd_first(out)
        out = self.act2(self.drop_block(self.bn2(self.conv2(out))))
        if self.avd_last is not None:
            out = self.avd_last(out)
        out = self.bn3(self.conv3(out))
        if self.drop_path is not None:
            # Stochastic depth drops the residual branch (timm's ResNeSt applies it to the block input instead;
            # outputs agree whenever drop-path is inactive, i.e. in eval mode or at rate 0).
            out = self.drop_path(out)
        if self.downsample is not None:
            shortcut = self.downsample(x)
        out += shortcut  # in place, as timm: one activation-sized allocation less per block
        return self.act3(out)


def _row(layers: tuple, stem_width: int = 32, base_width: int = 64, cardinality: int = 1, radix: int = 2,
         avd_first: bool = False) -> Dict[str, Any]:
    # Every ResNeSt is a 'd'/'e' trunk (deep stem, average-pool shortcut) with stride moved to an avd pool.
    return dict(block=ResNestBottleneck, stem_type='deep', avg_down=True, layers=layers, stem_width=stem_width,
                base_width=base_width, cardinality=cardinality,
                block_args=dict(radix=radix, avd=True, avd_first=avd_first))


VARIANTS: Dict[str, Dict[str, Any]] = {
    'resnest14d': _row((1, 1, 1, 1)),
    'resnest26d': _row((2, 2, 2, 2)),
    'resnest50d': _row((3, 4, 6, 3)),
    'resnest101e': _row((3, 4, 23, 3), stem_width=64),
    'resnest200e': _row((3, 24, 36, 3), stem_width=64),
    'resnest269e': _row((3, 30, 48, 8), stem_width=64),
    'resnest50d_4s2x40d': _row((3, 4, 6, 3), base_width=40, cardinality=2, radix=4, avd_first=True),
    'resnest50d_1s4x24d': _row((3, 4, 6, 3), base_width=24, cardinality=4, radix=1, avd_first=True),
}

SPEC = FamilySpec(
    name='resnest', model=ResNet, variants=VARIANTS, default_cfg=DEFAULT_CFG,
    feature_cls=('list', 'dict', 'hook', 'fx', 'getter'), default_feature_cls='list', output_strides=OUTPUT_STRIDES,
    export=('torch.export', 'dynamic_hw', 'onnx', 'compile'))
