"""The one way a feature wrapper takes over a model: by sharing its module, parameter and buffer tables.

Sharing the very same dict objects (not copies) keeps the wrapper's ``state_dict`` keys equal to the model's minus
the modules the wrapper drops, so a checkpoint of the full model loads into every wrapper, and pruning the model
prunes the wrapper. Every wrapper, the FX one included, goes through :func:`adopt_module_tables`.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Tuple

from torch import nn

__all__ = ['adopt_module_tables', 'WrapperRules']


def adopt_module_tables(wrapper: nn.Module, model: nn.Module) -> None:
    """Make ``wrapper`` share ``model``'s children, parameters and buffers; keep ``model`` as ``wrapper._wrapped``.

    >>> model = nn.Sequential(nn.Linear(2, 2))
    >>> wrapper = nn.Module(); adopt_module_tables(wrapper, model)
    >>> list(wrapper.state_dict()) == list(model.state_dict()), wrapper._wrapped is model
    (True, True)
    """
    object.__setattr__(wrapper, '_modules', model._modules)
    object.__setattr__(wrapper, '_parameters', model._parameters)
    object.__setattr__(wrapper, '_buffers', model._buffers)
    object.__setattr__(wrapper, '_non_persistent_buffers_set', model._non_persistent_buffers_set)
    object.__setattr__(wrapper, '_wrapped', model)


class WrapperRules:
    """What a wrapper class accepts besides ``out_indices``, ``output_fmt`` and ``feature_info``: its own keyword
    ``OPTIONS`` and whether it names its outputs (``out_map``). The factory asks the wrapper before building anything.
    """

    OPTIONS: Tuple[str, ...] = ()
    ACCEPTS_OUT_MAP: bool = True

    @classmethod
    def check_request(cls, feature_cls: str, out_map: Optional[Sequence[str]], options: Mapping[str, Any]) -> None:
        """ValueError naming any option this wrapper does not take.

        >>> WrapperRules.check_request('list', None, {'norm': True})
        Traceback (most recent call last):
        ...
        ValueError: ['norm'] do not apply to feature_cls='list'; it takes no other options
        """
        unknown = sorted(set(options) - set(cls.OPTIONS))
        if unknown:
            takes = f'it takes {list(cls.OPTIONS)}' if cls.OPTIONS else 'it takes no other options'
            raise ValueError(f'{unknown} do not apply to feature_cls={feature_cls!r}; {takes}')
        if out_map is not None and not cls.ACCEPTS_OUT_MAP:
            raise ValueError(f"out_map names the outputs of a dict; feature_cls={feature_cls!r} returns a list: use "
                             f"feature_cls='dict' (or 'hook'/'fx') with it")
