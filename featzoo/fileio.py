"""The one way featzoo writes a file that must never be seen half-written: :func:`atomic_write`.

The content goes to a temporary file in the target's folder (same filesystem, so the rename is atomic), which is
flushed to disk, given the permissions of an ordinary new file (the umask decides, as for any other output), and
renamed over the target; then the folder itself is flushed, because the rename is durable only once the folder's
entry is on disk. A process killed at any moment leaves either the old file, or the complete new one, and possibly
a temporary named ``.tmp-<name>.<random>`` that :func:`remove_temporaries` cleans up.

>>> import tempfile
>>> path = os.path.join(tempfile.mkdtemp(), 'note.txt')
>>> atomic_write(path, b'hello')
>>> open(path, 'rb').read()
b'hello'
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable, Dict, List, Type, Union

__all__ = ['TMP_PREFIX', 'atomic_write', 'write_json_atomic', 'read_json_object', 'fsync_dir', 'fsync_file', 'current_umask',
           'remove_temporaries', 'is_temporary']

TMP_PREFIX = '.tmp-'

PathLike = Union[str, 'os.PathLike[str]']
Content = Union[bytes, str, Callable[[str], Any]]


def current_umask() -> int:
    """The process's umask, read without changing it where the platform allows (``os.umask`` alone must set it,
    which briefly gives other threads' new files a wrong mode).

    >>> 0 <= current_umask() <= 0o777
    True
    """
    try:
        with open('/proc/self/status', encoding='ascii') as fh:
            for line in fh:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(directory: PathLike) -> None:
    """Flush a folder's entries to disk (after a rename into it). Filesystems and platforms that cannot open or
    sync a folder are skipped: there the rename is as durable as that filesystem makes it.

    >>> fsync_dir(tempfile.gettempdir())
    """
    try:
        fd = os.open(os.fspath(directory), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: PathLike) -> None:
    """Flush a file written by someone else (a download library) to disk, and the folder that names it.

    >>> p = os.path.join(tempfile.mkdtemp(), 'a'); _ = open(p, 'w').write('x'); fsync_file(p)
    """
    path = os.path.realpath(os.fspath(path))
    with open(path, 'rb') as fh:
        os.fsync(fh.fileno())
    fsync_dir(os.path.dirname(path))


def is_temporary(name: str) -> bool:
    """True for the name of a temporary file left by :func:`atomic_write`.

    >>> is_temporary('.tmp-manifest.json.k2j3'), is_temporary('manifest.json')
    (True, False)
    """
    return name.startswith(TMP_PREFIX)


def atomic_write(path: PathLike, content: Content, mode: int = 0o666) -> None:
    """Write ``content`` to ``path`` atomically and durably (see the module docstring).

    ``content`` is bytes, a str (written as UTF-8), or a function that writes the file whose path it is given
    (for writers that take a path, such as ``safetensors.torch.save_file`` or ``torch.save``). The file gets
    ``mode & ~umask``, whatever the writer created it with.

    >>> import tempfile, json
    >>> path = os.path.join(tempfile.mkdtemp(), 'a.json')
    >>> atomic_write(path, lambda tmp: open(tmp, 'w').write(json.dumps({'a': 1})))
    >>> json.load(open(path))
    {'a': 1}
    """
    path = os.path.abspath(os.fspath(path))
    directory, name = os.path.split(path)
    if isinstance(content, str):
        content = content.encode('utf-8')
    if not isinstance(content, bytes) and not callable(content):
        raise TypeError(f'content must be bytes, str or a function of the temporary path, got '
                        f'{type(content).__name__}')
    fd, tmp = tempfile.mkstemp(prefix=f'{TMP_PREFIX}{name}.', dir=directory)
    try:
        if isinstance(content, bytes):
            with os.fdopen(fd, 'wb') as fh:
                fh.write(content)
                fh.flush()
                os.fsync(fh.fileno())
        else:
            os.close(fd)
            content(tmp)
            with open(tmp, 'rb+') as fh:
                os.fsync(fh.fileno())
        # mkstemp makes owner-only files and some writers do too; outputs follow the umask like any other file
        os.chmod(tmp, mode & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(directory)


def write_json_atomic(path: PathLike, data: Any) -> None:
    """:func:`atomic_write` of ``data`` as indented JSON. Non-ASCII characters are written as ``\\u`` escapes, so
    that any ``str`` survives the round trip exactly, lone surrogates included (the names ``os.listdir`` gives for
    file names that are not valid UTF-8), and the file is plain ASCII.

    >>> import tempfile; path = os.path.join(tempfile.mkdtemp(), 'x.json')
    >>> write_json_atomic(path, {'name': 'caf\\udce9.png'}); json.load(open(path))['name'] == 'caf\\udce9.png'
    True
    """
    atomic_write(path, json.dumps(data, indent=2, ensure_ascii=True) + '\n')


def read_json_object(path: PathLike, describe: str, error: Type[Exception] = ValueError,
                     advice: str = '') -> Dict[str, Any]:
    """The JSON object stored at ``path``. A file that is not JSON, or holds another JSON value, raises ``error``
    whose message starts with ``describe`` (what the file is, for the user) and ends with ``advice``.

    >>> read_json_object(os.devnull, 'the manifest', RuntimeError, '; delete it')  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    RuntimeError: the manifest is not valid JSON (Expecting value: ...); delete it
    """
    try:
        with open(path, encoding='utf-8') as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise error(f'{describe} is not valid JSON ({exc}){advice}') from None
    if not isinstance(data, dict):
        raise error(f'{describe} must hold a JSON object, got {type(data).__name__}{advice}')
    return data


def remove_temporaries(directory: PathLike) -> List[str]:
    """Delete the temporaries that killed writers left in ``directory``; returns their names.

    Only call this while no other process can be writing into ``directory`` (featzoo extract holds its lock).

    >>> remove_temporaries(tempfile.mkdtemp())
    []
    """
    directory = os.fspath(directory)
    removed: List[str] = []
    if not os.path.isdir(directory):
        return removed
    for name in sorted(os.listdir(directory)):
        if is_temporary(name):
            try:
                os.unlink(os.path.join(directory, name))
            except FileNotFoundError:
                continue
            removed.append(name)
    return removed
