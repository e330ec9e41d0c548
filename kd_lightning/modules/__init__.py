"""One LightningModule per training scheme."""

from kd_lightning.modules.distillation import DistillationModule
from kd_lightning.modules.speed import CapturedStep, SpeedOptions
from kd_lightning.modules.supervised import SupervisedModule

__all__ = ["CapturedStep", "SpeedOptions", "DistillationModule", "SupervisedModule"]
