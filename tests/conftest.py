"""Shared fixtures and test-process settings."""
from __future__ import annotations

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

# One thread per test process: CI runs two xdist workers on two cores, and oversubscribed threads slow small
# forwards down by an order of magnitude.
torch.set_num_threads(1)


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
