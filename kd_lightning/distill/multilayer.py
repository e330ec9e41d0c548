"""One loss term summed over several (student layer, teacher layer) pairs."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from kd_lightning.distill.taps import Outputs
from kd_lightning.distill.terms import FeatureTerm, LossTerm
from kd_lightning.errors import ConfigError


class LayerSum(LossTerm):
    """``Σ_i term_i(student, teacher)``, ``term_i`` comparing ``student_layers[i]`` with ``teacher_layers[i]``.

    E.g. attention transfer at the end of every stage (Zagoruyko & Komodakis 2017; RepDistiller sums AT over its
    ``feat[1:-1]``, then multiplies by β = 1000, which goes in ``weight``). ``term`` makes one single-layer
    :class:`FeatureTerm` from ``student_layer`` and ``teacher_layer`` (a Hydra ``_partial_``); each keeps its
    own adapters.
    """

    def __init__(
        self,
        term: Callable[..., FeatureTerm],
        student_layers: Sequence[str],
        teacher_layers: Sequence[str],
        weight: float = 1.0,
    ):
        super().__init__(weight)
        student_layers, teacher_layers = list(student_layers), list(teacher_layers)
        if not student_layers or len(student_layers) != len(teacher_layers):
            raise ConfigError(
                f"LayerSum pairs student_layers {student_layers} with teacher_layers {teacher_layers} one to one: "
                f"give two non-empty lists of the same length"
            )
        self.parts = nn.ModuleList(
            term(student_layer=s, teacher_layer=t) for s, t in zip(student_layers, teacher_layers)
        )

    @property
    def student_layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p for part in self.parts for p in part.student_layers))

    @property
    def teacher_layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p for part in self.parts for p in part.teacher_layers))

    def forward(self, student: Outputs, teacher: Outputs, target: torch.Tensor) -> torch.Tensor:
        return sum(part(student, teacher, target) for part in self.parts)
