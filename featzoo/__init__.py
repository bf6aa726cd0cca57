"""featzoo: a timm-compatible model zoo in which every network is a feature backbone with one flag.

>>> import featzoo
>>> m = featzoo.create_model('resnet18', features_only=True)
>>> m.feature_info.channels()
[64, 64, 128, 256, 512]
"""
from __future__ import annotations

import importlib
import sys
import threading
from typing import Any

__version__ = '0.1.0'

# Public names and the module that defines each; imported on first use so `import featzoo` stays light.
_EXPORTS = {
    'create_model': 'featzoo.factory',
    'parse_model_name': 'featzoo.factory',
    'list_models': 'featzoo.registry',
    'list_pretrained': 'featzoo.registry',
    'list_modules': 'featzoo.registry',
    'is_model': 'featzoo.registry',
    'model_entrypoint': 'featzoo.registry',
    'model_capabilities': 'featzoo.registry',
    'ModelCapabilities': 'featzoo.registry',
    'split_model_name_tag': 'featzoo.registry',
    'get_pretrained_cfg': 'featzoo.registry',
    'UnknownModelError': 'featzoo.errors',
    'FeatureInfo': 'featzoo.features.info',
    'FeatureListNet': 'featzoo.features.wrappers',
    'FeatureDictNet': 'featzoo.features.wrappers',
    'FeatureHookNet': 'featzoo.features.wrappers',
    'FeatureGetterNet': 'featzoo.features.wrappers',
    'FeatureFxNet': 'featzoo.features.fx',
    'create_feature_extractor': 'featzoo.features.fx',
    'get_graph_node_names': 'featzoo.features.fx',
    'get_graph_node_info': 'featzoo.features.fx',
    'NodeInfo': 'featzoo.features.fx',
    'register_notrace_module': 'featzoo.features.notrace',
    'register_notrace_function': 'featzoo.features.notrace',
    'load_checkpoint': 'featzoo.weights.loading',
    'save_pretrained': 'featzoo.weights.hub',
    'push_to_hub': 'featzoo.weights.hub',
    'PretrainedUnavailableError': 'featzoo.weights.hub',
    'optimize_for_inference': 'featzoo.inference',
    'freeze': 'featzoo.finetune',
    'unfreeze': 'featzoo.finetune',
    'param_groups': 'featzoo.finetune',
    'extract_embeddings': 'featzoo.extract',
    'read_embeddings': 'featzoo.extract',
    'open_embeddings': 'featzoo.extract',
}
_SUBMODULES = ('data', 'layers', 'features', 'weights', 'models', 'extract', 'registry', 'factory', 'finetune', 'visualize',
               'inference')

__all__ = sorted(_EXPORTS) + list(_SUBMODULES)


# Python 3.11 can deadlock (and raise _DeadlockError) when threads import a package and one of its submodules at
# the same moment; every lazy import in featzoo goes through this one lock so the first imports happen in one order.
_IMPORT_LOCK = threading.RLock()


def _import_module(name: str) -> Any:
    module = sys.modules.get(name)
    if module is not None and not getattr(getattr(module, '__spec__', None), '_initializing', False):
        return module
    with _IMPORT_LOCK:
        return importlib.import_module(name)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(_import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        module = _import_module(f'featzoo.{name}')
        globals()[name] = module
        return module
    raise AttributeError(f'module featzoo has no attribute {name!r}')


def __dir__():
    return __all__
