"""Training stages as config: the optimised terms switch at the stage boundary, parameters freeze per stage, the
optimizer resets when a stage says so, and a resumed run is in its checkpoint's stage."""

import functools

import lightning.pytorch as L
import pytest
import torch
from lightning.pytorch.loggers import Logger

from kd_lightning.data import ClassificationDataModule, SyntheticSource
from kd_lightning.distill import CrossEntropy
from kd_lightning.errors import ConfigError
from kd_lightning.models import LightNN
from kd_lightning.modules import SupervisedModule
from kd_lightning.modules.stages import Stages

ADAM = functools.partial(torch.optim.Adam, lr=1e-3)
# stage "a" optimises CE alone, stage "b" twice CE: the logged loss is 1x, then 2x, the logged ce
STAGES = {"a": {"epochs": 1, "terms": ["ce"], "train": ["net.features"]},
          "b": {"terms": ["twice"], "reset_optimizer": True}}


class Recorder(Logger):
    name, version = "recorder", 0

    def __init__(self):
        super().__init__()
        self.logged = []

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        if "train/loss" in metrics:
            self.logged.append(metrics)


class Optimizer(L.Callback):
    """Adam's step count for the classifier's weight, and the stage, at each epoch's end."""

    def __init__(self):
        self.seen = []

    def on_train_epoch_end(self, trainer, module):
        state = trainer.optimizers[0].state.get(module.net.classifier[0].weight, {})
        self.seen.append((module.stage.name, float(state["step"]) if "step" in state else None))


def module():
    torch.manual_seed(0)
    return SupervisedModule(LightNN(), ADAM, {"ce": CrossEntropy(1.0), "twice": CrossEntropy(2.0)}, stages=STAGES)


def trainer(tmp_path, epochs, callbacks=(), logger=False, checkpoint=False):
    return L.Trainer(default_root_dir=tmp_path, accelerator="cpu", max_epochs=epochs, logger=logger,
                     limit_train_batches=2, limit_val_batches=0, log_every_n_steps=1, enable_progress_bar=False,
                     enable_model_summary=False, enable_checkpointing=checkpoint, callbacks=list(callbacks))


def data():
    return ClassificationDataModule("cifar10", SyntheticSource("cifar10", num_train=64, num_test=16), 10,
                                    [0.5] * 3, [0.25] * 3, val_size=32, batch_size=16)


def test_the_optimised_terms_switch_at_the_stage_boundary_and_the_stage_freezes_what_it_says(tmp_path):
    net_module, recorder, optimizer = module(), Recorder(), Optimizer()
    classifier = net_module.net.classifier[0].weight.detach().clone()
    fit = trainer(tmp_path, 2, callbacks=[optimizer], logger=recorder)
    fit.fit(net_module, datamodule=data())
    ratios = [m["train/loss"] / m["train/ce"] for m in recorder.logged]
    assert ratios == pytest.approx([1.0, 1.0, 2.0, 2.0], rel=1e-6)  # 2 steps of stage a, 2 of stage b
    assert all(m["train/twice"] == pytest.approx(m["train/ce"], rel=1e-6) for m in recorder.logged)  # unweighted
    # stage a trains net.features only: the classifier has no Adam state; stage b starts afresh: 2 steps, not 4
    assert optimizer.seen == [("a", None), ("b", 2.0)]
    assert not torch.equal(classifier, net_module.net.classifier[0].weight)  # trained in stage b
    assert all(p.requires_grad for p in net_module.parameters())  # stage b trains everything


def test_a_resumed_run_is_in_its_checkpoints_stage(tmp_path):
    first = module()
    trainer(tmp_path / "first", 1, checkpoint=True).fit(first, datamodule=data())  # epoch 0: stage a
    path = next((tmp_path / "first").rglob("*.ckpt"))
    resumed, recorder, optimizer = module(), Recorder(), Optimizer()
    trainer(tmp_path / "resumed", 3, callbacks=[optimizer], logger=recorder).fit(resumed, datamodule=data(),
                                                                               ckpt_path=str(path))
    assert [name for name, _ in optimizer.seen] == ["b", "b"]  # epochs 1 and 2
    assert optimizer.seen[-1][1] == 4.0  # reset once at epoch 1 (the boundary), not again at epoch 2
    assert [m["train/loss"] / m["train/ce"] for m in recorder.logged] == pytest.approx([2.0] * 4, rel=1e-6)


def test_stage_lookup_and_errors():
    stages = Stages({"x": {"epochs": 0, "terms": ["ce"]}, "y": {"epochs": 3}, "z": {}}, ["ce", "kd"])
    assert [stages.at(e).name for e in range(5)] == ["y", "y", "y", "z", "z"]  # a stage of 0 epochs never trains
    assert stages.starting(3).name == "z" and stages.starting(2) is None
    assert Stages(None, ["ce"]).at(7).terms is None and not Stages(None, ["ce"]).leave_parameters_unused
    with pytest.raises(ConfigError, match=r"distill.stages.x.epochs=1.5: expected a whole number"):
        Stages({"x": {"epochs": 1.5}, "y": {}}, ["ce"])
    with pytest.raises(ConfigError, match=r"distill.stages.x has \['epoch'\]"):
        Stages({"x": {"epoch": 1}}, ["ce"])


def test_fsp_as_published_is_two_stages_of_yaml(make_config, teacher_state):
    from hydra.utils import instantiate

    from kd_lightning.models import DeepNN

    cfg = make_config("+experiment=cifar10_fsp", "distill=fsp_two_stage", f"teacher.checkpoint={teacher_state(DeepNN())}")
    scheme = instantiate(cfg.distill, net=instantiate(cfg.model), optimizer=instantiate(cfg.optimizer))
    assert [(s.name, s.start, s.terms, s.reset_optimizer) for s in scheme.stages.stages] == [
        ("fsp", 0, ("fsp",), False), ("task", 2, ("ce",), True)]
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)
    loss, values = scheme.losses(x, y, torch.arange(8))  # epoch 0: FSP alone
    assert loss.item() == pytest.approx(0.025 * values["fsp"].item(), rel=1e-6)
    loss.backward()
    assert scheme.net.classifier[0].weight.grad is None  # FSP does not reach the classifier
