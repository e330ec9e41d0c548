"""Generator objectives for data-free distillation: what makes generated images useful to distil from.

DAFL (Chen et al., "Data-Free Learning of Student Networks", ICCV 2019) trains the generator so that the
frozen teacher, shown its images, responds as it does to real data: confidently (one-hot loss), with
strong features (activation loss), and spread over all classes (information-entropy loss).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def one_hot_loss(teacher_logits: torch.Tensor) -> torch.Tensor:
    """DAFL's L_oh: cross-entropy of the teacher's logits with its own arg-max (pseudo-)labels."""
    return F.cross_entropy(teacher_logits.float(), teacher_logits.argmax(1))


def activation_loss(teacher_features: torch.Tensor) -> torch.Tensor:
    """DAFL's L_a: minus the mean absolute activation of the teacher's features before its classifier."""
    return -teacher_features.float().abs().mean()


def information_entropy_loss(teacher_logits: torch.Tensor) -> torch.Tensor:
    """DAFL's L_ie: minus the entropy (in nats) of the teacher's class distribution averaged over the batch.

    Minimal (``-log(classes)``) when the batch's images are spread evenly over the classes. (DAFL's code
    uses log10, i.e. this divided by ln 10: scale ``entropy`` weights from there accordingly.)
    """
    mean_p = F.softmax(teacher_logits.float(), dim=1).mean(0)
    return (mean_p * torch.log(mean_p.clamp_min(1e-12))).sum()


class DAFLGeneratorLoss(nn.Module):
    """``one_hot·L_oh + activation·L_a + entropy·L_ie`` on the teacher's outputs for generated images.

    Called with the teacher's logits and its pre-classifier features; returns the weighted total and the
    unweighted ``[L_oh, L_a, L_ie]``. ``names`` are the parts' names for logging (``train/gen_<name>``).
    The defaults are DAFL's MNIST weights (``activation=0.1``, ``entropy=5`` with its log10 entropy).
    """

    names = ("one_hot", "activation", "entropy")

    def __init__(self, one_hot: float = 1.0, activation: float = 0.1, entropy: float = 5.0 / 2.302585):
        super().__init__()
        self.weights = (one_hot, activation, entropy)

    def forward(self, teacher_logits: torch.Tensor, teacher_features: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        parts = [
            one_hot_loss(teacher_logits),
            activation_loss(teacher_features),
            information_entropy_loss(teacher_logits),
        ]
        return sum(w * part for w, part in zip(self.weights, parts)), parts
