"""The fast path on CPU: the captured-step fallback, the teacher-output cache, the speed=fast profile."""

import copy
import functools
import inspect
import logging

import lightning.pytorch as L
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger

from kd_lightning.data import ClassificationDataModule, SyntheticSource
from kd_lightning.distill import CrossEntropy, HintMSE, SoftTargetKD
from kd_lightning.models import DeepNN, LightNN
from kd_lightning.modules import DistillationModule, SpeedOptions, SupervisedModule
from kd_lightning.modules.speed import MatmulBiasGradConv2d, use_matmul_bias_grad
from kd_lightning.report import EpochThroughput
from kd_lightning.train import train

ADAM = functools.partial(torch.optim.Adam, lr=1e-3)


def data(**kw):
    return ClassificationDataModule("cifar10", SyntheticSource("cifar10", num_train=320, num_test=64), 10, [0.5] * 3,
                                    [0.25] * 3, val_size=64, batch_size=32, **kw)


def fit(module, datamodule, tmp_path, epochs=1, **kw):
    L.seed_everything(0)
    kw = {"logger": False, "limit_val_batches": 0, **kw}
    trainer = L.Trainer(default_root_dir=tmp_path, accelerator="cpu", max_epochs=epochs, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, **kw)
    trainer.fit(module, datamodule=datamodule)
    return trainer


def test_capture_falls_back_on_cpu_with_a_message_and_trains_exactly_like_eager(tmp_path, caplog):
    weights = {}
    for capture in (False, True):
        torch.manual_seed(0)
        module = SupervisedModule(LightNN(), ADAM, speed=SpeedOptions(capture_step=capture))
        with caplog.at_level(logging.WARNING):
            trainer = fit(module, data(), tmp_path, epochs=2)
        assert trainer.global_step == 16  # Lightning counts the manual steps too
        weights[capture] = torch.cat([p.detach().flatten() for p in module.net.parameters()])
    assert "CUDA graphs need a CUDA device" in caplog.text and "running the same step eagerly" in caplog.text
    torch.testing.assert_close(weights[True], weights[False], rtol=1e-5, atol=1e-6)


def distiller(cache: bool):
    torch.manual_seed(0)
    terms = {"ce": CrossEntropy(0.5), "kd": SoftTargetKD(0.25, 4.0),
             "hint": HintMSE("features", "features", torch.nn.Conv2d(16, 32, 3, padding=1), weight=0.25)}
    return DistillationModule(LightNN(), DeepNN(), terms, ADAM, speed=SpeedOptions(teacher_cache=cache))


def test_teacher_cache_holds_the_teachers_outputs_for_every_training_sample(tmp_path):
    module, datamodule = distiller(cache=True), data()
    fit(module, datamodule, tmp_path, epochs=1)
    assert module.cache.complete and module.step_key() == "cached teacher"
    images, _ = datamodule.splits["train"]
    x = datamodule.transform(images, train=False)
    with torch.no_grad():
        live = module.teacher_taps(x)
    cached = module.cache.lookup(torch.arange(len(images)))
    torch.testing.assert_close(cached.logits.float(), live.logits, rtol=2e-2, atol=2e-2)  # bf16 storage
    torch.testing.assert_close(cached.features["features"].float(), live.features["features"], rtol=2e-2, atol=2e-2)


def test_cached_and_live_teachers_give_the_same_training(tmp_path):
    weights = []
    for cache in (False, True):
        module = distiller(cache)
        fit(module, data(), tmp_path, epochs=3)
        weights.append(torch.cat([p.detach().flatten() for p in module.net.parameters()]))
    torch.testing.assert_close(weights[0], weights[1], rtol=0.05, atol=2e-3)


def test_augmentation_turns_the_cache_off(tmp_path, caplog):
    module = distiller(cache=True)
    with caplog.at_level(logging.WARNING):
        fit(module, data(hflip=True), tmp_path)
    assert module.cache is None and module.step_key() == "live teacher"
    assert "teacher_cache is off: training batches are augmented" in caplog.text


@pytest.mark.parametrize("experiment", ["mnist_teacher", "mnist_kd"])
def test_the_fast_profile_runs_on_cpu(experiment, make_config, teacher_state):
    overrides = [f"+experiment={experiment}", "speed=fast", "trainer.max_epochs=2"]
    cfg = make_config(*overrides)
    if cfg.get("teacher"):
        cfg = make_config(*overrides, f"teacher.checkpoint={teacher_state(instantiate(cfg.teacher.net))}")
    summary = train(cfg)
    assert summary["status"] == "done" and summary["run_name"] == f"{experiment}_fast" and summary["epochs"] == 2


class RecordingLogger(Logger):
    """Keeps every ``log_metrics`` call."""

    name, version = "recording", 0

    def __init__(self):
        super().__init__()
        self.logged: list[tuple[int, dict]] = []

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        self.logged.append((step, dict(metrics)))


class StepRecorder(SupervisedModule):
    """Remembers each step's loss and correct count as the step computed them."""

    def __init__(self, **kw):
        super().__init__(LightNN(), ADAM, **kw)
        self.steps: list[tuple[float, float]] = []

    def losses(self, x, y, index):
        total, values = super().losses(x, y, index)
        self.steps.append((total.item(), values[-2].item()))
        return total, values


