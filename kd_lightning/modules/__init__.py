"""One LightningModule per training scheme."""

from kd_lightning.modules.data_free import DataFreeDistillationModule
from kd_lightning.modules.distillation import DistillationModule
from kd_lightning.modules.mutual import MutualLearningModule
from kd_lightning.modules.self_distillation import SelfDistillationModule
from kd_lightning.modules.supervised import SupervisedModule

__all__ = [
    "DataFreeDistillationModule",
    "DistillationModule",
    "SupervisedModule",
    "MutualLearningModule",
    "SelfDistillationModule",
]
