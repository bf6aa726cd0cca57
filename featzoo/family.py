"""The family contract: what a family module (``featzoo/models/<family>.py``) declares, in one object.

A family module ends with ``SPEC = FamilySpec(...)``. The index generator, the factory and the tests read a family
only through its spec; nothing is looked up with ``getattr``. See ``featzoo/models/CONTRACT.md``.

>>> from torch import nn
>>> spec = FamilySpec(name='tiny', model=lambda width, num_classes=1000, **kw: nn.Linear(width, num_classes),
...                   variants={'tiny_8': dict(width=8)}, default_cfg=dict(input_size=(3, 32, 32)),
...                   feature_cls=('fx',), default_feature_cls='fx', output_strides=(32,))
>>> spec.build('tiny_8', num_classes=3).out_features
3
"""
from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

from torch import nn

from .checks import check_int, check_rate

__all__ = ['FamilySpec', 'FEATURE_CLS_ALL', 'COMMON_ARGS', 'SIZE_ARGS']

FEATURE_CLS_ALL = ('list', 'dict', 'hook', 'getter', 'fx')

# Arguments every family's model takes, checked once here before the family's constructor runs.
COMMON_ARGS = ('num_classes', 'in_chans', 'global_pool', 'output_stride', 'drop_rate', 'drop_path_rate')

# Row keys that only scale a network (width, depth, heads, image size, classes): two rows that differ only in these
# share a "configuration", and the default test suite checks numerics once per configuration.
SIZE_ARGS = frozenset({
    'layers', 'depth', 'depths', 'embed_dim', 'embed_dims', 'dims', 'channels', 'num_heads', 'heads', 'img_size',
    'num_classes', 'widths', 'width', 'stem_width', 'base_width', 'growth_rate', 'block_config', 'num_init_features',
    'channel_multiplier', 'depth_multiplier', 'mlp_ratio', 'stem_chs', 'head_chs', 'num_features', 'w0', 'wa', 'wm',
    'group_size', 'block_per_stage', 'stage_conv_chs', 'stage_out_chs', 'layer_per_block', 'middle_depth',
    'entry_flow', 'window_size', 'round_chs_fn', 'fix_stem', 'num_chs', 'dim', 'hidden_dim',
})

PerVariant = Union[Any, Callable[[str, Mapping[str, Any]], Any]]


