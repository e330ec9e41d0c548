"""Feature-based terms: attention transfer and probabilistic knowledge transfer (one student vs one teacher layer)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kd_lightning.distill.shared import flat_pair, full_precision, pool_to_common_size, shape_error
from kd_lightning.distill.taps import Outputs
from kd_lightning.distill.terms import FeatureTerm
from kd_lightning.errors import ConfigError


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
