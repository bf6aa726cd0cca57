"""Resolve the preprocessing that belongs to a model's weights (timm's `resolve_data_config` semantics)."""
from __future__ import annotations

import argparse
import logging
from typing import Any, Dict, Mapping, Optional, Union

import torch.nn as nn

from .constants import (
    CROP_MODES, DEFAULT_CROP_MODE, DEFAULT_CROP_PCT, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, INTERPOLATIONS,
)

_logger = logging.getLogger(__name__)

__all__ = ['resolve_data_config', 'resolve_model_data_config']

ArgsLike = Union[Mapping[str, Any], argparse.Namespace, None]


def _as_dict(args: ArgsLike) -> Dict[str, Any]:
    if args is None:
        return {}
    if isinstance(args, argparse.Namespace):
        return dict(vars(args))
    if isinstance(args, Mapping):
        return dict(args)
    raise TypeError(f'args must be a dict, an argparse.Namespace or None, got {type(args).__name__}')


def _model_pretrained_cfg(model: Optional[nn.Module]) -> Dict[str, Any]:
    # Feature wrappers keep the wrapped network's config on themselves or on the network they wrap.
    for candidate in (model, getattr(model, 'model', None)):
        if candidate is None:
            continue
        for attr in ('pretrained_cfg', 'default_cfg'):
            cfg = getattr(candidate, attr, None)
            if isinstance(cfg, Mapping) and cfg:
                return dict(cfg)
    return {}


def _per_channel(name: str, value: Any, in_chans: int) -> tuple:
    if isinstance(value, (int, float)):
        value = (value,)
    try:
        value = tuple(float(v) for v in value)
    except TypeError:
        raise TypeError(f'{name} must be a number or a sequence of numbers, got {value!r}') from None
    if len(value) == 1:
        return value * in_chans
    if len(value) != in_chans:
        raise ValueError(f'{name} has {len(value)} values {value} but the input has {in_chans} channels: '
                         f'give one value or {in_chans}')
    return value


def _input_size(value: Any, name: str) -> tuple:
    if not isinstance(value, (tuple, list)) or len(value) != 3 or not all(isinstance(v, int) and v > 0 for v in value):
        raise ValueError(f'{name} must be (channels, height, width) with positive ints, got {value!r}')
    return tuple(value)


def resolve_data_config(
        args: ArgsLike = None,
        pretrained_cfg: Optional[Mapping[str, Any]] = None,
        model: Optional[nn.Module] = None,
        use_test_size: bool = False,
        verbose: bool = False,
) -> Dict[str, Any]:
    """Preprocessing for a model: input_size, interpolation, mean, std, crop_pct and crop_mode.

    Explicit values in ``args`` win over ``pretrained_cfg``, which defaults to ``model.pretrained_cfg``; anything
    still missing takes the ImageNet defaults (224 px, bicubic, crop_pct 0.875, center crop).

    Example:
        >>> resolve_data_config({'img_size': 256, 'crop_pct': 1.0}, pretrained_cfg={'interpolation': 'bilinear'})
        {'input_size': (3, 256, 256), 'interpolation': 'bilinear', 'mean': (0.485, 0.456, 0.406), \
'std': (0.229, 0.224, 0.225), 'crop_pct': 1.0, 'crop_mode': 'center'}
    """
    if args is None and pretrained_cfg is None and model is None:
        raise ValueError('resolve_data_config needs at least one of args, pretrained_cfg or model, got none')
    args = _as_dict(args)
    if pretrained_cfg is not None and not isinstance(pretrained_cfg, Mapping):
        raise TypeError(f'pretrained_cfg must be a dict or None, got {type(pretrained_cfg).__name__}')
    cfg = dict(pretrained_cfg or {})
    if not cfg and model is not None:
        cfg = _model_pretrained_cfg(model)

    in_chans = 3
    if args.get('in_chans') is not None:
        in_chans = args['in_chans']
    elif args.get('chans') is not None:
        in_chans = args['chans']
    if not isinstance(in_chans, int) or in_chans < 1:
        raise ValueError(f'in_chans must be a positive int, got {in_chans!r}')

    if args.get('input_size') is not None:
        input_size = _input_size(args['input_size'], 'args["input_size"]')
        in_chans = input_size[0]
    elif args.get('img_size') is not None:
        img_size = args['img_size']
        if not isinstance(img_size, int) or img_size < 1:
            raise ValueError(f'img_size must be a positive int (use input_size for (C, H, W)), got {img_size!r}')
        input_size = (in_chans, img_size, img_size)
    elif use_test_size and cfg.get('test_input_size') is not None:
        input_size = _input_size(cfg['test_input_size'], 'pretrained_cfg["test_input_size"]')
    elif cfg.get('input_size') is not None:
        input_size = _input_size(cfg['input_size'], 'pretrained_cfg["input_size"]')
    else:
        input_size = (in_chans, 224, 224)

    interpolation = args.get('interpolation') or cfg.get('interpolation') or 'bicubic'
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f'interpolation {interpolation!r} is not one of {INTERPOLATIONS}')

    # Explicit normalization is broadcast and checked against the channels; a checkpoint's is taken as published.
    if args.get('mean') is not None:
        mean = _per_channel('mean', args['mean'], in_chans)
    else:
        mean = tuple(cfg['mean']) if cfg.get('mean') else IMAGENET_DEFAULT_MEAN
    if args.get('std') is not None:
        std = _per_channel('std', args['std'], in_chans)
    else:
        std = tuple(cfg['std']) if cfg.get('std') else IMAGENET_DEFAULT_STD

    if args.get('crop_pct'):
        crop_pct = args['crop_pct']
    elif use_test_size and cfg.get('test_crop_pct'):
        crop_pct = cfg['test_crop_pct']
    else:
        crop_pct = cfg.get('crop_pct') or DEFAULT_CROP_PCT
    if not isinstance(crop_pct, (int, float)) or not 0 < crop_pct:
        raise ValueError(f'crop_pct must be a positive number (1.0 = no crop), got {crop_pct!r}')

    crop_mode = args.get('crop_mode') or cfg.get('crop_mode') or DEFAULT_CROP_MODE
    if crop_mode not in CROP_MODES:
        raise ValueError(f'crop_mode {crop_mode!r} is not one of {CROP_MODES}')

    data_config = dict(
        input_size=input_size, interpolation=interpolation, mean=mean, std=std, crop_pct=crop_pct,
        crop_mode=crop_mode)
    if verbose:
        _logger.info('Data processing configuration for current model + dataset:')
        for key, value in data_config.items():
            _logger.info('\t%s: %s', key, value)
    return data_config


def resolve_model_data_config(
        model: nn.Module,
        args: ArgsLike = None,
        pretrained_cfg: Optional[Mapping[str, Any]] = None,
        use_test_size: bool = False,
        verbose: bool = False,
) -> Dict[str, Any]:
    """`resolve_data_config` with the model first, as timm offers it.

    Example:
        >>> import featzoo
        >>> cfg = resolve_model_data_config(featzoo.create_model('resnet18'))
        >>> cfg['input_size']
        (3, 224, 224)
    """
    if model is None:
        raise ValueError('resolve_model_data_config needs a model, got None (use resolve_data_config without one)')
    return resolve_data_config(
        args=args, pretrained_cfg=pretrained_cfg, model=model, use_test_size=use_test_size, verbose=verbose)
