"""NVIDIA's Multi-Process Service (CUDA MPS) for the jobs of one sweep (``hydra.launcher.cuda_mps=true``).

Without MPS the processes sharing a GPU take turns on it: a small student's step leaves most of an H200's SMs
empty, and a second process cannot fill them (measured: three ResNet-20 students at once trained no more images a
second together than one alone). With an MPS daemon their kernels run side by side (three such students logged
~1.75× the images a second of one alone; ``scripts/benchmark.py --mode sweep`` measures the sweep's wall time against
job by job; README, "Several jobs at once"). This starts one for the sweep
(its own pipe folder, its log in the sweep folder: it touches no system-wide daemon), checks with a one-tensor
CUDA probe that a client can use it, hands its folders to the job processes through the environment (they are
started after this, and CUDA reads ``CUDA_MPS_PIPE_DIRECTORY`` when a process first uses the GPU), and stops it at
the end. The daemon's ``quit`` waits until its clients have gone: the launcher stops joblib's workers (kept idle for
reuse, each with its CUDA context) once the sweep's last wave is done, and a daemon that still does not stop within
``QUIT_TIMEOUT`` seconds is reported with the command that stops it, not raised: the jobs' work is written by then
(on an H200, with the workers left idle, ``quit`` hung and the sweep ended in a traceback, without its table). A
daemon the user already runs (``CUDA_MPS_PIPE_DIRECTORY`` set) is used as it is and left running.

Written by hand: neither Hydra's launchers nor Lightning start an MPS daemon. The GPU's settings (compute mode,
clocks) are not touched: MPS needs none of them changed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from kd_lightning.errors import KDError

log = logging.getLogger(__name__)

CONTROL = "nvidia-cuda-mps-control"
PROBE = "import torch; print(float(torch.ones(8, device='cuda').sum()))"  # a client's first use of the GPU
ENV = ("CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY")
QUIT_TIMEOUT = 60.0


def _control(env: dict, *args: str, command: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([CONTROL, *args], input=command, env=env, capture_output=True, text=True, timeout=timeout)


def _quit(env: dict) -> bool:
    """Stops the daemon; False (and a warning saying how to stop it) when it does not answer in time."""
    try:
        _control(env, command="quit\n", timeout=QUIT_TIMEOUT)
        return True
    except subprocess.TimeoutExpired:
        log.warning("cuda_mps: the sweep's MPS daemon did not stop within %g s (a process still using the GPU through "
                    "it?); the runs are written. Stop it with: echo quit | CUDA_MPS_PIPE_DIRECTORY=%s %s",
                    QUIT_TIMEOUT, env["CUDA_MPS_PIPE_DIRECTORY"], CONTROL)
        return False


@contextlib.contextmanager
def cuda_mps(folder: Path, enabled: bool = True) -> Iterator[None]:
    """Within: an MPS daemon (its log under ``folder``, its pipe in a short folder under the temp dir) named in
    ``os.environ`` for the processes started inside. Raises :class:`KDError` (saying what to do) when there is no
    daemon to start or a client cannot reach it."""
    if not enabled:
        yield
        return
    if os.environ.get("CUDA_MPS_PIPE_DIRECTORY"):
        log.info("cuda_mps: using the MPS daemon at CUDA_MPS_PIPE_DIRECTORY=%s", os.environ["CUDA_MPS_PIPE_DIRECTORY"])
        yield
        return
    if shutil.which(CONTROL) is None:
        raise KDError(f"hydra.launcher.cuda_mps=true needs NVIDIA's MPS control program ({CONTROL}, installed "
                      f"with the NVIDIA driver) on PATH, and there is none here: drop hydra.launcher.cuda_mps=true "
                      f"(the jobs then take turns on the GPU), or put {CONTROL} on PATH")
    # the pipe folder holds the daemon's unix socket, whose path may not pass 107 bytes: a short one under /tmp
    dirs = {"CUDA_MPS_PIPE_DIRECTORY": Path(tempfile.mkdtemp(prefix="kd_mps_")),
            "CUDA_MPS_LOG_DIRECTORY": Path(folder) / "log"}
    dirs["CUDA_MPS_LOG_DIRECTORY"].mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **{k: str(v) for k, v in dirs.items()}}
    started = _control(env, "-d")
    try:
        if started.returncode != 0:
            raise KDError(f"hydra.launcher.cuda_mps=true: {CONTROL} -d failed ({started.returncode}: "
                          f"{(started.stderr or started.stdout).strip()[-300:]}); drop hydra.launcher.cuda_mps=true")
        probe = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
        if probe.returncode != 0:
            raise KDError(f"hydra.launcher.cuda_mps=true: the MPS daemon started, but a CUDA process cannot use it "
                          f"({probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else probe.returncode}; "
                          f"daemon log: {dirs['CUDA_MPS_LOG_DIRECTORY']}); drop hydra.launcher.cuda_mps=true")
        log.info("cuda_mps: MPS daemon started for the sweep (%s)", folder)
        saved = {k: os.environ.get(k) for k in ENV}
        os.environ.update({k: env[k] for k in ENV})
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    finally:
        if started.returncode != 0 or _quit(env):  # a daemon still running keeps its pipe folder, to be stopped
            shutil.rmtree(dirs["CUDA_MPS_PIPE_DIRECTORY"], ignore_errors=True)
