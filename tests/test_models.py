import importlib.util

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from kd_lightning.distill import FeatureTaps
from kd_lightning.errors import ConfigError
from kd_lightning.models import MLP, DeepNN, LightNN, build, names


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


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


# RepDistiller's CIFAR networks: (10 classes, 100 classes) parameter counts as its own code gives them (its models/
# instantiated and counted; our state dicts also load its state dicts key for key). By hand, e.g. resnet20: option A's
# 269,722 plus the two 1x1-conv+BN shortcuts (16·32 + 2·32) + (32·64 + 2·64) = 2,752 → 272,474.
ZOO_PARAMS = {
    "resnet20": (272_474, 278_324),
    "resnet32": (466_906, 472_756),
    "resnet44": (661_338, 667_188),
    "resnet56": (855_770, 861_620),
    "resnet110": (1_730_714, 1_736_564),
    "resnet8x4": (1_210_410, 1_233_540),
    "resnet32x4": (7_410_730, 7_433_860),
    "wrn_16_1": (175_066, 180_916),
    "wrn_16_2": (691_674, 703_284),
    "wrn_40_1": (563_930, 569_780),
    "wrn_40_2": (2_243_546, 2_255_156),
    "vgg8": (3_918_858, 3_965_028),
    "vgg13": (9_416_010, 9_462_180),
    "mobilenetv2": (697_546, 812_836),
    "shufflenetv1": (862_768, 949_258),
    "shufflenetv2": (1_263_278, 1_355_528),
}

# RepDistiller's feature list (is_feat=True) at 32x32 input, as module paths and (C, H, W) / (C,)
TAPS = {
    "resnet20": {"relu": (16, 32, 32), "layer1": (16, 32, 32), "layer2": (32, 16, 16), "layer3": (64, 8, 8), "pool": (64,)},
    "resnet32x4": {"relu": (32, 32, 32), "layer1": (64, 32, 32), "layer2": (128, 16, 16), "layer3": (256, 8, 8),
                   "pool": (256,)},
    "wrn_40_2": {"conv1": (16, 32, 32), "block1": (32, 32, 32), "block2": (64, 16, 16), "block3": (128, 8, 8),
                 "pool": (128,)},
    "vgg8": {"relu0": (64, 32, 32), "relu1": (128, 16, 16), "relu2": (256, 8, 8), "relu3": (512, 4, 4),
             "relu4": (512, 4, 4), "pool": (512,)},
    "mobilenetv2": {"conv1": (16, 16, 16), "blocks.1": (12, 16, 16), "blocks.2": (16, 8, 8), "blocks.4": (48, 4, 4),
                    "blocks.6": (160, 2, 2), "pool": (1280,)},
    "shufflenetv1": {"relu": (24, 32, 32), "layer1": (240, 16, 16), "layer2": (480, 8, 8), "layer3": (960, 4, 4),
                     "pool": (960,)},
    "shufflenetv2": {"relu": (24, 32, 32), "layer1": (116, 16, 16), "layer2": (232, 8, 8), "layer3": (464, 4, 4),
                     "pool": (1024,)},
}


def test_the_zoo_has_every_network():
    assert set(names()) == set(ZOO_PARAMS)


@pytest.mark.parametrize("name", sorted(ZOO_PARAMS))
@pytest.mark.parametrize("num_classes", [10, 100])
def test_zoo_parameter_counts_are_repdistillers(name, num_classes):
    assert count(build(name, num_classes)) == ZOO_PARAMS[name][num_classes == 100]


@pytest.mark.parametrize("name", sorted(ZOO_PARAMS))
def test_each_zoo_network_has_its_model_config(name, make_config):
    cfg = make_config("data=cifar10", f"model={name}")
    assert count(instantiate(cfg.model)) == ZOO_PARAMS[name][0]


