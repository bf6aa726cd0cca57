"""``forward_intermediates`` / ``prune_intermediate_layers`` of a staged CNN, written once: a stem (whose inner
layers may hold early feature levels), a sequence of stages (each a level, or several stages to one level) and
an optional end (a final conv, norm or activation) after the last stage. A family mixes in
:class:`StagedFeatures` and describes itself with class attributes and a few small hooks."""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple, Union

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..checks import check_choice
from .intermediates import IndicesArg, feature_take_indices, prune_head_after


def run_tapped(layers: nn.Sequential, x: torch.Tensor, taps: Sequence[int], stop: int = -1
               ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """Run ``layers`` in order; returns the last output and the outputs of the children at positions ``taps``.
    With ``stop`` >= 0 the children after position ``stop`` do not run.

    >>> y, maps = run_tapped(nn.Sequential(nn.ReLU(), nn.Tanh()), -torch.ones(1), (0,)); maps, y
    ([tensor([0.])], tensor([0.]))
    """
    maps = []
    for i, layer in enumerate(layers):
        if i > stop >= 0:
            break
        x = layer(x)
        if i in taps:
            maps.append(x)
    return x, maps


def tap_positions(parent: nn.Module, levels: Sequence[Dict[str, Any]]) -> Tuple[int, ...]:
    """Positions among ``parent``'s children of the feature levels (``feature_info`` entries) whose module is one
    of them (``'<parent>.<child>'``); levels elsewhere are skipped.

    >>> stem = nn.Sequential(); stem.add_module('conv', nn.Identity()); stem.add_module('pool', nn.Identity())
    >>> tap_positions(stem, [dict(module='stem.conv'), dict(module='stages.0')])
    (0,)
    """
    names = list(parent._modules)
    children = (str(level['module']).split('.', 1) for level in levels)
    return tuple(names.index(child[1]) for child in children if len(child) == 2 and child[1] in names)


def run_sequence(layers: nn.Sequential, x: torch.Tensor, checkpointed: bool) -> torch.Tensor:
    """``layers(x)``, or with ``checkpointed`` each child under gradient checkpointing (its activations recomputed
    in the backward pass instead of stored).

    >>> run_sequence(nn.Sequential(nn.ReLU(), nn.Tanh()), torch.zeros(1), checkpointed=False)
    tensor([0.])
    """
    if checkpointed:
        for layer in layers:
            x = checkpoint(layer, x, use_reentrant=False)
        return x
    return layers(x)


class StagedFeatures:
    """``forward_intermediates``, ``prune_intermediate_layers`` and ``forward_features`` of a staged CNN.

    The feature levels are first the stem's (the outputs of the stem's children at :meth:`_stem_taps`, or the
    stem's output with ``stem_is_level``), then one per stage, or per entry of :meth:`_stage_level_ends` (how many
    stages have run at each later level). The family sets, as data:

    - ``stem_taps``: the positions of the stem's levels among its children (see :func:`tap_positions`);
    - ``stem_name`` / ``stages_name``: the attributes holding the stem and the ``nn.Sequential`` of stages
      ('' = none);
    - ``last_stage_end``: the module (by attribute name) applied to the last stage's output, inside the last level
      (a final 1x1 conv that ``feature_info`` names as the last level);
    - ``features_end``: the module applied after every stage ran, outside the levels (a final norm or activation);
      with ``end_is_norm`` it is a norm: ``norm=True`` applies it to the last level and ``prune_norm`` drops it;
    - ``prune_trims_feature_info`` and ``pruned_head_args``: how the head goes when the features are cut
      (:func:`~featzoo.layers.intermediates.prune_head_after`);
    - ``stem_stops_early``: ``stop_early`` also stops inside the stem (a model whose levels all sit in one
      ``nn.Sequential``).

    and overrides the hooks that differ (``_stage_list``, ``_run_stage``, ``_forward_stem``, ``_keep_stages``,
    ``_prune_stem``, ``_prune_end``). ``forward_features`` here is ``stages(stem(x))``; a family with an end or
    checkpointing writes its own (it is the hot path: no hooks there).

    >>> class Net(StagedFeatures, nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.stem = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())
    ...         self.stages = nn.Sequential(nn.Conv2d(4, 8, 1, stride=2), nn.Conv2d(8, 16, 1, stride=2))
    ...         self.feature_info = [dict(num_chs=8), dict(num_chs=16)]
    ...     def reset_classifier(self, num_classes, global_pool=None): self.num_classes = num_classes
    >>> net = Net(); [t.shape[1] for t in net.forward_intermediates(torch.ones(1, 3, 8, 8), intermediates_only=True)]
    [8, 16]
    >>> net.prune_intermediate_layers((0,)), len(net.stages), net.num_features
    ([0], 1, 8)
    """

    feature_info: List[Dict[str, Any]]
    stem_taps: Tuple[int, ...] = ()
    stem_name: str = 'stem'
    stages_name: str = 'stages'
    stem_is_level: bool = False
    last_stage_end: str = ''
    features_end: str = ''
    end_is_norm: bool = False
    prune_trims_feature_info: bool = True
    pruned_head_args: Dict[str, Any] = {}
    stem_stops_early: bool = False
    #: with the model's ``grad_checkpointing`` flag set (and autograd on), :meth:`_run_stage` checkpoints each
    #: 'stage', or each 'block' of a stage; '' = the stages hold their own flags (``HeadApi.checkpoint_stages``)
    checkpoint_unit: str = ''

    # ---- hooks ---------------------------------------------------------------------------------------------------

    def _stage_list(self) -> Sequence[nn.Module]:
        """The stages in order."""
        return getattr(self, self.stages_name) if self.stages_name else ()

    def _run_stage(self, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """One stage, checkpointed as ``checkpoint_unit`` says."""
        if self.checkpoint_unit and self.grad_checkpointing and torch.is_grad_enabled():
            if self.checkpoint_unit == 'block':
                return run_sequence(stage, x, checkpointed=True)
            return checkpoint(stage, x, use_reentrant=False)
        return stage(x)

    def _stem_taps(self) -> Sequence[int]:
        """Positions, among the stem's children, of the stem's feature levels."""
        return self.stem_taps

    def _num_stem_levels(self) -> int:
        return 1 if self.stem_is_level else len(self._stem_taps())

    def _forward_stem(self, x: torch.Tensor, stop: int = -1) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """The stem's output and its feature levels; ``stop`` >= 0: its last level needed (``stem_stops_early``)."""
        stem = getattr(self, self.stem_name)
        taps = self._stem_taps()
        if not taps:
            x = stem(x)
            return x, [x] if self.stem_is_level else []
        return run_tapped(stem, x, taps, taps[stop] if stop >= 0 else -1)

    def _stage_level_ends(self) -> Sequence[int]:
        """For each level after the stem's, how many stages have run when it is taken."""
        return range(1, len(self._stage_list()) + 1)

    def _keep_stages(self, count: int) -> None:
        """Drop the stages after the first ``count``."""
        if self.stages_name:
            setattr(self, self.stages_name, getattr(self, self.stages_name)[:count])

    def _prune_stem(self, last: int) -> None:
        """Drop the stem's children after its level ``last`` (the last level kept)."""
        if not self.stem_is_level:
            setattr(self, self.stem_name, getattr(self, self.stem_name)[:self._stem_taps()[last] + 1])

    def _prune_end(self, last: int, num_levels: int, prune_norm: bool, prune_head: bool) -> None:
        """The head (and the end modules) once the levels after ``last`` are gone."""
        cut = prune_head_after(self, last, num_levels, prune_head, trim_feature_info=self.prune_trims_feature_info,
                               **self.pruned_head_args)
        if cut or (prune_norm and self.end_is_norm):
            for name in (self.last_stage_end, self.features_end):
                if name:
                    setattr(self, name, nn.Identity())

    def _forward_stages(self, x: torch.Tensor) -> torch.Tensor:
        """The stem, then each stage through :meth:`_run_stage`: ``forward_features`` of a family that checkpoints
        stage by stage."""
        x = getattr(self, self.stem_name)(x)
        for stage in self._stage_list():
            x = self._run_stage(stage, x)
        return x

    # ---- the contract --------------------------------------------------------------------------------------------

    def forward_intermediates(self, x: torch.Tensor, indices: IndicesArg = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = 'NCHW', intermediates_only: bool = False,
                              ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """The feature levels selected by ``indices`` (timm's semantics: all by default, an int n = the last n)
        and the final map (after the end when every stage ran); ``stop_early`` skips the stages after the last
        level taken. ``norm`` applies a final norm to the last level (where the end is one).
        """
        check_choice('output_fmt', output_fmt, ('NCHW',))
        stages = self._stage_list()
        num_stem = self._num_stem_levels()
        ends = self._stage_level_ends()
        take, last = feature_take_indices(num_stem + len(ends), indices)
        stem_stop = last if stop_early and self.stem_stops_early and last < num_stem else -1
        x, stem_maps = self._forward_stem(x, stem_stop)
        intermediates = [y for i, y in enumerate(stem_maps) if i in take]
        wanted = {ends[i - num_stem] for i in take if i >= num_stem}
        count = len(stages)
        if stop_early:
            count = ends[last - num_stem] if last >= num_stem else 0
        end = getattr(self, self.last_stage_end) if self.last_stage_end else None
        for n, stage in enumerate(stages[:count], start=1):
            x = self._run_stage(stage, x)
            if end is not None and n == len(stages):
                x = end(x)
            if n in wanted:
                if norm and self.end_is_norm and n == len(stages):
                    intermediates.append(getattr(self, self.features_end)(x))
                else:
                    intermediates.append(x)
        if intermediates_only:
            return intermediates
        if self.features_end and count == len(stages):
            x = getattr(self, self.features_end)(x)
        return x, intermediates

    def prune_intermediate_layers(self, indices: IndicesArg = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop what the levels up to the last of ``indices`` do not need: later stages (and the stem's tail when
        only stem levels stay), the end and the head when the features are cut or ``prune_head`` asks. Returns the
        kept indices.
        """
        num_stem = self._num_stem_levels()
        ends = self._stage_level_ends()
        num_levels = num_stem + len(ends)
        take, last = feature_take_indices(num_levels, indices)
        self._keep_stages(ends[last - num_stem] if last >= num_stem else 0)
        if last < num_stem:
            self._prune_stem(last)
        self._prune_end(last, num_levels, prune_norm, prune_head)
        return take

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The unpooled map of the last stage, NCHW."""
        return self.stages(self.stem(x))


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
