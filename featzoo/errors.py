"""Exceptions raised to users."""
from __future__ import annotations


class UnknownModelError(RuntimeError):
    """A model name or pretrained tag that the registry does not know (a RuntimeError, as timm raises)."""


class NotAFolderError(NotADirectoryError, FileNotFoundError):
    """A file where a folder was expected; also a FileNotFoundError, since no folder exists at that path."""


class NotAFileError(IsADirectoryError, FileNotFoundError):
    """A folder where a file was expected; also a FileNotFoundError, since no file exists at that path."""


class WeightsUnavailableError(FileNotFoundError):
    """The pretrained weights a command needs are neither cached nor downloadable, and no file was given."""