@pytest.mark.parametrize("name", sorted(TAPS))
def test_zoo_stage_outputs_are_reachable_by_module_path(name):
    torch.manual_seed(0)
    net = build(name, 100).eval()
    out = FeatureTaps(net, TAPS[name])(torch.randn(1, 3, 32, 32))
    assert out.logits.shape == (1, 100)
    assert {path: tuple(f.shape[1:]) for path, f in out.features.items()} == TAPS[name]
    # the pooled feature is what the classifier sees: the logits are the last layer applied to it
    head = dict(net.named_children())[list(dict(net.named_children()))[-1]]
    torch.testing.assert_close(head(out.features["pool"]), out.logits)


def test_a_hooked_stage_output_is_not_changed_in_place_later():
    """No in-place ReLU/addition: the recorded block output equals the same block run on its own."""
    torch.manual_seed(0)
    net = build("resnet20", 10).eval()
    out = FeatureTaps(net, ["layer1.0.bn2", "relu"])(torch.randn(1, 3, 32, 32))
    torch.testing.assert_close(out.features["layer1.0.bn2"], net.layer1[0].bn2(net.layer1[0].conv2(
        net.layer1[0].relu(net.layer1[0].bn1(net.layer1[0].conv1(out.features["relu"]))))))


def test_zoo_state_dict_keys_are_repdistillers():
    """A few of RepDistiller's key names per family (so its trained teachers' state dicts load unchanged)."""
    expected = {
        "resnet20": ["layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_var", "fc.weight"],
        "wrn_16_2": ["block1.layer.0.convShortcut.weight", "block3.layer.1.bn2.weight", "bn1.bias", "fc.bias"],
        "vgg8": ["block0.0.weight", "block0.1.running_mean", "block4.0.bias", "classifier.weight"],
        "mobilenetv2": ["conv1.0.weight", "blocks.6.0.conv.7.weight", "conv2.1.weight", "classifier.0.weight"],
        "shufflenetv1": ["layer1.0.conv1.weight", "layer3.3.bn3.weight", "linear.weight"],
        "shufflenetv2": ["layer1.0.conv5.weight", "layer2.7.bn3.weight", "bn2.weight", "linear.bias"],
    }
    for name, keys in expected.items():
        assert set(keys) <= set(build(name, 100).state_dict()), name
    assert "block2.layer.1.convShortcut.weight" not in build("wrn_16_2", 100).state_dict()  # same width: identity


def test_unknown_zoo_name_is_a_config_error_listing_the_names():
    with pytest.raises(ConfigError, match="unknown model 'resnet18'.*wrn_16_2"):
        build("resnet18", 10)


def test_torchvision_model_by_name_with_local_weights(make_config, tmp_path):
    cfg = make_config("data=cifar10", "model=torchvision", "model.name=resnet18")
    net = instantiate(cfg.model)
    assert count(net) == 11_181_642  # torchvision's resnet18 (11,689,512 at 1000 classes) with a 10-way head
    torch.nn.init.constant_(net.fc.bias, 0.5)
    path = tmp_path / "r18.pt"
    torch.save(net.state_dict(), path)
    loaded = instantiate(make_config("data=cifar10", "model=torchvision", "model.name=resnet18",
                                     f"model.weights_path={path}").model)
    assert torch.equal(loaded.fc.bias, torch.full((10,), 0.5))


def user_error(model_cfg) -> ConfigError:
    """The ConfigError behind Hydra's InstantiationException (what the entry point prints)."""
    with pytest.raises(InstantiationException) as info:
        instantiate(model_cfg)
    assert isinstance(info.value.__cause__, ConfigError)
    return info.value.__cause__


def test_torchvision_and_timm_errors(make_config):
    error = user_error(make_config("data=cifar10", "model=torchvision", "model.name=resnet19").model)
    assert "unknown torchvision classification model 'resnet19'" in str(error) and "resnet18" in str(error)
    error = user_error(make_config("data=cifar10", "model=torchvision", "model.weights_path=/nonexistent.pt").model)
    assert "is not a file" in str(error)
    if importlib.util.find_spec("timm") is None:
        assert "needs the timm package" in str(user_error(make_config("data=cifar10", "model=timm").model))
    else:
        assert instantiate(make_config("data=cifar10", "model=timm").model)(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
