"""Feature taps: record the outputs of submodules named by module path, with forward hooks (no model edits)."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from kd_lightning.errors import LayerNotFoundError


@dataclass
class Outputs:
    """A network's logits plus the tapped features, keyed by module path."""

    logits: torch.Tensor
    features: dict[str, torch.Tensor] = field(default_factory=dict)


class FeatureTaps:
    """Calls ``net`` and returns :class:`Outputs` with the outputs of the submodules at ``paths``.

    The hooks record only during such a call: other forwards of ``net`` (validation, another scheme's taps)
    leave nothing behind, and no output is held after the call returns.
    """

    def __init__(self, net: nn.Module, paths: Iterable[str], role: str = "network"):
        self.net = net
        self._recorded: dict[str, torch.Tensor] | None = None
        modules = dict(net.named_modules())
        self.paths = tuple(dict.fromkeys(paths))
        for path in self.paths:
            if path not in modules:
                available = ", ".join(name for name in modules if name)
                raise LayerNotFoundError(
                    f"{role} {type(net).__name__} has no module {path!r}; its module paths are: {available}"
                )
        self.handles = [modules[path].register_forward_hook(self._hook(path)) for path in self.paths]

    def remove(self) -> None:
        """Removes the hooks from ``net`` (these taps record nothing afterwards)."""
        for handle in self.handles:
            handle.remove()

    def _hook(self, path: str):
        # a partial of a method, not a closure: the module stays picklable (trainer.strategy=ddp_spawn pickles it)
        return functools.partial(self._record, path)

    def _record(self, path: str, module: nn.Module, inputs, output) -> None:
        if self._recorded is not None:
            self._recorded[path] = output

    def __call__(self, x: torch.Tensor) -> Outputs:
        self._recorded = {}
        try:
            return Outputs(self.net(x), self._recorded)
        finally:
            self._recorded = None
