"""DenseNet (Huang et al., 'Densely Connected Convolutional Networks'), with timm's parameter names.

Every layer of a dense block sees the concatenation of all earlier outputs of the block; transitions halve the
channels and the resolution. For ``output_stride`` 16 or 8 the last one or two transitions pool with stride 1 and
the dense blocks after them use dilated 3x3 convolutions, so each map of the dilated network, sampled every
``32 / output_stride`` pixels, is the map of the stride-32 network (the same weights serve both).
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from ..checks import check_choice, check_int
from ..family import FamilySpec
from ..layers import BatchNormAct2d, create_classifier
from ..layers.blur_pool import BlurPool2d
from ..layers.head_api import HeadApi
from ..layers.pool_classifier import reset_pool_classifier
from ..layers.output_stride import stride_or_dilate
from ..layers.stage_intermediates import StagedFeatures, tap_positions
from ..layers.weight_init import kaiming_normal_

__all__ = ['DenseNet', 'DenseLayer', 'DenseBlock', 'DenseTransition', 'SPEC', 'checkpoint_filter_fn', 'VARIANTS']

OUTPUT_STRIDES = (8, 16, 32)
DEFAULT_CFG = dict(
    input_size=(3, 224, 224), pool_size=(7, 7), interpolation='bicubic', crop_pct=0.875, crop_mode='center',
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), first_conv='features.conv0', classifier='classifier')

VARIANTS: Dict[str, Dict[str, Any]] = {
    'densenet121': dict(growth_rate=32, block_config=(6, 12, 24, 16)),
    'densenet161': dict(growth_rate=48, block_config=(6, 12, 36, 24)),
    'densenet169': dict(growth_rate=32, block_config=(6, 12, 32, 32)),
    'densenet201': dict(growth_rate=32, block_config=(6, 12, 48, 32)),
    'densenetblur121d': dict(growth_rate=32, block_config=(6, 12, 24, 16), stem_type='deep', aa_layer='blur'),
    'densenet264d': dict(growth_rate=48, block_config=(6, 12, 64, 48), stem_type='deep'),
}

STEM_TYPES = ('', 'deep', 'deep_tiered', 'deep_tiered_narrow')
AA_LAYERS = (None, 'blur')
# timm's marker for "belongs to the previous group" in group_matcher rules
_MATCH_PREV_GROUP = (99999,)
# early torchvision checkpoints name dense-layer modules 'norm.1', 'conv.2', ... instead of 'norm1', 'conv2'
_LEGACY_LAYER_KEY = re.compile(
    r'^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$')


class DenseLayer(nn.Module):
    """One dense layer: BN-ReLU-1x1 conv (bottleneck) then BN-ReLU-3x3 conv, giving ``growth_rate`` new maps.

    It takes the list of the block's maps so far and concatenates them inside the bottleneck, so that with
    gradient checkpointing only the individual maps, not each layer's wide concatenation, are kept for backward.

    >>> DenseLayer(64, growth_rate=32, bn_size=4)([torch.ones(1, 64, 8, 8)]).shape
    torch.Size([1, 32, 8, 8])
    """

    def __init__(self, num_input_features: int, growth_rate: int, bn_size: int, act_layer: str = 'relu',
                 drop_rate: float = 0., dilation: int = 1, grad_checkpointing: bool = False) -> None:
        super().__init__()
        mid = bn_size * growth_rate
        self.norm1 = BatchNormAct2d(num_input_features, act_layer=act_layer)
        self.conv1 = nn.Conv2d(num_input_features, mid, kernel_size=1, bias=False)
        self.norm2 = BatchNormAct2d(mid, act_layer=act_layer)
        self.conv2 = nn.Conv2d(mid, growth_rate, kernel_size=3, padding=dilation, dilation=dilation, bias=False)
        self.drop_rate = float(drop_rate)
        self.grad_checkpointing = grad_checkpointing

    def _bottleneck(self, *features: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.norm1(torch.cat(features, 1)))

    def forward(self, features: List[torch.Tensor]) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            x = checkpoint(self._bottleneck, *features, use_reentrant=False)
        else:
            x = self._bottleneck(*features)
        x = self.conv2(self.norm2(x))
        if self.drop_rate > 0.:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x


class DenseBlock(nn.Module):
    """``num_layers`` dense layers (``denselayer1``...); returns the input and every new map, concatenated.

    >>> DenseBlock(2, 64, bn_size=4, growth_rate=32)(torch.ones(1, 64, 8, 8)).shape
    torch.Size([1, 128, 8, 8])
    """

    def __init__(self, num_layers: int, num_input_features: int, bn_size: int, growth_rate: int,
                 act_layer: str = 'relu', drop_rate: float = 0., dilation: int = 1,
                 grad_checkpointing: bool = False) -> None:
        super().__init__()
        for i in range(num_layers):
            self.add_module(f'denselayer{i + 1}', DenseLayer(
                num_input_features + i * growth_rate, growth_rate=growth_rate, bn_size=bn_size, act_layer=act_layer,
                drop_rate=drop_rate, dilation=dilation, grad_checkpointing=grad_checkpointing))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.children():
            features.append(layer(features))
        return torch.cat(features, 1)


class DenseAvgPool2d(nn.Module):
    """The stride-1 form of a 2x2 / stride-2 average pool, for dilated networks.

    Output pixel ``(i, j)`` averages the input at ``(i, j)``, ``(i, j + d)``, ``(i + d, j)`` and ``(i + d, j + d)``
    (``d = dilation``), so every ``2d``-th output is exactly what the strided pool gives on a map that was
    itself dilated by ``d``. The bottom/right edge is padded by repeating the border, keeping the size.

    >>> DenseAvgPool2d(2)(torch.ones(1, 4, 8, 8)).shape
    torch.Size([1, 4, 8, 8])
    """

    def __init__(self, dilation: int = 1) -> None:
        super().__init__()
        self.dilation = dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.dilation
        x = F.pad(x, (0, d, 0, d), mode='replicate')
        # summed in the order avg_pool2d uses, which makes the sampled outputs bit-identical to it
        return (x[:, :, :-d, :-d] + x[:, :, :-d, d:] + x[:, :, d:, :-d] + x[:, :, d:, d:]) * 0.25

    def extra_repr(self) -> str:
        return f'dilation={self.dilation}'


class DenseTransition(nn.Sequential):
    """BN-ReLU, 1x1 conv to ``num_output_features``, then a pool that halves the resolution (or, at stride 1,
    its dilated stride-1 form).

    >>> DenseTransition(64, 32)(torch.ones(1, 64, 8, 8)).shape
    torch.Size([1, 32, 4, 4])
    """

    def __init__(self, num_input_features: int, num_output_features: int, act_layer: str = 'relu',
                 aa_layer: Optional[str] = None, stride: int = 2, dilation: int = 1) -> None:
        super().__init__()
        self.add_module('norm', BatchNormAct2d(num_input_features, act_layer=act_layer))
        self.add_module('conv', nn.Conv2d(num_input_features, num_output_features, kernel_size=1, bias=False))
        if aa_layer == 'blur':
            pool: nn.Module = BlurPool2d(num_output_features, stride=stride, dilation=dilation)
        elif stride == 2:
            pool = nn.AvgPool2d(kernel_size=2, stride=2)
        else:
            pool = DenseAvgPool2d(dilation)
        self.add_module('pool', pool)


class DenseNet(StagedFeatures, HeadApi, nn.Module):
    """DenseNet-BC: stem, dense blocks joined by transitions, final BN-ReLU (``features.norm5``), classifier.

    >>> m = DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), num_classes=10)
    >>> m(torch.ones(1, 3, 64, 64)).shape
    torch.Size([1, 10])
    """

    classifier_name = 'classifier'
    # every level sits in ``features``: StagedFeatures sees one long stem and no stages
    stem_name, stages_name, stem_stops_early = 'features', '', True

    def __init__(self, growth_rate: int = 32, block_config: Sequence[int] = (6, 12, 24, 16), num_classes: int = 1000,
                 in_chans: int = 3, global_pool: str = 'avg', bn_size: int = 4, stem_type: str = '',
                 act_layer: str = 'relu', aa_layer: Optional[str] = None, aa_stem_only: bool = True,
                 output_stride: int = 32, drop_rate: float = 0., proj_drop_rate: float = 0.,
                 drop_path_rate: Optional[float] = None, memory_efficient: bool = False) -> None:
        super().__init__()
        growth_rate = check_int('growth_rate', growth_rate, 1)
        bn_size = check_int('bn_size', bn_size, 1)
        in_chans = check_int('in_chans', in_chans, 1)
        num_classes = check_int('num_classes', num_classes, 0)
        if isinstance(block_config, (str, bytes)) or not isinstance(block_config, Sequence) or not block_config:
            raise ValueError(f'block_config must be a non-empty sequence of layer counts, got {block_config!r}')
        for n in block_config:
            check_int('each block_config entry', n, 1)
        check_choice('stem_type', stem_type, STEM_TYPES)
        check_choice('aa_layer', aa_layer, AA_LAYERS)
        check_choice('output_stride', output_stride, OUTPUT_STRIDES)
        if drop_path_rate:
            raise ValueError(f'drop_path_rate={drop_path_rate!r}: DenseNet has no residual branches to drop; '
                             f'valid: None or 0 (use drop_rate / proj_drop_rate for dropout)')
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = memory_efficient
        global_pool = 'avg' if global_pool is None else global_pool

        num_init_features = growth_rate * 2
        if aa_layer is None:
            stem_pool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            stem_pool = nn.Sequential(nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
                                      BlurPool2d(num_init_features, stride=2))
        deep_stem = stem_type.startswith('deep')
        if deep_stem:
            stem_chs_1 = stem_chs_2 = growth_rate
            if 'tiered' in stem_type:
                stem_chs_1 = 3 * (growth_rate // 4)
                stem_chs_2 = num_init_features if 'narrow' in stem_type else 6 * (growth_rate // 4)
            stem = [
                ('conv0', nn.Conv2d(in_chans, stem_chs_1, 3, stride=2, padding=1, bias=False)),
                ('norm0', BatchNormAct2d(stem_chs_1, act_layer=act_layer)),
                ('conv1', nn.Conv2d(stem_chs_1, stem_chs_2, 3, stride=1, padding=1, bias=False)),
                ('norm1', BatchNormAct2d(stem_chs_2, act_layer=act_layer)),
                ('conv2', nn.Conv2d(stem_chs_2, num_init_features, 3, stride=1, padding=1, bias=False)),
                ('norm2', BatchNormAct2d(num_init_features, act_layer=act_layer)),
            ]
        else:
            stem = [
                ('conv0', nn.Conv2d(in_chans, num_init_features, kernel_size=7, stride=2, padding=3, bias=False)),
                ('norm0', BatchNormAct2d(num_init_features, act_layer=act_layer)),
            ]
        self.features = nn.Sequential(OrderedDict(stem + [('pool0', stem_pool)]))
        self.feature_info = [dict(num_chs=num_init_features, reduction=2, module=f'features.{stem[-1][0]}')]

        stride, dilation = 4, 1
        num_features = num_init_features
        for i, num_layers in enumerate(block_config):
            name = f'denseblock{i + 1}'
            self.features.add_module(name, DenseBlock(
                num_layers, num_features, bn_size=bn_size, growth_rate=growth_rate, act_layer=act_layer,
                drop_rate=proj_drop_rate, dilation=dilation, grad_checkpointing=memory_efficient))
            num_features += num_layers * growth_rate
            if i == len(block_config) - 1:
                break
            self.feature_info.append(dict(num_chs=num_features, reduction=stride, module=f'features.{name}'))
            pool_stride, next_stride, next_dilation = stride_or_dilate(stride, dilation, output_stride)
            self.features.add_module(f'transition{i + 1}', DenseTransition(
                num_features, num_features // 2, act_layer=act_layer, aa_layer=None if aa_stem_only else aa_layer,
                stride=pool_stride, dilation=dilation))
            num_features //= 2
            stride, dilation = next_stride, next_dilation
        self.features.add_module('norm5', BatchNormAct2d(num_features, act_layer=act_layer))
        self.feature_info.append(dict(num_chs=num_features, reduction=stride, module='features.norm5'))
        self.num_features = num_features

        self.global_pool, self.classifier = create_classifier(num_features, num_classes, pool_type=global_pool)
        self.head_hidden_size = num_features * self.global_pool.feat_mult()
        self.head_drop = nn.Dropout(drop_rate)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def _stem_taps(self) -> Tuple[int, ...]:
        return tap_positions(self.features, self.feature_info)  # follows feature_info as pruning trims it

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Regex rules that group parameter names into stem and blocks (for layer-wise learning-rate decay).

        >>> sorted(SPEC.build('densenet121').group_matcher())
        ['blocks', 'stem']
        """
        blocks: Union[str, List[Tuple[str, Any]]]
        if coarse:
            blocks = r'^features\.(?:denseblock|transition)(\d+)'
        else:
            blocks = [(r'^features\.denseblock(\d+)\.denselayer(\d+)', None),
                      (r'^features\.transition(\d+)', _MATCH_PREV_GROUP)]
        return dict(stem=r'^features\.(?:conv|norm|pool)[012]', blocks=blocks)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each dense layer's bottleneck in backward instead of keeping the concatenations.

        >>> m = SPEC.build('densenet121'); m.set_grad_checkpointing(); m.features.denseblock1.denselayer1.grad_checkpointing
        True
        """
        self.grad_checkpointing = enable
        for m in self.features.modules():
            if isinstance(m, DenseLayer):
                m.grad_checkpointing = enable

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier (``num_classes=0`` removes it); ``global_pool=''`` also removes the pooling.

        >>> m = SPEC.build('densenet121'); m.reset_classifier(0, ''); m(torch.ones(1, 3, 64, 64)).shape
        torch.Size([1, 1024, 2, 2])
        """
        reset_pool_classifier(self, check_int('num_classes', num_classes, 0), global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The unpooled map after the final norm, ``(N, num_features, H / r, W / r)``.

        >>> SPEC.build('densenet121').forward_features(torch.ones(1, 3, 64, 64)).shape
        torch.Size([1, 1024, 2, 2])
        """
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, dropout and classify a ``forward_features`` map; ``pre_logits=True`` stops before the classifier.

        >>> m = SPEC.build('densenet121'); m.forward_head(torch.ones(1, 1024, 2, 2), pre_logits=True).shape
        torch.Size([1, 1024])
        """
        x = self.global_pool(x)
        x = self.head_drop(x)
        return x if pre_logits else self.classifier(x)


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: Optional[nn.Module] = None
                         ) -> Dict[str, torch.Tensor]:
    """Rename legacy torchvision dense-layer keys (``denselayer1.norm.1.weight`` -> ``denselayer1.norm1.weight``).

    Current torchvision and timm checkpoints pass through unchanged.

    >>> sorted(checkpoint_filter_fn({'features.denseblock1.denselayer1.conv.2.weight': torch.ones(1)}))
    ['features.denseblock1.denselayer1.conv2.weight']
    """
    out = {}
    for key, value in state_dict.items():
        match = _LEGACY_LAYER_KEY.match(key)
        out[match.group(1) + match.group(2) if match else key] = value
    return out


SPEC = FamilySpec(
    name='densenet', model=DenseNet, variants=VARIANTS, default_cfg=DEFAULT_CFG,
    feature_cls=('list', 'dict', 'hook', 'fx', 'getter'), default_feature_cls='list', output_strides=OUTPUT_STRIDES,
    export=('torch.export', 'dynamic_hw', 'onnx', 'compile'), checkpoint_filter=checkpoint_filter_fn)
