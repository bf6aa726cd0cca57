"""AutoAugment, RandAugment, AugMix and 3-Augment on PIL images, configured by timm's policy strings.

Policy strings: ``'rand-m9-mstd0.5-inc1'`` (RandAugment: m magnitude, n layers, p op probability, mstd magnitude noise,
mmax magnitude cap, inc severity-increasing ops, t op set), ``'augmix-m5-w4-d2'`` (AugMix: m severity, w width,
d depth, a alpha, b blended, mstd), ``'original-mstd0.5'`` / ``'v0'`` / ``'v0r'`` / ``'originalr'`` / ``'3a'``
(AutoAugment policies). Magnitudes run from 0 to 10. Random draws follow timm's order, so seeded runs agree.
"""
from __future__ import annotations

import random
import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

__all__ = ['AugmentOp', 'AutoAugment', 'RandAugment', 'AugMixAugment', 'auto_augment_transform',
           'rand_augment_transform', 'augment_and_mix_transform', 'create_auto_augment']

_MAX_LEVEL = 10.
_GRAY = (128, 128, 128)
_DEFAULT_HPARAMS = dict(translate_const=250, img_mean=_GRAY)
_BILINEAR_OR_BICUBIC = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC)


def _resample(choice: Any) -> Any:
    return random.choice(choice) if isinstance(choice, (list, tuple)) else choice


def _affine(img: Image.Image, matrix: Tuple[float, ...], fill: Any, resample: Any) -> Image.Image:
    return img.transform(img.size, Image.Transform.AFFINE, matrix, resample=_resample(resample), fillcolor=fill)


def _solarize_add(img: Image.Image, add: int, thresh: int = 128) -> Image.Image:
    if img.mode not in ('L', 'RGB'):
        return img
    table = [min(255, i + add) if i < thresh else i for i in range(256)]
    return img.point(table * (3 if img.mode == 'RGB' else 1))


def _posterize(img: Image.Image, bits: int) -> Image.Image:
    return img if bits >= 8 else ImageOps.posterize(img, bits)


def _desaturate(img: Image.Image, amount: float) -> Image.Image:
    return ImageEnhance.Color(img).enhance(min(1., max(0., 1. - amount)))


# Each op: fn(img, *level_args, fill=, resample=) -> img.
_OP_FNS: Dict[str, Callable[..., Image.Image]] = {
    'AutoContrast': lambda img, fill, resample: ImageOps.autocontrast(img),
    'Equalize': lambda img, fill, resample: ImageOps.equalize(img),
    'Invert': lambda img, fill, resample: ImageOps.invert(img),
    'Rotate': lambda img, deg, fill, resample: img.rotate(deg, resample=_resample(resample), fillcolor=fill),
    'Posterize': lambda img, bits, fill, resample: _posterize(img, bits),
    'Solarize': lambda img, thresh, fill, resample: ImageOps.solarize(img, thresh),
    'SolarizeAdd': lambda img, add, fill, resample: _solarize_add(img, add),
    'Color': lambda img, f, fill, resample: ImageEnhance.Color(img).enhance(f),
    'Contrast': lambda img, f, fill, resample: ImageEnhance.Contrast(img).enhance(f),
    'Brightness': lambda img, f, fill, resample: ImageEnhance.Brightness(img).enhance(f),
    'Sharpness': lambda img, f, fill, resample: ImageEnhance.Sharpness(img).enhance(f),
    'ShearX': lambda img, f, fill, resample: _affine(img, (1, f, 0, 0, 1, 0), fill, resample),
    'ShearY': lambda img, f, fill, resample: _affine(img, (1, 0, 0, f, 1, 0), fill, resample),
    'TranslateX': lambda img, px, fill, resample: _affine(img, (1, 0, px, 0, 1, 0), fill, resample),
    'TranslateY': lambda img, px, fill, resample: _affine(img, (1, 0, 0, 0, 1, px), fill, resample),
    'TranslateXRel': lambda img, pct, fill, resample: _affine(img, (1, 0, pct * img.size[0], 0, 1, 0), fill,
                                                              resample),
    'TranslateYRel': lambda img, pct, fill, resample: _affine(img, (1, 0, 0, 0, 1, pct * img.size[1]), fill,
                                                              resample),
    'Desaturate': lambda img, f, fill, resample: _desaturate(img, f),
    'GaussianBlur': lambda img, r, fill, resample: img.filter(ImageFilter.GaussianBlur(radius=r)),
    'GaussianBlurRand': lambda img, f, fill, resample: img.filter(
        ImageFilter.GaussianBlur(radius=random.uniform(0.1, 2.0 * f))),
}
for _base in ('Posterize', 'Solarize', 'Color', 'Contrast', 'Brightness', 'Sharpness'):
    _OP_FNS[_base + 'Increasing'] = _OP_FNS[_base]
