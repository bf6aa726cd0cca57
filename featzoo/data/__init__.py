"""Preprocessing that belongs to each weight: data config resolution, Pillow-based transforms, image loading.

>>> import featzoo
>>> cfg = featzoo.data.resolve_data_config(pretrained_cfg={'input_size': (3, 256, 256), 'crop_pct': 0.95})
>>> tf = featzoo.data.create_transform(**cfg)
"""
from .config import resolve_data_config, resolve_model_data_config
from .constants import (
    DEFAULT_CROP_MODE, DEFAULT_CROP_PCT, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, IMAGENET_DPN_MEAN,
    IMAGENET_DPN_STD, IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD,
)
import importlib
from typing import Any

# Pillow-based parts load on first use: the data config is needed by every create_model (the catalog's mean and
# std), Pillow (16 ms of a fresh process) only by transforms and image loading
_TRANSFORMS = (
    'CenterCrop', 'CenterCropOrPad', 'ColorJitter', 'Compose', 'GaussianBlur', 'MaybePILToTensor', 'MaybeToTensor',
    'Normalize', 'PILToTensor', 'RandomApply', 'RandomCropOrPad', 'RandomErasing', 'RandomGrayscale',
    'RandomHorizontalFlip', 'RandomResizedCropAndInterpolation', 'RandomVerticalFlip', 'Resize', 'ResizeKeepRatio',
    'ToTensor', 'TrimBorder', 'create_transform', 'str_to_pil_interp', 'transforms_imagenet_eval',
    'transforms_imagenet_train', 'transforms_noaug_train',
)
_LAZY = dict({name: 'transforms' for name in _TRANSFORMS}, load_image='image')


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    value = getattr(importlib.import_module(f'.{module}', __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    'resolve_data_config', 'resolve_model_data_config', 'create_transform', 'load_image',
    'transforms_imagenet_eval', 'transforms_imagenet_train', 'transforms_noaug_train', 'str_to_pil_interp',
    'Compose', 'Resize', 'CenterCrop', 'CenterCropOrPad', 'ResizeKeepRatio', 'RandomCropOrPad',
    'RandomResizedCropAndInterpolation', 'RandomHorizontalFlip', 'RandomVerticalFlip', 'ColorJitter',
    'RandomGrayscale', 'GaussianBlur', 'RandomApply', 'TrimBorder', 'ToTensor', 'PILToTensor', 'MaybeToTensor',
    'MaybePILToTensor', 'Normalize', 'RandomErasing',
    'DEFAULT_CROP_MODE', 'DEFAULT_CROP_PCT', 'IMAGENET_DEFAULT_MEAN', 'IMAGENET_DEFAULT_STD', 'IMAGENET_DPN_MEAN',
    'IMAGENET_DPN_STD', 'IMAGENET_INCEPTION_MEAN', 'IMAGENET_INCEPTION_STD', 'OPENAI_CLIP_MEAN', 'OPENAI_CLIP_STD',
]
