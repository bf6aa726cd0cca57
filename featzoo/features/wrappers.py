"""Feature wrappers: turn a model into a backbone that returns its feature levels.

A wrapper adopts the model's own child, parameter and buffer tables (the very same dict objects), so its
``state_dict`` has exactly the model's keys minus the modules it drops, and a checkpoint of the full model loads into
any wrapper. The wrapped model stays reachable as ``wrapper.model_ref()`` for calling its methods.
Wrappers rely only on ``feature_info`` and module names (see ``featzoo/models/CONTRACT.md``).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .adopt import WrapperRules, adopt_module_tables
from .info import FeatureInfo, OutIndices

OUTPUT_FORMATS = ('NCHW', 'NHWC')


def _check_output_fmt(output_fmt: Optional[str]) -> str:
    output_fmt = output_fmt or 'NCHW'
    if output_fmt not in OUTPUT_FORMATS:
        raise ValueError(f'unknown output_fmt {output_fmt!r}; valid: {OUTPUT_FORMATS}')
    return output_fmt


def _check_out_map(out_map: Optional[Sequence[str]], count: int) -> Optional[Tuple[str, ...]]:
    if out_map is None:
        return None
    if isinstance(out_map, str) or not isinstance(out_map, (list, tuple)):
        raise TypeError(f'out_map must be a list or tuple of names, one per selected level; got {out_map!r}')
    if len(out_map) != count:
        raise ValueError(f'out_map has {len(out_map)} names but {count} feature levels are selected; give one per level')
    names = tuple(str(n) for n in out_map)
    if len(set(names)) != len(names):
        raise ValueError(f'out_map {names} repeats a name; output names must be unique')
    return names


class _AdoptingNet(WrapperRules, nn.Module):
    """Base of the wrappers: shares the model's module, parameter and buffer tables."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        adopt_module_tables(self, model)
        self.training = model.training
        self.pretrained_cfg = getattr(model, 'pretrained_cfg', None)

    @staticmethod
    def _select_levels(model: nn.Module, out_indices: OutIndices, output_fmt: Optional[str],
                       out_map: Optional[Sequence[str]], feature_info: Optional[FeatureInfo]
                       ) -> Tuple[FeatureInfo, Optional[Tuple[str, ...]], str]:
        """The selected levels, their output names and the output format, checked before the model is touched."""
        levels = feature_info.info if feature_info is not None else model.feature_info
        info = FeatureInfo(levels, out_indices)
        return info, _check_out_map(out_map, len(info)), _check_output_fmt(output_fmt)

    def model_ref(self) -> nn.Module:
        """The wrapped model object (pruned): its methods run on the same modules as this wrapper."""
        return self._wrapped

    def train(self, mode: bool = True) -> '_AdoptingNet':
        super().train(mode)
        self._wrapped.training = mode
        return self

    @property
    def default_cfg(self) -> Optional[Dict[str, Any]]:
        return self.pretrained_cfg


def _sequential_plan(model: nn.Module, targets: Sequence[str]) -> Tuple[List[str], Dict[str, str]]:
    """Steps (dotted names) that run ``model`` in order up to the last target, and each target's step.

    Containers are entered only when they are ``nn.Sequential`` and hold a target below them.
    """
    steps: List[str] = []
    owner: Dict[str, str] = {}
    remaining = set(targets)

    def walk(module: nn.Module, prefix: str) -> bool:
        for name, child in module.named_children():
            full = f'{prefix}{name}'
            inner = [t for t in remaining if t.startswith(full + '.')]
            if inner and isinstance(child, nn.Sequential) and not any(t == full for t in remaining):
                if walk(child, full + '.'):
                    return True
                continue
            steps.append(full)
            for t in list(remaining):
                if t == full or t.startswith(full + '.'):
                    owner[t] = full
                    remaining.discard(t)
            if not remaining:
                return True
        return False

    walk(model, '')
    if remaining:
        raise ValueError(f'feature modules {sorted(remaining)} are not reachable by running the model\'s children '
                         f'in order; this model needs another feature_cls')
    return steps, owner


def _prune_after(model: nn.Module, last_step: str) -> List[str]:
    """Delete every module that runs after ``last_step`` (at each level of its path); return the dropped names."""
    dropped: List[str] = []
    parts = last_step.split('.')
    container = model
    for depth, part in enumerate(parts):
        names = list(container._modules.keys())
        keep_until = names.index(part)
        prefix = '.'.join(parts[:depth])
        for name in names[keep_until + 1:]:
            dropped.append(f'{prefix}.{name}' if prefix else name)
            del container._modules[name]
        container = container._modules[part]
    return dropped


