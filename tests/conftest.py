"""Shared fixtures and test-process settings."""
from __future__ import annotations

import ctypes
import gc
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

# One thread per test process: CI runs two xdist workers on two cores, and oversubscribed threads slow small
# forwards down by an order of magnitude.
torch.set_num_threads(1)


def _glibc_trim():
    # the symbols already loaded into this process (no library search, which may start ldconfig at import)
    try:
        return getattr(ctypes.CDLL(None), 'malloc_trim', None)
    except (OSError, TypeError):  # Windows has no CDLL(None)
        return None


_MALLOC_TRIM = _glibc_trim()


def pytest_runtest_teardown(item, nextitem) -> None:
    # glibc keeps freed heap memory for reuse: after a few hundred big models a slow-suite worker held 11.6 GB of
    # freed-but-kept heap and peaked at 20.5 GB, and the OOM killer ended it on a 24 GB machine (malloc_trim gives
    # the same 2.8 GB back to 0.9 GB). Only slow tests build the big variants; the default suite skips the cost.
    if _MALLOC_TRIM is not None and item.get_closest_marker('slow') is not None:
        gc.collect()
        _MALLOC_TRIM(0)


@pytest.fixture
def small_input() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def weights_file(tmp_path):
    """Factory: save a randomly initialized featzoo model's weights; returns (path, model)."""
    from safetensors.torch import save_file
    import featzoo

    def make(name: str = 'resnet18', **kwargs):
        model = featzoo.create_model(name, **kwargs).eval()
        path = tmp_path / f'{name}.safetensors'
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        return str(path), model
    return make
