"""A whole training step as a replayed CUDA graph, re-captured whenever a host value it baked in changes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable

import torch

log = logging.getLogger(__name__)


def frozen_optimizer_values(optimizer: torch.optim.Optimizer) -> tuple:
    """Every hyperparameter of ``optimizer`` that a captured step reads as a host number (tensors are read on
    the device at replay, so they may change freely): momentum, weight decay, betas, a float learning rate."""
    return tuple(
        (i, key, value)
        for i, group in enumerate(optimizer.param_groups)
        for key, value in group.items()
        if key != "params" and not isinstance(value, torch.Tensor)
    )


class CapturedStep:
    """Runs ``step(*inputs)`` (which must do backward and the optimizer step) as a replayed CUDA graph.

    The first ``warmup`` calls run eagerly on a side stream (lazy initialisation, optimizer state), the
    next one captures the graph and replays it. ``step`` returns nothing: what it reports it writes in
    place into tensors that outlive the graph. Inputs are copied into static buffers; a batch of another
    shape (an epoch's last, smaller batch) runs eagerly with the same optimizer, as does everything when
    ``enabled`` is false (CPU).

    A graph replays the host numbers read while it was captured. ``frozen()`` returns those numbers (by default
    the optimizer's non-tensor hyperparameters): when they differ from the captured ones, the step is captured
    again, so a schedule that changes momentum once an epoch stays exact. A value that changes nearly every
    step (OneCycleLR's momentum, say) would re-capture every step: after ``max_recaptures`` re-captures at
    less than ``min_steps_per_capture`` steps each, the step runs eagerly for the rest of the fit, with a
    warning naming what changed.
    """

    def __init__(
        self,
        step: Callable[..., None],
        optimizer: torch.optim.Optimizer,
        enabled: bool,
        warmup: int = 3,
        frozen: Callable[[], Hashable] | None = None,
        max_recaptures: int = 20,
        min_steps_per_capture: int = 20,
    ):
        self.step, self.optimizer, self.enabled, self.warmup = step, optimizer, enabled, warmup
        self.frozen = frozen or (lambda: frozen_optimizer_values(optimizer))
        self.max_recaptures, self.min_steps_per_capture = max_recaptures, min_steps_per_capture
        self.graph: torch.cuda.CUDAGraph | None = None
        self.captured_values: Hashable = None
        self.static_inputs: list[torch.Tensor] = []
        self.eager_calls = 0
        self.calls = 0
        self.recaptures = 0

    def _eager(self, inputs) -> None:
        # once a graph exists its gradient buffers must stay in place: zero them rather than drop them
        self.optimizer.zero_grad(set_to_none=self.graph is None)
        self.step(*inputs)

    def _capture(self, inputs) -> None:
        self.graph = None  # frees the old graph's memory pool (its gradients are dropped just below)
        self.static_inputs = [x.clone() for x in inputs]
        self.optimizer.zero_grad(set_to_none=True)
        self.captured_values = self.frozen()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.step(*self.static_inputs)

    def _values_changed(self) -> bool:
        values = self.frozen()
        if values == self.captured_values:
            return False
        self.recaptures += 1
        if self.recaptures > self.max_recaptures and self.calls < self.recaptures * self.min_steps_per_capture:
            changed = sorted({item[:-1] for item in set(values) ^ set(self.captured_values or ())}, key=str)
            log.warning(
                "speed.capture_step: %s changed %d times in %d steps; re-capturing that often costs more than it "
                "saves, so the rest of this fit runs the same step eagerly. Keep such values fixed (e.g. "
                "OneCycleLR(cycle_momentum=False)) to stay captured.", changed, self.recaptures, self.calls)
            self.enabled, self.graph = False, None
            self.optimizer.zero_grad(set_to_none=True)
        return True

    def __call__(self, *inputs: torch.Tensor) -> None:
        self.calls += 1
        if not self.enabled:
            return self._eager(inputs)
        if self.graph is None and self.eager_calls < self.warmup:
            self.eager_calls += 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self._eager(inputs)
            torch.cuda.current_stream().wait_stream(side)
            return None
        if self.graph is not None and any(x.shape != s.shape for x, s in zip(inputs, self.static_inputs)):
            return self._eager(inputs)  # reads every value live; a re-capture waits for a batch of the usual shape
        if self.graph is None or self._values_changed():
            if not self.enabled:  # gave up re-capturing
                return self._eager(inputs)
            self._capture(inputs)
        for static, x in zip(self.static_inputs, inputs):
            static.copy_(x)
        self.graph.replay()
        return None
