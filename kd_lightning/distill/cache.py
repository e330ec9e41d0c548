"""The teacher-output cache: a frozen teacher's outputs per training-sample index, computed once."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from kd_lightning.distill.taps import Outputs


class TeacherCache:
    """Teacher logits and tapped features for ``num_samples`` training samples, stored in ``dtype``.

    :meth:`store` writes the outputs of a live teacher forward at the batch's sample indices; once every
    index has been written (:meth:`refresh_complete`, one device sync, called once per epoch),
    :meth:`lookup` replaces the teacher. Valid only while each sample's input is the same every epoch,
    i.e. without augmentation.

    Checkpoints (:meth:`checkpoint_entry`, :meth:`restore`): a resumed run must read the same teacher outputs as
    the uninterrupted one (bf16 storage, live vs. cached differ), so the cache travels with the checkpoint. Once
    complete it never changes, and it can be large (a tapped feature map per sample: ~200 MB for the tutorial's
    FitNets), so it is written once, beside the checkpoints, and each checkpoint names it; a cache still filling
    (a checkpoint inside the first epoch) goes into the checkpoint itself.
    """

    FILE = "teacher_cache.pt"

    def __init__(self, num_samples: int, device: torch.device, dtype: torch.dtype = torch.bfloat16):
        self.num_samples, self.device, self.dtype = num_samples, device, dtype
        self.logits: torch.Tensor | None = None
        self.features: dict[str, torch.Tensor] = {}
        self.filled = torch.zeros(num_samples, dtype=torch.bool, device=device)
        self.complete = False

    def _buffer(self, like: torch.Tensor) -> torch.Tensor:
        return torch.empty((self.num_samples, *like.shape[1:]), dtype=self.dtype, device=self.device)

    def store(self, index: torch.Tensor, outputs: Outputs) -> None:
        if self.logits is None:
            self.logits = self._buffer(outputs.logits)
            self.features = {path: self._buffer(f) for path, f in outputs.features.items()}
        # index_copy_/index_fill_ take no host values, so this also runs inside a captured CUDA graph
        self.logits.index_copy_(0, index, outputs.logits.to(self.dtype))
        for path, feature in outputs.features.items():
            self.features[path].index_copy_(0, index, feature.to(self.dtype))
        self.filled.index_fill_(0, index, True)

    def refresh_complete(self) -> bool:
        self.complete = bool(self.filled.all())
        return self.complete

    def lookup(self, index: torch.Tensor) -> Outputs:
        return Outputs(self.logits.index_select(0, index), {p: f.index_select(0, index) for p, f in self.features.items()})

    def checkpoint_entry(self, folder: Path, write: bool = True) -> dict | None:
        """What a checkpoint written into ``folder`` records of the cache (writes the cache file once, if ``write``:
        under DDP only rank 0 writes, as only its checkpoint is saved and every rank holds the same cache)."""
        if self.logits is None:
            return None
        if self.complete or self.refresh_complete():
            path = Path(folder) / self.FILE
            if write and not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                partial = path.with_name(path.name + ".part")
                torch.save({"logits": self.logits.cpu(), "features": {k: v.cpu() for k, v in self.features.items()}},
                           partial)
                os.replace(partial, path)  # atomic: a reader sees no file or the whole file
            return {"file": self.FILE, "num_samples": self.num_samples}
        return {"num_samples": self.num_samples, "logits": self.logits.cpu(), "filled": self.filled.cpu(),
                "features": {k: v.cpu() for k, v in self.features.items()}}

    def restore(self, entry: dict, folder: Path) -> None:
        """Loads what :meth:`checkpoint_entry` recorded; ``folder`` is the resumed checkpoint's folder."""
        if entry["num_samples"] != self.num_samples:
            raise ValueError(f"the checkpoint's teacher cache holds {entry['num_samples']} samples, this run's training "
                             f"split {self.num_samples}")
        stored = torch.load(Path(folder) / entry["file"], weights_only=True) if "file" in entry else entry
        self.logits = stored["logits"].to(self.device, self.dtype)
        self.features = {k: v.to(self.device, self.dtype) for k, v in stored["features"].items()}
        if "file" in entry:
            self.filled.fill_(True)
            self.complete = True
        else:
            self.filled.copy_(stored["filled"].to(self.device))
            self.complete = False
