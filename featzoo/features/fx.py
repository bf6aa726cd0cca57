"""FX feature extraction for any ``nn.Module``: torchvision-compatible node names and extractors, per-node shapes.

A *node name* is the dotted path from the top-level module down to a leaf operation or leaf module, without the
top-level module's own name (``layer4.2.relu_2`` in a ResNet-50). A repeated operation within the same direct
parent gets a ``_{n}`` postfix counted from 1 (``add``, ``add_1``, ``add_2``). A truncated name such as
``layer4`` selects the last node, in execution order, under that path. Names, lists and order are the same as
``torchvision.models.feature_extraction`` gives for the same model.

>>> import torch
>>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3))
>>> get_graph_node_names(net)[0]
['input', '0', '1', '2']
>>> out = create_feature_extractor(net, {'1': 'act', '0': 'conv'})(torch.randn(1, 3, 16, 16))
>>> [(k, tuple(v.shape)) for k, v in out.items()]
[('act', (1, 8, 14, 14)), ('conv', (1, 8, 14, 14))]
"""
from __future__ import annotations

import copy
import difflib
import math
import re
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import fx, nn

from ..checks import check_input_size
from .adopt import WrapperRules, adopt_module_tables
from .info import FeatureInfo, OutIndices
from .notrace import get_notrace_functions, get_notrace_modules, register_notrace_function, register_notrace_module

__all__ = [
    'NodePathTracer', 'get_graph_node_names', 'create_feature_extractor', 'get_graph_node_info', 'NodeInfo',
    'FeatureExtractor', 'FeatureFxNet',
]

ReturnNodes = Union[Sequence[str], Mapping[str, str]]
_TRACER_KEYS = ('leaf_modules', 'autowrap_modules', 'autowrap_functions', 'param_shapes_constant')
_FX_POSTFIX = re.compile(r'.+_[0-9]+$')
_DEFAULT_INPUT_SIZE = (3, 224, 224)


def _register_featzoo_layers() -> None:
    # These shared layers branch on traced sizes (TF 'same' padding) or inherit BatchNorm's input-rank check, so
    # tracing into them fails; they are leaves wherever they appear. Registering here keeps every featzoo model
    # traceable whether or not the layer modules decorate themselves.
    from ..layers import norm, padding
    for cls in (norm.BatchNormAct2d, padding.Conv2dSame, padding.MaxPool2dSame):
        register_notrace_module(cls)
    # CondConv pads its per-sample convolution itself (it takes routing weights, so it is traced through)
    register_notrace_function(padding.pad_same)


_register_featzoo_layers()


# ----------------------------------------------------------------------------------------------------- tracing


class NodePathTracer(fx.Tracer):
    """An ``fx.Tracer`` that names every node it records with its torchvision-style node name.

    ``node_to_qualname`` maps each recorded node to its name, in execution order. ``leaf_modules`` (classes) are
    not traced into, in addition to torch's own modules.

    >>> tracer = NodePathTracer()
    >>> _ = tracer.trace(torch.nn.Sequential(torch.nn.ReLU(), torch.nn.ReLU()))
    >>> list(tracer.node_to_qualname.values())
    ['input', '0', '1']
    """

    def __init__(self, *args: Any, leaf_modules: Sequence[type] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.leaf_modules = tuple(leaf_modules)
        self.current_module_qualname = ''
        self.node_to_qualname: Dict[fx.Node, str] = {}
        # Latest final name that each base name (or base + '_{n}') resolved to: the next repeat continues from it.
        self._latest: Dict[str, str] = {}

    def trace(self, root: Union[nn.Module, Callable[..., Any]],
              concrete_args: Optional[Dict[str, Any]] = None) -> fx.Graph:
        # torch.fx wraps the registered no-trace functions only where it looks for them: in the module that defines
        # the traced ``forward`` and in those of the submodules it calls. A model whose ``forward`` comes from a
        # shared base calls its own module's functions from methods (``forward_features``) defined there, so every
        # module along the model's class hierarchy is searched too. ``_autowrap_search`` is the tracer's own list
        # for this (torch >= 1.10); without it the tracer behaves as torch's.
        search = getattr(self, '_autowrap_search', None)
        added: List[Any] = []
        if isinstance(root, nn.Module) and isinstance(search, list):
            for cls in type(root).__mro__:
                module = sys.modules.get(cls.__module__)
                if module is None or cls.__module__.split('.')[0] in ('torch', 'builtins'):
                    continue
                if not any(module is m for m in search + added):
                    added.append(module)
            search.extend(added)
        try:
            return super().trace(root, concrete_args)
        finally:
            for module in added:
                search.remove(module)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if self.leaf_modules and isinstance(m, self.leaf_modules):
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: Tuple[Any, ...],
                    kwargs: Dict[str, Any]) -> Any:
        outer = self.current_module_qualname
        self.current_module_qualname = self.path_of_module(m)
        try:
            return super().call_module(m, forward, args, kwargs)
        finally:
            self.current_module_qualname = outer

    def create_proxy(self, kind: str, target: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any],
                     name: Optional[str] = None, type_expr: Any = None,
                     proxy_factory_fn: Optional[Callable[[fx.Node], fx.Proxy]] = None) -> fx.Proxy:
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr, proxy_factory_fn)
        self.node_to_qualname[proxy.node] = self._name_node(proxy.node)
        return proxy

    def _name_node(self, node: fx.Node) -> str:
        scope = self.current_module_qualname
        if node.op == 'call_module':
            base = scope
        else:
            base = f'{scope}.{node.name}' if scope else node.name
        # FX numbers repeated names across the whole graph; drop its postfix so the count restarts per parent.
        if _FX_POSTFIX.match(base):
            base = base.rsplit('_', 1)[0]
        previous = self._latest.get(base)
        if previous is None:
            qualname = base
        else:
            suffix = previous[len(base):]
            qualname = f'{base}_{int(suffix[1:]) + 1 if suffix else 1}'
        self._latest[qualname] = qualname
        if _FX_POSTFIX.match(qualname):
            self._latest[qualname.rsplit('_', 1)[0]] = qualname
        return qualname


