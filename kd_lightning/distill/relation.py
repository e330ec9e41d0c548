"""Relation-based terms: similarity-preserving KD, relational KD (distance and angle), FSP flow matrices."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kd_lightning.distill.shared import flat_pair, full_precision, pool_to_common_size
from kd_lightning.distill.taps import Outputs
from kd_lightning.distill.terms import FeatureTerm, LossTerm
from kd_lightning.errors import ConfigError, FeatureShapeError


class SimilarityPreserving(FeatureTerm):
    """Similarity-preserving KD (Tung & Mori, ICCV 2019): ``||G_s - G_t||_F² / b²``.

    ``G = row-L2-normalised (F Fᵀ)`` of the flattened (b, ·) features; feature sizes may differ. The
    paper's γ (3000 on CIFAR-10) goes in ``weight``.
    """

    @staticmethod
    def gram(f: torch.Tensor) -> torch.Tensor:
        return F.normalize(f @ f.t(), dim=1)

    def forward(self, student: Outputs, teacher: Outputs, target: torch.Tensor) -> torch.Tensor:
        s, t = flat_pair(self, student, teacher)
        with full_precision(s):
            return (self.gram(s) - self.gram(t)).pow(2).sum() / s.shape[0] ** 2


def _pairwise_distances(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    squared = e.pow(2).sum(1)
    d = (squared.unsqueeze(1) + squared.unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps).sqrt()
    return d * (1 - torch.eye(len(e), device=e.device, dtype=e.dtype))  # exact zeros on the diagonal


def _angles(e: torch.Tensor) -> torch.Tensor:
    """``cos ∠(e_j, e_i, e_k)`` for all (i, j, k): cosine of ``e_j - e_i`` and ``e_k - e_i`` (0 if degenerate)."""
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
    return torch.bmm(diff, diff.transpose(1, 2))


class RKD(FeatureTerm):
    """Relational KD (Park et al., CVPR 2019): ``distance_weight·L_D + angle_weight·L_A``.

    As in the official code (lenscloth/RKD): L_D is the smooth-L1 (Huber, δ=1) between pairwise
    Euclidean distances, each divided by its network's mean off-diagonal distance, averaged over all b²
    pairs; L_A the smooth-L1 between the cosines of all b³ angles (degenerate ones are 0 for both).
    Defaults are the paper's λ_D = 25, λ_A = 50. Feature sizes may differ; a batch of one gives 0.
    """

    def __init__(self, student_layer: str, teacher_layer: str, weight: float = 1.0, distance_weight: float = 25.0,
                 angle_weight: float = 50.0):
        super().__init__(student_layer, teacher_layer, weight)
        if not (distance_weight >= 0 and angle_weight >= 0 and distance_weight + angle_weight > 0):
            raise ConfigError(
                f"RKD: distance_weight and angle_weight must be >= 0 and not both 0, got {distance_weight!r} "
                f"and {angle_weight!r}"
            )
        self.distance_weight, self.angle_weight = distance_weight, angle_weight

    def forward(self, student: Outputs, teacher: Outputs, target: torch.Tensor) -> torch.Tensor:
        s, t = flat_pair(self, student, teacher)
        b = s.shape[0]
        if b < 2:
            return s.sum() * 0.0
        loss = s.new_zeros(())
        with full_precision(s):
            if self.distance_weight:
                d_s, d_t = _pairwise_distances(s), _pairwise_distances(t)
                d_s, d_t = d_s / (d_s.sum() / (b * (b - 1))), d_t / (d_t.sum() / (b * (b - 1)))
                loss = loss + self.distance_weight * F.smooth_l1_loss(d_s, d_t)
            if self.angle_weight:
                loss = loss + self.angle_weight * F.smooth_l1_loss(_angles(s), _angles(t))
        return loss


def _pairs(value, what: str) -> tuple[tuple, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigError(f"FSP: {what} must be a non-empty list of [first, second] pairs, got {value!r}")
    pairs = tuple(tuple(p) if isinstance(p, Sequence) and not isinstance(p, str) else (p,) for p in value)
    if not pairs or any(len(pair) != 2 for pair in pairs):
        raise ConfigError(f"FSP: {what} must be a non-empty list of [first, second] pairs, got {list(value)!r}")
    return pairs


class FSP(LossTerm):
    """Flow of solution procedure (Yim et al., CVPR 2017): match FSP matrices of layer pairs.

    ``G(a, b)[i, j] = sum_{h,w} a[i, h, w] · b[j, h, w] / (H·W)`` for each pair (first, second) of
    (N, C, H, W) maps; if a pair's spatial sizes differ the larger map is adaptive-average-pooled to the
    smaller. Loss (paper, eq. 2, all λ_i = 1): sum over pairs of ``||G_t - G_s||²`` summed over the
    matrix entries, averaged over the batch.

    ``student_layers`` / ``teacher_layers`` are lists of [first, second] module paths. Where channel
    counts differ, give ``student_channels`` and ``teacher_channels`` (per pair, [C_first, C_second]):
    each student layer whose count differs gets a trainable 1x1-conv adapter to the teacher's count.
    """

    def __init__(self, student_layers: Sequence[Sequence[str]], teacher_layers: Sequence[Sequence[str]],
                 weight: float = 1.0, student_channels: Sequence[Sequence[int]] | None = None,
                 teacher_channels: Sequence[Sequence[int]] | None = None):
        super().__init__(weight)
        self.student_pairs = _pairs(student_layers, "student_layers")
        self.teacher_pairs = _pairs(teacher_layers, "teacher_layers")
        if len(self.student_pairs) != len(self.teacher_pairs):
            raise ConfigError(
                f"FSP: {len(self.student_pairs)} student layer pairs but {len(self.teacher_pairs)} teacher "
                f"layer pairs; give one teacher pair per student pair"
            )
        self.adapters = nn.ModuleList(nn.ModuleList([nn.Identity(), nn.Identity()]) for _ in self.student_pairs)
        if (student_channels is None) != (teacher_channels is None):
            raise ConfigError("FSP: give both student_channels and teacher_channels (for the adapters), or neither")
        if student_channels is not None:
            s_channels = _pairs(student_channels, "student_channels")
            t_channels = _pairs(teacher_channels, "teacher_channels")
            if len(s_channels) != len(self.student_pairs) or len(t_channels) != len(self.student_pairs):
                raise ConfigError(
                    f"FSP: student_channels {list(s_channels)} and teacher_channels {list(t_channels)} need one "
                    f"[C_first, C_second] entry per layer pair ({len(self.student_pairs)} pairs)"
                )
            for adapters, s_pair, t_pair in zip(self.adapters, s_channels, t_channels):
                for k, (c_s, c_t) in enumerate(zip(s_pair, t_pair)):
                    if not all(isinstance(c, int) and c > 0 for c in (c_s, c_t)):
                        raise ConfigError(f"FSP: channel counts must be positive integers, got {c_s!r} and {c_t!r}")
                    if c_s != c_t:
                        adapters[k] = nn.Conv2d(c_s, c_t, kernel_size=1)

    @property
    def student_layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(path for pair in self.student_pairs for path in pair))

    @property
    def teacher_layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(path for pair in self.teacher_pairs for path in pair))

    @staticmethod
    def flow(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = pool_to_common_size(a, b)
        return torch.einsum("nihw,njhw->nij", a, b) / (a.shape[-2] * a.shape[-1])

    def forward(self, student: Outputs, teacher: Outputs, target: torch.Tensor) -> torch.Tensor:
        loss = 0.0
        for adapters, s_pair, t_pair in zip(self.adapters, self.student_pairs, self.teacher_pairs):
            s = [adapter(student.features[path]).float() for adapter, path in zip(adapters, s_pair)]
            t = [teacher.features[path].float() for path in t_pair]
            if any(f.dim() != 4 for f in (*s, *t)) or len({f.shape[0] for f in (*s, *t)}) != 1:
                shapes = ", ".join(f"{p!r}: {tuple(f.shape)}" for p, f in zip((*s_pair, *t_pair), (*s, *t)))
                raise FeatureShapeError(
                    f"FSP: layer pairs student {list(s_pair)} / teacher {list(t_pair)} must all be "
                    f"(batch, channels, height, width) with one batch size; got {shapes}"
                )
            with full_precision(s[0]):
                g_s, g_t = self.flow(*s), self.flow(*t)
            if g_s.shape != g_t.shape:
                raise FeatureShapeError(
                    f"FSP: student FSP matrix {tuple(g_s.shape)} (from layers {list(s_pair)}, after the adapters) "
                    f"does not match teacher FSP matrix {tuple(g_t.shape)} (from layers {list(t_pair)}); set "
                    f"student_channels/teacher_channels to add 1x1-conv adapters, or choose other layers"
                )
            loss = loss + (g_s - g_t).pow(2).sum((1, 2)).mean()
        return loss
