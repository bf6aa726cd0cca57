"""Splitting an extraction across the processes that torchrun starts (gloo on CPU, nccl on CUDA).

Ranks share nothing but the output folder and a few small messages: rank 0 prepares the job and broadcasts the
plan; each rank writes its own shards; rank 0 writes the manifest after a final barrier.
"""
from __future__ import annotations

import builtins
import datetime
import os
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, TypeVar

import torch
import torch.distributed as dist

from ..errors import NotAFileError, NotAFolderError

__all__ = ['DistContext', 'init_distributed', 'split_work']

T = TypeVar('T')

# Errors raised on rank 0 during setup are re-raised with the same type on every rank, so that all ranks stop with
# the same message; other types become RuntimeError.
_SHAREABLE_ERRORS = {name: getattr(builtins, name) for name in (
    'ValueError', 'TypeError', 'KeyError', 'FileNotFoundError', 'FileExistsError', 'RuntimeError', 'PermissionError')}
_SHAREABLE_ERRORS.update(NotAFolderError=NotAFolderError, NotAFileError=NotAFileError)
# Ranks wait at barriers while others still work: the wait is bounded by the slowest rank, not by a timer.
_TIMEOUT = datetime.timedelta(days=7)


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

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        """Wait for every rank (a no-op in a single process)."""
        if self.distributed:
            dist.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> List[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        out: List[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
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
        """Destroy the process group if this context created it."""
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
        return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, False, dist.get_backend())
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
    dist.init_process_group(backend=backend, timeout=_TIMEOUT)
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, True, backend)


def split_work(items: Sequence[T], rank: int, world_size: int) -> List[T]:
    """This rank's share of ``items``: every ``world_size``-th item starting at ``rank``.

    Interleaving keeps the ranks' shares within one item of each other, and resumed runs split only what is left.

    >>> split_work(list(range(7)), 1, 3)
    [1, 4]
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f'rank {rank} is outside a world of {world_size} processes')
    return list(items[rank::world_size])
