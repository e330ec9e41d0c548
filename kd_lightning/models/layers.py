"""Small parameter-free pieces shared by the CIFAR networks (RepDistiller's architectures)."""

from __future__ import annotations

from torch import nn


class GlobalPool(nn.Sequential):
    """Global average pooling to ``(N, C)``: the pooled pre-logit feature, one module so a hook can tap it.

    RepDistiller pools with a fixed kernel (``AvgPool2d(8)`` for ResNets/WRNs, 4 for ShuffleNets, 2 for
    MobileNetV2); at 32x32 input that covers the whole last map, so it is the same as this adaptive pooling,
    which also accepts other input sizes.
    """

    def __init__(self):
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))


def init_like_repdistiller(net: nn.Module, linear_std: float | None = None, zero_linear_bias: bool = True) -> None:
    """He-normal convolutions (fan-out, ReLU gain), BatchNorm weight 1 / bias 0: RepDistiller's initialisation.

    Its ``normal_(0, sqrt(2 / (k·k·out_channels)))`` is ``kaiming_normal_(mode="fan_out")``. ``linear_std``:
    Linear weights drawn from N(0, std²) (VGG, MobileNetV2 use 0.01); None keeps PyTorch's default.
    ``zero_linear_bias``: Linear biases 0 (WRN, VGG, MobileNetV2; its ResNets keep PyTorch's default).
    """
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if linear_std is not None:
                nn.init.normal_(m.weight, 0.0, linear_std)
            if zero_linear_bias:
                nn.init.zeros_(m.bias)
