"""Plain networks (teachers and students). They know nothing of distillation."""

from kd_lightning.models.hub import TeacherAdapter, timm_model, torchvision_model
from kd_lightning.models.mlp import MLP
from kd_lightning.models.tutorial import DeepNN, LightNN

__all__ = ["DeepNN", "LightNN", "MLP", "TeacherAdapter", "timm_model", "torchvision_model"]
