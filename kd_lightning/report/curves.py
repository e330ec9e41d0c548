"""Logged scalar series of a run folder: TensorBoard event files, else a CSV logger's ``metrics.csv``."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

logging.getLogger("tensorboard").setLevel(logging.WARNING)  # its directory watcher logs every file at INFO


def read_scalars(run_dir: str | Path, tag: str = "val/acc") -> pd.DataFrame:
    """``step, value`` rows of ``tag`` logged in ``run_dir`` (empty frame when it was not logged)."""
    run_dir = Path(run_dir)
    if any(run_dir.glob("events.out.tfevents.*")):
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})  # 0: keep every point
        accumulator.Reload()
        if tag in accumulator.Tags()["scalars"]:
            events = accumulator.Scalars(tag)
            frame = pd.DataFrame({"step": [e.step for e in events], "value": [e.value for e in events]})
            # a resumed run logs its last steps again: keep the latest value per step
            return frame.drop_duplicates("step", keep="last").sort_values("step", ignore_index=True)
    for csv in sorted(run_dir.rglob("metrics.csv")):
        frame = pd.read_csv(csv)
        if tag in frame.columns:
            frame = frame[["step", tag]].dropna().rename(columns={tag: "value"})
            return frame.drop_duplicates("step", keep="last").sort_values("step", ignore_index=True)
    return pd.DataFrame({"step": pd.Series(dtype="int64"), "value": pd.Series(dtype="float64")})
