"""Offline distillation: a frozen, pre-trained teacher guides the student through a weighted sum of loss terms."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from kd_lightning.distill import FeatureTaps, LossTerm, Outputs, TeacherCache
from kd_lightning.errors import ConfigError
from kd_lightning.modules.supervised import SupervisedModule

log = logging.getLogger(__name__)


class DistillationModule(SupervisedModule):
    """Trains ``net`` (the student) and the terms' adapters; the teacher only gives targets.

    The teacher is deliberately not a registered submodule: it is outside the optimizer, the student's
    checkpoint and Lightning's ``train()``/``eval()`` switching (it stays in eval mode), and is moved to
    the student's device and dtype when fitting starts. With ``teacher_cache`` (``speed.teacher_cache``) its outputs come
    from a :class:`TeacherCache` once the first epoch has filled it.
    """

    has_teacher = True

    def __init__(
        self,
        net: nn.Module,
        teacher: nn.Module | None,
        terms: Mapping[str, LossTerm],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        num_classes: int = 10,
        extra_teacher_layers: Sequence[str] = (),
    ):
        if teacher is None:
            raise ConfigError("offline distillation needs a teacher: choose one with teacher=<name> (see conf/teacher/)")
        if not terms:
            raise ConfigError("offline distillation needs at least one loss term in distill.terms")
        super().__init__(net, optimizer, terms, scheduler, num_classes)
        self.__dict__["teacher"] = teacher.eval().requires_grad_(False)
        layers = [*extra_teacher_layers, *(p for t in terms.values() for p in t.teacher_layers)]
        self.teacher_taps = FeatureTaps(teacher, layers, "teacher")
        self.cache: TeacherCache | None = None
        self.teacher_cache = False  # set by the fast path (speed.teacher_cache) before fitting starts
        self._restored_cache: tuple[dict, Path] | None = None  # a resumed checkpoint's cache, used at fit start

    def networks(self) -> list[nn.Module]:
        return [self.net, self.teacher]

    def on_fit_start(self) -> None:
        self.teacher.to(device=self.device, dtype=next(self.net.parameters()).dtype)
        super().on_fit_start()
        self.cache = None
        if self.teacher_cache:
            reason = self._cache_unavailable_reason()
            if reason:
                log.warning("speed.teacher_cache is off: %s. The teacher runs live.", reason)
            else:
                self.cache = TeacherCache(self.trainer.datamodule.num_train_samples, self.device)
                if self._restored_cache is not None:
                    self._restore_cache(*self._restored_cache)
        self._restored_cache = None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        callback = self.trainer.checkpoint_callback
        if self.cache is not None and callback is not None and callback.dirpath is not None:
            checkpoint["teacher_cache"] = self.cache.checkpoint_entry(Path(callback.dirpath))

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        # Lightning restores the checkpoint before on_fit_start, which builds the cache: keep it until then
        entry = checkpoint.get("teacher_cache")
        self._restored_cache = (entry, Path(self.trainer.ckpt_path).parent) if entry and self.trainer.ckpt_path else None

    def _restore_cache(self, entry: dict, folder: Path) -> None:
        try:
            self.cache.restore(entry, folder)
        except (FileNotFoundError, ValueError) as error:
            log.warning("The resumed checkpoint's teacher cache cannot be used (%s): the teacher runs live until the "
                        "cache is full again, so this run's teacher targets may differ from an uninterrupted run's "
                        "in their last bits.", error)

    def _cache_unavailable_reason(self) -> str | None:
        if getattr(self.trainer.datamodule, "augments", False):
            return ("training batches are augmented, so a sample's input differs every epoch and cached teacher "
                    "outputs would belong to another view")
        if self.trainer.world_size > 1:
            return "under DDP each rank sees another random shard every epoch: its cache would take many epochs to fill"
        return None

    @torch.no_grad()
    def teacher_outputs(self, x: torch.Tensor, index: torch.Tensor) -> Outputs:
        if self.cache is not None and self.cache.complete:
            return self.cache.lookup(index)
        outputs = self.teacher_taps(x)
        if self.cache is not None:
            self.cache.store(index, outputs)
        return outputs

    def step_key(self) -> str:
        if self.cache is None:
            return "live teacher"
        return "cached teacher" if self.cache.complete else "filling cache"

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        if self.cache is not None and not self.cache.complete and self.cache.refresh_complete():
            log.info("Teacher cache complete (%d samples): the teacher no longer runs.", self.cache.num_samples)