def _torchvision_defaults() -> Tuple[List[type], List[Any]]:
    # torchvision treats its ops' modules as leaves and autowraps its ops' functions. Models that contain those
    # modules can only exist once torchvision is imported, so reading it from sys.modules (never importing it)
    # reproduces torchvision's node names exactly for its models and changes nothing for other models.
    ops = sys.modules.get('torchvision.ops')
    if ops is None:
        return [], []
    classes = [obj for _, obj in sorted(vars(ops).items()) if isinstance(obj, type) and issubclass(obj, nn.Module)]
    return classes, [ops]


def _tracer_kwargs(tracer_kwargs: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    if tracer_kwargs is None:
        tracer_kwargs = {}
    if not isinstance(tracer_kwargs, Mapping):
        raise TypeError(f'tracer_kwargs must be a dict with keys among {_TRACER_KEYS}, got {tracer_kwargs!r}')
    unknown = sorted(set(tracer_kwargs) - set(_TRACER_KEYS))
    if unknown:
        raise ValueError(f'unknown tracer_kwargs {unknown}; valid keys: {_TRACER_KEYS}')

    def as_list(key: str) -> List[Any]:
        value = tracer_kwargs.get(key, ())
        if isinstance(value, (str, bytes)) or not hasattr(value, '__iter__'):
            raise TypeError(f'tracer_kwargs[{key!r}] must be a list or tuple, got {value!r}')
        return list(value)

    tv_leaves, tv_modules = _torchvision_defaults()
    leaves = _unique(as_list('leaf_modules') + get_notrace_modules() + tv_leaves)
    for cls in leaves:
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise TypeError(f"tracer_kwargs['leaf_modules'] must hold nn.Module classes, got {cls!r}")
    functions = _unique(as_list('autowrap_functions') + get_notrace_functions())
    for fn in functions:
        if not callable(fn):
            raise TypeError(f"tracer_kwargs['autowrap_functions'] must hold functions, got {fn!r}")
    modules = _unique(as_list('autowrap_modules') + [math] + tv_modules)
    out = dict(leaf_modules=leaves, autowrap_functions=tuple(functions), autowrap_modules=tuple(modules))
    if 'param_shapes_constant' in tracer_kwargs:
        out['param_shapes_constant'] = bool(tracer_kwargs['param_shapes_constant'])
    return out


def _unique(items: Sequence[Any]) -> List[Any]:
    seen: List[Any] = []
    for item in items:
        if not any(item is s for s in seen):
            seen.append(item)
    return seen


def _check_model(model: Any) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f'model must be an nn.Module, got {type(model).__name__}')


@contextmanager
def _training_mode(model: nn.Module, mode: bool) -> Iterator[None]:
    # Restores every submodule's own flag afterwards, not just the root's: a model may freeze parts in eval mode.
    saved = [(m, m.training) for m in model.modules()]
    model.train(mode)
    try:
        yield
    finally:
        for m, flag in saved:
            m.training = flag


def _trace(model: nn.Module, train: bool, kwargs: Dict[str, Any],
           concrete_args: Optional[Dict[str, Any]]) -> Tuple[NodePathTracer, fx.Graph]:
    if concrete_args is not None and not isinstance(concrete_args, dict):
        raise TypeError(f'concrete_args must be a dict of argument name -> value, got {concrete_args!r}')
    tracer = NodePathTracer(**kwargs)
    with _training_mode(model, train):
        graph = tracer.trace(model, concrete_args=concrete_args)
    names = list(tracer.node_to_qualname.values())
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise RuntimeError(f'tracing {type(model).__name__} gave duplicate node names {dup[:5]}; '
                           'this is a naming bug, please report it with the model')
    return tracer, graph


def _is_subsequence(longer: Sequence[str], shorter: Sequence[str]) -> bool:
    it = iter(longer)
    return all(any(a == b for a in it) for b in shorter)


def _warn_graph_differences(train_nodes: Sequence[str], eval_nodes: Sequence[str]) -> None:
    if list(train_nodes) == list(eval_nodes):
        return
    if _is_subsequence(train_nodes, eval_nodes):
        msg = ('NOTE: The nodes obtained by tracing the model in eval mode are a subsequence of those obtained in '
               'train mode. ')
    elif _is_subsequence(eval_nodes, train_nodes):
        msg = ('NOTE: The nodes obtained by tracing the model in train mode are a subsequence of those obtained in '
               'eval mode. ')
    else:
        msg = 'The nodes obtained by tracing the model in train mode are different to those obtained in eval mode. '
    warnings.warn(msg + 'When choosing nodes for feature extraction, you may need to specify output nodes for '
                  'train and eval mode separately.')


