"""hydra/launcher=gpu_shared: jobs in teacher-first waves, several at once, one table kept by the sweep's process."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kd_lightning.errors import KDError
from kd_lightning import shared_gpu as shared
from kd_lightning.runs.console import console_to
from kd_lightning.runs.stop import stat_fields, worker_processes
from kd_lightning.shared_gpu import job_waves

from conftest import ROOT


def test_waves_put_each_job_after_the_jobs_that_train_its_teachers():
    a, b, c, d, elsewhere = (Path(f"/runs/{n}") for n in "abcde")
    # job 0 trains a; 1 distils from a; 2 from b (trained by job 3, listed later); 3 trains b from a; 4 from a run
    # outside the sweep; 5 could not be composed (None): it runs first and reports its own error
    own = [a, c, d, b, Path("/runs/f"), None]
    teachers = [[], [a], [b], [a], [elsewhere], []]
    assert job_waves(own, teachers) == [[0, 4, 5], [1, 3], [2]]
    assert job_waves([a, b], [[], []]) == [[0, 1]]
    assert job_waves([], []) == []


def test_console_to_sends_the_file_descriptors_to_the_file_and_says_lines_on_the_terminal(tmp_path, capfd):
    path = tmp_path / "run" / "console.log"
    for attempt in (1, 2):
        with console_to(path) as say:
            os.write(1, f"bar {attempt}\n".encode())  # below sys.stdout (which pytest replaces here; in a worker
            # it writes to descriptor 1 too: test_a_tiny_sweep_... checks that Lightning's bars land in console.log)
            os.write(2, b"warning\n")
            say(f"job started {attempt}")
        print(f"after {attempt}", flush=True)
    out, err = capfd.readouterr()
    text = path.read_text()
    assert text.count("=== ") == 2 and "bar 1" in text and "bar 2" in text and text.count("warning") == 2
    assert "job started" not in text and "after" not in text
    assert "[HYDRA] job started 1" in err and "job started 2" in err and "after 1" in out and "after 2" in out
    assert "bar" not in out + err and "warning" not in err


def _imported(module: str) -> tuple[int, bool]:
    return os.getpid(), module in sys.modules


def test_every_worker_imports_the_training_code_as_it_starts_and_a_failed_import_breaks_nothing(capfd):
    joblib = pytest.importorskip("joblib")
    try:
        # one task for three workers (a teacher's wave): all three start, and each has imported the module
        joblib.Parallel(n_jobs=3, backend="loky", initializer=shared._import_training_code,
                        initargs=("colorsys",))(joblib.delayed(time.sleep)(2) for _ in range(1))
        warm = {int(pid) for pid in re.findall(r"worker (\d+) imported colorsys", capfd.readouterr().err)}
        assert len(warm) == 3, warm
        done = joblib.Parallel(n_jobs=3, backend="loky", initializer=shared._import_training_code,
                               initargs=("colorsys",))(joblib.delayed(_imported)("colorsys") for _ in range(6))
        assert all(imported for _, imported in done) and {pid for pid, _ in done} <= warm  # the same workers
        # a module that cannot be imported: said, and the tasks still run (the job would report the error)
        done = joblib.Parallel(n_jobs=2, backend="loky", initializer=shared._import_training_code,
                               initargs=("no_such_module_here",))(joblib.delayed(_imported)("json") for _ in range(2))
        assert len(done) == 2 and "could not import no_such_module_here" in capfd.readouterr().err
    finally:
        joblib.externals.loky.get_reusable_executor(reuse=True).shutdown(wait=True)


def test_missing_joblib_launcher_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "hydra_plugins.hydra_joblib_launcher", None)  # import fails as if not installed
    with pytest.raises(KDError, match=r"pip install 'kd_lightning\[shared\]'.*pip install hydra-joblib-launcher"):
        shared.require_joblib_launcher()
    from hydra_plugins.kd_lightning_launcher.gpu_shared_launcher import SharedGPULauncher

    with pytest.raises(KDError, match="hydra-joblib-launcher"):
        SharedGPULauncher(n_jobs=2)
    monkeypatch.undo()
    joblib = pytest.importorskip("joblib")
    monkeypatch.setattr(joblib, "__version__", "1.4.2")  # its Parallel takes no initializer for the workers
    with pytest.raises(KDError, match=r"joblib>=1\.5 \(installed: 1\.4\.2\).*pip install 'kd_lightning\[shared\]'"):
        shared.require_joblib_launcher()


def test_a_tiny_sweep_runs_two_jobs_at_once_teacher_first_and_writes_one_table(tmp_path):
    """A real multirun in a subprocess (~30 s: the main process and two loky workers each import torch; then ~15 s
    for the same command again, which trains nothing), each job with a DataLoader worker process (started from a
    loky worker, they failed until the start method was reset). Each job's progress bar goes to its own run
    folder's console.log, not to the sweep's terminal."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="pip install 'kd_lightning[shared]'")
    command = [
        sys.executable, "-m", "kd_lightning.train", "-m", "hydra/launcher=gpu_shared", "hydra.launcher.n_jobs=2",
        "+experiment=mnist_teacher,mnist_ce,mnist_kd", "data/source=synthetic", "data.source.num_train=320",
        "data.source.num_test=32", "data.val_size=32", "data.num_workers=1", "trainer=cpu", "trainer.max_epochs=1",
        "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
        "callbacks.progress_bar.refresh_rate=1", "logger=csv", f"paths.log_dir={tmp_path}",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert "wave 1 of 2, 2 jobs, 2 at a time" in log and "wave 2 of 2, 1 jobs" in log  # teacher + CE, then KD
    summaries = sorted(tmp_path.glob("mnist_*/*/summary.json"))
    assert [p.parent.parent.name for p in summaries] == ["mnist_ce", "mnist_kd", "mnist_teacher"]
    assert all('"status": "done"' in p.read_text() for p in summaries)
    tables = list((tmp_path / "tables").glob("*.md"))
    assert len(tables) == 1, tables  # the workers wrote none of their own
    rows = [line for line in tables[0].read_text().splitlines() if line.startswith("| mnist_")]
    assert sorted(row.split(" | ")[0] for row in rows) == ["| mnist_ce", "| mnist_kd", "| mnist_teacher"]
    assert "Sweep wall time:" in log and "for 3 jobs" in log
    for summary in summaries:  # each job's console in its folder; the terminal has a line as it starts and ends
        console = (summary.parent / "console.log").read_text()
        assert "Epoch 0: 100%" in console and "=== " in console, console[-2000:]
        assert f"started; its console: {summary.parent / 'console.log'}" in log
        assert f"({summary.parent.parent.name}/{summary.parent.name}) done test/acc" in log
    assert "Epoch 0:" not in log, log[-3000:]

    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.count("Already trained") == 3, again.stdout[-3000:]
    assert all((s.parent / "console.log").read_text().count("=== ") == 1 for s in summaries)  # finished: not written


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (it exists and is not a zombie), from /proc/PID/stat's state field."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers in /proc (Linux)")
def test_sigterm_to_the_sweep_stops_its_workers_and_each_running_job_is_written_as_interrupted(tmp_path):
    """SIGTERM to the sweep's process alone (``kill PID``, a scheduler's limit) used to end that process and leave
    the loky workers training their jobs and then idling; now the workers stop and both running jobs say where."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="pip install 'kd_lightning[shared]'")
    command = [
        sys.executable, "-m", "kd_lightning.train", "-m", "hydra/launcher=gpu_shared", "hydra.launcher.n_jobs=2",
        "+experiment=mnist_teacher,mnist_ce", "data/source=synthetic", "data.source.num_train=320",
        "data.source.num_test=32", "data.val_size=32", "trainer=cpu", "trainer.max_epochs=100000",
        "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "callbacks.progress_bar.refresh_rate=0",
        "logger=csv", f"paths.log_dir={tmp_path}",
    ]
    sweep = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and len(list(tmp_path.glob("mnist_*/*/checkpoints/last.ckpt"))) < 2:
            assert sweep.poll() is None, sweep.stdout.read()[-3000:]
            time.sleep(0.5)
        workers = worker_processes(sweep.pid)
        assert len(list(tmp_path.glob("mnist_*/*/checkpoints/last.ckpt"))) == 2 and workers
        os.kill(sweep.pid, signal.SIGTERM)
        log = sweep.communicate(timeout=90)[0]
    finally:
        for pid in [sweep.pid, *workers]:  # before the fix the workers outlived the sweep: no orphans on failure
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert sweep.returncode != 0
    assert "SIGTERM: stopping 2 worker processes" in log and "the same command skips its finished jobs" in log, log[-3000:]
    time.sleep(2)
    assert not [pid for pid in workers if _alive(pid)], "worker processes outlived the sweep"
    summaries = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("mnist_*/*/summary.json"))]
    assert [s["status"] for s in summaries] == ["interrupted", "interrupted"]
    assert all(s["resume"].startswith("resume with: python -m kd_lightning.train") for s in summaries)
