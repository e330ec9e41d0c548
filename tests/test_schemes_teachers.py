"""Multi-teacher KD, two-stage FitNets and CRD: identities, hand-computed formulas, what trains, experiments."""

import copy
import functools
import math

import lightning.pytorch as L
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn

from kd_lightning.data import ClassificationDataModule, SyntheticSource
from kd_lightning.distill import (CRD, CrossEntropy, EnsembleTeacher, HintMSE, Outputs, SoftTargetKD, TeacherEnsemble,
                                  load_teachers)
from kd_lightning.distill.crd import nce_loss
from kd_lightning.errors import ConfigError, MissingTeacherError
from kd_lightning.fast import FastPath
from kd_lightning.models import DeepNN, LightNN
from kd_lightning.modules import DistillationModule
from kd_lightning.modules.stages import Stages

ADAM = functools.partial(torch.optim.Adam, lr=1e-3)


def data(num_train=64, batch_size=16):
    return ClassificationDataModule("cifar10", SyntheticSource("cifar10", num_train=num_train + 32, num_test=32), 10,
                                    [0.5] * 3, [0.25] * 3, val_size=32, batch_size=batch_size)


def fit(module, datamodule, tmp_path, epochs=1, callbacks=(), **kw):
    L.seed_everything(0)
    trainer = L.Trainer(default_root_dir=tmp_path, accelerator="cpu", max_epochs=epochs, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        limit_val_batches=0, callbacks=list(callbacks), **kw)
    trainer.fit(module, datamodule=datamodule)
    return trainer


def batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g), torch.arange(n)


def seeded(cls, seed):
    torch.manual_seed(seed)
    return cls()


