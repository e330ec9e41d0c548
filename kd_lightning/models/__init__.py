"""Plain networks (teachers and students). They know nothing of distillation."""

from kd_lightning.models.mlp import MLP
from kd_lightning.models.registry import build, names
from kd_lightning.models.tutorial import DeepNN, LightNN
from kd_lightning.models.wrn import WideResNet

__all__ = ["DeepNN", "LightNN", "MLP", "WideResNet", "build", "names"]
