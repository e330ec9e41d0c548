"""The CIFAR zoo by name: ``build("wrn_16_2", num_classes=100)``; names as in RepDistiller's ``model_dict``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from kd_lightning.errors import ConfigError
from kd_lightning.models import wrn

MODELS: dict[str, Callable[..., nn.Module]] = {
    "wrn_16_1": wrn.wrn_16_1,
    "wrn_16_2": wrn.wrn_16_2,
    "wrn_40_1": wrn.wrn_40_1,
    "wrn_40_2": wrn.wrn_40_2,
}


def names() -> list[str]:
    """Every name :func:`build` accepts."""
    return sorted(MODELS)


def build(name: str, num_classes: int = 100) -> nn.Module:
    """A freshly initialised zoo network ``name`` with ``num_classes`` outputs."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; accepted: {', '.join(names())}")
    return MODELS[name](num_classes=num_classes)
