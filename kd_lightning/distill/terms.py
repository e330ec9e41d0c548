"""Loss terms. A distillation loss is a config-composed, weighted sum of these.

Each term is an ``nn.Module`` called as ``term(student, teacher, target)`` with the student's and the
teacher's :class:`~kd_lightning.distill.taps.Outputs` and the labels; it returns the unweighted scalar,
and the training module multiplies by ``term.weight``. Terms name the module paths they read
(``student_layers``, ``teacher_layers``) so the module taps just those, and own their trainable
adapters (optimised with the student).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kd_lightning.distill.taps import Outputs
from kd_lightning.errors import ConfigError, FeatureShapeError


class LossTerm(nn.Module):
    """Base class: ``weight`` and the layers read; ``uses_teacher=False`` terms work without a teacher.

    A term with ``uses_index = True`` is called as ``term(student, teacher, target, index=index)``, with each
    sample's position in the training split; if it has ``allocate(num_samples, device)``, the training module
    calls it when fitting starts to size its per-sample state (e.g. CRD's memory bank), with ``labels=`` the
    training split's labels if ``allocate`` takes that argument. Buffers that a term keeps identical on every
    DDP rank itself (CRD's gathered memory banks) are named in ``ddp_synced_buffers``: the training module tells
    DDP not to broadcast them from rank 0 before every forward.
    """

    uses_teacher = True
    uses_index = False

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = weight

    @property
    def student_layers(self) -> tuple[str, ...]:
        return ()

    @property
    def teacher_layers(self) -> tuple[str, ...]:
        return ()


class CrossEntropy(LossTerm):
    """Hard-label cross-entropy of the student's logits."""

    uses_teacher = False

    def __init__(self, weight: float = 1.0, label_smoothing: float = 0.0):
        super().__init__(weight)
        self.label_smoothing = label_smoothing

    def forward(self, student: Outputs, teacher: Outputs | None, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(student.logits, target, label_smoothing=self.label_smoothing)


def soft_target_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al.: KL(softmax(t/T) ‖ softmax(s/T)), summed over classes, averaged over the batch, times T²."""
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * temperature**2


class SoftTargetKD(LossTerm):
    """Soft-target knowledge distillation (Hinton et al. 2015) at ``temperature``."""

    def __init__(self, weight: float = 1.0, temperature: float = 4.0):
        super().__init__(weight)
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, student: Outputs, teacher: Outputs, target: torch.Tensor) -> torch.Tensor:
        return soft_target_kl(student.logits, teacher.logits, self.temperature)


class FeatureTerm(LossTerm):
    """A term comparing one student layer with one teacher layer."""

    def __init__(self, student_layer: str, teacher_layer: str, weight: float = 1.0):
        super().__init__(weight)
        self.student_layer, self.teacher_layer = student_layer, teacher_layer

    @property
    def student_layers(self) -> tuple[str, ...]:
        return (self.student_layer,)

    @property
    def teacher_layers(self) -> tuple[str, ...]:
        return (self.teacher_layer,)

    def check_shapes(self, student: torch.Tensor, teacher: torch.Tensor, what: str) -> None:
        if student.shape != teacher.shape:
            raise FeatureShapeError(
                f"{type(self).__name__}: student {what} {tuple(student.shape)} (from layer {self.student_layer!r}) "
                f"does not match teacher {what} {tuple(teacher.shape)} (from layer {self.teacher_layer!r}); "
                f"add or resize the term's adapter, or choose other layers"
            )


class CosineFeature(FeatureTerm):
    """Mean ``1 - cos`` between flattened student and teacher features (the tutorial's cosine variant).

    ``teacher_pool`` average-pools the flattened teacher features by that factor first (the tutorial
    pools DeepNN's 2048 features to 1024 to match LightNN).
    """

    def __init__(self, student_layer: str, teacher_layer: str, weight: float = 1.0, teacher_pool: int = 1):
        super().__init__(student_layer, teacher_layer, weight)
        self.teacher_pool = teacher_pool

    def forward(self, student: Outputs, teacher: Outputs, target: torch.Tensor) -> torch.Tensor:
        s = torch.flatten(student.features[self.student_layer], 1)
        t = torch.flatten(teacher.features[self.teacher_layer], 1)
        if self.teacher_pool > 1:
            t = F.avg_pool1d(t.unsqueeze(1), self.teacher_pool).squeeze(1)
        self.check_shapes(s, t, "flattened features")
        return (1 - F.cosine_similarity(s.float(), t.float(), dim=1)).mean()


class HintMSE(FeatureTerm):
    """FitNets hint: MSE between ``adapter(student feature)`` and the teacher feature.

    The adapter (the tutorial's regressor, e.g. ``Conv2d(16, 32, 3, padding=1)``) is trainable and is
    optimised together with the student.
    """

    def __init__(
        self, student_layer: str, teacher_layer: str, adapter: nn.Module | None = None, weight: float = 1.0
    ):
        super().__init__(student_layer, teacher_layer, weight)
        self.adapter = adapter if adapter is not None else nn.Identity()

    def forward(self, student: Outputs, teacher: Outputs, target: torch.Tensor) -> torch.Tensor:
        s = self.adapter(student.features[self.student_layer])
        t = teacher.features[self.teacher_layer]
        self.check_shapes(s, t, "feature after the adapter")
        return F.mse_loss(s.float(), t.float())
