"""A datamodule for data-free distillation: training reads no images, evaluation reads the test split."""

from __future__ import annotations

import torch

from kd_lightning.data.datamodule import ClassificationDataModule
from kd_lightning.data.sources import Arrays
from kd_lightning.errors import ConfigError


class GeneratorSteps:
    """The training "loader" of a data-free run: ``steps`` placeholder batches that only count steps.

    Each batch is ``(empty images, empty labels, tensor([step]))``: the scheme makes its own images.
    """

    def __init__(self, steps: int):
        self.steps = steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        for step in range(self.steps):
            yield torch.empty(0), torch.empty(0, dtype=torch.long), torch.tensor([step])


class DataFreeDataModule(ClassificationDataModule):
    """:class:`ClassificationDataModule` whose training split does not exist.

    Training batches are :class:`GeneratorSteps` placeholders (``steps_per_epoch`` per epoch); of the
    source only the official *test* part is kept: the training images (and the validation images, which
    are held-out training images) are dropped as soon as the source has loaded, before any loader exists,
    so nothing of them can reach the model. Validation therefore runs on the test split (for monitoring
    and checkpoint naming; the reported ``test/acc`` is of the final weights, not a checkpoint chosen on
    it). Pass ``trainer.limit_val_batches=0`` to skip validation altogether.
    """

    def __init__(self, *args, steps_per_epoch: int = 100, **kwargs):
        super().__init__(*args, **kwargs)
        if steps_per_epoch < 1:
            raise ConfigError(f"data.steps_per_epoch must be >= 1, got {steps_per_epoch}")
        self.steps_per_epoch = steps_per_epoch

    def _split(self, arrays: Arrays) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        labels = arrays.y_test
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ConfigError(
                f"{self.name} test labels span {int(labels.min())}..{int(labels.max())} "
                f"but data.num_classes={self.num_classes}"
            )
        return {"test": (arrays.x_test, arrays.y_test)}

    @property
    def augments(self) -> bool:
        return False

    @property
    def num_train_samples(self) -> int:
        return 0

    def train_dataloader(self):
        return GeneratorSteps(self.steps_per_epoch)

    def val_dataloader(self):
        return self._loader("test")
