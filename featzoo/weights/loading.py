"""Reading checkpoints safely and loading them into models: files, nesting, prefixes, adaptation.

Only safetensors files and pickles read with ``weights_only=True`` are accepted, so a checkpoint can never run code.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Union

import torch
from torch import nn
from torch.utils._device import DeviceContext as _DeviceContext  # the meta device's own mode, extended below

from ..errors import NotAFileError
from . import safetensors_reader as _st

_logger = logging.getLogger('featzoo')

PICKLE_SUFFIXES = ('.pth', '.pt', '.bin', '.ckpt', '.pth.tar')
NESTED_KEYS = ('state_dict', 'model', 'state_dict_ema', 'model_ema')


def _check_file(path: Union[str, os.PathLike]) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f'checkpoint path must be a str or path, got {type(path).__name__}: {path!r}')
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f'checkpoint file {path!r} does not exist')
    if os.path.isdir(path):
        raise NotAFileError(f'checkpoint {path!r} is a directory; pass the weights file inside it '
                                f"(model.safetensors or pytorch_model.bin), or 'local-dir:{path}' as the model name")
    if not os.access(path, os.R_OK):
        raise PermissionError(f'checkpoint file {path!r} is not readable')
    return path


def is_safetensors(path: str) -> bool:
    """True for a ``.safetensors`` file name."""
    return path.lower().endswith('.safetensors')


def safetensors_keys(path: str) -> List[str]:
    """Tensor names in a safetensors file (header only, checked as strictly as the ``safetensors`` library checks
    it; raises RuntimeError naming the file if it is corrupt).

    >>> import tempfile, safetensors.torch
    >>> f = tempfile.mktemp(suffix='.safetensors'); safetensors.torch.save_file({'a': torch.ones(1)}, f)
    >>> safetensors_keys(f)
    ['a']
    """
    return _st.safetensors_keys(_check_file(path))


def _unpickler_reason(message: str) -> str:
    """The one line of torch's weights-only error that says what it met, without its advice to disable safety."""
    for line in message.splitlines():
        line = line.strip()
        if line.startswith(('Unsupported', 'Trying to load', 'WeightsUnpickler error:')) and \
                line != 'WeightsUnpickler error:':
            return line
    return message.splitlines()[0] if message else 'unreadable'


def _read_pickle(path: str) -> Any:
    try:
        try:
            return torch.load(path, map_location='cpu', weights_only=True, mmap=True)
        except RuntimeError as exc:
            if 'mmap' not in str(exc) and 'zip' not in str(exc).lower():
                raise
            return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:
        text = str(exc)
        if 'unsupported global' in text.lower():
            raise RuntimeError(f'refusing to load {path!r}: it holds Python objects other than tensors, and '
                               f'featzoo only loads pickles with weights_only=True so that no code can run. '
                               f'Convert it to safetensors from a trusted environment. ({_unpickler_reason(text)})') \
                from exc
        if 'Weights only load failed' in text:
            # an opcode the safe unpickler does not know: random bytes, or a pickle not written by torch.save
            raise RuntimeError(f'cannot read checkpoint {path!r}: it is neither a safetensors file nor a checkpoint '
                               f'written by torch.save (corrupt, truncated, or a plain pickle); featzoo never '
                               f'unpickles with weights_only=False. ({_unpickler_reason(text)})') from exc
        head = _first_bytes(path)
        if head and not head.startswith((b'PK\x03\x04', b'\x80')):
            # neither torch.save's zip archive nor a legacy pickle: a text file, an image, an HTML error page...
            raise RuntimeError(f'{path!r} is not a weights file: it is neither safetensors nor a checkpoint written '
                               f'by torch.save (it starts with {head[:16]!r}); give a .safetensors file, or a '
                               f'.pth/.pt/.bin file written by torch.save') from exc
        raise RuntimeError(f'cannot read checkpoint {path!r} (corrupt or truncated?): {type(exc).__name__}: {exc}') \
            from exc


