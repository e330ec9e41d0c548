import pytest
import torch

from kd_lightning.models import MLP, DeepNN, LightNN, build


def count(net):
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize(
    ("net", "params", "shape"),
    [
        (DeepNN(), 1_186_986, (3, 32, 32)),
        (LightNN(), 267_738, (3, 32, 32)),
        (MLP(784, [512, 256], dropout=0.5), 535_818, (1, 28, 28)),
        (MLP(784, [128]), 101_770, (1, 28, 28)),
    ],
)
def test_parameter_counts_and_logits(net, params, shape):
    assert count(net) == params
    assert net(torch.zeros(2, *shape)).shape == (2, 10)


def test_tutorial_feature_paths_have_the_tutorials_shapes():
    """The tutorial's variants read the conv block output: teacher 32x8x8 (2048), student 16x8x8 (1024)."""
    x = torch.zeros(2, 3, 32, 32)
    assert DeepNN().features(x).shape == (2, 32, 8, 8)
    assert LightNN().features(x).shape == (2, 16, 8, 8)


# RepDistiller's CIFAR networks: parameter counts as its own code gives them (its models/ instantiated with
# num_classes 10 and 100 and counted; the brief's 272,474 / 855,770 / 691,674 / 1,233,540 / 7,433,860 among them)
ZOO_PARAMS = {
    "wrn_16_1": (175_066, 180_916),
    "wrn_16_2": (691_674, 703_284),
    "wrn_40_1": (563_930, 569_780),
    "wrn_40_2": (2_243_546, 2_255_156),
}


@pytest.mark.parametrize("name", sorted(ZOO_PARAMS))
@pytest.mark.parametrize("num_classes", [10, 100])
def test_zoo_parameter_counts_are_repdistillers(name, num_classes):
    net = build(name, num_classes)
    assert count(net) == ZOO_PARAMS[name][num_classes == 100]
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, num_classes)
