"""Offline distillation whose terms may need the batch's sample indices (CRD's memory bank)."""

from __future__ import annotations

import torch

from kd_lightning.errors import ConfigError
from kd_lightning.modules.distillation import DistillationModule


class CRDDistillationModule(DistillationModule):
    """:class:`DistillationModule` that hands each batch's sample indices to the terms that ask for them.

    A term with ``uses_index = True`` (e.g. :class:`~kd_lightning.distill.crd.CRD`) is called as
    ``term(student, teacher, target, index=index)``; every other term as usual. ``index`` is each sample's
    position in the datamodule's training split, so when fitting starts such a term's ``allocate(num_samples,
    device)`` sizes its per-sample state from ``trainer.datamodule.num_train_samples``, on the training
    device (a state restored from a checkpoint is kept).
    """

    def indexed_terms(self) -> list:
        return [term for term in self.terms.values() if getattr(term, "uses_index", False)]

    def on_fit_start(self) -> None:
        super().on_fit_start()
        terms = [term for term in self.indexed_terms() if hasattr(term, "allocate")]
        if terms:
            num_samples = getattr(self.trainer.datamodule, "num_train_samples", None)
            if num_samples is None:
                raise ConfigError(
                    f"{[type(t).__name__ for t in terms]} keep state per training sample: fit with a datamodule "
                    f"that has num_train_samples (kd_lightning.data.ClassificationDataModule)"
                )
            for term in terms:
                term.allocate(num_samples, self.device)

    def losses(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        student = self.student_taps(x)
        teacher = self.teacher_outputs(x, index)
        values = [
            term(student, teacher, y, index=index) if getattr(term, "uses_index", False) else term(student, teacher, y)
            for term in self.terms.values()
        ]
        total = sum(term.weight * value for term, value in zip(self.terms.values(), values))
        return total, self.step_values([total, *values], student.logits, y)
