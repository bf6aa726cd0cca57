"""HRNet ("Deep High-Resolution Representation Learning for Visual Recognition", Wang et al., 2019), the classification
networks of HRNet-Image-Classification and the PaddleClas SSLD-distilled ports. Parameter names follow timm's
HighResolutionNet so its checkpoints load unchanged.

A stride-4 trunk (two strided 3x3 convolutions and a bottleneck layer) splits into parallel branches at strides 4, 8,
16 and 32 that are kept all the way and exchange information after every module (fusion by upsampling and strided
convolutions). The classifier widens each branch with one bottleneck ("incre" modules), sums them from fine to coarse
through strided convolutions, and pools a 2048-channel map.

Feature levels are the stem's stride-2 map and the four branches: by default the widened maps (128 / 256 / 512 / 1024
channels), with ``feature_location=''`` the raw branch maps (``width`` x 1 / 2 / 4 / 8 channels) that detection and
segmentation heads take. The branches are computed together by the last fusion, so they are served by the getter
wrapper (``forward_intermediates``); every branch keeps its resolution, so the output stride is 32 only.

>>> model = SPEC.build('hrnet_w18_small_v2')
>>> [f['num_chs'] for f in model.feature_info], [f['num_chs'] for f in SPEC.build(
...     'hrnet_w18_small_v2', feature_location='').feature_info]
([64, 128, 256, 512, 1024], [64, 18, 36, 72, 144])
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..checks import check_choice, check_int, check_int_tuple
from ..family import FamilySpec
from ..layers import create_classifier
from ..layers.head_api import HeadApi
from ..layers.pool_classifier import reset_pool_classifier
from ..layers.intermediates import IndicesArg, feature_take_indices
from ..layers.weight_init import kaiming_convs_
from .resnet import BasicBlock, Bottleneck

FEATURE_LOCATIONS = ('incre', '')
DEFAULT_CFG = dict(
    input_size=(3, 224, 224), pool_size=(7, 7), interpolation='bilinear', crop_pct=0.875, crop_mode='center',
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), first_conv='conv1', classifier='classifier',
    num_classes=1000)
# the widths the classifier's incre modules give each branch (times the bottleneck's expansion of 4)
HEAD_PLANES = (32, 64, 128, 256)
HEAD_FEATURES = 2048

Block = Type[nn.Module]


def conv_bn(in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, relu: bool = True,
            bias: bool = False) -> nn.Sequential:
    """Convolution, batch norm and (optionally) ReLU as ``0``, ``1``, ``2`` of a Sequential (HRNet's naming)."""
    layers: List[nn.Module] = [nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, bias=bias),
                               nn.BatchNorm2d(out_chs)]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def residual_layer(block: Block, in_chs: int, planes: int, depth: int) -> nn.Sequential:
    """``depth`` ResNet blocks of ``planes``; the first projects its shortcut when the width changes.

    >>> residual_layer(Bottleneck, 64, 32, 2)(torch.ones(1, 64, 8, 8)).shape
    torch.Size([1, 128, 8, 8])
    """
    out_chs = planes * block.expansion
    downsample = conv_bn(in_chs, out_chs, 1, relu=False) if in_chs != out_chs else None
    blocks = [block(in_chs, planes, 1, downsample)]
    blocks += [block(out_chs, planes) for _ in range(1, depth)]
    return nn.Sequential(*blocks)


def fuse_path(in_chs: int, out_chs: int, source: int, target: int) -> nn.Module:
    """What carries branch ``source`` to branch ``target``'s resolution and width: a 1x1 convolution and nearest
    upsampling from a coarser branch, nothing for the branch itself, strided 3x3 convolutions from a finer one (the
    width changes at the last; ReLU between them)."""
    if source > target:
        return nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, bias=False), nn.BatchNorm2d(out_chs),
                             nn.Upsample(scale_factor=2 ** (source - target), mode='nearest'))
    if source == target:
        return nn.Identity()
    steps = target - source
    return nn.Sequential(*[conv_bn(in_chs, out_chs if k == steps - 1 else in_chs, 3, stride=2, relu=k < steps - 1)
                           for k in range(steps)])


