"""Several jobs of a multirun at once on one GPU (``hydra/launcher=gpu_shared``), teachers before their students.

Small students leave a large GPU mostly idle: with the hand-written loop of ``scripts/benchmark.py --mode zoo``, 2-4
processes of ResNet-20←ResNet-56 KD on one H200 raised the aggregate rate from 34.9k to 44.7k img/s. Hydra's
joblib launcher (hydra-joblib-launcher, loky processes) runs the jobs; on top of it this module

- orders them in waves: a job whose teacher run (found by identity, :mod:`kd_lightning.runs.teachers`) is another
  job of the same launch runs in a later wave than that job, so a student never looks for a teacher still training
  (jobs of one wave run ``n_jobs`` at a time; a failed teacher fails its students in one line, as in a plain sweep);
- keeps the sweep's table (:class:`~kd_lightning.report.SummaryTable`) in the process that started the sweep: the
  workers get Hydra's callbacks without it, and each finished job is reported to it there. Joblib alone would run
  the table callback inside each worker, each writing a table of its own jobs over the others'.
- with ``cuda_mps=true``, runs the jobs under an MPS daemon of the sweep's own (:mod:`kd_lightning.cuda_mps`), so
  that their kernels run side by side rather than taking turns;
- sends each job's console (progress bars, Lightning's messages, warnings) to ``console.log`` in its run folder
  (:mod:`kd_lightning.runs.console`), and prints a line to the terminal when a job starts and when it ends. A run
  that is already finished is not written to: its job (one "Already trained" line, or with ``retrain=true`` the
  whole retraining, which moves the old folder away first) keeps the terminal;
- has every worker import the training code as it starts (joblib's loky initializer, :func:`_import_training_code`),
  so that a worker the teacher's wave leaves idle starts its first student at once rather than 12-17 s late (the
  torch import, measured on the H200 machine).
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.types import HydraContext
from omegaconf import DictConfig
from packaging.version import Version

from kd_lightning.cuda_mps import cuda_mps
from kd_lightning.errors import KDError
from kd_lightning.runs.console import CONSOLE, console_to
from kd_lightning.runs.stop import stop_jobs_on_signal
from kd_lightning.runs.store import finished, read_summary, result_line

log = logging.getLogger(__name__)

INSTALL = "pip install 'kd_lightning[shared]'  (or: pip install hydra-joblib-launcher 'joblib>=1.5')"


def require_joblib_launcher() -> None:
    """Raises :class:`KDError` naming the pip command when hydra-joblib-launcher is missing, or joblib is older than
    1.5 (the first whose ``Parallel`` passes an ``initializer`` to its loky workers)."""
    try:
        import joblib
        from hydra_plugins.hydra_joblib_launcher import _core  # noqa: F401
    except ImportError as err:
        raise KDError(f"hydra/launcher=gpu_shared runs the jobs with Hydra's joblib launcher, which is not installed "
                      f"({err}): {INSTALL}") from None
    if Version(joblib.__version__) < Version("1.5"):
        raise KDError(f"hydra/launcher=gpu_shared needs joblib>=1.5 (installed: {joblib.__version__}): {INSTALL}")


def job_waves(own: Sequence[Path | None], teachers: Sequence[Sequence[Path]]) -> list[list[int]]:
    """Job indices in waves: job ``i`` (run folder ``own[i]``, teacher folders ``teachers[i]``) goes one wave after
    the latest wave of the jobs that train its teachers; jobs keep their order inside a wave."""
    producer = {str(folder): i for i, folder in enumerate(own) if folder is not None}
    wave: dict[int, int] = {}

    def level(i: int, seen: frozenset = frozenset()) -> int:
        if i not in wave:
            parents = [producer[str(t)] for t in teachers[i] if str(t) in producer and producer[str(t)] != i]
            wave[i] = 1 + max((level(p, seen | {i}) for p in parents if p not in seen), default=-1)
        return wave[i]

    for i in range(len(own)):
        level(i)
    return [[i for i in range(len(own)) if wave[i] == w] for w in range(max(wave.values(), default=-1) + 1)]


class JobFolders(NamedTuple):
    own: Path | None  # the run folder the job trains into (None: its config cannot be composed or checked here)
    teachers: list[Path]  # its teachers' run folders
    console: Path | None  # where its console goes (None: the terminal)


def _job_folders(launcher, overrides: Sequence[str]) -> JobFolders:
    """A job's folders (none if its config cannot be composed or checked here: the job itself then reports why, in
    the first wave, on the terminal)."""
    from kd_lightning.runs.identity import run_folder
    from kd_lightning.runs.teachers import teacher_runs

    saved = HydraConfig.instance().cfg
    try:
        cfg: DictConfig = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
        HydraConfig.instance().set_config(cfg)  # ${hydra:...} interpolations resolve as in the job
        own = run_folder(cfg)[0].resolve()
        return JobFolders(own, [run.folder.resolve() for run in teacher_runs(cfg)], None if finished(own) else own / CONSOLE)
    except Exception as err:  # noqa: BLE001 - the job's own run names the error
        log.debug("gpu_shared: cannot order job %s (%s); it runs in the first wave", overrides, err)
        return JobFolders(None, [], None)
    finally:
        HydraConfig.instance().cfg = saved


def _split_callbacks(context: HydraContext) -> tuple[HydraContext, list]:
    """(the context the workers get: Hydra's callbacks without the sweep's table, the table callbacks)."""
    from kd_lightning.report.hydra_callback import SummaryTable

    tables = [c for c in context.callbacks.callbacks if isinstance(c, SummaryTable)]
    callbacks = copy.copy(context.callbacks)
    callbacks.callbacks = [c for c in context.callbacks.callbacks if not isinstance(c, SummaryTable)]
    return HydraContext(config_loader=context.config_loader, callbacks=callbacks), tables


def execute_job(console: Path | None, idx: int, *args) -> JobReturn:
    """hydra-joblib-launcher's ``execute_job`` (job number ``idx``) with its console in ``console``, in a loky worker
    whose default multiprocessing context is loky's own: a DataLoader's worker processes started from there failed
    ("'Process' object has no attribute 'env'"), so the platform's default start method (fork on Linux) is put back
    first."""
    import multiprocessing

    from hydra_plugins.hydra_joblib_launcher._core import execute_job as joblib_execute_job

    multiprocessing.set_start_method(multiprocessing.get_all_start_methods()[0], force=True)
    if console is None:
        return joblib_execute_job(idx, *args)
    result = None
    with console_to(console) as say:
        say(f"gpu_shared: #{idx} started; its console: {console}")
        try:
            result = joblib_execute_job(idx, *args)
        finally:  # stopped by the sweep (KeyboardInterrupt) too: the job has written itself as interrupted
            say(f"gpu_shared: #{idx} ({console.parent.parent.name}/{console.parent.name}) {_outcome(result, console.parent)}")
    return result


def _outcome(result: JobReturn | None, folder: Path) -> str:
    """A job's end in a few words: its run's status and result, or the error it failed with."""
    if result is not None and result.status == JobStatus.FAILED:
        try:
            result.return_value  # noqa: B018 - a failed job's return value raises its error
        except Exception as err:  # noqa: BLE001
            first = (str(err).strip().splitlines() or [""])[0][:200]
            return f"failed: {type(err).__name__}: {first} (its console: {folder / CONSOLE})"
    summary = read_summary(folder) or {}
    return f"{summary.get('status', 'ended')} {result_line(summary)}".rstrip()


@contextlib.contextmanager
def _workers_end_with_the_sweep(enabled: bool) -> Iterator[None]:
    """On leaving (``enabled``: under the sweep's MPS daemon), stops joblib's loky workers, which it keeps idle for
    reuse (300 s): each is a client of the daemon, whose ``quit`` waits for every client to go. Until then the
    workers stay, so a later wave runs on the processes of the earlier one: workers that exited after their last
    job (joblib's ``idle_worker_timeout=1``, the way this was first done) cost every later wave a new process each,
    ~12 s of importing torch and the rest on the H200 machine, for every worker idle in an earlier wave.

    By hand: joblib ends a ``Parallel`` call without ending its workers (they are for the next call), and has no
    call that ends them; loky's public ``get_reusable_executor(reuse=True)`` is the executor joblib used."""
    try:
        yield
    finally:
        if enabled:
            from joblib.externals.loky import get_reusable_executor

            get_reusable_executor(reuse=True).shutdown(wait=True)


def _import_training_code(module: str = "kd_lightning.train") -> None:
    """Each loky worker's initializer: imports ``module`` as the worker starts, so that a worker the first wave
    leaves idle is ready for the next (loky starts all ``n_jobs`` workers with the first wave). A failed import is
    only said: the job reports it (an initializer that raised would break the pool). No duration is printed: loky
    imports this module, and with it torch and Lightning, to unpickle the initializer before calling it."""
    try:
        importlib.import_module(module)
    except Exception as err:  # noqa: BLE001
        print(f"gpu_shared: worker {os.getpid()} could not import {module} ({err})", file=sys.stderr, flush=True)
        return
    print(f"gpu_shared: worker {os.getpid()} imported {module}, ready for jobs", file=sys.stderr, flush=True)


def launch_in_waves(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    """What hydra-joblib-launcher's ``launch`` does (its ``execute_job`` in loky processes), wave by wave."""
    from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg
    from joblib import Parallel, delayed

    setup_globals()
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    joblib_cfg = {**launcher.joblib, "n_jobs": launcher.n_jobs, "backend": "loky",  # loky: Hydra's jobs need processes
                  "initializer": _import_training_code}  # the same for every wave: joblib reuses the workers
    process_joblib_cfg(joblib_cfg)
    folders = [_job_folders(launcher, overrides) for overrides in job_overrides]
    own = [f.own for f in folders]
    waves = job_waves(own, [f.teachers for f in folders])
    worker_context, tables = _split_callbacks(launcher.hydra_context)
    singleton_state = Singleton.get_state()
    returns: list[JobReturn | None] = [None] * len(job_overrides)
    with cuda_mps(sweep_dir / ".cuda_mps", launcher.cuda_mps), stop_jobs_on_signal(own, grace=launcher.stop_grace), \
            _workers_end_with_the_sweep(launcher.cuda_mps):
        for number, wave in enumerate(waves, 1):
            log.info("gpu_shared: wave %d of %d, %d jobs, %d at a time:\n%s", number, len(waves), len(wave),
                     launcher.n_jobs, "\n".join(f"\t#{initial_job_idx + i} : {' '.join(filter_overrides(job_overrides[i]))}"
                                                for i in wave))
            results = Parallel(**joblib_cfg)(
                delayed(execute_job)(folders[i].console, initial_job_idx + i, job_overrides[i], worker_context,
                                     launcher.config, launcher.task_function, singleton_state)
                for i in wave
            )
            for i, result in zip(wave, results):
                returns[i] = result
                for table in tables:
                    table.on_job_end(config=launcher.config, job_return=result)
    return returns
