"""The teacher-output cache: a frozen teacher's outputs per training-sample index, computed once."""

from __future__ import annotations

import torch

from kd_lightning.distill.taps import Outputs


class TeacherCache:
    """Teacher logits and tapped features for ``num_samples`` training samples, stored in ``dtype``.

    :meth:`store` writes the outputs of a live teacher forward at the batch's sample indices; once every
    index has been written (:meth:`refresh_complete`, one device sync, called once per epoch),
    :meth:`lookup` replaces the teacher. Valid only while each sample's input is the same every epoch,
    i.e. without augmentation.
    """

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
