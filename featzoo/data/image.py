"""Opening image files the way models expect them: upright, 8-bit, RGB (or L), alpha dropped."""
from __future__ import annotations

import os
from typing import IO, Optional, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import NotAFileError

__all__ = ['load_image', 'to_8bit']

ImageSource = Union[str, os.PathLike, IO[bytes], Image.Image]

_SIXTEEN_BIT_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I')
_GRAY_MODES = ('1', 'L', 'LA', 'La') + _SIXTEEN_BIT_MODES
_MODES = ('RGB', 'L', None)


def to_8bit(img: Image.Image) -> Image.Image:
    """Scale a 16-bit grayscale image (``I;16*`` or ``I``) to 8-bit ``L`` by value / 257, rounded.

    Pillow's own conversion clips everything above 255 to white; this keeps the full range.

    >>> to_8bit(Image.fromarray(np.full((1, 1), 65535, np.uint16))).getpixel((0, 0))
    255
    """
    if img.mode not in _SIXTEEN_BIT_MODES:
        return img
    values = np.asarray(img).astype(np.float64)
    scaled = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, mode='L')


def _normalize(img: Image.Image, mode: Optional[str]) -> Image.Image:
    img = to_8bit(img)
    if mode is None:
        mode = 'L' if img.mode in _GRAY_MODES else 'RGB'
    if img.mode == mode:
        return img
    if img.mode in ('LA', 'La') and mode == 'L':
        return img.getchannel('L')
    # convert() handles palette (with or without transparency), CMYK, YCbCr, LAB and 1-bit, and drops alpha
    # without compositing, exactly like timm's loader.
    return img.convert(mode)


def load_image(source: ImageSource, mode: Optional[str] = 'RGB') -> Image.Image:
    """Open an image file (or normalize an open PIL image) for a model.

    The EXIF orientation is applied, 16-bit grayscale is scaled to 8 bits (value / 257), palette, CMYK and other
    modes are converted, and alpha is dropped. ``mode``: 'RGB' (default), 'L', or None for 'L' when the image is
    grayscale and 'RGB' otherwise.

    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), 'a.png'); Image.new('RGBA', (4, 3)).save(path)
    >>> load_image(path).mode, load_image(path).size
    ('RGB', (4, 3))
    """
    if mode not in _MODES:
        raise ValueError(f'mode must be one of {_MODES}, got {mode!r}')
    if isinstance(source, Image.Image):
        return _normalize(ImageOps.exif_transpose(source), mode)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise FileNotFoundError(f'image file {path!r} does not exist')
        if os.path.isdir(path):
            raise NotAFileError(f'{path!r} is a directory, not an image file')
        name = repr(path)
    elif hasattr(source, 'read'):
        name = repr(getattr(source, 'name', '<file object>'))
    else:
        raise TypeError(f'load_image takes a path, a binary file object or a PIL image, got {type(source).__name__}')
    try:
        with Image.open(source) as img:
            img.load()
            upright = ImageOps.exif_transpose(img)
            return _normalize(upright if upright is not img else img.copy(), mode)
    except UnidentifiedImageError as exc:
        raise ValueError(f'{name} is not an image file Pillow can read (JPEG, PNG, WebP, TIFF, BMP, GIF, ...)') \
            from exc
    except Image.DecompressionBombError as exc:
        raise ValueError(f'{name} is too large to open safely ({exc}); raise PIL.Image.MAX_IMAGE_PIXELS if it is '
                         f'trusted') from exc
    except OSError as exc:
        raise ValueError(f'cannot read image {name}: {exc} (truncated or corrupt file?)') from exc
