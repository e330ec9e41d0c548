"""The learning rate as ``train/lr``, beside the other training curves."""

from __future__ import annotations

import lightning.pytorch as L

from kd_lightning.fast.lightning import logging_step, logs_this_step, no_unused_step_hooks


@no_unused_step_hooks
class LearningRate(L.Callback):
    """Logs the optimizer's learning rate as ``train/lr`` (more param groups or optimizers: ``train/lr_<i>``).

    Lightning's ``LearningRateMonitor`` names it after the optimizer class (``lr-Adam``), outside the ``train/``
    group in TensorBoard, and has no option to rename it; this does the same logging under our metric name.
    ``logging_interval``: ``epoch`` (at each epoch's start) or ``step`` (every ``trainer.log_every_n_steps``).
    """

    def __init__(self, logging_interval: str = "epoch", name: str = "train/lr"):
        if logging_interval not in ("epoch", "step"):
            raise ValueError(f"logging_interval must be 'epoch' or 'step', got {logging_interval!r}")
        self.logging_interval, self.name = logging_interval, name

    def _rates(self, trainer: L.Trainer) -> dict[str, float]:
        groups = [g for optimizer in trainer.optimizers for g in optimizer.param_groups]
        if len(groups) == 1:
            return {self.name: float(groups[0]["lr"])}
        return {f"{self.name}_{i}": float(g["lr"]) for i, g in enumerate(groups)}

    def _log(self, trainer: L.Trainer) -> None:
        step = logging_step(trainer)  # the step Lightning's own logging uses
        for logger in trainer.loggers:
            logger.log_metrics(self._rates(trainer), step=step)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.logging_interval == "epoch" and trainer.loggers:
            self._log(trainer)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self.logging_interval == "step" and trainer.loggers and logs_this_step(trainer):
            self._log(trainer)
