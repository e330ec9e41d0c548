"""Runs you can trust: one folder per configuration, exact resume, teachers by their own identity, provenance."""

from kd_lightning.runs.hydra_callbacks import Preflight, is_ddp_child
from kd_lightning.runs.identity import config_hash, identity, register_resolvers, run_folder, task_overrides
from kd_lightning.runs.resume import (
    AtomicCheckpointIO,
    EpochShuffle,
    LastCheckpoint,
    LossExplosionGuard,
    ResumableLoader,
    RNGState,
)
from kd_lightning.runs.store import RunLock, RunLockedError, provenance, read_summary, write_summary
from kd_lightning.runs.teachers import locate_teachers, teacher_runs

register_resolvers()

__all__ = [
    "AtomicCheckpointIO",
    "EpochShuffle",
    "LastCheckpoint",
    "LossExplosionGuard",
    "Preflight",
    "RNGState",
    "ResumableLoader",
    "RunLock",
    "RunLockedError",
    "config_hash",
    "identity",
    "is_ddp_child",
    "locate_teachers",
    "provenance",
    "read_summary",
    "register_resolvers",
    "run_folder",
    "task_overrides",
    "teacher_runs",
    "write_summary",
]
