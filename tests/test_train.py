"""The entry point end to end: experiments compose and run, logs, resume, multirun, errors, real MNIST."""

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from kd_lightning.train import train

from conftest import CONF, ROOT

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
TUTORIAL_EXPERIMENTS = ["mnist_teacher", "mnist_ce", "mnist_kd", "cifar10_teacher", "cifar10_ce", "cifar10_kd",
                        "cifar10_cosine", "cifar10_regressor"]


def with_teacher(make_config, teacher_state, *overrides):
    """Compose; if the experiment distils, point it at a freshly initialised teacher of the right architecture."""
    cfg = make_config(*overrides)
    if cfg.get("teacher"):
        cfg = make_config(*overrides, f"teacher.checkpoint={teacher_state(instantiate(cfg.teacher.net))}")
    return cfg


def test_the_tutorial_experiments_exist():
    assert set(TUTORIAL_EXPERIMENTS) <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_runs_fast_dev_run(experiment, make_config, teacher_state):
    cfg = with_teacher(make_config, teacher_state, f"+experiment={experiment}", "trainer.fast_dev_run=true")
    assert cfg.run_name == experiment
    summary = train(cfg)
    assert summary["status"] == "done" and 0.0 <= summary["test/acc"] <= 1.0


def scalar_tags(run_dir: Path) -> set[str]:
    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return set(accumulator.Tags()["scalars"])


def test_tensorboard_gets_every_term_accuracy_and_learning_rate(make_config, teacher_state, tmp_path):
    cfg = with_teacher(make_config, teacher_state, "+experiment=cifar10_regressor")
    train(cfg)
    tags = scalar_tags(tmp_path / "run")
    assert {"train/loss", "train/ce", "train/hint", "train/acc", "val/loss", "val/acc", "test/acc", "train/lr",
            "time/epoch_s", "time/images_per_s"} <= tags
    assert (tmp_path / "run" / "hparams.yaml").is_file()
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_rerun_of_a_finished_run_trains_nothing_and_another_configuration_gets_its_own_folder(tmp_path):
    from test_runs import compose_run

    first = train(compose_run(tmp_path, "+experiment=cifar10_ce"))
    assert first["resumed_from"] is None and first["epochs"] == 1
    assert train(compose_run(tmp_path, "+experiment=cifar10_ce")) == first
    longer = train(compose_run(tmp_path, "+experiment=cifar10_ce", "trainer.max_epochs=2"))
    assert longer["epochs"] == 2 and longer["run_dir"] != first["run_dir"]


class CLIHung(AssertionError):
    """A command that outlived its time limit: the message ends with what it printed, its processes' stacks last."""

    def __init__(self, args, timeout: float, output: str):
        lines = [line for line in output.splitlines() if not line.startswith("Extension modules:")]  # long, no use
        super().__init__(f"kd_lightning.train {' '.join(args)} ran past {timeout} s; the end of its output, with "
                         f"the stacks of its processes:\n" + "\n".join(lines)[-8000:])


