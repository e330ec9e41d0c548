"""Teachers from model libraries: by name, weights from a file, dict/object outputs, resize and re-normalise."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from kd_lightning.distill import load_teacher
from kd_lightning.errors import ConfigError
from kd_lightning.models import TeacherAdapter, timm_model, torchvision_model
from kd_lightning.train import train


def test_torchvision_model_by_name_with_weights_from_a_file(tmp_path):
    torch.manual_seed(0)
    source = torchvision_model("resnet18", num_classes=10)
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "w.pth")
    loaded = torchvision_model("resnet18", num_classes=10, weights_path=str(tmp_path / "w.pth"))
    assert torch.equal(loaded.fc.weight, source.fc.weight) and loaded.fc.out_features == 10
    with pytest.raises(ConfigError, match="unknown torchvision classification model .resnet19."):
        torchvision_model("resnet19", num_classes=10)
    with pytest.raises(ConfigError, match="does not fit"):
        torchvision_model("resnet18", num_classes=5, weights_path=str(tmp_path / "w.pth"))


def test_checkpoint_null_keeps_the_constructors_weights_frozen():
    net = nn.Linear(3, 2)
    before = net.weight.clone()
    teacher = load_teacher(net, None)
    assert teacher is net and torch.equal(teacher.weight, before)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())


class DictNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        logits = self.fc(x.flatten(1))
        return {"logits": logits, "features": x}


def test_logits_from_dict_object_and_tuple_outputs():
    x = torch.randn(2, 1, 2, 2)
    dict_teacher = TeacherAdapter(DictNet(), logits_key="logits")
    assert torch.equal(dict_teacher(x), dict_teacher.net.fc(x.flatten(1)))
    obj = TeacherAdapter(nn.Identity(), logits_key="logits")
    assert torch.equal(obj.logits(SimpleNamespace(logits=x, loss=None)), x)
    assert torch.equal(TeacherAdapter(nn.Identity(), logits_key=1).logits((None, x)), x)
    with pytest.raises(ConfigError, match=r"set logits_key to one of \['logits', 'features'\]"):
        TeacherAdapter(DictNet())(x)
    with pytest.raises(ConfigError, match=r"logits_key='out' is not in the teacher's output; it has \['logits', 'feat"):
        TeacherAdapter(DictNet(), logits_key="out")(x)


def test_resize_and_renormalise_grey_student_inputs_for_an_rgb_teacher():
    adapter = TeacherAdapter(nn.Identity(), input_size=[4, 4], input_mean=[0.5], input_std=[0.25],
                             mean=[0.0, 0.5, 1.0], std=[1.0, 0.5, 0.5], channels=3, mode="nearest")
    x = torch.full((1, 1, 2, 2), 2.0)  # normalised by (0.5, 0.25): pixels 2·0.25 + 0.5 = 1.0
    out = adapter(x)
    assert out.shape == (1, 3, 4, 4)
    assert out[0, :, 0, 0].tolist() == [1.0, 1.0, 0.0]  # (1 − mean) / std per channel
    with pytest.raises(ConfigError, match="needs input_mean, input_std"):
        TeacherAdapter(nn.Identity(), mean=[0.5], std=[0.5])


def test_kd_from_a_torchvision_teacher_at_another_resolution(make_config):
    cfg = make_config("data=cifar10", "model=light_nn", "teacher=torchvision", "teacher.net.net.name=resnet18",
                      "teacher.net.input_size=[48,48]", "teacher.net.mean=[0.485,0.456,0.406]",
                      "teacher.net.std=[0.229,0.224,0.225]", "distill=kd", "trainer.fast_dev_run=true")
    summary = train(cfg)
    assert summary["status"] == "done" and summary["config"]["teacher"] == "torchvision_model:resnet18"


def test_timm_model_by_name():
    pytest.importorskip("timm")
    net = timm_model("resnet18", num_classes=7)
    assert net(torch.randn(1, 3, 32, 32)).shape == (1, 7)
