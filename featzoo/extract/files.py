"""Finding the images of a job and recognizing when that set has changed."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Dict, Iterable, List, Sequence, Tuple, Union

from ..errors import NotAFolderError

__all__ = ['IMAGE_EXTENSIONS', 'ImageFile', 'list_images', 'image_set_digest', 'describe_image_set_change',
           'write_listing', 'read_listing']

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.gif', '.tif', '.tiff')


@dataclass(frozen=True)
class ImageFile:
    """One input file: its path relative to the image root ('/' separators), its size and modification time.

    >>> ImageFile('a/b.jpg', 1024, 0).path
    'a/b.jpg'
    """

    path: str
    size: int
    mtime_ns: int


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
            try:
                stat = os.stat(full)
            except OSError:
                # A dangling link or a file deleted while walking: it is listed with no size, and its read
                # failure is reported as a skipped row rather than silently losing it.
                size, mtime = -1, -1
            else:
                size, mtime = stat.st_size, stat.st_mtime_ns
            rel = os.path.relpath(full, root).replace(os.sep, '/')
            found.append(ImageFile(rel, size, mtime))
    found.sort(key=lambda f: f.path)
    return found


def image_set_digest(files: Sequence[ImageFile]) -> str:
    """A sha256 over the paths, sizes and modification times: equal digests mean an unchanged image set.

    >>> image_set_digest([ImageFile('a.jpg', 1, 2)]) == image_set_digest([ImageFile('a.jpg', 1, 2)])
    True
    """
    digest = hashlib.sha256()
    for f in files:
        digest.update(f'{f.path}\0{f.size}\0{f.mtime_ns}\n'.encode('utf-8', 'surrogateescape'))
    return digest.hexdigest()


def write_listing(path: str, files: Iterable[ImageFile]) -> None:
    """Write the listing as JSON lines ``[path, size, mtime_ns]`` (kept to explain a later change of the set).

    >>> import tempfile; p = os.path.join(tempfile.mkdtemp(), 'images.jsonl')
    >>> write_listing(p, [ImageFile('a.jpg', 1, 2)]); read_listing(p)
    [ImageFile(path='a.jpg', size=1, mtime_ns=2)]
    """
    with open(path, 'w', encoding='utf-8', errors='surrogateescape') as fh:
        for f in files:
            fh.write(json.dumps([f.path, f.size, f.mtime_ns], ensure_ascii=False) + '\n')


def read_listing(path: str) -> List[ImageFile]:
    """Read a listing written by :func:`write_listing`.

    >>> read_listing(os.devnull)
    []
    """
    files = []
    with open(path, encoding='utf-8', errors='surrogateescape') as fh:
        for line in fh:
            if line.strip():
                rel, size, mtime = json.loads(line)
                files.append(ImageFile(rel, int(size), int(mtime)))
    return files


def _examples(paths: Sequence[str], limit: int = 3) -> str:
    shown = ', '.join(repr(p) for p in paths[:limit])
    return shown + (f' and {len(paths) - limit} more' if len(paths) > limit else '')


def describe_image_set_change(recorded: Sequence[ImageFile], current: Sequence[ImageFile]) -> str:
    """Say how ``current`` differs from ``recorded``: new, removed and modified files, with examples.

    >>> describe_image_set_change([ImageFile('a.jpg', 1, 1)], [ImageFile('a.jpg', 2, 1), ImageFile('b.jpg', 1, 1)])
    "1 new file ('b.jpg'); 1 modified file ('a.jpg')"
    """
    before: Dict[str, Tuple[int, int]] = {f.path: (f.size, f.mtime_ns) for f in recorded}
    after: Dict[str, Tuple[int, int]] = {f.path: (f.size, f.mtime_ns) for f in current}
    new = sorted(p for p in after if p not in before)
    removed = sorted(p for p in before if p not in after)
    modified = sorted(p for p in after if p in before and after[p] != before[p])
    parts = []
    for count, word in ((new, 'new'), (removed, 'removed'), (modified, 'modified')):
        if count:
            parts.append(f'{len(count)} {word} file{"s" if len(count) != 1 else ""} ({_examples(count)})')
    return '; '.join(parts) if parts else 'no file differs'