_OP_FNS['PosterizeOriginal'] = _OP_FNS['Posterize']


def _maybe_negate(value: float) -> float:
    return -value if random.random() > 0.5 else value


def _frac(level: float) -> float:
    return level / _MAX_LEVEL


def _enhance_increasing(level: float, _: Dict[str, Any]) -> Tuple[float]:
    # Severity grows with the level in both directions around identity (1.0), never below 0.1.
    return max(0.1, 1.0 + _maybe_negate(_frac(level) * .9)),


def _minmax(lo: float, hi: float) -> Callable[[float, Dict[str, Any]], Tuple[float]]:
    return lambda level, _: (max(lo, min(hi, lo + (hi - lo) * _frac(level))),)


# Each level function maps a magnitude in [0, 10] to the op's arguments; None for ops without arguments.
_LEVEL_FNS: Dict[str, Optional[Callable[[float, Dict[str, Any]], tuple]]] = {
    'AutoContrast': None, 'Equalize': None, 'Invert': None,
    'Rotate': lambda level, _: (_maybe_negate(_frac(level) * 30.),),
    'Posterize': lambda level, _: (int(_frac(level) * 4),),
    'PosterizeIncreasing': lambda level, _: (4 - int(_frac(level) * 4),),
    'PosterizeOriginal': lambda level, _: (int(_frac(level) * 4) + 4,),
    'Solarize': lambda level, _: (min(256, int(_frac(level) * 256)),),
    'SolarizeIncreasing': lambda level, _: (256 - min(256, int(_frac(level) * 256)),),
    'SolarizeAdd': lambda level, _: (min(128, int(_frac(level) * 110)),),
    'ShearX': lambda level, _: (_maybe_negate(_frac(level) * 0.3),),
    'ShearY': lambda level, _: (_maybe_negate(_frac(level) * 0.3),),
    'TranslateX': lambda level, hp: (_maybe_negate(_frac(level) * float(hp['translate_const'])),),
    'TranslateY': lambda level, hp: (_maybe_negate(_frac(level) * float(hp['translate_const'])),),
    'TranslateXRel': lambda level, hp: (_maybe_negate(_frac(level) * hp.get('translate_pct', 0.45)),),
    'TranslateYRel': lambda level, hp: (_maybe_negate(_frac(level) * hp.get('translate_pct', 0.45)),),
    'Desaturate': _minmax(0.5, 1.0),
    'GaussianBlur': _minmax(0.1, 2.0),
    'GaussianBlurRand': _minmax(0.0, 1.0),
}
for _base in ('Color', 'Contrast', 'Brightness', 'Sharpness'):
    _LEVEL_FNS[_base] = lambda level, _: (_frac(level) * 1.8 + 0.1,)
    _LEVEL_FNS[_base + 'Increasing'] = _enhance_increasing

OP_NAMES = tuple(_OP_FNS)


class AugmentOp:
    """One augmentation op applied with probability ``prob`` at ``magnitude`` (0-10, optionally noisy).

    >>> AugmentOp('Rotate', prob=1.0, magnitude=5)(Image.new('RGB', (8, 8))).size
    (8, 8)
    """

    def __init__(self, name: str, prob: float = 0.5, magnitude: float = 10,
                 hparams: Optional[Dict[str, Any]] = None) -> None:
        if name not in _OP_FNS:
            raise ValueError(f'unknown augmentation op {name!r}; valid: {OP_NAMES}')
        hparams = dict(hparams or _DEFAULT_HPARAMS)
        self.name = name
        self.prob = prob
        self.magnitude = magnitude
        self.hparams = hparams
        self.fill = hparams.get('img_mean', _GRAY)
        self.resample = hparams.get('interpolation', _BILINEAR_OR_BICUBIC)
        self.magnitude_std = hparams.get('magnitude_std', 0)
        self.magnitude_max = hparams.get('magnitude_max', None)

    def __call__(self, img: Image.Image) -> Image.Image:
        if self.prob < 1.0 and random.random() > self.prob:
            return img
        magnitude = self.magnitude
        if self.magnitude_std == float('inf'):
            magnitude = random.uniform(0, magnitude)
        elif self.magnitude_std > 0:
            magnitude = random.gauss(magnitude, self.magnitude_std)
        magnitude = max(0., min(magnitude, self.magnitude_max or _MAX_LEVEL))
        level_fn = _LEVEL_FNS[self.name]
        args = level_fn(magnitude, self.hparams) if level_fn is not None else ()
        return _OP_FNS[self.name](img, *args, fill=self.fill, resample=self.resample)

    def __repr__(self) -> str:
        extra = f', mmax={self.magnitude_max}' if self.magnitude_max is not None else ''
        return f'{type(self).__name__}(name={self.name}, p={self.prob}, m={self.magnitude}, ' \
               f'mstd={self.magnitude_std}{extra})'


