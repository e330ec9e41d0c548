"""Exact resume: checkpoints written atomically at every epoch's end and every few minutes, the random-number
generators and the position in the epoch's data order saved with them.

A run interrupted at any checkpoint and resumed ends with the weights an uninterrupted run has: Lightning restores
weights, optimizer, scheduler, loop counters, buffers (CRD memory banks, DKD's warm-up counter) and, through
:class:`ResumableLoader`'s ``state_dict``, how far into the epoch the data order had got; :class:`RNGState` restores
the generators (dropout, CRD's negatives, augmentation); the training stage (distill.stages) follows from the restored epoch; the
teacher cache comes back from the checkpoint (``DistillationModule.on_save_checkpoint``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import lightning.pytorch as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, Sampler

from kd_lightning.errors import NonFiniteLossError
from kd_lightning.fast.lightning import collect_rng_states, no_unused_step_hooks, set_rng_states


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint beside its target, then renames it over the target.

    Lightning's ``_atomic_save`` serialises to memory first but then writes the target in place, so a process
    killed during the write (kill -9, a full disk) leaves a truncated ``last.ckpt``; ``os.replace`` within one
    folder is atomic on POSIX: a reader sees the old file or the new one. A checkpoint whose weights are not
    finite is refused, so a diverged run never replaces a good one.
    """

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        tensors = [t for t in checkpoint.get("state_dict", {}).values() if torch.is_tensor(t) and t.is_floating_point()]
        if tensors and not bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()):
            raise NonFiniteLossError(
                f"the weights are NaN/inf at step {checkpoint.get('global_step')} (epoch {checkpoint.get('epoch')}): "
                f"not writing {path}; the checkpoints written before are intact. Lower optimizer.lr or the weights "
                f"of the loss terms."
            )
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        super().save_checkpoint(checkpoint, tmp, storage_options)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)


@no_unused_step_hooks
class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt``: at the end of every epoch, whatever the monitored metric did, and every ``minutes`` of
    training inside long epochs; what a rerun resumes from.

    One callback for both, since Lightning's ``every_n_epochs`` and ``train_time_interval`` exclude each other
    and its manual-optimisation branch (the fast path's) honours neither inside an epoch: the interval is timed
    here and the file written through the Trainer's public ``save_checkpoint`` (atomic, with every callback's
    state). One callback rather than two also halves what Lightning runs per step for it (it calls every
    callback's batch hooks).
    """

    def __init__(self, dirpath: str, minutes: float = 10.0, filename: str = "last"):
        super().__init__(dirpath=dirpath, filename=filename, monitor=None, save_top_k=1, every_n_epochs=1,
                         enable_version_counter=False)
        self.interval_s, self.checked_at = minutes * 60, None
        # Lightning builds a profiler label from state_key for each hook call; it depends on constructor
        # arguments only, so it is built once
        self._state_key = super().state_key

    @property
    def state_key(self) -> str:
        return self._state_key

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        self.checked_at = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run:
            return
        now = time.monotonic()
        self.checked_at = self.checked_at or now
        if trainer.strategy.broadcast(now - self.checked_at >= self.interval_s):
            self.checked_at = now
            trainer.save_checkpoint(Path(self.dirpath) / f"{self.filename}{self.FILE_EXTENSION}")


@no_unused_step_hooks
class RNGState(L.Callback):
    """Saves torch's (CPU and CUDA), NumPy's and Python's generator states in every checkpoint; a resumed fit
    sets them back when training starts (after the sanity check, which Lightning runs with isolated RNG)."""

    def __init__(self):
        self._loaded: dict | None = None

    def state_dict(self) -> dict:
        states = collect_rng_states(include_cuda=torch.cuda.is_available())
        kind, keys, pos, has_gauss, cached = states["numpy"]
        # NumPy's state as a tensor: checkpoints stay loadable with torch.load(weights_only=True) (teachers are)
        states["numpy"] = (kind, torch.from_numpy(keys.astype("int64")), pos, has_gauss, cached)
        return {"rng": states}

    def load_state_dict(self, state_dict: dict) -> None:
        self._loaded = state_dict.get("rng")
        if self._loaded is not None and torch.is_tensor(self._loaded["numpy"][1]):
            kind, keys, pos, has_gauss, cached = self._loaded["numpy"]
            self._loaded = {**self._loaded, "numpy": (kind, keys.numpy().astype("uint32"), pos, has_gauss, cached)}

    def on_train_start(self, trainer, pl_module) -> None:
        if self._loaded is not None:
            states = dict(self._loaded)
            if not torch.cuda.is_available():
                states.pop("torch.cuda", None)
            set_rng_states(states)
            self._loaded = None


@no_unused_step_hooks
class LossExplosionGuard(L.Callback):
    """Stops training (``NonFiniteLossError`` naming the term and step) when a logged loss term exceeds
    ``factor`` times its first logged value (or the first total loss, whichever is larger), or is NaN/inf."""

    def __init__(self, factor: float = 1e4):
        self.factor = factor

    def on_fit_start(self, trainer, pl_module) -> None:
        if hasattr(pl_module, "loss_explosion_factor"):
            pl_module.loss_explosion_factor = self.factor


class EpochShuffle(Sampler[int]):
    """A random order of ``n`` samples drawn from ``seed + epoch``, like ``DistributedSampler`` on one process: an
    epoch's order depends on nothing but the seed and the epoch, so a resumed run sees the order it would have.
    ``skip`` leaves out the first samples of the next pass (those a mid-epoch checkpoint had already consumed)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch, self.skip = n, int(seed), 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        skip, self.skip = self.skip, 0
        return iter(order[skip:].tolist())


class ResumableLoader(DataLoader):
    """A training ``DataLoader`` over :class:`EpochShuffle` whose ``state_dict`` (epoch, batches yielded so far)
    Lightning stores in every checkpoint and hands back when resuming mid-epoch; the next pass then starts at the
    first batch the interrupted run had not trained on. Its own ``generator`` keeps the global RNG untouched."""

    def __init__(self, dataset, batch_size: int, seed: int, **kwargs):
        kwargs.pop("shuffle", None)
        kwargs.setdefault("sampler", EpochShuffle(len(dataset), seed))
        kwargs.setdefault("generator", torch.Generator().manual_seed(int(seed)))
        super().__init__(dataset, batch_size=batch_size, **kwargs)
        self._yielded = 0
        self._resume_at = 0

    def __iter__(self):
        start, self._resume_at = self._resume_at, 0
        self._yielded = start
        for batch in super().__iter__():
            self._yielded += 1
            yield batch

    def __len__(self) -> int:
        return super().__len__()

    def state_dict(self) -> dict:
        return {"epoch": getattr(self.sampler, "epoch", 0), "batches": self._yielded}

    def load_state_dict(self, state: dict) -> None:
        batches = int(state.get("batches", 0))
        if isinstance(self.sampler, EpochShuffle) and batches:
            self.sampler.set_epoch(int(state.get("epoch", 0)))
            self.sampler.skip = batches * int(self.batch_size)
            self._resume_at = batches
