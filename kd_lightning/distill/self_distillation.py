"""Self-distillation without a separate teacher: Tf-KD's virtual teacher, and BYOT's auxiliary exit heads.

* :class:`TfKDVirtualTeacher` (Yuan et al. 2020, "Revisiting Knowledge Distillation via Label Smoothing
  Regularization", Tf-KD_reg): a hand-designed teacher distribution as a loss term; it needs no teacher, so
  it works in :class:`~kd_lightning.modules.SupervisedModule`.
* :class:`ExitHead` (Zhang et al. 2019, "Be Your Own Teacher", BYOT): the trainable auxiliary classifier that
  :class:`~kd_lightning.modules.SelfDistillationModule` attaches to an intermediate layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kd_lightning.distill.taps import Outputs
from kd_lightning.distill.terms import LossTerm
from kd_lightning.errors import ConfigError


def virtual_teacher_kl(
    logits: torch.Tensor, target: torch.Tensor, correct_prob: float, temperature: float
) -> torch.Tensor:
    """Tf-KD_reg's regulariser without its multiplier: KL(softmax(p^d/T) ‖ softmax(logits)), mean over all entries.

    ``p^d`` is the virtual teacher: ``correct_prob`` on the labelled class, ``(1 - correct_prob)/(K - 1)`` on
    each other class. As in the official code (``loss_kd_regularization`` in yuanli2333/Teacher-free-Knowledge-
    Distillation), ``p^d`` itself is softened as if it were logits (``softmax(p^d / T)``), the student's logits
    are not divided by T, and the KL is ``nn.KLDivLoss()``'s element mean (sum over classes and batch / (B·K)).
    """
    logits = logits.float()
    num_classes = logits.shape[1]
    virtual = torch.full_like(logits, (1.0 - correct_prob) / (num_classes - 1))
    virtual.scatter_(1, target.unsqueeze(1), correct_prob)
    log_q = F.log_softmax(virtual / temperature, dim=1)
    log_p = F.log_softmax(logits, dim=1)
    return F.kl_div(log_p, log_q, reduction="batchmean", log_target=True) / num_classes


class TfKDVirtualTeacher(LossTerm):
    """Teacher-free KD with a manually designed teacher (Tf-KD_reg, Yuan et al. CVPR 2020).

    Returns ``multiplier · KL(softmax(p^d/T) ‖ softmax(z))`` averaged over batch *and* classes
    (see :func:`virtual_teacher_kl`). The paper's objective is ``(1 - α)·CE + α·this``: configure it as
    ``ce.weight = 1 - α`` and this term's ``weight = α``. The official recipes: ``correct_prob = 0.99``
    (the paper asks for ``a ≥ 0.9``); ResNet18 on CIFAR-100 ``α = 0.1, T = 20, multiplier = 100``; MobileNetV2
    ``α = 0.95, T = 40, multiplier = 1``. There is no ``T²`` factor: ``multiplier`` takes its place, and
    because of the element mean the per-sample strength is ``multiplier / K``.
    """

    uses_teacher = False

    def __init__(
        self, weight: float = 1.0, correct_prob: float = 0.99, temperature: float = 20.0, multiplier: float = 1.0
    ):
        super().__init__(weight)
        if not 0.0 < correct_prob <= 1.0:
            raise ConfigError(f"correct_prob must be in (0, 1], got {correct_prob}")
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        self.correct_prob, self.temperature, self.multiplier = correct_prob, temperature, multiplier

    def forward(self, student: Outputs, teacher: Outputs | None, target: torch.Tensor) -> torch.Tensor:
        return virtual_teacher_kl(student.logits, target, self.correct_prob, self.temperature) * self.multiplier


class ExitHead(nn.Module):
    """A BYOT shallow classifier: bottleneck → global average pool → linear; returns ``(logits, feature)``.

    For a ``C×H×W`` feature map the bottleneck is BYOT's ``branchBottleNeck``: 1×1 conv to ``width``,
    a ``stride×stride`` conv with that stride (down to the deepest stage's resolution), 1×1 conv to
    ``out_dim``, each followed by BatchNorm and ReLU. For a flat ``D`` feature (an MLP's hidden layer) it is
    two Linear-BatchNorm-ReLU layers. ``feature`` (the pooled bottleneck output, ``out_dim`` wide, the
    classifier's input) is what the feature hint compares with the network's deepest feature.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        out_dim: int,
        num_classes: int,
        width: int,
        stride: Sequence[int] = (1, 1),
    ):
        super().__init__()
        if len(in_shape) == 3:
            stride = tuple(stride)
            self.bottleneck = nn.Sequential(
                nn.Conv2d(in_shape[0], width, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.Conv2d(width, width, stride, stride=stride, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.Conv2d(width, out_dim, 1, bias=False),
                nn.BatchNorm2d(out_dim),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
            )
        elif len(in_shape) == 1:
            self.bottleneck = nn.Sequential(
                nn.Linear(in_shape[0], width, bias=False),
                nn.BatchNorm1d(width),
                nn.ReLU(),
                nn.Linear(width, out_dim, bias=False),
                nn.BatchNorm1d(out_dim),
                nn.ReLU(),
            )
        else:
            raise ConfigError(f"an exit head needs a C×H×W or a flat feature, got per-sample shape {tuple(in_shape)}")
        self.fc = nn.Linear(out_dim, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feature = self.bottleneck(x)
        return self.fc(feature), feature
