"""Registry of modules and functions that FX tracing must treat as opaque calls.

Some layers cannot be traced symbolically (their forward branches on tensor values or shapes, or calls Python
built-ins such as ``int`` on traced sizes). Registering them makes featzoo's tracer record one node per call
instead of tracing into them. Families decorate their own untraceable blocks; the FX tools read the registry
each time they trace, so registrations made after import still count.

>>> import torch
>>> @register_notrace_module
... class Odd(torch.nn.Module):
...     def forward(self, x):
...         return x if int(x.shape[0]) > 1 else x * 2
>>> is_notrace_module(Odd)
True
"""
from __future__ import annotations

import threading
from typing import Callable, List, Type, TypeVar

from torch import nn

__all__ = [
    'register_notrace_module', 'register_notrace_function', 'is_notrace_module', 'is_notrace_function',
    'get_notrace_modules', 'get_notrace_functions',
]

_lock = threading.Lock()
# Lists, not sets: registration order is kept so traces are reproducible run to run.
_modules: List[Type[nn.Module]] = []
_functions: List[Callable] = []

M = TypeVar('M', bound=type)
F = TypeVar('F', bound=Callable)


def register_notrace_module(module: M) -> M:
    """Mark an ``nn.Module`` subclass as a leaf for FX tracing (usable as a class decorator).

    Instances, including instances of subclasses, become one ``call_module`` node named after the module.

    >>> import torch
    >>> class Leaf(torch.nn.Module):
    ...     def forward(self, x):
    ...         return x
    >>> register_notrace_module(Leaf) is Leaf
    True
    """
    if not (isinstance(module, type) and issubclass(module, nn.Module)):
        raise TypeError(f'register_notrace_module expects an nn.Module subclass (a class, not an instance), '
                        f'got {module!r}')
    with _lock:
        if module not in _modules:
            _modules.append(module)
    return module


def register_notrace_function(fn: F) -> F:
    """Mark a module-level function as a leaf for FX tracing (usable as a decorator).

    The tracer records a ``call_function`` node instead of tracing the body. The function must be called through
    a global name of its defining module (as ``fn(x)``, or ``mod.fn(x)`` for a module also registered), which is how
    FX's autowrap finds it.

    >>> def count(x):
    ...     return int(x.shape[0])
    >>> register_notrace_function(count) is count
    True
    """
    if isinstance(fn, type) or not callable(fn):
        raise TypeError(f'register_notrace_function expects a function, got {fn!r}; '
                        f'register module classes with register_notrace_module')
    with _lock:
        if not any(f is fn for f in _functions):
            _functions.append(fn)
    return fn


def is_notrace_module(module: type) -> bool:
    """Whether ``module`` (a class) was registered with :func:`register_notrace_module`.

    >>> is_notrace_module(nn.Linear)
    False
    """
    return module in _modules


def is_notrace_function(fn: Callable) -> bool:
    """Whether ``fn`` was registered with :func:`register_notrace_function`.

    >>> is_notrace_function(print)
    False
    """
    return any(f is fn for f in _functions)


def get_notrace_modules() -> List[Type[nn.Module]]:
    """The registered leaf module classes, in registration order.

    >>> isinstance(get_notrace_modules(), list)
    True
    """
    return list(_modules)


def get_notrace_functions() -> List[Callable]:
    """The registered leaf functions, in registration order.

    >>> isinstance(get_notrace_functions(), list)
    True
    """
    return list(_functions)
