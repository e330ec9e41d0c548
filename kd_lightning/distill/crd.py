"""Contrastive representation distillation (Tian, Krishnan & Isola, ICLR 2020), as in the official RepDistiller code.

CRD needs each training sample's index (its row in the memory bank): it sets ``uses_index = True``, so the
training module calls it as ``term(student, teacher, target, index=index)`` and sizes its memory bank
(:meth:`allocate`) from ``trainer.datamodule.num_train_samples`` when fitting starts, passing the training
split's labels too (for ``negatives="other_class"``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kd_lightning.distill.distributed import broadcast_from_first, gather_samples, mean_over_ranks, world_size
from kd_lightning.distill.shared import full_precision
from kd_lightning.distill.taps import Outputs
from kd_lightning.distill.terms import FeatureTerm
from kd_lightning.errors import ConfigError, FeatureShapeError

NCE_EPS = 1e-7  # the official ContrastLoss's eps
KEY_BLOCK = 1 << 24  # other-class negatives: random keys made per block of (row, sample) pairs (64 MiB of float32)


class Embed(nn.Module):
    """Flatten, linear projection to ``dim_out``, L2 normalisation (RepDistiller's ``Embed``)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in the projection's dtype: float32 under autocast, bf16 or float64 when the precision casts the weights
        return F.normalize(self.linear(x.flatten(1).to(self.linear.weight.dtype)), dim=1)


def nce_loss(scores: torch.Tensor, num_samples: int) -> torch.Tensor:
    """The official ``ContrastLoss``: NCE with the positive in column 0 and ``K`` negatives after it.

    ``scores`` are ``exp(v·m / T) / Z`` (batch, K + 1). With noise distribution ``Pn = 1 / num_samples``:
    ``-(Σ_b log(P⁺ / (P⁺ + K·Pn + eps)) + Σ_{b,k} log(K·Pn / (P⁻ + K·Pn + eps))) / batch``.
    """
    k = scores.shape[1] - 1
    noise = k / num_samples
    positive, negative = scores[:, 0], scores[:, 1:]
    log_d1 = torch.log(positive / (positive + noise + NCE_EPS))
    log_d0 = torch.log(noise / (negative + noise + NCE_EPS))
    return -(log_d1.sum() + log_d0.sum()) / scores.shape[0]


class CRD(FeatureTerm):
    """CRD loss between ``student_layer`` and ``teacher_layer`` features (flattened).

    Both are embedded to ``feat_dim`` by a trainable linear head + L2 normalisation (``embed_s``,
    ``embed_t``; trained with the student, the teacher network stays frozen). Two memory banks hold one
    embedding per training sample, ``memory_s`` (student) and ``memory_t`` (teacher), initialised uniformly
    in ±1/√(feat_dim/3). For a batch with sample indices ``index``, each sample contrasts against ``nce_k``
    indices drawn uniformly with replacement from the training set (``negatives="uniform"``: RepDistiller's
    ``ContrastMemory`` fallback) or ``nce_k`` distinct ones from the training samples of the other classes
    (``negatives="other_class"``: RepDistiller's CIFAR-100 loader, mode "exact", whose ``np.random.choice`` draws
    without replacement unless a class has fewer than ``nce_k`` others; needs the training labels, which the
    training module passes to :meth:`allocate`), with its own index as the positive: the student embedding is
    scored against the teacher bank and the teacher embedding against the student bank, ``exp(v·m / nce_t)``
    divided by a constant ``Z`` fixed from the first batch
    (``mean · num_samples``), and the loss is the sum of the two :func:`nce_loss` values. Then the rows
    ``index`` of each bank move to ``nce_mom · old + (1 - nce_mom) · new`` and are renormalised.

    The banks are buffers (saved in checkpoints, so resuming continues them) of ``num_samples`` rows,
    created by :meth:`allocate` on the training device; the normaliser ``Z`` is set on the device (no host
    sync), so the term can run inside a captured CUDA graph. Defaults are the paper's: ``feat_dim`` 128,
    ``nce_k`` 16384, ``nce_t`` 0.07, ``nce_mom`` 0.5 (and weight β = 0.8 next to CE).

    Which negatives: with many classes the two samplers differ little (CIFAR-100: 1 % of uniform draws share
    the anchor's class). With ten they do not: on CIFAR-10 (ResNet-56 → ResNet-20, RepDistiller's protocol in
    30 epochs, one H200, seed 0, one teacher) CRD reached 87.76 % with other-class negatives against 89.84 % with
    uniform ones (CE 89.26 ± 0.33; at 60 epochs other-class CRD 89.01 %, CE 90.85 %;
    ``docs/results/cifar10_crd_negatives_h200_601da38.md``). A likely reason: no negative ever separates two
    samples of one class, so the embedding may collapse each class. The CIFAR-10 experiments draw uniformly.

    Under DDP the banks are one logical bank, a copy on every rank: :meth:`allocate` broadcasts rank 0's
    initial rows, and each step every rank gathers all ranks' indices and embeddings
    (:mod:`~kd_lightning.distill.distributed`) and applies the same update, so the copies stay identical and
    every row is refreshed once per epoch, whichever rank's shard holds its sample. Each rank draws its
    negatives for its own samples from the whole bank (its own random stream: valid, not identical across
    ranks), and ``Z`` is the mean over the ranks of their first batches' ``mean · num_samples`` (equal batch
    sizes: the mean over the whole first global batch). The bank so evolves as on one device with a
    ``world_size`` times larger batch (RepDistiller trains on one GPU; there is no official DDP code to follow).
    A sample that two ranks hold (the padding that makes the shards equal) is updated once, with the first
    rank's embedding (:func:`~kd_lightning.distill.distributed.first_occurrences`).
    """

    uses_index = True
    # buffers this term keeps identical on every rank itself (see above): DDP need not broadcast them from rank 0
    # before every forward (for the banks, 2 · num_samples · feat_dim floats a step)
    ddp_synced_buffers = ("memory_s", "memory_t", "normalizer", "labels", "by_class", "class_start", "class_count")

    def __init__(
        self,
        student_layer: str,
        teacher_layer: str,
        student_dim: int,
        teacher_dim: int,
        weight: float = 0.8,
        feat_dim: int = 128,
        nce_k: int = 16384,
        nce_t: float = 0.07,
        nce_mom: float = 0.5,
        negatives: str = "uniform",
    ):
        super().__init__(student_layer, teacher_layer, weight)
        if nce_k < 1 or feat_dim < 1 or not nce_t > 0 or not 0 <= nce_mom < 1:
            raise ConfigError(
                f"CRD needs nce_k >= 1, feat_dim >= 1, nce_t > 0 and 0 <= nce_mom < 1; got nce_k={nce_k}, "
                f"feat_dim={feat_dim}, nce_t={nce_t}, nce_mom={nce_mom}"
            )
        self.student_dim, self.teacher_dim, self.feat_dim = student_dim, teacher_dim, feat_dim
        if negatives not in ("uniform", "other_class"):
            raise ConfigError(f"CRD negatives must be 'uniform' or 'other_class', got {negatives!r}")
        self.nce_k, self.nce_t, self.nce_mom, self.negatives = nce_k, nce_t, nce_mom, negatives
        self.embed_s, self.embed_t = Embed(student_dim, feat_dim), Embed(teacher_dim, feat_dim)
        self.register_buffer("memory_s", torch.empty(0, feat_dim))
        self.register_buffer("memory_t", torch.empty(0, feat_dim))
        self.register_buffer("normalizer", torch.full((2,), -1.0))  # Z for (student, teacher) anchors; < 0: unset
        # other_class negatives: the training labels; for classes with fewer than nce_k others (drawn with
        # replacement there, as the official loader does) the training indices sorted by class, each class's first
        # position and size there (derived from the labels at every fit start, so not saved in checkpoints)
        for name in ("labels", "by_class", "class_start", "class_count"):
            self.register_buffer(name, torch.empty(0, dtype=torch.long), persistent=False)
        self._short_classes = ""

    @property
    def num_samples(self) -> int:
        return self.memory_s.shape[0]

    def allocate(self, num_samples: int, device: torch.device | str, labels: torch.Tensor | None = None) -> None:
        """Create the memory banks for ``num_samples`` training samples on ``device`` (kept if restored);
        ``labels`` (the training split's, in index order) for ``negatives="other_class"``."""
        if self.negatives == "other_class":
            self._index_classes(num_samples, device, labels)
        if self.num_samples == num_samples:
            return
        if self.num_samples:
            raise ConfigError(
                f"CRD's memory bank has {self.num_samples} rows (from a checkpoint), but the training split has "
                f"{num_samples} samples: resume with the same data settings"
            )
        std = 1.0 / math.sqrt(self.feat_dim / 3)
        self.memory_s = torch.rand(num_samples, self.feat_dim, device=device).mul_(2 * std).sub_(std)
        self.memory_t = torch.rand(num_samples, self.feat_dim, device=device).mul_(2 * std).sub_(std)
        self.normalizer = torch.full((2,), -1.0, device=device)
        broadcast_from_first(self.memory_s)  # DDP: one bank, whatever each rank's random state
        broadcast_from_first(self.memory_t)

    def _index_classes(self, num_samples: int, device: torch.device | str, labels: torch.Tensor | None) -> None:
        if labels is None or len(labels) != num_samples:
            raise ConfigError(
                f"CRD with negatives='other_class' needs the labels of all {num_samples} training samples; got "
                f"{'none' if labels is None else len(labels)} (fit with kd_lightning's datamodule and modules)"
            )
        labels = labels.to(device=device, dtype=torch.long)
        counts = torch.bincount(labels)
        if (counts == num_samples).any():
            raise ConfigError("CRD with negatives='other_class' needs training samples of at least two classes")
        self.labels = labels
        self.by_class = torch.argsort(labels, stable=True)
        self.class_count = counts
        self.class_start = torch.cumsum(counts, 0) - counts
        short = num_samples - counts < self.nce_k  # classes with fewer than nce_k others (decided once per fit)
        self._short_classes = "all" if short.all() else "some" if short.any() else ""

    def draw_negatives(self, index: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """(batch, nce_k) bank rows: uniform over the training set (with replacement), or ``nce_k`` distinct
        samples of the other classes (vectorised, no host sync; see :meth:`_other_class`)."""
        if self.negatives == "uniform":
            return torch.randint(0, self.num_samples, (index.shape[0], self.nce_k), device=index.device)
        if target is None or not len(self.labels):
            raise ConfigError("CRD with negatives='other_class' needs the batch labels and the class index (allocate)")
        return self._other_class(target)

    def _other_class(self, target: torch.Tensor) -> torch.Tensor:
        """A uniform ``nce_k``-subset of the other classes' samples per row: the ``nce_k`` smallest of one random
        key per training sample, the anchor's class keyed above every draw. Rows of a class with fewer than
        ``nce_k`` others draw with replacement instead (the official loader's ``replace=True``): a uniform
        position among the N - n_c samples outside class c in the class-sorted order, skipping class c's block.
        Keys are made for at most ``KEY_BLOCK`` (row, sample) pairs at a time, so memory stays bounded."""
        n, short = self.num_samples, self._short_classes
        if short:
            start, count = self.class_start[target].unsqueeze(1), self.class_count[target].unsqueeze(1)
            position = (torch.rand((target.shape[0], self.nce_k), device=target.device) * (n - count)).long()
            with_replacement = self.by_class[position + (position >= start) * count]
            if short == "all":
                return with_replacement
        rows, block = [], max(1, KEY_BLOCK // n)
        for first in range(0, target.shape[0], block):
            t = target[first:first + block]
            keys = torch.rand(t.shape[0], n, device=t.device)
            keys.masked_fill_(self.labels.unsqueeze(0) == t.unsqueeze(1), 2.0)  # rand < 1: never among the smallest
            rows.append(torch.topk(keys, self.nce_k, dim=1, largest=False, sorted=False).indices)
        negatives = torch.cat(rows)
        return torch.where(n - count < self.nce_k, with_replacement, negatives) if short else negatives

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("memory_s", "memory_t"):  # a checkpoint's banks replace empty (not yet allocated) ones
            saved, current = state_dict.get(prefix + name), getattr(self, name)
            if saved is not None and saved.shape != current.shape:
                setattr(self, name, torch.empty(saved.shape, dtype=current.dtype, device=current.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def scores(self, memory: torch.Tensor, contrast_index: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        """``exp(memory[contrast_index[b, k]] · anchor[b] / nce_t)`` (batch, K + 1); the bank gets no gradient."""
        memory = memory.detach()
        if memory.shape[0] < contrast_index.shape[1] * memory.shape[1]:
            # every dot product, then pick: (batch, N) floats instead of the (batch, K + 1, feat_dim) gathered rows;
            # a copy of the bank, since backward needs it as it is now and the bank is updated in place after
            dots = torch.gather(anchor @ memory.to(anchor.dtype, copy=True).t(), 1, contrast_index)
        else:  # the official gather + bmm
            dots = torch.bmm(memory[contrast_index].to(anchor.dtype), anchor.unsqueeze(2)).squeeze(2)
        return torch.exp(dots / self.nce_t)

    def forward(
        self, student: Outputs, teacher: Outputs, target: torch.Tensor, index: torch.Tensor | None = None
    ) -> torch.Tensor:
        if index is None:
            raise ConfigError(
                "CRD needs the batch's sample indices: call it as term(student, teacher, target, index=index) "
                "(kd_lightning's training modules do, from the batch's third element)"
            )
        n = self.num_samples
        if n == 0:
            raise ConfigError("CRD's memory bank is empty: the training module allocates it when fitting starts")
        s = student.features[self.student_layer].flatten(1).float()
        t = teacher.features[self.teacher_layer].flatten(1).float()
        if s.shape[1] != self.student_dim or t.shape[1] != self.teacher_dim:
            raise FeatureShapeError(
                f"CRD: student features {tuple(s.shape)} (layer {self.student_layer!r}) and teacher features "
                f"{tuple(t.shape)} (layer {self.teacher_layer!r}) do not have student_dim={self.student_dim} and "
                f"teacher_dim={self.teacher_dim} features per sample"
            )
        with full_precision(s):
            v_s, v_t = self.embed_s(s), self.embed_t(t)
            negatives = self.draw_negatives(index, target)
            contrast_index = torch.cat([index.view(-1, 1), negatives], dim=1)
            out_s = self.scores(self.memory_t, contrast_index, v_s)  # student anchors, teacher bank (official out_v1)
            out_t = self.scores(self.memory_s, contrast_index, v_t)  # teacher anchors, student bank (official out_v2)
            unset = mean_over_ranks(torch.stack([out_s.mean(), out_t.mean()]).detach() * n)
            z = torch.where(self.normalizer < 0, unset, self.normalizer)
            loss = nce_loss(out_s / z[0], n) + nce_loss(out_t / z[1], n)
            with torch.no_grad():
                self.normalizer.copy_(z)
                if world_size() > 1:  # every rank's rows, the same update on every rank
                    index, (v_s, v_t) = gather_samples(index, [v_s, v_t], n)
                self.update(self.memory_s, index, v_s)
                self.update(self.memory_t, index, v_t)
        return loss

    def update(self, memory: torch.Tensor, index: torch.Tensor, embedding: torch.Tensor) -> None:
        """Momentum update of the bank rows ``index``, renormalised to unit length."""
        rows = memory.index_select(0, index).mul_(self.nce_mom).add_(embedding.detach(), alpha=1 - self.nce_mom)
        memory.index_copy_(0, index, F.normalize(rows, dim=1))
