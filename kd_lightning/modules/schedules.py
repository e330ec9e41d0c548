"""Learning-rate schedules that torch builds from several schedulers (which a config cannot nest)."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

from kd_lightning.errors import ConfigError


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total_steps: int | None = None,
                  start_factor: float = 0.1, eta_min: float = 0.0) -> SequentialLR:
    """A linear warm-up from ``start_factor``·lr over ``warmup`` steps (or epochs), then cosine annealing to
    ``eta_min`` over the rest of ``total_steps`` (filled in with the fit's length when unset)."""
    if total_steps is None or not 0 <= warmup < total_steps:
        raise ConfigError(f"warm-up + cosine needs 0 <= warmup < total_steps, got warmup={warmup}, "
                          f"total_steps={total_steps}")
    return SequentialLR(
        optimizer,
        [LinearLR(optimizer, start_factor=start_factor, total_iters=max(warmup, 1)),
         CosineAnnealingLR(optimizer, T_max=total_steps - warmup, eta_min=eta_min)],
        milestones=[warmup],
    )
