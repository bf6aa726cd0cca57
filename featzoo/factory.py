"""create_model: one path from a name to a (wrapped, weighted) model, for every family.

name -> registry entry -> pretrained config -> validated arguments -> family module -> weights -> wrapper.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence, Tuple, Union

from torch import nn

from . import _import_module, registry
from .features.info import OutIndices, normalize_out_indices
from .features import wrappers
from .layers import onednn
from .weights import hub, loading

HUB_PREFIX = 'hf-hub:'
LOCAL_PREFIX = 'local-dir:'
FEATURE_CLS_ALL = ('list', 'dict', 'hook', 'getter', 'fx')


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


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f'{name} must be an int >= {minimum}, got {value!r}')
    if value < minimum:
        raise ValueError(f'{name}={value} is invalid; it must be >= {minimum}')
    return value


def _check_rate(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f'{name} must be a float in [0, 1), got {value!r}')
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f'{name}={value} is invalid; it must be in [0, 1)')
    return float(value)


def _resolve_pretrained_cfg(arch_name: str, entry: Dict[str, Any], overlay: Optional[Dict[str, Any]],
                            base: Optional[Dict[str, Any]] = None, use_published: bool = True) -> Dict[str, Any]:
    header = registry.get_family_header(entry['family'])
    cfg: Dict[str, Any] = dict(header.get('default_cfg', {}))
    # a Hub or local-dir config describes its own weights: the catalog's facts for the default tag do not apply
    published = registry.get_pretrained_cfg(arch_name) if use_published else None
    if published:
        cfg.update(published)
    else:
        cfg['architecture'] = registry.split_model_name_tag(arch_name)[0]
    if base:
        cfg.update(base)
    if overlay is not None:
        if not isinstance(overlay, dict):
            raise TypeError(f'pretrained_cfg_overlay must be a dict, got {type(overlay).__name__}')
        cfg.update(overlay)
    return cfg


def _weights_file(arch_name: str, entry: Dict[str, Any], cfg: Dict[str, Any], cache_dir: Optional[str]) -> str:
    file = cfg.get('file')
    if file:
        return os.fspath(file)
    if not entry.get('pretrained') and not cfg.get('hf_hub_id'):
        raise ValueError(f'{arch_name!r} has no published pretrained weights; build it with pretrained=False, or '
                         f"pass your own file: checkpoint_path='weights.safetensors' or "
                         f"pretrained_cfg_overlay=dict(file='weights.safetensors')")
    return hub.resolve_pretrained_file(cfg, cache_dir=cache_dir)


def _validate_features(entry: Dict[str, Any], arch: str, output_stride: int, feature_cls: Optional[str],
                       out_indices: Optional[OutIndices], extras: Dict[str, Any], structural: bool):
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
    levels = entry['feature_levels'][str(output_stride)]
    indices = None
    if extras.get('return_nodes') is not None:
        if feature_cls != 'fx':
            raise ValueError("return_nodes selects FX graph nodes and needs feature_cls='fx'")
        if out_indices is not None:
            raise ValueError('give either return_nodes or out_indices, not both')
    elif extras.get('feature_pyramid') and out_indices is None:
        indices = None  # the family picks its pyramid levels
    else:
        if out_indices is None:
            default = entry.get('default_out_indices')
            out_indices = default if default is not None else tuple(range(len(levels)))
        # constructor overrides (depth=...) change the levels: those are checked against the built model
        indices = out_indices if structural else normalize_out_indices(out_indices, len(levels))
    return feature_cls, levels, indices


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

    >>> m = create_model('resnet50', features_only=True, out_indices=(1, 2, 3, 4), output_stride=16)
    >>> m.feature_info.channels(), m.feature_info.reduction()
    ([256, 512, 1024, 2048], [4, 8, 16, 16])
    """
    source, rest = parse_model_name(model_name)
    hub_cfg: Dict[str, Any] = {}
    model_args: Dict[str, Any] = {}
    hub_file: Optional[str] = None
    if source:
        loaded = hub.load_model_config(model_name, cache_dir=os.fspath(cache_dir) if cache_dir else None,
                                       download_weights=bool(pretrained))
        arch_name = loaded['architecture']
        hub_cfg = dict(loaded.get('pretrained_cfg') or {})
        model_args = dict(loaded.get('model_args') or {})
        hub_file = loaded.get('file')
        if num_classes is None and loaded.get('num_classes') is not None:
            num_classes = loaded['num_classes']
    else:
        arch_name = rest
    entry = registry.get_arch_entry(arch_name)
    arch = registry.split_model_name_tag(arch_name)[0]

    if not isinstance(pretrained, bool):
        raise TypeError(f'pretrained must be True or False, got {pretrained!r}')
    if pretrained_cfg is not None and not isinstance(pretrained_cfg, dict):
        raise TypeError(f'pretrained_cfg must be a dict, got {type(pretrained_cfg).__name__}')
    cfg = _resolve_pretrained_cfg(arch_name, entry, pretrained_cfg_overlay, base={**hub_cfg, **(pretrained_cfg or {})},
                                  use_published=not source)
    if hub_file:
        cfg['file'] = hub_file

    if num_classes is None:
        num_classes = cfg.get('num_classes', 1000)
    num_classes = _check_int('num_classes', num_classes, 0)
    if in_chans is not None:
        in_chans = _check_int('in_chans', in_chans, 1)
    drop_rate = _check_rate('drop_rate', drop_rate)
    if drop_path_rate is not None:
        drop_path_rate = _check_rate('drop_path_rate', drop_path_rate)
    if global_pool is not None and not isinstance(global_pool, str):
        raise TypeError(f"global_pool must be a str such as 'avg', 'max' or '' (none); got {global_pool!r}")

    strides = tuple(entry['output_strides'])
    if output_stride is not None:
        if isinstance(output_stride, bool) or not isinstance(output_stride, int) or output_stride not in strides:
            raise ValueError(f'output_stride={output_stride!r} is not supported by {arch!r}; supported: {strides}')
    effective_stride = output_stride if output_stride is not None else max(strides)

    feature_kwargs = {k: kwargs.pop(k) for k in ('return_nodes', 'out_as_dict', 'feature_pyramid', 'norm')
                      if k in kwargs}
    if feature_kwargs.get('feature_pyramid') is False:
        del feature_kwargs['feature_pyramid']
    if not isinstance(features_only, bool):
        raise TypeError(f'features_only must be True or False, got {features_only!r}')
    if features_only:
        feature_cls, levels, indices = _validate_features(entry, arch, effective_stride, feature_cls, out_indices,
                                                          feature_kwargs, structural=bool(kwargs))
    else:
        given = {k: v for k, v in dict(out_indices=out_indices, feature_cls=feature_cls, output_fmt=output_fmt,
                                       out_map=out_map, **feature_kwargs).items() if v is not None and v is not False}
        if given:
            raise ValueError(f'{sorted(given)} only apply with features_only=True')

    if freeze_bn not in ('frozen', 'eval', 'train'):
        raise ValueError(f"unknown freeze_bn {freeze_bn!r}; valid: ('frozen', 'eval', 'train')")
    if pretrained and checkpoint_path is not None:
        raise ValueError('give either pretrained=True or checkpoint_path, not both '
                         '(checkpoint_path already loads weights)')
    weights_path: Optional[str] = None
    if pretrained:
        weights_path = _weights_file(arch_name, entry, cfg, cache_dir)
    elif checkpoint_path is not None:
        weights_path = loading._check_file(checkpoint_path)  # names the argument when it is not a path

    build_kwargs: Dict[str, Any] = dict(model_args)
    build_kwargs.update(num_classes=num_classes, drop_rate=drop_rate)
    if in_chans is not None:
        build_kwargs['in_chans'] = in_chans
    if global_pool is not None:
        build_kwargs['global_pool'] = global_pool
    if output_stride is not None:
        build_kwargs['output_stride'] = output_stride
    if drop_path_rate is not None:
        build_kwargs['drop_path_rate'] = drop_path_rate
    build_kwargs.update(kwargs)

    spec = registry.family_spec(entry['family'])
    # a full model needs every tensor of its file: read them on another core while this one builds the skeleton
    # (a features_only wrapper may drop whole stages, whose tensors are then never read)
    pending = loading.BackgroundRead(weights_path) if weights_path is not None and not features_only else None
    load_on_meta = weights_path is not None
    if load_on_meta:
        with loading.meta_skeleton():
            model = spec.build(arch, **build_kwargs)
    else:
        model = spec.build(arch, **build_kwargs)
    # opt-in fast path of float32 CPU inference (featzoo.layers.onednn.set_enabled / FEATZOO_ONEDNN=1)
    onednn.prepack_convolutions(model)
    model.pretrained_cfg = cfg
    # what save_pretrained records so that timm and featzoo rebuild the same architecture
    model._model_args = {k: v for k, v in build_kwargs.items()
                         if k not in ('drop_rate', 'drop_path_rate', 'num_classes')}
    full_keys = set(model.state_dict().keys()) if weights_path is not None else None
    filter_model = model

    if features_only:
        if out_indices is None and isinstance(indices, int):  # a family's default 'last n' may exceed a shrunk depth
            indices = min(indices, len(model.feature_info))
        model = _wrap(model, feature_cls, indices, output_fmt, out_map, feature_kwargs, spec)

    if weights_path is not None:
        loading.load_weights(model, weights_path, full_keys=full_keys, first_conv=cfg.get('first_conv'),
                             classifier=cfg.get('classifier'), filter_fn=spec.checkpoint_filter,
                             filter_model=filter_model, assign=True, prefetched=pending)
        del pending
        loading.materialize_meta(model)
    if freeze is not None:
        # rarely used: imported on demand (through featzoo's import lock, so first use from threads is safe)
        _import_module('featzoo.finetune').freeze(model, levels=freeze, bn=freeze_bn)
    return model


