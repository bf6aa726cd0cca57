"""Finding the images of a job and recognizing when that set has changed.

Change detection works per file on a :func:`fingerprint`: size, modification time, inode number and status-change
time (``st_ctime_ns``). The last two catch a file replaced in place with its size and modification time preserved
(``cp -p``, ``rsync -t``, ``touch -r``): writing the bytes and setting the times back both update the status-change
time, which no user call can set. A fingerprint also changes when a file is moved to another filesystem or gets
another hard link, which then counts as modified: a false alarm costs a rerun, a missed change costs wrong rows.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Dict, Iterable, List, Sequence, Tuple, Union

from ..errors import NotAFolderError
from ..fileio import atomic_write

__all__ = ['IMAGE_EXTENSIONS', 'ImageFile', 'Fingerprint', 'fingerprint', 'file_fingerprint', 'list_images',
           'image_set_digest', 'describe_image_set_change', 'changed_paths', 'write_listing', 'read_listing']

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.gif', '.tif', '.tiff')


# (size, mtime_ns, inode, ctime_ns); (-1, -1, -1, -1) for a file that could not be examined
Fingerprint = Tuple[int, int, int, int]
MISSING: Fingerprint = (-1, -1, -1, -1)


def fingerprint(stat: os.stat_result) -> Fingerprint:
    """What says that a file's content may have changed: size, mtime, inode and ctime (see the module docstring).

    >>> fingerprint(os.stat(__file__))[0] == os.path.getsize(__file__)
    True
    """
    return (stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns)


def file_fingerprint(path: Union[str, os.PathLike]) -> Fingerprint:
    """:func:`fingerprint` of the file at ``path`` (links followed), or all -1 when it cannot be examined.

    >>> file_fingerprint('/nonexistent')
    (-1, -1, -1, -1)
    """
    try:
        return fingerprint(os.stat(path))
    except OSError:
        return MISSING


@dataclass(frozen=True)
class ImageFile:
    """One input file: its path relative to the image root ('/' separators) and its fingerprint's parts.

    >>> ImageFile('a/b.jpg', 1024, 0).path
    'a/b.jpg'
    """

    path: str
    size: int
    mtime_ns: int
    inode: int = 0
    ctime_ns: int = 0

    @property
    def fingerprint(self) -> Fingerprint:
        return (self.size, self.mtime_ns, self.inode, self.ctime_ns)


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_images(root: Union[str, os.PathLike]) -> List[ImageFile]:
    """Every file under ``root`` (recursively) with an image extension, any case, ordered by relative path.

    The order is plain string order of the '/'-separated relative paths, so it is the same on every platform and
    every rank. Symbolic links to files are listed; linked directories are not entered (they could loop).

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()); (d / 'b').mkdir(); _ = (d / 'b' / 'x.PNG').write_bytes(b'')
    >>> _ = (d / 'a.jpg').write_bytes(b''); _ = (d / 'notes.txt').write_bytes(b'')
    >>> [f.path for f in list_images(d)]
    ['a.jpg', 'b/x.PNG']
    """
    root = os.fspath(root)
    if not os.path.exists(root):
        raise FileNotFoundError(f'image folder {root!r} does not exist')
    if not os.path.isdir(root):
        raise NotAFolderError(f'{root!r} is a file; IMAGES must be a folder of images '
                                 f'(searched recursively for {", ".join(IMAGE_EXTENSIONS)})')
    found: List[ImageFile] = []
    for directory, _, names in os.walk(root):
        for name in names:
            if not _is_image_name(name):
                continue
            full = os.path.join(directory, name)
            # A dangling link or a file deleted while walking is listed with no fingerprint, and its read failure
            # is reported as a skipped row rather than silently losing it.
            rel = os.path.relpath(full, root).replace(os.sep, '/')
            found.append(ImageFile(rel, *file_fingerprint(full)))
    found.sort(key=lambda f: f.path)
    return found


def image_set_digest(files: Sequence[ImageFile]) -> str:
    """A sha256 over the paths and fingerprints: equal digests mean an unchanged image set.

    >>> image_set_digest([ImageFile('a.jpg', 1, 2)]) == image_set_digest([ImageFile('a.jpg', 1, 2)])
    True
    """
    digest = hashlib.sha256()
    for f in files:
        # surrogatepass: a name that is not valid UTF-8 still hashes to its own bytes
        digest.update(f'{f.path}\0{f.size}\0{f.mtime_ns}\0{f.inode}\0{f.ctime_ns}\n'.encode('utf-8', 'surrogatepass'))
    return digest.hexdigest()


def write_listing(path: str, files: Iterable[ImageFile]) -> None:
    """Write the listing atomically as JSON lines ``[path, size, mtime_ns, inode, ctime_ns]`` (kept to explain a
    later change of the set, and for incremental runs to find the files that changed). Names are written with
    ``\\u`` escapes, so any name the OS gives (lone surrogates included) comes back exactly.

    >>> import tempfile; p = os.path.join(tempfile.mkdtemp(), 'images.jsonl')
    >>> write_listing(p, [ImageFile('a.jpg', 1, 2, 3, 4)]); read_listing(p)
    [ImageFile(path='a.jpg', size=1, mtime_ns=2, inode=3, ctime_ns=4)]
    """
    lines = [json.dumps([f.path, f.size, f.mtime_ns, f.inode, f.ctime_ns], ensure_ascii=True) + '\n' for f in files]
    atomic_write(path, ''.join(lines))


def read_listing(path: str) -> List[ImageFile]:
    """Read a listing written by :func:`write_listing` (rows of format 1, without inode and ctime, too).

    >>> read_listing(os.devnull)
    []
    """
    files = []
    with open(path, encoding='utf-8', errors='surrogateescape') as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                files.append(ImageFile(row[0], *(int(v) for v in row[1:5])))
    return files


def _examples(paths: Sequence[str], limit: int = 3) -> str:
    shown = ', '.join(repr(p) for p in paths[:limit])
    return shown + (f' and {len(paths) - limit} more' if len(paths) > limit else '')


def changed_paths(recorded: Sequence[ImageFile], current: Sequence[ImageFile]) -> Tuple[List[str], List[str], List[str]]:
    """(new, removed, modified) relative paths between two listings, each sorted; a file is modified when its
    fingerprint differs (a listing of format 1 has no inode or ctime: only size and mtime are compared then).

    >>> changed_paths([ImageFile('a.jpg', 1, 1, 5, 9)], [ImageFile('a.jpg', 1, 1, 5, 10), ImageFile('b.jpg', 1, 1)])
    (['b.jpg'], [], ['a.jpg'])
    """
    before: Dict[str, ImageFile] = {f.path: f for f in recorded}
    after: Dict[str, ImageFile] = {f.path: f for f in current}
    new = sorted(p for p in after if p not in before)
    removed = sorted(p for p in before if p not in after)

    def differs(old: ImageFile, now: ImageFile) -> bool:
        if old.inode == 0 and old.ctime_ns == 0:
            return (old.size, old.mtime_ns) != (now.size, now.mtime_ns)
        return old.fingerprint != now.fingerprint

    modified = sorted(p for p in after if p in before and differs(before[p], after[p]))
    return new, removed, modified


def describe_image_set_change(recorded: Sequence[ImageFile], current: Sequence[ImageFile]) -> str:
    """Say how ``current`` differs from ``recorded``: new, removed and modified files, with examples.

    >>> describe_image_set_change([ImageFile('a.jpg', 1, 1)], [ImageFile('a.jpg', 2, 1), ImageFile('b.jpg', 1, 1)])
    "1 new file ('b.jpg'); 1 modified file ('a.jpg')"
    """
    new, removed, modified = changed_paths(recorded, current)
    parts = []
    for count, word in ((new, 'new'), (removed, 'removed'), (modified, 'modified')):
        if count:
            parts.append(f'{len(count)} {word} file{"s" if len(count) != 1 else ""} ({_examples(count)})')
    return '; '.join(parts) if parts else 'no file differs'
