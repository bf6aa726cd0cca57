"""``forward_intermediates`` / ``prune_intermediate_layers`` / ``group_matcher`` of a plain staged network: a ``stem``,
an ``nn.Sequential`` of ``stages`` (one feature level each, ``feature_info`` in the same order) and a head that
``reset_classifier(0, '', reset_other=True)`` empties."""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

import torch
from torch import nn

from .intermediates import IndicesArg, feature_take_indices, prune_head_after


def stage_intermediates(stem: nn.Module, stages: nn.Sequential, x: torch.Tensor, indices: IndicesArg,
                        stop_early: bool) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """The last stage's output and the outputs of the stages selected by ``indices`` (timm's semantics); with
    ``stop_early`` the stages after the last selected one do not run.

    >>> x, maps = stage_intermediates(nn.Identity(), nn.Sequential(nn.ReLU(), nn.Tanh()), torch.ones(1), 1, False)
    >>> len(maps)
    1
    """
    take, last = feature_take_indices(len(stages), indices)
    x = stem(x)
    intermediates = []
    for i, stage in enumerate(stages[:last + 1] if stop_early else stages):
        x = stage(x)
        if i in take:
            intermediates.append(x)
    return x, intermediates


def prune_stages(model: nn.Module, indices: IndicesArg, prune_head: bool) -> List[int]:
    """Drop ``model``'s stages after the last of ``indices``; when that cuts the network (or ``prune_head``) the
    head goes too, as it was sized for the last stage. Returns the kept indices.

    >>> class Net(nn.Module):
    ...     def reset_classifier(self, num_classes, global_pool=None, reset_other=False): self.head = nn.Identity()
    >>> net = Net(); net.stages = nn.Sequential(nn.Identity(), nn.Identity())
    >>> net.feature_info = [dict(num_chs=4), dict(num_chs=8)]
    >>> prune_stages(net, (0,), prune_head=False), net.num_features
    ([0], 4)
    """
    take, last = feature_take_indices(len(model.stages), indices)
    num_stages = len(model.stages)
    model.stages = model.stages[:last + 1]
    prune_head_after(model, last, num_stages, prune_head, trim_feature_info=True, reset_other=True)
    return take


def stage_group_matcher(coarse: bool) -> Dict[str, Any]:
    """Parameter groups of a ``stem`` + ``stages.<i>.downsample`` / ``stages.<i>.blocks.<j>`` network: the stem,
    then per stage (``coarse``) or per block, each stage's downsampling going with its first block.

    >>> stage_group_matcher(True)
    {'stem': '^stem', 'blocks': '^stages\\\\.(\\\\d+)'}
    """
    return dict(
        stem=r'^stem',
        blocks=r'^stages\.(\d+)' if coarse else [
            (r'^stages\.(\d+)\.downsample', (0,)),
            (r'^stages\.(\d+)\.blocks\.(\d+)', None),
        ],
    )