def _truncate_step(model: nn.Module, step: str, target: str) -> List[str]:
    """Cut the block ``step`` right after ``target`` (a module inside it) runs; return the dropped names.

    The block's own output is never used when its last tapped level sits inside it, so whatever runs after the tap
    (a residual shortcut, the rest of the stack) would only waste time and leave parameters without gradients, which
    DistributedDataParallel rejects. The block is traced with ``torch.fx`` (entering only the modules on the path to
    ``target``), its graph ends at ``target``'s output, and dead code is removed; the cut block reuses the very same
    submodules, so parameter names do not change. A block that cannot be traced is kept whole.
    """
    from torch import fx

    block = model.get_submodule(step)
    inner = target[len(step) + 1:]

    class PathTracer(fx.Tracer):
        def is_leaf_module(self, module: nn.Module, qualname: str) -> bool:
            return not inner.startswith(qualname + '.')

    try:
        graph = PathTracer().trace(block)
    except Exception:  # data-dependent control flow: running the whole block is still correct
        return []
    calls = [node for node in graph.nodes if node.op == 'call_module' and node.target == inner]
    if not calls:
        return []
    old_output = next(node for node in graph.nodes if node.op == 'output')
    with graph.inserting_after(calls[-1]):
        graph.output(calls[-1])
    graph.erase_node(old_output)
    cut = fx.GraphModule(block, graph, class_name=f'{type(block).__name__}Truncated')
    cut.graph.eliminate_dead_code()
    cut.delete_all_unused_submodules()
    cut.recompile()
    gone = {name for name, _ in block.named_modules() if name} - {name for name, _ in cut.named_modules() if name}
    parent_name, _, leaf = step.rpartition('.')
    parent = model.get_submodule(parent_name) if parent_name else model
    parent._modules[leaf] = cut
    return sorted(f'{step}.{name}' for name in gone if name.rpartition('.')[0] not in gone)


def _run_step(module: nn.Module, x: torch.Tensor, use_checkpoint: bool) -> torch.Tensor:
    # Only steps with parameters are worth recomputing; parameter-free steps (often in-place activations)
    # would also corrupt the saved input under checkpointing.
    if use_checkpoint and torch.is_grad_enabled() and any(True for _ in module.parameters()):
        return checkpoint(module, x, use_reentrant=False)
    return module(x)


