"""One LightningModule per training scheme."""

from kd_lightning.modules.distillation import DistillationModule
from kd_lightning.modules.supervised import SupervisedModule

__all__ = ["DistillationModule", "SupervisedModule"]
