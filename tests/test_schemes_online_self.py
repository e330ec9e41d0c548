"""Online and self-distillation: deep mutual learning, Tf-KD's virtual teacher, BYOT exit heads."""

import functools
import math

import lightning.pytorch as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kd_lightning.data import ClassificationDataModule, SyntheticSource
from kd_lightning.distill import CrossEntropy, Outputs, TfKDVirtualTeacher
from kd_lightning.errors import ConfigError, LayerNotFoundError
from kd_lightning.models import LightNN
from kd_lightning.fast import FastPath
from kd_lightning.modules import MutualLearningModule, SelfDistillationModule, SupervisedModule
from kd_lightning.modules.mutual import mutual_learning_losses
from kd_lightning.train import train

ADAM = functools.partial(torch.optim.Adam, lr=1e-3)
NEW_EXPERIMENTS = ["cifar10_dml", "cifar10_tfkd", "cifar10_byot"]


def cifar_like():
    return ClassificationDataModule("cifar10", SyntheticSource("cifar10", num_train=256, num_test=64), 10,
                                    [0.5] * 3, [0.25] * 3, val_size=64, batch_size=32)


def trainer(tmp_path, **kw):
    args = dict(default_root_dir=tmp_path, accelerator="cpu", max_epochs=1, logger=False, enable_progress_bar=False,
                enable_model_summary=False, enable_checkpointing=False, limit_train_batches=3, limit_val_batches=1)
    return L.Trainer(**{**args, **kw})


def flat(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in module.parameters()])


def optimised_ids(optimizer) -> set[int]:
    return {id(p) for group in optimizer.param_groups for p in group["params"]}


# ---------------------------------------------------------------- hand computations

def softmax(row, t=1.0):
    exps = [math.exp(v / t) for v in row]
    return [e / sum(exps) for e in exps]


def kl(p, q):  # KL(p ‖ q)
    return sum(a * (math.log(a) - math.log(b)) for a, b in zip(p, q))


class FixedLogits(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits))

    def forward(self, x):
        return self.logits


LOGITS = [[[2.0, 0.5, -1.0], [0.0, 1.0, 0.3]],
          [[1.0, 1.5, 0.0], [-0.5, 0.2, 2.0]],
          [[0.3, -0.2, 0.1], [1.2, 1.1, -0.4]]]
TARGET = [0, 2]


def test_mutual_learning_loss_matches_a_hand_computation():
    t, kl_weight = 2.0, 0.5
    module = MutualLearningModule(FixedLogits(LOGITS[0]), [FixedLogits(LOGITS[1]), FixedLogits(LOGITS[2])], ADAM,
                                  temperature=t, kl_weight=kl_weight)
    y = torch.tensor(TARGET)
    total, values = module.losses(torch.zeros(2, 1), y, torch.arange(2))
    ce = [sum(-math.log(softmax(row)[c]) for row, c in zip(member, TARGET)) / 2 for member in LOGITS]
    kls = []
    for k in range(3):
        per_other = [sum(kl(softmax(LOGITS[m][b], t), softmax(LOGITS[k][b], t)) for b in range(2)) / 2
                     for m in range(3) if m != k]
        kls.append(sum(per_other) / 2 * t**2)
    expected = sum(c + kl_weight * d for c, d in zip(ce, kls))
    assert total.item() == pytest.approx(expected, rel=1e-5)
    correct = [sum(max(range(3), key=row.__getitem__) == c for row, c in zip(member, TARGET)) for member in LOGITS]
    want = {"loss": expected, "ce_0": ce[0], "kl_0": kls[0], "ce_1": ce[1], "kl_1": kls[1], "ce_2": ce[2],
            "kl_2": kls[2], "#correct": correct[0], "#count": 2, "#correct_1": correct[1], "#correct_2": correct[2]}
    torch.testing.assert_close({k: v.float() for k, v in values.items()},
                               {k: torch.tensor(float(v)) for k, v in want.items()}, rtol=1e-5, atol=1e-6)
    assert [f"train/{k}" for k in values if not k.startswith("#")] == ["train/loss", "train/ce_0", "train/kl_0", "train/ce_1", "train/kl_1",
                                   "train/ce_2", "train/kl_2"]


