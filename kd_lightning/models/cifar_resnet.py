"""CIFAR ResNets (He et al., CVPR 2016, section 4.2) as in RepDistiller's ``models/resnet.py``.

ResNet-d (d = 6n + 2): a 3x3 conv-BN-ReLU stem, three stages (``layer1``-``layer3``) of n basic blocks
(conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU), strides 1, 2, 2, global average pooling and a
linear layer. Widths 16, 16, 32, 64 (resnet20 ... resnet110) or 32, 64, 128, 256 (the "x4" nets).
Where the shape changes the shortcut is a 1x1 conv + BN (He et al.'s option B), not the paper's CIFAR
option A (zero-padded identity): that is RepDistiller's variant, and why resnet20 has 272,474 parameters at
10 classes, not option A's 269,722.

Module names and parameter shapes are RepDistiller's, so its state dicts load as they are. Where we
deviate: blocks return only their output (RepDistiller's last block of a stage also returns the
pre-activation), no operation works in place (forward hooks keep what each module returned), and the pooled
pre-logit feature is its own module, ``pool``.

Tap points at 32x32 input: ``relu`` (the stem: w0 x32x32), ``layer1`` (w1 x32x32), ``layer2`` (w2 x16x16),
``layer3`` (w3 x8x8), ``pool`` (w3).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from kd_lightning.models.layers import GlobalPool, init_like_repdistiller


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the identity or ``downsample(x)``, then ReLU."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.out_relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        residual = x if self.downsample is None else self.downsample(x)
        return self.out_relu(out + residual)


class CifarResNet(nn.Module):
    """ResNet-``depth`` with stage widths ``widths`` = (stem, stage 1, stage 2, stage 3)."""

    def __init__(self, depth: int, widths: Sequence[int] = (16, 16, 32, 64), num_classes: int = 100):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 (8, 14, 20, 32, 44, 56, 110, ...), got {depth}")
        if len(widths) != 4:
            raise ValueError(f"widths must give the stem's and three stages' channels, got {list(widths)}")
        n = (depth - 2) // 6
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        self.layer1 = self._make_layer(widths[1], n, 1)
        self.layer2 = self._make_layer(widths[2], n, 2)
        self.layer3 = self._make_layer(widths[3], n, 2)
        self.pool = GlobalPool()
        self.fc = nn.Linear(widths[3], num_classes)
        init_like_repdistiller(self, zero_linear_bias=False)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.pool(x))


NARROW, WIDE = (16, 16, 32, 64), (32, 64, 128, 256)


def resnet20(num_classes: int = 100) -> CifarResNet:
    return CifarResNet(20, NARROW, num_classes)


def resnet32(num_classes: int = 100) -> CifarResNet:
    return CifarResNet(32, NARROW, num_classes)


def resnet44(num_classes: int = 100) -> CifarResNet:
    return CifarResNet(44, NARROW, num_classes)


def resnet56(num_classes: int = 100) -> CifarResNet:
    return CifarResNet(56, NARROW, num_classes)


def resnet110(num_classes: int = 100) -> CifarResNet:
    return CifarResNet(110, NARROW, num_classes)


def resnet8x4(num_classes: int = 100) -> CifarResNet:
    return CifarResNet(8, WIDE, num_classes)


def resnet32x4(num_classes: int = 100) -> CifarResNet:
    return CifarResNet(32, WIDE, num_classes)
