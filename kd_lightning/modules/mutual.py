"""Online distillation: deep mutual learning, a cohort of networks trained together, each taught by the others."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from kd_lightning.errors import ConfigError
from kd_lightning.modules.meter import accuracy_counts
from kd_lightning.modules.supervised import SupervisedModule


def mutual_learning_losses(
    logits: Sequence[torch.Tensor], target: torch.Tensor, temperature: float = 1.0
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per cohort member ``k``: ``CE_k`` and ``KL_k = mean over l ≠ k of KL(p_l ‖ p_k)·T²``.

    ``p = softmax(logits / T)``; the other members' distributions are detached, so ``KL_k`` only moves
    member ``k`` (Zhang et al. 2018, Eq. 10: ``L_k = L_C,k + 1/(K-1) · Σ_{l≠k} D_KL(p_l ‖ p_k)``; the paper
    uses ``T = 1``, where ``T²`` is 1).
    """
    if len(logits) < 2:
        raise ConfigError(f"mutual learning needs a cohort of at least two networks, got {len(logits)}")
    log_p = [F.log_softmax(z.float() / temperature, dim=1) for z in logits]
    targets = [lp.detach() for lp in log_p]
    ce = [F.cross_entropy(z, target) for z in logits]
    kl = []
    for k, lp in enumerate(log_p):
        others = [F.kl_div(lp, t, reduction="batchmean", log_target=True) for l, t in enumerate(targets) if l != k]
        kl.append(torch.stack(others).mean() * temperature**2)
    return ce, kl


class MutualLearningModule(SupervisedModule):
    """Deep Mutual Learning (Zhang, Xiang, Hospedales & Lu, CVPR 2018): ``net`` and ``peers`` learn together.

    Member 0 is ``net``, members ``1..K-1`` are ``peers`` (any architectures with the same classes). Member
    ``k`` minimises ``ce_weight·CE_k + kl_weight·KL_k`` (:func:`mutual_learning_losses`). All members are
    optimised by one optimizer on the sum of their losses: the other members' predictions are detached, so
    the gradient of the sum with respect to member ``k`` is exactly that of ``L_k``, and an element-wise
    optimizer (SGD, Adam, weight decay) steps each member as its own optimizer would. This is the paper's
    Algorithm 1 with simultaneous updates: there, member 2's step sees member 1's prediction after member 1's
    step (one more forward pass per member per batch); here every member sees the others' predictions from
    before the step. (Gradient clipping by a global norm would couple the members; none is configured.)

    Logs ``train/loss`` (the summed losses), ``train/ce_<k>`` and ``train/kl_<k>`` per member through the
    meter (no per-step host syncs), ``train/acc`` for member 0 and ``train/acc_<k>`` for the peers
    per epoch. ``val/acc``, ``val/loss``, ``test/acc`` and ``test/loss`` are member 0's (``self.net``, what the
    checkpoint callback monitors); the peers add ``val/acc_<k>`` and ``test/acc_<k>``. The checkpoint holds
    every member (``net.*``, ``peers.<k-1>.*``); ``load_teacher`` on it takes member 0.
    """

    def __init__(
        self,
        net: nn.Module,
        peers: Sequence[nn.Module],
        optimizer: Callable[..., torch.optim.Optimizer],
        temperature: float = 1.0,
        kl_weight: float = 1.0,
        ce_weight: float = 1.0,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        num_classes: int = 10,
    ):
        peers = list(peers or [])
        if not peers:
            raise ConfigError("mutual learning needs at least one peer besides the model: set distill.peers")
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        super().__init__(net, optimizer, None, scheduler, num_classes)
        self.peers = nn.ModuleList(peers)
        self.temperature, self.kl_weight, self.ce_weight = temperature, kl_weight, ce_weight
        self.cohort_size = 1 + len(peers)
        accuracy = functools.partial(MulticlassAccuracy, num_classes, average="micro", validate_args=False)
        self.val_peer_acc = nn.ModuleList(accuracy() for _ in peers)
        self.test_peer_acc = nn.ModuleList(accuracy() for _ in peers)

    def members(self) -> list[nn.Module]:
        return [self.net, *self.peers]

    def networks(self) -> list[nn.Module]:
        return self.members()

    def losses(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """``(summed loss, {"loss", "ce_<k>", "kl_<k>" per member, "#correct", "#count", "#correct_<k>" per peer})``."""
        logits = [member(x) for member in self.members()]
        ce, kl = mutual_learning_losses(logits, y, self.temperature)
        total = sum(self.ce_weight * c + self.kl_weight * d for c, d in zip(ce, kl))
        values = {"loss": total.detach()}
        for k, (c, d) in enumerate(zip(ce, kl)):
            values.update({f"ce_{k}": c.detach(), f"kl_{k}": d.detach()})
        values.update(accuracy_counts(logits[0], y))
        for k, z in enumerate(logits[1:], start=1):
            values.update(accuracy_counts(z, y, suffix=f"_{k}"))
        return total, values

    def _evaluate_peers(self, batch, metrics: nn.ModuleList, stage: str) -> None:
        x, y, _ = batch
        for k, (peer, metric) in enumerate(zip(self.peers, metrics), start=1):
            metric.update(peer(x), y)
            self.log(f"{stage}/acc_{k}", metric)

    def validation_step(self, batch, batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        self._evaluate_peers(batch, self.val_peer_acc, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        super().test_step(batch, batch_idx)
        self._evaluate_peers(batch, self.test_peer_acc, "test")
