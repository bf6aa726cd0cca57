"""What the single-stride token models (ViT, DeiT, BEiT, EVA, CaiT, XCiT) do alike, written once: their argument
checks, the gradient-checkpointed block call, the block loop of ``forward_intermediates``, a fresh linear head, and
the pooling of a token sequence to one vector.

Plain functions (no module defines ``forward`` here), so FX traces through them as through the family's own code.

>>> check_img_size(64, (16, 16))
(64, 64)
>>> take, blocks = plan_intermediates(nn.Sequential(*[nn.Identity() for _ in range(4)]), 2, stop_early=True,
...                                   intermediates_only=False)
>>> sorted(take), len(blocks)
([2, 3], 4)
"""
from __future__ import annotations

import math
from typing import Any, Callable, List, Optional, Sequence, Set, Tuple, Union

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..checks import check_choice, check_int
from .helpers import to_2tuple
from .intermediates import IndicesArg, feature_take_indices

__all__ = ['TOKEN_OUTPUT_FORMATS', 'layer_norm_eps6', 'check_heads', 'AttentionParts', 'check_img_size',
           'check_single_stride', 'run_checkpointed', 'plan_intermediates', 'tap_blocks', 'reset_linear_head',
           'pool_tokens', 'scale_init_by_depth', 'check_token_model_args', 'patch_size_of', 'patch_stride_of']

# what forward_intermediates of a token model returns: maps (NCHW, NHWC) or the tokens as they are (NLC)
TOKEN_OUTPUT_FORMATS = ('NCHW', 'NHWC', 'NLC')


def layer_norm_eps6(dim: int) -> nn.Module:
    """``nn.LayerNorm(dim, eps=1e-6)``, the norm of most ViT checkpoints.

    >>> layer_norm_eps6(8).eps
    1e-06
    """
    return nn.LayerNorm(dim, eps=1e-6)


def check_token_model_args(global_pool: Any, pools: Sequence[str], num_classes: Any, in_chans: Any, embed_dim: Any,
                           depth: Any, num_heads: Any, counts: Sequence[Tuple[str, Any, int]] = ()) -> None:
    """The constructor checks every token model starts with: ``global_pool`` among ``pools``, then ints
    ``num_classes`` >= 0, ``in_chans``, ``embed_dim``, ``depth``, ``num_heads`` >= 1, then the family's own
    ``counts`` (``(name, value, minimum)``), in that order.

    >>> check_token_model_args('avg', ('', 'avg'), 10, 3, 32, 2, 4, (('depth_token_only', 0, 0),))
    """
    check_choice('global_pool', global_pool, pools)
    for name, value, minimum in (('num_classes', num_classes, 0), ('in_chans', in_chans, 1),
                                 ('embed_dim', embed_dim, 1), ('depth', depth, 1), ('num_heads', num_heads, 1),
                                 *counts):
        check_int(name, value, minimum)


def patch_size_of(variant: str, row: Any) -> int:
    """A single-stride token model's patch size from its variant row (16 unless the row says): the ``FamilySpec``
    ``input_multiple`` and ``min_input_size`` of those families.

    >>> patch_size_of('any', dict(patch_size=8)), patch_stride_of('any', {})
    (8, (16,))
    """
    return int(row.get('patch_size', 16))


def patch_stride_of(variant: str, row: Any) -> Tuple[int]:
    """The ``FamilySpec.output_strides`` of a single-stride token model: its patch size alone."""
    return (patch_size_of(variant, row),)


def check_heads(dim: int, num_heads: int) -> int:
    """``num_heads`` when it divides the width ``dim``, else ValueError.

    >>> check_heads(32, 4)
    4
    """
    if dim % num_heads:
        raise ValueError(f'embed_dim={dim} must be divisible by num_heads={num_heads}')
    return num_heads