def _wrap(model: nn.Module, feature_cls: str, indices, output_fmt, out_map, feature_kwargs, spec) -> nn.Module:
    if feature_cls == 'fx':
        fx = _import_module('featzoo.features.fx')  # the FX machinery costs import time; only fx needs it
        return fx.FeatureFxNet(model, out_indices=indices, output_fmt=output_fmt, out_map=out_map, **feature_kwargs)
    if feature_cls == 'getter':
        pyramid = feature_kwargs.pop('feature_pyramid', False)
        extra = {}
        if pyramid:
            if spec.feature_pyramid is None:
                raise ValueError('feature_pyramid=True is available for plain ViT families only')
            extra = spec.feature_pyramid(model, indices)
            indices = extra.pop('out_indices', indices)
        if feature_kwargs.keys() - {'norm'}:
            raise ValueError(f"{sorted(feature_kwargs.keys() - {'norm'})} do not apply to feature_cls='getter'")
        return wrappers.FeatureGetterNet(model, out_indices=indices, output_fmt=output_fmt, out_map=out_map,
                                         **feature_kwargs, **extra)
    if feature_kwargs.get('feature_pyramid'):
        raise ValueError(f"feature_pyramid=True needs feature_cls='getter', not {feature_cls!r}")
    if feature_cls == 'hook':
        unknown = feature_kwargs.keys() - {'out_as_dict'}
        if unknown:
            raise ValueError(f"{sorted(unknown)} do not apply to feature_cls='hook'")
        return wrappers.FeatureHookNet(model, out_indices=indices, output_fmt=output_fmt, out_map=out_map,
                                       **feature_kwargs)
    if feature_kwargs:
        raise ValueError(f'{sorted(feature_kwargs)} do not apply to feature_cls={feature_cls!r}')
    if out_map is not None and feature_cls == 'list':
        raise ValueError("out_map names the outputs of a dict; use feature_cls='dict' (or 'hook'/'fx') with it")
    return wrappers.WRAPPERS[feature_cls](model, out_indices=indices, output_fmt=output_fmt, out_map=out_map)
