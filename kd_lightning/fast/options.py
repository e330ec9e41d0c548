"""What the fast path may do: options that change how a scheme runs, never what it computes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SpeedOptions:
    """How a scheme runs; none of these changes what is computed (up to floating-point rounding).

    channels_last: networks (and, with ``data.channels_last``, inputs) in NHWC memory format.
    compile: ``torch.compile`` the student and teacher networks in place (state-dict keys unchanged).
    capture_step: forward, loss, backward and optimizer step replayed as one CUDA graph (CUDA only,
        single process, 32-bit or bf16 precision); falls back to the same step run eagerly elsewhere.
    teacher_cache: offline distillation keeps the teacher's logits and tapped features per training
        sample (filled during the first epoch) instead of running the teacher every step; turns itself
        off when training batches are augmented; under DDP the ranks fill one cache together (gathered).
    matmul_bias_grad: wide convolutions' bias gradients as a matrix-vector product (see
        :class:`MatmulBiasGradConv2d`).
    """

    channels_last: bool = False
    compile: bool = False
    capture_step: bool = False
    teacher_cache: bool = False
    matmul_bias_grad: bool = False
