"""SLURM through hydra-submitit-launcher: the job script it would submit, rendered without a cluster."""

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from conftest import CONF

submitit = pytest.importorskip("submitit")
pytest.importorskip("hydra_plugins.hydra_submitit_launcher")


@pytest.fixture(autouse=True)
def fake_srun(tmp_path, monkeypatch):
    """submitit's SLURM executor insists on an ``srun`` on PATH: a stand-in that is never run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")


def sbatch_script(tmp_path, *overrides):
    """What hydra-submitit-launcher's SlurmLauncher.launch hands submitit, turned into the sbatch text."""
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(config_name="train", return_hydra_config=True,
                      overrides=["hydra/launcher=slurm", "trainer=slurm", "+experiment=mnist_ce",
                                 f"paths.log_dir={tmp_path}/runs", *overrides])
    HydraConfig.instance().set_config(cfg)
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    params.pop("_target_")
    # the launcher's own split of its config into AutoExecutor(...) and update_parameters(...) arguments
    executor = submitit.AutoExecutor(folder=params.pop("submitit_folder"), cluster="slurm",
                                     slurm_max_num_timeout=params.pop("max_num_timeout"))
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    return cfg, executor._executor._make_submission_file_text("python -m submitit.core._submit JOB", "uid")


def test_single_node_job_script_asks_for_gpus_time_and_partition(tmp_path):
    cfg, script = sbatch_script(tmp_path, "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=4",
                                "hydra.launcher.timeout_min=90")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=4", "#SBATCH --ntasks-per-node=4",
                 "#SBATCH --nodes=1", "#SBATCH --time=90", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=64GB",
                 "#SBATCH --signal=USR2@120"):
        assert line in script, line
    assert "srun" in script and str(tmp_path) in script  # one task per GPU, logs under the sweep folder
    assert (cfg.trainer.devices, cfg.trainer.num_nodes, cfg.trainer.strategy) == (4, 1, "ddp")


def test_multi_node_job_script(tmp_path):
    cfg, script = sbatch_script(tmp_path, "hydra.launcher.nodes=2", "hydra.launcher.gpus_per_node=8",
                                "hydra.launcher.account=proj1", "+hydra.launcher.additional_parameters.mail-type=END")
    for line in ("#SBATCH --nodes=2", "#SBATCH --gpus-per-node=8", "#SBATCH --ntasks-per-node=8",
                 "#SBATCH --account=proj1", "#SBATCH --mail-type=END"):
        assert line in script, line
    assert (cfg.trainer.devices, cfg.trainer.num_nodes) == (8, 2)
    assert cfg.trainer.plugins[0].auto_requeue is False  # submitit requeues on time-out, not Lightning
