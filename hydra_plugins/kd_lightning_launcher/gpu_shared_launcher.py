"""``hydra/launcher=gpu_shared``: several jobs of a multirun at once on one GPU, teachers before their students.

A thin Hydra plugin (Hydra instantiates launchers only from the ``hydra_plugins`` namespace, and imports every
module there at start-up, so this one imports nothing heavy): the work is in :mod:`kd_lightning.shared_gpu`.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from hydra.plugins.launcher import Launcher


class SharedGPULauncher(Launcher):
    """Hydra's joblib launcher (loky processes, ``n_jobs`` at a time) run in waves: a job whose teacher is another
    job of the sweep starts only after that job's wave has finished. The sweep's table is kept by the process
    that started the sweep, as with Hydra's basic launcher."""

    def __init__(self, n_jobs: int = 3, stop_grace: float = 30.0, cuda_mps: bool = False, **joblib: Any) -> None:
        from kd_lightning.shared_gpu import require_joblib_launcher

        require_joblib_launcher()
        self.n_jobs, self.stop_grace, self.cuda_mps, self.joblib = n_jobs, stop_grace, cuda_mps, joblib
        self.config = self.task_function = self.hydra_context = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config

    def launch(self, job_overrides, initial_job_idx: int):
        from kd_lightning.errors import KDError
        from kd_lightning.shared_gpu import launch_in_waves

        try:
            return launch_in_waves(self, job_overrides, initial_job_idx)
        except KDError as err:  # the sweep cannot start (e.g. no MPS daemon): one line, not Hydra's stack trace
            logging.getLogger(__name__).error("%s", err)
            sys.exit(1)