# AutoAugment policies: sub-policies of (op, probability, magnitude), one sub-policy drawn per image.
_POLICY_V0 = (
    (('Equalize', 0.8, 1), ('ShearY', 0.8, 4)), (('Color', 0.4, 9), ('Equalize', 0.6, 3)),
    (('Color', 0.4, 1), ('Rotate', 0.6, 8)), (('Solarize', 0.8, 3), ('Equalize', 0.4, 7)),
    (('Solarize', 0.4, 2), ('Solarize', 0.6, 2)), (('Color', 0.2, 0), ('Equalize', 0.8, 8)),
    (('Equalize', 0.4, 8), ('SolarizeAdd', 0.8, 3)), (('ShearX', 0.2, 9), ('Rotate', 0.6, 8)),
    (('Color', 0.6, 1), ('Equalize', 1.0, 2)), (('Invert', 0.4, 9), ('Rotate', 0.6, 0)),
    (('Equalize', 1.0, 9), ('ShearY', 0.6, 3)), (('Color', 0.4, 7), ('Equalize', 0.6, 0)),
    (('Posterize', 0.4, 6), ('AutoContrast', 0.4, 7)), (('Solarize', 0.6, 8), ('Color', 0.6, 9)),
    (('Solarize', 0.2, 4), ('Rotate', 0.8, 9)), (('Rotate', 1.0, 7), ('TranslateYRel', 0.8, 9)),
    (('ShearX', 0.0, 0), ('Solarize', 0.8, 4)), (('ShearY', 0.8, 0), ('Color', 0.6, 4)),
    (('Color', 1.0, 0), ('Rotate', 0.6, 2)), (('Equalize', 0.8, 4), ('Equalize', 0.0, 8)),
    (('Equalize', 1.0, 4), ('AutoContrast', 0.6, 2)), (('ShearY', 0.4, 7), ('SolarizeAdd', 0.6, 7)),
    (('Posterize', 0.8, 2), ('Solarize', 0.6, 10)), (('Solarize', 0.6, 8), ('Equalize', 0.6, 1)),
    (('Color', 0.8, 6), ('Rotate', 0.4, 5)),
)
_POLICY_ORIGINAL = (
    (('PosterizeOriginal', 0.4, 8), ('Rotate', 0.6, 9)), (('Solarize', 0.6, 5), ('AutoContrast', 0.6, 5)),
    (('Equalize', 0.8, 8), ('Equalize', 0.6, 3)), (('PosterizeOriginal', 0.6, 7), ('PosterizeOriginal', 0.6, 6)),
    (('Equalize', 0.4, 7), ('Solarize', 0.2, 4)), (('Equalize', 0.4, 4), ('Rotate', 0.8, 8)),
    (('Solarize', 0.6, 3), ('Equalize', 0.6, 7)), (('PosterizeOriginal', 0.8, 5), ('Equalize', 1.0, 2)),
    (('Rotate', 0.2, 3), ('Solarize', 0.6, 8)), (('Equalize', 0.6, 8), ('PosterizeOriginal', 0.4, 6)),
    (('Rotate', 0.8, 8), ('Color', 0.4, 0)), (('Rotate', 0.4, 9), ('Equalize', 0.6, 2)),
    (('Equalize', 0.0, 7), ('Equalize', 0.8, 8)), (('Invert', 0.6, 4), ('Equalize', 1.0, 8)),
    (('Color', 0.6, 4), ('Contrast', 1.0, 8)), (('Rotate', 0.8, 8), ('Color', 1.0, 2)),
    (('Color', 0.8, 8), ('Solarize', 0.8, 7)), (('Sharpness', 0.4, 7), ('Invert', 0.6, 8)),
    (('ShearX', 0.6, 5), ('Equalize', 1.0, 9)), (('Color', 0.4, 0), ('Equalize', 0.6, 3)),
    (('Equalize', 0.4, 7), ('Solarize', 0.2, 4)), (('Solarize', 0.6, 5), ('AutoContrast', 0.6, 5)),
    (('Invert', 0.6, 4), ('Equalize', 1.0, 8)), (('Color', 0.6, 4), ('Contrast', 1.0, 8)),
    (('Equalize', 0.8, 8), ('Equalize', 0.6, 3)),
)
_POLICY_3A = ((('Solarize', 1.0, 5),), (('Desaturate', 1.0, 10),), (('GaussianBlurRand', 1.0, 10),))