class FeatureListNet(_AdoptingNet):
    """Runs the model's children in order and returns the selected levels as a list (ascending level order).

    >>> import featzoo
    >>> m = featzoo.create_model('resnet18', features_only=True, out_indices=(1, 2))
    >>> [t.shape[1] for t in m(torch.randn(1, 3, 64, 64))]
    [64, 128]
    """

    output_dict = False
    ACCEPTS_OUT_MAP = False

    def __init__(self, model: nn.Module, out_indices: OutIndices = None, output_fmt: Optional[str] = None,
                 out_map: Optional[Sequence[str]] = None, feature_info: Optional[FeatureInfo] = None) -> None:
        info, out_names, output_fmt = self._select_levels(model, out_indices, output_fmt, out_map, feature_info)
        super().__init__(model)
        modules = info.module_name()
        steps, owner = _sequential_plan(model, modules)
        self._check_steps(modules, owner)
        self.dropped_modules = _prune_after(model, steps[-1])
        self.feature_info = info
        self.output_fmt = output_fmt
        self.steps = tuple(steps)
        self.return_steps = {owner[m]: (out_names[i] if out_names else m) for i, m in enumerate(modules)}
        self.grad_checkpointing = False

    def _check_steps(self, modules: Sequence[str], owner: Dict[str, str]) -> None:
        inside = [m for m in modules if owner[m] != m]
        if inside:
            raise ValueError(f'feature levels {inside} sit inside a block, so the list and dict wrappers cannot serve '
                             f"them; use feature_cls='hook'")

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each step's activations in the backward pass instead of storing them."""
        self.grad_checkpointing = enable

    def _collect(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        out: Dict[str, torch.Tensor] = {}
        for name in self.steps:
            x = _run_step(self.get_submodule(name), x, self.grad_checkpointing and self.training)
            key = self.return_steps.get(name)
            if key is not None:
                out[key] = x.permute(0, 2, 3, 1) if self.output_fmt == 'NHWC' else x
        return out

    def forward(self, x: torch.Tensor) -> Union[List[torch.Tensor], Dict[str, torch.Tensor]]:
        out = self._collect(x)
        return out if self.output_dict else list(out.values())


class FeatureDictNet(FeatureListNet):
    """As :class:`FeatureListNet`, returning a dict keyed by module name (or by ``out_map`` names)."""

    output_dict = True
    ACCEPTS_OUT_MAP = True


class _CaptureHook:
    """Forward hook that stores a module's output on its wrapper (an object, so deepcopy rebinds it)."""

    def __init__(self, owner: 'FeatureHookNet', key: str) -> None:
        self.owner = owner
        self.key = key

    def __call__(self, module: nn.Module, args: Any, output: torch.Tensor) -> None:
        self.owner._captured[self.key] = output


class FeatureHookNet(_AdoptingNet):
    """Runs the model's children in order with forward hooks on the tapped modules (levels may sit inside blocks).

    Returns a list, or a dict keyed by ``out_map`` names (or module names with ``out_as_dict=True``).
    """

    OPTIONS = ('out_as_dict',)

    def __init__(self, model: nn.Module, out_indices: OutIndices = None, output_fmt: Optional[str] = None,
                 out_map: Optional[Sequence[str]] = None, out_as_dict: bool = False,
                 feature_info: Optional[FeatureInfo] = None) -> None:
        info, out_names, output_fmt = self._select_levels(model, out_indices, output_fmt, out_map, feature_info)
        super().__init__(model)
        modules = info.module_name()
        steps, _ = _sequential_plan(model, modules)
        self.dropped_modules = _prune_after(model, steps[-1])
        if modules[-1] != steps[-1]:
            self.dropped_modules += _truncate_step(model, steps[-1], modules[-1])
        self.feature_info = info
        self.output_fmt = output_fmt
        self.steps = tuple(steps)
        self.output_dict = bool(out_as_dict or out_names)
        self.out_names = out_names or tuple(modules)
        self.grad_checkpointing = False
        self._captured: Dict[str, torch.Tensor] = {}
        for module_name, key in zip(modules, self.out_names):
            self.get_submodule(module_name).register_forward_hook(_CaptureHook(self, key))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each step's activations in the backward pass instead of storing them."""
        self.grad_checkpointing = enable

    def forward(self, x: torch.Tensor) -> Union[List[torch.Tensor], Dict[str, torch.Tensor]]:
        self._captured = {}
        for name in self.steps:
            x = _run_step(self.get_submodule(name), x, self.grad_checkpointing and self.training)
        captured, self._captured = self._captured, {}
        out = {}
        for key in self.out_names:
            value = captured[key]
            out[key] = value.permute(0, 2, 3, 1) if self.output_fmt == 'NHWC' else value
        return out if self.output_dict else list(out.values())


class FeatureGetterNet(_AdoptingNet):
    """Uses the model's ``forward_intermediates`` (transformers): NCHW maps by default, prefix tokens removed.

    Blocks after the last tapped one are pruned by the model's ``prune_intermediate_layers``. An optional
    parameter-free ``pyramid`` module resamples the maps (e.g. a simple pyramid for plain ViTs).
    """

    # feature_pyramid: the factory turns it into ``pyramid`` and ``pyramid_levels`` with the family's help
    OPTIONS = ('norm', 'feature_pyramid')

    def __init__(self, model: nn.Module, out_indices: OutIndices = None, output_fmt: Optional[str] = None,
                 out_map: Optional[Sequence[str]] = None, norm: bool = False,
                 feature_info: Optional[FeatureInfo] = None, pyramid: Optional[nn.Module] = None,
                 pyramid_levels: Optional[Sequence[Dict[str, Any]]] = None) -> None:
        info, out_names, output_fmt = self._select_levels(model, out_indices, output_fmt, out_map, feature_info)
        super().__init__(model)
        model.prune_intermediate_layers(list(info.out_indices), prune_norm=not norm, prune_head=True)
        self.indices = list(info.out_indices)
        self.intermediate_norm = norm
        self.output_fmt = output_fmt
        self.out_names = out_names
        if pyramid is not None:
            object.__setattr__(self, '_pyramid', pyramid)
            info = FeatureInfo(pyramid_levels)
        else:
            object.__setattr__(self, '_pyramid', None)
        self.feature_info = info

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint the wrapped model's blocks."""
        self._wrapped.set_grad_checkpointing(enable)

    def forward(self, x: torch.Tensor) -> Union[List[torch.Tensor], Dict[str, torch.Tensor]]:
        feats = self._wrapped.forward_intermediates(x, indices=self.indices, norm=self.intermediate_norm, output_fmt='NCHW',
                                                    intermediates_only=True)
        if self._pyramid is not None:
            feats = self._pyramid(feats)
        if self.output_fmt == 'NHWC':
            feats = [f.permute(0, 2, 3, 1) for f in feats]
        if self.out_names:
            return dict(zip(self.out_names, feats))
        return list(feats)


WRAPPERS = {
    'list': FeatureListNet,
    'dict': FeatureDictNet,
    'hook': FeatureHookNet,
    'getter': FeatureGetterNet,
}
