"""Batches formed by slicing tensors that stay where they are (host memory, or the GPU), no per-sample Python."""

from __future__ import annotations

import math

import torch


class ResidentBatches:
    """Iterates ``(images, labels, indices)`` batches over tensors kept on one device.

    Each epoch draws a permutation from ``seed + epoch`` (on the tensors' device) and slices it, so
    every sample of this rank's shard comes exactly once per epoch and a run is reproducible from the
    seed. With ``world_size > 1`` the permutation is padded to a multiple of the world size, as
    ``DistributedSampler`` does, and rank ``r`` takes positions ``r, r + world_size, ...``.
    Lightning calls :meth:`set_epoch` through the ``sampler`` attribute at each epoch start, resumed runs too.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.yielded, self.resume_at = 0, 0  # batches of this epoch handed out; where a resumed epoch starts
        self.sampler = self  # Lightning's fit loop calls ``loader.sampler.set_epoch(epoch)``
        self.batch_sampler = None  # ... and reads this to decide whether the loader shuffles

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def shard_size(self) -> int:
        return math.ceil(len(self.labels) / self.world_size)

    def __len__(self) -> int:
        if self.drop_last:
            return self.shard_size // self.batch_size
        return math.ceil(self.shard_size / self.batch_size)

    def shard_indices(self) -> torch.Tensor:
        """This rank's sample indices for the current epoch, in iteration order."""
        n, device = len(self.labels), self.labels.device
        if self.shuffle:
            generator = torch.Generator(device=device).manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=generator, device=device)
        else:
            order = torch.arange(n, device=device)
        padding = self.shard_size * self.world_size - n
        if padding:
            order = torch.cat([order, order[:padding]])
        return order[self.rank :: self.world_size]

    def state_dict(self) -> dict:
        """Lightning saves this in checkpoints: a run resumed mid-epoch continues at the next unseen batch."""
        return {"epoch": self.epoch, "batches": self.yielded}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.resume_at = int(state.get("epoch", 0)), int(state.get("batches", 0))

    def __iter__(self):
        order = self.shard_indices()
        first, self.resume_at = self.resume_at, 0
        self.yielded = first
        for start in range(first * self.batch_size, len(self) * self.batch_size, self.batch_size):
            self.yielded += 1
            index = order[start : start + self.batch_size]
            # index_select: a fraction of advanced indexing's per-call overhead, which the fast path pays each step
            yield self.images.index_select(0, index), self.labels.index_select(0, index), index
