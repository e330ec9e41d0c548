"""Loading a frozen teacher from a checkpoint."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import json

import torch
from torch import nn

from kd_lightning.errors import ConfigError, MissingTeacherError


def load_teacher(
    net: nn.Module,
    checkpoint: str | Sequence[str] | None,
    train_command: str | None = None,
    run=None,
    train_if_missing: bool = False,
) -> nn.Module:
    """Load ``net``'s weights from a Lightning checkpoint (keys ``net.*``) or a plain state dict; freeze it.

    ``checkpoint`` may list candidates: the first that exists is used. ``None`` with a ``run``: the teacher run it
    describes (its experiment and overrides), which ``kd_lightning.train`` looks up by the teacher's own identity
    and writes into ``checkpoint`` before instantiating (``kd_lightning.runs.teachers``; ``run`` and
    ``train_if_missing`` are read there, not here). ``None`` without a ``run`` keeps the weights ``net`` was built
    with (e.g. a torchvision/timm teacher given a ``weights_path``). The returned network is in eval mode with
    ``requires_grad=False``.
    """
    if checkpoint is None and run is None:
        return net.eval().requires_grad_(False)
    if checkpoint is None:
        raise ConfigError(
            "teacher.checkpoint is null: `python -m kd_lightning.train` finds the teacher run named by teacher.run "
            "(kd_lightning.runs.teachers.locate_teachers); elsewhere, set teacher.checkpoint=PATH"
        )
    candidates = [Path(checkpoint)] if isinstance(checkpoint, str) else [Path(c) for c in checkpoint]
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        failed = _failed_teacher_run(candidates)
        if failed:
            raise MissingTeacherError(f"not trained: its teacher's run failed ({failed})")
        how = f"Train it first:\n  {train_command}\nor" if train_command else "Either train one, or"
        looked = "\n".join(f"  {c.resolve()}" for c in dict.fromkeys(candidates))
        raise MissingTeacherError(
            f"no teacher checkpoint; looked for:\n{looked}\n{how} point teacher.checkpoint at an existing "
            f"checkpoint (a kd_lightning .ckpt or a state_dict .pt of {type(net).__name__})."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError) as err:  # pickle errors of a truncated file included
        raise ConfigError(
            f"teacher checkpoint {path} cannot be read ({type(err).__name__}: {err}); it is damaged or not a "
            f"checkpoint: train the teacher again (delete its run folder) or point teacher.checkpoint elsewhere"
        ) from err
    if "state_dict" in state:  # a Lightning checkpoint of a supervised run: the network sits under ``net.``
        state = {key.removeprefix("net."): value for key, value in state["state_dict"].items() if key.startswith("net.")}
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise ConfigError(f"teacher checkpoint {path} does not fit {type(net).__name__}: {err}") from err
    net.eval()
    net.requires_grad_(False)
    return net


def _failed_teacher_run(candidates: Sequence[Path]) -> str | None:
    """If a candidate checkpoint's run (``<run>/checkpoints/last.ckpt``) ended as failed, say which and why.

    In a multirun the teacher's job runs first; when it failed, its students fail for that reason alone, and
    one line saying so beats a missing-file message per student.
    """
    for candidate in candidates:
        summary = candidate.parent.parent / "summary.json"
        try:
            record = json.loads(summary.read_text())
        except (OSError, ValueError):
            continue
        if record.get("status") == "failed":
            error = str(record.get("error", "")).splitlines()[0] if record.get("error") else "no error recorded"
            return f"{summary.parent}: {error}"
    return None
