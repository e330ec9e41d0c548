"""Training speed as a logged metric."""

from __future__ import annotations

import statistics
import time

import lightning.pytorch as L
import torch

from kd_lightning.fast.lightning import no_unused_step_hooks


def median_after_first(per_epoch: list[float]) -> float | None:
    """The median of per-epoch values after the first (warm-up, graph capture, cache filling), or of the one."""
    values = per_epoch[1:] or per_epoch
    return statistics.median(values) if values else None


@no_unused_step_hooks
class EpochThroughput(L.Callback):
    """Logs each epoch's training time and rate as ``time/epoch_s`` and ``time/images_per_s``.

    The clock runs from the epoch's first batch to its last (validation excluded) and costs one device
    sync at each end, not one per step. :attr:`steady_images_per_s` summarises a fit's rates.
    """

    def __init__(self):
        self.start = 0.0
        self.images = 0
        self.seconds: float | None = None
        self.rates: list[float] = []
        self.fit_start: float | None = None
        self.earlier_seconds = 0.0  # the interrupted fits this run resumed from (restored from the checkpoint)

    @property
    def steady_images_per_s(self) -> float | None:
        """This fit's training rate without start-up costs (:func:`median_after_first`)."""
        return median_after_first(self.rates)

    @property
    def train_seconds(self) -> float:
        """Wall time of this run's fits so far: this one since it started and the ones it resumed from."""
        return self.earlier_seconds + (time.perf_counter() - self.fit_start if self.fit_start is not None else 0.0)

    def state_dict(self) -> dict:  # in every checkpoint: a resumed run's time counts the work before the interruption
        return {"train_seconds": self.train_seconds}

    def load_state_dict(self, state_dict: dict) -> None:
        self.earlier_seconds = float(state_dict.get("train_seconds", 0.0))

    def on_fit_start(self, trainer, pl_module) -> None:
        self.rates = []
        self.fit_start = time.perf_counter()

    @staticmethod
    def _now(device: torch.device) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.images, self.seconds = 0, None
        self.start = self._now(pl_module.device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.images += len(batch[1])
        if batch_idx + 1 >= trainer.num_training_batches:
            self.seconds = self._now(pl_module.device) - self.start

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.seconds:
            self.rates.append(self.images / self.seconds)
            pl_module.log_dict({"time/epoch_s": self.seconds, "time/images_per_s": self.rates[-1]})