def get_graph_node_names(model: nn.Module, tracer_kwargs: Optional[Dict[str, Any]] = None,
                         suppress_diff_warning: bool = False,
                         concrete_args: Optional[Dict[str, Any]] = None) -> Tuple[List[str], List[str]]:
    """Node names in execution order, from tracing ``model`` in train mode and in eval mode.

    ``tracer_kwargs`` may hold ``leaf_modules`` (classes not to trace into), ``autowrap_functions``,
    ``autowrap_modules`` and ``param_shapes_constant``; featzoo's registered no-trace modules and functions are
    always added. Warns when the two lists differ unless ``suppress_diff_warning``. Each module's training flag is
    restored afterwards.

    >>> train_nodes, eval_nodes = get_graph_node_names(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    >>> train_nodes
    ['input', '0']
    """
    _check_model(model)
    kwargs = _tracer_kwargs(tracer_kwargs)
    before = set(vars(model))
    try:
        train_tracer, _ = _trace(model, True, kwargs, concrete_args)
        eval_tracer, _ = _trace(model, False, kwargs, concrete_args)
    finally:
        _drop_trace_constants(model, before)
    train_nodes = list(train_tracer.node_to_qualname.values())
    eval_nodes = list(eval_tracer.node_to_qualname.values())
    if not suppress_diff_warning:
        _warn_graph_differences(train_nodes, eval_nodes)
    return train_nodes, eval_nodes


# ------------------------------------------------------------------------------------------ return-node rewrite


def _as_return_dict(value: Any, arg: str) -> Dict[str, str]:
    if isinstance(value, Mapping):
        pairs = [(str(k), str(v)) for k, v in value.items()]
    elif isinstance(value, (list, tuple)):
        names = [str(v) for v in value]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f'{arg} lists {repeated} more than once; each node may be listed once')
        pairs = [(n, n) for n in names]
    else:
        raise TypeError(f'{arg} must be a list of node names or a dict {{node name: output name}}, got {value!r}')
    if not pairs:
        raise ValueError(f'{arg} is empty; name at least one node (see get_graph_node_names(model))')
    outputs = [v for _, v in pairs]
    clashing = sorted({v for v in outputs if outputs.count(v) > 1})
    if clashing:
        sources = {v: [k for k, o in pairs if o == v] for v in clashing}
        raise ValueError(f'{arg} maps several nodes to the same output name: {sources}; output names must be unique')
    return dict(pairs)


def _closest(query: str, names: Sequence[str], n: int = 5) -> List[str]:
    # Offer whole names and their truncations: a mistyped 'layer5' is closer to 'layer4' than to 'layer4.2.relu_2'.
    candidates = set(names)
    for name in names:
        parts = name.split('.')
        candidates.update('.'.join(parts[:i]) for i in range(1, len(parts)))
    return difflib.get_close_matches(query, sorted(candidates), n=n, cutoff=0.4)


def _select_nodes(tracer: NodePathTracer, queries: Sequence[str], mode: str) -> Dict[str, fx.Node]:
    named = list(tracer.node_to_qualname.items())
    names = [name for _, name in named]
    chosen: Dict[str, fx.Node] = {}
    for query in queries:
        prefix = query + '.'
        for node, name in reversed(named):
            if name == query or name.startswith(prefix):
                chosen[query] = node
                break
        else:
            hint = _closest(query, names)
            raise ValueError(f"node {query!r} is not present in the model traced in {mode} mode; closest names: "
                             f"{hint or names[:5]}. Use get_graph_node_names(model) to list them all (nodes can "
                             "differ between train and eval: see train_return_nodes / eval_return_nodes)")
    return chosen


def _replace_output(graph: fx.Graph, outputs: Any) -> None:
    for node in [n for n in graph.nodes if n.op == 'output']:
        graph.erase_node(node)
    graph.output(outputs)


def _prune_graph(graph: fx.Graph, root: nn.Module) -> None:
    # Dead-code elimination asks the owning module whether leaf calls are pure; the traced root can answer.
    graph.owning_module = root
    graph.eliminate_dead_code()
    graph.lint()


def _graph_targets(*graphs: fx.Graph) -> List[str]:
    targets: List[str] = []
    for graph in graphs:
        for node in graph.nodes:
            if node.op in ('get_attr', 'call_module') and node.target not in targets:
                if not isinstance(node.target, str):
                    raise TypeError(f'node {node.name} has a non-string target {node.target!r}')
                targets.append(node.target)
    return targets


def _copy_target(src: nn.Module, dst: nn.Module, target: str) -> None:
    # Rebuild the path to ``target`` in ``dst`` with plain containers, sharing the leaf object itself, so the
    # extractor's state_dict keys are the model's (minus what no node uses).
    *path, field = target.split('.')
    for part in path:
        src = getattr(src, part)
        existing = dst._modules.get(part)
        if existing is src:
            return
        if existing is None:
            existing = nn.Module()
            dst.add_module(part, existing)
        dst = existing
    value = getattr(src, field)
    if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter):
        dst.register_buffer(field, value, persistent=field not in src._non_persistent_buffers_set)
    else:
        setattr(dst, field, value)


# ----------------------------------------------------------------------------------------- meta propagation


