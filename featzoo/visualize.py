"""Drawing what a backbone sees: one picture (PNG, JPEG or WebP) with the input and a labelled panel per feature
level (Pillow only).

Two views of a level: 'top' tiles the 16 channels with the highest mean activation, each stretched to its own
range; 'pca' maps the first three principal components of the channel vectors at each position to RGB.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo
from torch import nn

__all__ = ['MODES', 'PANEL_SIZE', 'FORMATS', 'Panel', 'Visualization', 'render_panels', 'top_channels_map',
           'pca_map', 'visualize', 'image_format']

MODES = ('top', 'pca')
# The file types visualize writes, by extension (any case): the picture is encoded as its name says.
FORMATS = {'.png': 'PNG', '.jpg': 'JPEG', '.jpeg': 'JPEG', '.webp': 'WEBP'}
# Fonts tried for the labels before Pillow's own, which covers little beyond ASCII: file names are any language.
_FONT_CANDIDATES = ('DejaVuSans.ttf', '/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf', 'NotoSans-Regular.ttf',
                    '/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf', 'Arial Unicode.ttf', 'arialuni.ttf',
                    'Arial.ttf', 'arial.ttf', '/System/Library/Fonts/Supplemental/Arial Unicode.ttf')
PANEL_SIZE = 256
TOP_K = 16
_MARGIN = 12
_LABEL_HEIGHT = 46
_MAX_COLUMNS = 6
_GAP = 2
# Anchor colours of a perceptually ordered map (dark blue -> green -> yellow), interpolated linearly.
_COLORMAP = np.array([
    (68, 1, 84), (72, 40, 120), (62, 74, 137), (49, 104, 142), (38, 130, 142), (31, 158, 137),
    (53, 183, 121), (109, 205, 89), (180, 222, 44), (253, 231, 37)], dtype=np.float64)


@dataclass
class Panel:
    """One panel of the picture: what it shows and where (``box`` = left, top, right, bottom in pixels).

    >>> Panel('input', None, None, None, (0, 0, 1, 1)).kind
    'input'
    """

    kind: str
    module: Optional[str]
    channels: Optional[int]
    reduction: Optional[int]
    box: Tuple[int, int, int, int]
    index: Optional[int] = None
    size: Optional[Tuple[int, int]] = None


@dataclass
class Visualization:
    """The drawn picture and its panels (the input first, then one per feature level)."""

    image: Image.Image
    panels: List[Panel] = field(default_factory=list)
    mode: str = 'top'
    title: str = ''

    def metadata(self) -> Dict[str, Any]:
        """What the file's ``featzoo`` metadata holds: the mode, the title as drawn and every panel's facts and box."""
        return {'mode': self.mode, 'title': self.title, 'panels': [vars(p) for p in self.panels]}

    def save(self, path: Union[str, os.PathLike]) -> str:
        """Write the picture in the format its extension names (.png, .jpg/.jpeg, .webp) with the panel facts as
        metadata (a PNG ``featzoo`` text chunk, a JPEG comment, WebP XMP); returns the path.

        >>> render_panels(Image.new('RGB', (8, 8)), [], []).save('maps.gif')  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: cannot write 'maps.gif': ...
        """
        path = os.fspath(path)
        kind = image_format(path)
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        facts = json.dumps(self.metadata())
        if kind == 'PNG':
            info = PngInfo()
            info.add_text('featzoo', facts)
            self.image.save(path, format='PNG', pnginfo=info)
        elif kind == 'JPEG':
            self.image.save(path, format='JPEG', quality=95, comment=facts.encode())
        else:
            self.image.save(path, format='WEBP', quality=95, xmp=facts.encode())
        return path


def image_format(path: Union[str, os.PathLike]) -> str:
    """The Pillow format that a picture named ``path`` is written in; any other extension is a ValueError.

    >>> image_format('maps.JPG'), image_format('out/maps.webp')
    ('JPEG', 'WEBP')
    """
    extension = os.path.splitext(os.fspath(path))[1].lower()
    if extension not in FORMATS:
        raise ValueError(f'cannot write {os.fspath(path)!r}: {extension or "no extension"} is not a picture format '
                         f'featzoo writes; name the output .png, .jpg, .jpeg or .webp')
    return FORMATS[extension]


def _colorize(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to RGB uint8 through the colormap."""
    position = np.clip(values, 0.0, 1.0) * (len(_COLORMAP) - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, len(_COLORMAP) - 1)
    frac = (position - low)[..., None]
    rgb = _COLORMAP[low] * (1 - frac) + _COLORMAP[high] * frac
    return rgb.round().astype(np.uint8)


