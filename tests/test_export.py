"""Exporting a trained student: state dict + config, ONNX and torch.export with normalisation built in."""

import pytest
import torch
from omegaconf import OmegaConf

from kd_lightning.errors import ConfigError
from kd_lightning.export import load_module, load_student
from kd_lightning.export.deploy import Deployable
from kd_lightning.modules import SupervisedModule
from kd_lightning.train import train

from test_train import with_teacher


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A CE-only MLP trained for 4 steps on synthetic MNIST-shaped data."""
    from conftest import compose_config

    tmp = tmp_path_factory.mktemp("export")
    train(compose_config(tmp, "+experiment=mnist_ce"))
    return tmp / "run"


def test_deployable_matches_the_training_normalisation():
    net = torch.nn.Identity()
    images = torch.tensor([[[[0, 255]]], [[[51, 102]]]], dtype=torch.uint8)  # (2, 1, 1, 2)
    out = Deployable(net, [0.2], [0.5])(images)
    assert torch.allclose(out.flatten(), torch.tensor([-0.4, 1.6, 0.0, 0.4]), atol=1e-6)  # (x/255 − .2)/.5
    as_float = Deployable(net, [0.2], [0.5], input="float")(images.float() / 255)
    assert torch.allclose(as_float, out, atol=1e-6)


def test_checkpoints_rebuild_the_student_and_load_from_checkpoint(trained_run):
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["hyper_parameters"]["student"]["_target_"] == "kd_lightning.models.MLP"
    net = load_student(trained_run)
    assert torch.equal(net.head.weight, state["state_dict"]["net.head.weight"])
    module = load_module(ckpt)
    assert isinstance(module, SupervisedModule) and torch.equal(module.net.head.weight, net.head.weight)


def test_load_module_takes_a_distilled_student_without_its_adapters(make_config, teacher_state, tmp_path):
    train(with_teacher(make_config, teacher_state, "+experiment=cifar10_regressor", "trainer.limit_train_batches=1"))
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert any(k.startswith("terms.hint.") for k in ckpt["state_dict"])  # the regressor is in the checkpoint
    module = load_module(tmp_path / "run")
    assert type(module.net).__name__ == "LightNN" and not hasattr(module, "teacher")
    assert torch.equal(module.net.classifier[3].weight, ckpt["state_dict"]["net.classifier.3.weight"])


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no checkpoint at"):
        load_student(tmp_path)


def test_export_writes_and_checks_onnx_and_torch_export(trained_run, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from kd_lightning.export.__main__ import main

    main([str(trained_run), "--num-images", "200"])
    out = capsys.readouterr().out
    export = trained_run / "export"
    assert sorted(p.name for p in export.iterdir()) == ["student.onnx", "student.pt2", "student.yaml",
                                                        "student_state_dict.pt"]
    spec = OmegaConf.load(export / "student.yaml")
    assert spec.input.dtype == "uint8" and spec.input.shape == [1, 28, 28] and spec.normalisation.mean == [0.1307]
    lines = {line.split(":")[0].strip(): line for line in out.splitlines() if "max_abs_diff=" in line}
    assert set(lines) == {"onnx", "pt2", "pytorch"}
    for name in ("onnx", "pt2"):
        diff = float(lines[name].split("max_abs_diff=")[1].split()[0])
        assert diff < 1e-4, lines[name]  # float32 round-off of a 2-layer MLP, not a different function
        assert "agreement=100.00 %" in lines[name]
    # the state dict alone rebuilds the student
    net = load_student(trained_run)
    net.load_state_dict(torch.load(export / "student_state_dict.pt", weights_only=True))