def _to_meta(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        # 0-dim CPU tensors mix with any device; keeping them real keeps their value usable by python code.
        if value.is_meta or (value.ndim == 0 and value.device.type == 'cpu'):
            return value
        return torch.empty_like(value, device='meta')
    if isinstance(value, (list, tuple)):
        items = [_to_meta(v) for v in value]
        if isinstance(value, tuple) and hasattr(value, '_fields'):
            return type(value)(*items)
        return type(value)(items)
    if isinstance(value, dict):
        return {k: _to_meta(v) for k, v in value.items()}
    return value


@contextmanager
def _weights_on_meta(module: nn.Module) -> Iterator[None]:
    """Temporarily replace every parameter and buffer with a storage-less meta twin, restoring them afterwards."""
    saved = []
    for sub in module.modules():
        for table in (sub._parameters, sub._buffers):
            for key, value in list(table.items()):
                if value is None or value.is_meta:
                    continue
                saved.append((table, key, value))
                twin = torch.empty_like(value, device='meta')
                table[key] = nn.Parameter(twin, requires_grad=value.requires_grad) if isinstance(
                    value, nn.Parameter) else twin
    try:
        yield
    finally:
        for table, key, value in reversed(saved):
            table[key] = value


def _fetch_attr(root: nn.Module, target: str) -> Any:
    obj: Any = root
    for part in target.split('.'):
        obj = getattr(obj, part)
    return obj


def _input_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.dtype.is_floating_point:
            return p.dtype
    return torch.get_default_dtype()


def _propagate(root: nn.Module, graph: fx.Graph, inputs: Sequence[Any]) -> Tuple[Dict[fx.Node, Any], Optional[str]]:
    """Run ``graph`` on meta tensors; return each computed node's value and the first failure (or None).

    A node whose op cannot run on meta (data-dependent shapes such as ``nonzero``) gets no value, and neither do
    the nodes that depend on it.
    """
    env: Dict[fx.Node, Any] = {}
    failure: Optional[str] = None
    feed = list(inputs)
    with _weights_on_meta(root), torch.no_grad():
        for node in graph.nodes:
            if node.op == 'output':
                continue
            if node.op == 'placeholder':
                if feed:
                    env[node] = feed.pop(0)
                elif node.args:
                    env[node] = node.args[0]
                continue
            if any(dep not in env for dep in node.all_input_nodes):
                continue
            args = fx.node.map_arg(node.args, lambda n: env[n])
            kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
            try:
                if node.op == 'get_attr':
                    value = _to_meta(_fetch_attr(root, node.target))
                elif node.op == 'call_function':
                    value = node.target(*_to_meta(args), **_to_meta(kwargs))
                elif node.op == 'call_method':
                    self_obj, *rest = _to_meta(args)
                    value = getattr(self_obj, node.target)(*rest, **_to_meta(kwargs))
                else:
                    value = root.get_submodule(node.target)(*_to_meta(args), **_to_meta(kwargs))
            except Exception as exc:  # any op may refuse meta tensors; record it and carry on with the rest
                if failure is None:
                    failure = f'{node.op} {node.target} ({node.name}): {type(exc).__name__}: {exc}'
                continue
            env[node] = value
    return env, failure


def _check_input_size(input_size: Any) -> Tuple[int, ...]:
    # any model: an int is the length of a 1-D sample, not a square image side
    if isinstance(input_size, int) and not isinstance(input_size, bool):
        input_size = (input_size,)
    return check_input_size(input_size, lengths=None, allow_int=False)


def _channels(shape: Optional[Tuple[int, ...]]) -> Optional[int]:
    if shape is None:
        return None
    if len(shape) == 4:
        return shape[1]
    if len(shape) == 3:
        return shape[-1]
    return None


def _reduction(shape: Optional[Tuple[int, ...]], input_size: Tuple[int, ...]) -> Optional[int]:
    if shape is None or len(shape) != 4 or len(input_size) != 3 or shape[2] == 0:
        return None
    return math.ceil(input_size[1] / shape[2])


def _qualified_name(fn: Any) -> str:
    name = getattr(fn, '__name__', None)
    module = getattr(fn, '__module__', None)
    if module == '_operator':
        module = 'operator'
    if name is None:
        return repr(fn)
    if module in (None, 'builtins'):
        return name
    owner = sys.modules.get(getattr(fn, '__module__', '') or '')
    # torch's C functions report an internal class as qualname; the public module attribute is the useful name.
    if owner is not None and getattr(owner, name, None) is fn:
        return f'{module}.{name}'
    return f'{module}.{getattr(fn, "__qualname__", name)}'


def _target_name(node: fx.Node) -> str:
    if node.op == 'call_function':
        return _qualified_name(node.target)
    return str(node.target)


@dataclass(frozen=True)
class NodeInfo:
    """What one graph node produces, from shape propagation on the meta device.

    ``channels`` is dim 1 of a 4-D output or the last dim of a 3-D (token) output; ``reduction`` is
    ``ceil(input height / output height)`` for 4-D outputs. Both are None otherwise, and ``shape``/``dtype`` are
    None for outputs that are not tensors or that could not be computed on meta.

    >>> NodeInfo('conv1', 'call_module', 'conv1', (1, 64, 112, 112), torch.float32, 64, 2).reduction
    2
    """

    name: str
    op: str
    target: str
    shape: Optional[Tuple[int, ...]]
    dtype: Optional[torch.dtype]
    channels: Optional[int]
    reduction: Optional[int]


def _meta_input(model: nn.Module, input_size: Tuple[int, ...], batch_size: int) -> torch.Tensor:
    return torch.empty((batch_size,) + input_size, dtype=_input_dtype(model), device='meta')


def get_graph_node_info(model: nn.Module, input_size: Sequence[int] = _DEFAULT_INPUT_SIZE, train: bool = False,
                        batch_size: int = 1, tracer_kwargs: Optional[Dict[str, Any]] = None,
                        concrete_args: Optional[Dict[str, Any]] = None) -> List[NodeInfo]:
    """Every node of ``model``'s graph, in execution order, with its output shape, dtype, channels and reduction.

    The model is traced (in train mode when ``train``) and run on a meta tensor of shape
    ``(batch_size, *input_size)`` with meta twins of its weights: no real compute and no memory, so a ViT-L
    answers in about a second. Names equal :func:`get_graph_node_names`'s. Nodes whose op cannot run on meta get
    ``shape=None`` (with a warning naming the first).

    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.Flatten())
    >>> [(i.name, i.shape, i.reduction) for i in get_graph_node_info(net, (3, 32, 32))]
    [('input', (1, 3, 32, 32), 1), ('0', (1, 8, 16, 16), 2), ('1', (1, 2048), None)]
    """
    _check_model(model)
    size = _check_input_size(input_size)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f'batch_size must be an int >= 1, got {batch_size!r}')
    if not isinstance(train, bool):
        raise TypeError(f'train must be True or False, got {train!r}')
    before = set(vars(model))
    try:
        tracer, graph = _trace(model, train, _tracer_kwargs(tracer_kwargs), concrete_args)
        with _training_mode(model, train):
            env, failure = _propagate(model, graph, [_meta_input(model, size, batch_size)])
    finally:
        _drop_trace_constants(model, before)
    if failure is not None:
        warnings.warn(f'some nodes could not run on the meta device and have shape=None; first: {failure}')
    infos = []
    for node, name in tracer.node_to_qualname.items():
        value = env.get(node)
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else None
        dtype = value.dtype if isinstance(value, torch.Tensor) else None
        infos.append(NodeInfo(name=name, op=node.op, target=_target_name(node), shape=shape, dtype=dtype,
                              channels=_channels(shape), reduction=_reduction(shape, size)))
    return infos


