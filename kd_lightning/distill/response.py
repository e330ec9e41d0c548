"""Logit-based (response) terms: DKD, DIST and KD with logit standardisation.

Each returns the unweighted scalar; logits are compared in float32 (as the other terms do).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kd_lightning.distill.taps import Outputs
from kd_lightning.distill.terms import LossTerm, soft_target_kl
from kd_lightning.errors import ConfigError, FeatureShapeError


def _positive(term: str, name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{term}: {name} must be > 0, got {value!r}")


def _non_negative(term: str, name: str, value: float) -> None:
    if not value >= 0:
        raise ConfigError(f"{term}: {name} must be >= 0, got {value!r}")


def _logits(term: LossTerm, student: Outputs, teacher: Outputs) -> tuple[torch.Tensor, torch.Tensor]:
    s, t = student.logits.float(), teacher.logits.float()
    if s.shape != t.shape or s.dim() != 2:
        raise FeatureShapeError(
            f"{type(term).__name__}: student logits {tuple(s.shape)} do not match teacher logits {tuple(t.shape)}; "
            f"both must be (batch, classes) with the same number of classes"
        )
    return s, t


class DKD(LossTerm):
    """Decoupled KD (Zhao et al., CVPR 2022): ``(alpha·TCKD + beta·NCKD)·T²``, times a linear warm-up.

    TCKD is the KL between the teacher's and student's binary (target, all non-targets) probabilities,
    NCKD the KL between their distributions over the non-target classes only (both at temperature
    ``T``, summed over classes, averaged over the batch, times T², as in the official mdistiller code).

    Warm-up: mdistiller scales the loss by ``min(epoch / warmup, 1)``. Here the factor is
    ``min(calls / warmup_steps, 1)``, ``calls`` being the term's count of forward calls in training mode
    (a buffer, including the current call, saved in checkpoints so a resumed run continues the ramp; with
    gradient accumulation it counts micro-batches). ``warmup_steps=0`` disables the warm-up. The counter
    lives on the device, so a step replayed as a CUDA graph (``speed.capture_step``) keeps counting.
    """

    def __init__(self, weight: float = 1.0, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0,
                 warmup_steps: int = 0):
        super().__init__(weight)
        _positive("DKD", "temperature", temperature)
        _non_negative("DKD", "alpha", alpha)
        _non_negative("DKD", "beta", beta)
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ConfigError(f"DKD: warmup_steps must be an integer >= 0 (0: no warm-up), got {warmup_steps!r}")
        self.alpha, self.beta, self.temperature, self.warmup_steps = alpha, beta, temperature, warmup_steps
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def warmup_factor(self) -> torch.Tensor | float:
        if self.warmup_steps == 0:
            return 1.0
        return (self.calls.float() / self.warmup_steps).clamp(max=1.0)  # stays on the device: no sync

    def forward(self, student: Outputs, teacher: Outputs, target: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.calls += 1
        s, t = _logits(self, student, teacher)
        s, t = s / self.temperature, t / self.temperature
        # masks and gathers, no boolean indexing: no host sync, so the step stays CUDA-graph capturable
        gt = target.unsqueeze(1) == torch.arange(s.shape[1], device=s.device)
        log_p_s, log_p_t = F.log_softmax(s, dim=1), F.log_softmax(t, dim=1)

        def binary(log_p: torch.Tensor) -> torch.Tensor:  # log [p_target, 1 - p_target], stably
            log_rest = torch.logsumexp(log_p.masked_fill(gt, -math.inf), dim=1, keepdim=True)
            return torch.cat([log_p.gather(1, target.unsqueeze(1)), log_rest], dim=1)

        tckd = F.kl_div(binary(log_p_s), binary(log_p_t), reduction="batchmean", log_target=True)
        # the target class is pushed out of the softmax (mdistiller subtracts 1000; a finite value keeps KL finite)
        log_q_s = F.log_softmax(s.masked_fill(gt, -1e4), dim=1)
        log_q_t = F.log_softmax(t.masked_fill(gt, -1e4), dim=1)
        nckd = F.kl_div(log_q_s, log_q_t, reduction="batchmean", log_target=True)
        return self.warmup_factor() * (self.alpha * tckd + self.beta * nckd) * self.temperature**2


def _pearson(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Row-wise Pearson correlation, with the official DIST code's ``eps`` in the denominator."""
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


class DIST(LossTerm):
    """DIST (Huang et al., NeurIPS 2022): ``T²·(beta·inter + gamma·intra)`` on softmax(logits / T).

    inter = 1 - mean over samples of the Pearson correlation of student and teacher class
    probabilities; intra = the same per class, across the batch (as in the official code, hunto/DIST_KD).
    """

    def __init__(self, weight: float = 1.0, beta: float = 1.0, gamma: float = 1.0, temperature: float = 1.0):
        super().__init__(weight)
        _positive("DIST", "temperature", temperature)
        _non_negative("DIST", "beta", beta)
        _non_negative("DIST", "gamma", gamma)
        self.beta, self.gamma, self.temperature = beta, gamma, temperature

    def forward(self, student: Outputs, teacher: Outputs, target: torch.Tensor) -> torch.Tensor:
        s, t = _logits(self, student, teacher)
        y_s, y_t = F.softmax(s / self.temperature, dim=1), F.softmax(t / self.temperature, dim=1)
        inter = 1 - _pearson(y_s, y_t).mean()
        intra = 1 - _pearson(y_s.t(), y_t.t()).mean()
        return self.temperature**2 * (self.beta * inter + self.gamma * intra)


class StandardizedKD(LossTerm):
    """KD with logit standardisation (Sun et al., CVPR 2024): soft-target KL of z-scored logits, times T².

    Each sample's logits become ``(z - mean) / (std + 1e-7)`` before ``softmax(· / temperature)``; the
    ``temperature`` is the paper's base temperature. ``std`` is ``torch.std`` (unbiased), as in the
    official code; the paper's 1/K variance differs by the constant sqrt(K/(K-1)), i.e. a rescaled T.
    """

    def __init__(self, weight: float = 1.0, temperature: float = 2.0):
        super().__init__(weight)
        _positive("StandardizedKD", "temperature", temperature)
        self.temperature = temperature

    @staticmethod
    def standardize(logits: torch.Tensor) -> torch.Tensor:
        return (logits - logits.mean(1, keepdim=True)) / (logits.std(1, keepdim=True) + 1e-7)

    def forward(self, student: Outputs, teacher: Outputs, target: torch.Tensor) -> torch.Tensor:
        s, t = _logits(self, student, teacher)
        return soft_target_kl(self.standardize(s), self.standardize(t), self.temperature)
