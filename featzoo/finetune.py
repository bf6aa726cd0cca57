"""Fine-tuning controls that work the same on every family and every feature wrapper:
freezing (stages and batch norm), parameter groups with weight decay and layer-wise learning-rate decay.

They rely only on ``feature_info``, module names and ``group_matcher`` (see models/CONTRACT.md).
"""
from __future__ import annotations

import math
import re
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

import torch
from torch import nn

from .features.wrappers import _sequential_plan
from .layers.norm import FrozenBatchNorm2d

BN_MODES = ('frozen', 'eval', 'train')
MERGE_WITH_PREVIOUS = 99999.0  # a group ordinal ending in this joins the group before it (timm's convention)


def _model_of(model: nn.Module) -> nn.Module:
    return model.model_ref() if hasattr(model, 'model_ref') else model


def _all_levels(model: nn.Module) -> List[Dict[str, Any]]:
    info = getattr(model, 'feature_info', None)
    if info is None:
        raise TypeError(f'{type(model).__name__} has no feature_info; freeze(levels=...) needs a featzoo model or '
                        'backbone (pass module names instead)')
    return list(info.info) if hasattr(info, 'info') else list(info)


def _steps_through_level(model: nn.Module, module_name: str, include_level: bool) -> Optional[List[str]]:
    """Module names that run up to (and with ``include_level``, including) the step holding a level."""
    try:
        steps, owner = _sequential_plan(model, [module_name])
    except ValueError:
        return None
    if isinstance(model.get_submodule(owner[module_name]), nn.ModuleList):
        # a list of blocks (timm's EVA keeps them in one) is not one step: its blocks run in registration order
        return None
    end = steps.index(owner[module_name])
    return steps[:end + 1] if include_level else steps[:end]


class _KeepEval:
    """Forward pre-hook that runs a batch norm with its running statistics whatever the model's mode."""

    def __call__(self, module: nn.Module, args: Any) -> None:
        module.training = False


def _frozen_prefixes(model: nn.Module, levels: Union[int, Sequence[str]]) -> Tuple[List[str], Set[str]]:
    """Parameter names to freeze and the module prefixes that hold them."""
    names = [n for n, _ in model.named_parameters()]
    if isinstance(levels, bool):
        raise TypeError(f'levels must be an int or a list of module names, got {levels!r}')
    if isinstance(levels, int):
        all_levels = _all_levels(model)
        if not 0 <= levels <= len(all_levels):
            raise ValueError(f'cannot freeze {levels} levels: this model has {len(all_levels)} feature levels '
                             f'(valid: 0 to {len(all_levels)}; 0 freezes the stem only)')
        level = all_levels[max(levels, 1) - 1]['module']
        modules = dict(model.named_modules())
        if level not in modules:
            # e.g. HRNet: its levels after the stem are the branches of the last stage, which the whole trunk
            # computes; freezing "up to" such a level has no meaning, and freezing nothing would pass silently
            reachable = next((i for i, d in enumerate(all_levels) if d['module'] not in modules), len(all_levels))
            raise ValueError(f'cannot freeze {levels} levels of {type(_model_of(model)).__name__}: its feature level '
                             f'{max(levels, 1) - 1} ({level!r}) is not a module the trunk runs up to (valid: 0 to '
                             f'{reachable}); pass module names instead, from its top-level modules '
                             f'{[n for n, _ in model.named_children()]}')
        steps = _steps_through_level(model, level, include_level=levels > 0)
        if steps is not None:
            # parameters held by the root itself (class tokens, position embeddings) belong to the stem
            chosen = [n for n in names if '.' not in n or any(n.startswith(s + '.') for s in steps)]
        else:  # levels not reachable in order: fall back to registration order up to the level's module
            inside = [i for i, n in enumerate(names) if n.startswith(level + '.')]
            chosen = names[:max(inside) + 1] if inside else []
        prefixes = {n.rsplit('.', 1)[0] for n in chosen}
        return chosen, prefixes
    if isinstance(levels, str) or not isinstance(levels, Iterable):
        raise TypeError(f'levels must be an int or a list of module names, got {levels!r}')
    wanted = list(levels)
    modules = dict(model.named_modules())
    unknown = [w for w in wanted if w not in modules]
    if unknown:
        raise KeyError(f'no module named {unknown[0]!r}; top-level modules: {[n for n, _ in model.named_children()]}')
    chosen = [n for n in names if any(n.startswith(w + '.') for w in wanted)]
    return chosen, set(wanted)


