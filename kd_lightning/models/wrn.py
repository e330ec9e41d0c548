"""Wide residual networks for CIFAR (Zagoruyko & Komodakis, BMVC 2016), as in RepDistiller's ``models/wrn.py``.

WRN-d-k: a 3x3 conv to 16 channels, three groups (``block1``-``block3``) of (d - 4) / 6 pre-activation basic
blocks with 16k, 32k, 64k channels (strides 1, 2, 2), then BN-ReLU, global average pooling and a linear layer.
A block whose width or stride changes takes its shortcut through a 1x1 conv from the pre-activated input.
No dropout (RepDistiller's default ``dropRate=0``).

Module names and parameter shapes are RepDistiller's, so its state dicts load as they are (e.g. its trained
teachers' ``model`` entry). Where we deviate: no ReLU works in place (a forward hook on any module keeps the
value the module returned), and the pooled pre-logit feature is its own module, ``pool``.

Tap points at 32x32 input (RepDistiller's ``is_feat`` list): ``conv1`` (16x32x32), ``block1`` (16k x32x32),
``block2`` (32k x16x16), ``block3`` (64k x8x8, before the last BN-ReLU), ``pool`` (64k).
"""

from __future__ import annotations

import torch
from torch import nn

from kd_lightning.models.layers import GlobalPool, init_like_repdistiller


class BasicBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus the identity, or plus a 1x1 conv of the pre-activated input."""

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.equal_in_out = in_planes == out_planes  # RepDistiller's test: a change of stride alone is not handled
        self.convShortcut = None if self.equal_in_out else nn.Conv2d(in_planes, out_planes, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(pre))))
        return out + (x if self.convShortcut is None else self.convShortcut(pre))


class NetworkBlock(nn.Module):
    """``n`` basic blocks; the first changes width and stride. Kept as a wrapper for RepDistiller's key names."""

    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.layer = nn.Sequential(
            *(BasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1) for i in range(n))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor``; ``depth`` must be 6n + 4."""

    def __init__(self, depth: int, widen_factor: int = 1, num_classes: int = 100):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4 (16, 22, 28, 40, ...), got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], 1)
        self.block2 = NetworkBlock(n, widths[1], widths[2], 2)
        self.block3 = NetworkBlock(n, widths[2], widths[3], 2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU()
        self.pool = GlobalPool()
        self.fc = nn.Linear(widths[3], num_classes)
        init_like_repdistiller(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.fc(self.pool(self.relu(self.bn1(x))))


def wrn_16_1(num_classes: int = 100) -> WideResNet:
    return WideResNet(16, 1, num_classes)


def wrn_16_2(num_classes: int = 100) -> WideResNet:
    return WideResNet(16, 2, num_classes)


def wrn_40_1(num_classes: int = 100) -> WideResNet:
    return WideResNet(40, 1, num_classes)


def wrn_40_2(num_classes: int = 100) -> WideResNet:
    return WideResNet(40, 2, num_classes)