def _first_bytes(path: str, count: int = 16) -> bytes:
    try:
        with open(path, 'rb') as fh:
            return fh.read(count)
    except OSError:
        return b''


def unwrap_checkpoint(obj: Any, path: str = '<checkpoint>') -> Dict[str, torch.Tensor]:
    """Find the state_dict in a loaded checkpoint: nested under ``state_dict``/``model``, DDP ``module.`` prefix.

    >>> unwrap_checkpoint({'state_dict': {'module.fc.weight': torch.ones(1)}})
    {'fc.weight': tensor([1.])}
    """
    if isinstance(obj, Mapping):
        for key in NESTED_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                return unwrap_checkpoint(obj[key], path)
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if not tensors:
            raise RuntimeError(f'checkpoint {path!r} holds no tensors (top-level keys: {list(obj)[:10]})')
        if all(k.startswith('module.') for k in tensors):
            tensors = {k[len('module.'):]: v for k, v in tensors.items()}
        return tensors
    raise RuntimeError(f'checkpoint {path!r} is a {type(obj).__name__}, not a state_dict')


def read_state_dict(path: Union[str, os.PathLike], keys: Optional[Iterable[str]] = None) -> Dict[str, torch.Tensor]:
    """Read a checkpoint file into a state_dict, reading only ``keys`` from safetensors when given.

    >>> import tempfile, safetensors.torch
    >>> f = tempfile.mktemp(suffix='.safetensors'); safetensors.torch.save_file({'a': torch.ones(1)}, f)
    >>> read_state_dict(f)
    {'a': tensor([1.])}
    """
    path = _check_file(path)
    if os.path.getsize(path) == 0:
        raise RuntimeError(f'checkpoint file {path!r} is empty')
    if is_safetensors(path):
        return _st.read_safetensors(path, keys)
    state = unwrap_checkpoint(_read_pickle(path), path)
    return state if keys is None else {k: v for k, v in state.items() if k in set(keys)}


class BackgroundRead:
    """A whole checkpoint file being read on threads of their own while the caller does other work.

    Reading is system time (the kernel copies from the page cache into fresh pages) and gives up the GIL, so it
    runs on the other cores while this one builds the model on the meta device. A safetensors file is planned
    (header, allocation) before this returns, so the threads need the GIL only once per read call. Errors are
    raised by :meth:`result`, exactly as :func:`read_state_dict` would raise them.

    Example::

        pending = BackgroundRead('resnet50.safetensors')
        model = build_skeleton()                 # meanwhile the tensors are read
        load_weights(model, pending.path, prefetched=pending)
    """

    def __init__(self, path: Union[str, os.PathLike]) -> None:
        import threading

        self.path = _check_file(path)
        self._state: Dict[str, torch.Tensor] = {}
        self._errors: List[BaseException] = []
        self._plan: Optional[_st.PlannedRead] = None
        work: List[Any] = []
        try:
            if os.path.getsize(self.path) == 0 or not is_safetensors(self.path):
                work = [self._read_whole]  # read_state_dict names an empty file; pickles unpickle on the thread
            else:
                self._plan = _st.PlannedRead(self.path, None)
                self._state = self._plan.state
                work = [lambda i=i: self._plan.read_part(i) for i in range(len(self._plan.parts))]
        except Exception as exc:
            self._errors.append(exc)
        self._running = len(work)
        self._lock = threading.Lock()
        if not work:
            self._close()
        self._threads = [threading.Thread(target=self._run, args=(job,), name='featzoo-checkpoint-read', daemon=True)
                         for job in work]
        for thread in self._threads:
            thread.start()

    def _read_whole(self) -> None:
        self._state = read_state_dict(self.path)

    def _run(self, job: Any) -> None:
        try:
            job()
        except BaseException as exc:  # handed to the caller's thread by result()
            self._errors.append(exc)
        finally:
            with self._lock:
                self._running -= 1
                last = self._running == 0
            if last:  # the file is closed even when nobody asks for the result (the build failed meanwhile)
                self._close()

    def _close(self) -> None:
        if self._plan is not None:
            self._plan.close()

    def result(self) -> Dict[str, torch.Tensor]:
        """Wait for the read and return the state_dict (the same dict on every call), or raise its error."""
        for thread in self._threads:
            thread.join()
        if self._errors:
            raise self._errors[0]
        return self._state


