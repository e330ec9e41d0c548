"""``python scripts/benchmark.py --mode sweep``: one method sweep's wall time, run three ways side by side.

The same multirun (a teacher and its students; each way into a log folder of its own, so each trains everything):

- ``one_by_one``: Hydra's basic launcher, the jobs one after another in one process;
- ``shared``: ``hydra/launcher=gpu_shared`` with ``--jobs`` jobs at once, each its own process, taking turns on
  the GPU;
- ``shared_mps``: the same under an MPS daemon of the sweep's own (``hydra.launcher.cuda_mps=true``), the jobs'
  kernels side by side. Skipped, and said so, where there is no ``nvidia-cuda-mps-control``.

Each way is the command a user types (``python -m kd_lightning.train -m ...``) in a subprocess, timed from start
to exit, so the wall time holds every job's start-up too. Printed and written (``outputs/benchmark/sweep_*.json``):
the wall times, their ratios to ``one_by_one``, and each job's training time and steady images/s from its
``summary.json``. On the GPU the default is the zoo's teacher and four of its students (ResNet-56 → ResNet-20:
CE, KD, DKD, AT) for ``--epochs`` epochs on random CIFAR-sized images; on the CPU a tiny MNIST sweep (a dry run
that checks the plumbing, not a measurement).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kd_lightning.cuda_mps import CONTROL
from kd_lightning.runs.store import read_summary

ROOT = Path(__file__).resolve().parents[1]
GPU_JOBS = "cifar10/teacher_resnet56,cifar10/ce,cifar10/kd,cifar10/dkd,cifar10/at"
CPU_JOBS = "mnist_teacher,mnist_ce,mnist_kd"


def way_overrides(way: str, jobs: int) -> list[str]:
    if way == "one_by_one":
        return []
    mps = "true" if way == "shared_mps" else "false"
    return ["hydra/launcher=gpu_shared", f"hydra.launcher.n_jobs={jobs}", f"hydra.launcher.cuda_mps={mps}"]


def sweep_command(experiments: str, common: list[str], way: str, jobs: int, log_dir: Path) -> list[str]:
    return [sys.executable, "-m", "kd_lightning.train", "-m", f"+experiment={experiments}", *common,
            *way_overrides(way, jobs), f"paths.log_dir={log_dir}"]


def job_results(log_dir: Path) -> dict:
    """Each run's training time and steady images/s, by run name and seed folder."""
    results = {}
    for path in sorted(log_dir.glob("*/*/summary.json")):
        summary = read_summary(path.parent) or {}
        results[f"{path.parent.parent.name}/{path.parent.name}"] = {
            key: summary.get(key) for key in ("status", "train_time_s", "images_per_s", "test/acc")}
    return results


def run_way(way: str, experiments: str, common: list[str], jobs: int, work: Path) -> dict:
    if way == "shared_mps" and shutil.which(CONTROL) is None and not os.environ.get("CUDA_MPS_PIPE_DIRECTORY"):
        return {"skipped": f"no {CONTROL} on PATH"}
    log_dir = work / way
    command = sweep_command(experiments, common, way, jobs, log_dir)
    print("$", " ".join(command[1:]), flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    (work / f"{way}.log").write_text(done.stdout + done.stderr)
    runs = job_results(log_dir)
    result = {"wall_s": round(wall, 1), "returncode": done.returncode, "jobs": runs,
              "train_time_sum_s": round(sum(r["train_time_s"] or 0 for r in runs.values()), 1)}
    if done.returncode != 0:
        result["error"] = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["(no output)"]
    return result


def report(results: dict) -> dict:
    base = results.get("one_by_one", {}).get("wall_s")
    return {way: round(base / r["wall_s"], 2) for way, r in results.items() if base and r.get("wall_s")}


def table(results: dict, ratios: dict) -> str:
    lines = ["| way | wall (s) | speed-up vs one by one | jobs' training times added (s) | status |",
             "|---|---|---|---|---|"]
    for way, r in results.items():
        if "skipped" in r:
            lines.append(f"| {way} | – | – | – | skipped: {r['skipped']} |")
            continue
        status = "ok" if r["returncode"] == 0 else f"exit {r['returncode']}: {r.get('error')}"
        lines.append(f"| {way} | {r['wall_s']} | {ratios.get(way, '–')}× | {r['train_time_sum_s']} | {status} |")
    return "\n".join(lines)


def run(ways: list[str], jobs: int, epochs: int, device: str, out_dir: Path, data: Path | None = None,
        experiments: str | None = None, extra: list[str] | None = None) -> tuple[dict, Path]:
    import numpy as np
    from benchmark import synthetic_arrays  # this script's folder is on sys.path

    work = Path(tempfile.mkdtemp(prefix="kd_sweep_benchmark_"))
    if device == "cuda":
        if data is None:  # random CIFAR-sized images: speed does not depend on pixel values
            data = work / "cifar10.npz"
            np.savez(data, **synthetic_arrays("cifar10"))
        common = ["trainer=gpu", "speed=fast", "data/source=npz", f"data.source.path={data}", f"recipe.epochs={epochs}"]
        experiments = experiments or GPU_JOBS
    else:
        common = ["trainer=cpu", "data/source=synthetic", "data.source.num_train=256", "data.source.num_test=32",
                  "data.val_size=32", f"trainer.max_epochs={epochs}", "logger=csv"]
        experiments = experiments or CPU_JOBS
    common += list(extra or [])
    results = {way: run_way(way, experiments, common, jobs, work) for way in ways}
    ratios = report(results)
    print(table(results, ratios), flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"sweep_{device}_{time.strftime('%Y-%m-%d_%H-%M-%S')}.json"
    path.write_text(json.dumps({"experiments": experiments, "common": common, "jobs_at_once": jobs, "epochs": epochs,
                                "results": results, "speedup_vs_one_by_one": ratios, "work": str(work)}, indent=2))
    print(f"written to {path}")
    return results, path