def _stretch(values: np.ndarray) -> np.ndarray:
    # Each map to its own range; a constant map shows as the bottom colour rather than dividing by zero.
    low, high = float(values.min()), float(values.max())
    if not math.isfinite(low) or not math.isfinite(high) or high - low <= 1e-12:
        return np.zeros_like(values, dtype=np.float64)
    return (values - low) / (high - low)


def _fit(image: Image.Image, size: int, resample: Image.Resampling) -> Image.Image:
    scale = size / max(image.width, image.height)
    target = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(target, resample)


def top_channels_map(feature: torch.Tensor, size: int = PANEL_SIZE, k: int = TOP_K) -> Image.Image:
    """A square grid of the ``k`` channels of ``feature`` [C, H, W] with the highest mean activation.

    >>> top_channels_map(torch.rand(32, 7, 7), size=64).size
    (64, 64)
    """
    if feature.ndim != 3:
        raise ValueError(f'a feature map must be [channels, height, width], got shape {tuple(feature.shape)}')
    feature = feature.detach().float().cpu()
    count = min(k, feature.shape[0])
    order = torch.argsort(feature.mean(dim=(1, 2)), descending=True)[:count]
    side = math.ceil(math.sqrt(count))
    cell = (size - _GAP * (side - 1)) // side
    grid = Image.new('RGB', (size, size), (255, 255, 255))
    for slot, channel in enumerate(order.tolist()):
        tile = Image.fromarray(_colorize(_stretch(feature[channel].numpy())))
        tile = _fit(tile, cell, Image.Resampling.NEAREST)
        row, col = divmod(slot, side)
        grid.paste(tile, (col * (cell + _GAP), row * (cell + _GAP)))
    return grid


def pca_map(feature: torch.Tensor, size: int = PANEL_SIZE) -> Image.Image:
    """The first three principal components of ``feature`` [C, H, W] (over positions) as red, green and blue.

    Each component is stretched to [0, 1] between its 1st and 99th percentiles, so a few extreme positions do not
    wash the picture out.

    >>> pca_map(torch.rand(32, 7, 7), size=64).size
    (64, 64)
    """
    if feature.ndim != 3:
        raise ValueError(f'a feature map must be [channels, height, width], got shape {tuple(feature.shape)}')
    channels, height, width = feature.shape
    points = feature.detach().double().cpu().reshape(channels, height * width).T
    points = points - points.mean(dim=0, keepdim=True)
    rgb = np.zeros((height * width, 3))
    if points.shape[0] > 1 and channels > 0:
        _, _, vh = torch.linalg.svd(points, full_matrices=False)
        components = min(3, vh.shape[0])
        scores = (points @ vh[:components].T).numpy()
        for i in range(components):
            column = scores[:, i]
            low, high = np.percentile(column, [1, 99])
            if high - low > 1e-12:
                rgb[:, i] = np.clip((column - low) / (high - low), 0, 1)
    image = Image.fromarray((rgb.reshape(height, width, 3) * 255).round().astype(np.uint8))
    return _fit(image, size, Image.Resampling.NEAREST)


