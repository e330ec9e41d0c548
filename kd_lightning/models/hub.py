"""Any torchvision or timm classification network by name, randomly initialised or from a local state dict.

Nothing is downloaded: ``weights_path`` names a ``state_dict`` file (e.g. one saved from a torchvision or
timm model beforehand); it is loaded strictly, so its classifier must already have ``num_classes`` outputs.
Tap points are the library's module paths (torchvision ResNet-18: ``layer1``-``layer4``, ``avgpool``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from kd_lightning.errors import ConfigError


def _load(net: nn.Module, weights_path: str | None, what: str) -> nn.Module:
    if weights_path is None:
        return net
    path = Path(weights_path)
    if not path.is_file():
        raise ConfigError(f"{what}: weights_path {str(path.resolve())!r} is not a file; give a saved state_dict (.pt)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):  # a training script's checkpoint dict (Lightning, timm, torchvision)
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    if any(k.startswith("net.") for k in state):  # a kd_lightning .ckpt: the network sits under ``net.``
        state = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from DataParallel/DDP
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise ConfigError(f"{what}: the state dict in {path} does not fit: {err}") from err
    return net


def torchvision_model(name: str, num_classes: int, weights_path: str | None = None, **kwargs) -> nn.Module:
    """``torchvision.models.get_model(name, weights=None, num_classes=...)``, then ``weights_path`` if given."""
    import torchvision.models as tvm

    available = tvm.list_models(module=tvm)  # the classification networks only
    if name not in available:
        raise ConfigError(f"unknown torchvision classification model {name!r}; accepted: {', '.join(available)}")
    net = tvm.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    return _load(net, weights_path, f"torchvision {name}")


def timm_model(name: str, num_classes: int, weights_path: str | None = None, **kwargs) -> nn.Module:
    """``timm.create_model(name, pretrained=False, num_classes=...)``, then ``weights_path`` if given."""
    try:
        import timm
    except ImportError as err:
        raise ConfigError(
            f"model timm:{name} needs the timm package, which is not installed: pip install timm "
            f"(or choose a torchvision model: model=torchvision model.name=...)"
        ) from err
    if not timm.is_model(name):
        raise ConfigError(f"unknown timm model {name!r}; see timm.list_models() for the accepted names")
    net = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    return _load(net, weights_path, f"timm {name}")
