"""scripts/benchmark.py --mode sweep (scripts/benchmark_sweep.py): the same sweep job by job and several jobs at once,
each into its own folder, timed as the user's command; MPS skipped where there is none."""

import json
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import benchmark_sweep as sweep  # noqa: E402


def test_each_way_is_the_users_command_with_its_launcher():
    assert sweep.way_overrides("one_by_one", 3) == []
    assert sweep.way_overrides("shared", 3) == ["hydra/launcher=gpu_shared", "hydra.launcher.n_jobs=3", "hydra.launcher.cuda_mps=false"]
    assert sweep.way_overrides("shared_mps", 2)[-1] == "hydra.launcher.cuda_mps=true"
    command = sweep.sweep_command("a,b", ["trainer=cpu"], "shared", 2, ROOT / "x")
    assert command[1:5] == ["-m", "kd_lightning.train", "-m", "+experiment=a,b"] and command[-1] == f"paths.log_dir={ROOT / 'x'}"


def test_a_cpu_dry_run_trains_every_job_each_way_and_writes_the_ratios(tmp_path, monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="pip install 'kd_lightning[shared]'")
    monkeypatch.setattr(sweep.shutil, "which", lambda name: None)  # no MPS here, whatever the machine has
    monkeypatch.delenv("CUDA_MPS_PIPE_DIRECTORY", raising=False)
    results, path = sweep.run(["one_by_one", "shared", "shared_mps"], 2, 1, "cpu", tmp_path)
    for way in ("one_by_one", "shared"):
        assert results[way]["returncode"] == 0 and results[way]["wall_s"] > 0
        assert sorted(r.split("/")[0] for r in results[way]["jobs"]) == ["mnist_ce", "mnist_kd", "mnist_teacher"]
        assert all(job["status"] == "done" for job in results[way]["jobs"].values())
    assert results["shared_mps"] == {"skipped": "no nvidia-cuda-mps-control on PATH"}
    written = json.loads(path.read_text())
    assert written["speedup_vs_one_by_one"]["one_by_one"] == 1.0
    # the ratio, kept to 2 decimals, comes from the unrounded wall times, which are kept to 0.1 s
    one, shared = results["one_by_one"]["wall_s"], results["shared"]["wall_s"]
    bound = 0.005 + one / shared * (0.05 / one + 0.05 / shared)
    assert written["speedup_vs_one_by_one"]["shared"] == pytest.approx(one / shared, abs=bound)