# ------------------------------------------------------------------------------------------------- modules


def _default_input_size(model: nn.Module) -> Tuple[int, ...]:
    cfg = getattr(model, 'pretrained_cfg', None) or getattr(model, 'default_cfg', None)
    size = _DEFAULT_INPUT_SIZE
    if isinstance(cfg, dict) and cfg.get('input_size'):
        size = tuple(int(d) for d in cfg['input_size'])
    # A transformer built for another image size than its weights' (img_size=...) only accepts its own size.
    img_size = getattr(getattr(model, 'patch_embed', None), 'img_size', None)
    if (len(size) == 3 and isinstance(img_size, (tuple, list)) and len(img_size) == 2
            and all(isinstance(d, int) for d in img_size) and not getattr(model, 'dynamic_img_size', False)):
        size = (size[0],) + tuple(img_size)
    return size


def _in_channels(graph: fx.Graph, root: nn.Module) -> Optional[int]:
    # The module that consumes the image tells its channel count, which may differ from the pretrained config
    # (a model built with in_chans=1).
    inputs = [n for n in graph.nodes if n.op == 'placeholder'][:1]
    if not inputs:
        return None
    for user in inputs[0].users:
        if user.op == 'call_module':
            module = root.get_submodule(user.target)
            if isinstance(getattr(module, 'in_channels', None), int):
                return module.in_channels
    return None


class _DualGraphModule(fx.GraphModule):
    """A GraphModule holding a train graph and an eval graph; ``train()``/``eval()`` switch between them.

    ``feature_info`` (a :class:`FeatureInfo` of the outputs) is computed on first access by meta shape propagation
    at the model's pretrained input size, or at the ``input_size`` given at construction.
    """

    def _install_graphs(self, train_graph: fx.Graph, eval_graph: fx.Graph, training: bool) -> None:
        self.train_graph = train_graph
        self.eval_graph = eval_graph
        self.graph = train_graph if training else eval_graph
        self.training = training

    def train(self, mode: bool = True) -> '_DualGraphModule':
        """Switch to the train graph (``mode=True``) or the eval graph, and set every module's mode.

        >>> ext = create_feature_extractor(torch.nn.Sequential(torch.nn.Dropout()), ['0'])
        >>> ext.train().graph is ext.train_graph, ext.eval().graph is ext.eval_graph
        (True, True)
        """
        wanted = self.train_graph if mode else self.eval_graph
        if self.graph is not wanted:
            self.graph = wanted
        return super().train(mode)

    def __deepcopy__(self, memo: Dict[int, Any]) -> '_DualGraphModule':
        res = type(self).__new__(type(self))
        memo[id(self)] = res
        state = copy.deepcopy(self.__dict__, memo)
        graph = state.pop('_graph')
        res.__dict__.update(state)
        # Re-installing the graph generates forward on the copy's own class and makes it the graph's owner.
        res.graph = graph
        return res

    def _output_info(self) -> FeatureInfo:
        cached = self.__dict__.get('_feature_info')
        if cached is not None:
            return cached
        graph = self.eval_graph
        placeholders = [n for n in graph.nodes if n.op == 'placeholder']
        required = [n for n in placeholders if not n.args]
        model_name = self.__class__.__name__
        if len(required) != 1:
            raise RuntimeError(f'feature_info needs a model whose forward takes one image tensor; {model_name} takes '
                               f'{[n.target for n in required]}. Call get_graph_node_info(model, ...) on the '
                               'original model instead, or pass your own inputs through the extractor')
        size = self._info_input_size
        if size is None:
            size = self._default_size
            channels = _in_channels(graph, self)
            if channels is not None and len(size) == 3:
                size = (channels,) + tuple(size[1:])
        env, failure = _propagate(self, graph, [_meta_input(self, size, 1)])
        outputs = [n for n in graph.nodes if n.op == 'output'][0].args[0]
        items = list(outputs.items()) if isinstance(outputs, dict) else list(enumerate(outputs))
        levels = []
        for key, node in items:
            value = env.get(node)
            if not isinstance(value, torch.Tensor):
                detail = failure or f'output {key!r} is not a tensor'
                raise RuntimeError(f'could not compute feature_info for {model_name} from a meta input of shape '
                                   f'(1, {", ".join(map(str, size))}): {detail}. If the model expects another input '
                                   'size, pass input_size=(C, H, W) when creating the extractor')
            shape = tuple(value.shape)
            levels.append(dict(num_chs=_channels(shape), reduction=_reduction(shape, size),
                               module=self._output_queries[len(levels)], shape=shape))
        info = FeatureInfo(levels)
        self.__dict__['_feature_info'] = info
        return info

    @property
    def feature_info(self) -> FeatureInfo:
        """Channels, reduction, node name and shape of each output (computed once, by meta shape propagation).

        >>> ext = create_feature_extractor(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2)), ['0'])
        >>> ext.feature_info.channels(), ext.feature_info.reduction()
        ([8], [3])
        """
        return self._output_info()


