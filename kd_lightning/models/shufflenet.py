"""ShuffleNetV1 (Zhang et al., CVPR 2018) and ShuffleNetV2 (Ma et al., ECCV 2018) in RepDistiller's CIFAR
versions (``models/ShuffleNetv1.py``, ``models/ShuffleNetv2.py``, after kuangliu/pytorch-cifar).

Both start with a 1x1 conv-BN-ReLU to 24 channels at full resolution (no stride, no max pooling) and have
three stages (``layer1``-``layer3``) that each halve the resolution once: 32 → 16 → 8 → 4.

- ``ShuffleV1``: groups 3, stage widths 240, 480, 960 with 4, 8, 4 bottleneck units; a unit is grouped 1x1
  conv-BN-ReLU → channel shuffle → 3x3 depthwise conv-BN (stride 2 in a stage's first unit) → grouped 1x1
  conv-BN, added to the input, or in a first unit concatenated with the 3x3/2 average-pooled input; then
  ReLU. The bottleneck is a quarter of the output width; the very first 1x1 conv (24 input channels) is
  not grouped. Global average pooling, a linear layer.
- ``ShuffleV2`` (size 1x): stage widths 116, 232, 464 with 3, 7, 3 basic units after a down-sampling unit;
  a 1x1 conv-BN-ReLU to 1024 channels (``conv2``, ``bn2``, ``head_relu``), global average pooling, a linear
  layer. Units split the channels in halves, transform one (1x1 conv-BN-ReLU, 3x3 depthwise conv-BN,
  1x1 conv-BN-ReLU), concatenate and shuffle with 2 groups.

Channel shuffle is torchvision's ``channel_shuffle`` (the same reshape-transpose as RepDistiller's). Module
names and parameter shapes are RepDistiller's, so its state dicts load as they are. Where we deviate:
units return only their output (RepDistiller's last unit of a stage also returns the pre-activation), the
ReLUs after the stem and head and the pooled feature are modules (``relu``, ``head_relu``, ``pool``), and
RepDistiller's fixed 4x4 average pooling is global pooling (the same at 32x32 input).

Tap points at 32x32 input: ``relu`` (24x32x32), ``layer1`` (V1: 240x16x16, V2: 116x16x16), ``layer2``
(480 / 232 x8x8), ``layer3`` (960 / 464 x4x4), ``pool`` (960 / 1024).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.shufflenetv2 import channel_shuffle

from kd_lightning.models.layers import GlobalPool


class ShuffleV1Unit(nn.Module):
    """ShuffleNetV1 bottleneck unit (RepDistiller's ``Bottleneck``); ``stride`` 2 concatenates the shortcut."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int):
        super().__init__()
        self.stride = stride
        mid = out_planes // 4
        self.first_groups = 1 if in_planes == 24 else groups  # the stem's 24 channels are not grouped
        self.conv1 = nn.Conv2d(in_planes, mid, 1, groups=self.first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_planes, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential(nn.AvgPool2d(3, stride=2, padding=1)) if stride == 2 else nn.Sequential()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = channel_shuffle(F.relu(self.bn1(self.conv1(x))), self.first_groups)
        out = self.bn3(self.conv3(F.relu(self.bn2(self.conv2(out)))))
        res = self.shortcut(x)
        return F.relu(torch.cat([out, res], 1) if self.stride == 2 else out + res)


class ShuffleNetV1(nn.Module):
    """RepDistiller's ``ShuffleV1``: ``out_planes`` per stage, ``num_blocks`` units per stage, ``groups``."""

    def __init__(self, out_planes: Sequence[int] = (240, 480, 960), num_blocks: Sequence[int] = (4, 8, 4),
                 groups: int = 3, num_classes: int = 100):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.relu = nn.ReLU()
        self.in_planes = 24
        self.layer1 = self._make_layer(out_planes[0], num_blocks[0], groups)
        self.layer2 = self._make_layer(out_planes[1], num_blocks[1], groups)
        self.layer3 = self._make_layer(out_planes[2], num_blocks[2], groups)
        self.pool = GlobalPool()
        self.linear = nn.Linear(out_planes[2], num_classes)

    def _make_layer(self, out_planes: int, num_blocks: int, groups: int) -> nn.Sequential:
        units = []
        for i in range(num_blocks):
            # a first unit concatenates its pooled input: its branch makes only the missing channels
            units.append(ShuffleV1Unit(self.in_planes, out_planes - (self.in_planes if i == 0 else 0),
                                       2 if i == 0 else 1, groups))
            self.in_planes = out_planes
        return nn.Sequential(*units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(self.pool(x))


class ShuffleV2Unit(nn.Module):
    """ShuffleNetV2 basic unit (RepDistiller's ``BasicBlock``): half the channels pass, half are transformed."""

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.conv1 = nn.Conv2d(half, half, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, 3, padding=1, groups=half, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, half, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[1] // 2
        kept, branch = x[:, :half], x[:, half:]
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(branch)))))
        return channel_shuffle(torch.cat([kept, F.relu(self.bn3(self.conv3(out)))], 1), 2)


class ShuffleV2Down(nn.Module):
    """ShuffleNetV2 down-sampling unit (RepDistiller's ``DownBlock``): two stride-2 branches, concatenated."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        mid = out_channels // 2
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, stride=2, padding=1, groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = self.bn4(self.conv4(F.relu(self.bn3(self.conv3(x)))))
        right = F.relu(self.bn5(self.conv5(right)))
        return channel_shuffle(torch.cat([left, right], 1), 2)


class ShuffleNetV2(nn.Module):
    """RepDistiller's ``ShuffleV2`` (net size 1x): ``out_channels`` = 3 stage widths + the head's width."""

    def __init__(self, out_channels: Sequence[int] = (116, 232, 464, 1024), num_blocks: Sequence[int] = (3, 7, 3),
                 num_classes: int = 100):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.relu = nn.ReLU()
        self.in_channels = 24
        self.layer1 = self._make_layer(out_channels[0], num_blocks[0])
        self.layer2 = self._make_layer(out_channels[1], num_blocks[1])
        self.layer3 = self._make_layer(out_channels[2], num_blocks[2])
        self.conv2 = nn.Conv2d(out_channels[2], out_channels[3], 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels[3])
        self.head_relu = nn.ReLU()
        self.pool = GlobalPool()
        self.linear = nn.Linear(out_channels[3], num_classes)

    def _make_layer(self, out_channels: int, num_blocks: int) -> nn.Sequential:
        units = [ShuffleV2Down(self.in_channels, out_channels), *(ShuffleV2Unit(out_channels) for _ in range(num_blocks))]
        self.in_channels = out_channels
        return nn.Sequential(*units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(self.pool(self.head_relu(self.bn2(self.conv2(x)))))


def shufflenetv1(num_classes: int = 100) -> ShuffleNetV1:
    return ShuffleNetV1(num_classes=num_classes)


def shufflenetv2(num_classes: int = 100) -> ShuffleNetV2:
    return ShuffleNetV2(num_classes=num_classes)
