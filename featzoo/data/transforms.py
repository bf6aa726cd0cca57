"""Image transforms on Pillow and torch alone, with timm's `create_transform` signature, defaults and numerics.

Geometry runs on PIL images with the same resampling calls and integer rounding as torchvision, so the eval
transform's output equals timm's; randomness is drawn from Python's ``random`` and torch's generator in the same
order as timm and torchvision draw it, so a seeded pipeline repeats theirs.
"""
from __future__ import annotations

import math
import random
import warnings
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageEnhance

from .constants import CROP_MODES, DEFAULT_CROP_PCT, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, INTERPOLATIONS

__all__ = [
    'Compose', 'Resize', 'CenterCrop', 'ResizeKeepRatio', 'CenterCropOrPad', 'RandomCropOrPad',
    'RandomResizedCropAndInterpolation', 'RandomHorizontalFlip', 'RandomVerticalFlip', 'ColorJitter',
    'RandomGrayscale', 'GaussianBlur', 'RandomApply', 'TrimBorder', 'ToTensor', 'PILToTensor', 'MaybeToTensor',
    'MaybePILToTensor', 'Normalize', 'RandomErasing', 'str_to_pil_interp', 'create_transform',
    'transforms_imagenet_eval', 'transforms_imagenet_train', 'transforms_noaug_train',
]

_PIL_INTERP = {
    'nearest': Image.Resampling.NEAREST, 'bilinear': Image.Resampling.BILINEAR, 'bicubic': Image.Resampling.BICUBIC,
    'box': Image.Resampling.BOX, 'hamming': Image.Resampling.HAMMING, 'lanczos': Image.Resampling.LANCZOS,
}
_RANDOM_INTERP = ('bilinear', 'bicubic')

Size = Union[int, Tuple[int, int]]


def str_to_pil_interp(mode: str) -> Image.Resampling:
    """Pillow resampling filter for an interpolation name.

    >>> str_to_pil_interp('bicubic')
    <Resampling.BICUBIC: 3>
    """
    if mode not in _PIL_INTERP:
        raise ValueError(f'interpolation {mode!r} is not one of {INTERPOLATIONS}')
    return _PIL_INTERP[mode]


def _interp_choices(mode: str) -> Tuple[str, ...]:
    if mode == 'random':
        return _RANDOM_INTERP
    str_to_pil_interp(mode)
    return (mode,)


def _pick_interp(choices: Tuple[str, ...]) -> Image.Resampling:
    # A single choice draws nothing from the generator, matching timm's transforms.
    return _PIL_INTERP[choices[0] if len(choices) == 1 else random.choice(choices)]


def _pair(size: Any, name: str = 'size') -> Tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (int(size), int(size))
    elif isinstance(size, (tuple, list)) and len(size) == 1:
        size = (int(size[0]), int(size[0]))
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise ValueError(f'{name} must be an int or (height, width), got {size!r}')
    size = (int(size[0]), int(size[1]))
    if min(size) < 1:
        raise ValueError(f'{name} must be positive, got {size}')
    return size


def _check_pil(img: Any, what: str) -> Image.Image:
    if not isinstance(img, Image.Image):
        raise TypeError(f'{what} expects a PIL image (load it with featzoo.data.load_image), got {type(img).__name__}')
    return img


def _resize_exact(img: Image.Image, size: Tuple[int, int], resample: Image.Resampling) -> Image.Image:
    """Resize to (height, width); an image already at that size is returned unchanged, as torchvision does."""
    if (img.height, img.width) == tuple(size):
        return img
    return img.resize((size[1], size[0]), resample)


def _shorter_side_size(height: int, width: int, target: int) -> Tuple[int, int]:
    # The longer side is truncated, not rounded, to keep torchvision's output sizes.
    if width <= height:
        return int(target * height / width), target
    return target, int(target * width / height)


def _pad(img: Image.Image, left: int, top: int, right: int, bottom: int, fill: Any = 0,
         padding_mode: str = 'constant') -> Image.Image:
    if padding_mode == 'constant':
        if isinstance(fill, (list, tuple)):
            fill = tuple(int(v) for v in fill) if len(img.getbands()) > 1 else int(fill[0])
        out = Image.new(img.mode, (img.width + left + right, img.height + top + bottom), fill)
        if img.mode == 'P':
            out.putpalette(img.getpalette())
        out.paste(img, (left, top))
        return out
    if padding_mode not in ('edge', 'reflect', 'symmetric'):
        raise ValueError(f"padding_mode {padding_mode!r} is not one of ('constant', 'edge', 'reflect', 'symmetric')")
    arr = np.asarray(img)
    pads = ((top, bottom), (left, right)) + (((0, 0),) if arr.ndim == 3 else ())
    return Image.fromarray(np.pad(arr, pads, mode=padding_mode), mode=img.mode)


def _crop(img: Image.Image, top: int, left: int, height: int, width: int) -> Image.Image:
    return img.crop((left, top, left + width, top + height))


