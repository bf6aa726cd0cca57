"""The contract methods that most families answer the same way (see featzoo/models/CONTRACT.md): a family's model
class mixes this in and overrides only what differs for it."""
from __future__ import annotations

from typing import Optional, Set, Tuple

import torch
from torch import nn


class HeadApi:
    """``get_classifier`` -> the layer at ``classifier_name`` (``head.fc``); ``no_weight_decay`` -> the names in
    ``no_weight_decay_names`` (none) beyond the usual 1-d parameters; ``set_grad_checkpointing`` -> the model's
    ``grad_checkpointing`` flag, or the flag of every stage in the container named by ``checkpoint_stages``;
    ``forward_head`` -> ``self.head(x, pre_logits=pre_logits)``. A family sets these class attributes (data) and
    overrides only the methods that differ.

    ``forward`` is ``forward_head(forward_features(x))``; featzoo's FX tracer searches the modules along the model's
    class hierarchy for no-trace functions, so those of the family's own module stay leaves when ``forward`` is
    inherited from here.

    >>> class Tiny(HeadApi, nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.head = nn.Module(); self.head.fc = nn.Linear(4, 3)
    >>> Tiny().get_classifier().out_features, Tiny().no_weight_decay()
    (3, set())
    >>> m = Tiny(); m.set_grad_checkpointing(); m.grad_checkpointing
    True
    """

    head: nn.Module
    #: dotted path of the final classifier layer (``nn.Identity`` when ``num_classes == 0``)
    classifier_name: str = 'head.fc'
    #: fixed parameter names exempt from weight decay (tokens, position tables)
    no_weight_decay_names: Tuple[str, ...] = ()
    #: '' = the model holds the ``grad_checkpointing`` flag; else the attribute whose stages each hold one
    checkpoint_stages: str = ''

    def no_weight_decay(self) -> Set[str]:
        """Parameter names exempt from weight decay besides the 1-d ones (biases, norms)."""
        return set(self.no_weight_decay_names)

    def get_classifier(self) -> nn.Module:
        """The final classifier layer (``nn.Identity`` when ``num_classes == 0``)."""
        return self.get_submodule(self.classifier_name)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute activations (per block or stage) in the backward pass instead of storing them."""
        if self.checkpoint_stages:
            for stage in getattr(self, self.checkpoint_stages):
                stage.grad_checkpointing = enable
        else:
            self.grad_checkpointing = enable

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The head on ``forward_features``' output: pooling, dropout and (unless ``pre_logits``) the classifier."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (or the pooled features when the classifier was removed) of an image batch.

        >>> import featzoo
        >>> featzoo.create_model('resnet18', num_classes=3)(torch.ones(2, 3, 64, 64)).shape
        torch.Size([2, 3])
        """
        return self.forward_head(self.forward_features(x))


def reset_classifier_head(model: nn.Module, num_classes: int, global_pool: Optional[str] = None) -> None:
    """``reset_classifier`` of a model whose ``head`` is a :class:`~featzoo.layers.ClassifierHead`: the head rebuilt
    for ``num_classes`` (0 removes the classifier) and ``global_pool`` (None keeps the pooling), sized for
    ``model.num_features``, on the model's device and dtype and in its train mode; ``num_classes`` and
    ``head_hidden_size`` follow. The caller checks the arguments.

    >>> from featzoo.layers import ClassifierHead
    >>> m = nn.Module(); m.num_features = 8; m.head = ClassifierHead(8, 5); m.stem = nn.Conv2d(3, 8, 1)
    >>> reset_classifier_head(m, 3, 'catavgmax'); m.head.fc.in_features, m.num_classes, m.head_hidden_size
    (16, 3, 16)
    """
    ref = next(model.parameters(), None)
    model.num_classes = num_classes
    model.head.in_features = model.num_features
    model.head.reset(num_classes, global_pool)
    if ref is not None:
        model.head.to(device=ref.device, dtype=ref.dtype)
    model.head.train(model.training)
    model.head_hidden_size = model.num_features * model.head.global_pool.feat_mult()
