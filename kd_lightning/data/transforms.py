"""Per-batch normalisation and augmentation, run on whatever device the batch is on (the GPU when training there)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from kd_lightning.errors import ConfigError


def random_crop(images: torch.Tensor, padding: int, hflip: bool = False) -> torch.Tensor:
    """Zero-pad by ``padding`` and cut a random HxW window per image (torchvision's RandomCrop(padding=p)); with
    ``hflip``, then mirror each window left-right with probability 1/2 (RandomHorizontalFlip).

    One gather does both: a mirrored window is the same window read with its column index reversed, so the flip costs
    no pass over the batch. The random draws are those of :func:`random_crop` without flip followed by
    :func:`random_hflip` (row offsets, column offsets, then the flips), so the result is the same, bit for bit.
    """
    n, _, h, w = images.shape
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding)).permute(0, 2, 3, 1)  # N, H+2p, W+2p, C
    dy = torch.randint(0, 2 * padding + 1, (n, 1, 1), device=device)
    dx = torch.randint(0, 2 * padding + 1, (n, 1, 1), device=device)
    columns = torch.arange(w, device=device).view(1, 1, w)
    if hflip:
        flip = torch.rand(n, device=device) < 0.5
        columns = torch.where(flip.view(n, 1, 1), (w - 1) - columns, columns)
    rows = dy + torch.arange(h, device=device).view(1, h, 1)
    cols = dx + columns
    return padded[torch.arange(n, device=device).view(n, 1, 1), rows, cols].permute(0, 3, 1, 2)


def random_hflip(images: torch.Tensor) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], device=images.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(3), images)


class BatchTransform:
    """uint8 (N, C, H, W) → normalised float, with optional crop/flip augmentation for training batches."""

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        crop_padding: int = 0,
        hflip: bool = False,
        channels_last: bool = False,
    ):
        if len(mean) != len(std):
            raise ConfigError(f"mean has {len(mean)} channels but std has {len(std)}")
        self.mean, self.std = torch.tensor(mean), torch.tensor(std)
        self.crop_padding, self.hflip, self.channels_last = crop_padding, hflip, channels_last
        self._affine: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def augments(self) -> bool:
        return self.crop_padding > 0 or self.hflip

    def _scale_shift(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._affine:
            scale = (1.0 / (255.0 * self.std)).view(1, -1, 1, 1)
            shift = (-self.mean / self.std).view(1, -1, 1, 1)
            self._affine[device] = (scale.to(device), shift.to(device))
        return self._affine[device]

    def __call__(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        if images.shape[1] != len(self.mean):
            raise ConfigError(
                f"images have {images.shape[1]} channels but the normalisation has {len(self.mean)} "
                f"(mean={self.mean.tolist()}); set data.mean/data.std for this dataset"
            )
        if train and self.crop_padding > 0:
            images = random_crop(images, self.crop_padding, hflip=self.hflip)  # crop and flip in one gather
        elif train and self.hflip:
            images = random_hflip(images)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        scale, shift = self._scale_shift(images.device)
        return torch.addcmul(shift, images.to(memory_format=memory_format, dtype=torch.float32), scale)
