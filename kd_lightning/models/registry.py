"""The CIFAR zoo by name: ``build("wrn_16_2", num_classes=100)``; names as in RepDistiller's ``model_dict``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from kd_lightning.errors import ConfigError
from kd_lightning.models import cifar_resnet, mobilenetv2, shufflenet, vgg, wrn

MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet20": cifar_resnet.resnet20,
    "resnet32": cifar_resnet.resnet32,
    "resnet44": cifar_resnet.resnet44,
    "resnet56": cifar_resnet.resnet56,
    "resnet110": cifar_resnet.resnet110,
    "resnet8x4": cifar_resnet.resnet8x4,
    "resnet32x4": cifar_resnet.resnet32x4,
    "wrn_16_1": wrn.wrn_16_1,
    "wrn_16_2": wrn.wrn_16_2,
    "wrn_40_1": wrn.wrn_40_1,
    "wrn_40_2": wrn.wrn_40_2,
    "vgg8": vgg.vgg8,
    "vgg13": vgg.vgg13,
    "mobilenetv2": mobilenetv2.mobilenetv2,
    "shufflenetv1": shufflenet.shufflenetv1,
    "shufflenetv2": shufflenet.shufflenetv2,
}


def names() -> list[str]:
    """Every name :func:`build` accepts."""
    return sorted(MODELS)


def build(name: str, num_classes: int = 100) -> nn.Module:
    """A freshly initialised zoo network ``name`` with ``num_classes`` outputs."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; accepted: {', '.join(names())}")
    return MODELS[name](num_classes=num_classes)