class FeatureExtractor(_DualGraphModule):
    """What :func:`create_feature_extractor` returns: the model rewritten to return the selected nodes as a dict.

    Holds only the submodules, parameters and buffers the selected nodes need, under the model's own names.

    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> sorted(create_feature_extractor(net, ['1']).state_dict())
    ['0.bias', '0.weight']
    """

    def __init__(self, root: nn.Module, train_graph: fx.Graph, eval_graph: fx.Graph, class_name: str,
                 output_queries: Sequence[str], input_size: Optional[Tuple[int, ...]] = None) -> None:
        super().__init__(root, train_graph, class_name)
        for target in _graph_targets(eval_graph):
            _copy_target(root, self, target)
        self._output_queries = list(output_queries)
        self._info_input_size = input_size
        self._default_size = _default_input_size(root)
        self.pretrained_cfg = getattr(root, 'pretrained_cfg', None)
        self._install_graphs(train_graph, eval_graph, root.training)
        # As torchvision does: every module of the extractor follows the root's mode.
        self.train(root.training)


def _build_graphs(model: nn.Module, modes: Dict[str, Dict[str, str]], kwargs: Dict[str, Any],
                  concrete_args: Optional[Dict[str, Any]], suppress_diff_warning: bool,
                  finish: Callable[[fx.Graph, Dict[str, fx.Node], Dict[str, str]], Any]) -> Dict[str, fx.Graph]:
    graphs: Dict[str, fx.Graph] = {}
    names: Dict[str, List[str]] = {}
    for mode in ('train', 'eval'):
        tracer, graph = _trace(model, mode == 'train', kwargs, concrete_args)
        chosen = _select_nodes(tracer, list(modes[mode]), mode)
        _replace_output(graph, finish(graph, chosen, modes[mode]))
        _prune_graph(graph, model)
        graphs[mode] = graph
        names[mode] = list(tracer.node_to_qualname.values())
    if not suppress_diff_warning:
        _warn_graph_differences(names['train'], names['eval'])
    return graphs


def _drop_trace_constants(model: nn.Module, before: set) -> None:
    # FX parks tensors it met as Python constants on the traced root; once copied, the user's model gets its
    # attributes back as they were.
    for key in [k for k in vars(model) if k.startswith('_tensor_constant') and k not in before]:
        delattr(model, key)


