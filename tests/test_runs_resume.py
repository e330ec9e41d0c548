"""Exact resume: a run interrupted after epoch k (or inside an epoch) and resumed ends with the weights and metrics
of the uninterrupted run; last.ckpt at every epoch, written atomically; interruption and divergence recorded."""

import json
import signal
from pathlib import Path

import pytest
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from kd_lightning.distill.cache import finish_writes
from kd_lightning.errors import ConfigError, NonFiniteLossError
from kd_lightning.runs.resume import AtomicCheckpointIO, RNGState
from kd_lightning.train import train

from test_runs import compose_run

# the MLP teacher has dropout 0.5: equal weights need the generators restored, not only the data order
RUN = ["+experiment=mnist_teacher", "trainer.max_epochs=3", "trainer.limit_train_batches=4"]


@pytest.fixture
def interrupt_at(monkeypatch):
    """Ctrl+C when training reaches (epoch, batch) for the first time."""

    def arm(epoch: int, batch: int) -> None:
        fired = []

        def on_train_batch_start(self, trainer, pl_module, batch_data, batch_idx):
            if (trainer.current_epoch, batch_idx) == (epoch, batch) and not fired:
                fired.append(True)
                raise KeyboardInterrupt

        monkeypatch.setattr(RNGState, "on_train_batch_start", on_train_batch_start, raising=False)

    yield arm
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning ignores SIGINT after a Ctrl+C


def weights(summary: dict) -> dict:
    return torch.load(Path(summary["run_dir"]) / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def assert_same_run(resumed: dict, uninterrupted: dict) -> None:
    a, b = weights(resumed), weights(uninterrupted)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for key in ("val/acc", "test/acc", "test/loss", "epochs", "global_step"):
        assert resumed[key] == uninterrupted[key], key


@pytest.mark.parametrize("where", [(2, 0), (1, 2)], ids=["after_epoch_1", "inside_epoch_1"])
def test_interrupted_and_resumed_run_ends_equal_to_the_uninterrupted_one(tmp_path, interrupt_at, where):
    extra = ["callbacks.last_checkpoint.minutes=1e-9"]  # inside an epoch: a checkpoint after every batch
    uninterrupted = train(compose_run(tmp_path / "u", *RUN, *extra))
    interrupt_at(*where)
    with pytest.raises(SystemExit):
        train(compose_run(tmp_path / "i", *RUN, *extra))
    folder = next((tmp_path / "i" / "mnist_teacher").iterdir())
    stopped = json.loads((folder / "summary.json").read_text())
    assert stopped["status"] == "interrupted" and "resume with" in stopped["resume"]
    assert stopped["interrupted_at"] == f"epoch {where[0]}, step {4 * where[0] + where[1]}"
    resumed = train(compose_run(tmp_path / "i", *RUN, *extra))
    assert resumed["resumed_from"].endswith("last.ckpt") and resumed["status"] == "done"
    assert_same_run(resumed, uninterrupted)


def test_finding1_last_ckpt_follows_every_epoch_even_when_val_acc_never_improves(tmp_path):
    """Finding 1: last.ckpt was written only when val/acc improved (it stayed at epoch 0)."""
    summary = train(compose_run(tmp_path, *RUN, "optimizer.lr=1e-12"))  # the weights barely move: val/acc is flat
    checkpoint = torch.load(Path(summary["run_dir"]) / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 2 and checkpoint["global_step"] == 12


def test_a_write_cut_short_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 0}, path)

    def killed_mid_write(self, checkpoint, target, storage_options=None):
        Path(target).write_bytes(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # as if the process died here

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 1}, path)
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["w"], torch.ones(3))


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(2)}}, path)
    with pytest.raises(NonFiniteLossError, match="not writing"):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.tensor([1.0, float("nan")])}}, path)
    assert torch.load(path, weights_only=True)["state_dict"]["w"].tolist() == [1.0, 1.0]


def test_truncated_last_ckpt_is_named_not_a_traceback(tmp_path, interrupt_at):
    interrupt_at(1, 1)
    with pytest.raises(SystemExit):
        train(compose_run(tmp_path, *RUN))
    last = next((tmp_path / "mnist_teacher").iterdir()) / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(ConfigError, match="cannot resume from .*last.ckpt: it is damaged"):
        train(compose_run(tmp_path, *RUN))


