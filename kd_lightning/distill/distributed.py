"""Collectives for per-sample state that must be one logical copy under DDP (the teacher cache, CRD's banks).

Terms and teachers are not LightningModules, so they cannot call ``LightningModule.all_gather``; these helpers use
``torch.distributed`` directly (the process group Lightning's DDP strategy created) and do nothing in a single
process, so the single-GPU step, and a CUDA graph captured from it, are unchanged (the check is host-side Python).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    """Processes in the default group (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_batches(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` concatenated along dim 0 in rank order (the tensor itself in a single process).

    Every rank must pass the same shape: the training loaders make it so (``ResidentBatches`` and Lightning's
    ``DistributedSampler`` pad the shards to equal size, so every rank's n-th batch has the same length). No
    gradient flows back through the gathered copies.
    """
    size = world_size()
    if size == 1:
        return tensor
    tensor = tensor.detach().contiguous()  # NCCL/gloo want dense tensors (a channels_last map is copied)
    parts = [torch.empty_like(tensor) for _ in range(size)]
    dist.all_gather(parts, tensor)
    return torch.cat(parts)


def gather_samples(index: torch.Tensor, values: list[torch.Tensor], num_rows: int) -> tuple[torch.Tensor, list]:
    """Every rank's sample ``index`` and per-sample ``values`` (rows matching ``index``), gathered in rank order; a
    sample that two ranks hold (shard padding) gets the first rank's values in every repeat (:func:`first_occurrences`),
    so a later ``index_copy_`` writes the same bits on every rank."""
    everyone = gather_batches(index)
    first = first_occurrences(everyone, num_rows)
    return everyone, [gather_batches(value)[first] for value in values]


def mean_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of ``tensor`` over the ranks (the tensor itself in a single process)."""
    size = world_size()
    if size == 1:
        return tensor
    return gather_batches(tensor.unsqueeze(0)).mean(0)


def broadcast_from_first(tensor: torch.Tensor) -> None:
    """Overwrites ``tensor`` in place with rank 0's (nothing in a single process)."""
    if world_size() > 1:
        dist.broadcast(tensor, src=0)


def first_occurrences(index: torch.Tensor, num_rows: int) -> torch.Tensor:
    """For each position of ``index`` (values below ``num_rows``), the first position holding the same value.

    A gathered batch repeats a few samples (the padding that makes the shards equal); ``values[first_occurrences(
    index, n)]`` gives the repeats one value, so an ``index_copy_`` of them writes the same bits on every rank,
    whichever repeat the device happens to write last (on CUDA duplicates' order is not deterministic). No host
    sync: the minimum position per value by ``scatter_reduce_`` (exact in any order).
    """
    positions = torch.arange(len(index), device=index.device)
    first = torch.full((num_rows,), len(index), dtype=torch.long, device=index.device)
    return first.scatter_reduce_(0, index, positions, reduce="amin")[index]