def create_feature_extractor(model: nn.Module, return_nodes: Optional[ReturnNodes] = None,
                             train_return_nodes: Optional[ReturnNodes] = None,
                             eval_return_nodes: Optional[ReturnNodes] = None,
                             tracer_kwargs: Optional[Dict[str, Any]] = None, suppress_diff_warning: bool = False,
                             concrete_args: Optional[Dict[str, Any]] = None,
                             input_size: Optional[Sequence[int]] = None) -> FeatureExtractor:
    """A module returning ``{output name: value}`` for the selected nodes of ``model``, in the order given.

    ``return_nodes`` is a list of node names or a ``{node name: output name}`` dict; a truncated name selects the
    last node under it (``'layer4'`` is ``'layer4.2.relu_2'`` in a ResNet-50). Give either ``return_nodes`` or
    both ``train_return_nodes`` and ``eval_return_nodes``; ``.train()``/``.eval()`` switch graphs. Nodes and
    parameters the outputs do not need are removed. ``tracer_kwargs`` as in :func:`get_graph_node_names`. The
    result has a lazily computed ``feature_info``, at ``input_size`` or the model's pretrained input size.

    >>> m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.ReLU(), torch.nn.Linear(7, 2))
    >>> ext = create_feature_extractor(m, return_nodes={'1': 'act'}, input_size=(3, 16, 16))
    >>> ext.feature_info.channels(), ext.feature_info.reduction(), hasattr(ext, '2')
    ([4], [3], False)
    """
    _check_model(model)
    if return_nodes is None and train_return_nodes is None and eval_return_nodes is None:
        raise ValueError('give return_nodes, or train_return_nodes and eval_return_nodes together; '
                         'get_graph_node_names(model) lists the node names')
    if (train_return_nodes is None) != (eval_return_nodes is None):
        given = 'train_return_nodes' if train_return_nodes is not None else 'eval_return_nodes'
        raise ValueError(f'{given} was given alone; train_return_nodes and eval_return_nodes go together')
    if return_nodes is not None and train_return_nodes is not None:
        raise ValueError('give either return_nodes or train_return_nodes/eval_return_nodes, not both')
    if return_nodes is not None:
        modes = {mode: _as_return_dict(return_nodes, 'return_nodes') for mode in ('train', 'eval')}
    else:
        modes = {'train': _as_return_dict(train_return_nodes, 'train_return_nodes'),
                 'eval': _as_return_dict(eval_return_nodes, 'eval_return_nodes')}
    size = _check_input_size(input_size) if input_size is not None else None
    kwargs = _tracer_kwargs(tracer_kwargs)
    before = set(vars(model))

    def finish(graph: fx.Graph, chosen: Dict[str, fx.Node], mapping: Dict[str, str]) -> Dict[str, fx.Node]:
        return {mapping[q]: chosen[q] for q in mapping}

    try:
        graphs = _build_graphs(model, modes, kwargs, concrete_args, suppress_diff_warning, finish)
        return FeatureExtractor(model, graphs['train'], graphs['eval'], type(model).__name__,
                                output_queries=list(modes['eval']), input_size=size)
    finally:
        _drop_trace_constants(model, before)


def _tokens_to_map(tokens: torch.Tensor, image: torch.Tensor, num_prefix: int, reduction: int, pad: bool,
                   nhwc: bool) -> torch.Tensor:
    """Tokens ``(B, prefix + H*W, C)`` to a feature map on the patch grid of ``image``, NCHW (or NHWC)."""
    height, width = image.shape[-2], image.shape[-1]
    if pad:
        grid_h, grid_w = (height + reduction - 1) // reduction, (width + reduction - 1) // reduction
    else:
        grid_h, grid_w = height // reduction, width // reduction
    patches = tokens[:, num_prefix:]
    grid = patches.reshape(patches.shape[0], grid_h, grid_w, patches.shape[-1])
    return grid if nhwc else grid.permute(0, 3, 1, 2).contiguous()


# One named node when a wrapper's graph is traced again (a backbone inside a bigger traced model).
register_notrace_function(_tokens_to_map)


