"""The CIFAR zoo's pairs, methods and recipes: every pair names what the methods read and what its networks output,
a training step for every pair (FitNets, 100 classes) and for every method (one pair, 10 classes), the recipes'
learning rates, CRD's class-aware negatives. The full pair × method × class-count product: ``pytest -m zoo_full``."""

import functools
import itertools
import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from kd_lightning.distill import AttentionTransfer, FeatureTaps, Outputs
from kd_lightning.distill.adapters import ConvRegressor
from kd_lightning.distill.crd import CRD
from kd_lightning.distill.multilayer import LayerSum
from kd_lightning.errors import ConfigError, FeatureShapeError, MissingTeacherError
from kd_lightning.train import _scheduler, train

from conftest import CONF, compose_config

PAIRS = sorted(p.stem for p in (CONF / "pair").glob("*.yaml"))
REPDISTILLER_PAIRS = [
    "resnet110_resnet20", "resnet110_resnet32", "resnet32x4_resnet8x4", "resnet32x4_shufflenetv1",
    "resnet32x4_shufflenetv2", "resnet56_resnet20", "vgg13_mobilenetv2", "vgg13_vgg8", "wrn40_2_wrn16_2",
    "wrn40_2_wrn40_1",
]
# every training scheme (none: labels only) but data_free (its own datamodule: a generator makes the images) and multi_teacher (needs a
# teacher group of several networks, e.g. teacher=cifar10_deep_nn_pair)
METHODS = sorted({p.stem for p in (CONF / "distill").glob("*.yaml")} - {"data_free", "multi_teacher"})
# the methods with published CIFAR-100 weights have their own experiment; the others run with their yaml's defaults
PUBLISHED = {m: f"cifar100/{m}" for m in ("kd", "at", "sp", "crd", "pkt", "rkd", "dkd", "dist")}
PUBLISHED["hint"] = "cifar100/fitnets"  # RepDistiller's FitNets: one stage, CE + 100 · hint

# tiny synthetic CIFAR: 320 training images of which 64 validate, batches of 4
TINY = ["data/source=synthetic", "data.source.num_train=320", "data.val_size=64", "data.source.num_test=32",
        "data.batch_size=4", "data.eval_batch_size=4", "trainer.fast_dev_run=true"]


def test_the_repdistiller_pairs_and_the_tutorial_pairs_exist():
    assert set(PAIRS) == {*REPDISTILLER_PAIRS, "tutorial", "mnist_mlp"}