def _swap_batchnorms(model: nn.Module, prefixes: Set[str], to_frozen: bool) -> int:
    count = 0
    for name, module in list(model.named_modules()):
        if not name:
            continue
        inside = any(name == p or name.startswith(p + '.') for p in prefixes)
        if not inside:
            continue
        parent_name, _, child = name.rpartition('.')
        parent = model.get_submodule(parent_name) if parent_name else model
        if to_frozen and isinstance(module, nn.modules.batchnorm._BatchNorm):
            parent._modules[child] = FrozenBatchNorm2d.convert(module)
            count += 1
        elif not to_frozen and isinstance(module, FrozenBatchNorm2d):
            parent._modules[child] = _thaw(module)
            count += 1
    return count


def _thaw(frozen: FrozenBatchNorm2d) -> nn.Module:
    cls = getattr(frozen, 'source_class', nn.BatchNorm2d)
    bn = cls(frozen.num_features, eps=frozen.eps) if cls is nn.BatchNorm2d else cls(frozen.num_features,
                                                                                        eps=frozen.eps)
    for attr in ('drop', 'act'):
        if hasattr(frozen, attr) and hasattr(bn, attr):
            setattr(bn, attr, getattr(frozen, attr))
    with torch.no_grad():
        bn.weight.copy_(frozen.weight)
        bn.bias.copy_(frozen.bias)
        bn.running_mean.copy_(frozen.running_mean)
        bn.running_var.copy_(frozen.running_var)
    return bn.to(frozen.weight.device)


def freeze(model: nn.Module, levels: Union[int, Sequence[str]] = 1, bn: str = 'frozen') -> nn.Module:
    """Stop training the stem and the first ``levels`` feature levels (or the named modules).

    ``bn='frozen'`` swaps their batch norms for :class:`~featzoo.layers.FrozenBatchNorm2d` (same state_dict keys,
    statistics fixed); ``'eval'`` keeps every batch norm of the model in eval mode even after ``model.train()``;
    ``'train'`` leaves batch norms alone. Works on full models and on every feature wrapper.

    >>> import featzoo
    >>> m = featzoo.freeze(featzoo.create_model('resnet18', features_only=True), levels=2)
    >>> m.layer1[0].conv1.weight.requires_grad, m.layer2[0].conv1.weight.requires_grad
    (False, True)
    """
    if bn not in BN_MODES:
        raise ValueError(f'unknown bn mode {bn!r}; valid: {BN_MODES}')
    chosen, prefixes = _frozen_prefixes(model, levels)
    params = dict(model.named_parameters())
    for name in chosen:
        params[name].requires_grad_(False)
    if bn == 'frozen':
        _swap_batchnorms(model, prefixes | {n.rsplit('.', 1)[0] for n in chosen}, to_frozen=True)
    elif bn == 'eval':
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not getattr(module, '_featzoo_keep_eval', None):
                module._featzoo_keep_eval = module.register_forward_pre_hook(_KeepEval())
                module.training = False
    return model


def unfreeze(model: nn.Module) -> nn.Module:
    """Undo :func:`freeze`: every parameter trains again and batch norms are ordinary again.

    >>> import featzoo
    >>> m = featzoo.unfreeze(featzoo.freeze(featzoo.create_model('resnet18'), levels=3))
    >>> all(p.requires_grad for p in m.parameters())
    True
    """
    everything = {n for n, _ in model.named_modules() if n}
    _swap_batchnorms(model, everything, to_frozen=False)
    for module in model.modules():
        handle = getattr(module, '_featzoo_keep_eval', None)
        if handle is not None:
            handle.remove()
            del module._featzoo_keep_eval
            module.training = model.training
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def _compile_matcher(matcher: Dict[str, Any]) -> List[Tuple[re.Pattern, Tuple[float, ...], Optional[Tuple]]]:
    compiled = []
    for ordinal, (_, spec) in enumerate(matcher.items()):
        if spec is None:
            continue
        if isinstance(spec, (list, tuple)):
            for pattern, suffix in spec:
                compiled.append((re.compile(pattern), (float(ordinal),), suffix))
        else:
            compiled.append((re.compile(spec), (float(ordinal),), None))
    return compiled