def checkpoint_keys(path: Union[str, os.PathLike]) -> List[str]:
    """All state_dict keys a checkpoint file holds (without reading safetensors data)."""
    path = _check_file(path)
    if os.path.getsize(path) == 0:
        raise RuntimeError(f'checkpoint file {path!r} is empty')
    if is_safetensors(path):
        keys = safetensors_keys(path)
        if keys and all(k.startswith('module.') for k in keys):
            keys = [k[len('module.'):] for k in keys]
        return keys
    return list(read_state_dict(path).keys())


def adapt_input_conv(in_chans: int, weight: torch.Tensor) -> torch.Tensor:
    """Adapt a first-convolution weight trained on RGB to ``in_chans`` input channels.

    One channel sums the RGB filters; more channels repeat them and rescale by 3 / in_chans.

    >>> adapt_input_conv(1, torch.ones(8, 3, 3, 3)).shape
    torch.Size([8, 1, 3, 3])
    """
    dtype = weight.dtype
    weight = weight.float()
    out_ch, src_ch = weight.shape[:2]
    if in_chans == src_ch:
        return weight.to(dtype)
    if in_chans == 1:
        if src_ch > 3:
            if src_ch % 3:
                raise ValueError(f'cannot adapt a first convolution with {src_ch} input channels to 1')
            weight = weight.reshape(out_ch, src_ch // 3, 3, *weight.shape[2:]).sum(dim=2)
        else:
            weight = weight.sum(dim=1, keepdim=True)
    else:
        if src_ch != 3:
            raise ValueError(f'cannot adapt a first convolution with {src_ch} input channels to {in_chans}; '
                             'only RGB (3-channel) weights are adapted')
        repeat = -(-in_chans // 3)
        weight = weight.repeat(1, repeat, *([1] * (weight.ndim - 2)))[:, :in_chans]
        weight = weight * (3 / float(in_chans))
    return weight.to(dtype)


def _names(value: Union[None, str, Sequence[str]]) -> List[str]:
    if not value:
        return []
    return [value] if isinstance(value, str) else list(value)


def _describe(keys: Iterable[str], limit: int = 5) -> str:
    keys = sorted(keys)
    more = f' (and {len(keys) - limit} more)' if len(keys) > limit else ''
    return ', '.join(repr(k) for k in keys[:limit]) + more


def load_weights(model: nn.Module, path: Union[str, os.PathLike], full_keys: Optional[Set[str]] = None,
                 first_conv: Union[None, str, Sequence[str]] = None,
                 classifier: Union[None, str, Sequence[str]] = None,
                 filter_fn=None, filter_model: Optional[nn.Module] = None, assign: bool = False,
                 prefetched: Optional[BackgroundRead] = None,
                 allow_fresh_classifier: bool = False) -> Dict[str, List[str]]:
    """Load a checkpoint file into ``model`` strictly, with the adaptations users expect.

    - keys of the full model that ``model`` (a pruned feature wrapper) no longer has are skipped quietly,
      and with safetensors they are never read from disk;
    - classifier keys are skipped when the classifier's shape differs (a fresh head for another num_classes);
    - a file without the classifier's keys is an error naming them and the fixes, unless
      ``allow_fresh_classifier`` (the caller asked for a head of its own: an explicit ``num_classes`` or a feature
      backbone); then the head keeps its fresh initialization and the ``featzoo`` logger says so;
    - the first convolution is adapted when ``in_chans`` differs from the weights';
    - anything else that does not fit (missing or unexpected keys, other shapes) raises naming the first keys.

    ``prefetched`` is a :class:`BackgroundRead` of ``path`` started earlier; its tensors are used instead of
    reading the file again (keys the model does not have are dropped).

    Returns ``{'skipped': [...], 'reinitialized': [...]}``.

    >>> import tempfile, safetensors.torch
    >>> m = nn.Linear(2, 2); f = tempfile.mktemp(suffix='.safetensors')
    >>> safetensors.torch.save_file(m.state_dict(), f)
    >>> load_weights(nn.Linear(2, 2), f)
    {'skipped': [], 'reinitialized': []}
    """
    path = _check_file(path)
    target = model.state_dict(keep_vars=True)
    target_keys = set(target)
    full_keys = set(full_keys) if full_keys is not None else target_keys
    if prefetched is not None and prefetched.path != path:
        raise ValueError(f'prefetched holds {prefetched.path!r}, not the checkpoint to load, {path!r}')
    everything = prefetched.result() if prefetched is not None else None
    file_keys = list(everything) if everything is not None else checkpoint_keys(path)
    classifier_names = _names(classifier)
    is_classifier = lambda k: any(k == c or k.startswith(c + '.') for c in classifier_names)  # noqa: E731

    unexpected = [k for k in file_keys if k not in full_keys and not k.endswith('num_batches_tracked')]
    if filter_fn is not None:
        wanted = None  # the filter may rename keys: read everything, filter, then compare
    else:
        wanted = [k for k in file_keys if k in target_keys]
    if unexpected and filter_fn is None:
        clf_only = [k for k in unexpected if is_classifier(k)]
        if len(clf_only) != len(unexpected):
            raise RuntimeError(f'checkpoint {path!r} does not fit this model: unexpected keys '
                               f'{_describe(set(unexpected) - set(clf_only))}; is it for another architecture?')
    if everything is not None:
        state = dict(everything) if wanted is None else {k: everything[k] for k in wanted}
    else:
        state = read_state_dict(path, wanted)
    if filter_fn is not None:
        state = filter_fn(state, filter_model if filter_model is not None else model)
        extra = [k for k in state if k not in full_keys and not k.endswith('num_batches_tracked')
                 and not is_classifier(k)]
        if extra:
            raise RuntimeError(f'checkpoint {path!r} does not fit this model: unexpected keys {_describe(extra)}; '
                               f'is it for another architecture?')
        state = {k: v for k, v in state.items() if k in target_keys}

    skipped: List[str] = [k for k in file_keys if k not in target_keys and (filter_fn is None)]
    reinitialized: List[str] = []
    for conv in _names(first_conv):
        key = f'{conv}.weight'
        if key in state and key in target and state[key].ndim >= 3 and state[key].shape[1] != target[key].shape[1]:
            state[key] = adapt_input_conv(target[key].shape[1], state[key])
    for key in list(state):
        if key.endswith('num_batches_tracked') and key not in target:
            del state[key]
            continue
        if key not in target:
            continue
        if tuple(state[key].shape) != tuple(target[key].shape):
            if is_classifier(key):
                del state[key]
                reinitialized.append(key)
                continue
            raise RuntimeError(f'checkpoint {path!r} does not fit this model: {key!r} has shape '
                               f'{tuple(state[key].shape)} in the file but {tuple(target[key].shape)} in the model')
    missing = [k for k in target_keys if k not in state and k not in reinitialized]
    missing_clf = [k for k in missing if is_classifier(k)]
    missing_other = [k for k in missing if not is_classifier(k) and not k.endswith('num_batches_tracked')]
    if missing_other:
        raise RuntimeError(f'checkpoint {path!r} lacks {len(missing_other)} key(s) this model needs: '
                           f'{_describe(missing_other)}; is it for another architecture?')
    if missing_clf and not allow_fresh_classifier:
        raise RuntimeError(
            f'checkpoint {path!r} has no classifier: it lacks {_describe(missing_clf)}, so the model\'s head would '
            f'be random. Pass num_classes=0 for pooled features without a head, features_only=True for a feature '
            f'backbone, or an explicit num_classes=N to train a fresh head on purpose')
    if missing_clf:
        _logger.info('checkpoint %r has no classifier (%s): the head %s keeps its fresh initialization',
                     path, _describe(missing_clf), ', '.join(classifier_names))
    reinitialized.extend(missing_clf)
    for key in list(state):
        if state[key].dtype != target[key].dtype and target[key].dtype.is_floating_point:
            state[key] = state[key].to(target[key].dtype)
    if assign and _assign_checked(model, state):
        loaded = set(state)
        missing_keys = [k for k in target_keys if k not in loaded]
    else:
        missing_keys = model.load_state_dict(state, strict=False, assign=assign).missing_keys
    leftover = [k for k in missing_keys if k not in reinitialized and not k.endswith('num_batches_tracked')]
    if leftover:
        raise RuntimeError(f'checkpoint {path!r} lacks keys {_describe(leftover)}')
    return {'skipped': sorted(set(skipped) - set(reinitialized)), 'reinitialized': sorted(set(reinitialized))}


def _assign_checked(model: nn.Module, state: Dict[str, torch.Tensor]) -> bool:
    """Make the tensors of ``state`` (keys, shapes and dtypes already checked) the model's parameters and buffers,
    as ``load_state_dict(state, strict=False, assign=True)`` would, in a fraction of its time (0.7 ms instead of
    4.6 ms for resnet50: no per-module Python machinery for what is a plain assignment here).

    Returns False, having changed nothing, when any module could load differently from the stock code: its own
    ``_load_from_state_dict``, load hooks, extra state, parametrizations, global registration hooks, or a key that
    is not a plain parameter or persistent buffer; the caller then uses ``load_state_dict``.
    """
    from torch.nn.modules import batchnorm, module as module_lib

    if any(getattr(module_lib, hooks, None) for hooks in (
            '_global_parameter_registration_hooks', '_global_buffer_registration_hooks',
            '_global_module_registration_hooks')):
        return False
    stock_loaders = (nn.Module._load_from_state_dict, batchnorm._NormBase._load_from_state_dict)
    modules = dict(model.named_modules(remove_duplicate=False))
    for module in modules.values():
        cls = type(module)
        if (cls._load_from_state_dict not in stock_loaders or cls.set_extra_state is not nn.Module.set_extra_state
                or module._load_state_dict_pre_hooks or module._load_state_dict_post_hooks
                or getattr(module, 'parametrizations', None) is not None):
            return False
    plan = []
    for key, tensor in state.items():
        prefix, _, attr = key.rpartition('.')
        module = modules.get(prefix)
        if module is None or not isinstance(tensor, torch.Tensor):
            return False
        if module._parameters.get(attr) is not None:
            plan.append((module._parameters, attr, tensor, module._parameters[attr].requires_grad))
        elif attr in module._buffers and attr not in module._non_persistent_buffers_set:
            plan.append((module._buffers, attr, tensor, None))
        else:
            return False
    for slots, attr, tensor, requires_grad in plan:
        if requires_grad is None:
            slots[attr] = tensor
        elif isinstance(tensor, nn.Parameter):
            slots[attr] = tensor.requires_grad_(requires_grad)
        else:
            slots[attr] = nn.Parameter(tensor, requires_grad=requires_grad)
    return True


class _Skeleton(_DeviceContext):
    """The meta device, where initializing a tensor costs nothing.

    Modules fill their parameters in their constructors (``reset_parameters``); on the meta device there is
    nothing to fill, yet torch still runs each ``uniform_`` through a Python decomposition (about half of a meta
    resnet50 build). Fills of meta tensors return at once here; everything else is the plain meta device.
    The mode lives on this thread's stack, so other threads building real models are not affected.
    """

    def __init__(self) -> None:
        super().__init__('meta')

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _FILLS:
            # torch.nn.init passes its tensor by keyword; a fill called from inside this method would not come
            # back here (a mode is off while it runs), hence the init functions themselves are in _FILLS
            target = args[0] if args else (kwargs or {}).get('tensor')
            if isinstance(target, torch.Tensor) and target.is_meta:
                return target
        return super().__torch_function__(func, types, args, kwargs)


_FILLS = frozenset(
    [getattr(torch.Tensor, name) for name in ('uniform_', 'normal_', 'fill_', 'zero_', 'exponential_', 'bernoulli_')]
    + [f for name, f in vars(nn.init).items() if name.endswith('_') and not name.startswith('_') and callable(f)])


def meta_skeleton() -> _Skeleton:
    """A context in which modules are built on the meta device without spending time on their initialization;
    pair it with :func:`load_weights` (``assign=True``) and :func:`materialize_meta`.

    Example::

        with meta_skeleton():
            model = nn.Conv2d(3, 8, 3)    # no storage, no init
        model.weight.is_meta             # True
    """
    return _Skeleton()


def materialize_meta(model: nn.Module) -> List[str]:
    """Give real storage to whatever is still on the meta device after loading: fresh classifiers are
    initialized with their own ``reset_parameters``, computed buffers by ``init_non_persistent_buffers``.

    Returns the names of the modules that were initialized.
    """
    touched: List[str] = []
    for name, module in model.named_modules():
        own = list(module._parameters.values()) + list(module._buffers.values())
        if not any(t is not None and t.is_meta for t in own):
            continue
        params_meta = any(p is not None and p.is_meta for p in module._parameters.values())
        buffers_meta = [b for b_name, b in module._buffers.items()
                        if b is not None and b.is_meta and b_name != 'num_batches_tracked']
        for p_name, p in list(module._parameters.items()):
            if p is not None and p.is_meta:
                module._parameters[p_name] = nn.Parameter(torch.empty_like(p, device='cpu'),
                                                          requires_grad=p.requires_grad)
        for b_name, b in list(module._buffers.items()):
            if b is not None and b.is_meta:
                module._buffers[b_name] = torch.zeros_like(b, device='cpu')
        if hasattr(module, 'init_non_persistent_buffers'):
            module.init_non_persistent_buffers()
        if params_meta:
            if hasattr(module, 'reset_parameters'):
                module.reset_parameters()
            else:
                raise RuntimeError(f'module {name!r} ({type(module).__name__}) has parameters that were not in '
                                   'the checkpoint and no reset_parameters() to initialize them')
        elif buffers_meta and not hasattr(module, 'init_non_persistent_buffers'):
            raise RuntimeError(f'module {name!r} ({type(module).__name__}) has buffers that were not in the '
                               'checkpoint and no init_non_persistent_buffers() to compute them')
        touched.append(name)
    return touched


def load_checkpoint(model: nn.Module, checkpoint_path: Union[str, os.PathLike], strict: bool = True) -> Dict[str, Any]:
    """Load a checkpoint file into an existing model (or feature wrapper), timm-style.

    With ``strict=True`` every key must match; with ``strict=False`` the result lists what did not.

    >>> import featzoo, tempfile, safetensors.torch
    >>> m = featzoo.create_model('resnet18'); f = tempfile.mktemp(suffix='.safetensors')
    >>> safetensors.torch.save_file(m.state_dict(), f)
    >>> load_checkpoint(featzoo.create_model('resnet18'), f)['missing_keys']
    []
    """
    state = read_state_dict(checkpoint_path)
    target = model.state_dict()
    for key, value in state.items():
        if key in target and tuple(value.shape) != tuple(target[key].shape):
            raise RuntimeError(f'checkpoint {os.fspath(checkpoint_path)!r} does not fit this model: {key!r} has shape '
                               f'{tuple(value.shape)} in the file but {tuple(target[key].shape)} in the model')
    result = model.load_state_dict(state, strict=False)
    if strict and (result.missing_keys or result.unexpected_keys):
        raise RuntimeError(f'checkpoint {os.fspath(checkpoint_path)!r} does not fit this model: missing '
                           f'{_describe(result.missing_keys)}; unexpected {_describe(result.unexpected_keys)}')
    return {'missing_keys': list(result.missing_keys), 'unexpected_keys': list(result.unexpected_keys)}
