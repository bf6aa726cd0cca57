"""FeatureInfo: what each feature level of a backbone outputs (channels, stride, module), and out_indices rules."""
from __future__ import annotations

from typing import AbstractSet, Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

from ..checks import check_index_list

OutIndices = Union[int, Sequence[int]]


def normalize_out_indices(out_indices: OutIndices, num_levels: int) -> Tuple[int, ...]:
    """Turn ``out_indices`` into sorted absolute level indices.

    An int ``n`` means the last ``n`` levels; a sequence may hold negative indices counted from the end.
    Empty, duplicate or out-of-range indices raise ``ValueError``.

    >>> normalize_out_indices((4, 2), 5)
    (2, 4)
    >>> normalize_out_indices((-1, 2), 5)
    (2, 4)
    >>> normalize_out_indices(2, 5)
    (3, 4)
    """
    if isinstance(out_indices, bool):
        raise TypeError(f'out_indices must be an int or a sequence of ints, got {out_indices!r}')
    if isinstance(out_indices, int):
        if not 1 <= out_indices <= num_levels:
            raise ValueError(f'out_indices={out_indices} as an int means "the last n levels"; '
                             f'valid: 1 to {num_levels} for a model with {num_levels} feature levels')
        return tuple(range(num_levels - out_indices, num_levels))
    # a dict or set iterates in an order the caller did not choose, and a dict's values would be silently ignored
    if isinstance(out_indices, (str, bytes, Mapping, AbstractSet)) or not isinstance(out_indices, Iterable):
        raise TypeError(f'out_indices must be an int or a sequence of ints (list or tuple), got {out_indices!r} '
                        f'({type(out_indices).__name__})')
    raw = list(out_indices)
    absolute = check_index_list('out_indices', raw, num_levels, f' for a model with {num_levels} feature levels')
    if len(set(absolute)) != len(absolute):
        dup = sorted({i for i in absolute if absolute.count(i) > 1})
        raise ValueError(f'out_indices {tuple(raw)} name level(s) {dup} more than once; each level may appear once')
    return tuple(sorted(absolute))


class FeatureInfo:
    """Per-level facts of a feature backbone, restricted to the selected ``out_indices``.

    >>> info = FeatureInfo([dict(num_chs=64, reduction=2, module='act1'),
    ...                     dict(num_chs=256, reduction=4, module='layer1')], out_indices=(-1,))
    >>> info.channels(), info.reduction(), info.module_name()
    ([256], [4], ['layer1'])
    """

    def __init__(self, feature_info: Sequence[Dict[str, Any]], out_indices: OutIndices = None) -> None:
        levels = [dict(level) for level in feature_info]
        for i, level in enumerate(levels):
            missing = {'num_chs', 'reduction', 'module'} - set(level)
            if missing:
                raise ValueError(f'feature level {i} lacks {sorted(missing)}: {level}')
        self.info = levels
        self.out_indices = normalize_out_indices(
            out_indices if out_indices is not None else tuple(range(len(levels))), len(levels))

    def from_other(self, out_indices: OutIndices) -> 'FeatureInfo':
        """The same levels with another selection.

        >>> FeatureInfo([dict(num_chs=8, reduction=2, module='a')]).from_other((0,)).out_indices
        (0,)
        """
        return FeatureInfo(self.info, out_indices)

    def get(self, key: str, idx: Optional[Union[int, Sequence[int]]] = None):
        """Value of ``key`` for the selected levels, or for position ``idx`` of the selection (int or list)."""
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, (tuple, list)):
            return [self.info[self.out_indices[i]][key] for i in idx]
        return self.info[self.out_indices[idx]][key]

    def get_dicts(self, keys: Optional[Sequence[str]] = None, idx: Optional[Union[int, Sequence[int]]] = None):
        """Level dicts (optionally restricted to ``keys``) for the selection or position(s) ``idx``."""
        def pick(level):
            return dict(level) if keys is None else {k: level[k] for k in keys}
        if idx is None:
            return [pick(self.info[i]) for i in self.out_indices]
        if isinstance(idx, (tuple, list)):
            return [pick(self.info[self.out_indices[i]]) for i in idx]
        return pick(self.info[self.out_indices[idx]])

    def channels(self, idx=None):
        """Channel count of each selected level."""
        return self.get('num_chs', idx)

    def reduction(self, idx=None):
        """Stride (input size / output size) of each selected level."""
        return self.get('reduction', idx)

    def module_name(self, idx=None):
        """Module name of each selected level."""
        return self.get('module', idx)

    def len(self) -> int:
        return len(self.out_indices)

    def __len__(self) -> int:
        return len(self.out_indices)

    def __getitem__(self, item):
        return self.info[item]

    def __iter__(self):
        return iter(self.get_dicts())

    def __repr__(self) -> str:
        return f'FeatureInfo(out_indices={self.out_indices}, levels={self.get_dicts()})'
