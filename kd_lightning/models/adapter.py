"""Seeing a teacher through the student's data: re-normalise, resize, pick the logits from any output."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kd_lightning.errors import ConfigError


def _as_stats(values: Sequence[float] | None) -> torch.Tensor | None:
    return None if values is None else torch.tensor(list(values), dtype=torch.float32).view(1, -1, 1, 1)


class TeacherAdapter(nn.Module):
    """A teacher seen through the student's data: re-normalise, resize, pick the logits.

    The student's batches arrive normalised with ``input_mean``/``input_std`` (the dataset's). With ``mean``/``std``
    (the teacher's own, e.g. ImageNet's), they are mapped to pixels in 0..1 and normalised the teacher's way; with
    ``channels=3`` grey images are repeated to RGB; with ``input_size=[H, W]`` they are resized (``mode``:
    bilinear, antialiased when shrinking). ``logits_key`` picks the logits from an output that is a dict
    (``out[key]``), an object (``out.key``, e.g. a Hugging Face ``ModelOutput``) or a tuple (``out[int(key)]``).

    Feature taps address the wrapped network under ``net.`` (``teacher_layer: net.layer3``).
    """

    def __init__(self, net: nn.Module, logits_key: str | int | None = None, input_size: Sequence[int] | None = None,
                 input_mean: Sequence[float] | None = None, input_std: Sequence[float] | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None, channels: int | None = None,
                 mode: str = "bilinear"):
        super().__init__()
        self.net, self.logits_key, self.channels, self.mode = net, logits_key, channels, mode
        self.input_size = tuple(input_size) if input_size is not None else None
        renormalise = mean is not None or std is not None
        if renormalise and (input_mean is None or input_std is None or mean is None or std is None):
            raise ConfigError("re-normalising for the teacher needs input_mean, input_std (the data's) and mean, std "
                              "(the teacher's); leave mean and std null to pass the student's inputs unchanged")
        self.register_buffer("input_mean", _as_stats(input_mean) if renormalise else None, persistent=False)
        self.register_buffer("input_std", _as_stats(input_std) if renormalise else None, persistent=False)
        self.register_buffer("mean", _as_stats(mean), persistent=False)
        self.register_buffer("std", _as_stats(std), persistent=False)

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        """The student's normalised batch → the teacher's input."""
        if self.mean is not None:
            x = x * self.input_std + self.input_mean  # back to 0..1 pixels
        if self.channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode=self.mode, antialias=self.mode in ("bilinear", "bicubic")
                              and x.shape[-1] > self.input_size[-1])
        return x

    def logits(self, output) -> torch.Tensor:
        if isinstance(output, torch.Tensor) and self.logits_key is None:
            return output
        key = self.logits_key
        if key is None:
            if isinstance(output, dict):
                available = list(output)
            elif isinstance(output, (tuple, list)):
                available = list(range(len(output)))
            else:
                available = [k for k in getattr(output, "__dict__", {}) if not k.startswith("_")]
            raise ConfigError(f"the teacher returns a {type(output).__name__}, not a tensor: set logits_key to one of "
                              f"{available}")
        if isinstance(output, dict):
            if key not in output:
                raise ConfigError(f"logits_key={key!r} is not in the teacher's output; it has {list(output)}")
            return output[key]
        if isinstance(output, (tuple, list)):
            return output[int(key)]
        if not hasattr(output, str(key)):
            raise ConfigError(f"logits_key={key!r}: the teacher's {type(output).__name__} has no such attribute")
        return getattr(output, str(key))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.net(self.adapt(x)))
