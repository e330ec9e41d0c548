"""Offline distillation from several frozen teachers: weighted-average soft targets, per-teacher feature terms."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import torch
from torch import nn

from kd_lightning.distill import LossTerm
from kd_lightning.distill.ensemble import TeacherEnsemble
from kd_lightning.errors import ConfigError
from kd_lightning.modules.distillation import DistillationModule

log = logging.getLogger(__name__)


def terms_temperature(terms: Mapping[str, LossTerm]) -> float:
    """The one ``temperature`` of the terms that read the teacher (the ensemble averages at it)."""
    found = {float(t.temperature) for t in terms.values() if t.uses_teacher and hasattr(t, "temperature")}
    if len(found) != 1:
        raise ConfigError(
            f"the teachers' soft targets are averaged at one temperature; the terms have "
            f"{sorted(found) or 'none'}: set distill.temperature"
        )
    return found.pop()


class MultiTeacherDistillationModule(DistillationModule):
    """Distils from ``teachers`` (name → frozen network, each loaded from its own checkpoint).

    The teachers are wrapped in one :class:`~kd_lightning.distill.ensemble.TeacherEnsemble`, which plays
    the teacher of :class:`DistillationModule`: it stays unregistered (outside the optimizer and the
    student's checkpoint), frozen and in eval mode, moves to the student's device at fit start, and works
    with the fast path's teacher cache (``speed.teacher_cache``). The terms see the ensemble's :class:`Outputs`:

    * ``logits`` are ``T · log Σ_i w_i softmax(z_i / T)`` with ``w`` = ``teacher_weights`` normalised
      (None: equal), so a :class:`SoftTargetKD` at temperature ``T`` distils from the weighted average
      of the teachers' softened probabilities. ``temperature`` defaults to the terms' (it must be one);
      with one teacher, or identical teachers, the loss is plain KD's (up to float rounding).
    * features are each teacher's, at module path ``<teacher name>.<layer>``: a per-teacher feature term
      is an ordinary term with e.g. ``teacher_layer: second.features`` (logged as ``train/<term name>``).
    """

    def __init__(
        self,
        net: nn.Module,
        teachers: Mapping[str, nn.Module] | None,
        terms: Mapping[str, LossTerm],
        optimizer: Callable[..., torch.optim.Optimizer],
        teacher_weights: Mapping[str, float] | None = None,
        temperature: float | None = None,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        num_classes: int = 10,
    ):
        if not teachers:
            raise ConfigError(
                "multi-teacher distillation needs teachers: choose them with teacher=<name> (see conf/teacher/)"
            )
        if not terms:
            raise ConfigError("multi-teacher distillation needs at least one loss term in distill.terms")
        if temperature is None:
            temperature = terms_temperature(terms)
        else:
            other = {
                name: term.temperature
                for name, term in terms.items()
                if term.uses_teacher and getattr(term, "temperature", temperature) != temperature
            }
            if other:
                log.warning("the teachers' probabilities are averaged at temperature %s, but terms %s use others: they "
                            "do not see the average of the teachers' softened probabilities", temperature, other)
        ensemble = TeacherEnsemble(dict(teachers), teacher_weights, temperature)
        super().__init__(net, ensemble, terms, optimizer, scheduler, num_classes)

    @property
    def teachers(self) -> dict[str, nn.Module]:
        return {name: getattr(self.teacher, name) for name in self.teacher.names}
