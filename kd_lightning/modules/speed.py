"""Speed options shared by every training scheme, and the CUDA-graph capture of a whole training step."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

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
        off when training batches are augmented, and under DDP.
    matmul_bias_grad: wide convolutions' bias gradients as a matrix-vector product (see
        :class:`MatmulBiasGradConv2d`).
    """

    channels_last: bool = False
    compile: bool = False
    capture_step: bool = False
    teacher_cache: bool = False
    matmul_bias_grad: bool = False


class _ChannelBias(torch.autograd.Function):
    """``x + bias`` over the channels of an NCHW batch; a channels_last gradient's bias part is ``1ᵀ G``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return x + bias.view(1, -1, 1, 1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not grad.is_contiguous(memory_format=torch.channels_last):
            return grad, grad.sum((0, 2, 3))
        rows = grad.permute(0, 2, 3, 1).reshape(-1, grad.shape[1])  # a view: (N*H*W, C)
        return grad, grad.new_ones(rows.shape[0]) @ rows


class MatmulBiasGradConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose bias gradient is a matrix-vector product instead of PyTorch's reduction.

    Same parameters, state-dict keys and results up to rounding. On an H200, bf16 channels_last, batch
    128 at 32x32, the reduction takes 118 µs at 128 channels and 37 µs at 64 against 16 µs as a GEMV
    (a sixth of the tutorial teacher's step); at 16 channels the reduction is faster (10 µs), hence
    :data:`MIN_CHANNELS`.
    """

    MIN_CHANNELS = 64

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        out = super()._conv_forward(x, weight, None)
        return out if bias is None else _ChannelBias.apply(out, bias.to(out.dtype))


def use_matmul_bias_grad(net: nn.Module) -> int:
    """Turns ``net``'s plain Conv2d layers of at least ``MIN_CHANNELS`` outputs, with a bias, into
    :class:`MatmulBiasGradConv2d` in place; returns how many."""
    wide = [
        module for module in net.modules()
        if type(module) is nn.Conv2d and module.bias is not None
        and module.out_channels >= MatmulBiasGradConv2d.MIN_CHANNELS
    ]
    for module in wide:
        module.__class__ = MatmulBiasGradConv2d
    return len(wide)


class CapturedStep:
    """Runs ``step(*inputs)`` (which must do backward and the optimizer step) as a replayed CUDA graph.

    The first ``warmup`` calls run eagerly on a side stream (lazy initialisation, optimizer state), the
    next one captures the graph and replays it. ``step`` returns nothing: what it reports it writes in
    place into tensors that outlive the graph. Inputs are copied into static buffers; a batch of another
    shape (an epoch's last, smaller batch) runs eagerly with the same optimizer, as does everything when
    ``enabled`` is false (CPU, DDP).
    """

    def __init__(self, step: Callable[..., None], optimizer: torch.optim.Optimizer, enabled: bool, warmup: int = 3):
        self.step, self.optimizer, self.enabled, self.warmup = step, optimizer, enabled, warmup
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_inputs: list[torch.Tensor] = []
        self.eager_calls = 0

    def _eager(self, inputs) -> None:
        # once a graph exists its gradient buffers must stay in place: zero them rather than drop them
        self.optimizer.zero_grad(set_to_none=self.graph is None)
        self.step(*inputs)

    def __call__(self, *inputs: torch.Tensor) -> None:
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
        if self.graph is None:
            self.static_inputs = [x.clone() for x in inputs]
            self.optimizer.zero_grad(set_to_none=True)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.step(*self.static_inputs)
        if any(x.shape != s.shape for x, s in zip(inputs, self.static_inputs)):
            return self._eager(inputs)
        for static, x in zip(self.static_inputs, inputs):
            static.copy_(x)
        self.graph.replay()
        return None


def capture_unavailable_reason(device: torch.device, world_size: int, precision: str) -> str | None:
    """Why a training step cannot be captured here, or None if it can."""
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device; training runs on {device.type}"
    if world_size > 1:
        return f"capture is single-process; this run has {world_size} processes (DDP syncs gradients in backward)"
    if precision not in ("32-true", "32", "bf16-mixed", "bf16-true"):
        return f"capture supports precision 32-true, bf16-mixed or bf16-true, not {precision!r} (no gradient scaling)"
    return None


def stored_signature(training_step: Callable) -> Callable:
    """Decorates a ``training_step``: Lightning reads its signature every step (to pass ``batch_idx``),
    which ``inspect`` otherwise rebuilds each time; a stored ``__signature__`` makes that a lookup."""
    training_step.__signature__ = inspect.signature(training_step)
    return training_step
