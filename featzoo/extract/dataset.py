"""Decoding and preprocessing images in DataLoader workers, turning unreadable files into reasons, not crashes."""
from __future__ import annotations

import contextlib
import math
import os
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from PIL import Image
from torch.utils.data import Dataset

from ..data import load_image

__all__ = ['ImageFileDataset', 'collate_images', 'decode_image', 'fast_decode_size', 'worker_init', 'DEFAULT_MAX_PIXELS',
           'ImageTooLargeError']

# Pillow's own default of PIL.Image.MAX_IMAGE_PIXELS (about a 9459 x 9459 RGB image, 256 MiB decoded): featzoo
# keeps it fixed, whatever a program sets Pillow's global to, so that a job's limit is what its record says.
DEFAULT_MAX_PIXELS = 89_478_485


class ImageTooLargeError(ValueError):
    """An image whose header promises more pixels than the extraction's limit; it is skipped, never decoded."""

# (file index, preprocessed tensor or None, reason the file was skipped or None)
Item = Tuple[int, Optional[torch.Tensor], Optional[str]]


def fast_decode_size(data_config: Dict[str, Any]) -> int:
    """The smallest side a JPEG may be decoded at without the eval transform ever upsampling because of it.

    The eval resize target is ``size / crop_pct``; asking Pillow for at least that many pixels on both sides keeps
    every crop mode ('center', 'squash', 'border') downsampling.

    >>> fast_decode_size({'input_size': (3, 224, 224), 'crop_pct': 0.875})
    256
    """
    height, width = data_config['input_size'][-2:]
    crop_pct = data_config.get('crop_pct') or 1.0
    return int(math.ceil(max(height, width) / min(crop_pct, 1.0)))


@contextlib.contextmanager
def _pillow_limit_off() -> Iterator[None]:
    # Pillow refuses images over twice its global MAX_IMAGE_PIXELS (in open and again in load), whatever limit
    # featzoo applies, which may be set higher; its check is off meanwhile. Decoding workers are separate
    # processes, and in the main process the global is restored before anything else runs.
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _open_unchecked(path: str) -> Image.Image:
    with _pillow_limit_off():
        return Image.open(path)


def decode_image(path: str, mode: str = 'RGB', draft_size: Optional[int] = None,
                 max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open an image with :func:`featzoo.data.load_image` once its header shows at most ``max_pixels`` pixels
    (None: no limit); a larger one raises :class:`ImageTooLargeError` without being decoded, so a small file that
    expands to gigabytes (an image bomb) costs nothing. With ``draft_size``, Pillow may decode a JPEG at a reduced
    scale (1/2, 1/4 or 1/8) as long as both sides stay at least ``draft_size``.

    Reduced-scale decoding changes pixels slightly, which is why it is opt-in (``--fast-decode``).

    >>> import tempfile; p = os.path.join(tempfile.mkdtemp(), 'a.jpg'); Image.new('RGB', (800, 600)).save(p)
    >>> decode_image(p, draft_size=200).size
    (400, 300)
    >>> decode_image(p, max_pixels=1000)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    featzoo.extract.dataset.ImageTooLargeError: 800 x 600 = 480000 pixels, over the limit of 1000 ...
    """
    if isinstance(path, str) and os.path.isfile(path) and os.path.getsize(path) == 0:
        # Pillow would only say it cannot identify the file; an empty one is a failed copy or download
        raise ValueError(f'{path!r} is an empty file (0 bytes), not an image')
    try:
        img = _open_unchecked(path)
    except Exception as exc:  # noqa: BLE001 - not an image, unreadable, missing: the loader words the reason
        if isinstance(path, str) and os.path.exists(path) and not os.path.isfile(path):
            # a FIFO or a device: opening it again (to word the reason) could wait for a writer forever
            raise ValueError(f'{path!r} is not a regular file ({type(exc).__name__}: {exc})') from exc
        return load_image(path, mode)
    with img:
        width, height = img.size
        if max_pixels is not None and width * height > max_pixels:
            raise ImageTooLargeError(f'{width} x {height} = {width * height} pixels, over the limit of {max_pixels} '
                                     f'(max_pixels; --max-pixels on the command line); skipped without decoding')
        if draft_size is not None and img.format == 'JPEG':
            img.draft(None, (draft_size, draft_size))
        try:
            with _pillow_limit_off():
                img.load()
        except Exception as exc:  # noqa: BLE001 - a truncated or corrupt file
            raise ValueError(f'cannot read image {path!r}: {exc} (truncated or corrupt file?)') from exc
        return load_image(img, mode)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return f'{type(exc).__name__}: {text}'


class ImageFileDataset(Dataset):
    """Items ``(index, tensor, None)`` for readable files and ``(index, None, reason)`` for the others.

    ``indices`` selects which entries of ``paths`` this dataset serves (a rank's share of the pending shards); the
    returned index is the position in ``paths``, so results land in the right row whatever the split.

    >>> ds = ImageFileDataset('/nonexistent', ['a.jpg'], [0], transform=lambda im: im)
    >>> ds[0][0], ds[0][1], ds[0][2].startswith('FileNotFoundError')
    (0, None, True)
    """

    def __init__(self, root: str, paths: Sequence[str], indices: Sequence[int], transform: Callable[[Any], Any],
                 mode: str = 'RGB', draft_size: Optional[int] = None,
                 max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> None:
        self.root = root
        self.paths = list(paths)
        self.indices = list(indices)
        self.transform = transform
        self.mode = mode
        self.draft_size = draft_size
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> Item:
        index = self.indices[position]
        path = os.path.join(self.root, *self.paths[index].split('/'))
        try:
            image = decode_image(path, self.mode, self.draft_size, self.max_pixels)
            tensor = self.transform(image)
        except Exception as exc:  # noqa: BLE001 - any failure of one file is that file's skip reason
            return index, None, _reason(exc)
        return index, tensor, None


def collate_images(items: List[Item]) -> Tuple[List[int], Optional[torch.Tensor], List[Tuple[int, str]]]:
    """Stack the readable items of a batch; keep the unreadable ones aside with their reasons.

    >>> ok, x, bad = collate_images([(0, torch.zeros(3, 2, 2), None), (1, None, 'ValueError: corrupt')])
    >>> ok, tuple(x.shape), bad
    ([0], (1, 3, 2, 2), [(1, 'ValueError: corrupt')])
    """
    good = [(index, tensor) for index, tensor, reason in items if reason is None]
    bad = [(index, reason) for index, _, reason in items if reason is not None]
    batch = torch.stack([tensor for _, tensor in good]) if good else None
    return [index for index, _ in good], batch, bad


# Decoding needs a small share of the CPU; at a lower priority it fills the gaps of the forward pass instead of
# preempting one of its threads mid-layer, which would stall the others at the layer's end (CPU inference).
WORKER_NICENESS = 10


def worker_init(_: int) -> None:
    """Keep each decoding worker on one thread and below the forward pass in priority: the processes share the
    cores with it."""
    torch.set_num_threads(1)
    if hasattr(os, 'nice'):
        try:
            os.nice(WORKER_NICENESS)
        except OSError:  # a sandbox may forbid it; decoding then competes as an equal
            pass
