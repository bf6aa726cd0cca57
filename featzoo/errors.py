"""Exceptions raised to users."""
from __future__ import annotations


class UnknownModelError(RuntimeError):
    """A model name or pretrained tag that the registry does not know (a RuntimeError, as timm raises)."""