def test_a_loss_that_explodes_stops_the_run_naming_term_and_step(tmp_path):
    """An Adam lr of 10 trained to chance and reported "done"; the guard stops it at its first window."""
    with pytest.raises(NonFiniteLossError, match=r"loss \{'train/loss': .*\} at step \d+ \(epoch 0\)"):
        train(compose_run(tmp_path, "+experiment=mnist_ce", "optimizer.lr=10", "callbacks.loss_guard.factor=1.5",
                          "trainer.limit_train_batches=8"))
    summary = json.loads(next((tmp_path / "mnist_ce").iterdir()).joinpath("summary.json").read_text())
    assert summary["status"] == "running"  # train() raised; kd_lightning.train's main() records "failed"


@pytest.mark.parametrize("where", [(2, 0), (0, 3)], ids=["cache_complete", "cache_filling"])
def test_a_resumed_run_reads_the_teacher_cache_it_saved(tmp_path, interrupt_at, teacher_state, where):
    """The cache is stored in bf16; refilling it after a resume (a live fp32 epoch) trained another model. A full
    cache is written once beside the checkpoints, one still filling (inside epoch 0) inside the checkpoint."""
    from hydra.utils import instantiate

    run = ["+experiment=mnist_kd", "speed=fast", "trainer.precision=32", "trainer.max_epochs=3",
           "data.source.num_train=448", "data.val_size=64", "data.batch_size=64", "trainer.limit_train_batches=1.0",
           "callbacks.last_checkpoint.minutes=1e-9"]
    teacher = teacher_state(instantiate(compose_run(tmp_path, *run).teacher.net))
    run.append(f"teacher.checkpoint={teacher}")
    uninterrupted = train(compose_run(tmp_path / "u", *run))
    interrupt_at(*where)
    with pytest.raises(SystemExit):
        train(compose_run(tmp_path / "i", *run))
    folder = next((tmp_path / "i" / "mnist_kd_fast").iterdir())
    finish_writes()  # the full cache's file is written beside training
    assert (folder / "checkpoints" / "teacher_cache.pt").is_file() == (where[0] > 0)
    resumed = train(compose_run(tmp_path / "i", *run))
    assert resumed["resumed_from"].endswith("last.ckpt")
    assert_same_run(resumed, uninterrupted)


def test_a_resumed_runs_training_time_counts_the_fits_before_the_interruption(tmp_path, interrupt_at):
    """A run cut at the end of its first wave by a time limit and resumed reported only the last epochs' time."""
    interrupt_at(1, 2)
    with pytest.raises(SystemExit):
        train(compose_run(tmp_path, *RUN))
    last = next((tmp_path / "mnist_teacher").iterdir()) / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=False)
    assert 0 < checkpoint["callbacks"]["EpochThroughput"]["train_seconds"] < 600  # the time so far, saved with it
    checkpoint["callbacks"]["EpochThroughput"]["train_seconds"] = 1000.0  # as if the first fit had taken that long
    torch.save(checkpoint, last)
    resumed = train(compose_run(tmp_path, *RUN))
    assert resumed["resumed_from"] == str(last) and 1000 < resumed["train_time_s"] < 1600


def test_a_resumed_crd_run_continues_its_memory_banks_and_ends_equal(tmp_path, interrupt_at, teacher_state):
    """CRD's banks, normaliser and negatives (drawn from the other classes) after a resume inside an epoch: the run
    ends with the uninterrupted run's weights, banks included (they are buffers of the module's state)."""
    from hydra.utils import instantiate

    run = ["+experiment=cifar10_crd", "trainer.max_epochs=2", "data.source.num_train=320", "data.val_size=64",
           "data.batch_size=32", "trainer.limit_train_batches=1.0", "trainer.precision=32",
           "distill.terms.crd.nce_k=64", "+distill.terms.crd.negatives=other_class",
           "callbacks.last_checkpoint.minutes=1e-9"]
    teacher = teacher_state(instantiate(compose_run(tmp_path, *run).teacher.net))
    run.append(f"teacher.checkpoint={teacher}")
    uninterrupted = train(compose_run(tmp_path / "u", *run))
    assert any(k.endswith("memory_s") for k in weights(uninterrupted))
    interrupt_at(1, 3)
    with pytest.raises(SystemExit):
        train(compose_run(tmp_path / "i", *run))
    resumed = train(compose_run(tmp_path / "i", *run))
    assert resumed["resumed_from"].endswith("last.ckpt")
    assert_same_run(resumed, uninterrupted)