def losses_and_grads(module, x, y, index):
    """(loss, values, gradients by parameter name) of one step, dropout drawn the same way every call."""
    module.zero_grad(set_to_none=True)
    torch.manual_seed(123)
    loss, values = module.losses(x, y, index)
    loss.backward()
    return loss.detach(), values, {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def finite(values):
    return bool(torch.isfinite(torch.stack([v.float() for v in values.values()])).all())


def kd_terms():
    return {"ce": CrossEntropy(0.75), "kd": SoftTargetKD(0.25, 2.0)}


# ---------------------------------------------------------------- multi-teacher


def test_multi_teacher_with_one_teacher_equals_plain_kd():
    teacher, student = seeded(DeepNN, 1), seeded(LightNN, 2)
    plain = DistillationModule(copy.deepcopy(student), teacher, kd_terms(), ADAM)
    multi = DistillationModule(copy.deepcopy(student), EnsembleTeacher({"only": teacher}), kd_terms(), ADAM)
    x, y, index = batch()
    loss_p, values_p, grads_p = losses_and_grads(plain, x, y, index)
    loss_m, values_m, grads_m = losses_and_grads(multi, x, y, index)
    assert multi.teacher.temperature == 2.0  # taken from the kd term
    torch.testing.assert_close(loss_m, loss_p, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(values_m, values_p, rtol=1e-6, atol=1e-6)
    assert grads_m.keys() == grads_p.keys()
    for name in grads_p:
        torch.testing.assert_close(grads_m[name], grads_p[name], rtol=1e-5, atol=1e-7)


def test_two_identical_teachers_equal_one_whatever_their_weights():
    teacher, student = seeded(DeepNN, 1), seeded(LightNN, 2)
    x, y, index = batch()
    one = DistillationModule(copy.deepcopy(student), EnsembleTeacher({"a": teacher}), kd_terms(), ADAM)
    two = DistillationModule(copy.deepcopy(student), EnsembleTeacher({"a": teacher, "b": copy.deepcopy(teacher)},
                                                                     weights={"a": 3.0, "b": 1.0}), kd_terms(), ADAM)
    assert two.teacher.weights == {"a": 0.75, "b": 0.25}
    loss_1, values_1, _ = losses_and_grads(one, x, y, index)
    loss_2, values_2, _ = losses_and_grads(two, x, y, index)
    torch.testing.assert_close(loss_2, loss_1, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(values_2, values_1, rtol=1e-6, atol=1e-6)


def test_the_kd_term_sees_the_weighted_average_of_the_softened_probabilities():
    s = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
    z1 = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, -2.0]])
    z2 = torch.tensor([[-1.0, 2.0, 0.5], [1.0, 0.0, 3.0]])
    t, w = 3.0, {"a": 1.0, "b": 3.0}

    class Fixed(nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits = logits

        def forward(self, x):
            return self.logits

    ensemble = TeacherEnsemble({"a": Fixed(z1), "b": Fixed(z2)}, w, t)
    got = SoftTargetKD(temperature=t)(Outputs(s), Outputs(ensemble(None)), None)

    def softmax(row):
        e = [math.exp(v / t) for v in row]
        return [v / sum(e) for v in e]

    expected = 0.0
    for s_row, a_row, b_row in zip(s.tolist(), z1.tolist(), z2.tolist()):
        p_avg = [0.25 * pa + 0.75 * pb for pa, pb in zip(softmax(a_row), softmax(b_row))]
        expected += sum(p * math.log(p / q) for p, q in zip(p_avg, softmax(s_row)))
    assert got.item() == pytest.approx(expected / 2 * t**2, rel=1e-5)


def test_per_teacher_feature_terms_read_their_own_teachers_layer():
    first, second, student = seeded(DeepNN, 1), seeded(DeepNN, 3), seeded(LightNN, 2)
    hint = functools.partial(HintMSE, "features", adapter=nn.Conv2d(16, 32, 3, padding=1), weight=0.5)
    terms = {**kd_terms(), "hint_second": hint("second.features")}
    multi = DistillationModule(student, EnsembleTeacher({"first": first, "second": second}), terms, ADAM)
    x, y, index = batch()
    _, values, grads = losses_and_grads(multi, x, y, index)
    with torch.no_grad():
        alone = HintMSE("features", "features", multi.terms["hint_second"].adapter)(
            Outputs(None, {"features": student.features(x)}), Outputs(None, {"features": second.features(x)}), y)
    assert list(values) == ["loss", "ce", "kd", "hint_second", "#correct", "#count"]
    assert values["hint_second"].item() == pytest.approx(alone.item(), rel=1e-5)
    # gradients reach the student and the adapter only; the teachers are frozen and outside the module
    assert {n.split(".")[0] for n in grads} == {"net", "terms"} and "terms.hint_second.adapter.weight" in grads
    assert all(not p.requires_grad and p.grad is None for t in (first, second) for p in t.parameters())
    assert all(k.startswith(("net.", "terms.")) for k in multi.state_dict())  # no teacher weights


def test_teachers_stay_frozen_unregistered_and_in_eval_mode_while_fitting(tmp_path):
    teachers = {"first": seeded(DeepNN, 1), "second": seeded(DeepNN, 3)}
    before = {name: copy.deepcopy(t.state_dict()) for name, t in teachers.items()}
    module = DistillationModule(seeded(LightNN, 2), EnsembleTeacher(teachers), kd_terms(), ADAM)
    fit(module, data(), tmp_path, limit_train_batches=2)
    optimised = {id(p) for group in module.optimizers().optimizer.param_groups for p in group["params"]}
    for name, teacher in teachers.items():
        assert not teacher.training and module.teacher.members[name] is teacher
        assert all(torch.equal(before[name][k], v) for k, v in teacher.state_dict().items())
        assert not optimised & {id(p) for p in teacher.parameters()}


def test_load_teachers_gives_each_member_its_own_seeds_checkpoint(tmp_path):
    for seed in (5, 6):
        torch.save(seeded(DeepNN, seed).state_dict(), tmp_path / f"teacher_seed{seed}.pt")
    teachers = load_teachers(DeepNN(), [str(tmp_path / "missing{seed}.pt"), str(tmp_path / "teacher_seed{seed}.pt")],
                             seed=5, members={"first": 0, "second": 1})
    for teacher, seed in zip(teachers.values(), (5, 6)):
        expected = seeded(DeepNN, seed).state_dict()
        assert all(torch.equal(v, expected[k]) for k, v in teacher.state_dict().items())
        assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert list(teachers) == ["first", "second"] and teachers["first"] is not teachers["second"]
    torch.save(seeded(DeepNN, 0).state_dict(), tmp_path / "teacher_seed0.pt")
    wrapped = load_teachers(DeepNN(), str(tmp_path / "teacher_seed{seed}.pt"), seed=5, members={"a": 0, "b": 1},
                            num_seeds=6)  # the pair for seed 5 of 6 is (5, 0)
    assert torch.equal(wrapped["b"].state_dict()["features.0.weight"], seeded(DeepNN, 0).state_dict()["features.0.weight"])
    with pytest.raises(MissingTeacherError, match=r"train \+experiment=cifar10_teacher seed=7"):
        load_teachers(DeepNN(), str(tmp_path / "teacher_seed{seed}.pt"), seed=6, members={"a": 0, "b": 1},
                      train_command="python -m kd_lightning.train +experiment=cifar10_teacher seed={seed}")


def test_multi_teacher_config_errors():
    teachers = {"a": DeepNN(), "b": DeepNN()}
    with pytest.raises(ConfigError, match="exactly the teachers' names"):
        DistillationModule(LightNN(), EnsembleTeacher(teachers, weights={"a": 1.0}), kd_terms(), ADAM)
    with pytest.raises(ConfigError, match="positive"):
        DistillationModule(LightNN(), EnsembleTeacher(teachers, weights={"a": 1.0, "b": 0.0}), kd_terms(), ADAM)
    with pytest.raises(ConfigError, match="set distill.teacher.temperature"):
        DistillationModule(LightNN(), EnsembleTeacher(teachers), {"ce": CrossEntropy(), "kd": SoftTargetKD(1, 2.0),
                                                                  "kd4": SoftTargetKD(1, 4.0)}, ADAM)
    with pytest.raises(ConfigError, match="needs teachers"):
        EnsembleTeacher({})


# ---------------------------------------------------------------- FitNets


class Snapshots(L.Callback):
    """The student's and the regressor's parameters and the optimizer's Adam step counts at each epoch's end."""

    def __init__(self):
        self.params, self.steps = [], []

    def on_train_epoch_end(self, trainer, module):
        self.params.append({n: p.detach().clone() for n, p in module.named_parameters()})
        optimizer = trainer.optimizers[0]
        self.steps.append({n: float(optimizer.state[p]["step"]) for n, p in module.named_parameters()
                           if "step" in optimizer.state.get(p, {})})


def fitnets_stages(hint_epochs=1):
    return {"hint": {"epochs": hint_epochs, "terms": ["hint"]}, "kd": {"terms": ["ce", "kd"], "reset_optimizer": True}}


def fitnets_module(hint_epochs=1):
    regressor = nn.Sequential(nn.Conv2d(16, 64, 3, padding=1), nn.ReLU())
    terms = {"hint": HintMSE("features.2", "features.4", regressor), **kd_terms()}
    return DistillationModule(seeded(LightNN, 2), seeded(DeepNN, 1), terms, ADAM, stages=fitnets_stages(hint_epochs))


@pytest.mark.parametrize("capture", [False, True], ids=["automatic", "manual_step"])
def test_fitnets_stage_1_trains_up_to_the_guided_layer_and_stage_2_the_whole_student(tmp_path, capture):
    module, snapshots = fitnets_module(), Snapshots()
    start = {n: p.detach().clone() for n, p in module.named_parameters()}
    fit(module, data(), tmp_path, epochs=2, limit_train_batches=2, callbacks=[snapshots, FastPath(capture_step=capture)])
    stage_1, stage_2 = snapshots.params

    def changed(a, b):
        return {n for n in a if not torch.equal(a[n], b[n])}

    guided = {f"{m}.{p}" for m in ("net.features.0", "terms.hint.adapter.0") for p in ("weight", "bias")}
    assert changed(start, stage_1) == guided  # features.3 and the classifier come after the guided layer features.2
    assert changed(stage_1, stage_2) == {n for n in start if n.startswith("net.")}  # not the regressor
    # stage 2 starts with fresh optimizer state: 2 Adam steps for every student parameter, not 4 for features.0
    assert snapshots.steps[0] == {n: 2.0 for n in guided}
    assert snapshots.steps[1] == {n: 2.0 for n in start if n.startswith("net.")}


def test_fitnets_logs_every_term_in_both_stages_but_optimises_the_stages_terms(tmp_path):
    module = fitnets_module()
    x, y, index = batch()
    loss, values = module.losses(x, y, index)  # epoch 0: stage 1
    assert module.stage.name == "hint" and list(values) == ["loss", "hint", "ce", "kd", "#correct", "#count"]
    assert finite(values) and values["loss"] == values["hint"] == loss.detach()
    module = fitnets_module(hint_epochs=0)  # as in stage 2
    loss, values = module.losses(x, y, index)
    assert module.stage.name == "kd" and "stage kd" in module.step_key()
    assert loss.item() == pytest.approx(0.75 * values["ce"].item() + 0.25 * values["kd"].item(), rel=1e-6)
    loss.backward()
    assert module.terms["hint"].adapter[0].weight.grad is None
    assert all(p.grad is not None for p in module.net.parameters())


def test_fitnets_config_errors():
    with pytest.raises(ConfigError, match=r"distill.stages.hint.terms=\['hint'\]: expected a non-empty list of"):
        DistillationModule(LightNN(), DeepNN(), kd_terms(), ADAM, stages=fitnets_stages())
    with pytest.raises(ConfigError, match="only the last stage runs to the fit's end"):
        DistillationModule(LightNN(), DeepNN(), kd_terms(), ADAM, stages={"a": {"terms": ["ce"]}, "b": {}})
    with pytest.raises(ConfigError, match="distill.hint_epochs moved to distill.stages.hint.epochs"):
        DistillationModule(LightNN(), DeepNN(), kd_terms(), ADAM, hint_epochs=1)


# ---------------------------------------------------------------- CRD


def hand_embed(linear, f):
    v = [sum(w * x for w, x in zip(row, f)) + b for row, b in zip(linear.weight.tolist(), linear.bias.tolist())]
    n = math.sqrt(sum(a * a for a in v))
    return [a / n for a in v]


def test_crd_loss_and_memory_update_by_hand():
    torch.manual_seed(0)
    n, k, t, mom = 6, 3, 0.5, 0.25
    term = CRD("s", "t", student_dim=4, teacher_dim=5, feat_dim=3, nce_k=k, nce_t=t, nce_mom=mom)
    term.allocate(n, "cpu")
    mem_s, mem_t = term.memory_s.tolist(), term.memory_t.tolist()
    f_s, f_t, index = torch.randn(2, 4), torch.randn(2, 5), torch.tensor([4, 1])
    torch.manual_seed(7)
    loss = term(Outputs(None, {"s": f_s}), Outputs(None, {"t": f_t}), None, index=index)
    torch.manual_seed(7)
    negatives = torch.randint(0, n, (2, k)).tolist()

    def dot(a, b):
        return sum(x * y for x, y in zip(a, b))

    v_s = [hand_embed(term.embed_s.linear, row) for row in f_s.tolist()]
    v_t = [hand_embed(term.embed_t.linear, row) for row in f_t.tolist()]
    rows = [[i] + neg for i, neg in zip(index.tolist(), negatives)]
    out_s = [[math.exp(dot(mem_t[j], v) / t) for j in r] for v, r in zip(v_s, rows)]  # student vs teacher bank
    out_t = [[math.exp(dot(mem_s[j], v) / t) for j in r] for v, r in zip(v_t, rows)]  # teacher vs student bank

    def nce(out):
        z = sum(map(sum, out)) / (2 * (k + 1)) * n  # fixed from the first batch: mean · N
        pn = 1 / n
        total = 0.0
        for row in out:
            p = [x / z for x in row]
            total += math.log(p[0] / (p[0] + k * pn + 1e-7))
            total += sum(math.log(k * pn / (q + k * pn + 1e-7)) for q in p[1:])
        return -total / len(out), z

    (loss_s, z_s), (loss_t, z_t) = nce(out_s), nce(out_t)
    assert loss.item() == pytest.approx(loss_s + loss_t, rel=1e-5)
    assert term.normalizer.tolist() == pytest.approx([z_s, z_t], rel=1e-5)
    for bank, old, v in ((term.memory_s, mem_s, v_s), (term.memory_t, mem_t, v_t)):
        for b, i in enumerate(index.tolist()):
            row = [mom * a + (1 - mom) * c for a, c in zip(old[i], v[b])]
            norm = math.sqrt(sum(a * a for a in row))
            assert bank[i].tolist() == pytest.approx([a / norm for a in row], rel=1e-5)
        untouched = [i for i in range(n) if i not in index.tolist()]
        assert all(bank[i].tolist() == pytest.approx(old[i]) for i in untouched)
    # the next batch keeps Z (set once, as the official code)
    term(Outputs(None, {"s": f_s * 2}), Outputs(None, {"t": f_t}), None, index=torch.tensor([0, 2]))
    assert term.normalizer.tolist() == pytest.approx([z_s, z_t], rel=1e-5)


@pytest.mark.parametrize("n", [6, 50], ids=["all_dot_products", "official_gather"])
def test_crd_scores_both_ways(n):
    torch.manual_seed(0)
    term = CRD("s", "t", student_dim=4, teacher_dim=4, feat_dim=3, nce_k=3, nce_t=0.1)
    # unit rows, as CRD's bank and embeddings are: |dot / 0.1| <= 10, so exp stays far from float32 overflow
    memory = F.normalize(torch.randn(n, 3), dim=1)
    anchor = F.normalize(torch.randn(2, 3), dim=1).requires_grad_()
    contrast = torch.randint(0, n, (2, 4))
    got = term.scores(memory, contrast, anchor)
    products = memory[contrast].double() * anchor.detach().double().unsqueeze(1)  # (2, 4, 3)
    expected = torch.exp(products.sum(2) / 0.1)
    # float32 rounding: a 3-term dot product is off by at most 3·u·Σ|m_k a_k| (u = 2^-24), dividing by 0.1 and
    # exp add u each; exp turns an absolute error e of its argument into a relative error of about e
    u = 2.0**-24
    bound = (3 * u * products.abs().sum(2) / 0.1 + 3 * u) * 1.01
    assert ((got.double() - expected).abs() <= bound * expected).all()
    got.sum().backward()  # gradients reach the anchor, not the bank
    assert anchor.grad is not None


def test_nce_loss_formula():
    scores = torch.tensor([[2.0, 0.5, 1.0], [0.1, 0.2, 3.0]])
    pn = 2 / 10
    expected = -sum(math.log(r[0] / (r[0] + pn + 1e-7)) + sum(math.log(pn / (q + pn + 1e-7)) for q in r[1:])
                    for r in scores.tolist()) / 2
    assert nce_loss(scores, 10).item() == pytest.approx(expected, rel=1e-6)


def crd_module(nce_k=64):
    crd = CRD("classifier.1", "classifier.1", student_dim=256, teacher_dim=512, nce_k=nce_k)
    return DistillationModule(seeded(LightNN, 2), seeded(DeepNN, 1), {"ce": CrossEntropy(), "crd": crd}, ADAM)


def test_crd_gradients_reach_the_student_and_both_heads_only(tmp_path):
    module = crd_module()
    module.terms["crd"].allocate(40, "cpu")
    x, y, _ = batch()
    _, values, grads = losses_and_grads(module, x, y, torch.arange(8) * 5)
    assert finite(values)
    heads = {f"terms.crd.embed_{r}.linear.{p}" for r in "st" for p in ("weight", "bias")}
    assert {n for n in grads if n.startswith("terms.")} == heads
    assert {f"net.{n}" for n, _ in module.net.named_parameters()} == {n for n in grads if n.startswith("net.")}
    assert all(p.grad is None for p in module.teacher.net.parameters())


def test_crd_bank_is_sized_at_fit_start_checkpointed_and_resumed(tmp_path):
    module, datamodule = crd_module(), data(num_train=48)
    trainer = fit(module, datamodule, tmp_path, limit_train_batches=2)
    term = module.terms["crd"]
    assert term.memory_s.shape == term.memory_t.shape == (48, 128) and (term.normalizer > 0).all()
    path = tmp_path / "crd.ckpt"
    trainer.save_checkpoint(path)
    saved = {k: v.clone() for k, v in term.state_dict().items() if not k.startswith("embed")}
    assert {"memory_s", "memory_t", "normalizer"} <= set(saved)

    class AtStart(L.Callback):
        def on_train_start(self, trainer, module):
            state = module.terms["crd"].state_dict()
            self.state = {k: v.clone() for k, v in state.items() if not k.startswith("embed")}

    resumed, at_start = crd_module(), AtStart()
    L.Trainer(default_root_dir=tmp_path, accelerator="cpu", max_epochs=2, logger=False, enable_progress_bar=False,
              enable_model_summary=False, enable_checkpointing=False, limit_val_batches=0, limit_train_batches=2,
              callbacks=[at_start]).fit(resumed, datamodule=data(num_train=48), ckpt_path=path)
    assert all(torch.equal(at_start.state[k], v) for k, v in saved.items())
    with pytest.raises(ConfigError, match="training split has 40"):
        resumed.terms["crd"].allocate(40, "cpu")


@pytest.mark.parametrize("resident", [False, True], ids=["dataloader", "resident"])
def test_crd_labels_at_fit_start_are_the_batches_labels_at_their_indices(tmp_path, resident):
    """Other-class negatives exclude the class that the labels given to allocate() put at each batch index: those
    must be the batch's own targets (the training split in index order), on both data paths."""
    crd = CRD("classifier.1", "classifier.1", student_dim=256, teacher_dim=512, nce_k=8, negatives="other_class")
    module = DistillationModule(seeded(LightNN, 2), seeded(DeepNN, 1), {"ce": CrossEntropy(), "crd": crd}, ADAM)
    seen, draw = [], crd.draw_negatives
    crd.draw_negatives = lambda index, target: seen.append((index, target)) or draw(index, target)
    datamodule = data(num_train=48)
    datamodule.resident = resident
    fit(module, datamodule, tmp_path, epochs=2)
    assert len(seen) == 6 and len(torch.cat([i for i, _ in seen[:3]]).unique()) == 48
    assert all(torch.equal(crd.labels[index], target) for index, target in seen)
    assert (crd.labels != crd.labels[0]).any()  # several classes, so a misaligned index would be caught


def test_crd_called_without_indices_or_an_allocated_bank_is_a_clear_error():
    crd = CRD("classifier.1", "classifier.1", student_dim=256, teacher_dim=512, nce_k=8)
    module = DistillationModule(LightNN(), DeepNN(), {"crd": crd}, ADAM)
    student, teacher = module.student_taps(batch()[0]), module.teacher.outputs(batch()[0], None)
    with pytest.raises(ConfigError, match="needs the batch's sample indices"):
        crd(student, teacher, batch()[1])
    with pytest.raises(ConfigError, match="memory bank is empty"):
        module.losses(*batch())


# ---------------------------------------------------------------- experiments end to end


def instantiate_scheme(cfg):
    return instantiate(cfg.distill, net=instantiate(cfg.model), optimizer=instantiate(cfg.optimizer))


def test_multi_teacher_experiment_loads_each_teacher_from_its_own_checkpoint(make_config, tmp_path):
    for seed in (0, 1):
        torch.save(seeded(DeepNN, 10 + seed).state_dict(), tmp_path / f"deep_seed{seed}.pt")
    # quoted: Hydra's override grammar reads an unquoted {...} as a dict
    cfg = make_config("+experiment=cifar10_multi_teacher", f"teacher.checkpoint='{tmp_path}/deep_seed{{seed}}.pt'")
    assert cfg.run_name == "cifar10_multi_teacher"
    module = instantiate_scheme(cfg)
    assert isinstance(module, DistillationModule) and isinstance(module.teacher, EnsembleTeacher)
    assert module.teacher.weights == {"first": 0.5, "second": 0.5}
    for name, seed in (("first", 0), ("second", 1)):
        expected = seeded(DeepNN, 10 + seed).state_dict()
        assert all(torch.equal(v, expected[k]) for k, v in module.teacher.members[name].state_dict().items())
    loss, _ = module.losses(*batch())
    assert torch.isfinite(loss)


def test_fitnets_experiment_is_the_two_stage_scheme(make_config, teacher_state):
    cfg = make_config("+experiment=cifar10_fitnets")
    checkpoint = teacher_state(instantiate(cfg.teacher.net))
    cfg = make_config("+experiment=cifar10_fitnets", f"teacher.checkpoint={checkpoint}")
    assert cfg.run_name == "cifar10_fitnets"
    module = instantiate_scheme(cfg)
    assert isinstance(module, DistillationModule) and module.stages.at(1).name == "hint" and module.stage.name == "hint"
    assert module.stages.at(2).name == "kd" and module.stages.at(2).reset_optimizer
    assert isinstance(module.terms["hint"].adapter[1], nn.ReLU)  # the hint's non-linearity
    x, y, index = batch()
    for hint_epochs in (2, 0):  # stage 1, then as in stage 2
        module.stages = Stages({**cfg.distill.stages, "hint": {"epochs": hint_epochs, "terms": ["hint"]}}, module.terms)
        module.zero_grad(set_to_none=True)
        loss, values = module.losses(x, y, index)
        loss.backward()
        assert finite(values)
        assert (module.net.classifier[0].weight.grad is None) == (hint_epochs == 2)
        assert (module.terms["hint"].adapter[0].weight.grad is None) == (hint_epochs == 0)


def test_crd_experiment_uses_the_papers_settings(make_config):
    cfg = make_config("+experiment=cifar10_crd")
    crd = cfg.distill.terms.crd
    assert cfg.run_name == "cifar10_crd" and cfg.distill._target_.endswith(".DistillationModule")
    assert (crd.feat_dim, crd.nce_k, crd.nce_t, crd.nce_mom, crd.weight) == (128, 16384, 0.07, 0.5, 0.8)