@dataclass(frozen=True)
class FamilySpec:
    """Everything the rest of featzoo knows about one family.

    ``model`` is called with a variant's row merged with the caller's arguments; ``variants`` maps each
    architecture name to its row (constructor arguments only). Fields marked per-variant take either a value or a
    function ``(name, row) -> value``.

    - ``default_cfg``: data facts (input size, mean/std, interpolation, crop, ``first_conv``, ``classifier``) for
      weights without a catalog entry.
    - ``feature_cls`` / ``default_feature_cls`` (per-variant): the wrappers that can serve a variant, and its default.
    - ``output_strides`` (per-variant): the ``output_stride`` values the constructor accepts (largest = natural).
    - ``default_out_indices`` (per-variant): what ``features_only`` returns without ``out_indices`` (None = every
      level; an int = the last n, as timm).
    - ``export`` (per-variant): what ``tests/test_export.py`` proves for a variant ('torch.export', 'dynamic_hw',
      'onnx', 'compile').
    - ``checkpoint_filter``: ``(state_dict, model) -> state_dict`` adapting timm-layout or original checkpoints.
    - ``feature_pyramid``: ``(model, out_indices) -> dict`` of FeatureGetterNet arguments for a simple pyramid
      (plain ViTs).
    - ``size_args``: extra row keys (beyond :data:`SIZE_ARGS`) that only scale this family's networks.
    - ``input_multiple`` / ``min_input_size`` (per-variant): the input sides a variant takes are the multiples of
      ``input_multiple`` that are >= ``min_input_size`` (a patch grid, a window grid, a stem that needs room).
    - ``img_size_arg`` (per-variant): the constructor argument that fixes the input size (``'img_size'`` for models
      whose position tables are built for one size), or None when the model takes any valid size as built.
    - ``head_is_projection``: ``(name, row, tag entry) -> bool``, True for a pretrained tag whose head maps into a
      joint image-text space (CLIP image towers) instead of classifying; the index records it per tag.
    """

    name: str
    model: Callable[..., nn.Module]
    variants: Mapping[str, Mapping[str, Any]]
    default_cfg: Mapping[str, Any]
    feature_cls: PerVariant
    default_feature_cls: PerVariant
    output_strides: PerVariant
    default_out_indices: PerVariant = None
    export: PerVariant = ()
    checkpoint_filter: Optional[Callable[[Dict[str, Any], nn.Module], Dict[str, Any]]] = None
    feature_pyramid: Optional[Callable[..., Dict[str, Any]]] = None
    size_args: Tuple[str, ...] = ()
    input_multiple: PerVariant = 1
    min_input_size: PerVariant = 1
    img_size_arg: PerVariant = None
    head_is_projection: Optional[Callable[[str, Mapping[str, Any], Mapping[str, Any]], bool]] = None
    _accepted: Optional[frozenset] = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # programming errors in a family file, found when the family is first imported
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f'FamilySpec.name must be the module basename, got {self.name!r}')
        if not self.variants:
            raise ValueError(f'family {self.name!r} declares no variants')
        if self.checkpoint_filter is not None and not callable(self.checkpoint_filter):
            raise TypeError(f'family {self.name!r}: checkpoint_filter must be callable')
        params = inspect.signature(self.model).parameters.values()
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            object.__setattr__(self, '_accepted', frozenset(
                p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)))

    # ---- per-variant facts -----------------------------------------------------------------------------------
    def row(self, variant: str) -> Mapping[str, Any]:
        """The table row of ``variant``; KeyError naming the closest variants when it is unknown."""
        if variant not in self.variants:
            names = sorted(self.variants)
            if len(names) > 40:
                names = difflib.get_close_matches(variant, names, n=8, cutoff=0.3)
                hint = (f'closest: {names}; ' if names else '') + f'featzoo.list_models(module={self.name!r}) lists all'
            else:
                hint = f'valid: {names}'
            raise KeyError(f'unknown {self.name} variant {variant!r}; {hint}')
        return self.variants[variant]

    def _per_variant(self, value: PerVariant, variant: str) -> Any:
        return value(variant, self.row(variant)) if callable(value) else value

    def feature_cls_for(self, variant: str) -> Tuple[str, ...]:
        return tuple(self._per_variant(self.feature_cls, variant))

    def default_feature_cls_for(self, variant: str) -> str:
        return self._per_variant(self.default_feature_cls, variant)

    def export_for(self, variant: str) -> Tuple[str, ...]:
        return tuple(self._per_variant(self.export, variant))

    def output_strides_for(self, variant: str) -> Tuple[int, ...]:
        return tuple(self._per_variant(self.output_strides, variant))

    def default_out_indices_for(self, variant: str) -> Any:
        return self._per_variant(self.default_out_indices, variant)

    def input_multiple_for(self, variant: str) -> int:
        return int(self._per_variant(self.input_multiple, variant))

    def min_input_size_for(self, variant: str) -> int:
        return int(self._per_variant(self.min_input_size, variant))

    def img_size_arg_for(self, variant: str) -> Optional[str]:
        return self._per_variant(self.img_size_arg, variant)

    def head_is_projection_for(self, variant: str, tag: Mapping[str, Any]) -> bool:
        """Whether the pretrained ``tag`` (its index entry: ``tag``, ``num_classes``, ...) of ``variant`` ends in an
        image-text projection rather than a classifier.

        >>> from featzoo.registry import family_spec
        >>> family_spec('resnet').head_is_projection_for('resnet50', dict(tag='a1_in1k', num_classes=1000))
        False
        """
        if self.head_is_projection is None:
            return False
        return bool(self.head_is_projection(variant, self.row(variant), tag))

    def smallest_input_side(self, variant: str, at_least: int = 64) -> int:
        """The smallest input side >= ``at_least`` that ``variant`` takes (what the parity tests run at).

        >>> from featzoo.registry import family_spec
        >>> family_spec('vision_transformer').smallest_input_side('vit_base_patch14_dinov2')
        70
        """
        multiple = self.input_multiple_for(variant)
        side = max(at_least, self.min_input_size_for(variant))
        return -(-side // multiple) * multiple

    def configuration(self, variant: str) -> Tuple[Tuple[str, str], ...]:
        """The variant's row without the keys that only scale it: rows with equal configurations run the same code."""
        skip = SIZE_ARGS | set(self.size_args)
        return tuple(sorted((k, repr(v)) for k, v in self.row(variant).items() if k not in skip))

    # ---- building --------------------------------------------------------------------------------------------
    def build(self, variant: str, **kwargs: Any) -> nn.Module:
        """The model of ``variant``: its row, overridden by ``kwargs`` (None values mean "the row's/the default").

        The arguments every family shares are checked here; a family's constructor checks its own.
        """
        args: Dict[str, Any] = dict(self.row(variant))
        args.update({k: v for k, v in kwargs.items() if v is not None})
        if 'num_classes' in args:
            check_int('num_classes', args['num_classes'], 0)
        if 'in_chans' in args:
            check_int('in_chans', args['in_chans'], 1)
        for rate in ('drop_rate', 'drop_path_rate'):
            if rate in args:
                args[rate] = check_rate(rate, args[rate])
        if 'global_pool' in args and not isinstance(args['global_pool'], str):
            raise TypeError(f"global_pool must be a str such as 'avg', 'max' or '' (none); got {args['global_pool']!r}")
        if 'output_stride' in args:
            strides = self.output_strides_for(variant)
            stride = args['output_stride']
            if isinstance(stride, bool) or not isinstance(stride, int) or stride not in strides:
                raise ValueError(f'output_stride={stride!r} is not supported by {variant!r}; valid: {strides}')
            if stride == max(strides):
                del args['output_stride']  # the natural stride: constructors need not know the argument
        if self._accepted is not None:
            unknown = sorted(set(args) - self._accepted)
            if unknown:
                raise TypeError(f'{variant} got unexpected argument(s) {unknown}; valid: {sorted(self._accepted)}')
        return self.model(**args)

    def check_variant_names(self, names: Sequence[str]) -> None:
        """KeyError for the first name that is not a variant of this family."""
        for name in names:
            self.row(name)
