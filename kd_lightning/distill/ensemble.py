"""Several frozen teachers as one: the weighted average of their softened class probabilities.

:class:`TeacherEnsemble` holds the teachers as its direct children, so a teacher's layer has the module
path ``<teacher name>.<path in that teacher>`` (e.g. ``second.features``): a feature term reads one
teacher's feature by naming that path as its ``teacher_layer``. Its forward returns *ensemble logits*
``T · log Σ_i w_i softmax(z_i / T)``, chosen so that ``softmax(ensemble logits / T)`` is exactly the
weighted average of the teachers' probabilities at temperature ``T`` (Hinton et al. 2015, §2 "an
ensemble's soft targets"; You et al., KDD 2017, "Learning from Multiple Teacher Networks"): a soft-target
term at that ``T`` then distils from the averaged soft targets, and with one teacher the ensemble logits
differ from the teacher's only by a per-sample constant, which ``softmax`` ignores (plain KD).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kd_lightning.distill.teacher import load_teacher
from kd_lightning.errors import ConfigError

log = logging.getLogger(__name__)


def normalised_weights(names: Sequence[str], weights: Mapping[str, float] | None) -> dict[str, float]:
    """``weights`` (name → positive weight; None: equal) scaled to sum to 1, checked against ``names``."""
    if weights is None:
        return {name: 1.0 / len(names) for name in names}
    weights = {str(name): float(w) for name, w in weights.items()}
    if set(weights) != set(names):
        raise ConfigError(
            f"teacher_weights names {sorted(weights)} must be exactly the teachers' names {sorted(names)}"
        )
    bad = {name: w for name, w in weights.items() if not (w > 0 and math.isfinite(w))}
    if bad:
        raise ConfigError(
            f"teacher_weights must be positive and finite (drop a teacher instead of weighting it 0): {bad}"
        )
    total = sum(weights.values())
    return {name: weights[name] / total for name in names}


class TeacherEnsemble(nn.Module):
    """Frozen teachers (children named by ``teachers``' keys), their probabilities at ``temperature`` averaged."""

    def __init__(self, teachers: Mapping[str, nn.Module], weights: Mapping[str, float] | None, temperature: float):
        super().__init__()
        if not teachers:
            raise ConfigError("a multi-teacher scheme needs at least one teacher")
        if not temperature > 0:
            raise ConfigError(f"the ensemble's temperature must be > 0, got {temperature!r}")
        self.names = [str(name) for name in teachers]
        self.weights = normalised_weights(self.names, weights)
        self.temperature = float(temperature)
        for name, teacher in zip(self.names, teachers.values()):
            if not name or "." in name or hasattr(self, name):
                raise ConfigError(
                    f"teacher name {name!r} cannot name a submodule: use a non-empty name without '.' that is "
                    f"not an attribute of {type(self).__name__}"
                )
            self.add_module(name, teacher)
        # python floats, not buffers: no host-device copies per step, and .to(dtype) cannot round them
        self._log_weights = [math.log(self.weights[name]) for name in self.names]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        log_probs = [
            F.log_softmax(getattr(self, name)(x).float() / t, dim=1) + log_w
            for name, log_w in zip(self.names, self._log_weights)
        ]
        return t * torch.logsumexp(torch.stack(log_probs), dim=0)


def load_teachers(
    net: nn.Module,
    checkpoint: str | Sequence[str] | Mapping[str, str],
    seed: int,
    members: Mapping[str, int],
    train_command: str | None = None,
    num_seeds: int | None = None,
    run=None,
    train_if_missing: bool = False,
) -> dict[str, nn.Module]:
    """Teachers of ``net``'s architecture, each loaded (with :func:`load_teacher`) from its own checkpoint.

    ``members`` maps each teacher's name to a seed offset: teacher ``name`` is the one trained with seed
    ``seed + offset`` (modulo ``num_seeds`` if given), and every ``{seed}`` in ``checkpoint`` (a path or candidate paths, the first that
    exists is used) and in ``train_command`` is replaced by that seed. A checkpoint without ``{seed}``
    (e.g. ``teacher.checkpoint=PATH``) loads the same weights into every member (with a warning). A mapping
    gives each member its own path (what ``kd_lightning.train`` sets after finding the teacher runs of ``run``).
    """
    if not members:
        raise ConfigError("load_teachers: `members` must name at least one teacher (name: seed offset)")
    if isinstance(checkpoint, Mapping):
        return {str(name): load_teacher(copy.deepcopy(net), str(checkpoint[name])) for name in members}
    candidates = [checkpoint] if isinstance(checkpoint, str) else [str(c) for c in checkpoint]
    teachers = {}
    for name, offset in members.items():
        member_seed = int(seed) + int(offset)
        member_seed = str(member_seed % num_seeds if num_seeds else member_seed)
        teachers[str(name)] = load_teacher(
            copy.deepcopy(net),
            [c.replace("{seed}", member_seed) for c in candidates],
            train_command.replace("{seed}", member_seed) if train_command else None,
        )
    if len(members) > 1 and not any("{seed}" in c for c in candidates):
        log.warning("teachers %s all load %s: they are identical teachers", list(teachers), candidates)
    return teachers