@pytest.mark.parametrize("capture", [False, True])
def test_logged_losses_are_the_means_of_each_window_of_steps(tmp_path, capture):
    module, logger = StepRecorder(speed=SpeedOptions(capture_step=capture)), RecordingLogger()
    trainer = fit(module, data(), tmp_path, logger=logger, log_every_n_steps=4)  # 8 steps: windows 4, 4
    windows = [metrics["train/loss"] for _, metrics in logger.logged if "train/loss" in metrics]
    losses = [loss for loss, _ in module.steps]
    assert len(losses) == 8 and windows == pytest.approx([sum(losses[:4]) / 4, sum(losses[4:]) / 4], rel=1e-5)
    correct = sum(c for _, c in module.steps)
    assert float(trainer.callback_metrics["train/acc"]) == pytest.approx(correct / 256)


def test_matmul_bias_grad_convolution_matches_conv2d():
    torch.manual_seed(0)
    reference = torch.nn.Conv2d(8, 64, 3, padding=1)
    fast = copy.deepcopy(reference)
    fast.__class__ = MatmulBiasGradConv2d
    for memory_format in (torch.channels_last, torch.contiguous_format):
        x = torch.randn(4, 8, 6, 6).to(memory_format=memory_format)
        grads = []
        for conv in (reference, fast):
            conv.zero_grad()
            x_ = x.clone().requires_grad_()
            conv(x_).square().sum().backward()
            grads.append([x_.grad, conv.weight.grad, conv.bias.grad])
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert fast.state_dict().keys() == reference.state_dict().keys()


def test_matmul_bias_grad_is_used_for_wide_convolutions_only():
    teacher, student = DeepNN(), LightNN()
    assert use_matmul_bias_grad(teacher) == 3 and use_matmul_bias_grad(student) == 0  # 128, 64, 64 | 32; 16, 16
    assert [type(m).__name__ for m in teacher.features if isinstance(m, torch.nn.Conv2d)] == [
        "MatmulBiasGradConv2d", "MatmulBiasGradConv2d", "MatmulBiasGradConv2d", "Conv2d"]


def test_steady_rate_is_the_median_epoch_after_the_first():
    throughput = EpochThroughput()
    assert throughput.steady_images_per_s is None
    throughput.rates = [10.0]
    assert throughput.steady_images_per_s == 10.0
    throughput.rates = [10.0, 300.0, 100.0, 200.0]
    assert throughput.steady_images_per_s == 200.0


def test_lightning_reads_the_stored_training_step_signature():
    module = SupervisedModule(LightNN(), ADAM)
    assert inspect.getfullargspec(module.training_step).args == ["self", "batch", "batch_idx"]
    assert SupervisedModule.training_step.__signature__ is inspect.signature(SupervisedModule.training_step)


def test_the_captured_step_normalises_training_batches_itself(tmp_path):
    class Dtypes(L.Callback):
        seen: set = set()

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.seen.add(batch[0].dtype)

    for capture, dtype in ((True, torch.uint8), (False, torch.float32)):
        module, dtypes = SupervisedModule(LightNN(), ADAM, speed=SpeedOptions(capture_step=capture)), Dtypes()
        dtypes.seen = set()
        fit(module, data(), tmp_path, callbacks=[dtypes], limit_train_batches=2)
        assert module.transforms_train_batches == capture and dtypes.seen == {dtype}


class SaveWeights(L.Callback):
    """Each rank writes its student's weights, and whether it had a teacher cache, when training ends."""

    def __init__(self, directory):
        self.directory = directory

    def on_train_end(self, trainer, module):
        weights = [p.detach().clone() for p in module.net.parameters()]
        torch.save((weights, module.cache is not None), self.directory / f"rank{trainer.global_rank}.pt")


def test_under_ddp_the_fast_step_keeps_the_ranks_in_sync_without_a_teacher_cache(tmp_path):
    speed = SpeedOptions(capture_step=True, teacher_cache=True)  # DDP: the same step, eagerly, the teacher live
    module = DistillationModule(LightNN(), DeepNN(), {"ce": CrossEntropy(0.5), "kd": SoftTargetKD(0.5, 4.0)}, ADAM,
                                speed=speed)
    start = [p.detach().clone() for p in module.net.parameters()]
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=1, limit_train_batches=3,
                        limit_val_batches=0, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, callbacks=[SaveWeights(tmp_path)])
    trainer.fit(module, datamodule=data(resident=True))
    (rank0, cached0), (rank1, cached1) = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert all(torch.equal(a, b) for a, b in zip(rank0, rank1))  # each rank saw its own shard: only synced grads agree
    assert not all(torch.equal(a, b) for a, b in zip(rank0, start))
    assert not cached0 and not cached1


@pytest.mark.parametrize("capture", [False, True])
def test_bf16_true_gets_bf16_batches_for_training_and_validation(tmp_path, capture):
    module = SupervisedModule(LightNN(), ADAM, speed=SpeedOptions(capture_step=capture))
    trainer = fit(module, data(), tmp_path, precision="bf16-true", limit_train_batches=2, limit_val_batches=1)
    assert trainer.global_step == 2 and next(module.net.parameters()).dtype == torch.bfloat16
