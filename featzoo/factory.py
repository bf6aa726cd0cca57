"""create_model: one path from a name to a (wrapped, weighted) model, for every family.

name -> source (registry / hf-hub: / local-dir:) -> pretrained config -> checked arguments and feature request
(:func:`plan_model`, nothing built yet) -> family build (on the meta device when weights follow) -> weights -> wrapper.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from . import _import_module, registry
from .checks import check_int, check_rate
from .errors import WeightsUnavailableError
from .family import COMMON_ARGS, FEATURE_CLS_ALL
from .features.info import OutIndices, normalize_out_indices
from .features import wrappers
from .weights import catalog, hub, loading

HUB_PREFIX = 'hf-hub:'
LOCAL_PREFIX = 'local-dir:'
# create_model keywords that configure the feature wrapper rather than the network; each wrapper says which it takes
WRAPPER_OPTIONS = ('return_nodes', 'out_as_dict', 'feature_pyramid', 'norm', 'tracer_kwargs')


def parse_model_name(model_name: str) -> Tuple[str, str]:
    """Split a model name into its source (``''``, ``'hf-hub'`` or ``'local-dir'``) and the rest.

    >>> parse_model_name('hf-hub:timm/resnet50.a1_in1k')
    ('hf-hub', 'timm/resnet50.a1_in1k')
    >>> parse_model_name('resnet50')
    ('', 'resnet50')
    """
    if not isinstance(model_name, str):
        raise TypeError(f'model_name must be a str, got {type(model_name).__name__}: {model_name!r}')
    if model_name.startswith(HUB_PREFIX):
        return 'hf-hub', model_name[len(HUB_PREFIX):]
    if model_name.startswith(LOCAL_PREFIX):
        return 'local-dir', model_name[len(LOCAL_PREFIX):]
    return '', model_name


@dataclass
class FeatureRequest:
    """How the built network is wrapped: checked against the levels of the network that will be built."""

    feature_cls: str
    wrapper: type
    out_indices: Any  # normalized level indices; None where the wrapper chooses (pyramid, return_nodes)
    output_fmt: Optional[str]
    out_map: Optional[Sequence[str]]
    options: Dict[str, Any]


@dataclass
class ModelPlan:
    """Everything ``create_model`` decides before any tensor exists: one resolved request.

    The stages fill it in order: source -> pretrained config -> checked arguments -> feature request; then the
    network is built (on the meta device when weights follow), weighted and wrapped.
    """

    name: str
    arch: str
    entry: Dict[str, Any]
    pretrained_cfg: Dict[str, Any]
    build_kwargs: Dict[str, Any] = field(default_factory=dict)
    structural: bool = False  # constructor arguments beyond the common ones: the index's levels may not apply
    weights_path: Optional[str] = None
    fresh_classifier_expected: bool = False
    features: Optional[FeatureRequest] = None
    skeleton: Optional[nn.Module] = None  # a meta build made to read the levels, reused when weights follow

    @property
    def spec(self) -> Any:
        """The family's :class:`featzoo.family.FamilySpec`; importing the family is deferred to the first use, so
        that arguments the index can check are refused before any family code loads."""
        return registry.family_spec(self.entry['family'])


# ---- stage 1: source ------------------------------------------------------------------------------------------------

def _resolve_source(model_name: str, cache_dir: Optional[str], pretrained: bool) -> Tuple[str, Dict[str, Any]]:
    """The architecture (``arch`` or ``arch.tag``) and, for ``hf-hub:``/``local-dir:``, what its config.json says."""
    source, rest = parse_model_name(model_name)
    if not source:
        return rest, {}
    loaded = hub.load_model_config(model_name, cache_dir=cache_dir, download_weights=pretrained)
    return loaded['architecture'], loaded


# ---- stage 3: arguments ---------------------------------------------------------------------------------------------

def _check_feature_request(plan: ModelPlan, levels: Sequence[Dict[str, Any]], feature_cls: Optional[str],
                           out_indices: Any, output_fmt: Optional[str], out_map: Optional[Sequence[str]],
                           options: Dict[str, Any]) -> FeatureRequest:
    arch, entry = plan.arch, plan.entry
    allowed = tuple(entry['feature_cls'])
    if feature_cls is None:
        feature_cls = entry['default_feature_cls']
    if not isinstance(feature_cls, str):
        raise TypeError(f'feature_cls must be a str, one of {allowed}; got {feature_cls!r}')
    feature_cls = feature_cls.lower()
    if feature_cls not in FEATURE_CLS_ALL:
        raise ValueError(f'unknown feature_cls {feature_cls!r}; {arch!r} supports {allowed}')
    if feature_cls not in allowed:
        raise ValueError(f'feature_cls={feature_cls!r} cannot serve {arch!r}; it supports {allowed}')
    if feature_cls == 'fx':
        wrapper = _import_module('featzoo.features.fx').FeatureFxNet  # FX costs import time: only fx needs it
    else:
        wrapper = wrappers.WRAPPERS[feature_cls]
    if options.get('return_nodes') is not None and feature_cls != 'fx':
        raise ValueError("return_nodes selects FX graph nodes and needs feature_cls='fx'")
    if options.get('feature_pyramid') and feature_cls != 'getter':
        raise ValueError(f"feature_pyramid=True needs feature_cls='getter', not {feature_cls!r}")
    wrapper.check_request(feature_cls, out_map, options)
    if options.get('feature_pyramid') and plan.spec.feature_pyramid is None:
        raise ValueError(f"feature_pyramid=True is available for plain ViT families only; {arch!r} "
                         f"({entry['family']}) has no simple pyramid")
    indices = None
    if options.get('return_nodes') is not None:
        if out_indices is not None:
            raise ValueError('give either return_nodes or out_indices, not both')
    elif not (options.get('feature_pyramid') and out_indices is None):  # a pyramid picks its own levels
        if out_indices is None:
            default = entry.get('default_out_indices')
            out_indices = tuple(range(len(levels))) if default is None else default
            if isinstance(out_indices, int):  # 'the last n', capped by a network made shallower than its row
                out_indices = min(out_indices, len(levels))
        indices = normalize_out_indices(out_indices, len(levels))
    return FeatureRequest(feature_cls, wrapper, indices, output_fmt, out_map, options)


def _planned_levels(plan: ModelPlan, output_stride: Optional[int], load_on_meta: bool) -> List[Dict[str, Any]]:
    """The feature levels of the network that will be built: from the index, or (when constructor arguments
    change the structure) from a build on the meta device, which allocates nothing and is reused when weights follow.
    """
    if not plan.structural:
        key = str(output_stride if output_stride is not None else max(plan.entry['output_strides']))
        return [dict(level) for level in plan.entry['feature_levels'][key]]
    with loading.meta_skeleton():
        skeleton = plan.spec.build(plan.arch, **plan.build_kwargs)
    if load_on_meta:
        plan.skeleton = skeleton
    return [dict(level) for level in skeleton.feature_info]


# ---- stages 4-6: build, weights, wrapper ----------------------------------------------------------------------------

def _build(plan: ModelPlan) -> nn.Module:
    if plan.skeleton is not None:
        model, plan.skeleton = plan.skeleton, None
    elif plan.weights_path is not None:
        with loading.meta_skeleton():
            model = plan.spec.build(plan.arch, **plan.build_kwargs)
    else:
        model = plan.spec.build(plan.arch, **plan.build_kwargs)
    model.pretrained_cfg = model.default_cfg = plan.pretrained_cfg  # timm answers both names with one dict
    # what save_pretrained records so that timm and featzoo rebuild the same architecture
    model._model_args = {k: v for k, v in plan.build_kwargs.items()
                         if k not in ('drop_rate', 'drop_path_rate', 'num_classes')}
    return model


def _wrap(model: nn.Module, plan: ModelPlan) -> nn.Module:
    request = plan.features
    options = dict(request.options)
    indices = request.out_indices
    if options.pop('feature_pyramid', False):
        extra = plan.spec.feature_pyramid(model, indices)
        indices = extra.pop('out_indices', indices)
        options.update(extra)
    return request.wrapper(model, out_indices=indices, output_fmt=request.output_fmt, out_map=request.out_map,
                           **options)


def create_model(
        model_name: str,
        pretrained: bool = False,
        pretrained_cfg: Optional[Dict[str, Any]] = None,
        pretrained_cfg_overlay: Optional[Dict[str, Any]] = None,
        checkpoint_path: Optional[Union[str, os.PathLike]] = None,
        cache_dir: Optional[Union[str, os.PathLike]] = None,
        num_classes: Optional[int] = None,
        in_chans: Optional[int] = None,
        global_pool: Optional[str] = None,
        features_only: bool = False,
        out_indices: Optional[OutIndices] = None,
        output_stride: Optional[int] = None,
        feature_cls: Optional[str] = None,
        output_fmt: Optional[str] = None,
        out_map: Optional[Sequence[str]] = None,
        drop_rate: float = 0.0,
        drop_path_rate: Optional[float] = None,
        freeze: Optional[Union[int, Sequence[str]]] = None,
        freeze_bn: str = 'frozen',
        **kwargs: Any,
) -> nn.Module:
    """Build a registered model, optionally with weights, optionally wrapped as a feature backbone.

    Every argument is checked, against what will actually be built, before any tensor is allocated.

    >>> m = create_model('resnet50', features_only=True, out_indices=(1, 2, 3, 4), output_stride=16)
    >>> m.feature_info.channels(), m.feature_info.reduction()
    ([256, 512, 1024, 2048], [4, 8, 16, 16])
    """
    plan = plan_model(model_name, pretrained=pretrained, pretrained_cfg=pretrained_cfg,
                      pretrained_cfg_overlay=pretrained_cfg_overlay, checkpoint_path=checkpoint_path,
                      cache_dir=cache_dir, num_classes=num_classes, in_chans=in_chans, global_pool=global_pool,
                      features_only=features_only, out_indices=out_indices, output_stride=output_stride,
                      feature_cls=feature_cls, output_fmt=output_fmt, out_map=out_map, drop_rate=drop_rate,
                      drop_path_rate=drop_path_rate, freeze=freeze, freeze_bn=freeze_bn, **kwargs)
    # a full model needs every tensor of its file: read them on another core while this one builds the skeleton
    # (a features_only wrapper may drop whole stages, whose tensors are then never read)
    pending = (loading.BackgroundRead(plan.weights_path)
               if plan.weights_path is not None and plan.features is None else None)
    model = _build(plan)
    full_keys = set(model.state_dict().keys()) if plan.weights_path is not None else None
    filter_model = model
    if plan.features is not None:
        model = _wrap(model, plan)
    if plan.weights_path is not None:
        cfg = plan.pretrained_cfg
        loading.load_weights(model, plan.weights_path, full_keys=full_keys, first_conv=cfg.get('first_conv'),
                             classifier=cfg.get('classifier'), filter_fn=plan.spec.checkpoint_filter,
                             filter_model=filter_model, assign=True, prefetched=pending,
                             allow_fresh_classifier=plan.fresh_classifier_expected)
        del pending
        loading.materialize_meta(model)
    if freeze is not None:
        # rarely used: imported on demand (through featzoo's import lock, so first use from threads is safe)
        _import_module('featzoo.finetune').freeze(model, levels=freeze, bn=freeze_bn)
    return model


def plan_model(model_name: str, pretrained: bool = False, pretrained_cfg: Optional[Dict[str, Any]] = None,
               pretrained_cfg_overlay: Optional[Dict[str, Any]] = None,
               checkpoint_path: Optional[Union[str, os.PathLike]] = None,
               cache_dir: Optional[Union[str, os.PathLike]] = None, num_classes: Optional[int] = None,
               in_chans: Optional[int] = None, global_pool: Optional[str] = None, features_only: bool = False,
               out_indices: Optional[OutIndices] = None, output_stride: Optional[int] = None,
               feature_cls: Optional[str] = None, output_fmt: Optional[str] = None,
               out_map: Optional[Sequence[str]] = None, drop_rate: float = 0.0, drop_path_rate: Optional[float] = None,
               freeze: Optional[Union[int, Sequence[str]]] = None, freeze_bn: str = 'frozen',
               **kwargs: Any) -> ModelPlan:
    """Resolve and check everything :func:`create_model` would do, without building: the name's source and
    pretrained config, the constructor arguments, the weights file, and the feature request checked against the
    levels of the network that would be built. Takes :func:`create_model`'s arguments.

    >>> plan = plan_model('resnet50', features_only=True, out_indices=(-1,), output_stride=8)
    >>> plan.arch, plan.features.out_indices, plan.build_kwargs['output_stride']
    ('resnet50', (4,), 8)
    """
    if not isinstance(pretrained, bool):
        raise TypeError(f'pretrained must be True or False, got {pretrained!r}')
    if not isinstance(features_only, bool):
        raise TypeError(f'features_only must be True or False, got {features_only!r}')
    if pretrained_cfg is not None and not isinstance(pretrained_cfg, dict):
        raise TypeError(f'pretrained_cfg must be a dict, got {type(pretrained_cfg).__name__}')
    if freeze_bn not in ('frozen', 'eval', 'train'):
        raise ValueError(f"unknown freeze_bn {freeze_bn!r}; valid: ('frozen', 'eval', 'train')")
    if pretrained and checkpoint_path is not None:
        raise ValueError('give either pretrained=True or checkpoint_path, not both '
                         '(checkpoint_path already loads weights)')
    cache = os.fspath(cache_dir) if cache_dir is not None else None

    # 1. source
    arch_name, loaded = _resolve_source(model_name, cache, pretrained)
    arch_name = registry.resolve_deprecated_name(arch_name)
    entry = registry.get_arch_entry(arch_name)
    arch, tag = registry.split_model_name_tag(arch_name)

    # 2. pretrained config: family defaults <- published tag (names only) <- config.json <- pretrained_cfg <- overlay
    cfg = catalog.pretrained_cfg(arch_name, base={**(loaded.get('pretrained_cfg') or {}), **(pretrained_cfg or {})},
                                 overlay=pretrained_cfg_overlay, use_published=not loaded)
    if loaded.get('file'):
        cfg['file'] = loaded['file']
    plan = ModelPlan(name=model_name, arch=arch, entry=entry, pretrained_cfg=cfg)

    # 3. arguments
    explicit_classes = num_classes is not None  # the caller's own head; a config.json's count describes its weights
    if num_classes is None:
        num_classes = loaded.get('num_classes')
    if num_classes is None:
        num_classes = cfg.get('num_classes', 1000)
    build_kwargs: Dict[str, Any] = dict(loaded.get('model_args') or {})
    build_kwargs.update(num_classes=check_int('num_classes', num_classes, 0), drop_rate=check_rate('drop_rate', drop_rate))
    if in_chans is not None:
        build_kwargs['in_chans'] = check_int('in_chans', in_chans, 1)
    if drop_path_rate is not None:
        build_kwargs['drop_path_rate'] = check_rate('drop_path_rate', drop_path_rate)
    if global_pool is not None:
        if not isinstance(global_pool, str):
            raise TypeError(f"global_pool must be a str such as 'avg', 'max' or '' (none); got {global_pool!r}")
        build_kwargs['global_pool'] = global_pool
    strides = tuple(entry['output_strides'])
    if output_stride is not None:
        if isinstance(output_stride, bool) or not isinstance(output_stride, int) or output_stride not in strides:
            raise ValueError(f'output_stride={output_stride!r} is not supported by {arch!r}; valid: {strides}')
        build_kwargs['output_stride'] = output_stride
    options = {k: kwargs.pop(k) for k in WRAPPER_OPTIONS if k in kwargs}
    if options.get('feature_pyramid') is False:
        del options['feature_pyramid']
    build_kwargs.update(kwargs)
    plan.build_kwargs = build_kwargs
    plan.structural = bool(set(build_kwargs) - set(COMMON_ARGS))

    if pretrained:
        plan.weights_path = _weights_file(arch_name, entry, tag, cfg, cache)
    elif checkpoint_path is not None:
        plan.weights_path = loading._check_file(checkpoint_path)  # names the argument when it is not a path
    plan.fresh_classifier_expected = explicit_classes or features_only

    # 4. the feature request, against the levels of what will be built
    if features_only:
        levels = _planned_levels(plan, output_stride, load_on_meta=plan.weights_path is not None)
        plan.features = _check_feature_request(plan, levels, feature_cls, out_indices, output_fmt, out_map, options)
    else:
        given = {k: v for k, v in dict(out_indices=out_indices, feature_cls=feature_cls, output_fmt=output_fmt,
                                       out_map=out_map, **options).items() if v is not None and v is not False}
        if given:
            raise ValueError(f'{sorted(given)} only apply with features_only=True')
    return plan


def _weights_file(arch_name: str, entry: Dict[str, Any], tag: str, cfg: Dict[str, Any], cache_dir: Optional[str]) -> str:
    file = cfg.get('file')
    if file:
        return os.fspath(file)
    if not cfg.get('hf_hub_id') and not cfg.get('url'):
        what = f'tag {tag!r} of {arch_name.split(".")[0]!r} has' if tag else f'{arch_name!r} has'
        raise ValueError(f'{what} no published pretrained weights; build it with pretrained=False, or pass your own '
                         f"file: checkpoint_path='weights.safetensors' or "
                         f"pretrained_cfg_overlay=dict(file='weights.safetensors')")
    return hub.resolve_pretrained_file(cfg, cache_dir=cache_dir)


# ---- the weighted model of featzoo's commands -------------------------------------------------------------------

def _pretrained_reason(exc: BaseException) -> str:
    # The weights layer explains how to supply files to create_model; here the options are the commands' own.
    text = str(exc)
    cut = text.find(' Supply them')
    return (text[:cut] if cut > 0 else text).rstrip('. ')


def _weights_help(name: str, cli: bool) -> str:
    """What supplies weights, in the arguments of featzoo's commands (``cli``) or of the Python functions."""
    cfg = registry.get_pretrained_cfg(name) if not parse_model_name(name)[0] else None
    repo = (cfg or {}).get('hf_hub_id')
    cache = (f'download them where the Hub is reachable (`hf download {repo}`) and copy that Hugging Face cache '
             f'here or point HF_HUB_CACHE at it' if repo else 'make the Hub reachable')
    if cli:
        return f'give a weights file with --checkpoint FILE, {cache}, or pass --no-pretrained to run with random weights'
    return (f"pass checkpoint='weights.safetensors', {cache}, or pass pretrained=False to run with random weights")