def _renamed(policy: Sequence[Sequence[tuple]], old: str, new: str) -> Tuple[Tuple[tuple, ...], ...]:
    return tuple(tuple((new if op == old else op, p, m) for op, p, m in sub) for sub in policy)


AUTO_AUGMENT_POLICIES = {
    'v0': _POLICY_V0,
    'v0r': _renamed(_POLICY_V0, 'Posterize', 'PosterizeIncreasing'),
    'original': _POLICY_ORIGINAL,
    'originalr': _renamed(_POLICY_ORIGINAL, 'PosterizeOriginal', 'PosterizeIncreasing'),
    '3a': _POLICY_3A,
}

# RandAugment op sets; dict sets are drawn with the given weights and without replacement.
_RAND_OPS = ('AutoContrast', 'Equalize', 'Invert', 'Rotate', 'Posterize', 'Solarize', 'SolarizeAdd', 'Color',
             'Contrast', 'Brightness', 'Sharpness', 'ShearX', 'ShearY', 'TranslateXRel', 'TranslateYRel')
_RAND_INCREASING_OPS = ('AutoContrast', 'Equalize', 'Invert', 'Rotate', 'PosterizeIncreasing', 'SolarizeIncreasing',
                        'SolarizeAdd', 'ColorIncreasing', 'ContrastIncreasing', 'BrightnessIncreasing',
                        'SharpnessIncreasing', 'ShearX', 'ShearY', 'TranslateXRel', 'TranslateYRel')
_RAND_OP_SETS: Dict[str, Union[Tuple[str, ...], Dict[str, float]]] = {
    'weights': {'Rotate': 3, 'ShearX': 2, 'ShearY': 2, 'TranslateXRel': 1, 'TranslateYRel': 1,
                'ColorIncreasing': .25, 'SharpnessIncreasing': 0.25, 'AutoContrast': 0.25,
                'SolarizeIncreasing': .05, 'SolarizeAdd': .05, 'ContrastIncreasing': .05,
                'BrightnessIncreasing': .05, 'Equalize': .05, 'PosterizeIncreasing': 0.05, 'Invert': 0.05},
    '3aw': {'SolarizeIncreasing': 6, 'Desaturate': 6, 'GaussianBlur': 6, 'Rotate': 3, 'ShearX': 2, 'ShearY': 2,
            'PosterizeIncreasing': 1, 'AutoContrast': 1, 'ColorIncreasing': 1, 'SharpnessIncreasing': 1,
            'ContrastIncreasing': 1, 'BrightnessIncreasing': 1, 'Equalize': 1, 'Invert': 1},
    '3a': ('SolarizeIncreasing', 'Desaturate', 'GaussianBlur'),
}
_AUGMIX_OPS = ('AutoContrast', 'ColorIncreasing', 'ContrastIncreasing', 'BrightnessIncreasing',
               'SharpnessIncreasing', 'Equalize', 'Rotate', 'PosterizeIncreasing', 'SolarizeIncreasing', 'ShearX',
               'ShearY', 'TranslateXRel', 'TranslateYRel')


class AutoAugment:
    """Apply one randomly drawn sub-policy (a short list of ops) per image.

    >>> AutoAugment([[AugmentOp('Invert', 1.0)]])(Image.new('L', (2, 2), 0)).getpixel((0, 0))
    255
    """

    def __init__(self, policy: Sequence[Sequence[AugmentOp]]) -> None:
        self.policy = [list(sub) for sub in policy]

    def __call__(self, img: Image.Image) -> Image.Image:
        for op in random.choice(self.policy):
            img = op(img)
        return img

    def __repr__(self) -> str:
        subs = ''.join('\n\t[' + ', '.join(str(op) for op in sub) + ']' for sub in self.policy)
        return f'{type(self).__name__}(policy={subs})'