class Compose:
    """Apply transforms in order.

    >>> Compose([ToTensor()])(Image.new('RGB', (4, 4))).shape
    torch.Size([3, 4, 4])
    """

    def __init__(self, transforms: Sequence[Callable[[Any], Any]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, img: Any) -> Any:
        for t in self.transforms:
            img = t(img)
        return img

    def __repr__(self) -> str:
        body = ''.join(f'\n    {t!r}' for t in self.transforms)
        return f'{type(self).__name__}({body}\n)'


class Resize:
    """Resize the shorter side to ``size`` (an int), or to exactly (height, width).

    >>> Resize(4)(Image.new('RGB', (16, 8))).size
    (8, 4)
    """

    def __init__(self, size: Size, interpolation: str = 'bilinear') -> None:
        checked = _pair(size)
        self.size = size if isinstance(size, int) else checked
        self.interpolation = interpolation
        self._resample = str_to_pil_interp(interpolation)

    def __call__(self, img: Image.Image) -> Image.Image:
        img = _check_pil(img, type(self).__name__)
        if isinstance(self.size, int):
            size = _shorter_side_size(img.height, img.width, self.size)
        else:
            size = self.size
        return _resize_exact(img, size, self._resample)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(size={self.size}, interpolation={self.interpolation})'


def center_crop_or_pad(img: Image.Image, size: Size, fill: Any = 0, padding_mode: str = 'constant') -> Image.Image:
    """Crop the centre to ``size``; a side smaller than the target is padded first (with ``fill``).

    >>> center_crop_or_pad(Image.new('RGB', (4, 4)), 6).size
    (6, 6)
    """
    crop_h, crop_w = _pair(size)
    if crop_w > img.width or crop_h > img.height:
        pad_w = max(crop_w - img.width, 0)
        pad_h = max(crop_h - img.height, 0)
        img = _pad(img, pad_w // 2, pad_h // 2, (pad_w + 1) // 2, (pad_h + 1) // 2, fill, padding_mode)
        if (img.height, img.width) == (crop_h, crop_w):
            return img
    top = int(round((img.height - crop_h) / 2.0))
    left = int(round((img.width - crop_w) / 2.0))
    return _crop(img, top, left, crop_h, crop_w)


class CenterCrop:
    """Crop the centre to ``size`` (zero padding where the image is smaller).

    >>> CenterCrop(2)(Image.new('RGB', (4, 6))).size
    (2, 2)
    """

    def __init__(self, size: Size) -> None:
        self.size = _pair(size)

    def __call__(self, img: Image.Image) -> Image.Image:
        return center_crop_or_pad(_check_pil(img, type(self).__name__), self.size)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(size={self.size})'


class CenterCropOrPad(CenterCrop):
    """Crop the centre to ``size``, padding with ``fill`` (or by ``padding_mode``) where the image is smaller.

    >>> CenterCropOrPad(6, fill=(124, 116, 104))(Image.new('RGB', (4, 4))).getpixel((0, 0))
    (124, 116, 104)
    """

    def __init__(self, size: Size, fill: Any = 0, padding_mode: str = 'constant') -> None:
        super().__init__(size)
        self.fill = fill
        self.padding_mode = padding_mode

    def __call__(self, img: Image.Image) -> Image.Image:
        return center_crop_or_pad(_check_pil(img, type(self).__name__), self.size, self.fill, self.padding_mode)


def crop_or_pad(img: Image.Image, top: int, left: int, height: int, width: int, fill: Any = 0,
                padding_mode: str = 'constant') -> Image.Image:
    """Crop the box (top, left, height, width), padding where the box leaves the image.

    >>> crop_or_pad(Image.new('RGB', (4, 4)), -1, -1, 6, 6).size
    (6, 6)
    """
    right, bottom = left + width, top + height
    if left < 0 or top < 0 or right > img.width or bottom > img.height:
        img = _pad(img, max(-left + min(0, right), 0), max(-top + min(0, bottom), 0),
                   max(right - max(img.width, left), 0), max(bottom - max(img.height, top), 0), fill, padding_mode)
    return _crop(img, max(top, 0), max(left, 0), height, width)


class RandomCropOrPad:
    """Crop ``size`` at a random place, padding (by ``padding_mode``) where the image is smaller.

    >>> RandomCropOrPad(6, padding_mode='reflect')(Image.new('RGB', (4, 5))).size
    (6, 6)
    """

    def __init__(self, size: Size, fill: Any = 0, padding_mode: str = 'constant') -> None:
        self.size = _pair(size)
        self.fill = fill
        self.padding_mode = padding_mode

    def __call__(self, img: Image.Image) -> Image.Image:
        img = _check_pil(img, type(self).__name__)
        delta_h = img.height - self.size[0]
        delta_w = img.width - self.size[1]
        top = int(math.copysign(random.randint(0, abs(delta_h)), delta_h))
        left = int(math.copysign(random.randint(0, abs(delta_w)), delta_w))
        return crop_or_pad(img, top, left, self.size[0], self.size[1], self.fill, self.padding_mode)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(size={self.size})'


class ResizeKeepRatio:
    """Resize keeping the aspect ratio so that the image covers ``size`` (``longest=0``) or fits in it (``longest=1``),
    optionally with random scale and aspect jitter (timm's RKR training crop).

    >>> ResizeKeepRatio((4, 8))(Image.new('RGB', (20, 10))).size
    (8, 4)
    """

    def __init__(self, size: Size, longest: float = 0., interpolation: str = 'bilinear',
                 random_scale_prob: float = 0., random_scale_range: Tuple[float, float] = (0.85, 1.05),
                 random_scale_area: bool = False, random_aspect_prob: float = 0.,
                 random_aspect_range: Tuple[float, float] = (0.9, 1.11)) -> None:
        self.size = _pair(size)
        self.longest = float(longest)
        self.interpolation = interpolation
        self._choices = _interp_choices(interpolation)
        self.random_scale_prob = random_scale_prob
        self.random_scale_range = tuple(random_scale_range)
        self.random_scale_area = random_scale_area
        self.random_aspect_prob = random_aspect_prob
        self.random_aspect_range = tuple(random_aspect_range)

    def output_size(self, height: int, width: int) -> List[int]:
        """The (height, width) this transform resizes an image of the given size to (drawing any randomness).

        >>> ResizeKeepRatio((4, 8)).output_size(10, 20)
        [4, 8]
        """
        ratio_h = height / self.size[0]
        ratio_w = width / self.size[1]
        ratio = max(ratio_h, ratio_w) * self.longest + min(ratio_h, ratio_w) * (1. - self.longest)
        factor_h = factor_w = 1.
        if self.random_scale_prob > 0 and random.random() < self.random_scale_prob:
            factor = random.uniform(*self.random_scale_range)
            if self.random_scale_area:
                # An area factor, like a random-resized-crop scale: below 1 zooms in.
                factor = 1. / math.sqrt(factor)
            factor_h = factor_w = factor
        if self.random_aspect_prob > 0 and random.random() < self.random_aspect_prob:
            log_range = (math.log(self.random_aspect_range[0]), math.log(self.random_aspect_range[1]))
            aspect = math.sqrt(math.exp(random.uniform(*log_range)))
            factor_h, factor_w = factor_h / aspect, factor_w * aspect
        return [round(height * factor_h / ratio), round(width * factor_w / ratio)]

    def __call__(self, img: Image.Image) -> Image.Image:
        img = _check_pil(img, type(self).__name__)
        size = self.output_size(img.height, img.width)
        return _resize_exact(img, tuple(size), _pick_interp(self._choices))

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(size={self.size}, interpolation={self.interpolation}, '
                f'longest={self.longest:.3f}, random_scale_prob={self.random_scale_prob:.3f}, '
                f'random_aspect_prob={self.random_aspect_prob:.3f})')


class RandomResizedCropAndInterpolation:
    """Crop a random area (``scale`` of the image, aspect in ``ratio``) and resize it to ``size``; with
    ``interpolation='random'`` the filter is drawn from bilinear and bicubic.

    >>> RandomResizedCropAndInterpolation(8)(Image.new('RGB', (32, 24))).size
    (8, 8)
    """

    def __init__(self, size: Size, scale: Tuple[float, float] = (0.08, 1.0),
                 ratio: Tuple[float, float] = (3. / 4., 4. / 3.), interpolation: str = 'bilinear') -> None:
        self.size = _pair(size)
        if len(scale) != 2 or len(ratio) != 2:
            raise ValueError(f'scale and ratio must be (min, max) pairs, got scale={scale!r}, ratio={ratio!r}')
        if scale[0] > scale[1] or ratio[0] > ratio[1]:
            warnings.warn(f'scale {scale} and ratio {ratio} should be (min, max)')
        if min(scale) <= 0 or min(ratio) <= 0:
            raise ValueError(f'scale and ratio must be positive, got scale={scale!r}, ratio={ratio!r}')
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)
        self.interpolation = interpolation
        self._choices = _interp_choices(interpolation)

    def crop_box(self, height: int, width: int) -> Tuple[int, int, int, int]:
        """A random (top, left, height, width) box for an image of the given size.

        >>> RandomResizedCropAndInterpolation(8, scale=(1.0, 1.0), ratio=(1.0, 1.0)).crop_box(10, 10)
        (0, 0, 10, 10)
        """
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target_area = random.uniform(*self.scale) * area
            aspect = math.exp(random.uniform(*log_ratio))
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if w <= width and h <= height:
                return random.randint(0, height - h), random.randint(0, width - w), h, w
        # No random box fitted in ten draws: take the largest centred box within the ratio range.
        in_ratio = width / height
        if in_ratio < min(self.ratio):
            w, h = width, int(round(width / min(self.ratio)))
        elif in_ratio > max(self.ratio):
            h, w = height, int(round(height * max(self.ratio)))
        else:
            h, w = height, width
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, img: Image.Image) -> Image.Image:
        img = _check_pil(img, type(self).__name__)
        top, left, h, w = self.crop_box(img.height, img.width)
        resample = _pick_interp(self._choices)
        return _resize_exact(_crop(img, top, left, h, w), self.size, resample)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(size={self.size}, scale={tuple(round(s, 4) for s in self.scale)}, '
                f'ratio={tuple(round(r, 4) for r in self.ratio)}, interpolation={self.interpolation})')


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``.

    >>> RandomHorizontalFlip(1.0)(Image.new('RGB', (2, 1))).size
    (2, 1)
    """

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, img: Image.Image) -> Image.Image:
        if torch.rand(1) < self.p:
            return _check_pil(img, type(self).__name__).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return img

    def __repr__(self) -> str:
        return f'{type(self).__name__}(p={self.p})'


class RandomVerticalFlip(RandomHorizontalFlip):
    """Mirror top-bottom with probability ``p``.

    >>> RandomVerticalFlip(1.0)(Image.new('RGB', (1, 2))).size
    (1, 2)
    """

    def __call__(self, img: Image.Image) -> Image.Image:
        if torch.rand(1) < self.p:
            return _check_pil(img, type(self).__name__).transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        return img


def _jitter_range(value: Any, name: str, center: float = 1., bound: Tuple[float, float] = (0, float('inf')),
                  clip_first_on_zero: bool = True) -> Optional[Tuple[float, float]]:
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f'color jitter {name} must be non-negative, got {value}')
        value = [center - float(value), center + float(value)]
        if clip_first_on_zero:
            value[0] = max(value[0], 0.0)
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        value = [float(value[0]), float(value[1])]
        if not bound[0] <= value[0] <= value[1] <= bound[1]:
            raise ValueError(f'color jitter {name} range must lie in {bound}, got {value}')
    else:
        raise TypeError(f'color jitter {name} must be a number or a (min, max) pair, got {value!r}')
    # A range that is only the neutral value does nothing and draws nothing.
    if value[0] == value[1] == center:
        return None
    return tuple(value)


def adjust_hue(img: Image.Image, hue_factor: float) -> Image.Image:
    """Rotate the hue by ``hue_factor`` (a fraction of the circle, in [-0.5, 0.5]).

    >>> adjust_hue(Image.new('RGB', (1, 1), (255, 0, 0)), 0.5).getpixel((0, 0))[2] > 200
    True
    """
    if not -0.5 <= hue_factor <= 0.5:
        raise ValueError(f'hue_factor {hue_factor} is not in [-0.5, 0.5]')
    if img.mode in ('L', '1', 'I', 'F'):
        return img
    h, s, v = img.convert('HSV').split()
    hue = np.array(h, dtype=np.uint8)
    hue += np.array(np.int32(hue_factor * 255)).astype(np.uint8)  # uint8 arithmetic wraps around the circle
    return Image.merge('HSV', (Image.fromarray(hue, 'L'), s, v)).convert(img.mode)


class ColorJitter:
    """Random brightness, contrast, saturation and hue, applied in a random order.

    >>> ColorJitter(0.4, 0.4, 0.4)(Image.new('RGB', (4, 4), (90, 120, 30))).size
    (4, 4)
    """

    def __init__(self, brightness: Any = 0, contrast: Any = 0, saturation: Any = 0, hue: Any = 0) -> None:
        self.brightness = _jitter_range(brightness, 'brightness')
        self.contrast = _jitter_range(contrast, 'contrast')
        self.saturation = _jitter_range(saturation, 'saturation')
        self.hue = _jitter_range(hue, 'hue', center=0, bound=(-0.5, 0.5), clip_first_on_zero=False)

    def __call__(self, img: Image.Image) -> Image.Image:
        img = _check_pil(img, type(self).__name__)
        order = torch.randperm(4)
        draws = [None if r is None else float(torch.empty(1).uniform_(r[0], r[1]))
                 for r in (self.brightness, self.contrast, self.saturation, self.hue)]
        for index in order.tolist():
            factor = draws[index]
            if factor is None:
                continue
            if index == 0:
                img = ImageEnhance.Brightness(img).enhance(factor)
            elif index == 1:
                img = ImageEnhance.Contrast(img).enhance(factor)
            elif index == 2:
                img = ImageEnhance.Color(img).enhance(factor)
            else:
                img = adjust_hue(img, factor)
        return img

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(brightness={self.brightness}, contrast={self.contrast}, '
                f'saturation={self.saturation}, hue={self.hue})')


class RandomGrayscale:
    """Convert to grayscale (keeping the channel count) with probability ``p``.

    >>> RandomGrayscale(1.0)(Image.new('RGB', (2, 2), (255, 0, 0))).getpixel((0, 0))
    (76, 76, 76)
    """

    def __init__(self, p: float = 0.1) -> None:
        self.p = p

    def __call__(self, img: Image.Image) -> Image.Image:
        img = _check_pil(img, type(self).__name__)
        if torch.rand(1) < self.p:
            gray = img.convert('L')
            return gray if img.mode == 'L' else Image.merge('RGB', (gray, gray, gray))
        return img

    def __repr__(self) -> str:
        return f'{type(self).__name__}(p={self.p})'


def gaussian_blur(img: Image.Image, kernel_size: Tuple[int, int], sigma: Tuple[float, float]) -> Image.Image:
    """Blur with a separable Gaussian kernel (``kernel_size`` as (x, y)), reflecting at the borders.

    >>> gaussian_blur(Image.new('RGB', (8, 8)), (3, 3), (1.0, 1.0)).size
    (8, 8)
    """
    arr = np.array(img)
    x = torch.from_numpy(arr).float()
    x = x.unsqueeze(-1) if x.ndim == 2 else x
    x = x.permute(2, 0, 1).unsqueeze(0)
    kernels = []
    for size, s in zip(kernel_size, sigma):
        half = (size - 1) * 0.5
        pdf = torch.exp(-0.5 * (torch.linspace(-half, half, steps=size) / s).pow(2))
        kernels.append(pdf / pdf.sum())
    kernel = torch.mm(kernels[1][:, None], kernels[0][None, :])
    channels = x.shape[1]
    x = torch.nn.functional.pad(x, [kernel_size[0] // 2, kernel_size[0] // 2, kernel_size[1] // 2,
                                    kernel_size[1] // 2], mode='reflect')
    x = torch.nn.functional.conv2d(x, kernel.expand(channels, 1, *kernel.shape), groups=channels)
    out = x.round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
    return Image.fromarray(out[..., 0] if arr.ndim == 2 else out, mode=img.mode)


class GaussianBlur:
    """Gaussian blur with sigma drawn uniformly from ``sigma`` (min, max).

    >>> GaussianBlur(3)(Image.new('RGB', (8, 8))).size
    (8, 8)
    """

    def __init__(self, kernel_size: Size, sigma: Union[float, Tuple[float, float]] = (0.1, 2.0)) -> None:
        ks = _pair(kernel_size, 'kernel_size')
        if any(k % 2 == 0 for k in ks):
            raise ValueError(f'kernel_size must be odd and positive, got {kernel_size!r}')
        self.kernel_size = ks
        if isinstance(sigma, (int, float)):
            if sigma <= 0:
                raise ValueError(f'sigma must be positive, got {sigma}')
            sigma = (float(sigma), float(sigma))
        if not (isinstance(sigma, (tuple, list)) and len(sigma) == 2 and 0 < sigma[0] <= sigma[1]):
            raise ValueError(f'sigma must be a positive number or a (min, max) pair, got {sigma!r}')
        self.sigma = tuple(sigma)

    def __call__(self, img: Image.Image) -> Image.Image:
        s = torch.empty(1).uniform_(self.sigma[0], self.sigma[1]).item()
        return gaussian_blur(_check_pil(img, type(self).__name__), self.kernel_size, (s, s))

    def __repr__(self) -> str:
        return f'{type(self).__name__}(kernel_size={self.kernel_size}, sigma={self.sigma})'


class RandomApply:
    """Apply the given transforms, in order, with probability ``p``.

    >>> RandomApply([RandomGrayscale(1.0)], p=0.0)(Image.new('RGB', (2, 2), (255, 0, 0))).getpixel((0, 0))
    (255, 0, 0)
    """

    def __init__(self, transforms: Sequence[Callable[[Any], Any]], p: float = 0.5) -> None:
        self.transforms = list(transforms)
        self.p = p

    def __call__(self, img: Any) -> Any:
        if self.p < torch.rand(1):
            return img
        for t in self.transforms:
            img = t(img)
        return img

    def __repr__(self) -> str:
        return f'{type(self).__name__}(p={self.p}, transforms={self.transforms})'


class TrimBorder:
    """Cut ``border_size`` pixels from every edge.

    >>> TrimBorder(1)(Image.new('RGB', (6, 4))).size
    (4, 2)
    """

    def __init__(self, border_size: int) -> None:
        if not isinstance(border_size, int) or border_size < 0:
            raise ValueError(f'border_size must be an int >= 0, got {border_size!r}')
        self.border_size = border_size

    def __call__(self, img: Image.Image) -> Image.Image:
        img = _check_pil(img, type(self).__name__)
        # The left edge is clamped by the height, as in timm, so that odd shapes crop identically.
        top = min(self.border_size, img.height)
        left = min(self.border_size, img.height)
        height = max(0, img.height - 2 * self.border_size)
        width = max(0, img.width - 2 * self.border_size)
        return _crop(img, top, left, height, width)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(border_size={self.border_size})'


def _pil_to_array(img: Image.Image) -> np.ndarray:
    # np.array copies, so the tensor owns writable memory rather than a view of Pillow's buffer.
    arr = np.array(img, dtype=np.uint8) * 255 if img.mode == '1' else np.array(img)
    return arr[:, :, None] if arr.ndim == 2 else arr


class PILToTensor:
    """PIL image (or HWC array) to a CHW tensor of the same dtype, values unscaled.

    >>> PILToTensor()(Image.new('L', (3, 2), 7)).dtype
    torch.uint8
    """

    def __call__(self, img: Any) -> torch.Tensor:
        if isinstance(img, torch.Tensor):
            return img
        if isinstance(img, Image.Image):
            arr = _pil_to_array(img)
        elif isinstance(img, np.ndarray) and img.ndim in (2, 3):
            arr = img[:, :, None] if img.ndim == 2 else img
        else:
            raise TypeError(f'expected a PIL image or an HxW(xC) array, got {type(img).__name__}')
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))

    def __repr__(self) -> str:
        return f'{type(self).__name__}()'


class ToTensor(PILToTensor):
    """PIL image (or HWC array) to a float CHW tensor; 8-bit values are scaled to [0, 1].

    >>> ToTensor()(Image.new('L', (3, 2), 255)).max().item()
    1.0
    """

    def __call__(self, img: Any) -> torch.Tensor:
        if isinstance(img, torch.Tensor):
            return img
        x = super().__call__(img)
        if x.dtype == torch.uint8:
            return x.to(torch.get_default_dtype()).div(255)
        return x.to(torch.get_default_dtype())


MaybeToTensor = ToTensor
MaybePILToTensor = PILToTensor


class Normalize:
    """Subtract ``mean`` and divide by ``std`` per channel of a float CHW (or NCHW) tensor.

    >>> Normalize((0.5,), (0.5,))(torch.ones(1, 2, 2)).max().item()
    1.0
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        if len(self.mean) != len(self.std):
            raise ValueError(f'mean {self.mean} and std {self.std} must have the same length')
        if any(s == 0 for s in self.std):
            raise ValueError(f'std must not contain 0, got {self.std}')

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f'Normalize expects a float tensor (apply ToTensor first), got {type(x).__name__}')
        channels = x.shape[-3]
        if len(self.mean) not in (1, channels):
            raise ValueError(f'mean/std have {len(self.mean)} values but the image has {channels} channels')
        mean = torch.as_tensor(self.mean, dtype=x.dtype).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=x.dtype).view(-1, 1, 1)
        return x.sub(mean).div(std)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(mean={self.mean}, std={self.std})'


