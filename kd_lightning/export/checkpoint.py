"""Rebuilding a trained student from a kd_lightning checkpoint, without the run's Hydra config.

``train.py`` stores :func:`rebuild_facts` as the module's hyperparameters, so every ``.ckpt`` holds the resolved
config of the trained network (``student``) and of its data (``data``: normalisation, source). Load with::

    from kd_lightning.export import load_module, load_student
    module = load_module("outputs/mnist_kd/seed0/checkpoints/last.ckpt")   # a SupervisedModule, eval mode
    net = load_student("outputs/mnist_kd/seed0/checkpoints/last.ckpt")     # just the nn.Module

``load_module`` is ``SupervisedModule.load_from_checkpoint(path, net=<rebuilt student>, optimizer=None)``:
Lightning's own loader, given the network it cannot rebuild from plain hyperparameters (the schemes take
instantiated networks and teachers, which a checkpoint does not hold). The teacher and the loss terms'
adapters are left out: what is deployed is the student.
"""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from kd_lightning.errors import ConfigError


def rebuild_facts(cfg: DictConfig) -> dict:
    """What a checkpoint needs to rebuild its student and find its data: resolved ``model`` and ``data`` configs."""
    facts = {"student": OmegaConf.to_container(cfg.model, resolve=True), "num_classes": cfg.data.get("num_classes")}
    try:
        facts["data"] = OmegaConf.to_container(cfg.data, resolve=True)
    except Exception:  # a data config that only resolves inside its Hydra job: exports then need --data
        facts["data"] = None
    return facts


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():  # a run folder
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise ConfigError(f"no checkpoint at {path.resolve()}: give a run folder (with checkpoints/last.ckpt) "
                          f"or a .ckpt")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if "student" not in checkpoint.get("hyper_parameters", {}):
        raise ConfigError(
            f"{path} does not say how to rebuild its network (no hyper_parameters.student): it predates "
            f"kd_lightning's export support; rebuild the network yourself and load its 'net.*' weights"
        )
    checkpoint["_path"] = str(path)
    return checkpoint


def student_state_dict(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The trained network's weights (``net.*`` without the prefix): no teacher, no loss-term adapters."""
    return {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}


def load_student(path: str | Path) -> nn.Module:
    """The trained network of a run folder or ``.ckpt``, weights loaded, in eval mode."""
    checkpoint = read_checkpoint(path)
    net = instantiate(checkpoint["hyper_parameters"]["student"])
    net.load_state_dict(student_state_dict(checkpoint))
    return net.eval()


def load_module(path: str | Path):
    """``SupervisedModule.load_from_checkpoint`` for any kd_lightning checkpoint (see the module docstring)."""
    from kd_lightning.modules import SupervisedModule

    checkpoint = read_checkpoint(path)
    net = instantiate(checkpoint["hyper_parameters"]["student"])
    # strict=False: a distillation checkpoint also holds its loss terms' adapters (e.g. a regressor), which
    # the plain module has no place for; the student's own weights are checked below
    module = SupervisedModule.load_from_checkpoint(checkpoint["_path"], net=net, optimizer=None, strict=False,
                                                   map_location="cpu", weights_only=True)
    missing = set(net.state_dict()) - set(student_state_dict(checkpoint))
    if missing:
        raise ConfigError(f"{checkpoint['_path']} lacks weights {sorted(missing)[:5]} of {type(net).__name__}")
    return module.eval()