def _unavailable(text: str, name: str) -> WeightsUnavailableError:
    # Python callers get Python arguments; the featzoo command prints cli_text, worded in its flags.
    exc = WeightsUnavailableError(text + _weights_help(name, cli=False))
    exc.cli_text = text + _weights_help(name, cli=True)  # type: ignore[attr-defined]
    return exc


def build_with_weights(name: str, checkpoint: Optional[Union[str, os.PathLike]] = None, pretrained: bool = True, seed: int = 0,
                       **kwargs: Any) -> Tuple[nn.Module, Dict[str, Any]]:
    """``create_model(name, **kwargs)`` with the weight rules of featzoo's commands (extract, visualize), and a
    description of the weights' source.

    ``checkpoint`` wins; else the default pretrained tag, whose absence (offline, not cached, never published) is a
    :class:`WeightsUnavailableError` naming the options that supply weights; ``pretrained=False`` gives random
    weights drawn from ``seed``, identical in every process and every resumed run.

    >>> model, source = build_with_weights('resnet18', pretrained=False, num_classes=0)
    >>> source
    {'source': 'random', 'seed': 0}
    """
    if checkpoint is not None:
        path = os.path.abspath(os.fspath(checkpoint))
        return create_model(name, checkpoint_path=path, **kwargs), {'source': 'checkpoint', 'file': path}
    if not pretrained:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = create_model(name, **kwargs)
        return model, {'source': 'random', 'seed': seed}
    source, rest = parse_model_name(name)
    if not source and not registry.get_arch_entry(rest).get('pretrained'):
        raise _unavailable(f'{name!r} has no published pretrained weights; to run it, ', name)
    try:
        model = create_model(name, pretrained=True, **kwargs)
    except hub.PretrainedUnavailableError as exc:
        raise _unavailable(f'no weights for {name!r}: {_pretrained_reason(exc)}. To run anyway, ', name) from exc
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    tag = cfg.get('tag')
    label = f"{cfg.get('architecture', rest)}.{tag}" if tag and not source else name
    return model, {'source': 'pretrained', 'name': label, 'hf_hub_id': cfg.get('hf_hub_id')}
