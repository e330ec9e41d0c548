"""Feature-based terms: attention transfer and probabilistic knowledge transfer (one student vs one teacher layer)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kd_lightning.distill.taps import Outputs
from kd_lightning.distill.terms import FeatureTerm
from kd_lightning.errors import ConfigError, FeatureShapeError


def shape_error(term: FeatureTerm, student: torch.Tensor, teacher: torch.Tensor, what: str, need: str):
    """A :class:`FeatureShapeError` naming both layers and shapes, and what the term needs."""
    return FeatureShapeError(
        f"{type(term).__name__}: student {what} {tuple(student.shape)} (from layer {term.student_layer!r}) and "
        f"teacher {what} {tuple(teacher.shape)} (from layer {term.teacher_layer!r}) cannot be compared: {need}"
    )


def pool_to_common_size(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive-average-pool (N, C, H, W) maps to the smaller height and width of the two (no-op if equal)."""
    size = (min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1]))
    a = a if tuple(a.shape[-2:]) == size else F.adaptive_avg_pool2d(a, size)
    b = b if tuple(b.shape[-2:]) == size else F.adaptive_avg_pool2d(b, size)
    return a, b


def flat_pair(term: FeatureTerm, student: Outputs, teacher: Outputs) -> tuple[torch.Tensor, torch.Tensor]:
    """The term's student and teacher features, flattened per sample to float32 (same batch size)."""
    s = torch.flatten(student.features[term.student_layer].float(), 1)
    t = torch.flatten(teacher.features[term.teacher_layer].float(), 1)
    if s.shape[0] != t.shape[0]:
        raise shape_error(term, s, t, "flattened features", "batch sizes differ")
    return s, t


def full_precision(x: torch.Tensor):
    """Autocast off: Gram matrices, kernels and distances stay float32 under bf16/fp16 autocast."""
    return torch.autocast(x.device.type, enabled=False)


class AttentionTransfer(FeatureTerm):
    """Activation-based attention transfer (Zagoruyko & Komodakis, ICLR 2017).

    Attention map: ``mean over channels of |f|^p``, flattened and L2-normalised per sample. Loss as in
    the official code (szagoruyko/attention-transfer): ``(a_s - a_t)²`` averaged over batch and positions,
    i.e. the batch mean of ``||a_s - a_t||²₂ / (H·W)``; the official β = 1000 goes in ``weight``.
    Channel counts may differ. Different spatial sizes: the larger feature map is adaptive-average-pooled
    to the smaller (as RepDistiller/mdistiller do).
    """

    def __init__(self, student_layer: str, teacher_layer: str, weight: float = 1.0, p: float = 2.0):
        super().__init__(student_layer, teacher_layer, weight)
        if not p > 0:
            raise ConfigError(f"AttentionTransfer: p must be > 0 (the paper uses 2), got {p!r}")
        self.p = p

    def attention(self, f: torch.Tensor) -> torch.Tensor:
        return F.normalize(f.abs().pow(self.p).mean(1).flatten(1), dim=1)

    def forward(self, student: Outputs, teacher: Outputs, target: torch.Tensor) -> torch.Tensor:
        s, t = student.features[self.student_layer].float(), teacher.features[self.teacher_layer].float()
        if s.dim() != 4 or t.dim() != 4 or s.shape[0] != t.shape[0]:
            raise shape_error(self, s, t, "feature", "both must be (batch, channels, height, width), same batch")
        s, t = pool_to_common_size(s, t)
        return (self.attention(s) - self.attention(t)).pow(2).mean()


class PKT(FeatureTerm):
    """Probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018), as in the official code.

    Per network: cosine similarities of the flattened features within the batch, mapped to [0, 1] by
    ``(cos + 1) / 2`` and row-normalised into conditional probabilities ``p(j|i)``; the loss is
    ``mean_{i,j} p_t log((p_t + eps) / (p_s + eps))`` over all b² entries (the official code's mean,
    diagonal included; scale with ``weight``). Feature sizes may differ; batch sizes must match.
    """

    def __init__(self, student_layer: str, teacher_layer: str, weight: float = 1.0, eps: float = 1e-7):
        super().__init__(student_layer, teacher_layer, weight)
        if not eps > 0:
            raise ConfigError(f"PKT: eps must be > 0, got {eps!r}")
        self.eps = eps

    def probabilities(self, f: torch.Tensor) -> torch.Tensor:
        f = f / (f.norm(dim=1, keepdim=True) + self.eps)
        k = (f @ f.t() + 1) / 2
        return k / k.sum(1, keepdim=True)

    def forward(self, student: Outputs, teacher: Outputs, target: torch.Tensor) -> torch.Tensor:
        s, t = flat_pair(self, student, teacher)
        with full_precision(s):
            p_s, p_t = self.probabilities(s), self.probabilities(t)
            return (p_t * torch.log((p_t + self.eps) / (p_s + self.eps))).mean()
