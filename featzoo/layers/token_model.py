"""What the single-stride token models (ViT, DeiT, BEiT, EVA, CaiT, XCiT) do alike, written once: their argument
checks, the gradient-checkpointed block call, the block loop of ``forward_intermediates``, a fresh linear head, the
pooling of a token sequence to one vector, and :class:`TokenModelApi`, the model contract built from those pieces
and a few per-family hooks.

Plain functions and mixins (none defines ``forward``: :class:`~featzoo.layers.head_api.HeadApi` does, and featzoo's
FX tracer looks along the model's class hierarchy), so FX traces through them as through the family's own code.

>>> check_img_size(64, (16, 16))
(64, 64)
>>> take, blocks = plan_intermediates(nn.Sequential(*[nn.Identity() for _ in range(4)]), 2, stop_early=True,
...                                   intermediates_only=False)
>>> sorted(take), len(blocks)
([2, 3], 4)
"""
from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any, Callable, List, Mapping, Optional, Sequence, Set, Tuple, Union

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..checks import check_choice, check_int
from .head_api import HeadApi
from .helpers import to_2tuple
from .intermediates import IndicesArg, feature_take_indices, tokens_to_maps

__all__ = ['TOKEN_OUTPUT_FORMATS', 'layer_norm_eps6', 'check_heads', 'AttentionParts', 'check_img_size',
           'check_single_stride', 'run_checkpointed', 'plan_intermediates', 'tap_blocks', 'reset_linear_head',
           'pool_tokens', 'scale_init_by_depth', 'check_token_model_args', 'patch_size_of', 'patch_stride_of',
           'TokenModelApi', 'check_patch_grid', 'SQUARE_PATCH_SPEC']

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


#: the ``FamilySpec`` fields that CaiT, XCiT and BEiT share: one stride (the row's square patch), inputs in whole
#: patches, timm's default feature levels (the last three blocks), and exports without dynamic height and width (the
#: positions are resampled or computed per grid in Python)
SQUARE_PATCH_SPEC: Mapping[str, Any] = MappingProxyType(dict(
    output_strides=patch_stride_of, input_multiple=patch_size_of, min_input_size=patch_size_of,
    default_out_indices=3, export=('torch.export', 'onnx', 'compile')))


def check_heads(dim: int, num_heads: int, dim_name: str = 'embed_dim') -> int:
    """``num_heads`` when it divides the width ``dim`` (named ``dim_name`` in the error), else ValueError.

    >>> check_heads(32, 4)
    4
    """
    if dim % num_heads:
        raise ValueError(f'{dim_name}={dim} must be divisible by num_heads={num_heads}')
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


def check_patch_grid(embed_dim: int, num_heads: int, output_stride: Optional[int], patch_size: int, img_size: Any,
                     model_name: str) -> Tuple[int, int]:
    """The checks of a model with square patches after :func:`check_token_model_args`: ``num_heads`` divides
    ``embed_dim``, ``output_stride`` is the patch size (or None), ``img_size`` is whole patches; returns
    ``img_size`` as ``(height, width)``.

    >>> check_patch_grid(32, 4, None, 8, 64, 'CaiT')
    (64, 64)
    """
    check_heads(embed_dim, num_heads)
    check_single_stride(output_stride, patch_size, model_name)
    return check_img_size(img_size, (patch_size, patch_size))


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


