"""Generator objectives for data-free distillation: what makes generated images useful to distil from.

DAFL (Chen et al., "Data-Free Learning of Student Networks", ICCV 2019) trains the generator so that the
frozen teacher, shown its images, responds as it does to real data: confidently (one-hot loss), with
strong features (activation loss), and spread over all classes (information-entropy loss).

An optional prior (``input_stats``) adds what the input normalisation already knows about the data: the
generated batch, in normalised space, should have mean 0 and standard deviation 1 per channel (as the
real data has, by construction of ``data.mean``/``data.std``). With a generator whose output is valid
pixels (``Generator(mean=..., std=...)``) this fixes the images' polarity and sparsity (MNIST: mostly dark
background, few bright strokes) without looking at any image; it plays the role DeepInversion's (Yin et
al., CVPR 2020) BatchNorm-statistics prior plays for teachers that have BatchNorm layers.
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


def input_stats_loss(images: torch.Tensor) -> torch.Tensor:
    """Per-channel ``mean² + (std - 1)²`` of a normalised batch (N, C, H, W), averaged over channels: 0 for data
    with the statistics the normalisation assumes."""
    x = images.float().transpose(0, 1).flatten(1)  # C, N·H·W
    return (x.mean(1) ** 2 + (x.std(1) - 1) ** 2).mean()


class DAFLGeneratorLoss(nn.Module):
    """``one_hot·L_oh + activation·L_a + entropy·L_ie + input_stats·L_stats`` for a batch of generated images.

    Called with the teacher's logits and pre-classifier features for the images, and the images; returns
    the weighted total and the unweighted ``[L_oh, L_a, L_ie, L_stats]``. ``names`` are the parts' names for
    logging (``train/gen_<name>``). The defaults are DAFL's MNIST weights (``activation=0.1``,
    ``entropy=5`` with its log10 entropy) and no input-statistics prior.
    """

    names = ("one_hot", "activation", "entropy", "input_stats")

    def __init__(self, one_hot: float = 1.0, activation: float = 0.1, entropy: float = 5.0 / 2.302585,
                 input_stats: float = 0.0):
        super().__init__()
        self.weights = (one_hot, activation, entropy, input_stats)

    def forward(
        self, teacher_logits: torch.Tensor, teacher_features: torch.Tensor, images: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        parts = [
            one_hot_loss(teacher_logits),
            activation_loss(teacher_features),
            information_entropy_loss(teacher_logits),
            input_stats_loss(images),
        ]
        return sum(w * part for w, part in zip(self.weights, parts)), parts