def test_mutual_learning_kl_moves_only_the_student_and_pulls_the_cohort_together():
    torch.manual_seed(0)
    members = [nn.Linear(8, 5) for _ in range(2)]
    module = MutualLearningModule(members[0], [members[1]], ADAM, ce_weight=0.0)
    x, y = torch.randn(64, 8), torch.randint(0, 5, (64,))

    def disagreement():
        with torch.no_grad():
            _, kls = mutual_learning_losses([m(x) for m in members], y)
        return sum(kls).item()

    before = disagreement()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.5)
    for step in range(10):
        optimizer.zero_grad()
        loss, _ = module.losses(x, y, torch.arange(64))
        loss.backward()
        if step == 0:  # with CE off, each member's gradient comes from its KL term alone
            assert all(m.weight.grad.abs().sum() > 0 for m in members)
        optimizer.step()
    assert disagreement() < 0.2 * before
    # detached targets: member 1's KL term gives member 0 no gradient
    logits = [m(x) for m in members]
    _, kls = mutual_learning_losses(logits, y)
    assert torch.autograd.grad(kls[1], members[0].weight, allow_unused=True)[0] is None


def test_mutual_learning_updates_every_member_with_the_captured_step_fallback(tmp_path):
    torch.manual_seed(0)
    module = MutualLearningModule(LightNN(), [LightNN(), LightNN()], ADAM)
    before = [flat(m) for m in module.members()]
    fit = trainer(tmp_path, callbacks=[FastPath(capture_step=True)])
    fit.fit(module, datamodule=cifar_like())
    assert fit.global_step == 3
    assert all(not torch.equal(b, flat(m)) for b, m in zip(before, module.members()))
    optimised = optimised_ids(module.optimizers().optimizer)
    assert all(id(p) in optimised for m in module.members() for p in m.parameters())
    assert {"val/acc", "val/acc_1", "val/acc_2", "train/acc", "train/acc_1", "train/acc_2"} <= set(fit.callback_metrics)
    keys = module.state_dict().keys()
    assert any(k.startswith("net.") for k in keys) and any(k.startswith("peers.0.") for k in keys)
    assert any(k.startswith("peers.1.") for k in keys)


def test_mutual_learning_needs_a_peer():
    with pytest.raises(ConfigError, match="peer"):
        MutualLearningModule(LightNN(), [], ADAM)


# ---------------------------------------------------------------- Tf-KD

@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")
def test_tfkd_virtual_teacher_matches_a_hand_computation():
    logits, target, a, t, multiplier = [[1.0, -0.5, 0.2, 2.0], [0.3, 0.1, -1.0, 0.0]], [3, 1], 0.9, 5.0, 7.0
    term = TfKDVirtualTeacher(weight=0.1, correct_prob=a, temperature=t, multiplier=multiplier)
    value = term(Outputs(torch.tensor(logits)), None, torch.tensor(target))
    k = 4
    total = 0.0
    for row, c in zip(logits, target):
        virtual = [a if j == c else (1 - a) / (k - 1) for j in range(k)]
        total += kl(softmax(virtual, t), softmax(row))
    assert value.item() == pytest.approx(multiplier * total / (2 * k), rel=1e-5)
    # the official code: nn.KLDivLoss() (element mean) of softmax(p^d / T) against log_softmax(z), times multiplier
    virtual = torch.full((2, k), (1 - a) / (k - 1)).scatter_(1, torch.tensor(target)[:, None], a)
    official = nn.KLDivLoss(reduction="mean")(F.log_softmax(torch.tensor(logits), 1), F.softmax(virtual / t, 1))
    assert value.item() == pytest.approx(official.item() * multiplier, rel=1e-5)