class TokenModelApi(HeadApi):
    """The model contract of a single-stride token model, written once on top of :class:`HeadApi`:
    ``forward_features`` (embed, every block, ``_finish``), ``pool`` and ``forward_head`` (pool, ``fc_norm``,
    ``head_drop``, ``head``), ``forward_intermediates`` and ``prune_intermediate_layers``. The family writes the
    hooks, which is all that differs between them:

    - ``_embed(x) -> (tokens, grid, block_args)``: the tokens the first block reads, the patch grid ``(H, W)`` and
      the extra arguments every block takes after the tokens (a grid, a shared bias, a RoPE table);
    - ``_finish(x)``: what follows the blocks in ``forward_features`` (the final ``norm`` unless overridden);
    - ``_prune_head()``: what goes with the classifier in ``prune_intermediate_layers`` (``fc_norm`` unless
      overridden);
    - ``_tap(x, block_args, blocks, take, tap_norm)`` only where a block needs more than ``block_args`` (EVA's
      per-block RoPE tables);

    and two class attributes: ``blocks_carry_prefix`` (False when the class token joins after the blocks, so the
    tapped tokens hold none) and ``pair_without_prefix`` (``return_prefix_tokens`` pairs even an empty prefix).

    The block loop calls :func:`run_checkpointed` directly, so the eager forward does no more Python work per block
    than a family's own loop would.

    >>> import featzoo
    >>> m = featzoo.create_model('vit_tiny_patch16_224', depth=3, img_size=32)
    >>> [t.shape for t in m.forward_intermediates(torch.ones(1, 3, 32, 48), 2, intermediates_only=True)]
    [torch.Size([1, 192, 2, 3]), torch.Size([1, 192, 2, 3])]
    >>> m.prune_intermediate_layers((1,)), len(m.blocks), m.num_classes
    ([1], 2, 0)
    """

    blocks: nn.Module
    norm: nn.Module
    grad_checkpointing: bool
    num_prefix_tokens: int
    classifier_name = 'head'
    no_weight_decay_names: Tuple[str, ...] = ('pos_embed', 'cls_token')
    #: the blocks see the prefix tokens (False: the class token joins after them, as in CaiT and XCiT)
    blocks_carry_prefix: bool = True
    #: ``return_prefix_tokens`` pairs each map with its (possibly empty) prefix even when the model has none
    pair_without_prefix: bool = False

    def _set_token_model_attrs(self, num_classes: int, in_chans: int, global_pool: str, embed_dim: int,
                               num_prefix_tokens: int) -> None:
        # the plain attributes every token model sets before building its layers
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = num_prefix_tokens
        self.grad_checkpointing = False

    def _add_linear_head(self, num_classes: int, drop_rate: float) -> None:
        # the head's dropout and classifier (nn.Identity for 0 classes), registered where the family's were
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def _embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[Any, Any], Tuple[Any, ...]]:
        raise NotImplementedError

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)

    def _prune_head(self) -> None:
        self.fc_norm = nn.Identity()

    def _tap(self, x: torch.Tensor, block_args: Tuple[Any, ...], blocks: Sequence[nn.Module], take: Set[int],
             tap_norm: Optional[nn.Module]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        return tap_blocks(x, blocks, lambda block, y: run_checkpointed(self.grad_checkpointing, block, y, *block_args),
                          take, tap_norm)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The token sequence after the blocks and the final norm: (B, prefix + H / patch * W / patch, embed_dim).

        >>> import featzoo
        >>> featzoo.create_model('beit_base_patch16_224', depth=1, img_size=32).forward_features(
        ...     torch.ones(1, 3, 32, 48)).shape
        torch.Size([1, 7, 768])
        """
        x, _, block_args = self._embed(x)
        for block in self.blocks:
            x = run_checkpointed(self.grad_checkpointing, block, x, *block_args)
        return self._finish(x)

    def pool(self, x: torch.Tensor, pool_type: Optional[str] = None) -> torch.Tensor:
        """One vector per image (``pool_tokens`` with the model's ``global_pool`` unless ``pool_type`` is given).

        >>> import featzoo
        >>> featzoo.create_model('beit_base_patch16_224', depth=1, img_size=32).pool(torch.ones(2, 5, 768)).shape
        torch.Size([2, 768])
        """
        return pool_tokens(x, self.global_pool if pool_type is None else pool_type, self.num_prefix_tokens)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool the tokens of ``forward_features``, ``fc_norm``, dropout and (unless ``pre_logits``) classify.

        >>> import featzoo
        >>> m = featzoo.create_model('beit_base_patch16_224', depth=1, img_size=32, num_classes=3)
        >>> m.forward_head(torch.ones(2, 5, 768)).shape, m.forward_head(torch.ones(2, 5, 768), pre_logits=True).shape
        (torch.Size([2, 3]), torch.Size([2, 768]))
        """
        x = self.head_drop(self.fc_norm(self.pool(x)))
        return x if pre_logits else self.head(x)

    def forward_intermediates(self, x: torch.Tensor, indices: IndicesArg = None, return_prefix_tokens: bool = False,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = 'NCHW',
                              intermediates_only: bool = False) -> Union[List[Any], Tuple[torch.Tensor, List[Any]]]:
        """Outputs of the blocks selected by ``indices`` (None: all; int n: the last n; a sequence, negatives from
        the end), in block order, with the prefix tokens split off.

        ``norm`` applies the final norm to each; ``output_fmt`` is 'NCHW' (maps), 'NHWC' or 'NLC' (tokens);
        ``return_prefix_tokens`` pairs each with its prefix tokens; ``stop_early`` skips the blocks after the last
        selected one. Returns the list, or ``(forward_features output, list)`` unless ``intermediates_only``.

        >>> import featzoo
        >>> m = featzoo.create_model('vit_tiny_patch16_224', depth=2, img_size=32, reg_tokens=2)
        >>> [(y.shape, p.shape) for y, p in m.forward_intermediates(torch.ones(1, 3, 32, 32), [-1],
        ...                                                         return_prefix_tokens=True, intermediates_only=True)]
        [(torch.Size([1, 192, 2, 2]), torch.Size([1, 3, 192]))]
        """
        check_choice('output_fmt', output_fmt, TOKEN_OUTPUT_FORMATS)
        take, blocks = plan_intermediates(self.blocks, indices, stop_early, intermediates_only)
        x, grid, block_args = self._embed(x)
        x, intermediates = self._tap(x, block_args, blocks, take, self.norm if norm else None)
        prefix = self.num_prefix_tokens if self.blocks_carry_prefix else 0
        intermediates = tokens_to_maps(intermediates, prefix, grid, output_fmt, return_prefix_tokens,
                                       self.pair_without_prefix)
        if intermediates_only:
            return intermediates
        return self._finish(x), intermediates

    def prune_intermediate_layers(self, indices: IndicesArg = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop the blocks after the last of ``indices``, optionally the final norm, and (``prune_head``) the
        classifier with what only it reads (``_prune_head``); returns the absolute indices kept.

        >>> import featzoo
        >>> m = featzoo.create_model('beit_base_patch16_224', depth=3, img_size=32)
        >>> m.prune_intermediate_layers([-2], prune_norm=True), len(m.blocks), m.fc_norm, m.head
        ([1], 2, Identity(), Identity())
        """
        take, last = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[:last + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self._prune_head()
            self.reset_classifier(0, '')
        return take