class HighResolutionModule(nn.Module):
    """Parallel ``branches`` of basic blocks, then ``fuse_layers``: each output branch sums every branch brought to
    its resolution and width, and is activated.

    >>> module = HighResolutionModule((8, 16), depth=1)
    >>> [t.shape[1:] for t in module([torch.ones(1, 8, 8, 8), torch.ones(1, 16, 4, 4)])]
    [torch.Size([8, 8, 8]), torch.Size([16, 4, 4])]
    """

    def __init__(self, widths: Sequence[int], depth: int, block: Block = BasicBlock) -> None:
        super().__init__()
        self.num_branches = len(widths)
        self.branches = nn.ModuleList(residual_layer(block, w, w // block.expansion, depth) for w in widths)
        self.fuse_layers = nn.ModuleList(
            nn.ModuleList(fuse_path(widths[j], widths[i], j, i) for j in range(len(widths)))
            for i in range(len(widths)))
        self.fuse_act = nn.ReLU()

    def forward(self, x: List[torch.Tensor]) -> List[torch.Tensor]:
        x = [branch(t) for branch, t in zip(self.branches, x)]
        fused = []
        for paths in self.fuse_layers:
            y = paths[0](x[0])
            for j in range(1, self.num_branches):
                y = y + paths[j](x[j])
            fused.append(self.fuse_act(y))
        return fused


class HRNetStage(nn.Sequential):
    """High-resolution modules run one after the other on a list of branch maps."""

    def forward(self, x: List[torch.Tensor]) -> List[torch.Tensor]:
        for module in self:
            x = module(x)
        return x


def transition(prev_widths: Sequence[int], widths: Sequence[int]) -> nn.ModuleList:
    """Into a stage with one more branch: existing branches pass through, a 3x3 convolution where the width changes
    (only after the first stage, whose single branch feeds every new one); a new branch is a strided 3x3 convolution
    of the coarsest one."""
    layers: List[nn.Module] = []
    for i, width in enumerate(widths):
        if i < len(prev_widths):
            layers.append(conv_bn(prev_widths[i], width, 3) if prev_widths[i] != width else nn.Identity())
        else:
            layers.append(nn.Sequential(*[conv_bn(prev_widths[-1], width if k == i - len(prev_widths) else
                                                  prev_widths[-1], 3, stride=2)
                                          for k in range(i + 1 - len(prev_widths))]))
    return nn.ModuleList(layers)


class HighResolutionNet(HeadApi, nn.Module):
    """Stem (``conv1``/``bn1``/``act1``, ``conv2``/``bn2``/``act2``), ``layer1`` (bottlenecks), ``stage2..4`` with 2, 3
    and 4 branches (``num_modules`` modules of ``num_blocks`` basic blocks per branch, branch widths ``width`` x 1, 2,
    4, 8), the incre/downsample/final classification head and a pooled linear ``classifier``.

    ``feature_location``: 'incre' (the widened branch maps of the head) or '' (the raw branch maps) for the feature
    levels. ``head_conv_bias``: the head's convolutions have biases (not in the SSLD ports).

    >>> HighResolutionNet(8, stage1_blocks=1, stage1_chs=16, num_modules=(1, 1, 1), num_blocks=(1, 1, 1),
    ...                   num_classes=5)(torch.ones(1, 3, 64, 64)).shape
    torch.Size([1, 5])
    """

    classifier_name = 'classifier'

    def __init__(self, width: int, stage1_blocks: int = 4, stage1_chs: int = 64,
                 num_modules: Sequence[int] = (1, 4, 3), num_blocks: Sequence[int] = (4, 4, 4), stem_width: int = 64,
                 head_conv_bias: bool = True, feature_location: str = 'incre', num_classes: int = 1000,
                 in_chans: int = 3, global_pool: str = 'avg', drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        if drop_path_rate:
            raise ValueError(f'drop_path_rate={drop_path_rate} is not supported: HRNet has no stochastic depth; '
                             f'valid: 0.0')
        check_int('width', width, 1)
        check_int('stage1_blocks', stage1_blocks, 1)
        check_int('stage1_chs', stage1_chs, 1)
        check_int('stem_width', stem_width, 1)
        num_modules = check_int_tuple('num_modules', num_modules, length=3)
        num_blocks = check_int_tuple('num_blocks', num_blocks, length=3)
        self.feature_location = check_choice('feature_location', feature_location, FEATURE_LOCATIONS)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.grad_checkpointing = False

        self.conv1 = nn.Conv2d(in_chans, stem_width, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.act1 = nn.ReLU(inplace=True)
        # the stride-2 level, which timm names 'stem': a named tap, so that hooks and freeze(levels=1) find it
        self.stem = nn.Identity()
        self.conv2 = nn.Conv2d(stem_width, 64, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.act2 = nn.ReLU(inplace=True)
        self.layer1 = residual_layer(Bottleneck, 64, stage1_chs, stage1_blocks)

        widths = [stage1_chs * Bottleneck.expansion]
        for stage, (modules, depth) in enumerate(zip(num_modules, num_blocks), start=2):
            new_widths = [width * 2 ** i for i in range(stage)]
            self.add_module(f'transition{stage - 1}', transition(widths, new_widths))
            self.add_module(f'stage{stage}', HRNetStage(*[HighResolutionModule(new_widths, depth)
                                                          for _ in range(modules)]))
            widths = new_widths
        self.branch_widths = tuple(widths)
        self.num_branches = len(widths)

        self.incre_modules: Optional[nn.ModuleList] = nn.ModuleList(
            residual_layer(Bottleneck, w, planes, 1) for w, planes in zip(widths, HEAD_PLANES))
        head_widths = [planes * Bottleneck.expansion for planes in HEAD_PLANES]
        self.downsamp_modules: Optional[nn.ModuleList] = nn.ModuleList(
            conv_bn(head_widths[i], head_widths[i + 1], 3, stride=2, bias=head_conv_bias)
            for i in range(len(head_widths) - 1))
        self.num_features = HEAD_FEATURES
        self.final_layer: Optional[nn.Module] = conv_bn(head_widths[-1], HEAD_FEATURES, 1, bias=head_conv_bias)
        self.global_pool, self.head_drop, self.classifier = create_classifier(
            self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()

        level_widths = head_widths if feature_location == 'incre' else widths
        self.feature_info: List[Dict[str, Any]] = [dict(num_chs=stem_width, reduction=2, module='stem')] + [
            dict(num_chs=w, reduction=2 ** (i + 2), module=f'stage{i + 1}') for i, w in enumerate(level_widths)]
        self._init_weights()

    def _init_weights(self) -> None:
        kaiming_convs_(self)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter-group regexes: the stem, then layers and stages (``coarse``) or their blocks and modules, the
        transitions last.

        >>> SPEC.build('hrnet_w18_small').group_matcher(coarse=True)['blocks']
        '^(?:layer|stage|transition)(\\\\d+)'
        """
        return dict(stem=r'^conv[12]|bn[12]', blocks=r'^(?:layer|stage|transition)(\d+)' if coarse else [
            (r'^layer(\d+)\.(\d+)', None), (r'^stage(\d+)\.(\d+)', None), (r'^transition(\d+)', (99999,))])

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier (``num_classes=0`` removes it); ``global_pool=None`` keeps the pooling.

        A model pruned to its branch maps (``prune_intermediate_layers``) has no map to classify: it takes
        ``num_classes=0`` only.

        >>> m = SPEC.build('hrnet_w18_small'); m.reset_classifier(0, ''); m(torch.ones(1, 3, 64, 64)).shape
        torch.Size([1, 2048, 2, 2])
        """
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f'num_classes must be an int >= 0 (0 removes the classifier), got {num_classes!r}')
        returns_branches = self.final_layer is None and not isinstance(self.layer1, nn.Identity)
        if returns_branches and (num_classes > 0 or global_pool):
            raise ValueError(f'reset_classifier({num_classes}, {global_pool!r}): this HRNet was pruned to its '
                             f'branch maps (a list), which no classifier can take; valid: num_classes=0 without '
                             f'pooling')
        if global_pool is None:
            global_pool = getattr(self.global_pool, 'pool_type', '')
        reset_pool_classifier(self, num_classes, global_pool)

    def _run(self, module: nn.Module, x: Any) -> Any:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(module, x, use_reentrant=False)
        return module(x)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """The stride-2 map (the first feature level)."""
        return self.stem(self.act1(self.bn1(self.conv1(x))))

    def stages(self, x: torch.Tensor) -> List[torch.Tensor]:
        """The branch maps at strides 4, 8, 16 and 32 from the stride-2 map."""
        x = self.act2(self.bn2(self.conv2(x)))
        x = self._run(self.layer1, x)
        branches = [t(x) for t in self.transition1]
        for stage in (2, 3, 4):
            if stage > 2:
                previous = branches
                branches = [previous[i] if isinstance(t, nn.Identity) else t(previous[-1])
                            for i, t in enumerate(getattr(self, f'transition{stage - 1}'))]
            for module in getattr(self, f'stage{stage}'):
                branches = self._run(module, branches)
        return branches

    def _aggregate(self, widened: List[torch.Tensor]) -> torch.Tensor:
        """The classification head's map: the widened branches summed from fine to coarse, then widened to 2048."""
        y = widened[0]
        for down, branch in zip(self.downsamp_modules, widened[1:]):
            y = branch + down(y)
        return self.final_layer(y)

    def forward_features(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        """The head's 2048-channel stride-32 map; once pruned, the branch maps (a list) or the stem's map.

        >>> SPEC.build('hrnet_w18_small').forward_features(torch.ones(1, 3, 64, 64)).shape
        torch.Size([1, 2048, 2, 2])
        """
        x = self.forward_stem(x)
        if isinstance(self.layer1, nn.Identity):
            return x  # pruned to the stem
        branches = self.stages(x)
        if self.final_layer is None:
            return branches
        return self._aggregate([incre(b) for incre, b in zip(self.incre_modules, branches)])

    def forward_intermediates(self, x: torch.Tensor, indices: IndicesArg = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = 'NCHW', intermediates_only: bool = False,
                              ) -> Union[List[torch.Tensor], Tuple[Any, List[torch.Tensor]]]:
        """The stem's stride-2 map and the four branch maps (widened by the incre modules, or raw with
        ``feature_location=''``), selected by ``indices`` (timm's semantics), and what ``forward_features`` returns
        (the branch maps when the head was pruned or skipped by ``stop_early``). There is no norm to apply.

        >>> m = SPEC.build('hrnet_w18_small'); [t.shape[1] for t in m.forward_intermediates(
        ...     torch.ones(1, 3, 64, 64), indices=(0, 4), intermediates_only=True)]
        [64, 1024]
        """
        check_choice('output_fmt', output_fmt, ('NCHW',))
        take, last = feature_take_indices(self.num_branches + 1, indices)
        intermediates = []
        x = self.forward_stem(x)
        if 0 in take:
            intermediates.append(x)
        if last == 0 and (stop_early or isinstance(self.layer1, nn.Identity)):
            return intermediates if intermediates_only else (x, intermediates)
        branches = self.stages(x)
        if self.feature_location == '':
            intermediates.extend(b for i, b in enumerate(branches, start=1) if i in take)
            if intermediates_only:
                return intermediates
            if self.final_layer is None or stop_early:
                return branches, intermediates
            return self._aggregate([incre(b) for incre, b in zip(self.incre_modules, branches)]), intermediates
        incre_modules = self.incre_modules[:last] if stop_early else self.incre_modules
        widened = []
        for i, incre in enumerate(incre_modules, start=1):
            widened.append(incre(branches[i - 1]))
            if i in take:
                intermediates.append(widened[-1])
        if intermediates_only:
            return intermediates
        if self.final_layer is not None and len(widened) == self.num_branches:
            return self._aggregate(widened), intermediates
        return branches, intermediates

    def prune_intermediate_layers(self, indices: IndicesArg = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop what the levels up to the last index do not need: the trunk when only the stem is taken, the incre
        modules after the last taken branch (all of them for raw branch levels), and the classification head unless
        every branch is taken and ``prune_head`` is False. Returns the kept indices.

        >>> m = SPEC.build('hrnet_w18_small'); m.prune_intermediate_layers((0, 2)); len(m.incre_modules)
        [0, 2]
        2
        """
        take, last = feature_take_indices(self.num_branches + 1, indices)
        if last == 0:
            # every branch comes out of the final fusion together: the trunk goes as a whole or not at all
            for name in ('conv2', 'bn2', 'act2', 'layer1', 'transition1', 'stage2', 'transition2', 'stage3',
                         'transition3', 'stage4'):
                setattr(self, name, nn.Identity())
            self.num_features = self.head_hidden_size = self.feature_info[0]['num_chs']
        drop_head = prune_head or last < self.num_branches
        if self.incre_modules is not None:
            if self.feature_location == '' and drop_head:
                self.incre_modules = None
            else:
                self.incre_modules = self.incre_modules[:last]
        if drop_head:
            self.downsamp_modules = None
            self.final_layer = None
            self.num_classes = 0
            self.global_pool = nn.Identity()
            self.head_drop = nn.Identity()
            self.classifier = nn.Identity()
        return take

    def forward_head(self, x: Union[torch.Tensor, List[torch.Tensor]], pre_logits: bool = False
                     ) -> Union[torch.Tensor, List[torch.Tensor]]:
        """Pool, dropout and (unless ``pre_logits``) the classifier; the branch maps of a pruned model pass through.

        >>> SPEC.build('hrnet_w18_small').forward_head(torch.ones(1, 2048, 2, 2), pre_logits=True).shape
        torch.Size([1, 2048])
        """
        if isinstance(x, list):
            return x
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.classifier(x)


# ---- the table -------------------------------------------------------------------------------------------------------
# stage1: bottleneck blocks and planes of layer1; num_modules / num_blocks: high-resolution modules of stages 2-4 and
# basic blocks per branch in each; width: the stride-4 branch's width (the others double).
_STANDARD = dict(stage1_blocks=4, stage1_chs=64, num_modules=(1, 4, 3), num_blocks=(4, 4, 4))

VARIANTS: Dict[str, Dict[str, Any]] = {
    'hrnet_w18_small': dict(width=16, stage1_blocks=1, stage1_chs=32, num_modules=(1, 1, 1), num_blocks=(2, 2, 2)),
    'hrnet_w18_small_v2': dict(width=18, stage1_blocks=2, stage1_chs=64, num_modules=(1, 3, 2), num_blocks=(2, 2, 2)),
    **{f'hrnet_w{w}': dict(width=w, **_STANDARD) for w in (18, 30, 32, 40, 44, 48, 64)},
    'hrnet_w18_ssld': dict(width=18, **_STANDARD, head_conv_bias=False),
    'hrnet_w48_ssld': dict(width=48, **_STANDARD, head_conv_bias=False),
}


SPEC = FamilySpec(
    name='hrnet', model=HighResolutionNet, variants=VARIANTS, default_cfg=DEFAULT_CFG,
    feature_cls=('getter',), default_feature_cls='getter', output_strides=(32,),
    export=('torch.export', 'dynamic_hw', 'onnx', 'compile'),
    size_args=('stage1_blocks', 'stage1_chs', 'num_modules', 'num_blocks'),
    # the fusion upsamples coarse branches by exact powers of two: the sides must divide by the coarsest stride
    input_multiple=32, min_input_size=32)
