"""FitNets as published (Romero et al., ICLR 2015): hint training first, then knowledge distillation."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import torch
from torch import nn

from kd_lightning.distill import FeatureTerm, LossTerm
from kd_lightning.errors import ConfigError
from kd_lightning.modules.distillation import DistillationModule
from kd_lightning.modules.meter import accuracy_counts

log = logging.getLogger(__name__)


class FitNetsModule(DistillationModule):
    """Two-stage FitNets training of ``net`` from a frozen teacher.

    * Stage 1 (the first ``hint_epochs`` epochs): the loss is the hint term alone (``terms[hint_term]``,
      e.g. :class:`HintMSE` between ``regressor(student guided layer)`` and the teacher's hint layer), so
      only the student's parameters up to the guided layer and the regressor are trained (the paper's
      ``W_guided`` and ``W_r``, §2.2, Algorithm 1).
    * Stage 2 (the remaining epochs): every other term (e.g. CE + soft-target KD), training the whole
      student from its stage-1 initialisation; the regressor is no longer used.

    How parameters are held still, with one optimizer built once: a term outside the current stage is
    computed under ``torch.no_grad()`` (its value is still logged in the values vector), so parameters that
    only it reaches get no gradient at all; ``zero_grad`` sets gradients to None and every torch optimizer
    skips a parameter whose ``.grad`` is None: no momentum, no weight decay, no Adam step count, unlike a
    zero gradient or a zero loss weight. When stage 2 starts (also when resuming exactly there) the optimizer
    state is cleared, so stage 2 starts with fresh moments as a separately trained stage would, not with
    Adam moments of the hint objective; the learning-rate schedule runs over the whole run. No host syncs:
    the stage is a Python value of the epoch counter. Under DDP, parameters a stage does not reach need
    ``trainer.strategy=ddp_find_unused_parameters_true``.
    """

    def __init__(
        self,
        net: nn.Module,
        teacher: nn.Module | None,
        terms: Mapping[str, LossTerm],
        optimizer: Callable[..., torch.optim.Optimizer],
        hint_epochs: int,
        hint_term: str = "hint",
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        num_classes: int = 10,
    ):
        terms = dict(terms or {})
        if hint_term not in terms or not isinstance(terms[hint_term], FeatureTerm):
            raise ConfigError(
                f"FitNets trains stage 1 on the hint term {hint_term!r}, which must be one of distill.terms "
                f"({sorted(terms)}) comparing a student layer with a teacher layer (e.g. HintMSE)"
            )
        if len(terms) < 2:
            raise ConfigError("FitNets' stage 2 needs terms besides the hint term (e.g. ce and kd)")
        if int(hint_epochs) != hint_epochs or hint_epochs < 0:
            raise ConfigError(f"hint_epochs must be a whole number of epochs >= 0, got {hint_epochs!r}")
        super().__init__(net, teacher, terms, optimizer, scheduler, num_classes)
        self.hint_epochs, self.hint_term = int(hint_epochs), hint_term

    @property
    def stage(self) -> int:
        return 1 if self.current_epoch < self.hint_epochs else 2

    def step_key(self) -> str:
        return f"{super().step_key()}, stage {self.stage}"

    def losses(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, dict]:
        student = self.student_taps(x)
        teacher = self.teacher.outputs(x, index)
        hint_stage = self.stage == 1
        active = [name for name in self.terms if (name == self.hint_term) == hint_stage]
        total, values = self.weighted_terms(student, teacher, y, index, active)  # the others: logged only
        return total, {"loss": total.detach(), **values, **accuracy_counts(student.logits, y)}

    def on_fit_start(self) -> None:
        super().on_fit_start()
        strategy = self.trainer.strategy
        ddp_kwargs = getattr(strategy, "_ddp_kwargs", None)
        if self.trainer.world_size > 1 and ddp_kwargs is not None and not ddp_kwargs.get("find_unused_parameters"):
            raise ConfigError(
                "FitNets' stages leave parameters without gradients (stage 1: the layers after the guided layer; "
                "stage 2: the regressor), which DDP refuses: use trainer.strategy=ddp_find_unused_parameters_true"
            )

    def on_train_epoch_start(self) -> None:
        if self.hint_epochs and self.current_epoch == self.hint_epochs:
            for optimizer in self.trainer.optimizers:
                optimizer.state.clear()  # fresh moments for stage 2 (re-created lazily by the next step)
            log.info("FitNets stage 2 (epoch %d): training the whole student on %s; optimizer state reset.",
                     self.current_epoch, [n for n in self.terms if n != self.hint_term])
        elif self.current_epoch == 0 and self.hint_epochs:
            log.info("FitNets stage 1 (epochs 0-%d): hint training on %r.", self.hint_epochs - 1, self.hint_term)
