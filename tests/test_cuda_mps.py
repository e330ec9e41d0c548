"""hydra.launcher.cuda_mps: an MPS daemon of the sweep's own, started, probed, handed to the jobs, stopped.

The daemon is a stand-in script here (no GPU in CI); on a GPU the launcher's runs are measured by hand (README)."""

import os
import re
import stat
import subprocess
import sys

import pytest

from kd_lightning import cuda_mps as mps
from kd_lightning.errors import KDError

from conftest import ROOT


@pytest.fixture
def fake_daemon(tmp_path, monkeypatch):
    """An ``nvidia-cuda-mps-control`` on PATH that writes each call (arguments, pipe folder, stdin) to a log."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    script = bin_dir / mps.CONTROL
    script.write_text('#!/bin/sh\necho "call $* pipe=$CUDA_MPS_PIPE_DIRECTORY" >> "$FAKE_MPS_CALLS"\n'
                      '[ "$1" = "-d" ] || cat >> "$FAKE_MPS_CALLS"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_MPS_CALLS", str(calls))
    for key in mps.ENV:
        monkeypatch.delenv(key, raising=False)
    return calls


def test_the_jobs_get_the_daemons_folders_and_the_daemon_is_stopped_at_the_end(fake_daemon, tmp_path, monkeypatch):
    seen = tmp_path / "probe.txt"  # the probe runs as a job would: it must see the daemon's pipe folder
    monkeypatch.setattr(mps, "PROBE", f"import os; open({str(seen)!r}, 'w').write(os.environ['CUDA_MPS_PIPE_DIRECTORY'])")
    with mps.cuda_mps(tmp_path / "sweep" / ".cuda_mps"):
        pipe = os.environ["CUDA_MPS_PIPE_DIRECTORY"]
        assert os.path.isdir(pipe) and len(os.path.join(pipe, "control")) < 108
        assert os.environ["CUDA_MPS_LOG_DIRECTORY"] == str(tmp_path / "sweep" / ".cuda_mps" / "log")
        assert seen.read_text() == pipe
        assert fake_daemon.read_text() == f"call -d pipe={pipe}\n"
    assert fake_daemon.read_text() == f"call -d pipe={pipe}\ncall  pipe={pipe}\nquit\n"
    assert not any(key in os.environ for key in mps.ENV) and not os.path.exists(pipe)


def test_a_probe_that_cannot_reach_the_daemon_stops_it_and_says_what_to_do(fake_daemon, tmp_path, monkeypatch):
    monkeypatch.setattr(mps, "PROBE", "raise SystemExit('all CUDA-capable devices are busy or unavailable')")
    with pytest.raises(KDError, match=r"cannot use it \(all CUDA-capable devices are busy.*drop hydra.launcher.cuda_mps=true"):
        with mps.cuda_mps(tmp_path / ".cuda_mps"):
            pytest.fail("the jobs ran without a working daemon")
    assert fake_daemon.read_text().endswith("quit\n") and not any(key in os.environ for key in mps.ENV)


def test_no_control_program_names_it_and_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CUDA_MPS_PIPE_DIRECTORY", raising=False)
    with pytest.raises(KDError, match=r"nvidia-cuda-mps-control.*drop hydra.launcher.cuda_mps=true"):
        with mps.cuda_mps(tmp_path):
            pass


def test_a_users_own_daemon_is_used_as_it_is_and_off_starts_nothing(fake_daemon, tmp_path, monkeypatch):
    with mps.cuda_mps(tmp_path, enabled=False):
        assert "CUDA_MPS_PIPE_DIRECTORY" not in os.environ
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", "/run/users-daemon")
    with mps.cuda_mps(tmp_path):
        assert os.environ["CUDA_MPS_PIPE_DIRECTORY"] == "/run/users-daemon"
    assert not fake_daemon.exists()


def test_a_sweep_asking_for_mps_where_there_is_none_stops_before_any_job_with_one_line(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="pip install 'kd_lightning[shared]'")
    command = [sys.executable, "-m", "kd_lightning.train", "-m", "hydra/launcher=gpu_shared", "hydra.launcher.cuda_mps=true",
               "+experiment=mnist_teacher,mnist_ce", "data/source=synthetic", "trainer=cpu", f"paths.log_dir={tmp_path}"]
    env = {**os.environ, "PATH": str(tmp_path)}
    env.pop("CUDA_MPS_PIPE_DIRECTORY", None)
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    log = done.stdout + done.stderr
    assert done.returncode == 1, log[-3000:]
    assert "needs NVIDIA's MPS control program (nvidia-cuda-mps-control" in log and "Traceback" not in log
    assert not list(tmp_path.glob("mnist_*"))  # no job ran


def test_a_daemon_that_does_not_quit_is_reported_with_the_command_that_stops_it(fake_daemon, tmp_path, monkeypatch,
                                                                              caplog):
    script = fake_daemon.parent / "bin" / mps.CONTROL
    script.write_text(script.read_text() + '[ "$1" = "-d" ] || sleep 30\n')  # quit: a client still attached
    monkeypatch.setattr(mps, "PROBE", "pass")
    monkeypatch.setattr(mps, "QUIT_TIMEOUT", 0.5)
    with caplog.at_level("WARNING", logger=mps.__name__), mps.cuda_mps(tmp_path / ".cuda_mps"):
        pipe = os.environ["CUDA_MPS_PIPE_DIRECTORY"]
    assert "did not stop within 0.5 s" in caplog.text
    assert f"echo quit | CUDA_MPS_PIPE_DIRECTORY={pipe} {mps.CONTROL}" in caplog.text
    assert os.path.isdir(pipe) and not any(key in os.environ for key in mps.ENV)  # kept: the way to stop it


# The stand-in for a sweep's daemon: its ``quit`` waits, as MPS's does, until no client is left (here: no loky worker
# of the sweep's process, which calls it; joblib keeps idle workers 300 s); from ``-d`` on, a process of its own
# writes down every worker the sweep has had (the clients a real daemon would serve), their pids.
_WAITING_DAEMON = """#!{python}
import os, subprocess, sys, time
from kd_lightning.runs.stop import worker_processes
with open(os.environ["FAKE_MPS_CALLS"], "a") as log:
    log.write(" ".join(sys.argv[1:]) + (sys.stdin.read() if sys.argv[1:] != ["-d"] else "") + "\\n")
