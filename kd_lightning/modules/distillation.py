"""Offline distillation: a frozen, pre-trained teacher guides the student through a weighted sum of loss terms."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from kd_lightning.distill import FeatureTaps, LossTerm, Outputs
from kd_lightning.errors import ConfigError
from kd_lightning.modules.supervised import SupervisedModule


class DistillationModule(SupervisedModule):
    """Trains ``net`` (the student) and the terms' adapters; the teacher only gives targets.

    The teacher is deliberately not a registered submodule: it is outside the optimizer, the student's
    checkpoint and Lightning's ``train()``/``eval()`` switching (it stays in eval mode), and is moved to
    the student's device and dtype when fitting starts.
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
    ):
        if teacher is None:
            raise ConfigError("offline distillation needs a teacher: choose one with teacher=<name> (see conf/teacher/)")
        if not terms:
            raise ConfigError("offline distillation needs at least one loss term in distill.terms")
        super().__init__(net, optimizer, terms, scheduler, num_classes)
        self.__dict__["teacher"] = teacher.eval().requires_grad_(False)
        self.teacher_taps = FeatureTaps(teacher, [p for t in terms.values() for p in t.teacher_layers], "teacher")

    def on_fit_start(self) -> None:
        dtype = next(self.net.parameters()).dtype
        self.teacher.to(device=self.device, dtype=dtype)

    @torch.no_grad()
    def teacher_outputs(self, x: torch.Tensor, index: torch.Tensor) -> Outputs:
        return self.teacher_taps(x)