class RandAugment:
    """Apply ``num_layers`` ops drawn from ``ops`` (uniformly with replacement, or by ``choice_weights`` without).

    >>> RandAugment([AugmentOp('Equalize', 1.0)], 2)(Image.new('RGB', (4, 4))).size
    (4, 4)
    """

    def __init__(self, ops: Sequence[AugmentOp], num_layers: int = 2,
                 choice_weights: Optional[np.ndarray] = None) -> None:
        self.ops = list(ops)
        self.num_layers = num_layers
        self.choice_weights = choice_weights

    def __call__(self, img: Image.Image) -> Image.Image:
        picks = np.random.choice(len(self.ops), self.num_layers, replace=self.choice_weights is None,
                                 p=self.choice_weights)
        for i in picks:
            img = self.ops[i](img)
        return img

    def __repr__(self) -> str:
        ops = ''.join(f'\n\t{op}' for op in self.ops)
        return f'{type(self).__name__}(n={self.num_layers}, ops={ops})'


class AugMixAugment:
    """AugMix: mix ``width`` chains of 1-3 random ops with Dirichlet weights, then blend with the original.

    >>> AugMixAugment([AugmentOp('Equalize', 1.0)])(Image.new('RGB', (4, 4))).size
    (4, 4)
    """

    def __init__(self, ops: Sequence[AugmentOp], alpha: float = 1., width: int = 3, depth: int = -1,
                 blended: bool = False) -> None:
        self.ops = list(ops)
        self.alpha = alpha
        self.width = width
        self.depth = depth
        self.blended = blended

    def _chain(self, img: Image.Image) -> Image.Image:
        depth = self.depth if self.depth > 0 else np.random.randint(1, 4)
        for i in np.random.choice(len(self.ops), depth, replace=True):
            img = self.ops[i](img)
        return img

    def __call__(self, img: Image.Image) -> Image.Image:
        weights = np.float32(np.random.dirichlet([self.alpha] * self.width))
        m = np.float32(np.random.beta(self.alpha, self.alpha))
        if self.blended:
            # Fold the final blend into successive pairwise blends: each chain's share relative to what remains.
            scaled = weights * m
            remaining = 1.
            shares = []
            for w in scaled[::-1]:
                share = w / remaining
                remaining *= (1 - share)
                shares.append(share)
            original = img.copy()
            for share in np.array(shares[::-1], dtype=np.float32):
                img = Image.blend(img, self._chain(original), share)
            return img
        mixed = np.zeros_like(img, dtype=np.float32)
        for w in weights:
            mixed += w * np.asarray(self._chain(img), dtype=np.float32)
        np.clip(mixed, 0, 255., out=mixed)
        return Image.blend(img, Image.fromarray(mixed.astype(np.uint8)), m)

    def __repr__(self) -> str:
        ops = ''.join(f'\n\t{op}' for op in self.ops)
        return f'{type(self).__name__}(alpha={self.alpha}, width={self.width}, depth={self.depth}, ops={ops})'


def _sections(config_str: str, head: str) -> List[Tuple[str, str]]:
    parts = config_str.split('-')
    if parts[0] != head:
        raise ValueError(f'{config_str!r} is not a {head!r} policy string')
    out = []
    for part in parts[1:]:
        split = re.split(r'(\d.*)', part)
        if len(split) >= 2:
            out.append((split[0], split[1]))
    return out


def _bad_section(config_str: str, key: str, valid: str) -> ValueError:
    return ValueError(f'unknown section {key!r} in augmentation policy {config_str!r}; valid sections: {valid}')


def auto_augment_transform(config_str: str, hparams: Optional[Dict[str, Any]] = None) -> AutoAugment:
    """AutoAugment from a policy string: 'v0', 'v0r', 'original', 'originalr' or '3a', optional '-mstd<x>'.

    >>> len(auto_augment_transform('original-mstd0.5').policy)
    25
    """
    hparams = dict(hparams or _DEFAULT_HPARAMS)
    name, *rest = config_str.split('-')
    if name not in AUTO_AUGMENT_POLICIES:
        raise ValueError(f'unknown AutoAugment policy {name!r} in {config_str!r}; valid: '
                         f'{sorted(AUTO_AUGMENT_POLICIES)}, or rand-... / augmix-...')
    for key, value in _sections('-'.join(['x'] + rest), 'x'):
        if key != 'mstd':
            raise _bad_section(config_str, key, 'mstd')
        hparams.setdefault('magnitude_std', float(value))
    return AutoAugment([[AugmentOp(op, p, m, hparams=hparams) for op, p, m in sub]
                        for sub in AUTO_AUGMENT_POLICIES[name]])