@functools.cache
def pair_config(pair: str) -> dict:
    """The pair's resolved node (composed once per pair)."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("train", overrides=[f"pair={pair}", "data=cifar100"])
    return OmegaConf.to_container(cfg.pair, resolve=True)


SIDE_KEYS = {"layers": {"stem", "stages", "hint", "last", "pooled", "exits"},
             "shapes": {"stem", "stages", "hint", "last", "pooled"}, "fsp": {"layers", "channels"}}


@pytest.mark.parametrize("pair", PAIRS)
def test_every_pair_names_every_feature_point_the_methods_read(pair):
    cfg = pair_config(pair)
    assert cfg["name"] == pair and set(cfg["adapters"]) == {"hint", "last"} and cfg["teacher"]["run"]
    for side in ("student", "teacher"):
        node = cfg[side]
        assert node["net"]["_target_"].startswith("kd_lightning.models")
        for key, names in SIDE_KEYS.items():
            assert set(node[key]) == names, (side, key)
        assert len(node["shapes"]["stages"]) == len(node["layers"]["stages"])
        assert len(node["fsp"]["layers"]) == len(node["fsp"]["channels"])
    # attention transfer and FSP pair the student's feature points with the teacher's one to one
    assert len(cfg["student"]["layers"]["stages"]) == len(cfg["teacher"]["layers"]["stages"])
    assert len(cfg["student"]["fsp"]["layers"]) == len(cfg["teacher"]["fsp"]["layers"])


def networks():
    """Every network of every pair once: (pair, side)."""
    seen, out = set(), []
    for pair, side in itertools.product(PAIRS, ("student", "teacher")):
        model = pair_config(pair)[side]["model"]
        if model not in seen:
            seen.add(model)
            out.append(pytest.param(pair, side, id=model))
    return out


@pytest.mark.parametrize(("pair", "side"), networks())
def test_feature_points_have_the_shapes_the_pair_states(pair, side, one_thread):
    node = pair_config(pair)[side]
    torch.manual_seed(0)
    net = instantiate(OmegaConf.create(node["net"])).eval()
    layers, shapes = node["layers"], node["shapes"]
    paths = [layers["stem"], *layers["stages"], layers["hint"], layers["last"], layers["pooled"], *layers["exits"],
             *(path for pair in node["fsp"]["layers"] for path in pair)]
    x = torch.randn(1, 1, 28, 28) if node["model"].startswith("mlp") else torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        features = FeatureTaps(net, paths)(x).features
    got = {path: list(f.shape[1:]) for path, f in features.items()}
    assert got[layers["stem"]] == shapes["stem"] and got[layers["hint"]] == shapes["hint"]
    assert got[layers["last"]] == shapes["last"] and got[layers["pooled"]] == shapes["pooled"]
    assert [got[p] for p in layers["stages"]] == shapes["stages"]
    channels = [[got[a][0], got[b][0]] for a, b in node["fsp"]["layers"]]
    assert channels == node["fsp"]["channels"]


def run(tmp_path, teacher_state, *overrides):
    """Compose, give the teacher (if any) a freshly initialised checkpoint, train one fast_dev_run step."""
    cfg = compose_config(tmp_path, *TINY, *overrides)
    if cfg.get("teacher"):
        cfg.teacher.checkpoint = teacher_state(instantiate(cfg.teacher.net))
    return cfg, train(cfg)


def method_overrides(method: str) -> list[str]:
    if method in PUBLISHED:
        return [f"+experiment={PUBLISHED[method]}"]
    return ["+experiment=cifar100/ce", f"distill={method}", "teacher=pair"]


@pytest.mark.parametrize("pair", REPDISTILLER_PAIRS)
def test_every_pair_trains_a_step_with_fitnets_on_100_classes(pair, tmp_path, teacher_state, one_thread):
    cfg, summary = run(tmp_path, teacher_state, "+experiment=cifar100/fitnets", f"pair={pair}")
    assert summary["status"] == "done" and cfg.data.num_classes == 100 and 0.0 <= summary["test/acc"] <= 1.0
    assert cfg.optimizer.lr == (0.01 if "mobilenet" in pair or "shufflenet" in pair else 0.05)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_a_step_on_a_zoo_pair_on_10_classes(method, tmp_path, teacher_state, one_thread):
    cfg, summary = run(tmp_path, teacher_state, *method_overrides(method), "pair=resnet56_resnet20", "data=cifar10")
    assert summary["status"] == "done" and cfg.data.num_classes == 10
    assert summary["params"] == 272_474  # the student ResNet-20 (exit heads, peers and adapters are not the network)


TEACHERS = sorted(p.stem for p in (CONF / "experiment" / "cifar100").glob("teacher_*.yaml"))


def test_every_cifar100_experiment_is_exercised_here():
    files = {p.stem for p in (CONF / "experiment" / "cifar100").glob("*.yaml")}
    assert files == {"ce", *TEACHERS, *(e.split("/")[1] for e in PUBLISHED.values())}
    assert {f"teacher_{pair_config(p)['teacher']['model']}" for p in REPDISTILLER_PAIRS} == set(TEACHERS)


@pytest.mark.parametrize("teacher", TEACHERS)
def test_every_cifar100_teacher_trains_a_step(teacher, tmp_path, teacher_state, one_thread):
    cfg, summary = run(tmp_path, teacher_state, f"+experiment=cifar100/{teacher}")
    assert summary["status"] == "done" and cfg.run_name == f"cifar100_{teacher}" and cfg.data.num_classes == 100


@pytest.mark.parametrize("model", ["resnet20", "resnet110"])
def test_he_resnet_experiment_trains_a_step_of_any_depth(model, tmp_path, teacher_state, one_thread):
    cfg, summary = run(tmp_path, teacher_state, "+experiment=cifar10/he_resnet", f"model={model}")
    assert summary["status"] == "done" and summary["params"] == {"resnet20": 272_474, "resnet110": 1_730_714}[model]
    assert cfg.scheduler.interval == "step" and cfg.data.num_classes == 10


def test_a_pairs_teacher_is_found_in_its_experiments_run_folder(tmp_path):
    """teacher=pair looks up the run of +experiment=cifar100/teacher_<model> (by that run's identity, under
    <log_dir>/cifar100_teacher_<model>/), and says how to train it when it is not there."""
    from kd_lightning.runs import locate_teachers, teacher_runs

    overrides = ["+experiment=cifar100/kd", "pair=vgg13_vgg8", "seed=3", f"paths.log_dir={tmp_path}"]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("train", overrides=overrides)
    [run] = teacher_runs(cfg, overrides)
    assert run.command == f"python -m kd_lightning.train +experiment=cifar100/teacher_vgg13 paths.log_dir={tmp_path} seed=3"
    assert run.folder.parent == tmp_path / "cifar100_teacher_vgg13"
    with pytest.raises(MissingTeacherError, match="cifar100/teacher_vgg13"):
        locate_teachers(cfg, overrides)
    torch.manual_seed(0)
    trained = instantiate(cfg.teacher.net)
    run.checkpoint.parent.mkdir(parents=True)
    torch.save({"state_dict": {f"net.{k}": v for k, v in trained.state_dict().items()}}, run.checkpoint)  # as Lightning saves
    (run.folder / "summary.json").write_text('{"status": "done"}')
    locate_teachers(cfg, overrides)
    loaded = instantiate(cfg.teacher)
    assert torch.equal(loaded.classifier.weight, trained.classifier.weight) and not loaded.training


def cosine_cannot_compare(pair: str) -> bool:
    """The cosine term compares flattened last maps as they are (no adapter): sizes must agree."""
    cfg = pair_config(pair)
    return math.prod(cfg["student"]["shapes"]["last"]) != math.prod(cfg["teacher"]["shapes"]["last"])


@pytest.mark.zoo_full
@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("pair", REPDISTILLER_PAIRS)
def test_zoo_full_every_pair_with_every_method(pair, method, num_classes, tmp_path, teacher_state, one_thread):
    data = [] if num_classes == 100 else ["data=cifar10"]
    if method == "cosine" and cosine_cannot_compare(pair):
        with pytest.raises(FeatureShapeError, match="does not match teacher flattened features"):
            run(tmp_path, teacher_state, *method_overrides(method), f"pair={pair}", *data)
        return
    cfg, summary = run(tmp_path, teacher_state, *method_overrides(method), f"pair={pair}", *data)
    assert summary["status"] == "done" and cfg.data.num_classes == num_classes


@pytest.mark.zoo_full
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("pair", PAIRS)
def test_zoo_full_every_pair_composes_with_every_method(pair, method, make_config):
    cfg = make_config(f"pair={pair}", f"distill={method}", "teacher=pair")
    for key, value in cfg.distill.items():  # every interpolation from the pair resolves (the teacher's paths need
        if key not in ("teacher", "teachers") and OmegaConf.is_config(value):  # Hydra's runtime: not resolved here)
            OmegaConf.to_container(value, resolve=True)


def test_layers_whose_shapes_cannot_be_compared_name_both(tmp_path, teacher_state, one_thread):
    """The cosine term compares flattened last maps as they are: resnet32x4 gives 256x8x8, ShuffleNetV1 960x4x4."""
    with pytest.raises(FeatureShapeError, match=r"\(4, 15360\).*'layer3'.*\(4, 16384\).*'layer3'"):
        run(tmp_path, teacher_state, "+experiment=cifar100/ce", "distill=cosine", "teacher=pair",
            "pair=resnet32x4_shufflenetv1")


# ---------------------------------------------------------------- recipes: the learning rate at chosen points


def schedule(cfg, points: list[int]) -> dict[int, float]:
    """Build the optimizer and Lightning's scheduler config as the training entry point does, step the scheduler
    once per unit of its ``interval``; the learning rate in force at each point."""
    optimizer = instantiate(cfg.optimizer)(params=[torch.nn.Parameter(torch.zeros(1))])
    config = _scheduler(cfg.scheduler)(optimizer=optimizer)
    assert config["interval"] == cfg.scheduler.interval and config["frequency"] == 1
    optimizer.step()  # once, so the scheduler sees a stepped optimizer; its learning rate is all that is read
    lrs = {}
    for step in range(max(points) + 1):
        if step in points:
            lrs[step] = optimizer.param_groups[0]["lr"]
        config["scheduler"].step()
    return lrs


def test_crd_recipe_is_repdistillers_protocol(make_config):
    cfg = make_config("+experiment=cifar100/kd", fast=False)
    assert (cfg.data.batch_size, cfg.trainer.max_epochs, cfg.scheduler.interval) == (64, 240, "epoch")
    assert (cfg.optimizer.momentum, cfg.optimizer.weight_decay, cfg.optimizer.nesterov) == (0.9, 5e-4, False)
    assert (cfg.data.crop_padding, cfg.data.hflip) == (4, True)
    # 0.05, then × 0.1 after 150, 180 and 210 epochs (RepDistiller: epoch e, 1-based, runs at 0.05 · 0.1^#{m < e})
    lrs = schedule(cfg, [0, 149, 150, 179, 180, 209, 210, 239])
    assert lrs == pytest.approx({0: 0.05, 149: 0.05, 150: 5e-3, 179: 5e-3, 180: 5e-4, 209: 5e-4, 210: 5e-5, 239: 5e-5})
    mobile = make_config("+experiment=cifar100/kd", "pair=vgg13_mobilenetv2", fast=False)
    assert schedule(mobile, [0, 150]) == pytest.approx({0: 0.01, 150: 1e-3})  # MobileNetV2/ShuffleNet students


def test_at_wrn_recipe_decays_by_five_at_60_120_160(make_config):
    cfg = make_config("+experiment=cifar100/ce", "recipe=at_wrn", fast=False)
    assert (cfg.data.batch_size, cfg.trainer.max_epochs, cfg.optimizer.weight_decay) == (128, 200, 5e-4)
    lrs = schedule(cfg, [0, 59, 60, 119, 120, 160, 199])
    assert lrs == pytest.approx({0: 0.1, 59: 0.1, 60: 0.02, 119: 0.02, 120: 4e-3, 160: 8e-4, 199: 8e-4})


def test_he_resnet_recipe_counts_iterations(make_config):
    cfg = make_config("+experiment=cifar100/ce", "recipe=he_resnet", "pair=resnet56_resnet20", "data=cifar10",
                      fast=False)
    assert cfg.scheduler.interval == "step" and cfg.trainer.max_steps == 64_000 and cfg.trainer.max_epochs == -1
    assert (cfg.data.batch_size, cfg.data.val_size, cfg.optimizer.weight_decay) == (128, 5000, 1e-4)
    lrs = schedule(cfg, [0, 31_999, 32_000, 47_999, 48_000, 63_999])
    assert lrs == pytest.approx({0: 0.1, 31_999: 0.1, 32_000: 0.01, 47_999: 0.01, 48_000: 1e-3, 63_999: 1e-3})


def test_tutorial_recipe_is_adam_at_a_constant_rate(make_config):
    cfg = make_config("+experiment=cifar10_ce", "recipe=tutorial", fast=False)
    assert cfg.optimizer._target_ == "torch.optim.Adam" and cfg.optimizer.lr == 1e-3 and cfg.get("scheduler") is None
    assert (cfg.trainer.max_epochs, cfg.data.batch_size, cfg.data.crop_padding, cfg.data.hflip) == (10, 128, 0, False)


def test_published_weights_of_the_cifar100_experiments(make_config):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):  # one Hydra initialisation for all
        terms = {m: compose("train", overrides=[f"+experiment={e}"]).distill.terms for m, e in PUBLISHED.items()}
    assert (terms["kd"].ce.weight, terms["kd"].kd.weight, terms["kd"].kd.temperature) == (0.1, 0.9, 4.0)
    assert (terms["hint"].ce.weight, terms["hint"].hint.weight) == (1.0, 100.0)
    assert (terms["at"].at.weight, terms["sp"].sp.weight, terms["pkt"].pkt.weight) == (1000.0, 3000.0, 30000.0)
    assert (terms["crd"].crd.weight, terms["crd"].crd.nce_k, terms["crd"].crd.negatives) == (0.8, 16384, "other_class")
    assert (terms["dkd"].dkd.alpha, terms["dkd"].dkd.beta, terms["dkd"].dkd.temperature) == (1.0, 6.0, 4.0)
    assert terms["dkd"].dkd.warmup_steps == 20 * -(-49_000 // 64)  # 20 epochs of the 49,000-image split at batch 64
    assert (terms["dist"].dist.beta, terms["dist"].dist.gamma, terms["dist"].dist.temperature) == (2.0, 2.0, 4.0)
    assert make_config("+experiment=cifar100/dkd", "pair=resnet56_resnet20").distill.terms.dkd.beta == 2.0


# ---------------------------------------------------------------- the pieces: CRD negatives, LayerSum, ConvRegressor


def test_crd_other_class_negatives_never_share_the_anchors_class_and_cover_the_rest():
    torch.manual_seed(0)
    labels = torch.tensor([0, 1, 2] * 10)  # 30 samples, 10 per class
    crd = CRD("s", "t", student_dim=4, teacher_dim=4, feat_dim=3, nce_k=2000, negatives="other_class")
    crd.allocate(30, "cpu", labels=labels)
    index = torch.tensor([0, 1, 2, 5])
    negatives = crd.draw_negatives(index, labels[index])
    assert negatives.shape == (4, 2000)
    assert (labels[negatives] != labels[index].unsqueeze(1)).all()
    for row, anchor in zip(negatives, index):  # each of the 20 others drawn (P(one missed) ≈ 20 · 0.95^2000)
        assert set(row.tolist()) == {i for i in range(30) if labels[i] != labels[anchor]}
    uniform = CRD("s", "t", student_dim=4, teacher_dim=4, feat_dim=3, nce_k=2000)
    uniform.allocate(30, "cpu")
    assert (labels[uniform.draw_negatives(index, labels[index])] == labels[index].unsqueeze(1)).any()


def test_crd_other_class_negatives_are_distinct_and_uniform_unless_a_class_has_too_few_others():
    """RepDistiller's loader: np.random.choice(other classes, k, replace=k > len(other classes))."""
    torch.manual_seed(0)
    labels = torch.tensor([0] * 2 + [1] * 20 + [2] * 8)[torch.randperm(30)]  # 28, 10 and 22 others
    crd = CRD("s", "t", student_dim=4, teacher_dim=4, feat_dim=3, nce_k=15, negatives="other_class")
    crd.allocate(30, "cpu", labels=labels)
    anchors = {c: int((labels == c).nonzero()[0]) for c in range(3)}
    index = torch.tensor([anchors[0], anchors[2], anchors[1]]).repeat(2000)
    negatives = crd.draw_negatives(index, labels[index])
    assert negatives.shape == (6000, 15)
    assert (labels[negatives] != labels[index].unsqueeze(1)).all()
    for row, anchor in zip(negatives[:6], index[:6]):
        distinct = len(set(row.tolist()))
        assert distinct == 15 if labels[anchor] != 1 else distinct <= 10  # class 1 has 10 others: replacement
    for c, others in ((0, 28), (2, 22)):  # each other sample in a row with probability k / others
        rows = negatives[labels[index] == c]
        share = torch.zeros(30).index_add_(0, rows.flatten(), torch.ones(rows.numel())) / len(rows)
        outside = labels != c
        torch.testing.assert_close(share[outside], torch.full((others,), 15 / others), atol=0.05, rtol=0)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-6), (torch.bfloat16, 5e-2)])