def _font() -> ImageFont.ImageFont:
    for name in _FONT_CANDIDATES:
        try:
            return ImageFont.truetype(name, 12)
        except (OSError, ImportError):
            continue
    try:
        return ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def covered(font: ImageFont.ImageFont, char: str) -> bool:
    """Whether ``font`` has a glyph for ``char``: a missing one draws the same box as a private-use code point.

    >>> covered(_font(), 'a')
    True
    """
    if ' ' <= char <= '~':
        return True
    try:
        return bytes(font.getmask(char)) != bytes(font.getmask('\ue000'))
    except (UnicodeEncodeError, ValueError):  # a bitmap font takes Latin-1 at most
        return False


def legible(text: str, font: ImageFont.ImageFont) -> str:
    """``text`` with every character the font cannot draw written as its code point (``<U+732B>``), so that a
    name in any script reads as something rather than as empty boxes.

    >>> legible('cat.jpg', _font())
    'cat.jpg'
    """
    return ''.join(c if covered(font, c) else f'<U+{ord(c):04X}>' for c in text)


def render_panels(image: Image.Image, features: Sequence[torch.Tensor], levels: Sequence[Dict[str, Any]],
                  mode: str = 'top', title: str = '') -> Visualization:
    """Lay out the input and one panel per feature level, each under a label (module, channels, reduction).

    ``features``: one [C, H, W] (or [1, C, H, W]) tensor per level; ``levels``: a dict per level with
    ``module``, ``num_chs``, ``reduction`` and optionally ``index``.

    >>> vis = render_panels(Image.new('RGB', (64, 64)), [torch.rand(8, 4, 4)],
    ...                     [dict(module='layer1', num_chs=8, reduction=16)])
    >>> len(vis.panels), vis.image.size
    (2, (548, 326))
    """
    if mode not in MODES:
        raise ValueError(f'mode={mode!r} is invalid; valid: {", ".join(MODES)}')
    if len(features) != len(levels):
        raise ValueError(f'{len(features)} feature maps but {len(levels)} level descriptions')
    total = 1 + len(features)
    columns = min(total, _MAX_COLUMNS)
    rows = math.ceil(total / columns)
    cell_w, cell_h = PANEL_SIZE + _MARGIN, _LABEL_HEIGHT + PANEL_SIZE + _MARGIN
    title_h = 18 if title else 0
    canvas = Image.new('RGB', (_MARGIN + columns * cell_w, _MARGIN + title_h + rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = _font()
    title = legible(title, font)
    if title:
        draw.text((_MARGIN, _MARGIN // 2), title, fill=(0, 0, 0), font=font)
    panels: List[Panel] = []

    def place(slot: int, picture: Image.Image, lines: Sequence[str]) -> Tuple[int, int, int, int]:
        row, col = divmod(slot, columns)
        left = _MARGIN + col * cell_w
        top = _MARGIN + title_h + row * cell_h
        for n, line in enumerate(lines):
            draw.text((left, top + 2 + 14 * n), legible(line, font), fill=(0, 0, 0), font=font)
        box = (left, top + _LABEL_HEIGHT, left + PANEL_SIZE, top + _LABEL_HEIGHT + PANEL_SIZE)
        draw.rectangle((box[0] - 1, box[1] - 1, box[2], box[3]), outline=(200, 200, 200))
        canvas.paste(picture, (box[0], box[1]))
        return box

    shown = _fit(image.convert('RGB'), PANEL_SIZE, Image.Resampling.BICUBIC)
    box = place(0, shown, ['input', f'{image.width} x {image.height}'])
    panels.append(Panel('input', None, None, None, box, size=(image.height, image.width)))
    view = 'top-16 channels by mean' if mode == 'top' else 'PCA -> RGB'
    for slot, (feature, level) in enumerate(zip(features, levels), start=1):
        if feature.ndim == 4:
            feature = feature[0]
        picture = top_channels_map(feature) if mode == 'top' else pca_map(feature)
        index = level.get('index', slot - 1)
        lines = [f'level {index}: {level["module"]}',
                 f'{level["num_chs"]} channels, reduction {level["reduction"]}',
                 f'{feature.shape[-2]} x {feature.shape[-1]}, {view}']
        box = place(slot, picture, lines)
        panels.append(Panel('level', level['module'], int(level['num_chs']), int(level['reduction']), box,
                            index=index, size=(int(feature.shape[-2]), int(feature.shape[-1]))))
    return Visualization(canvas, panels, mode, title)


def _denormalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> Image.Image:
    pixels = x.detach().float().cpu() * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
    array = (pixels.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def visualize(model: Union[str, nn.Module], image: Union[str, os.PathLike], out: Optional[Union[str, os.PathLike]],
              out_indices: Optional[Union[int, Sequence[int]]] = None, checkpoint: Optional[str] = None,
              pretrained: bool = True, mode: str = 'top', input_size: Optional[Sequence[int]] = None,
              seed: int = 0) -> Visualization:
    """Run ``image`` through a feature backbone and draw every level; writes it to ``out`` when given, in the format
    its extension names (.png, .jpg/.jpeg, .webp; anything else is refused before any work). With random weights
    (``pretrained=False``) the title says so.

    ``model`` is a registered name (weights: ``checkpoint``, else the default pretrained tag, else random with
    ``pretrained=False``) or a ``features_only`` module. The input panel shows the model's preprocessed crop, so
    its geometry matches the maps.

    >>> vis = visualize('resnet18', 'samples/astronaut.jpg', 'maps.png', pretrained=False)  # doctest: +SKIP
    >>> [p.module for p in vis.panels]  # doctest: +SKIP
    [None, 'act1', 'layer1', 'layer2', 'layer3', 'layer4']
    """
    from .checks import check_input_size
    from .data import create_transform, load_image, resolve_data_config
    from .factory import build_with_weights

    if mode not in MODES:
        raise ValueError(f'mode={mode!r} is invalid; valid: {", ".join(MODES)}')
    if not os.path.isfile(os.fspath(image)):
        raise FileNotFoundError(f'image file {os.fspath(image)!r} does not exist')
    if out is not None:
        image_format(out)
    if isinstance(model, str):
        label = model
        net, weights = build_with_weights(model, checkpoint, pretrained, seed, features_only=True,
                                          out_indices=out_indices)
        if weights['source'] == 'random':
            # maps of an untrained network look like noise: the picture must not pass for a trained model's
            label += f' (random weights, seed {weights["seed"]})'
    elif isinstance(model, nn.Module):
        if checkpoint is not None or out_indices is not None:
            raise ValueError('checkpoint and out_indices apply to a model given by name; build your module with them')
        if getattr(model, 'feature_info', None) is None or not hasattr(model.feature_info, 'get_dicts'):
            raise ValueError('the module must be a feature backbone (create_model(..., features_only=True))')
        label = type(model).__name__
        net = model
    else:
        raise TypeError(f'model must be a registered model name or an nn.Module, got {type(model).__name__}')
    overrides: Dict[str, Any] = {}
    if input_size is not None:
        overrides['input_size'] = (3,) + check_input_size(input_size, lengths=(2,), allow_int=False)
    cfg = resolve_data_config(overrides, model=net)
    if input_size is not None:
        cfg['input_size'] = (cfg['input_size'][0],) + tuple(input_size)
    picture = load_image(image, 'L' if cfg['input_size'][0] == 1 else 'RGB')
    x = create_transform(**cfg)(picture).unsqueeze(0)
    net = net.eval()
    with torch.inference_mode():
        outputs = net(x)
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    levels = net.feature_info.get_dicts()
    for level, index in zip(levels, _level_indices(net, len(levels))):
        level['index'] = index
    vis = render_panels(_denormalize(x[0], cfg['mean'], cfg['std']), list(outputs), levels, mode=mode,
                        title=f'{label} on {os.path.basename(os.fspath(image))} ({mode})')
    if out is not None:
        vis.save(out)
    return vis


def _level_indices(net: nn.Module, count: int) -> List[int]:
    indices = getattr(net.feature_info, 'out_indices', None)
    if isinstance(indices, (tuple, list)) and len(indices) == count:
        return [int(i) for i in indices]
    return list(range(count))
