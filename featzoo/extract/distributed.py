"""Splitting an extraction across the processes that torchrun starts (gloo on CPU, nccl on CUDA).

Ranks share nothing but the output folder and a few small messages: rank 0 prepares the job and broadcasts the
plan; each rank writes its own shards; rank 0 writes the manifest after a final barrier.

Ranks wait for each other at collectives without a timer (a slow rank is not a dead one). Instead each rank runs a
:class:`Liveness` thread that beats a counter in the process group's store every second and watches the others'
counters: when a rank's counter stops moving for ``FEATZOO_EXTRACT_DEAD_AFTER`` seconds (default 30) its process
or machine is gone, and every other rank stops with an error naming it, instead of waiting at the next collective
forever. The beat comes from its own thread, so a rank busy with a long batch keeps beating. Finished shards are
kept; running the same command again resumes.
"""
from __future__ import annotations

import builtins
import datetime
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, TypeVar

import torch
import torch.distributed as dist

from ..errors import NotAFileError, NotAFolderError

__all__ = ['DistContext', 'init_distributed', 'split_work', 'Liveness', 'RankLostError', 'DEAD_AFTER_ENV']

T = TypeVar('T')

# Errors raised on rank 0 during setup are re-raised with the same type on every rank, so that all ranks stop with
# the same message; other types become RuntimeError.
_SHAREABLE_ERRORS = {name: getattr(builtins, name) for name in (
    'ValueError', 'TypeError', 'KeyError', 'FileNotFoundError', 'FileExistsError', 'RuntimeError', 'PermissionError')}
_SHAREABLE_ERRORS.update(NotAFolderError=NotAFolderError, NotAFileError=NotAFileError)
# Ranks wait at barriers while others still work: the wait is bounded by the slowest rank, not by a timer; a rank
# that dies is found by Liveness.
_TIMEOUT = datetime.timedelta(days=7)
DEAD_AFTER_ENV = 'FEATZOO_EXTRACT_DEAD_AFTER'
_DEFAULT_DEAD_AFTER = 30.0
_BEAT_SECONDS = 1.0
_SESSIONS = iter(range(1 << 62))  # one key namespace per use of a group: every rank counts its calls alike


class RankLostError(RuntimeError):
    """Another rank of a distributed extraction stopped beating: its process or its machine is gone."""


def _dead_after() -> float:
    text = os.environ.get(DEAD_AFTER_ENV, '')
    try:
        value = float(text) if text else _DEFAULT_DEAD_AFTER
    except ValueError:
        raise ValueError(f'{DEAD_AFTER_ENV}={text!r} is invalid; give a number of seconds > 1') from None
    if not value > 1:
        raise ValueError(f'{DEAD_AFTER_ENV}={text!r} is invalid; give a number of seconds > 1')
    return value


