"""Fully connected networks, e.g. the MNIST example's teacher (784→512→256→10) and student (784→128→10)."""

from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """Flatten, then Linear→ReLU→Dropout per hidden width, then a Linear head.

    Hidden layers are ``layers.0``, ``layers.1``, ... (each a Linear→ReLU→Dropout block), the head is
    ``head``: those are the module paths to tap.
    """

    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int = 10, dropout: float = 0.0):
        super().__init__()
        widths = [in_features, *hidden]
        self.layers = nn.Sequential(
            *(
                nn.Sequential(nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout))
                for a, b in zip(widths[:-1], widths[1:])
            )
        )
        self.head = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(torch.flatten(x, 1)))
