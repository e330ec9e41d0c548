"""MobileNetV2 (Sandler et al., CVPR 2018) in RepDistiller's CIFAR version (``models/mobilenetv2.py``,
from "Knowledge Distillation via Route Constrained Optimization"): its ``MobileNetV2`` student is
``mobile_half``, expansion 6 and width multiplier 0.5.

A stride-2 3x3 conv-BN-ReLU stem (``conv1``: 32·w channels, 32x32 → 16x16), seven stages (``blocks.0``-
``blocks.6``) of inverted residual blocks (t, c, n, s) = (1, 16, 1, 1), (T, 24, 2, 1), (T, 32, 3, 2),
(T, 64, 4, 2), (T, 96, 3, 1), (T, 160, 3, 2), (T, 320, 1, 1) with widths c·w, a 1x1 conv-BN-ReLU to 1280
channels (``conv2``), global average pooling and a linear layer (``classifier.0``). Unlike the ImageNet
network, the first stage block expands by 1 with a 1x1 conv too (RepDistiller's block always has the
expansion conv), and there is no dropout.

Module names and parameter shapes are RepDistiller's, so its state dicts load as they are. Where we
deviate: no ReLU works in place, and the pooled feature is its own module, ``pool`` (RepDistiller's
``AvgPool2d(2, ceil_mode=True)`` on the 2x2 map is the same at 32x32 input).

Tap points at 32x32 input (RepDistiller's ``is_feat`` list, w = 0.5): ``conv1`` (16x16x16), ``blocks.1``
(12x16x16), ``blocks.2`` (16x8x8), ``blocks.4`` (48x4x4), ``blocks.6`` (160x2x2), ``pool`` (1280).
"""

from __future__ import annotations

import torch
from torch import nn

from kd_lightning.models.layers import GlobalPool, init_like_repdistiller

# (expansion, channels, blocks, stride) per stage; "T" is the network's expansion ratio
STAGES = [(1, 16, 1, 1), ("T", 24, 2, 1), ("T", 32, 3, 2), ("T", 64, 4, 2), ("T", 96, 3, 1), ("T", 160, 3, 2),
          ("T", 320, 1, 1)]


def conv_bn_relu(inp: int, oup: int, kernel_size: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, oup, kernel_size, stride, kernel_size // 2, bias=False), nn.BatchNorm2d(oup), nn.ReLU()
    )


class InvertedResidual(nn.Module):
    """1x1 expansion conv-BN-ReLU, 3x3 depthwise conv-BN-ReLU, 1x1 linear projection conv-BN; plus the input
    where stride is 1 and the width is kept."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(),
            nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """RepDistiller's CIFAR MobileNetV2 with expansion ``expansion`` (T) and width multiplier ``width_mult``."""

    def __init__(self, expansion: int = 6, width_mult: float = 0.5, num_classes: int = 100):
        super().__init__()
        channels = int(32 * width_mult)
        self.conv1 = conv_bn_relu(3, channels, 3, 2)
        self.blocks = nn.ModuleList()
        for t, c, n, s in STAGES:
            out = int(c * width_mult)
            ratio = expansion if t == "T" else t
            stage = []
            for i in range(n):
                stage.append(InvertedResidual(channels, out, s if i == 0 else 1, ratio))
                channels = out
            self.blocks.append(nn.Sequential(*stage))
        last = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = conv_bn_relu(channels, last, 1, 1)
        self.pool = GlobalPool()
        self.classifier = nn.Sequential(nn.Linear(last, num_classes))
        init_like_repdistiller(self, linear_std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for stage in self.blocks:
            x = stage(x)
        return self.classifier(self.pool(self.conv2(x)))


def mobilenetv2(num_classes: int = 100) -> MobileNetV2:
    """RepDistiller's ``MobileNetV2`` student (``mobile_half``): T = 6, width 0.5."""
    return MobileNetV2(6, 0.5, num_classes)