class AttentionParts(nn.Module):
    """The layers of a multi-head attention over (B, N, dim) tokens, in timm's registration order: the input
    projections (``qkv`` unless a subclass's ``_input_projections`` makes others), ``attn_drop``, the output ``proj``,
    whatever a subclass's ``_after_proj`` adds, ``proj_drop``. Subclasses write ``forward``; this class has none.

    >>> [name for name, _ in AttentionParts(8, num_heads=2).named_children()]
    ['qkv', 'attn_drop', 'proj', 'proj_drop']
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, attn_drop: float = 0.0,
                 proj_drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads = check_heads(dim, num_heads)
        self._input_projections(dim, qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self._after_proj(dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _input_projections(self, dim: int, qkv_bias: bool) -> None:
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)

    def _after_proj(self, dim: int) -> None:
        pass


def check_img_size(img_size: Any, patch: Union[int, Tuple[int, int]],
                   dynamic_img_pad: Optional[bool] = None) -> Tuple[int, int]:
    """``img_size`` as ``(height, width)`` of positive ints whose sides are multiples of ``patch`` (an int or a
    pair, named in the error as given); ValueError otherwise.

    ``dynamic_img_pad``: None for models that always need whole patches; False names the option in the error; True
    (the input is padded to whole patches) accepts any side.

    >>> check_img_size((48, 32), 16)
    (48, 32)
    """
    size = to_2tuple(img_size)
    if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in size):
        raise ValueError(f'img_size must be a positive int or (height, width), got {img_size!r}')
    ph, pw = to_2tuple(patch)
    if not dynamic_img_pad and (size[0] % ph or size[1] % pw):
        hint = '' if dynamic_img_pad is None else ', or build with dynamic_img_pad=True'
        raise ValueError(f'img_size={size} is not a multiple of the patch size {patch}; valid sides are multiples '
                         f'of {max(ph, pw)} (>= {max(ph, pw)}){hint}')
    return size


def check_single_stride(output_stride: Optional[int], stride: Any, model_name: str) -> None:
    """ValueError unless ``output_stride`` is None or the model's one stride (its patch size).

    >>> check_single_stride(16, 16, 'CaiT')
    """
    if output_stride is not None and output_stride != stride:
        raise ValueError(f'output_stride={output_stride!r} is not supported: {model_name} has one stride, its patch '
                         f'size {stride}; valid: {stride} or None')


def run_checkpointed(enabled: bool, module: nn.Module, *args: Any) -> Any:
    """``module(*args)``; when ``enabled`` and gradients are on, its activations are recomputed in the backward
    pass instead of stored (non-reentrant checkpointing).

    >>> run_checkpointed(True, nn.Identity(), torch.ones(1)).tolist()
    [1.0]
    """
    if enabled and torch.is_grad_enabled():
        return checkpoint(module, *args, use_reentrant=False)
    return module(*args)


def plan_intermediates(blocks: Sequence[nn.Module], indices: IndicesArg, stop_early: bool,
                       intermediates_only: bool) -> Tuple[Set[int], Sequence[nn.Module]]:
    """The block indices ``forward_intermediates`` taps (timm's ``indices`` semantics) and the blocks it runs: all
    of them, or up to the last tapped one with ``stop_early`` or ``intermediates_only`` (later blocks cannot change
    what is returned then)."""
    take, last = feature_take_indices(len(blocks), indices)
    return set(take), list(blocks)[:last + 1] if stop_early or intermediates_only else blocks


def tap_blocks(x: torch.Tensor, blocks: Sequence[nn.Module], step: Callable[[nn.Module, torch.Tensor], torch.Tensor],
               take: Set[int], tap_norm: Optional[nn.Module] = None) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """Run ``x`` through ``blocks`` (``x = step(block, x)``); returns the last output and those of the blocks in
    ``take``, each through ``tap_norm`` when given.

    >>> x, taps = tap_blocks(torch.ones(1), [nn.Identity()] * 3, lambda b, x: b(x) + 1, {0, 2})
    >>> x.tolist(), [t.tolist() for t in taps]
    ([4.0], [[2.0], [4.0]])
    """
    tapped = []
    for i, block in enumerate(blocks):
        x = step(block, x)
        if i in take:
            tapped.append(x if tap_norm is None else tap_norm(x))
    return x, tapped


def reset_linear_head(model: nn.Module, num_classes: int, global_pool: Optional[str], pools: Sequence[str],
                      in_features: int, like: torch.Tensor,
                      check_pool: Optional[Callable[[str], None]] = None) -> None:
    """``reset_classifier`` of a model whose head is one linear layer ``head``: checks the arguments (``pools``
    lists the valid ``global_pool`` values; ``check_pool`` may refuse more, or drop what the new pool makes unused),
    then sets ``global_pool`` (unless None), ``num_classes`` and a fresh ``head`` (``nn.Identity`` for 0 classes) on
    ``like``'s device and dtype, in the model's train/eval mode.

    >>> m = nn.Module(); m.global_pool = 'avg'; reset_linear_head(m, 3, '', ('', 'avg'), 8, torch.ones(1))
    >>> m.head, m.global_pool
    (Linear(in_features=8, out_features=3, bias=True), '')
    """
    check_int('num_classes', num_classes, 0)
    if global_pool is not None:
        check_choice('global_pool', global_pool, pools)
        if check_pool is not None:
            check_pool(global_pool)
        model.global_pool = global_pool
    model.num_classes = num_classes
    model.head = nn.Linear(in_features, num_classes, device=like.device, dtype=like.dtype) \
        if num_classes > 0 else nn.Identity()
    model.head.train(model.training)


def pool_tokens(x: torch.Tensor, pool_type: str, skip_prefix: Optional[int]) -> torch.Tensor:
    """One vector per sequence of tokens ``(B, N, C)``: '' keeps the tokens, 'token' takes the first (the class
    token); 'avg', 'max' and 'avgmax' (the mean of both) reduce the tokens after the first ``skip_prefix`` (all of
    them when None).

    >>> pool_tokens(torch.arange(6.).reshape(1, 3, 2), 'avgmax', 1).tolist()
    [[3.5, 4.5]]
    """
    if not pool_type:
        return x
    if pool_type == 'token':
        return x[:, 0]
    if skip_prefix is not None:
        x = x[:, skip_prefix:]
    if pool_type == 'avg':
        return x.mean(dim=1)
    if pool_type == 'max':
        return x.amax(dim=1)
    return 0.5 * (x.amax(dim=1) + x.mean(dim=1))


def scale_init_by_depth(blocks: Sequence[nn.Module], head: nn.Module, head_init_scale: Optional[float]) -> None:
    """The end of BEiT's and EVA's from-scratch init (after the truncated-normal one): block ``i``'s attention output
    projection and second MLP layer divided by ``sqrt(2 * (i + 1))``, and a linear head scaled by
    ``head_init_scale`` (unless it is 0 or None).

    >>> head = nn.Linear(2, 2); _ = nn.init.ones_(head.weight); scale_init_by_depth([], head, 0.5)
    >>> head.weight.sum().item()
    2.0
    """
    with torch.no_grad():
        for i, block in enumerate(blocks):
            scale = math.sqrt(2.0 * (i + 1))
            block.attn.proj.weight.div_(scale)
            block.mlp.fc2.weight.div_(scale)
        if head_init_scale and isinstance(head, nn.Linear):
            head.weight.mul_(head_init_scale)
            head.bias.mul_(head_init_scale)
