"""The teacher-output cache: a frozen teacher's outputs per training-sample index, computed once."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import torch

from kd_lightning.distill.taps import Outputs

_writers: dict[Path, threading.Thread] = {}  # cache files being written beside training, by path


def finish_writes() -> None:
    """Waits for this process's cache files being written (the interpreter does so itself before it exits)."""
    while _writers:
        _writers.popitem()[1].join()


def _write(state: dict, path: Path) -> None:
    partial = path.with_name(path.name + ".part")
    torch.save(state, partial)
    os.replace(partial, path)  # atomic: a reader sees no file or the whole file


class TeacherCache:
    """Teacher logits and tapped features for ``num_samples`` training samples, stored in ``dtype``.

    :meth:`store` writes the outputs of a live teacher forward at the batch's sample indices; once every
    index has been written (:meth:`refresh_complete`, one device sync, called once per epoch),
    :meth:`lookup` replaces the teacher. Valid only while each sample's input is the same every epoch,
    i.e. without augmentation.

    Checkpoints (:meth:`checkpoint_entry`, :meth:`restore`): a resumed run must read the same teacher outputs as
    the uninterrupted one (bf16 storage, live vs. cached differ), so the cache travels with the checkpoint. Once
    complete it never changes, and it can be large (a tapped feature map per sample: 1.6 GB for the tutorial's
    FitNets hint layer, seconds to write), so it is written once, beside the checkpoints and beside training (a
    thread, after one copy to host memory), and each checkpoint names it; a cache still filling
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
            path = (Path(folder) / self.FILE).resolve()
            writer = _writers.get(path)
            if write and not path.is_file() and (writer is None or not writer.is_alive()):
                path.parent.mkdir(parents=True, exist_ok=True)
                state = {"logits": self.logits.cpu(), "features": {k: v.cpu() for k, v in self.features.items()}}
                # not a daemon: the interpreter finishes the file before it exits; a kill -9 before the rename
                # leaves no file, and a resume then refills the cache with a warning
                _writers[path] = threading.Thread(target=_write, args=(state, path), name="teacher-cache-writer")
                _writers[path].start()
            return {"file": self.FILE, "num_samples": self.num_samples}
        return {"num_samples": self.num_samples, "logits": self.logits.cpu(), "filled": self.filled.cpu(),
                "features": {k: v.cpu() for k, v in self.features.items()}}

    def restore(self, entry: dict, folder: Path) -> None:
        """Loads what :meth:`checkpoint_entry` recorded; ``folder`` is the resumed checkpoint's folder."""
        if entry["num_samples"] != self.num_samples:
            raise ValueError(f"the checkpoint's teacher cache holds {entry['num_samples']} samples, this run's training "
                             f"split {self.num_samples}")
        if "file" in entry:
            path = (Path(folder) / entry["file"]).resolve()
            writer = _writers.pop(path, None)
            if writer is not None:  # this process is still writing it (a resume inside the same process)
                writer.join()
            stored = torch.load(path, weights_only=True)
        else:
            stored = entry
        self.logits = stored["logits"].to(self.device, self.dtype)
        self.features = {k: v.to(self.device, self.dtype) for k, v in stored["features"].items()}
        if "file" in entry:
            self.filled.fill_(True)
            self.complete = True
        else:
            self.filled.copy_(stored["filled"].to(self.device))
            self.complete = False
