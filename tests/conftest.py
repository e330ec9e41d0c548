"""Shared fixtures: configs composed with Hydra's compose API, writing into pytest's tmp_path."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
MNIST_NPZ = ROOT.parent / "shared" / "data" / "mnist.npz"

# every test run: synthetic data unless a test says otherwise, CPU, no progress bar, quick
FAST = [
    "data/source=synthetic",
    "data.num_workers=0",
    "data.val_size=256",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.log_every_n_steps=2",
    "callbacks.progress_bar.refresh_rate=0",
]


def compose_config(tmp_path: Path, *overrides: str, fast: bool = True) -> DictConfig:
    """The primary config with ``overrides``, its outputs under ``tmp_path``."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(
            config_name="train",
            overrides=[
                *(FAST if fast else []),
                f"paths.log_dir={tmp_path}",
                f"paths.output_dir={tmp_path}/run",
                *overrides,
            ],
        )


@pytest.fixture(autouse=True)
def seeded_randomness():
    """Every test starts from the same random state, whatever ran before it (order-independent results)."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def environment_restored():
    """Each test leaves os.environ as it found it: an in-process DDP fit (tests/test_ddp.py) sets MASTER_PORT and
    other variables that every later subprocess would inherit, so a later DDP run in a subprocess would reuse an old
    port instead of picking a free one."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(autouse=True)
def no_hydra_job_left_over():
    """A test that ran a Hydra job in-process leaves Hydra's job config (a process-wide singleton) behind; code that
    reads it when set (run names, config choices) would then see another test's job. Clear it after every test."""
    yield
    HydraConfig.instance().cfg = None
    GlobalHydra.instance().clear()


@pytest.fixture
def make_config(tmp_path):
    return lambda *overrides, **kw: compose_config(tmp_path, *overrides, **kw)


@pytest.fixture
def teacher_state(tmp_path):
    """Writes a state_dict for a freshly initialised network and returns its path (a stand-in teacher)."""

    def write(net: torch.nn.Module) -> str:
        path = tmp_path / f"{type(net).__name__}_teacher.pt"
        torch.save(net.state_dict(), path)
        return str(path)

    return write


@pytest.fixture(scope="session")
def mnist_npz_slice(tmp_path_factory) -> Path:
    """A small real MNIST .npz (6000 train, 1000 test images) cut from ../shared/data/mnist.npz."""
    if not MNIST_NPZ.is_file():
        pytest.skip(f"real MNIST not available at {MNIST_NPZ}")
    path = tmp_path_factory.mktemp("mnist") / "mnist.npz"
    with np.load(MNIST_NPZ) as full:
        np.savez(path, x_train=full["x_train"][:6000], y_train=full["y_train"][:6000],
                 x_test=full["x_test"][:1000], y_test=full["y_test"][:1000])
    return path


@pytest.fixture
def one_thread():
    """One intra-op thread: on a busy 2-core machine two OpenMP threads spin against each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
