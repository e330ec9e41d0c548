"""Offline distillation: a frozen, pre-trained teacher guides the student through a weighted sum of loss terms."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from kd_lightning.distill import LossTerm
from kd_lightning.distill.teachers import CachedTeacher, Teacher
from kd_lightning.errors import ConfigError
from kd_lightning.modules.supervised import SupervisedModule, WithTeacher

log = logging.getLogger(__name__)

MOVED = {  # keys of the schemes that became config (FitNetsModule, MultiTeacherDistillationModule) -> their new place
    "hint_epochs": "distill.stages.hint.epochs",
    "hint_term": "distill.stages.hint.terms (the terms stage 1 optimises)",
    "teachers": "distill.teacher.teachers",
    "teacher_weights": "distill.teacher.weights",
    "temperature": "distill.teacher.temperature",
}


class DistillationModule(WithTeacher, SupervisedModule):
    """Trains ``net`` (the student) and the terms' adapters; the ``teacher`` only gives targets.

    ``teacher`` is any :class:`~kd_lightning.distill.teachers.Teacher` (a plain network is a frozen single
    teacher; several are an :class:`~kd_lightning.distill.teachers.EnsembleTeacher`): this module only calls
    ``teacher.outputs(x, index)``. With ``teacher_cache`` (``speed.teacher_cache``) the teacher is wrapped in a
    :class:`~kd_lightning.distill.teachers.CachedTeacher` when fitting starts, unless the batches are augmented
    (under DDP the ranks fill one cache together, gathered: complete after the first epoch, as on one device).
    """

    def __init__(
        self,
        net: nn.Module,
        teacher: Teacher | nn.Module | None,
        terms: Mapping[str, LossTerm],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        num_classes: int = 10,
        stages: Mapping[str, Mapping] | None = None,
        **moved,
    ):
        if moved:
            raise ConfigError("; ".join(
                f"distill.{key} moved to {MOVED.get(key, 'nowhere (not an argument of offline distillation)')}"
                for key in moved))
        if teacher is None:
            raise ConfigError("offline distillation needs a teacher: choose one with teacher=<name> (see conf/teacher/)")
        if not terms:
            raise ConfigError("offline distillation needs at least one loss term in distill.terms")
        super().__init__(net, optimizer, terms, scheduler, num_classes, teacher=teacher, stages=stages)
        self.teacher_cache = False  # set by the fast path (speed.teacher_cache) before fitting starts
        self._restored_cache: tuple[dict, Path] | None = None  # a resumed checkpoint's cache, used at fit start

    def on_fit_start(self) -> None:
        self.teacher = self.teacher.live  # a cache of an earlier fit does not carry over
        super().on_fit_start()
        if self.teacher_cache:
            reason = self._cache_unavailable_reason()
            if reason:
                log.warning("speed.teacher_cache is off: %s. The teacher runs live.", reason)
            else:
                self.teacher = CachedTeacher(self.teacher, self.trainer.datamodule.num_train_samples, self.device)
                if self._restored_cache is not None:
                    self._restore_cache(*self._restored_cache)
        self._restored_cache = None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        callback = self.trainer.checkpoint_callback
        if isinstance(self.teacher, CachedTeacher) and callback is not None and callback.dirpath is not None:
            checkpoint["teacher_cache"] = self.teacher.cache.checkpoint_entry(
                Path(callback.dirpath), write=self.trainer.is_global_zero)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        # Lightning restores the checkpoint before on_fit_start, which builds the cache: keep it until then
        entry = checkpoint.get("teacher_cache")
        self._restored_cache = (entry, Path(self.trainer.ckpt_path).parent) if entry and self.trainer.ckpt_path else None

    def _restore_cache(self, entry: dict, folder: Path) -> None:
        try:
            self.teacher.cache.restore(entry, folder)
        except (FileNotFoundError, ValueError) as error:
            log.warning("The resumed checkpoint's teacher cache cannot be used (%s): the teacher runs live until the "
                        "cache is full again, so this run's teacher targets may differ from an uninterrupted run's "
                        "in their last bits.", error)

    def _cache_unavailable_reason(self) -> str | None:
        if getattr(self.trainer.datamodule, "augments", False):
            return ("training batches are augmented, so a sample's input differs every epoch and cached teacher "
                    "outputs would belong to another view")
        return None

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self.teacher.on_train_epoch_end()
