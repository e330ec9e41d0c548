"""Teachers as objects: one interface, ``outputs(x, index) -> Outputs``, for every kind of frozen teacher.

* :class:`FrozenTeacher`: one pre-trained network, frozen, in eval mode.
* :class:`EnsembleTeacher`: several, their softened probabilities averaged with weights
  (:class:`~kd_lightning.distill.ensemble.TeacherEnsemble`); a term reads one member's layer at
  ``<member name>.<layer>``.
* :class:`CachedTeacher`: wraps either; stores the outputs per training-sample index during the first epoch and
  looks them up afterwards (``speed.teacher_cache``, :class:`~kd_lightning.distill.cache.TeacherCache`); under DDP
  one cache gathered from every rank.

A teacher is deliberately not an ``nn.Module``: assigned to a LightningModule it is outside the optimizer, the
student's checkpoint and Lightning's ``train()``/``eval()`` switching. The scheme tells it which layers its terms
read (:meth:`Teacher.attach`) and moves it to the student's device and dtype when fitting starts (:meth:`Teacher.to`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from kd_lightning.distill.cache import TeacherCache
from kd_lightning.distill.distributed import gather_samples, world_size
from kd_lightning.distill.ensemble import TeacherEnsemble, normalised_weights
from kd_lightning.distill.taps import FeatureTaps, Outputs
from kd_lightning.distill.terms import LossTerm
from kd_lightning.errors import ConfigError

log = logging.getLogger(__name__)


class Teacher:
    """The interface a scheme sees: ``outputs(x, index)`` (no gradients), ``__call__(x)`` (gradients reach the
    input, e.g. DAFL's generator; the weights stay frozen), ``attach``, ``to``, ``networks``, ``phase``."""

    @property
    def live(self) -> Teacher:
        """The teacher without any cache around it."""
        return self

    @property
    def phase(self) -> str:
        """What ``outputs`` computes now (part of the fast path's ``step_key``: a new phase, a new graph)."""
        return "live teacher"

    def attach(self, layers: Iterable[str], terms: Iterable[LossTerm] = ()) -> None:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> Outputs:
        raise NotImplementedError

    @torch.no_grad()
    def outputs(self, x: torch.Tensor, index: torch.Tensor | None) -> Outputs:
        """The teacher's logits and the attached layers' features for a batch (``index``: its sample indices)."""
        return self(x)

    def networks(self) -> list[nn.Module]:
        raise NotImplementedError

    def to(self, device: torch.device, dtype: torch.dtype) -> None:
        for net in self.networks():
            net.to(device=device, dtype=dtype)

    def on_train_epoch_end(self) -> None:
        pass


class FrozenTeacher(Teacher):
    """One frozen network (``requires_grad=False``, eval mode)."""

    def __init__(self, net: nn.Module):
        self.net = net.eval().requires_grad_(False)
        self.taps = FeatureTaps(self.net, (), "teacher")

    def attach(self, layers: Iterable[str], terms: Iterable[LossTerm] = ()) -> None:
        self.taps.remove()
        self.taps = FeatureTaps(self.net, layers, "teacher")

    def __call__(self, x: torch.Tensor) -> Outputs:
        return self.taps(x)

    def networks(self) -> list[nn.Module]:
        return [self.net]


class EnsembleTeacher(FrozenTeacher):
    """Several frozen networks (``teachers``: name → network) as one teacher (see
    :class:`~kd_lightning.distill.ensemble.TeacherEnsemble`): logits ``T · log Σ_i w_i softmax(z_i / T)`` with
    ``w`` = ``weights`` normalised (None: equal), so a soft-target term at ``T`` distils from the weighted average
    of the members' softened probabilities; features at ``<name>.<layer>``. ``temperature`` None: the one
    temperature of the terms that read the teacher (known when a scheme attaches its terms)."""

    def __init__(self, teachers: Mapping[str, nn.Module] | None, weights: Mapping[str, float] | None = None,
                 temperature: float | None = None):
        if not teachers:
            raise ConfigError(
                "multi-teacher distillation needs teachers: choose them with teacher=<name> (see conf/teacher/)"
            )
        self.members = {str(name): net for name, net in teachers.items()}
        normalised_weights(list(self.members), weights)  # errors now, not when a scheme attaches
        self._weights, self._temperature = weights, temperature
        super().__init__(TeacherEnsemble(self.members, weights, temperature or 1.0))

    @property
    def temperature(self) -> float:
        return self.net.temperature

    @property
    def weights(self) -> dict[str, float]:
        return self.net.weights

    def attach(self, layers: Iterable[str], terms: Iterable[LossTerm] = ()) -> None:
        terms = list(terms)
        temperature = self._temperature
        if temperature is None:
            temperature = terms_temperature(terms)
        else:
            other = {type(t).__name__: t.temperature for t in terms
                     if t.uses_teacher and getattr(t, "temperature", temperature) != temperature}
            if other:
                log.warning("the teachers' probabilities are averaged at temperature %s, but terms %s use others: they "
                            "do not see the average of the teachers' softened probabilities", temperature, other)
        self.net = TeacherEnsemble(self.members, self._weights, temperature).eval().requires_grad_(False)
        super().attach(layers, terms)


def terms_temperature(terms: Iterable[LossTerm]) -> float:
    """The one ``temperature`` of the terms that read the teacher (the ensemble averages at it)."""
    found = {float(t.temperature) for t in terms if t.uses_teacher and hasattr(t, "temperature")}
    if len(found) != 1:
        raise ConfigError(
            f"the teachers' soft targets are averaged at one temperature; the terms have "
            f"{sorted(found) or 'none'}: set distill.teacher.temperature"
        )
    return found.pop()


class CachedTeacher(Teacher):
    """``inner``'s outputs, stored per training-sample index while the cache fills, then looked up: the
    teacher no longer runs. Valid only while each sample's input is the same every epoch (no augmentation).

    Under DDP every rank stores what every rank's teacher computed (the batch's indices and outputs gathered,
    :func:`~kd_lightning.distill.distributed.gather_batches`), so the caches are identical, complete after one
    epoch whatever shard each rank gets next, and the lookups are local; the outputs are cast to the cache's
    dtype before the gather, which halves the traffic and changes nothing (:meth:`TeacherCache.store` casts
    them anyway). On one process the gather is nothing at all.
    """

    def __init__(self, inner: Teacher, num_samples: int, device: torch.device):
        self.inner = inner.live
        self.cache = TeacherCache(num_samples, device)

    @property
    def live(self) -> Teacher:
        return self.inner

    @property
    def phase(self) -> str:
        return "cached teacher" if self.cache.complete else "filling cache"

    def attach(self, layers: Iterable[str], terms: Iterable[LossTerm] = ()) -> None:
        self.inner.attach(layers, terms)

    def __call__(self, x: torch.Tensor) -> Outputs:
        return self.inner(x)

    @torch.no_grad()
    def outputs(self, x: torch.Tensor, index: torch.Tensor | None) -> Outputs:
        if self.cache.complete:
            return self.cache.lookup(index)
        outputs = self.inner.outputs(x, index)
        if world_size() > 1:
            paths, dtype = list(outputs.features), self.cache.dtype
            values = [outputs.logits.to(dtype), *(outputs.features[p].to(dtype) for p in paths)]
            everyone, (logits, *features) = gather_samples(index, values, self.cache.num_samples)
            self.cache.store(everyone, Outputs(logits, dict(zip(paths, features))))
        else:
            self.cache.store(index, outputs)
        return outputs

    def networks(self) -> list[nn.Module]:
        return self.inner.networks()

    def on_train_epoch_end(self) -> None:
        if not self.cache.complete and self.cache.refresh_complete():
            log.info("Teacher cache complete (%d samples): the teacher no longer runs.", self.cache.num_samples)


def as_teacher(teacher: Teacher | nn.Module | None) -> Teacher | None:
    """A scheme's ``teacher`` argument as a :class:`Teacher`: a plain network is a :class:`FrozenTeacher`."""
    if teacher is None or isinstance(teacher, Teacher):
        return teacher
    if isinstance(teacher, nn.Module):
        return FrozenTeacher(teacher)
    raise ConfigError(
        f"a teacher must be a network or a kd_lightning.distill.teachers.Teacher, got {type(teacher).__name__} "
        f"(several teachers: wrap them in kd_lightning.distill.EnsembleTeacher, as conf/distill/multi_teacher.yaml)"
    )
