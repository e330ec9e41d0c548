"""A Hydra callback that refuses a bad single run before Hydra creates its folder (a sweep's failed jobs are listed by
kd_lightning.report.SummaryTable, which also ends the sweep with status 1)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from kd_lightning.errors import KDError
from kd_lightning.runs.store import finished

log = logging.getLogger(__name__)


def is_ddp_child() -> bool:
    """Whether this process is a DDP worker that Lightning launched (rank > 0): it trains, nothing else."""
    return os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0"


def check_writable(folder: Path) -> None:
    """Creates ``folder`` and a probe file in it, or raises :class:`KDError` saying why it cannot."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise KDError(
            f"cannot write the run folder {folder} ({type(err).__name__}: {err.strerror or err}): set "
            f"paths.log_dir to a folder you can write"
        ) from None


def _fail(err: BaseException) -> None:
    # Hydra has not configured logging yet, and exits with a traceback on exceptions raised here: print and exit
    print(f"Error: {err}", file=sys.stderr)
    sys.exit(1)


class Preflight(Callback):
    """Before a single run (``on_run_start``, before Hydra creates the folder): the config's values
    (:func:`kd_lightning.validate.validate`) and a writable run folder, unless the run is finished (it is only
    read then). Before a multirun: a writable ``paths.log_dir``. Failures print one message and exit 1."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        if is_ddp_child():
            return
        from kd_lightning.validate import validate

        try:
            validate(config)
            folder = Path(config.paths.output_dir)
            if not finished(folder) or config.get("retrain"):
                check_writable(folder)
        except KDError as err:
            _fail(err)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        if is_ddp_child():
            return
        try:
            check_writable(Path(config.paths.log_dir))
        except KDError as err:
            _fail(err)
