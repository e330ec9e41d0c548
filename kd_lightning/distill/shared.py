"""Helpers several loss terms share: shape errors, pooling to a common size, flattened pairs, float32 regions."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kd_lightning.distill.taps import Outputs
from kd_lightning.distill.terms import FeatureTerm
from kd_lightning.errors import FeatureShapeError


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
