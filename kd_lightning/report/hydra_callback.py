"""A Hydra callback that keeps a multirun's results table up to date as its jobs finish."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from hydra.experimental.callback import Callback

from kd_lightning.report.table import markdown_table, read_summaries

log = logging.getLogger(__name__)


class SummaryTable(Callback):
    """After each job of a multirun, rewrite ``<log_dir>/tables/<start time>.md`` (failed jobs included).

    ``baseline``: a run name whose mean the table subtracts from every row's (e.g. the CE-only student).
    """

    def __init__(self, metric: str = "test/acc", baseline: str | None = None):
        self.metric, self.baseline = metric, baseline
        self.job_dirs: list[Path] = []
        self.path: Path | None = None

    def on_multirun_start(self, config, **kwargs) -> None:
        self.path = Path(config.paths.log_dir) / "tables" / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}.md"
        self.job_dirs = []

    def on_job_end(self, config, job_return, **kwargs) -> None:
        if self.path is None:  # a single run: its summary.json is the result
            return
        self.job_dirs.append(Path(job_return.hydra_cfg.hydra.runtime.output_dir) / "summary.json")
        summaries = read_summaries(p for p in self.job_dirs if p.is_file())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(markdown_table(summaries, self.metric, self.baseline))

    def on_multirun_end(self, config, **kwargs) -> None:
        if self.path is None or not self.path.is_file():
            return
        log.info("Runs in %s/ (TensorBoard: tensorboard --logdir %s). Results table: %s\n%s",
                 config.paths.log_dir, config.paths.log_dir, self.path, self.path.read_text())
        failed = [s for s in read_summaries(p for p in self.job_dirs if p.is_file()) if s.get("status") == "failed"]
        if failed:
            names = ", ".join(f"{s['run_name']} seed {s['seed']}" for s in failed)
            log.error("%d of %d jobs failed: %s", len(failed), len(self.job_dirs), names)
            sys.exit(1)
