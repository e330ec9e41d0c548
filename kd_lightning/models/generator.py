"""Image generators for data-free distillation: noise ``z`` in, images in the normalised input space out."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class NormalisedPixels(nn.Module):
    """``(sigmoid(x) - mean) / std`` per channel: pixels in [0, 1], normalised as the datamodule does."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (torch.sigmoid(x) - self.mean) / self.std


def output_layer(channels: int, mean: Sequence[float] | None, std: Sequence[float] | None) -> nn.Module:
    """DAFL's tanh → BatchNorm without affine parameters, or, given ``mean`` and ``std``, normalised pixels."""
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std (normalised-pixel output) or neither (BatchNorm output)")
    if mean is None:
        return nn.Sequential(nn.Tanh(), nn.BatchNorm2d(channels, affine=False))
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"mean and std need {channels} channels, got {len(mean)} and {len(std)}")
    return NormalisedPixels(mean, std)


class Generator(nn.Module):
    """DAFL's generator (Chen et al. 2019, after the DCGAN generator of pytorch-GAN).

    ``z`` (N, latent_dim) → Linear → (width, S/4, S/4) → BN → ×2 nearest upsampling → conv-BN-LeakyReLU →
    ×2 → conv-BN-LeakyReLU → conv → tanh → BatchNorm without affine parameters. The last BatchNorm makes
    every batch zero-mean and unit-variance per channel, which is where normalised real images live too
    (the datamodule standardises with the dataset's mean and std). ``bn_eps=0.8`` is DAFL's (its
    ``BatchNorm2d(c, 0.8)``). ``image_size`` must be divisible by 4 (28 for MNIST, 32 for CIFAR-10).

    With ``mean`` and ``std`` (the datamodule's normalisation) the output is instead a valid image:
    sigmoid pixels in [0, 1], normalised like real ones — ``(p - mean) / std``. This keeps generated images
    in the range real ones span (MNIST: a dark background at -0.42, strokes up to 2.8), where a
    standardised output is free to invert their polarity.
    """

    def __init__(
        self,
        latent_dim: int = 100,
        channels: int = 1,
        image_size: int = 28,
        width: int = 128,
        bn_eps: float = 0.8,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size must be divisible by 4, got {image_size}")
        self.latent_dim, self.width, self.init_size = latent_dim, width, image_size // 4
        self.fc = nn.Linear(latent_dim, width * self.init_size**2)
        self.bn0 = nn.BatchNorm2d(width)
        self.block1 = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width, bn_eps), nn.LeakyReLU(0.2)
        )
        self.block2 = nn.Sequential(
            nn.Conv2d(width, width // 2, 3, padding=1),
            nn.BatchNorm2d(width // 2, bn_eps),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width // 2, channels, 3, padding=1),
        )
        self.output = output_layer(channels, mean, std)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z.flatten(1)).view(z.shape[0], self.width, self.init_size, self.init_size)
        x = F.interpolate(self.bn0(x), scale_factor=2)
        x = F.interpolate(self.block1(x), scale_factor=2)
        return self.output(self.block2(x))


class MLPGenerator(nn.Module):
    """A fully connected generator for small images (cheap on CPU): DAFL's generator with Linear layers.

    ``z`` → (Linear-BN-LeakyReLU) per hidden width → Linear → reshape to (channels, size, size) → the
    output layer of :class:`Generator` (tanh → BatchNorm, or with ``mean``/``std`` normalised pixels).
    """

    def __init__(
        self,
        latent_dim: int = 100,
        channels: int = 1,
        image_size: int = 28,
        hidden: Sequence[int] = (256, 512),
        bn_eps: float = 0.8,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ):
        super().__init__()
        self.latent_dim, self.shape = latent_dim, (channels, image_size, image_size)
        widths = [latent_dim, *hidden]
        self.layers = nn.Sequential(
            *(
                nn.Sequential(nn.Linear(a, b), nn.BatchNorm1d(b, bn_eps), nn.LeakyReLU(0.2))
                for a, b in zip(widths[:-1], widths[1:])
            )
        )
        self.head = nn.Linear(widths[-1], channels * image_size * image_size)
        self.output = output_layer(channels, mean, std)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.output(self.head(self.layers(z.flatten(1))).view(z.shape[0], *self.shape))
