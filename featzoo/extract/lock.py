"""One extraction per output folder at a time: an advisory lock on a file in OUT.

The lock is ``flock`` (``fcntl.lockf`` where flock is missing; ``msvcrt.locking`` on Windows) on
``OUT/.featzoo-extract.lock``, taken without waiting: a second run fails at once with an error naming the holder
(process id, host, start time, command) that the holder wrote into the file. The kernel releases the lock when the
holding process ends, however it ends (SIGKILL included), so a stale file never blocks a rerun. Under torchrun only
rank 0 holds it, for the whole job; the other ranks write their shards under its protection.

>>> import tempfile
>>> with OutputLock(tempfile.mkdtemp()):
...     pass
"""
from __future__ import annotations

import datetime
import json
import os
import socket
import sys
from typing import Any, Dict, Optional

from .manifest import LOCK_FILE

__all__ = ['OutputLock', 'OutputInUseError']


class OutputInUseError(RuntimeError):
    """Another featzoo extract holds the output folder."""


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        # some network filesystems have no flock; POSIX record locks are what they offer
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):
            return False
    return True


def _holder(path: str) -> str:
    try:
        with open(path, encoding='utf-8') as fh:
            info: Dict[str, Any] = json.loads(fh.read() or '{}')
    except (OSError, ValueError):
        info = {}
    if not info:
        return 'another process (it has not written its name yet)'
    return (f"process {info.get('pid')} on host {info.get('host')!r}, running since {info.get('started')} "
            f"({info.get('command')})")


class OutputLock:
    """The exclusive lock of an output folder (created if missing) for the lifetime of the ``with`` block.

    Raises :class:`OutputInUseError` naming the holder when another process has it.

    >>> import tempfile; out = tempfile.mkdtemp()
    >>> with OutputLock(out):
    ...     OutputLock(out).acquire()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    featzoo.extract.lock.OutputInUseError: ... is in use by another featzoo extract: process ...
    """

    def __init__(self, out: str) -> None:
        self.out = out
        self.path = os.path.join(out, LOCK_FILE)
        self.fd: Optional[int] = None

    def acquire(self) -> 'OutputLock':
        os.makedirs(self.out, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        if not _try_lock(fd):
            os.close(fd)
            raise OutputInUseError(
                f'output folder {self.out!r} is in use by another featzoo extract: {_holder(self.path)}. Wait for '
                f'it to finish (or stop it) and run the command again; a run that was killed releases the folder '
                f'by itself')
        self.fd = fd
        info = {'pid': os.getpid(), 'host': socket.gethostname(),
                'started': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
                'command': ' '.join([os.path.basename(sys.argv[0] if sys.argv else 'python')] + sys.argv[1:])[:300]}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(info, ensure_ascii=True).encode())
        return self

    def release(self) -> None:
        """Give the folder back (the file stays: deleting it could let two runs lock two different files)."""
        if self.fd is not None:
            try:
                os.ftruncate(self.fd, 0)
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> 'OutputLock':
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