def test_tfkd_needs_no_teacher_and_trains_in_the_supervised_module(tmp_path):
    terms = {"ce": CrossEntropy(0.9), "tfkd": TfKDVirtualTeacher(0.1, 0.99, 20.0, 10.0)}
    module = SupervisedModule(LightNN(), ADAM, terms)
    before = flat(module.net)
    trainer(tmp_path).fit(module, datamodule=cifar_like())
    assert not torch.equal(before, flat(module.net))
    assert [f"train/{k}" for k in module.meter.names if not k.startswith("#")] == ["train/loss", "train/ce", "train/tfkd"]


# ---------------------------------------------------------------- BYOT

def byot(**kw):
    torch.manual_seed(0)
    args = dict(exits=["features.2", "features"], input_shape=[3, 32, 32], feature_layer="classifier.1",
                feature_weight=0.03)
    return SelfDistillationModule(LightNN(), ADAM, **{**args, **kw})


def test_byot_heads_are_sized_from_the_network_get_gradients_and_are_optimised():
    module = byot()
    first, second = module.heads
    assert first.bottleneck[0].in_channels == 16 and first.bottleneck[3].stride == (2, 2)  # 16x16 -> 8x8
    assert second.bottleneck[3].stride == (1, 1) and first.fc.in_features == 256  # classifier.1's width
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    loss, values = module.losses(x, y, torch.arange(8))
    assert list(values) == ["loss", "ce", "ce_1", "kd_1", "hint_1", "ce_2", "kd_2", "hint_2", "#correct", "#count"]
    assert torch.isfinite(torch.stack(list(values.values())).float()).all()
    loss.backward()
    for head in module.heads:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    assert module.net.features[0].weight.grad.abs().sum() > 0
    assert optimised_ids(module.configure_optimizers()) == {id(p) for p in module.parameters()}
    assert any(k.startswith("heads.0.") for k in module.state_dict())


def test_byot_trains_the_heads_and_evaluates_only_the_networks_logits(tmp_path, monkeypatch):
    module, datamodule = byot(), cifar_like()
    heads_before = flat(module.heads)
    fit = trainer(tmp_path)
    fit.fit(module, datamodule=datamodule)
    assert not torch.equal(heads_before, flat(module.heads))

    def refuse(*args, **kw):
        raise AssertionError("an exit head ran during evaluation")

    for head in module.heads:
        monkeypatch.setattr(head, "forward", refuse)
    result = fit.validate(module, datamodule=datamodule, verbose=False)[0]
    images, labels = datamodule.splits["val"]
    module.net.eval()
    with torch.no_grad():
        accuracy = (module.net(datamodule.transform(images, train=False)).argmax(1) == labels).float().mean()
    assert result["val/acc"] == pytest.approx(accuracy.item(), abs=1e-6)


def test_byot_names_a_missing_layer_and_needs_a_feature_layer_for_the_hint():
    with pytest.raises(LayerNotFoundError, match="features.9"):
        byot(exits=["features.9"])
    with pytest.raises(ConfigError, match="feature_layer"):
        byot(feature_layer=None)


# ---------------------------------------------------------------- experiments

@pytest.mark.parametrize("experiment", NEW_EXPERIMENTS)
def test_new_schemes_experiments_compose_and_run(experiment, make_config):
    full = make_config(f"+experiment={experiment}", fast=False)
    assert full.run_name == experiment and full.trainer.max_epochs == 10 and full.data.val_size == 1000
    assert full.data.name == "cifar10" and full.model._target_ == "kd_lightning.models.LightNN"
    assert not full.get("teacher")
    cfg = make_config(f"+experiment={experiment}", "trainer.fast_dev_run=true")
    summary = train(cfg)
    assert summary["status"] == "done" and 0.0 <= summary["test/acc"] <= 1.0
    if experiment == "cifar10_dml":
        assert 0.0 <= summary["test/acc_1"] <= 1.0
