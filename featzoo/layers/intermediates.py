"""Index selection for ``forward_intermediates`` / ``prune_intermediate_layers`` (timm's semantics), and plain ViT
tokens laid out as feature maps."""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..checks import check_index_list

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
        take = check_index_list('indices', raw, num_features)
    return take, max(take)


def tokens_to_maps(intermediates: List[torch.Tensor], num_prefix_tokens: int, grid: Tuple[int, int],
                   output_fmt: str = 'NCHW', return_prefix_tokens: bool = False, pair_without_prefix: bool = False,
                   ) -> List[Any]:
    """A plain ViT's per-block tokens [B, prefix + H*W, C] as maps: the prefix (class, register, distillation)
    tokens split off, the patch tokens laid out NCHW, NHWC, or left as tokens (any other ``output_fmt``).

    ``return_prefix_tokens`` pairs each map with its prefix tokens; a model without prefix tokens pairs them only
    when ``pair_without_prefix`` (EVA does; the ViT returns bare maps, as timm's do).

    >>> maps = tokens_to_maps([torch.zeros(2, 1 + 6, 8)], 1, (2, 3))
    >>> maps[0].shape
    torch.Size([2, 8, 2, 3])
    """
    height, width = grid
    prefix = [y[:, :num_prefix_tokens] for y in intermediates]
    if num_prefix_tokens:
        intermediates = [y[:, num_prefix_tokens:] for y in intermediates]
    if output_fmt == 'NCHW':
        intermediates = [y.reshape(y.shape[0], height, width, -1).permute(0, 3, 1, 2) for y in intermediates]
    elif output_fmt == 'NHWC':
        intermediates = [y.reshape(y.shape[0], height, width, -1) for y in intermediates]
    if return_prefix_tokens and (num_prefix_tokens or pair_without_prefix):
        return list(zip(intermediates, prefix))
    return list(intermediates)


def prune_head_after(model: nn.Module, last: int, num_levels: int, prune_head: bool,
                     trim_feature_info: bool = False, global_pool: Optional[str] = '', **reset_kwargs: Any) -> bool:
    """The end of ``prune_intermediate_layers`` for a model whose head reads its last level: when ``last`` is not
    the final of ``num_levels`` levels, the features now end at level ``last`` (``num_features`` and
    ``head_hidden_size`` become its width; ``trim_feature_info`` also forgets the levels after it), and the
    classifier, no longer sized for them, goes with ``reset_classifier(0, global_pool, **reset_kwargs)`` (by default
    without its pooling), as it does when ``prune_head`` asks. Returns whether the features were cut.

    >>> m = nn.Module(); m.feature_info = [dict(num_chs=4), dict(num_chs=8)]
    >>> m.reset_classifier = lambda num_classes, global_pool: setattr(m, 'num_classes', num_classes)
    >>> prune_head_after(m, 0, 2, prune_head=False), m.num_features, m.num_classes
    (True, 4, 0)
    """
    cut = last < num_levels - 1
    if cut:
        model.num_features = model.head_hidden_size = model.feature_info[last]['num_chs']
        if trim_feature_info:
            model.feature_info = model.feature_info[:last + 1]
    if prune_head or cut:
        model.reset_classifier(0, global_pool, **reset_kwargs)
    return cut