class RandomErasing:
    """Erase random rectangles of a normalized tensor (CHW or NCHW) with probability ``probability``.

    ``mode``: 'const' fills zeros, 'rand' one normal colour per box, 'pixel' normal noise per pixel. Boxes cover
    ``min_area``..``max_area`` of the image (split among ``max_count`` boxes), aspect from ``min_aspect``.

    >>> RandomErasing(1.0, mode='const')(torch.ones(3, 32, 32)).min().item()
    0.0
    """

    def __init__(self, probability: float = 0.5, min_area: float = 0.02, max_area: float = 1 / 3,
                 min_aspect: float = 0.3, max_aspect: Optional[float] = None, mode: str = 'const',
                 min_count: int = 1, max_count: Optional[int] = None, num_splits: int = 0,
                 device: Union[str, torch.device] = 'cpu') -> None:
        mode = (mode or 'const').lower()
        if mode not in ('const', 'rand', 'pixel'):
            raise ValueError(f"random erasing mode {mode!r} is not one of ('const', 'rand', 'pixel')")
        self.probability = probability
        self.min_area = min_area
        self.max_area = max_area
        max_aspect = max_aspect or 1 / min_aspect
        self.log_aspect_ratio = (math.log(min_aspect), math.log(max_aspect))
        self.min_count = min_count
        self.max_count = max_count or min_count
        self.num_splits = num_splits
        self.mode = mode
        self.device = device

    def _fill(self, shape: Tuple[int, int, int], dtype: torch.dtype) -> torch.Tensor:
        if self.mode == 'pixel':
            return torch.empty(shape, dtype=dtype, device=self.device).normal_()
        if self.mode == 'rand':
            return torch.empty((shape[0], 1, 1), dtype=dtype, device=self.device).normal_()
        return torch.zeros((shape[0], 1, 1), dtype=dtype, device=self.device)

    def _erase(self, img: torch.Tensor) -> None:
        if random.random() > self.probability:
            return
        chans, img_h, img_w = img.shape
        area = img_h * img_w
        count = self.min_count if self.min_count == self.max_count else random.randint(self.min_count, self.max_count)
        for _ in range(count):
            for _attempt in range(10):
                target_area = random.uniform(self.min_area, self.max_area) * area / count
                aspect = math.exp(random.uniform(*self.log_aspect_ratio))
                h = int(round(math.sqrt(target_area * aspect)))
                w = int(round(math.sqrt(target_area / aspect)))
                if w < img_w and h < img_h:
                    top = random.randint(0, img_h - h)
                    left = random.randint(0, img_w - w)
                    img[:, top:top + h, left:left + w] = self._fill((chans, h, w), img.dtype)
                    break

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            self._erase(x)
        else:
            start = x.shape[0] // self.num_splits if self.num_splits > 1 else 0
            for i in range(start, x.shape[0]):
                self._erase(x[i])
        return x

    def __repr__(self) -> str:
        return f'{type(self).__name__}(p={self.probability}, mode={self.mode}, count=({self.min_count}, ' \
               f'{self.max_count}))'


