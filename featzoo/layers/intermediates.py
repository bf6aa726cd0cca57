"""Index selection for ``forward_intermediates`` / ``prune_intermediate_layers`` (timm's semantics)."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

IndicesArg = Optional[Union[int, Sequence[int]]]


def feature_take_indices(num_features: int, indices: IndicesArg = None) -> Tuple[List[int], int]:
    """Absolute indices to take among ``num_features`` intermediates, and the largest of them.

    ``None`` takes all; an int ``n`` takes the last ``n``; a sequence takes those positions, negative ones
    counted from the end (order kept, as timm does). Bad values raise ``ValueError`` / ``TypeError``.

    >>> feature_take_indices(12, 3)
    ([9, 10, 11], 11)
    >>> feature_take_indices(12, (0, -1))
    ([0, 11], 11)
    """
    if indices is None:
        indices = num_features
    if isinstance(indices, bool):
        raise TypeError(f'indices must be an int (last n) or a sequence of ints, got {indices!r}')
    if isinstance(indices, int):
        if not 0 < indices <= num_features:
            raise ValueError(f'indices={indices} as an int means "the last n"; valid: 1 to {num_features}')
        take = list(range(num_features - indices, num_features))
    else:
        if isinstance(indices, (str, bytes)):
            raise TypeError(f'indices must be an int (last n) or a sequence of ints, got {indices!r}')
        try:
            raw = list(indices)
        except TypeError:
            raise TypeError(f'indices must be an int (last n) or a sequence of ints, got {indices!r}') from None
        if not raw:
            raise ValueError(f'indices is empty; give at least one index in [{-num_features}, {num_features - 1}]')
        take = []
        for i in raw:
            if isinstance(i, bool) or not isinstance(i, int):
                raise TypeError(f'indices entries must be ints, got {i!r} in {tuple(raw)}')
            if not -num_features <= i < num_features:
                raise ValueError(f'index {i} is out of range; valid: {-num_features} to {num_features - 1}')
            take.append(i % num_features)
    return take, max(take)
