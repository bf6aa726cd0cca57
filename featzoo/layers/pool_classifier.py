"""``reset_classifier`` for the models whose head is a top-level ``global_pool`` plus a classifier layer (timm's
DenseNet, DLA, HRNet and EfficientNet keep those names, so their checkpoints load unchanged)."""
from __future__ import annotations

from typing import Optional

from torch import nn

from .pooling import create_classifier


def reset_pool_classifier(model: nn.Module, num_classes: int, global_pool: Optional[str] = None,
                          classifier_name: str = 'classifier', use_conv: bool = False) -> str:
    """Rebuild ``model.global_pool`` and its classifier (at ``classifier_name``) for ``num_classes`` (0: none) and
    ``global_pool`` (None keeps the pooling type), sized for ``model.num_features``, on the model's device and dtype
    and in its train mode; ``num_classes`` and ``head_hidden_size`` follow. The caller checks the arguments. Returns
    the pooling type.

    >>> m = nn.Module(); m.num_features = 8; m.conv = nn.Conv2d(3, 8, 1); m.global_pool = None
    >>> reset_pool_classifier(m, 3, 'avg'), m.classifier.in_features, m.num_classes, m.head_hidden_size
    ('avg', 8, 3, 8)
    """
    pool_type = model.global_pool.pool_type if global_pool is None else global_pool
    ref = next(model.parameters(), None)
    pool, classifier = create_classifier(model.num_features, num_classes, pool_type=pool_type, use_conv=use_conv)
    if ref is not None:
        pool.to(device=ref.device, dtype=ref.dtype)
        classifier.to(device=ref.device, dtype=ref.dtype)
    model.global_pool = pool.train(model.training)
    setattr(model, classifier_name, classifier.train(model.training))
    model.num_classes = num_classes
    model.head_hidden_size = model.num_features * pool.feat_mult()
    return pool_type