def layer_ids(model: nn.Module, coarse: bool = False) -> Dict[str, int]:
    """Map each parameter name to a depth index (0 = stem) using the model's ``group_matcher``.

    Parameters no pattern matches (the head, necks) get the last index.

    >>> import featzoo
    >>> ids = layer_ids(featzoo.create_model('resnet18'), coarse=True)
    >>> ids['conv1.weight'], ids['layer4.1.conv2.weight'], ids['fc.weight']
    (0, 4, 5)
    """
    inner = _model_of(model)
    if not hasattr(inner, 'group_matcher'):
        raise TypeError(f'{type(inner).__name__} has no group_matcher(); layer-wise decay needs a featzoo model')
    compiled = _compile_matcher(inner.group_matcher(coarse=coarse))

    def ordinal(name: str) -> Tuple[float, ...]:
        for pattern, prefix, suffix in compiled:
            found = pattern.match(name)
            if found:
                groups = tuple(float(g) for g in found.groups() if g is not None)
                return prefix + groups + (tuple(float(s) for s in suffix) if suffix else ())
        return (math.inf,)

    keys = {name: ordinal(name) for name, _ in model.named_parameters()}
    ids: Dict[Tuple[float, ...], int] = {}
    current = -1
    for key in sorted(set(keys.values())):
        if current < 0 or key[-1] != MERGE_WITH_PREVIOUS:
            current += 1
        ids[key] = current
    return {name: ids[key] for name, key in keys.items()}


def param_groups(model: nn.Module, weight_decay: float = 1e-5, layer_decay: Optional[float] = None,
                 no_weight_decay_list: Sequence[str] = ()) -> List[Dict[str, Any]]:
    """Optimizer parameter groups: biases, norm weights (any 1-D tensor) and ``no_weight_decay()`` names get no
    weight decay; with ``layer_decay`` each group also gets ``lr_scale`` = layer_decay ** (depth from the head).

    Frozen parameters (``requires_grad=False``) are left out. Every trainable parameter is in exactly one group.

    >>> import featzoo
    >>> groups = param_groups(featzoo.create_model('resnet18'), weight_decay=0.05, layer_decay=0.7)
    >>> sorted({g['weight_decay'] for g in groups})
    [0.0, 0.05]
    """
    if weight_decay < 0:
        raise ValueError(f'weight_decay={weight_decay} is invalid; it must be >= 0')
    if layer_decay is not None and not 0 < layer_decay <= 1:
        raise ValueError(f'layer_decay={layer_decay} is invalid; it must be in (0, 1]')
    inner = _model_of(model)
    skip = set(no_weight_decay_list)
    if hasattr(inner, 'no_weight_decay'):
        skip |= set(inner.no_weight_decay())
    ids = layer_ids(model) if layer_decay is not None else None
    num_layers = (max(ids.values()) + 1) if ids else 1
    groups: Dict[Tuple[int, bool], Dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = param.ndim <= 1 or name.endswith('.bias') or name in skip or \
            any(name.startswith(s + '.') for s in skip)
        layer = ids[name] if ids else 0
        key = (layer, no_decay)
        if key not in groups:
            group: Dict[str, Any] = dict(params=[], names=[], weight_decay=0.0 if no_decay else weight_decay)
            if ids is not None:
                group['lr_scale'] = layer_decay ** (num_layers - 1 - layer)
            groups[key] = group
        groups[key]['params'].append(param)
        groups[key]['names'].append(name)
    return [groups[k] for k in sorted(groups)]
