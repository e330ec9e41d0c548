"""A Hydra callback that keeps a multirun's results table up to date and draws its figures at the end."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from hydra.experimental.callback import Callback

from kd_lightning.report.files import write_report
from kd_lightning.report.table import read_summaries

log = logging.getLogger(__name__)


class SummaryTable(Callback):
    """After each job of a multirun, rewrite ``<log_dir>/tables/<start time>.md`` and ``.csv`` (failed jobs
    included); when the multirun ends, also draw ``<start time>_*.png`` beside them (:func:`write_report`).

    ``baseline``: only CE-only runs of this name serve as baselines (each row is compared with the one whose
    settings match its own).
    """

    def __init__(self, metric: str = "test/acc", baseline: str | None = None):
        self.metric, self.baseline = metric, baseline
        self.job_dirs: list[Path] = []
        self.folder: Path | None = None
        self.stem = ""
        self.started = 0.0

    def on_multirun_start(self, config, **kwargs) -> None:
        self.folder = Path(config.paths.log_dir) / "tables"
        self.stem = time.strftime("%Y-%m-%d_%H-%M-%S")
        self.job_dirs = []
        self.started = time.perf_counter()

    def _write(self, plots: bool) -> list[Path]:
        summaries = read_summaries(p for p in self.job_dirs if p.is_file())
        if not summaries:
            return []
        return write_report(summaries, self.folder, self.stem, self.metric, self.baseline, plots=plots)

    def wall_time_line(self) -> str:
        """The sweep's wall time against its jobs' training times added up (what running them one by one costs at
        least; compare a ``hydra/launcher=gpu_shared`` sweep with the same sweep under the default launcher)."""
        summaries = read_summaries(p for p in self.job_dirs if p.is_file())
        trained = [s["train_time_s"] for s in summaries if isinstance(s.get("train_time_s"), (int, float))]
        return (f"Sweep wall time: {time.perf_counter() - self.started:.1f} s for {len(self.job_dirs)} jobs; their "
                f"recorded training times add up to {sum(trained):.1f} s")

    def on_job_end(self, config, job_return, **kwargs) -> None:
        if self.folder is None:  # a single run: its summary.json is the result
            return
        self.job_dirs.append(Path(job_return.hydra_cfg.hydra.runtime.output_dir) / "summary.json")
        self._write(plots=False)

    def on_multirun_end(self, config, **kwargs) -> None:
        if self.folder is None:
            return
        try:
            written = self._write(plots=True)
        except Exception as err:  # a figure must not turn a finished sweep into a failed one
            log.warning("Could not draw the sweep's figures: %s", err)
            written = [self.folder / f"{self.stem}.md"]
        log.info("%s", self.wall_time_line())
        if written and written[0].is_file():
            log.info("Runs in %s/ (TensorBoard: tensorboard --logdir %s). Results table: %s\n%s\nAlso: %s",
                     config.paths.log_dir, config.paths.log_dir, written[0], written[0].read_text(),
                     ", ".join(str(p) for p in written[1:]))
        failed = [s for s in read_summaries(p for p in self.job_dirs if p.is_file()) if s.get("status") == "failed"]
        if failed:
            names = ", ".join(f"{s['run_name']} seed {s['seed']}" for s in failed)
            log.error("%d of %d jobs failed: %s", len(failed), len(self.job_dirs), names)
            sys.exit(1)
