"""Quantization-ready networks: any network between a QuantStub and a DeQuantStub, with its fusable layers found.

Eager-mode quantization (``torch.ao.quantization``) needs the network to say where float tensors become
quantized and back (the stubs) and which layers to fuse (conv/linear with a following BatchNorm and/or
ReLU, so they quantize as one op). :class:`QuantizableNet` adds both to an unchanged network; in float it
computes exactly what the network does (unprepared stubs are identities).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.ao.quantization import DeQuantStub, QuantStub, fuse_modules, fuse_modules_qat

# sequences of consecutive children of an nn.Sequential that eager mode fuses into one module
FUSABLE_PATTERNS: tuple[tuple[type[nn.Module], ...], ...] = (
    (nn.Conv2d, nn.BatchNorm2d, nn.ReLU),
    (nn.Conv2d, nn.BatchNorm2d),
    (nn.Conv2d, nn.ReLU),
    (nn.Linear, nn.BatchNorm1d),
    (nn.Linear, nn.ReLU),
    (nn.BatchNorm2d, nn.ReLU),
)


def fusable_groups(net: nn.Module) -> list[list[str]]:
    """Module paths of every fusable run of consecutive children in ``net``'s ``nn.Sequential`` containers.

    Only Sequentials are searched: there the order of children is the order of computation. The longest
    pattern wins at each position (conv-BN-ReLU before conv-BN). E.g. LightNN gives
    ``[["features.0", "features.1"], ["features.3", "features.4"], ["classifier.0", "classifier.1"]]``.
    """
    groups = []
    for prefix, module in net.named_modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        i = 0
        while i < len(children):
            for pattern in FUSABLE_PATTERNS:
                window = children[i : i + len(pattern)]
                if len(window) == len(pattern) and all(type(m) is t for (_, m), t in zip(window, pattern)):
                    groups.append([f"{prefix}.{name}" if prefix else name for name, _ in window])
                    i += len(pattern)
                    break
            else:
                i += 1
    return groups


class QuantizableNet(nn.Module):
    """``dequant(net(quant(x)))``: ``net`` made ready for eager-mode (QAT or post-training) quantization.

    ``fuse(qat=True)`` fuses :func:`fusable_groups` in place (the QAT variant keeps BatchNorm trainable).
    After ``torch.ao.quantization.prepare_qat`` it trains with fake quantization; after ``convert`` it runs
    int8 kernels on the CPU. The wrapped network's module paths gain the prefix ``net.``.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.quant = QuantStub()
        self.net = net
        self.dequant = DeQuantStub()
        self.fused = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dequant(self.net(self.quant(x)))

    def fuse(self, qat: bool = True) -> list[list[str]]:
        """Fuse the wrapped network's conv/linear(+BN)(+ReLU) runs in place; returns the groups (once)."""
        if self.fused:
            return []
        groups = fusable_groups(self.net)
        if groups:
            (fuse_modules_qat if qat else fuse_modules)(self.net, groups, inplace=True)
        self.fused = True
        return groups
