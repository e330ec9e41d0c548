"""The training meter: a step's named values summed on the device, written every N steps.

A scheme's step returns ``(total, values)``: ``values`` maps names to detached scalars, e.g.
``{"loss": ..., "ce": ..., "kd": ..., "#correct": ..., "#count": ...}`` (mdistiller's ``(logits, {"name": loss})``
contract, plus counts). A name starting with ``#`` is a count: summed over the epoch (``train/acc`` is
``#correct / #count``), never written per window; every other name is written as ``train/<name>``, the window's
mean. The key order is fixed by the first step, so the values are one device vector added in place: no host
sync, and the addition runs inside a captured CUDA graph (:mod:`kd_lightning.fast`). torchmetrics' ``MeanMetric``
would keep one state per name and reduce each on ``compute``; one vector makes a window's write one copy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from kd_lightning.errors import NonFiniteLossError


def accuracy_counts(logits: torch.Tensor, target: torch.Tensor, suffix: str = "") -> dict[str, torch.Tensor]:
    """``{"#correct<suffix>": correct predictions, "#count": batch size}`` for the meter (``#count`` only
    without a suffix)."""
    correct = (logits.detach().argmax(1) == target).sum()
    if suffix:
        return {f"#correct{suffix}": correct}
    return {"#correct": correct, "#count": torch.full_like(correct, target.shape[0])}


class StepMeter:
    """Sums named step values on the device; :meth:`end_step` returns the window's means every ``every`` steps."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.names: tuple[str, ...] | None = None
        self.window: torch.Tensor | None = None
        self.epoch: torch.Tensor | None = None
        self.steps = 0
        self.first: dict[str, float] | None = None  # the first window's means (the explosion guard's reference)

    def add(self, values: Mapping[str, torch.Tensor]) -> None:
        """Adds one step's values, in place (graph-safe once the first step has fixed the names)."""
        if self.names is None:
            self.names = tuple(values)
        elif tuple(values) != self.names:
            raise RuntimeError(f"a step logged {list(values)} after {list(self.names)}: keep one set of names per fit")
        row = torch.stack([values[name].detach().float() for name in self.names])
        if self.window is None:
            self.window = torch.zeros_like(row)
        self.window.add_(row)

    def end_step(self, last: bool, every: int) -> dict[str, float] | None:
        """Counts a step; at the window's end (``every`` steps, or ``last``) returns ``{train/<name>: mean}`` of the
        non-count names (one device sync) and starts the next window."""
        self.steps += 1
        if self.window is None or not (last or self.steps >= every):
            return None
        self.epoch = self.window.clone() if self.epoch is None else self.epoch.add_(self.window)
        means = (self.window / self.steps).tolist()
        self.window.zero_()
        self.steps = 0
        metrics = {f"train/{name}": mean for name, mean in zip(self.names, means) if not name.startswith("#")}
        self.first = self.first or metrics
        return metrics

    def epoch_sums(self) -> dict[str, torch.Tensor]:
        """The epoch's sums by name (device tensors), and a fresh epoch; empty if no window was written."""
        if self.epoch is None:
            return {}
        sums, self.epoch = dict(zip(self.names, self.epoch)), None
        return sums

    def check(self, metrics: dict[str, float], factor: float, where: str) -> None:
        """Raises :class:`NonFiniteLossError` if a value is NaN/inf or over ``factor`` times its first value (the
        scale of the first ``train/loss`` at least)."""
        first = self.first
        scale = factor * max(abs(next(iter(first.values()))), 1e-12)
        bad = {name: value for name, value in metrics.items()
               if not math.isfinite(value) or abs(value) > max(scale, factor * abs(first[name]))}
        if bad:
            raise NonFiniteLossError(
                f"loss {bad} at {where} is NaN/inf or over {factor:g} x its first value "
                f"{({n: first[n] for n in bad})}: training stopped; checkpoints written so far are intact. Lower "
                f"optimizer.lr or the weight of the term that diverged."
            )
