"""Supervised training of one network: the teacher, or the CE-only student baseline."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from kd_lightning.distill import CrossEntropy, FeatureTaps, LossTerm, Outputs
from kd_lightning.errors import ConfigError, NonFiniteLossError


class SupervisedModule(L.LightningModule):
    """Trains ``net`` on a weighted sum of loss terms that need no teacher (by default plain cross-entropy).

    Per-step loss values are summed on the device and written to the loggers every
    ``trainer.log_every_n_steps`` steps (one GPU sync per window) as ``train/loss`` and ``train/<term>``;
    a non-finite value stops training with :class:`NonFiniteLossError`.
    """

    has_teacher = False

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        terms: Mapping[str, LossTerm] | None = None,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        num_classes: int = 10,
    ):
        super().__init__()
        terms = dict(terms) if terms else {"ce": CrossEntropy()}
        needing_teacher = [name for name, term in terms.items() if term.uses_teacher]
        if needing_teacher and not self.has_teacher:
            raise ConfigError(
                f"loss terms {needing_teacher} need a teacher, which {type(self).__name__} has none of: "
                f"use a distillation scheme (e.g. distill=kd teacher=<name>)"
            )
        self.net = net
        self.terms = nn.ModuleDict(terms)
        self.student_taps = FeatureTaps(net, [p for t in terms.values() for p in t.student_layers], "student")
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.train_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.test_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.metric_names = ["train/loss", *(f"train/{name}" for name in terms)]
        self._window_sum: torch.Tensor | None = None
        self._window_steps = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def teacher_outputs(self, x: torch.Tensor, index: torch.Tensor) -> Outputs | None:
        return None

    def losses(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(weighted total, [total, term_1, ...] detached, student logits)`` for one batch."""
        student = self.student_taps(x)
        teacher = self.teacher_outputs(x, index)
        values = [term(student, teacher, y) for term in self.terms.values()]
        total = sum(term.weight * value for term, value in zip(self.terms.values(), values))
        return total, torch.stack([total, *values]).detach().float(), student.logits

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y, index = batch
        loss, values, logits = self.losses(x, y, index)
        self.train_acc.update(logits.detach(), y)
        self._accumulate(values, last=batch_idx + 1 >= self.trainer.num_training_batches)
        return loss

    def _accumulate(self, values: torch.Tensor, last: bool) -> None:
        self._window_sum = values if self._window_sum is None else self._window_sum + values
        self._window_steps += 1
        if last or self._window_steps >= self.trainer.log_every_n_steps:
            means = (self._window_sum / self._window_steps).tolist()
            self._window_sum, self._window_steps = None, 0
            metrics = dict(zip(self.metric_names, means))
            bad = {name: value for name, value in metrics.items() if not math.isfinite(value)}
            if bad:
                raise NonFiniteLossError(
                    f"{bad} at step {self.global_step} (epoch {self.current_epoch}): training stopped; checkpoints "
                    f"written so far are intact. Lower optimizer.lr or the weight of the term that diverged."
                )
            for logger in self.loggers:
                logger.log_metrics(metrics, step=self.global_step)

    def on_train_epoch_end(self) -> None:
        self.log("train/acc", self.train_acc.compute())
        self.train_acc.reset()

    def _evaluate(self, batch, loss_metric: MeanMetric, acc_metric: MulticlassAccuracy, stage: str) -> None:
        x, y, _ = batch
        logits = self.net(x)
        loss_metric.update(F.cross_entropy(logits, y))
        acc_metric.update(logits, y)
        self.log(f"{stage}/loss", loss_metric)
        self.log(f"{stage}/acc", acc_metric, prog_bar=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, self.val_loss, self.val_acc, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, self.test_loss, self.test_acc, "test")

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=[p for p in self.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer=optimizer)}