def rand_augment_transform(config_str: str, hparams: Optional[Dict[str, Any]] = None,
                           transforms: Union[str, Dict[str, float], Sequence[str], None] = None) -> RandAugment:
    """RandAugment from a policy string such as 'rand-m9-mstd0.5-inc1' or 'rand-m7-n3-tweights'.

    >>> rand_augment_transform('rand-m9-n3-mstd0.5').num_layers
    3
    """
    hparams = dict(hparams or _DEFAULT_HPARAMS)
    magnitude, num_layers, increasing, prob = _MAX_LEVEL, 2, False, 0.5
    parts = config_str.split('-')
    if parts[0] != 'rand':
        raise ValueError(f"{config_str!r} is not a RandAugment policy string (it starts with 'rand')")
    for part in parts[1:]:
        if part.startswith('t'):
            if transforms is None:
                transforms = part[1:]
            continue
        split = re.split(r'(\d.*)', part)
        if len(split) < 2:
            continue
        key, value = split[:2]
        if key == 'mstd':
            # Above 100 means uniform sampling of the magnitude in [0, m].
            hparams.setdefault('magnitude_std', float('inf') if float(value) > 100 else float(value))
        elif key == 'mmax':
            hparams.setdefault('magnitude_max', int(value))
        elif key == 'inc':
            increasing = bool(int(value))
        elif key == 'm':
            magnitude = int(value)
        elif key == 'n':
            num_layers = int(value)
        elif key == 'p':
            prob = float(value)
        else:
            raise _bad_section(config_str, key, 'm, n, p, mstd, mmax, inc, t')
    if isinstance(transforms, str):
        if transforms in _RAND_OP_SETS:
            transforms = _RAND_OP_SETS[transforms]
        else:
            transforms = _RAND_INCREASING_OPS if increasing else _RAND_OPS
    elif transforms is None:
        transforms = _RAND_INCREASING_OPS if increasing else _RAND_OPS
    weights = None
    if isinstance(transforms, dict):
        names, probs = zip(*transforms.items())
        weights = np.array(probs) / np.sum(probs)
        transforms = names
    ops = [AugmentOp(name, prob=prob, magnitude=magnitude, hparams=hparams) for name in transforms]
    return RandAugment(ops, num_layers, choice_weights=weights)


def augment_and_mix_transform(config_str: str, hparams: Optional[Dict[str, Any]] = None) -> AugMixAugment:
    """AugMix from a policy string such as 'augmix-m5-w4-d2' (severity 5, width 4, depth 2).

    >>> augment_and_mix_transform('augmix-m5-w4-d2').width
    4
    """
    hparams = dict(hparams or _DEFAULT_HPARAMS)
    magnitude, width, depth, alpha, blended = 3, 3, -1, 1., False
    for key, value in _sections(config_str, 'augmix'):
        if key == 'mstd':
            hparams.setdefault('magnitude_std', float(value))
        elif key == 'm':
            magnitude = int(value)
        elif key == 'w':
            width = int(value)
        elif key == 'd':
            depth = int(value)
        elif key == 'a':
            alpha = float(value)
        elif key == 'b':
            blended = bool(int(value))
        else:
            raise _bad_section(config_str, key, 'm, w, d, a, b, mstd')
    hparams.setdefault('magnitude_std', float('inf'))
    ops = [AugmentOp(name, prob=1.0, magnitude=magnitude, hparams=hparams) for name in _AUGMIX_OPS]
    return AugMixAugment(ops, alpha=alpha, width=width, depth=depth, blended=blended)


def create_auto_augment(config_str: str, hparams: Optional[Dict[str, Any]] = None
                        ) -> Callable[[Image.Image], Image.Image]:
    """The augmentation a policy string names: 'rand-...', 'augmix-...', or an AutoAugment policy.

    >>> type(create_auto_augment('rand-m9-mstd0.5-inc1')).__name__
    'RandAugment'
    """
    if not isinstance(config_str, str) or not config_str:
        raise TypeError(f"auto_augment must be a policy string such as 'rand-m9-mstd0.5-inc1', got {config_str!r}")
    if config_str.startswith('rand'):
        return rand_augment_transform(config_str, hparams)
    if config_str.startswith('augmix'):
        return augment_and_mix_transform(config_str, hparams)
    return auto_augment_transform(config_str, hparams)