class FeatureFxNet(WrapperRules, _DualGraphModule):
    """Feature backbone from the FX graph of a model: the output of each ``feature_info`` level, or any nodes.

    With ``out_indices`` (the factory's ``feature_cls='fx'``) the return nodes are the selected levels' module
    names, so the outputs equal the family's default wrapper: token levels (models with ``num_prefix_tokens``)
    become NCHW maps on the patch grid, levels of models declaring ``output_fmt='NHWC'`` are permuted to NCHW,
    and ``output_fmt='NHWC'`` permutes back. With ``return_nodes`` (a list, or a ``{node: output name}`` dict) any
    nodes are returned unchanged and ``feature_info`` is computed on first access.

    The wrapper adopts the model's own module, parameter and buffer tables (like the other wrappers), removes
    every module that no node of either graph uses, and returns a list, or a dict when ``out_as_dict``, ``out_map``
    or a ``return_nodes`` dict is given.

    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten())
    >>> fx_net = FeatureFxNet(net, return_nodes={'1': 'act'})
    >>> list(fx_net(torch.randn(1, 3, 8, 8))), fx_net.feature_info.channels(), fx_net.dropped_modules
    (['act'], [8], ['2'])
    """

    OPTIONS = ('return_nodes', 'out_as_dict', 'tracer_kwargs', 'input_size')

    def __init__(self, model: nn.Module, out_indices: OutIndices = None, output_fmt: Optional[str] = None,
                 out_map: Optional[Sequence[str]] = None, return_nodes: Optional[ReturnNodes] = None,
                 out_as_dict: bool = False, feature_info: Optional[FeatureInfo] = None,
                 tracer_kwargs: Optional[Dict[str, Any]] = None, input_size: Optional[Sequence[int]] = None,
                 norm: bool = False, feature_pyramid: bool = False) -> None:
        from .wrappers import _check_out_map, _check_output_fmt
        _check_model(model)
        if norm:
            raise ValueError("norm=True applies the model's final norm in forward_intermediates; "
                             "use feature_cls='getter' for it")
        if feature_pyramid:
            raise ValueError("feature_pyramid=True needs feature_cls='getter'")
        if not isinstance(out_as_dict, bool):
            raise TypeError(f'out_as_dict must be True or False, got {out_as_dict!r}')
        fmt = _check_output_fmt(output_fmt)
        size = _check_input_size(input_size) if input_size is not None else None
        kwargs = _tracer_kwargs(tracer_kwargs)
        if return_nodes is not None:
            if out_indices is not None:
                raise ValueError('give either return_nodes or out_indices, not both')
            if out_map is not None:
                raise ValueError('out_map names feature levels; with return_nodes give a dict '
                                 '{node name: output name} instead')
            if fmt != 'NCHW':
                raise ValueError("output_fmt applies to feature levels; return_nodes outputs are returned as the "
                                 "graph computes them, so leave output_fmt unset")
            mapping = _as_return_dict(return_nodes, 'return_nodes')
            output_dict = out_as_dict or isinstance(return_nodes, Mapping)
            info = None
            conversions: Dict[str, Optional[Callable]] = {}
        else:
            levels = feature_info.info if feature_info is not None else getattr(model, 'feature_info', None)
            if not levels:
                raise ValueError(f'{type(model).__name__} declares no feature_info; pass return_nodes to choose '
                                 'nodes (see get_graph_node_names(model))')
            info = FeatureInfo(levels, out_indices)
            modules = info.module_name()
            repeated = sorted({m for m in modules if modules.count(m) > 1})
            if repeated:
                raise ValueError(f'feature levels {repeated} name the same module twice')
            names = _check_out_map(out_map, len(info)) or tuple(modules)
            mapping = dict(zip(modules, names))
            output_dict = bool(out_as_dict or out_map)
            conversions = self._level_conversions(model, info, fmt)

        before = set(vars(model))

        def finish(graph: fx.Graph, chosen: Dict[str, fx.Node], queries: Dict[str, str]) -> Any:
            image = next(n for n in graph.nodes if n.op == 'placeholder')
            values = []
            for query in queries:
                convert = conversions.get(query)
                values.append(convert(graph, chosen[query], image) if convert is not None else chosen[query])
            return dict(zip(queries.values(), values)) if output_dict else values

        graphs = _build_graphs(model, {'train': dict(mapping), 'eval': dict(mapping)}, kwargs, None, True, finish)
        constants = {k: getattr(model, k) for k in vars(model) if k.startswith('_tensor_constant')
                     and k not in before}
        _drop_trace_constants(model, before)
        unknown = sorted(k for k, v in constants.items() if isinstance(v, torch.Tensor) and v.is_meta)
        if unknown:
            raise RuntimeError(
                f'tracing {type(model).__name__} turned tensors computed from its buffers into graph constants '
                f'({len(unknown)}, e.g. an index reshaped with .view()), and the model is on the meta device, so '
                'their values are unknown. The model should pass buffers to ops unchanged (FX then reads them '
                'from the module) or compute them in a function registered with register_notrace_function')

        fx.GraphModule.__init__(self, {}, _empty_graph(), type(model).__name__)
        adopt_module_tables(self, model)
        for key, value in constants.items():
            self.register_buffer(key, value, persistent=False)
        self.dropped_modules = _prune_unused(model, _graph_targets(graphs['train'], graphs['eval']))
        self.output_fmt = fmt
        self.output_dict = output_dict
        self.pretrained_cfg = getattr(model, 'pretrained_cfg', None)
        self._output_queries = list(mapping)
        self._info_input_size = size
        self._default_size = _default_input_size(model)
        if info is not None:
            self.__dict__['_feature_info'] = info
        self._install_graphs(graphs['train'], graphs['eval'], model.training)

    @staticmethod
    def _level_conversions(model: nn.Module, info: FeatureInfo, fmt: str) -> Dict[str, Optional[Callable]]:
        num_prefix = getattr(model, 'num_prefix_tokens', None)
        model_fmt = getattr(model, 'output_fmt', 'NCHW')
        pad = bool(getattr(getattr(model, 'patch_embed', None), 'dynamic_img_pad', False))
        conversions: Dict[str, Optional[Callable]] = {}
        for level in info.get_dicts():
            module, reduction = level['module'], level['reduction']
            if isinstance(num_prefix, int) and not isinstance(num_prefix, bool):
                def convert(graph, node, image, reduction=reduction):
                    return graph.call_function(_tokens_to_map, (node, image, num_prefix, reduction, pad,
                                                                fmt == 'NHWC'))
            elif model_fmt != fmt:
                order = (0, 3, 1, 2) if fmt == 'NCHW' else (0, 2, 3, 1)

                def convert(graph, node, image, order=order):
                    return graph.call_method('permute', (node,) + order)
            else:
                convert = None
            conversions[module] = convert
        return conversions

    def model_ref(self) -> nn.Module:
        """The wrapped model object (pruned): its methods run on the same modules as this wrapper.

        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.ReLU())
        >>> FeatureFxNet(net, return_nodes=['0']).model_ref() is net
        True
        """
        return self._wrapped

    @property
    def default_cfg(self) -> Optional[Dict[str, Any]]:
        """The wrapped model's pretrained configuration (timm's older name for it).

        >>> FeatureFxNet(torch.nn.Sequential(torch.nn.ReLU()), return_nodes=['0']).default_cfg is None
        True
        """
        return self.pretrained_cfg


def _empty_graph() -> fx.Graph:
    graph = fx.Graph()
    graph.output(None)
    return graph


def _prune_unused(model: nn.Module, targets: Sequence[str]) -> List[str]:
    """Delete every submodule that no target is in or under; return the dropped names."""
    used = set(targets)
    ancestors = {'.'.join(t.split('.')[:i]) for t in used for i in range(1, t.count('.') + 1)}
    dropped: List[str] = []

    def walk(module: nn.Module, prefix: str) -> None:
        for name in list(module._modules):
            path = f'{prefix}{name}'
            if path in used:
                continue
            if path in ancestors:
                child = module._modules[name]
                if child is not None:
                    walk(child, path + '.')
                continue
            del module._modules[name]
            dropped.append(path)

    walk(model, '')
    return dropped
