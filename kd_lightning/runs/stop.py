"""Stopping a sweep whose jobs run in worker processes (``hydra/launcher=gpu_shared``) without losing or orphaning them.

joblib stops its workers when the sweep's process gets Ctrl+C, but it kills them at once: a job cut there keeps the
``running`` summary of a process that no longer exists. And SIGTERM to the sweep's process alone (``kill PID``, a
scheduler's time limit) ended that process and left the workers training their jobs, and then idling with the GPU
memory they held, with nobody to collect them. Here both signals go the same way: the workers get SIGINT (in each,
Lightning stops the job and kd_lightning writes its run as interrupted beside its ``last.ckpt``), the sweep waits up
to ``grace`` seconds until no run folder of the sweep is locked any more (each lock is released once its job has
written), and only then raises KeyboardInterrupt for joblib to stop the workers. Rerunning the same command skips
the finished jobs and resumes the others.

Written by hand: neither joblib nor Hydra's launchers forward a signal to the workers or wait for them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from kd_lightning.runs.store import RunLock

log = logging.getLogger(__name__)


def stat_fields(pid: int | str) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state, ppid, ...); None for a process that is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def worker_processes(parent: int | None = None) -> list[int]:
    """The pids of the loky worker processes started by ``parent`` (default: this process), from ``/proc``; empty
    where there is no ``/proc`` (the workers are then stopped by joblib alone, without the grace period)."""
    parent = os.getpid() if parent is None else parent
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        fields = stat_fields(entry.name)
        if not fields or int(fields[1]) != parent:
            continue  # another's child, or a process that ended meanwhile
        try:
            command = entry.joinpath("cmdline").read_bytes()
        except OSError:
            continue
        if b"loky" in command and b"resource_tracker" not in command:
            pids.append(int(entry.name))
    return pids


@contextlib.contextmanager
def stop_jobs_on_signal(folders: Sequence[Path | None], grace: float = 30.0) -> Iterator[None]:
    """Within: SIGTERM or SIGINT lets the running jobs (run folders ``folders``) write themselves as interrupted,
    waiting at most ``grace`` seconds, then raises KeyboardInterrupt here. The previous handlers come back after."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def stop(signum: int, _frame) -> None:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl+C while the jobs write does not cut them
        workers = worker_processes()
        log.warning("gpu_shared: %s: stopping %d worker processes; each running job writes its run as interrupted "
                    "(waiting up to %g s)", signal.Signals(signum).name, len(workers), grace)
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(RunLock.held(f) for f in folders if f is not None):
            time.sleep(0.2)
        log.warning("gpu_shared: the sweep stopped; the same command skips its finished jobs and resumes the others "
                    "from their last.ckpt")
        raise KeyboardInterrupt

    for sig, handler in previous.items():
        if handler is not signal.SIG_IGN:  # a sweep started in the background (``&``) keeps ignoring Ctrl+C
            signal.signal(sig, stop)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