def _final_transforms(mean: Sequence[float], std: Sequence[float], use_prefetcher: bool,
                      normalize: bool) -> List[Callable[[Any], Any]]:
    if use_prefetcher or not normalize:
        return [PILToTensor()]
    return [ToTensor(), Normalize(mean, std)]


def transforms_noaug_train(img_size: Size = 224, interpolation: str = 'bilinear',
                           mean: Sequence[float] = IMAGENET_DEFAULT_MEAN, std: Sequence[float] = IMAGENET_DEFAULT_STD,
                           use_prefetcher: bool = False, normalize: bool = True) -> Compose:
    """Training transform without augmentation: resize (shorter side for an int size), centre crop, tensor.

    >>> transforms_noaug_train(8)(Image.new('RGB', (20, 10))).shape
    torch.Size([3, 8, 8])
    """
    if interpolation == 'random':
        interpolation = 'bilinear'
    return Compose([Resize(img_size, interpolation), CenterCrop(img_size)]
                   + _final_transforms(mean, std, use_prefetcher, normalize))


def transforms_imagenet_train(
        img_size: Size = 224, scale: Optional[Tuple[float, float]] = None,
        ratio: Optional[Tuple[float, float]] = None, train_crop_mode: Optional[str] = None, hflip: float = 0.5,
        vflip: float = 0., color_jitter: Union[float, Sequence[float], None] = 0.4,
        color_jitter_prob: Optional[float] = None, force_color_jitter: bool = False, grayscale_prob: float = 0.,
        gaussian_blur_prob: float = 0., auto_augment: Optional[str] = None, interpolation: str = 'random',
        mean: Sequence[float] = IMAGENET_DEFAULT_MEAN, std: Sequence[float] = IMAGENET_DEFAULT_STD,
        re_prob: float = 0., re_mode: str = 'const', re_count: int = 1, re_num_splits: int = 0,
        use_prefetcher: bool = False, normalize: bool = True, separate: bool = False,
) -> Union[Compose, Tuple[Compose, Compose, Compose]]:
    """ImageNet training transform: random resized crop, flips, colour jitter or auto-augment, random erasing.

    ``train_crop_mode``: 'rrc' (random resized crop), 'rkrc' / 'rkrr' (random keep-ratio resize, then centre or
    random crop with reflect padding). ``separate=True`` returns (primary, secondary, final) transforms.

    >>> transforms_imagenet_train(16)(Image.new('RGB', (40, 30))).shape
    torch.Size([3, 16, 16])
    """
    train_crop_mode = train_crop_mode or 'rrc'
    if train_crop_mode not in ('rrc', 'rkrc', 'rkrr'):
        raise ValueError(f"train_crop_mode {train_crop_mode!r} is not one of ('rrc', 'rkrc', 'rkrr')")
    primary: List[Callable[[Any], Any]] = []
    if train_crop_mode in ('rkrc', 'rkrr'):
        scale = tuple(scale or (0.8, 1.00))
        ratio = tuple(ratio or (0.9, 1 / .9))
        primary.append(ResizeKeepRatio(img_size, interpolation=interpolation, random_scale_prob=0.5,
                                       random_scale_range=scale, random_scale_area=True, random_aspect_prob=0.5,
                                       random_aspect_range=ratio))
        primary.append(CenterCropOrPad(img_size, padding_mode='reflect') if train_crop_mode == 'rkrc'
                       else RandomCropOrPad(img_size, padding_mode='reflect'))
    else:
        scale = tuple(scale or (0.08, 1.0))
        ratio = tuple(ratio or (3. / 4., 4. / 3.))
        primary.append(RandomResizedCropAndInterpolation(img_size, scale=scale, ratio=ratio,
                                                         interpolation=interpolation))
    if hflip > 0.:
        primary.append(RandomHorizontalFlip(p=hflip))
    if vflip > 0.:
        primary.append(RandomVerticalFlip(p=vflip))

    secondary: List[Callable[[Any], Any]] = []
    disable_color_jitter = False
    if auto_augment:
        from .auto_augment import create_auto_augment
        if not isinstance(auto_augment, str):
            raise TypeError(f"auto_augment must be a policy string such as 'rand-m9-mstd0.5-inc1', "
                            f'got {auto_augment!r}')
        # Jitter on top of auto-augment is usually off; '3a' policies and force_color_jitter keep it.
        disable_color_jitter = not (force_color_jitter or '3a' in auto_augment)
        size_min = min(img_size) if isinstance(img_size, (tuple, list)) else img_size
        params = dict(translate_const=int(size_min * 0.45), img_mean=tuple(min(255, round(255 * x)) for x in mean))
        if interpolation and interpolation != 'random':
            params['interpolation'] = str_to_pil_interp(interpolation)
        if auto_augment.startswith('augmix'):
            params['translate_pct'] = 0.3
        secondary.append(create_auto_augment(auto_augment, params))
    if color_jitter is not None and not disable_color_jitter:
        if isinstance(color_jitter, (list, tuple)):
            if len(color_jitter) not in (3, 4):
                raise ValueError(f'color_jitter must be a number or 3/4 values (brightness, contrast, saturation'
                                 f'[, hue]), got {color_jitter!r}')
        else:
            color_jitter = (float(color_jitter),) * 3
        jitter = ColorJitter(*color_jitter)
        secondary.append(RandomApply([jitter], p=color_jitter_prob) if color_jitter_prob is not None else jitter)
    if grayscale_prob:
        secondary.append(RandomGrayscale(p=grayscale_prob))
    if gaussian_blur_prob:
        secondary.append(RandomApply([GaussianBlur(kernel_size=23)], p=gaussian_blur_prob))

    final = _final_transforms(mean, std, use_prefetcher, normalize)
    if re_prob > 0. and not use_prefetcher and normalize:
        final.append(RandomErasing(re_prob, mode=re_mode, max_count=re_count, num_splits=re_num_splits,
                                   device='cpu'))
    if separate:
        return Compose(primary), Compose(secondary), Compose(final)
    return Compose(primary + secondary + final)


