"""Crop and flip as one gather (kd_lightning.data.transforms.random_crop with hflip) give the same images, bit for
bit, as cropping and then flipping in two passes (what the fast path's captured step ran before)."""

import pytest
import torch
import torch.nn.functional as F

from kd_lightning.data.transforms import BatchTransform


def two_pass_reference(images: torch.Tensor, padding: int, hflip: bool) -> torch.Tensor:
    """The former implementation: pad, per-image window (row offsets, then column offsets), then a flip pass."""
    n, _, h, w = images.shape
    padded = F.pad(images, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n, 1, 1))
    dx = torch.randint(0, 2 * padding + 1, (n, 1, 1))
    out = torch.stack([padded[i, :, dy[i, 0, 0] : dy[i, 0, 0] + h, dx[i, 0, 0] : dx[i, 0, 0] + w] for i in range(n)])
    if hflip:
        flip = torch.rand(n) < 0.5
        out = torch.where(flip.view(-1, 1, 1, 1), out.flip(3), out)
    return out


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("padding,hflip", [(4, True), (4, False), (2, True)])
def test_one_gather_equals_crop_then_flip(padding, hflip, channels_last):
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    transform = BatchTransform(mean, std, crop_padding=padding, hflip=hflip, channels_last=channels_last)
    for seed in range(3):
        images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
        torch.manual_seed(seed)
        fused = transform(images, train=True)
        torch.manual_seed(seed)
        expected = two_pass_reference(images, padding, hflip).float()
        expected = torch.addcmul(torch.tensor(mean).view(1, 3, 1, 1) / -torch.tensor(std).view(1, 3, 1, 1), expected,
                                 (1 / (255 * torch.tensor(std))).view(1, 3, 1, 1))
        assert torch.equal(fused, expected), (seed, padding, hflip)
        assert fused.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    torch.manual_seed(0)
    assert not torch.equal(transform(images, train=True), transform(images, train=False))  # it did augment