def run_cli(*args, cwd=ROOT, timeout=300):
    """``python -m kd_lightning.train *args``. Past ``timeout``, every process it started (DDP ranks included) is
    made to print its Python stacks (faulthandler on SIGABRT) and dies, and :class:`CLIHung` says where each was;
    ``subprocess.run``'s timeout kills rank 0 only, leaves rank 1 running and says nothing of where either was."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}
    process = subprocess.Popen([sys.executable, "-m", "kd_lightning.train", *args], cwd=cwd, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                               preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CORE, (0, 0)))  # no core files
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)  # rank 0 first, then the rest: their stacks do not interleave
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        for signal_number in (signal.SIGABRT, signal.SIGKILL):
            time.sleep(2)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal_number)
        stdout, stderr = process.communicate()
        raise CLIHung(args, timeout, stdout + stderr) from None
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_multirun_puts_each_job_in_its_own_folder_and_writes_a_table(tmp_path):
    result = run_cli("-m", "+experiment=cifar10_ce", "optimizer.lr=0.001,0.003", *CLI_FAST, f"paths.log_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(p.parent.name for p in tmp_path.rglob("summary.json"))
    assert len(runs) == 2 and "optimizer.lr-0.001" in runs[0] and "optimizer.lr-0.003" in runs[1]
    table = next((tmp_path / "tables").glob("*.md")).read_text()
    assert "optimizer.lr=0.001" in table and "optimizer.lr=0.003" in table


def test_students_find_the_teacher_trained_in_the_same_sweep_with_the_same_overrides(tmp_path):
    result = run_cli("-m", "+experiment=mnist_teacher,mnist_kd", *CLI_FAST, f"paths.log_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = [json.loads(p.read_text()) for p in tmp_path.rglob("summary.json")]
    assert sorted((s["run_name"], s["status"]) for s in summaries) == [("mnist_kd", "done"), ("mnist_teacher", "done")]


def test_a_failed_teacher_job_fails_its_students_in_one_line_and_the_table_marks_all(tmp_path):
    result = run_cli("-m", "+experiment=mnist_teacher,mnist_kd", *CLI_FAST, "data/source=npz",
                     f"data.source.path={tmp_path}/missing.npz", f"paths.log_dir={tmp_path}")
    assert result.returncode == 1  # the sweep ends, prints its table, then reports failure
    output = result.stdout + result.stderr
    assert "Traceback" not in output and "Error executing job" not in output
    student_lines = [line for line in output.splitlines() if "ERROR] - not trained: its teacher" in line]
    assert len(student_lines) == 1 and "mnist_teacher" in student_lines[0]
    table = next((tmp_path / "tables").glob("*.md")).read_text()
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| mnist")}
    assert set(rows) == {"mnist_teacher", "mnist_kd"} and all("s0: FAILED" in row for row in rows.values())
    assert "2 of 2 jobs failed" in output


def test_missing_teacher_is_one_clear_message_with_the_command_to_train_it(tmp_path):
    result = run_cli("+experiment=cifar10_kd", *CLI_FAST, f"paths.log_dir={tmp_path}")
    assert result.returncode == 1
    command = "python -m kd_lightning.train +experiment=cifar10_teacher " + " ".join(CLI_FAST) + f" paths.log_dir={tmp_path} seed=0"
    assert command in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_unknown_experiment_lists_the_available_ones(tmp_path):
    result = run_cli("+experiment=cifar10_kdd", f"paths.log_dir={tmp_path}")
    assert result.returncode == 1
    assert "Could not find 'experiment/cifar10_kdd'" in result.stderr and "cifar10_kd" in result.stderr


def test_short_real_mnist_run_beats_chance_by_a_wide_margin(make_config, mnist_npz_slice):
    cfg = make_config("+experiment=mnist_ce", "data/source=npz", f"data.source.path={mnist_npz_slice}", "data.val_size=1000",
                      "trainer.limit_train_batches=1.0", "trainer.limit_val_batches=1.0", "trainer.limit_test_batches=1.0")
    summary = train(cfg)
    assert summary["test/acc"] > 0.85  # chance is 0.10


CLI_FAST = ["data/source=synthetic", "data.num_workers=0", "data.val_size=256", "trainer=cpu", "trainer.max_epochs=1",
            "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
            "callbacks.progress_bar.refresh_rate=0"]


def test_the_same_sweep_twice_from_empty_folders_gives_the_same_numbers(tmp_path):
    """Issue 9's reproducibility on CPU: a teacher and its KD student, swept twice into two empty log folders, end with
    identical test accuracy, loss and student weights (the GPU check is docs/results/cifar10_all_methods_fast_h200.md)."""
    summaries = []
    for attempt in ("a", "b"):
        result = run_cli("-m", "+experiment=mnist_teacher,mnist_kd", *CLI_FAST, f"paths.log_dir={tmp_path / attempt}")
        assert result.returncode == 0, result.stderr[-3000:]
        found = {p.parent.parent.name: json.loads(p.read_text()) for p in (tmp_path / attempt).rglob("summary.json")}
        assert set(found) == {"mnist_teacher", "mnist_kd"}
        summaries.append(found)
    for run in ("mnist_teacher", "mnist_kd"):
        a, b = summaries[0][run], summaries[1][run]
        assert (a["test/acc"], a["test/loss"], a["global_step"]) == (b["test/acc"], b["test/loss"], b["global_step"])
        weights = [torch.load(Path(s["run_dir"]) / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
                   for s in (a, b)]
        assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
