"""Argument checks shared by every public entry point: each names the argument, the bad value and what is valid.

User input is checked here (and in the loaders), never by ``assert`` and never inside ``forward``.

>>> check_int('batch_size', 8, minimum=1)
8
>>> check_input_size((224, 224))
(224, 224)
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

__all__ = ['check_bool', 'check_int', 'check_index_list', 'check_rate', 'check_choice', 'check_input_size', 'check_int_tuple']


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is exactly True or False, else TypeError.

    >>> check_bool('normalize', True)
    True
    """
    if not isinstance(value, bool):
        raise TypeError(f'{name} must be True or False, got {value!r}')
    return value


def check_int(name: str, value: Any, minimum: int = 0) -> int:
    """``value`` if it is an int (not a bool) >= ``minimum``; TypeError for a non-int, ValueError below the minimum.

    >>> check_int('num_classes', 0)
    0
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f'{name} must be an int >= {minimum}, got {value!r}')
    if value < minimum:
        raise ValueError(f'{name}={value} is invalid; it must be >= {minimum}')
    return value


def check_index_list(name: str, raw: Sequence[Any], count: int, scope: str = '') -> List[int]:
    """Each entry of ``raw`` (Python-style: negative counts from the end) as an index in ``[0, count)``, in order.
    An empty ``raw`` or an out-of-range entry is a ValueError, a non-int entry a TypeError; ``scope`` ends the
    out-of-range message (e.g. ``' for a model with 4 feature levels'``).

    >>> check_index_list('out_indices', [0, -1], 4)
    [0, 3]
    """
    if not raw:
        raise ValueError(f'{name} is empty; give at least one index in [{-count}, {count - 1}]')
    absolute = []
    for index in raw:
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f'{name} entries must be ints, got {index!r} in {tuple(raw)}')
        if not -count <= index < count:
            raise ValueError(f'{name} entry {index} is out of range{scope}; valid: {-count} to {count - 1}')
        absolute.append(index % count)
    return absolute


def check_rate(name: str, value: Any) -> float:
    """``value`` as a float if it is a number in [0, 1) (a dropout or drop-path rate).

    >>> check_rate('drop_rate', 0.1)
    0.1
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f'{name} must be a float in [0, 1), got {value!r}')
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f'{name}={value} is invalid; it must be in [0, 1)')
    return float(value)


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """``value`` if it is one of ``choices``, else ValueError listing them.

    >>> check_choice('output_fmt', 'NCHW', ('NCHW', 'NHWC'))
    'NCHW'
    """
    try:
        valid = value in choices
    except TypeError:  # unhashable values against a set
        valid = False
    if not valid:
        raise ValueError(f'{name}={value!r} is invalid; valid: {", ".join(repr(c) for c in choices)}')
    return value


def check_int_tuple(name: str, value: Any, length: Optional[int] = None, minimum: int = 1) -> Tuple[int, ...]:
    """``value`` as a tuple of ints >= ``minimum`` (of ``length`` entries, when given).

    >>> check_int_tuple('depths', [2, 2, 6, 2], length=4)
    (2, 2, 6, 2)
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise ValueError(f'{name} must be a non-empty sequence of ints, got {value!r}')
    if length is not None and len(value) != length:
        raise ValueError(f'{name} must have {length} entries, got {len(value)}: {tuple(value)}')
    return tuple(check_int(f'each {name} entry', v, minimum) for v in value)


def check_input_size(value: Any, lengths: Optional[Sequence[int]] = (2, 3), name: str = 'input_size',
                     allow_int: bool = True) -> Optional[Tuple[int, ...]]:
    """An input size as a tuple of positive ints: an int (a square side, when ``allow_int``), (H, W) or (C, H, W),
    whichever of ``lengths`` the caller takes (None: any length, e.g. the shape of one sample without the batch
    dimension); None passes through.

    >>> check_input_size(224)
    (224, 224)
    >>> check_input_size((3, 224, 224), lengths=(3,))
    (3, 224, 224)
    """
    if value is None:
        return None
    if allow_int and isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if lengths is None:
        shapes = 'a tuple of positive ints without the batch dimension, such as (3, 224, 224)'
    else:
        shapes = ' or '.join({2: '(height, width)', 3: '(channels, height, width)'}.get(n, f'{n} ints') for n in lengths)
        shapes = ('a positive int, ' if allow_int else '') + shapes + ' with positive ints'
    if (isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value
            or (lengths is not None and len(value) not in lengths)
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise ValueError(f'{name} must be {shapes}, got {value!r}')
    return tuple(int(v) for v in value)
