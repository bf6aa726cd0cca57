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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    # weights a test body saved go when it ends; a module-scoped fixture's (saved at setup) stay for its module
    from helpers import created_count, remove_created_since
    mark = created_count()
    yield
    remove_created_since(mark)


def pytest_runtest_teardown(item, nextitem) -> None:
    # glibc keeps freed heap memory for reuse: after a few hundred big models a slow-suite worker held 11.6 GB of
    # freed-but-kept heap and peaked at 20.5 GB, and the OOM killer ended it on a 24 GB machine (malloc_trim gives
    # the same 2.8 GB back to 0.9 GB). Only slow tests build the big variants; the default suite skips the cost.
    if _MALLOC_TRIM is not None and item.get_closest_marker('slow') is not None:
        gc.collect()
        _MALLOC_TRIM(0)


NO_FAMILY = 'none'  # --family value for the tests that belong to no family


def pytest_addoption(parser) -> None:
    parser.addoption('--family', default='', metavar='NAME[,NAME]',
                     help='run only the tests of these featzoo families: marked family(NAME), parametrized by a '
                          f'family or a model name of it, or in tests/test_models_NAME.py ({NO_FAMILY!r}: the tests '
                          'of no family). Runs the slow suite in parts, e.g. -m slow --family resnet,convnext')


def pytest_configure(config) -> None:
    # The per-commit sample of tests/test_parity_timm.py: one seed for the whole run, fixed here before any test
    # worker starts (workers inherit the environment, so every worker collects the same sample).
    from helpers import SAMPLE_SEED_VARIABLE, sample_seed
    os.environ[SAMPLE_SEED_VARIABLE] = sample_seed()


def _item_family(item, families) -> str:
    marker = item.get_closest_marker('family')
    if marker is not None:
        return marker.args[0]
    params = getattr(getattr(item, 'callspec', None), 'params', {})
    if params.get('family') in families:
        return params['family']
    name = params.get('name')
    if isinstance(name, str):
        import featzoo
        if featzoo.is_model(name):
            return featzoo.model_capabilities(name).family
    module = os.path.basename(str(item.path))
    prefix = 'test_models_'
    if module.startswith(prefix) and module[len(prefix):-len('.py')] in families:
        return module[len(prefix):-len('.py')]
    return NO_FAMILY


def pytest_collection_modifyitems(config, items) -> None:
    wanted = {name.strip() for name in config.getoption('--family').split(',') if name.strip()}
    if not wanted:
        return
    import featzoo
    families = set(featzoo.list_modules())
    unknown = wanted - families - {NO_FAMILY}
    if unknown:
        raise pytest.UsageError(f'--family: unknown {sorted(unknown)}; families: {sorted(families)} or {NO_FAMILY!r}')
    selected = {id(item) for item in items if _item_family(item, families) in wanted}
    config.hook.pytest_deselected(items=[item for item in items if id(item) not in selected])
    items[:] = [item for item in items if id(item) in selected]


def _seed_line() -> str:
    from helpers import SAMPLE_SEED_VARIABLE
    seed = os.environ.get(SAMPLE_SEED_VARIABLE, '')
    return f'featzoo parity sample seed: {seed} (rerun the same sample: {SAMPLE_SEED_VARIABLE}={seed})'


def pytest_report_header(config) -> str:
    return _seed_line()


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    terminalreporter.write_line(_seed_line())


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
