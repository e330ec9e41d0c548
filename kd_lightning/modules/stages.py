"""Training stages as config: a run is a list of stages, each with its epochs, the terms it optimises, which
parameters train and whether the optimizer's state resets when it starts (torchdistill's stages are data too).

E.g. FitNets (Romero et al. 2015) is two stages of one scheme, ``conf/distill/fitnets.yaml``::

    stages:
      hint: {epochs: 2, terms: [hint]}
      kd: {terms: [ce, kd], reset_optimizer: true}

A stage's ``epochs`` null (the last stage only) runs to the end of the fit. A term outside the current stage's
``terms`` is still computed, under ``no_grad``, and logged; parameters that only it reaches get no gradient, and
every torch optimizer skips a parameter whose ``.grad`` is None (no momentum, no weight decay, no Adam step count,
unlike a zero loss weight). ``train`` (parameter-name prefixes, e.g. ``[net.features, terms.hint]``) freezes every
other parameter for the stage (``requires_grad=False``). The stage is a function of the epoch counter, so a resumed
run is in the stage its checkpoint's epoch says, with no state of its own; the learning-rate schedule runs over the
whole fit (a deviation from separately trained stages, each with its own schedule).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from kd_lightning.errors import ConfigError


@dataclass(frozen=True)
class Stage:
    """One stage: ``terms`` optimised (None: all), ``train`` parameter-name prefixes (None: all), from ``start``."""

    name: str
    start: int
    epochs: int | None
    terms: tuple[str, ...] | None
    train: tuple[str, ...] | None
    reset_optimizer: bool

    def optimises(self, term: str) -> bool:
        return self.terms is None or term in self.terms

    def trains(self, parameter: str) -> bool:
        return self.train is None or any(parameter == p or parameter.startswith(p + ".") for p in self.train)


class Stages:
    """The stages of a fit, in order; ``None`` or empty: one stage optimising every term."""

    def __init__(self, stages: Mapping[str, Mapping] | Sequence[Mapping] | None, term_names: Iterable[str]):
        term_names = list(term_names)
        if not stages:
            stages = {"train": {}}
        if not isinstance(stages, Mapping):  # a list of stages, each with its own name
            stages = {str(s.get("name", i)): s for i, s in enumerate(stages)}
        self.stages: list[Stage] = []
        start = 0
        for position, (name, spec) in enumerate(stages.items()):
            spec = dict(spec or {})
            spec.pop("name", None)
            unknown = set(spec) - {"epochs", "terms", "train", "reset_optimizer"}
            if unknown:
                raise ConfigError(f"distill.stages.{name} has {sorted(unknown)}: a stage takes epochs, terms, train, "
                                  f"reset_optimizer")
            epochs = spec.get("epochs")
            last = position == len(stages) - 1
            if epochs is None and not last:
                raise ConfigError(f"distill.stages.{name}.epochs is null: only the last stage runs to the fit's end")
            if epochs is not None and (int(epochs) != epochs or epochs < 0):
                raise ConfigError(f"distill.stages.{name}.epochs={epochs!r}: expected a whole number of epochs >= 0")
            terms = spec.get("terms")
            if terms is not None:
                terms = tuple(str(t) for t in terms)
                missing = [t for t in terms if t not in term_names]
                if missing or not terms:
                    raise ConfigError(f"distill.stages.{name}.terms={list(terms)}: expected a non-empty list of "
                                      f"distill.terms ({term_names})")
            train = tuple(str(p) for p in spec["train"]) if spec.get("train") is not None else None
            self.stages.append(Stage(str(name), start, None if epochs is None else int(epochs), terms, train,
                                     bool(spec.get("reset_optimizer", False))))
            start += int(epochs or 0)

    def __len__(self) -> int:
        return len(self.stages)

    def at(self, epoch: int) -> Stage:
        """The stage that trains epoch ``epoch`` (a stage of 0 epochs never does)."""
        current = self.stages[0]
        for stage in self.stages:
            if stage.start <= epoch and (stage.epochs is None or stage.epochs > 0):
                current = stage
        return current

    def starting(self, epoch: int) -> Stage | None:
        """The stage that starts at ``epoch``, if one does."""
        stage = self.at(epoch)
        return stage if stage.start == epoch else None

    @property
    def leave_parameters_unused(self) -> bool:
        """Whether some stage may leave parameters without gradients (DDP must then look for them)."""
        return len(self.stages) > 1 or any(s.terms is not None or s.train is not None for s in self.stages)