if sys.argv[1:] == ["-d"]:
    subprocess.Popen([sys.executable, "-c", {clients!r}, str(os.getppid())], stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True)
while sys.argv[1:] != ["-d"] and worker_processes(os.getppid()):
    time.sleep(0.1)
"""
_CLIENTS = """
import os, pathlib, sys, time
sweep, seen = sys.argv[1], set()
# kd_lightning.runs.stop.worker_processes does this scan, but importing it takes seconds (hydra and the rest), and this
# must be watching before the first worker starts
while pathlib.Path(f"/proc/{sweep}").exists():
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields, command = stat.read_text().rsplit(")", 1)[1].split(), stat.with_name("cmdline").read_bytes()
        except OSError:
            continue
        worker = fields[1] == sweep and b"loky" in command and b"resource_tracker" not in command
        if worker and stat.parent.name not in seen:
            seen.add(stat.parent.name)
            with open(os.environ["FAKE_MPS_CALLS"] + ".clients", "a") as out:
                out.write(stat.parent.name + " ")
    time.sleep(0.02)
"""


def test_a_sweep_under_mps_keeps_its_workers_across_waves_then_lets_them_go_so_that_the_daemon_quits(tmp_path):
    """A real two-wave multirun in a subprocess (~30 s; a teacher, then its two students, two workers) with the
    stand-in above and the probe skipped (no GPU here). On an H200 the daemon's ``quit`` hung on the idle workers and
    the sweep ended in a traceback, without a table; then, with workers that exited a second after their last job,
    the worker left idle by the teacher's wave was replaced by a new one for the students' (~12 s there); then that
    worker, kept, still imported torch with its first student (16.6 s after the other student started)."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="pip install 'kd_lightning[shared]'")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / mps.CONTROL
    script.write_text(_WAITING_DAEMON.format(python=sys.executable, clients=_CLIENTS))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    overrides = ["-m", "hydra/launcher=gpu_shared", "hydra.launcher.n_jobs=2", "hydra.launcher.cuda_mps=true",
                 "+experiment=mnist_teacher,mnist_kd,mnist_data_free", "data/source=synthetic", "data.source.num_train=320",
                 "data.source.num_test=32", "data.val_size=32", "trainer=cpu", "trainer.max_epochs=1",
                 "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
                 "logger=csv", f"paths.log_dir={tmp_path / 'runs'}"]
    program = ("import runpy, sys; from kd_lightning import cuda_mps; cuda_mps.PROBE = 'pass'; "
               f"cuda_mps.QUIT_TIMEOUT = 40; sys.argv = ['train'] + {overrides!r}; "
               "runpy.run_module('kd_lightning.train', run_name='__main__')")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "FAKE_MPS_CALLS": str(tmp_path / "calls")}
    env.pop("CUDA_MPS_PIPE_DIRECTORY", None)
    done = subprocess.run([sys.executable, "-c", program], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert (tmp_path / "calls").read_text().split() == ["-d", "quit"] and "did not stop" not in log
    assert len(list((tmp_path / "runs" / "tables").glob("*.md"))) == 1 and "Sweep wall time:" in log
    assert "wave 1 of 2, 1 jobs, 2 at a time" in log and "wave 2 of 2, 2 jobs" in log
    clients = (tmp_path / "calls.clients").read_text().split()
    assert len(clients) == 2  # the same two workers for both waves
    # both imported the training code as they started, the one the teacher's wave left idle too
    warmed = re.findall(r"gpu_shared: worker (\d+) imported kd_lightning.train", log)
    assert sorted(warmed) == sorted(clients), log[-3000:]
