"""The fast path on CPU: the captured-step fallback, the teacher-output cache, the speed=fast profile."""

import functools
import logging

import lightning.pytorch as L
import pytest
import torch
from hydra.utils import instantiate

from kd_lightning.data import ClassificationDataModule, SyntheticSource
from kd_lightning.distill import CrossEntropy, HintMSE, SoftTargetKD
from kd_lightning.models import DeepNN, LightNN
from kd_lightning.modules import DistillationModule, SpeedOptions, SupervisedModule
from kd_lightning.train import train

ADAM = functools.partial(torch.optim.Adam, lr=1e-3)


def data(**kw):
    return ClassificationDataModule("cifar10", SyntheticSource("cifar10", num_train=320, num_test=64), 10, [0.5] * 3,
                                    [0.25] * 3, val_size=64, batch_size=32, **kw)


def fit(module, datamodule, tmp_path, epochs=1, **kw):
    L.seed_everything(0)
    trainer = L.Trainer(default_root_dir=tmp_path, accelerator="cpu", max_epochs=epochs, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        limit_val_batches=0, **kw)
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
