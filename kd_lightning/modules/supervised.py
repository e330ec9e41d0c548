"""Supervised training of one network: the teacher, or the CE-only student baseline."""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Collection, Mapping

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from kd_lightning.distill import CrossEntropy, FeatureTaps, LossTerm, Outputs
from kd_lightning.distill.teachers import Teacher, as_teacher
from kd_lightning.errors import ConfigError
from kd_lightning.fast import CheapHookLabels, stored_signature
from kd_lightning.fast.lightning import ddp_finds_unused_parameters, ddp_skip_buffers
from kd_lightning.modules.meter import StepMeter, accuracy_counts
from kd_lightning.modules.stages import Stage, Stages

log = logging.getLogger(__name__)


class SupervisedModule(CheapHookLabels, L.LightningModule):
    """Trains ``net`` on a weighted sum of loss terms that need no teacher (by default plain cross-entropy).

    Each step returns its total and named values (``loss``, each term, ``#correct``, ``#count``); a
    :class:`~kd_lightning.modules.meter.StepMeter` sums them on the device (:meth:`record`, inside the captured
    graph on the fast path) and writes them to the loggers every ``trainer.log_every_n_steps`` steps (one sync per
    window) as ``train/loss`` and ``train/<term>``, and per epoch as ``train/acc``. A non-finite loss stops
    training with :class:`NonFiniteLossError` before the next checkpoint.

    ``teacher`` (optional: a :class:`~kd_lightning.distill.teachers.Teacher`, or a network, which becomes a frozen
    one) gives the terms that read a teacher its outputs; ``stages`` (``distill.stages``) say which terms each epoch
    optimises (:mod:`kd_lightning.modules.stages`). The whole step reads top to bottom in :meth:`training_step`,
    :meth:`losses` and :meth:`weighted_terms`.
    """

    loss_explosion_factor = float("inf")  # set by kd_lightning.runs.LossExplosionGuard (conf/callbacks)
    prepare_in_step = False  # set by the fast path, whose captured step prepares training batches itself

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        terms: Mapping[str, LossTerm] | None = None,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler | dict] | None = None,
        num_classes: int = 10,
        teacher: Teacher | nn.Module | None = None,
        stages: Mapping[str, Mapping] | None = None,
    ):
        super().__init__()
        terms = dict(terms) if terms else {"ce": CrossEntropy()}
        self._teacher = as_teacher(teacher)  # schemes that distil expose it as `teacher` (WithTeacher)
        needing_teacher = [name for name, term in terms.items() if term.uses_teacher]
        if needing_teacher and self._teacher is None:
            raise ConfigError(
                f"loss terms {needing_teacher} need a teacher, which {type(self).__name__} has none of: "
                f"use a distillation scheme (e.g. distill=kd teacher=<name>)"
            )
        self.net = net
        self.terms = nn.ModuleDict(terms)
        # buffers a term keeps identical on every rank itself (CRD's memory banks): out of DDP's buffer broadcast
        ddp_skip_buffers(self, [f"terms.{name}.{buffer}" for name, term in terms.items()
                                for buffer in getattr(term, "ddp_synced_buffers", ())])
        self.stages = Stages(stages, terms)
        self.student_taps = FeatureTaps(net, [p for t in terms.values() for p in t.student_layers], "student")
        if self._teacher is not None:
            self._teacher.attach([p for t in terms.values() for p in t.teacher_layers], terms.values())
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.val_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.test_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.meter = StepMeter()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def networks(self) -> list[nn.Module]:
        """The networks this scheme runs (for memory format and compilation)."""
        return [self.net, *(self._teacher.networks() if self._teacher is not None else [])]

    def on_fit_start(self) -> None:
        if self._teacher is not None:
            self._teacher.to(device=self.device, dtype=next(self.net.parameters()).dtype)
        self.meter.reset()
        self._allocate_per_sample_state()
        self._trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        if self.trainer.world_size > 1 and self.stages.leave_parameters_unused and not ddp_finds_unused_parameters(
            self.trainer.strategy
        ):
            raise ConfigError(
                f"the stages {[s.name for s in self.stages.stages]} leave parameters without gradients (those only "
                f"a term outside the stage reaches), which DDP refuses: use trainer.strategy=ddp_find_unused_parameters_true"
            )

    @property
    def stage(self) -> Stage:
        """The stage of the current epoch (:mod:`kd_lightning.modules.stages`)."""
        return self.stages.at(self.current_epoch)

    def on_train_epoch_start(self) -> None:
        stage = self.stage
        if any(s.train is not None for s in self.stages.stages):
            for name, parameter in self.named_parameters():
                parameter.requires_grad_(name in self._trainable and stage.trains(name))
        if self.stages.starting(self.current_epoch) is None or len(self.stages) == 1:
            return
        if stage.reset_optimizer and stage.start > 0:
            for optimizer in self.trainer.optimizers:
                optimizer.state.clear()  # fresh moments for this stage (re-created lazily by the next step)
        log.info("Stage %r (from epoch %d): optimising %s%s.", stage.name, stage.start,
                 list(stage.terms) if stage.terms is not None else "every term",
                 "; optimizer state reset" if stage.reset_optimizer and stage.start > 0 else "")

    def _allocate_per_sample_state(self) -> None:
        terms = [term for term in self.terms.values() if term.uses_index and hasattr(term, "allocate")]
        if not terms:
            return
        num_samples = getattr(self.trainer.datamodule, "num_train_samples", None)
        if num_samples is None:
            raise ConfigError(
                f"{[type(t).__name__ for t in terms]} keep state per training sample: fit with a datamodule "
                f"that has num_train_samples (kd_lightning.data.ClassificationDataModule)"
            )
        splits = getattr(self.trainer.datamodule, "splits", None) or {}
        labels = splits["train"][1] if "train" in splits else None  # for terms that sample by class (CRD)
        for term in terms:
            if "labels" in inspect.signature(term.allocate).parameters:
                term.allocate(num_samples, self.device, labels=labels)
            else:
                term.allocate(num_samples, self.device)

    def step_key(self) -> str:
        """Which captured graph fits the current state (a scheme whose step changes what it computes overrides
        it: the fast path captures one graph per key)."""
        key = self._teacher.phase if self._teacher is not None else "train"
        return key if len(self.stages) == 1 else f"{key}, stage {self.stage.name}"

    def losses(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """``(weighted total, {"loss", <term>..., "#correct", "#count"} detached)`` for one batch."""
        student = self.student_taps(x)
        teacher = self._teacher.outputs(x, index) if self._teacher is not None else None
        total, values = self.weighted_terms(student, teacher, y, index, active=self.stage.terms)
        return total, {"loss": total.detach(), **values, **accuracy_counts(student.logits, y)}

    def weighted_terms(
        self, student: Outputs, teacher: Outputs | None, target: torch.Tensor, index: torch.Tensor | None,
        active: Collection[str] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(Σ weight · value over the active terms, {name: every term's unweighted value, detached})``.

        Terms outside ``active`` (default: every term is active) are computed under ``no_grad``, for the log
        only; a term with ``uses_index`` also gets the batch's sample indices.
        """
        total, values = None, {}
        for name, term in self.terms.items():
            is_active = active is None or name in active
            with torch.set_grad_enabled(is_active and torch.is_grad_enabled()):
                kwargs = {"index": index} if term.uses_index else {}
                value = term(student, teacher, target, **kwargs)
            if is_active:
                total = term.weight * value if total is None else total + term.weight * value
            values[name] = value.detach()
        return total, values

    @stored_signature
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y, index = batch
        loss, values = self.losses(x, y, index)
        self.record(values)
        self.end_step(last=batch_idx + 1 >= self.trainer.num_training_batches)
        return loss

    def record(self, values: Mapping[str, torch.Tensor]) -> None:
        """Adds a step's named values to the meter, in place (it may run inside a captured graph)."""
        self.meter.add(values)

    def end_step(self, last: bool) -> None:
        """Ends a step; every ``log_every_n_steps`` steps, and at an epoch's end, writes the window's means."""
        metrics = self.meter.end_step(last, self.trainer.log_every_n_steps)
        if metrics is None:
            return
        where = f"step {self.global_step} (epoch {self.current_epoch})"
        self.meter.check(metrics, self.loss_explosion_factor, where)
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self.global_step)

    def on_train_epoch_end(self) -> None:
        sums = self.meter.epoch_sums()
        if sums:
            self.log_accuracies(sums)

    def log_accuracies(self, sums: dict[str, torch.Tensor]) -> None:
        """``train/acc`` (and ``train/acc<suffix>`` for each ``#correct<suffix>``) from the epoch's counts."""
        for name, correct in sums.items():
            if name.startswith("#correct"):
                self.log("train/acc" + name.removeprefix("#correct"), correct / sums["#count"])

    def prepare_images(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        """A batch on the training device → the network's input: the datamodule's public ``transform`` (normalise;
        augment when ``train``), then the cast Lightning's precision (bf16-true) gives batches, which it could not
        while they were uint8."""
        transform = getattr(self.trainer.datamodule, "transform", None)
        images = transform(images, train=train) if transform is not None else images
        return self.trainer.precision_plugin.convert_input(images)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Where batches are prepared is this module's decision: here, or inside the captured step (fast path)."""
        images, labels, index = batch
        training = self.trainer.training
        if training and self.prepare_in_step:
            return batch
        return self.prepare_images(images, train=training), labels, index

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
        kwargs = {"optimizer": optimizer}
        if _wants(self.scheduler_factory, "total_steps"):  # OneCycleLR, warm-up + cosine: the fit's length
            steps = self.trainer.estimated_stepping_batches  # infinite when only trainer.max_time ends the fit
            kwargs["total_steps"] = int(steps) if math.isfinite(steps) else None
        if _wants(self.scheduler_factory, "total_epochs"):
            kwargs["total_epochs"] = self.trainer.max_epochs
        scheduler = self.scheduler_factory(**kwargs)  # a scheduler, or Lightning's dict with its interval
        return {"optimizer": optimizer, "lr_scheduler": scheduler}


class WithTeacher:
    """Mixin for a scheme that distils: its :class:`~kd_lightning.distill.teachers.Teacher` as ``teacher`` (a
    supervised run, and a student loaded for export, have no such attribute)."""

    @property
    def teacher(self) -> Teacher:
        return self._teacher

    @teacher.setter
    def teacher(self, value: Teacher) -> None:
        self._teacher = value


def _wants(factory: Callable, name: str) -> bool:
    """Whether ``factory`` takes argument ``name`` and nothing has set it (no default but None)."""
    parameter = inspect.signature(factory).parameters.get(name)
    return parameter is not None and parameter.default in (inspect.Parameter.empty, None)


def lightning_scheduler(
    factory: Callable[..., torch.optim.lr_scheduler.LRScheduler], optimizer: torch.optim.Optimizer,
    interval: str = "epoch", frequency: int = 1, total_steps: int | None = None, total_epochs: int | None = None,
) -> dict:
    """Lightning's scheduler config: ``factory(optimizer)`` stepped every ``frequency`` epochs or steps.

    A factory that takes ``total_steps`` and has it unset gets the fit's length in its own unit: optimizer
    steps when ``interval`` is step, epochs when it is epoch; a fit without one (``None``, or -1 epochs: only a
    time limit ends it) is refused for such a factory. Others (MultiStepLR) run without a length.
    """
    if interval not in ("epoch", "step"):
        raise ConfigError(f"scheduler.interval must be 'epoch' or 'step', got {interval!r}")
    kwargs = {"optimizer": optimizer}
    if _wants(factory, "total_steps"):
        length = total_steps if interval == "step" else total_epochs
        if length is None or length < 1:
            raise ConfigError(
                "the learning-rate schedule needs the fit's length in steps, but trainer.max_epochs=-1 and "
                "trainer.max_steps=-1 set none (a time limit, trainer.max_time, is no length): set "
                "trainer.max_epochs or trainer.max_steps" if interval == "step" else
                f"the learning-rate schedule (scheduler.interval=epoch) needs the fit's length in epochs, but "
                f"trainer.max_epochs={length} sets none: set trainer.max_epochs, or scheduler.interval=step")
        kwargs["total_steps"] = length
    return {"scheduler": factory(**kwargs), "interval": interval, "frequency": frequency}
