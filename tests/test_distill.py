"""Loss terms against hand-computed values; taps and teacher loading."""

import math

import pytest
import torch
from torch import nn

from kd_lightning.distill import CosineFeature, CrossEntropy, FeatureTaps, HintMSE, Outputs, SoftTargetKD, load_teacher
from kd_lightning.errors import FeatureShapeError, LayerNotFoundError, MissingTeacherError
from kd_lightning.models import DeepNN, LightNN

STUDENT = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
TEACHER = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, -2.0]])
TARGET = torch.tensor([0, 1])


def softmax(row, t):
    e = [math.exp(v / t) for v in row]
    return [v / sum(e) for v in e]


def test_soft_target_kd_is_batchmean_kl_times_t_squared():
    t = 2.0
    expected = 0.0
    for s_row, t_row in zip(STUDENT.tolist(), TEACHER.tolist()):
        p_s, p_t = softmax(s_row, t), softmax(t_row, t)
        expected += sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(p_t, p_s))
    expected = expected / 2 * t**2
    got = SoftTargetKD(temperature=t)(Outputs(STUDENT), Outputs(TEACHER), TARGET)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_soft_target_kd_matches_the_tutorials_formula():
    t = 2.0
    soft_targets = torch.softmax(TEACHER / t, dim=-1)
    soft_prob = torch.log_softmax(STUDENT / t, dim=-1)
    tutorial = torch.sum(soft_targets * (soft_targets.log() - soft_prob)) / soft_prob.size()[0] * (t**2)
    got = SoftTargetKD(temperature=t)(Outputs(STUDENT), Outputs(TEACHER), TARGET)
    assert got.item() == pytest.approx(tutorial.item(), rel=1e-6)


def test_soft_target_kd_is_zero_for_identical_logits():
    assert SoftTargetKD(temperature=5)(Outputs(TEACHER), Outputs(TEACHER), TARGET).item() == pytest.approx(0, abs=1e-7)


def test_cross_entropy_by_hand():
    expected = -sum(math.log(softmax(row, 1)[y]) for row, y in zip(STUDENT.tolist(), TARGET.tolist())) / 2
    assert CrossEntropy()(Outputs(STUDENT), None, TARGET).item() == pytest.approx(expected, rel=1e-6)


def test_cosine_term_pools_teacher_features_and_averages_one_minus_cos():
    s = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    t = torch.tensor([[2.0, 0.0, 0.0, 2.0], [1.0, 3.0, -2.0, 0.0]])  # pooled by 2: [[1, 1], [2, -1]]
    # cos([1,0],[1,1]) = 1/sqrt2 ; cos([1,1],[2,-1]) = 1/(sqrt2*sqrt5)
    expected = ((1 - 1 / math.sqrt(2)) + (1 - 1 / math.sqrt(10))) / 2
    term = CosineFeature("f", "g", teacher_pool=2)
    got = term(Outputs(STUDENT, {"f": s}), Outputs(TEACHER, {"g": t}), TARGET)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_hint_mse_applies_the_adapter_then_mse():
    adapter = nn.Conv2d(1, 2, kernel_size=1, bias=False)
    with torch.no_grad():
        adapter.weight.copy_(torch.tensor([2.0, -1.0]).view(2, 1, 1, 1))
    s = torch.tensor([[[[1.0, 2.0]]]])  # (1, 1, 1, 2) → adapter → [[2, 4], [-1, -2]]
    t = torch.tensor([[[[0.0, 4.0]], [[1.0, -2.0]]]])
    expected = ((2 - 0) ** 2 + 0 + (-1 - 1) ** 2 + 0) / 4
    got = HintMSE("f", "g", adapter=adapter)(Outputs(STUDENT, {"f": s}), Outputs(TEACHER, {"g": t}), TARGET)
    assert got.item() == pytest.approx(expected)
    got.backward()
    assert adapter.weight.grad is not None and adapter.weight.grad.abs().sum() > 0


def test_feature_shape_mismatch_names_both_layers_and_shapes():
    term = HintMSE("features", "features")  # no adapter: 16 channels vs 32
    student, teacher = FeatureTaps(LightNN(), ["features"]), FeatureTaps(DeepNN(), ["features"])
    x = torch.zeros(2, 3, 32, 32)
    with pytest.raises(FeatureShapeError, match=r"\(2, 16, 8, 8\).*'features'.*\(2, 32, 8, 8\)"):
        term(student(x), teacher(x), TARGET)


def test_taps_record_features_by_module_path_without_editing_the_model():
    net = LightNN()
    out = FeatureTaps(net, ["features", "classifier.0"])(torch.zeros(3, 3, 32, 32))
    assert out.logits.shape == (3, 10)
    assert out.features["features"].shape == (3, 16, 8, 8)
    assert out.features["classifier.0"].shape == (3, 256)


def test_unknown_layer_lists_the_paths_that_exist():
    with pytest.raises(LayerNotFoundError, match=r"no module 'feature'.*features\.0"):
        FeatureTaps(LightNN(), ["feature"], role="student")


def test_missing_teacher_checkpoint_says_how_to_train_it(tmp_path):
    with pytest.raises(MissingTeacherError, match="looked for:\n.*nope.ckpt\nTrain it first:\n  python -m kd_lightning.train"):
        load_teacher(DeepNN(), str(tmp_path / "nope.ckpt"), "python -m kd_lightning.train +experiment=cifar10_teacher")


def test_teacher_loads_a_lightning_checkpoint_and_is_frozen(tmp_path):
    source = DeepNN()
    path = tmp_path / "teacher.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in source.state_dict().items()}}, path)
    teacher = load_teacher(DeepNN(), str(path))
    assert not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(a, b) for a, b in zip(teacher.state_dict().values(), source.state_dict().values()))
