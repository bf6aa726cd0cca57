"""The contract methods that most families answer the same way (see featzoo/models/CONTRACT.md): a family's model
class mixes this in and overrides only what differs for it."""
from __future__ import annotations

from typing import Set

from torch import nn


class HeadApi:
    """``get_classifier`` -> ``self.head.fc``; ``no_weight_decay`` -> no names beyond the usual 1-d parameters.

    >>> class Tiny(HeadApi, nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.head = nn.Module(); self.head.fc = nn.Linear(4, 3)
    >>> Tiny().get_classifier().out_features, Tiny().no_weight_decay()
    (3, set())
    """

    head: nn.Module

    def no_weight_decay(self) -> Set[str]:
        """Parameter names exempt from weight decay besides the 1-d ones (biases, norms): none."""
        return set()

    def get_classifier(self) -> nn.Module:
        """The final classifier layer (``nn.Identity`` when ``num_classes == 0``)."""
        return self.head.fc