def test_crd_runs_with_its_weights_in_the_precisions_dtype(dtype, tolerance):
    """trainer.precision=bf16-true or 64-true casts CRD's projections; the features reach them in that dtype (they
    were cast to float32 for autocast, and the projection refused them), and the loss is float32's within rounding."""
    losses = []
    for as_dtype in (torch.float32, dtype):
        torch.manual_seed(0)
        crd = CRD("s", "t", student_dim=4, teacher_dim=6, feat_dim=3, nce_k=5).to(as_dtype)  # as Lightning casts
        crd.allocate(20, "cpu")  # at fit start, after the cast (the banks stay float32)
        torch.manual_seed(1)
        student = Outputs(torch.zeros(8, 10), {"s": torch.randn(8, 4).to(as_dtype)})
        teacher = Outputs(torch.zeros(8, 10), {"t": torch.randn(8, 6).to(as_dtype)})
        loss = crd(student, teacher, torch.zeros(8, dtype=torch.long), index=torch.arange(8))
        loss.backward()
        assert crd.embed_s.linear.weight.grad.dtype == as_dtype
        losses.append(loss.double())
    torch.testing.assert_close(losses[1], losses[0], rtol=tolerance, atol=0)


def test_crd_other_class_configuration_errors():
    with pytest.raises(ConfigError, match="'uniform' or 'other_class', got 'same_class'"):
        CRD("s", "t", student_dim=4, teacher_dim=4, negatives="same_class")
    crd = CRD("s", "t", student_dim=4, teacher_dim=4, negatives="other_class")
    with pytest.raises(ConfigError, match="needs the labels of all 30 training samples; got none"):
        crd.allocate(30, "cpu")
    with pytest.raises(ConfigError, match="at least two classes"):
        crd.allocate(3, "cpu", labels=torch.zeros(3, dtype=torch.long))


