"""A deployable student: the dataset's normalisation built in, exported as ONNX and as a ``torch.export`` program."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

INPUTS = ("uint8", "float")


class Deployable(nn.Module):
    """``net`` taking raw images: uint8 pixels 0..255 (``input="uint8"``) or floats 0..1 (``input="float"``),
    shaped (N, C, H, W), RGB/grey channel order as in training. Computes ``(x / 255 − mean) / std`` (uint8) or
    ``(x − mean) / std`` (float), exactly the training pipeline's normalisation, then ``net``; returns logits."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float], input: str = "uint8"):
        super().__init__()
        if input not in INPUTS:
            raise ValueError(f"input must be one of {INPUTS}, got {input!r}")
        self.net, self.input = net.eval(), input
        mean, std = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
        pixel = 255.0 if input == "uint8" else 1.0
        # the same affine map as kd_lightning.data.transforms.BatchTransform: x·scale + shift
        self.register_buffer("scale", (1.0 / (pixel * std)).view(1, -1, 1, 1))
        self.register_buffer("shift", (-mean / std).view(1, -1, 1, 1))
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(torch.addcmul(self.shift, images.to(torch.float32), self.scale))


def example_input(shape: Sequence[int], input: str, batch: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    if input == "uint8":
        return torch.randint(0, 256, (batch, *shape), dtype=torch.uint8, generator=generator)
    return torch.rand((batch, *shape), generator=generator)


def _batch_dim() -> dict:
    return {"images": {0: torch.export.Dim("batch", min=1, max=65536)}}


def export_program(model: Deployable, shape: Sequence[int], path: Path) -> Path:
    """``torch.export`` with a dynamic batch size; load with ``torch.export.load(path).module()``."""
    program = torch.export.export(model, (example_input(shape, model.input),), dynamic_shapes=_batch_dim())
    torch.export.save(program, str(path))
    return path


def export_onnx(model: Deployable, shape: Sequence[int], path: Path) -> Path:
    """ONNX (torch's dynamo-based exporter) with input ``images`` (dynamic batch) and output ``logits``."""
    torch.onnx.export(model, (example_input(shape, model.input),), str(path), input_names=["images"],
                      output_names=["logits"], dynamic_shapes=_batch_dim(), dynamo=True, external_data=False,
                      verbose=False)
    return path
