"""VGG with BatchNorm for CIFAR, as in RepDistiller's ``models/vgg.py`` (VGG-8 = its config "S", VGG-13 = "B").

Five conv groups (``block0``-``block4``) of 3x3 conv-BN-ReLU layers (VGG-13: 2 per group with 64, 128, 256,
512, 512 channels; VGG-8: 1 per group), the last ReLU of each group applied outside it (``relu0``-``relu4``),
2x2 max pooling after groups 0-2 (``pool0``-``pool2``), global average pooling and one linear layer
(RepDistiller drops VGG's fully connected stack). RepDistiller's 4th max pooling only runs on 64x64 inputs and
is left out here (32x32 CIFAR never uses it).

Module names and parameter shapes are RepDistiller's, so its state dicts load as they are. Where we deviate:
the ReLUs after each group and the pooled feature are modules (``reluK``, ``pool``) so hooks can tap them,
and none works in place.

Tap points at 32x32 input: ``relu0`` (64x32x32), ``relu1`` (128x16x16), ``relu2`` (256x8x8), ``relu3``
(512x4x4), ``relu4`` (512x4x4), ``pool`` (512); ``blockK`` gives the pre-activations.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from kd_lightning.models.layers import GlobalPool, init_like_repdistiller

CONFIGS = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
}


def conv_group(widths: Sequence[int], in_channels: int) -> nn.Sequential:
    """conv3x3-BN-ReLU per width, without the last ReLU."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
        in_channels = width
    return nn.Sequential(*layers[:-1])


class VGG(nn.Module):
    """VGG with BN; ``groups`` lists each group's conv widths (:data:`CONFIGS`)."""

    def __init__(self, groups: Sequence[Sequence[int]], num_classes: int = 100):
        super().__init__()
        if len(groups) != 5:
            raise ValueError(f"VGG needs 5 conv groups, got {len(groups)}")
        in_channels = 3
        for k, widths in enumerate(groups):
            setattr(self, f"block{k}", conv_group(widths, in_channels))
            in_channels = widths[-1]
        for k in range(3):
            setattr(self, f"pool{k}", nn.MaxPool2d(2, 2))
        for k in range(5):
            setattr(self, f"relu{k}", nn.ReLU())
        self.pool = GlobalPool()
        self.classifier = nn.Linear(in_channels, num_classes)
        init_like_repdistiller(self, linear_std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool0(self.relu0(self.block0(x)))
        x = self.pool1(self.relu1(self.block1(x)))
        x = self.pool2(self.relu2(self.block2(x)))
        x = self.relu3(self.block3(x))
        x = self.relu4(self.block4(x))
        return self.classifier(self.pool(x))


def vgg8(num_classes: int = 100) -> VGG:
    return VGG(CONFIGS["vgg8"], num_classes)


def vgg13(num_classes: int = 100) -> VGG:
    return VGG(CONFIGS["vgg13"], num_classes)
