"""Feature extraction: FeatureInfo, the wrappers, and FX-based extraction."""
from .info import FeatureInfo, normalize_out_indices
from .wrappers import FeatureDictNet, FeatureGetterNet, FeatureHookNet, FeatureListNet

__all__ = ['FeatureInfo', 'normalize_out_indices', 'FeatureDictNet', 'FeatureGetterNet', 'FeatureHookNet',
           'FeatureListNet']