def test_layer_sum_is_the_sum_of_its_terms_and_pairs_lists_one_to_one():
    torch.manual_seed(0)
    s = {"a": torch.randn(2, 3, 8, 8), "b": torch.randn(2, 4, 4, 4)}
    t = {"x": torch.randn(2, 5, 8, 8), "y": torch.randn(2, 6, 2, 2)}
    student, teacher = Outputs(None, s), Outputs(None, t)
    summed = LayerSum(functools.partial(AttentionTransfer, p=2.0), ["a", "b"], ["x", "y"], weight=1000.0)
    expected = AttentionTransfer("a", "x")(student, teacher, None) + AttentionTransfer("b", "y")(student, teacher, None)
    torch.testing.assert_close(summed(student, teacher, None), expected)
    assert summed.student_layers == ("a", "b") and summed.teacher_layers == ("x", "y") and summed.weight == 1000.0
    with pytest.raises(ConfigError, match=r"student_layers \['a', 'b'\] with teacher_layers \['x'\]"):
        LayerSum(AttentionTransfer, ["a", "b"], ["x"])


@pytest.mark.parametrize(
    ("student", "teacher", "conv"),
    [([16, 16, 16], [64, 16, 16], torch.nn.Conv2d), ([32, 16, 16], [8, 8, 8], torch.nn.Conv2d),
     ([480, 8, 8], [128, 16, 16], torch.nn.ConvTranspose2d), ([16, 8, 8], [32, 6, 6], torch.nn.Conv2d)],
    ids=["same size", "twice as large", "half as large", "larger by 2"],
)
def test_conv_regressor_maps_the_student_map_onto_the_teachers(student, teacher, conv):
    regressor = ConvRegressor(student, teacher)
    assert type(regressor[0]) is conv and isinstance(regressor[1], torch.nn.BatchNorm2d)
    assert regressor(torch.randn(2, *student)).shape == (2, *teacher)


def test_conv_regressor_refuses_a_student_map_it_cannot_reach():
    with pytest.raises(FeatureShapeError, match=r"\(16, 4, 4\).*\(32, 16, 16\)"):
        ConvRegressor([16, 4, 4], [32, 16, 16])