class Liveness:
    """Heartbeats through the process group's key-value store, and the verdict when a peer's stop.

    ``on_lost`` is called (from the watching thread) with a :class:`RankLostError` when a rank that has not said
    it is done stops beating for ``dead_after`` seconds, or when the store itself is unreachable that long (the
    process hosting it is gone). By default it prints the error and ends this process with exit status 1: the main
    thread may be blocked inside a collective that only the dead rank could complete.

    Example::

        live = Liveness(store, rank=0, world_size=2).start()
        ...            # the job
        live.stop()    # says this rank is done, so that the others do not mourn it
    """

    def __init__(self, store: Any, rank: int, world_size: int, dead_after: Optional[float] = None,
                 on_lost: Optional[Any] = None) -> None:
        self.store, self.rank, self.world_size = store, rank, world_size
        self._prefix = f'featzoo-extract/{next(_SESSIONS)}'
        self.dead_after = _dead_after() if dead_after is None else dead_after
        self.on_lost = on_lost or _exit_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name='featzoo-extract-liveness', daemon=True)

    def start(self) -> 'Liveness':
        self._beat(0)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Say this rank finished (its beats stop on purpose) and end the thread."""
        self._stop.set()
        try:
            self.store.set(self._key('done', self.rank), '1')
        except Exception:  # noqa: BLE001 - the job is over either way
            pass
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5 * _BEAT_SECONDS)

    def _key(self, what: str, rank: int) -> str:
        return f'{self._prefix}/{what}/{rank}'

    def _beat(self, count: int) -> None:
        self.store.set(self._key('beat', self.rank), str(count))

    def _peer(self, what: str, rank: int) -> Optional[str]:
        key = self._key(what, rank)
        # check() does not block; get() on a missing key would wait for the store's timeout (days)
        return self.store.get(key).decode() if self.store.check([key]) else None

    def _run(self) -> None:
        started = time.monotonic()
        last: Dict[int, Optional[str]] = {r: None for r in range(self.world_size) if r != self.rank}
        moved: Dict[int, float] = {r: started for r in last}
        store_ok = started
        count = 0
        while not self._stop.wait(_BEAT_SECONDS):
            now = time.monotonic()
            count += 1
            try:
                self._beat(count)
                for r in list(last):
                    if self._peer('done', r) is not None:
                        del last[r]
                        continue
                    value = self._peer('beat', r)
                    if value != last[r]:
                        last[r], moved[r] = value, now
            except Exception as exc:  # noqa: BLE001 - any store failure: its host may be gone
                if now - store_ok > self.dead_after:
                    self._lost(RankLostError(
                        f'featzoo extract (rank {self.rank}): the job\'s rendezvous store has not answered for '
                        f'{now - store_ok:.0f} s ({type(exc).__name__}: {exc}); the process hosting it (rank 0 or '
                        f'the torchrun agent) is gone. Finished shards are kept: run the same command again to '
                        f'resume.'))
                    return
                continue
            store_ok = now
            dead = sorted(r for r in last if now - moved[r] > self.dead_after)
            if dead:
                self._lost(RankLostError(
                    f'featzoo extract (rank {self.rank}): rank{"s" if len(dead) > 1 else ""} '
                    f'{", ".join(map(str, dead))} of {self.world_size} stopped beating {self.dead_after:.0f} s ago '
                    f'(the process died or its machine is unreachable), so this rank stops too instead of waiting '
                    f'for it forever. Finished shards are kept: run the same command again to resume.'))
                return

    def _lost(self, error: RankLostError) -> None:
        if not self._stop.is_set():
            self.on_lost(error)


def _exit_lost(error: RankLostError) -> None:
    print(f'{type(error).__name__}: {error}', file=sys.stderr, flush=True)
    os._exit(1)


@dataclass
class DistContext:
    """This process's place in the job: rank, world size, local rank, and whether it created the process group.

    >>> DistContext(0, 1, 0, False, None).is_main
    True
    """

    rank: int
    world_size: int
    local_rank: int
    owns_group: bool
    backend: Optional[str]
    liveness: Optional[Liveness] = field(default=None, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def _lost_peer(self, exc: BaseException) -> RankLostError:
        # the backend's words (gloo: 'Connection closed by peer ...') say what broke, not what to do
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return RankLostError(f'featzoo extract (rank {self.rank}): another rank left the job while this one waited '
                             f'for it ({reason}); look for its error above. Finished shards are kept: run the same '
                             f'command again to resume.')

    def barrier(self) -> None:
        """Wait for every rank (a no-op in a single process)."""
        if self.distributed:
            try:
                dist.barrier()
            except RuntimeError as exc:
                raise self._lost_peer(exc) from exc

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        try:
            dist.broadcast_object_list(box, src=0)
        except RuntimeError as exc:
            raise self._lost_peer(exc) from exc
        return box[0]

    def gather(self, obj: Any) -> List[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        out: List[Any] = [None] * self.world_size
        try:
            dist.all_gather_object(out, obj)
        except RuntimeError as exc:
            raise self._lost_peer(exc) from exc
        return out

    def share_outcome(self, error: Optional[BaseException]) -> None:
        """Make rank 0's setup failure every rank's failure: rank 0 passes its exception (or None), every rank
        raises the same error, or returns when rank 0 succeeded."""
        message = None
        if self.is_main and error is not None:
            message = (type(error).__name__, str(error))
        message = self.broadcast(message)
        if self.is_main and error is not None:
            raise error
        if message is not None:
            name, text = message
            cls = _SHAREABLE_ERRORS.get(name)
            raise (cls or RuntimeError)(text)

    def close(self) -> None:
        """Stop the heartbeat and destroy the process group if this context created it."""
        if self.liveness is not None:
            self.liveness.stop()
            self.liveness = None
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device: str) -> DistContext:
    """Join the process group that torchrun describes in the environment (``WORLD_SIZE``, ``RANK``, ...).

    A process group the caller already created is used as it is. Without torchrun (or with one process) this is
    a single-process context. On CUDA each rank takes the GPU of its ``LOCAL_RANK``.

    >>> init_distributed('cpu').world_size  # doctest: +SKIP
    1
    """
    local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    if dist.is_available() and dist.is_initialized():
        return _with_liveness(DistContext(dist.get_rank(), dist.get_world_size(), local_rank, False,
                                          dist.get_backend()))
    world_size = int(os.environ.get('WORLD_SIZE', '1'))
    if world_size <= 1:
        return DistContext(0, 1, local_rank, False, None)
    if not dist.is_available():
        raise RuntimeError(f'WORLD_SIZE={world_size} asks for a distributed run, but this torch build has no '
                           f'torch.distributed')
    cuda = device.startswith('cuda')
    backend = 'nccl' if cuda else 'gloo'
    if cuda:
        torch.cuda.set_device(local_rank)
    dead_after = _dead_after()  # a bad setting is an error before any rank waits for another
    dist.init_process_group(backend=backend, timeout=_TIMEOUT)
    return _with_liveness(DistContext(dist.get_rank(), dist.get_world_size(), local_rank, True, backend), dead_after)


def _with_liveness(ctx: DistContext, dead_after: Optional[float] = None) -> DistContext:
    if ctx.distributed:
        from torch.distributed import distributed_c10d
        try:
            # the default group's store: every rank already reaches it (torchrun's agent or rank 0 hosts it)
            store = distributed_c10d._get_default_store()
        except Exception as exc:  # noqa: BLE001 - a group made without a store: run, but say what is missing
            import warnings
            warnings.warn(f'featzoo extract: the process group has no key-value store ({exc}); a rank that dies '
                          f'will not be noticed by the others', RuntimeWarning, stacklevel=3)
            return ctx
        ctx.liveness = Liveness(store, ctx.rank, ctx.world_size, dead_after).start()
    return ctx


def split_work(items: Sequence[T], rank: int, world_size: int) -> List[T]:
    """This rank's share of ``items``: every ``world_size``-th item starting at ``rank``.

    Interleaving keeps the ranks' shares within one item of each other, and resumed runs split only what is left.

    >>> split_work(list(range(7)), 1, 3)
    [1, 4]
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f'rank {rank} is outside a world of {world_size} processes')
    return list(items[rank::world_size])
