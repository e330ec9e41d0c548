"""Speed options shared by every training scheme, and the CUDA-graph capture of a whole training step."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)


@dataclass
class SpeedOptions:
    """How a scheme runs; none of these changes what is computed (up to floating-point rounding).

    channels_last: networks (and, with ``data.channels_last``, inputs) in NHWC memory format.
    compile: ``torch.compile`` the student and teacher networks in place (state-dict keys unchanged).
    capture_step: forward, loss, backward and optimizer step replayed as one CUDA graph (CUDA only,
        single process, 32-bit or bf16 precision); falls back to the same step run eagerly elsewhere.
    teacher_cache: offline distillation keeps the teacher's logits and tapped features per training
        sample (filled during the first epoch) instead of running the teacher every step; turns itself
        off when training batches are augmented.
    """

    channels_last: bool = False
    compile: bool = False
    capture_step: bool = False
    teacher_cache: bool = False


class CapturedStep:
    """Runs ``step(*inputs)`` (which must do backward and the optimizer step) as a replayed CUDA graph.

    The first ``warmup`` calls run eagerly on a side stream (lazy initialisation, optimizer state), the
    next one captures the graph and replays it. Inputs are copied into static buffers; a batch of another
    shape (an epoch's last, smaller batch) runs eagerly with the same optimizer, as does everything when
    ``enabled`` is false (CPU, DDP).
    """

    def __init__(self, step: Callable[..., torch.Tensor], optimizer: torch.optim.Optimizer, enabled: bool, warmup: int = 3):
        self.step, self.optimizer, self.enabled, self.warmup = step, optimizer, enabled, warmup
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_inputs: list[torch.Tensor] = []
        self.static_output: torch.Tensor | None = None
        self.eager_calls = 0

    def _eager(self, inputs) -> torch.Tensor:
        # once a graph exists its gradient buffers must stay in place: zero them rather than drop them
        self.optimizer.zero_grad(set_to_none=self.graph is None)
        return self.step(*inputs)

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return self._eager(inputs)
        if self.graph is None and self.eager_calls < self.warmup:
            self.eager_calls += 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                output = self._eager(inputs)
            torch.cuda.current_stream().wait_stream(side)
            return output
        if self.graph is None:
            self.static_inputs = [x.clone() for x in inputs]
            self.optimizer.zero_grad(set_to_none=True)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.static_output = self.step(*self.static_inputs)
        if any(x.shape != s.shape for x, s in zip(inputs, self.static_inputs)):
            return self._eager(inputs).clone()
        for static, x in zip(self.static_inputs, inputs):
            static.copy_(x)
        self.graph.replay()
        return self.static_output


def capture_unavailable_reason(device: torch.device, world_size: int, precision: str) -> str | None:
    """Why a training step cannot be captured here, or None if it can."""
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device; training runs on {device.type}"
    if world_size > 1:
        return f"capture is single-process; this run has {world_size} processes (DDP syncs gradients in backward)"
    if precision not in ("32-true", "32", "bf16-mixed", "bf16-true"):
        return f"capture supports precision 32-true, bf16-mixed or bf16-true, not {precision!r} (no gradient scaling)"
    return None