def transforms_imagenet_eval(
        img_size: Size = 224, crop_pct: Optional[float] = None, crop_mode: Optional[str] = None,
        crop_border_pixels: Optional[int] = None, interpolation: str = 'bilinear',
        mean: Sequence[float] = IMAGENET_DEFAULT_MEAN, std: Sequence[float] = IMAGENET_DEFAULT_STD,
        use_prefetcher: bool = False, normalize: bool = True,
) -> Compose:
    """ImageNet eval transform: resize to ``img_size / crop_pct``, crop ``img_size``, tensor, normalize.

    ``crop_mode``: 'center' (shorter side, centre crop), 'squash' (both sides, no aspect kept) or 'border'
    (longer side fits, padded with the mean colour).

    >>> transforms_imagenet_eval(8, crop_pct=1.0)(Image.new('RGB', (20, 10))).shape
    torch.Size([3, 8, 8])
    """
    crop_pct = crop_pct or DEFAULT_CROP_PCT
    if not isinstance(crop_pct, (int, float)) or crop_pct < 0:
        raise ValueError(f'crop_pct must be a positive number (1.0 = no crop), got {crop_pct!r}')
    if crop_mode is not None and crop_mode not in CROP_MODES:
        raise ValueError(f'crop_mode {crop_mode!r} is not one of {CROP_MODES}')
    if isinstance(img_size, (tuple, list)):
        img_size = _pair(img_size, 'img_size')
        scale_size = tuple(math.floor(x / crop_pct) for x in img_size)
    else:
        _pair(img_size, 'img_size')
        scale_size = (math.floor(img_size / crop_pct),) * 2
    steps: List[Callable[[Any], Any]] = []
    if crop_border_pixels:
        steps.append(TrimBorder(crop_border_pixels))
    if crop_mode == 'squash':
        steps += [Resize(scale_size, interpolation), CenterCrop(img_size)]
    elif crop_mode == 'border':
        fill = [round(255 * v) for v in mean]
        steps += [ResizeKeepRatio(scale_size, interpolation=interpolation, longest=1.0),
                  CenterCropOrPad(img_size, fill=fill)]
    else:
        if scale_size[0] == scale_size[1]:
            steps.append(Resize(scale_size[0], interpolation))
        else:
            steps.append(ResizeKeepRatio(scale_size, interpolation=interpolation))
        steps.append(CenterCrop(img_size))
    return Compose(steps + _final_transforms(mean, std, use_prefetcher, normalize))


