"""Data-free distillation (DAFL): a generator makes the images, the frozen teacher labels them, the student learns.

Chen et al., "Data-Free Learning of Student Networks" (ICCV 2019). Each training step draws noise ``z``,
generates images ``G(z)`` and

1. updates the generator on DAFL's loss of the teacher's outputs for them (one-hot + α·activation +
   β·information entropy, :class:`~kd_lightning.distill.data_free.DAFLGeneratorLoss`), so the teacher
   sees images it answers confidently, with strong features, and evenly over the classes (optionally
   plus a prior that the images have the statistics the input normalisation assumes);
2. updates the student ``student_steps`` times on the weighted loss terms (e.g. soft-target KD) between
   its outputs and the teacher's for the same, detached images; labels given to the terms are the
   teacher's arg-max (pseudo-)labels.

No real training image is read: pair the module with
:class:`~kd_lightning.data.data_free.DataFreeDataModule`, whose training batches are step-count
placeholders (this module ignores them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import torch
from torch import nn

from kd_lightning.distill import LossTerm, Outputs
from kd_lightning.distill.data_free import DAFLGeneratorLoss
from kd_lightning.errors import ConfigError
from kd_lightning.distill.teachers import Teacher
from kd_lightning.modules.supervised import SupervisedModule, WithTeacher
from kd_lightning.modules.meter import accuracy_counts
from kd_lightning.fast import stored_signature

log = logging.getLogger(__name__)


class DataFreeDistillationModule(WithTeacher, SupervisedModule):
    """DAFL: trains ``generator`` against the frozen ``teacher`` and ``net`` (the student) on generated images.

    The teacher is a :class:`~kd_lightning.distill.teachers.Teacher` (frozen, eval mode, not a registered
    submodule; never cached: every image is new); the generator is a registered submodule (it is in the checkpoint) with its own optimizer
    (``generator_optimizer``, a partial like ``optimizer``); ``scheduler`` applies to the student's.
    Optimization is manual: per step one generator update, then ``student_steps`` student updates on the
    same images (cheap: the student is small, generating is not). ``activation_layer`` is the teacher's
    module whose output is DAFL's pre-classifier feature (``layers`` for :class:`~kd_lightning.models.MLP`).

    Logged: ``train/loss`` and ``train/<term>`` (student), ``train/gen_loss`` and ``train/gen_<part>``
    (generator), and per epoch ``train/acc`` — the student's agreement with the teacher's pseudo-labels on
    generated images. ``val/*`` and ``test/*`` are on real images, as for every scheme.
    """

    def __init__(
        self,
        net: nn.Module,
        teacher: Teacher | nn.Module | None,
        terms: Mapping[str, LossTerm],
        generator: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        generator_optimizer: Callable[..., torch.optim.Optimizer],
        generator_loss: DAFLGeneratorLoss | None = None,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        num_classes: int = 10,
        batch_size: int = 128,
        activation_layer: str = "layers",
        student_steps: int = 1,
    ):
        if batch_size < 2:
            raise ConfigError(f"distill.batch_size must be >= 2 (the generator has BatchNorm), got {batch_size}")
        if student_steps < 1:
            raise ConfigError(f"distill.student_steps must be >= 1, got {student_steps}")
        if not hasattr(generator, "latent_dim"):
            raise ConfigError(f"the generator {type(generator).__name__} must have a `latent_dim` attribute")
        indexed = [name for name, term in terms.items() if term.uses_index]
        if indexed:
            raise ConfigError(f"terms {indexed} need training-sample indices, which data-free distillation has none of")
        if teacher is None:
            raise ConfigError("data-free distillation needs a teacher: choose one with teacher=<name> (see conf/teacher/)")
        super().__init__(net, optimizer, terms, scheduler, num_classes, teacher=teacher)
        # the teacher's taps: the terms' layers plus DAFL's pre-classifier features
        self.teacher.attach([activation_layer, *(p for t in terms.values() for p in t.teacher_layers)], terms.values())
        self.automatic_optimization = False
        self.generator = generator
        self.generator_loss = generator_loss if generator_loss is not None else DAFLGeneratorLoss()
        self.generator_optimizer_factory = generator_optimizer
        self.batch_size, self.activation_layer, self.student_steps = batch_size, activation_layer, student_steps

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if self.trainer.training:
            return batch  # step-count placeholders: the step generates its images
        return super().on_after_batch_transfer(batch, dataloader_idx)

    def networks(self) -> list[nn.Module]:
        return [*super().networks(), self.generator]

    def generate(self, n: int) -> torch.Tensor:
        """``n`` images from the generator (in whatever mode it is)."""
        z = torch.randn(n, self.generator.latent_dim, device=self.device)
        return self.generator(z)

    @stored_signature
    def training_step(self, batch, batch_idx: int) -> None:
        student_optimizer, generator_optimizer = self.optimizers()

        # 1. the generator, on the teacher's response to its images (the teacher's weights stay frozen)
        images = self.generate(self.batch_size)
        teacher = self.teacher(images)  # gradients reach the images, not the teacher's frozen weights
        generator_total, generator_parts = self.generator_loss(
            teacher.logits, teacher.features[self.activation_layer], images
        )
        generator_optimizer.zero_grad(set_to_none=True)
        self.manual_backward(generator_total)
        generator_optimizer.step()

        # 2. the student, on the same images, detached: their teacher outputs are its targets
        images = images.detach()
        teacher = Outputs(teacher.logits.detach(), {k: v.detach() for k, v in teacher.features.items()})
        pseudo_labels = teacher.logits.argmax(1)
        for _ in range(self.student_steps):
            student = self.student_taps(images)
            total, values = self.weighted_terms(student, teacher, pseudo_labels, index=None)
            student_optimizer.zero_grad(set_to_none=True)
            self.manual_backward(total)
            student_optimizer.step()

        generator_values = {f"gen_{name}": part.detach() for name, part in zip(self.generator_loss.names, generator_parts)}
        self.record({"loss": total.detach(), **values, "gen_loss": generator_total.detach(), **generator_values,
                     **accuracy_counts(student.logits, pseudo_labels)})
        self.end_step(last=batch_idx + 1 >= self.trainer.num_training_batches)

    def configure_optimizers(self):
        generator_params = {id(p) for p in self.generator.parameters()}
        student_params = [p for p in self.parameters() if p.requires_grad and id(p) not in generator_params]
        student_optimizer = self.optimizer_factory(params=student_params)
        generator_optimizer = self.generator_optimizer_factory(params=list(self.generator.parameters()))
        if self.scheduler_factory is None:
            return [student_optimizer, generator_optimizer]
        return [student_optimizer, generator_optimizer], [self.scheduler_factory(optimizer=student_optimizer)]
