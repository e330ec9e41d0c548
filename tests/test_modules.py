"""Training schemes: what is trained, what stays frozen, what reaches the checkpoint."""

import functools

import lightning.pytorch as L
import pytest
import torch
from torch import nn

from kd_lightning.data import ClassificationDataModule, SyntheticSource
from kd_lightning.distill import CrossEntropy, HintMSE, SoftTargetKD
from kd_lightning.errors import ConfigError, NonFiniteLossError
from kd_lightning.models import DeepNN, LightNN
from kd_lightning.modules import DistillationModule, SupervisedModule

ADAM = functools.partial(torch.optim.Adam, lr=1e-3)


def cifar_like():
    return ClassificationDataModule("cifar10", SyntheticSource("cifar10", num_train=400, num_test=64), 10,
                                    [0.5] * 3, [0.25] * 3, val_size=64, batch_size=32)


def trainer(tmp_path, **kw):
    args = dict(default_root_dir=tmp_path, accelerator="cpu", max_epochs=1, logger=False, enable_progress_bar=False,
                enable_model_summary=False, limit_train_batches=5, limit_val_batches=1)
    return L.Trainer(**{**args, **kw})


def hint_module(teacher):
    terms = {"ce": CrossEntropy(0.75), "kd": SoftTargetKD(0.25, 2.0),
             "hint": HintMSE("features", "features", nn.Conv2d(16, 32, 3, padding=1), weight=0.25)}
    return DistillationModule(LightNN(), teacher, terms, ADAM)


def test_distillation_trains_student_and_adapter_only(tmp_path):
    teacher = DeepNN()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    module = hint_module(teacher)
    student_before = [p.clone() for p in module.net.parameters()]
    adapter_before = module.terms["hint"].adapter.weight.clone()
    trainer(tmp_path).fit(module, datamodule=cifar_like())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert not teacher.training
    assert all(not torch.equal(a, b) for a, b in zip(student_before, module.net.parameters()))
    assert not torch.equal(adapter_before, module.terms["hint"].adapter.weight)
    optimised = {id(p) for group in module.optimizers().optimizer.param_groups for p in group["params"]}
    assert id(module.terms["hint"].adapter.weight) in optimised
    assert not optimised & {id(p) for p in teacher.parameters()}


def test_teacher_is_not_in_the_student_checkpoint(tmp_path):
    module = hint_module(DeepNN())
    fit = trainer(tmp_path, enable_checkpointing=True)
    fit.fit(module, datamodule=cifar_like())
    path = tmp_path / "student.ckpt"
    fit.save_checkpoint(path)
    keys = torch.load(path, weights_only=True)["state_dict"].keys()
    assert any(k.startswith("net.features") for k in keys) and any(k.startswith("terms.hint.adapter") for k in keys)
    assert not any("teacher" in k for k in keys)
    assert sum(torch.load(path, weights_only=True)["state_dict"][k].numel() for k in keys if k.startswith("net.")) == 267_738


def test_supervised_scheme_refuses_terms_that_need_a_teacher():
    with pytest.raises(ConfigError, match=r"\['kd'\] need a teacher"):
        SupervisedModule(LightNN(), ADAM, terms={"ce": CrossEntropy(), "kd": SoftTargetKD()})
    with pytest.raises(ConfigError, match="needs a teacher: choose one with teacher="):
        DistillationModule(LightNN(), None, {"kd": SoftTargetKD()}, ADAM)


def test_non_finite_loss_stops_training_with_a_clear_error(tmp_path):
    module = SupervisedModule(LightNN(), functools.partial(torch.optim.SGD, lr=1e30))
    with pytest.raises(NonFiniteLossError, match="train/loss.*Lower optimizer.lr"):
        trainer(tmp_path, limit_train_batches=6, log_every_n_steps=3, max_epochs=3).fit(module, datamodule=cifar_like())