def create_transform(
        input_size: Union[int, Tuple[int, int], Tuple[int, int, int]] = 224,
        is_training: bool = False,
        no_aug: bool = False,
        train_crop_mode: Optional[str] = None,
        scale: Optional[Tuple[float, float]] = None,
        ratio: Optional[Tuple[float, float]] = None,
        hflip: float = 0.5,
        vflip: float = 0.,
        color_jitter: Union[float, Sequence[float], None] = 0.4,
        color_jitter_prob: Optional[float] = None,
        grayscale_prob: float = 0.,
        gaussian_blur_prob: float = 0.,
        auto_augment: Optional[str] = None,
        interpolation: str = 'bilinear',
        mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
        std: Sequence[float] = IMAGENET_DEFAULT_STD,
        re_prob: float = 0.,
        re_mode: str = 'const',
        re_count: int = 1,
        re_num_splits: int = 0,
        crop_pct: Optional[float] = None,
        crop_mode: Optional[str] = None,
        crop_border_pixels: Optional[int] = None,
        use_prefetcher: bool = False,
        normalize: bool = True,
        separate: bool = False,
) -> Union[Compose, Tuple[Compose, Compose, Compose]]:
    """The transform for a model's data config: eval by default, training augmentation with ``is_training``.

    Takes a PIL image (see :func:`featzoo.data.load_image`) and returns a normalized float CHW tensor (an unscaled
    uint8 tensor with ``use_prefetcher`` or ``normalize=False``).

    >>> tf = create_transform(input_size=(3, 32, 32), interpolation='bicubic', crop_pct=0.9)
    >>> tf(Image.new('RGB', (64, 48))).shape
    torch.Size([3, 32, 32])
    """
    if isinstance(input_size, (tuple, list)):
        if len(input_size) not in (2, 3):
            raise ValueError(f'input_size must be an int, (H, W) or (C, H, W), got {input_size!r}')
        img_size: Size = _pair(tuple(input_size[-2:]), 'input_size')
    else:
        img_size = input_size
        _pair(img_size, 'input_size')
    if interpolation != 'random':
        str_to_pil_interp(interpolation)
    if is_training and no_aug:
        if separate:
            raise ValueError('separate=True splits augmentation stages, which no_aug=True does not have')
        return transforms_noaug_train(img_size, interpolation=interpolation, mean=mean, std=std,
                                      use_prefetcher=use_prefetcher, normalize=normalize)
    if is_training:
        return transforms_imagenet_train(
            img_size, scale=scale, ratio=ratio, train_crop_mode=train_crop_mode, hflip=hflip, vflip=vflip,
            color_jitter=color_jitter, color_jitter_prob=color_jitter_prob, grayscale_prob=grayscale_prob,
            gaussian_blur_prob=gaussian_blur_prob, auto_augment=auto_augment, interpolation=interpolation,
            mean=mean, std=std, re_prob=re_prob, re_mode=re_mode, re_count=re_count, re_num_splits=re_num_splits,
            use_prefetcher=use_prefetcher, normalize=normalize, separate=separate)
    if separate:
        raise ValueError('separate=True applies to training transforms (is_training=True) only')
    if interpolation == 'random':
        raise ValueError("interpolation='random' applies to training transforms; give one of "
                         f'{INTERPOLATIONS} for evaluation')
    return transforms_imagenet_eval(
        img_size, crop_pct=crop_pct, crop_mode=crop_mode, crop_border_pixels=crop_border_pixels,
        interpolation=interpolation, mean=mean, std=std, use_prefetcher=use_prefetcher, normalize=normalize)
