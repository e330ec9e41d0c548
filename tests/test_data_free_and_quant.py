"""Data-free distillation (DAFL) and quantization-aware distillation (QAT → int8)."""

import functools
import math
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch
from hydra.utils import instantiate
from torch import nn
from torch.ao.nn import quantized as nnq
from torch.ao.nn.intrinsic import quantized as nniq

from kd_lightning.data import SyntheticSource
from kd_lightning.data.data_free import DataFreeDataModule, GeneratorSteps
from kd_lightning.data.sources import Arrays
from kd_lightning.distill import DAFLGeneratorLoss, SoftTargetKD
from kd_lightning.distill.data_free import activation_loss, information_entropy_loss, input_stats_loss, one_hot_loss
from kd_lightning.models import MLP, LightNN
from kd_lightning.models.generator import Generator, MLPGenerator
from kd_lightning.models.quantizable import QuantizableNet, fusable_groups
from kd_lightning.modules import DataFreeDistillationModule
from kd_lightning.callbacks.quantization import convert_int8, prepare_qat
from kd_lightning.errors import ConfigError
from kd_lightning.train import train

ADAM = functools.partial(torch.optim.Adam, lr=1e-3)


# ---------------------------------------------------------------- DAFL's generator losses, by hand


def test_one_hot_loss_is_cross_entropy_with_the_teachers_own_argmax():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
    row1 = -math.log(math.exp(2) / (math.exp(2) + 2))
    row2 = -math.log(math.exp(3) / (1 + math.e + math.exp(3)))
    assert one_hot_loss(logits).item() == pytest.approx((row1 + row2) / 2, rel=1e-6)


def test_activation_loss_is_minus_the_mean_absolute_feature():
    assert activation_loss(torch.tensor([[1.0, -2.0], [3.0, 0.0]])).item() == pytest.approx(-1.5)


@pytest.mark.parametrize(
    "logits, expected",
    [
        (torch.zeros(4, 3), -math.log(3)),  # every image uniform: the mean is uniform
        (torch.tensor([[100.0, 0.0], [0.0, 100.0]]), -math.log(2)),  # confident, one per class: balanced
        (torch.tensor([[100.0, 0.0], [100.0, 0.0]]), 0.0),  # all the same class: no entropy
        (torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]]), 0.625 * math.log(0.625) + 0.375 * math.log(0.375)),
    ],
)
def test_information_entropy_loss_is_minus_the_entropy_of_the_batch_mean(logits, expected):
    assert information_entropy_loss(logits).item() == pytest.approx(expected, abs=1e-6)


def test_input_stats_loss_is_zero_for_standardised_data_and_averages_channels():
    images = torch.zeros(2, 2, 1, 1)
    images[:, 0, 0, 0] = torch.tensor([0.0, 2.0])  # mean 1, std √2: 1 + (√2 - 1)²
    images[:, 1, 0, 0] = torch.tensor([-1.0, 1.0])  # mean 0, std √2: (√2 - 1)²
    expected = (1 + 2 * (math.sqrt(2) - 1) ** 2) / 2
    assert input_stats_loss(images).item() == pytest.approx(expected, rel=1e-6)
    standardised = torch.randn(64, 3, 8, 8)
    standardised = standardised - standardised.mean((0, 2, 3), keepdim=True)
    standardised = standardised / standardised.std((0, 2, 3), keepdim=True)
    assert input_stats_loss(standardised).item() == pytest.approx(0.0, abs=1e-10)


def test_dafl_generator_loss_is_the_weighted_sum_of_its_parts():
    logits, features = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]]), torch.tensor([[1.0, -2.0], [3.0, 0.0]])
    images = torch.tensor([0.0, 2.0]).view(2, 1, 1, 1)
    loss = DAFLGeneratorLoss(one_hot=1.0, activation=0.1, entropy=5.0, input_stats=0.5)
    total, parts = loss(logits, features, images)
    expected = [float(one_hot_loss(logits)), -1.5, float(information_entropy_loss(logits)), 1 + (math.sqrt(2) - 1) ** 2]
    assert [p.item() for p in parts] == pytest.approx(expected, rel=1e-6)
    weighted = expected[0] + 0.1 * expected[1] + 5.0 * expected[2] + 0.5 * expected[3]
    assert total.item() == pytest.approx(weighted, rel=1e-6)


@pytest.mark.parametrize("generator", [Generator(16, 1, 28, width=8), MLPGenerator(16, 3, 32, hidden=[32])])
def test_dafl_generators_make_standardised_images_of_the_datas_shape(generator):
    images = generator(torch.randn(32, 16))
    channels, size = (1, 28) if isinstance(generator, Generator) else (3, 32)
    assert images.shape == (32, channels, size, size)
    assert images.mean((0, 2, 3)).abs().max() < 1e-4
    assert (images.var((0, 2, 3), unbiased=False) - 1).abs().max() < 0.01  # v / (v + eps)


def test_pixel_generators_make_valid_images_normalised_like_the_data():
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    images = Generator(16, 3, 32, width=8, mean=mean, std=std)(torch.randn(8, 16))
    pixels = images * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    assert images.shape == (8, 3, 32, 32) and pixels.min() >= 0 and pixels.max() <= 1
    with pytest.raises(ValueError, match="both mean and std"):
        Generator(16, 1, 28, mean=[0.5])


# ---------------------------------------------------------------- data-free training reads no training image


class Poisoned:
    """Stands in for the training images and labels: any use fails the test."""

    def _touched(self, *args, **kwargs):
        raise AssertionError("the training split was touched")

    __getitem__ = __len__ = __iter__ = __array__ = __getattr__ = _touched


class PoisonedTrainSource:
    """A source whose training part is poisoned; its test part is synthetic MNIST-shaped images."""

    def load(self) -> Arrays:
        real = SyntheticSource("mnist", num_train=10, num_test=64).load()
        return Arrays(Poisoned(), Poisoned(), real.x_test, real.y_test)


def data_free_module(teacher=None, **kw):
    teacher = teacher if teacher is not None else MLP(784, [32, 16], 10)
    return DataFreeDistillationModule(
        MLP(784, [16], 10), teacher, {"kd": SoftTargetKD(1.0, 4.0)},
        Generator(8, 1, 28, width=8, mean=[0.13], std=[0.31]), ADAM, functools.partial(torch.optim.Adam, lr=0.01),
        DAFLGeneratorLoss(input_stats=1.0), batch_size=16, **kw,
    )


def test_data_free_training_runs_without_a_training_split(tmp_path):
    datamodule = DataFreeDataModule("mnist", PoisonedTrainSource(), 10, [0.1307], [0.3081], steps_per_epoch=3)
    teacher = MLP(784, [32, 16], 10)
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    module = data_free_module(teacher, student_steps=2)
    student_before = [p.clone() for p in module.net.parameters()]
    generator_before = [p.clone() for p in module.generator.parameters()]
    trainer = L.Trainer(default_root_dir=tmp_path, accelerator="cpu", max_epochs=2, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(module, datamodule=datamodule)
    assert set(datamodule.splits) == {"test"}  # no training (nor validation, which is training) images
    assert trainer.global_step == 2 * 3 * (1 + 2)  # per step: one generator and two student updates
    assert all(not torch.equal(a, b) for a, b in zip(student_before, module.net.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(generator_before, module.generator.parameters()))
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in teacher_before.items())
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    keys = module.state_dict().keys()
    assert any(k.startswith("generator.") for k in keys) and not any(k.startswith("teacher") for k in keys)
    metrics = trainer.callback_metrics
    assert {"val/acc", "train/acc"} <= set(metrics)
    assert 0 <= trainer.test(module, datamodule=datamodule, verbose=False)[0]["test/acc"] <= 1


def test_generator_steps_are_placeholders_only():
    batches = list(GeneratorSteps(3))
    assert len(GeneratorSteps(3)) == 3 and len(batches) == 3
    assert all(x.numel() == 0 and y.numel() == 0 for x, y, _ in batches)


def test_generator_loss_moves_the_generator_only_and_student_loss_the_student_only():
    module = data_free_module()
    images = module.generate(16)
    teacher = module.teacher(images)
    total, _ = module.generator_loss(teacher.logits, teacher.features["layers"], images)
    total.backward()
    assert all(p.grad is not None for p in module.generator.parameters())
    assert all(p.grad is None for p in module.net.parameters())
    assert all(p.grad is None for p in module.teacher.net.parameters())


# ---------------------------------------------------------------- QAT: fake quant in training, int8 after


def test_fusable_groups_of_the_tutorial_student_and_the_mlp():
    assert fusable_groups(LightNN()) == [["features.0", "features.1"], ["features.3", "features.4"],
                                         ["classifier.0", "classifier.1"]]
    assert fusable_groups(MLP(784, [32, 16])) == [["layers.0.0", "layers.0.1"], ["layers.1.0", "layers.1.1"]]


def test_quantizable_net_computes_what_the_net_does_until_prepared():
    torch.manual_seed(0)
    net = LightNN().eval()
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(QuantizableNet(net)(x), net(x))


@pytest.mark.parametrize("make, shape", [(LightNN, (3, 32, 32)), (lambda: MLP(784, [64, 32]), (1, 28, 28))])
def test_qat_export_is_int8_and_matches_fake_quant(make, shape):
    torch.manual_seed(0)
    net = prepare_qat(QuantizableNet(make()), "x86")
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(5):  # a few training steps: observers see data, weights move under fake quant
        x = torch.randn(32, *shape)
        loss = torch.nn.functional.cross_entropy(net(x), torch.randint(10, (32,)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    int8 = convert_int8(net, "x86")
    kinds = {type(m) for m in int8.modules()}
    assert nnq.Linear in kinds and nniq.LinearReLU in kinds and (nniq.ConvReLU2d in kinds) == (make is LightNN)
    assert not any(isinstance(m, (nn.Linear, nn.Conv2d)) for m in int8.modules())  # no float (or QAT) layer left
    assert all(m.weight().dtype == torch.qint8 for m in int8.modules() if isinstance(m, (nnq.Linear, nnq.Conv2d)))
    # calibrate the ranges on the very batch compared, so neither side clips (x86's fake quant clips activations
    # to 7 bits, int8 kernels don't): then the two differ only by rounding
    x = torch.randn(256, *shape)
    for module in net.modules():
        if isinstance(module, torch.ao.quantization.FakeQuantizeBase):
            module.activation_post_process.reset_min_max_vals()
    with torch.no_grad():
        net.eval()(x)
        net.apply(torch.ao.quantization.disable_observer)
        int8 = convert_int8(net, "x86")
        fake, real = net(x), int8(x)
    scale = int8.net.classifier[3].scale if make is LightNN else int8.net.head.scale  # one output step
    assert (fake - real).abs().mean() <= 0.5 * scale and (fake - real).abs().max() <= 0.03 * (fake.max() - fake.min())
    assert (fake.argmax(1) == real.argmax(1)).float().mean() >= 0.95
    assert next(iter(net.parameters())).dtype == torch.float32  # the training copy stays fake-quant float


# ---------------------------------------------------------------- the experiments, end to end on synthetic data


@pytest.mark.parametrize("experiment", ["mnist_data_free", "cifar10_kd_int8"])
def test_new_experiments_compose_and_run_fast_dev_run(experiment, make_config, teacher_state, tmp_path):
    cfg = make_config(f"+experiment={experiment}", "trainer.fast_dev_run=true")
    cfg = make_config(f"+experiment={experiment}", "trainer.fast_dev_run=true",
                      f"teacher.checkpoint={teacher_state(instantiate(cfg.teacher.net))}")
    assert cfg.run_name == experiment
    summary = train(cfg)
    assert summary["status"] == "done" and 0.0 <= summary["test/acc"] <= 1.0
    if experiment == "cifar10_kd_int8":
        assert 0.0 <= summary["test/acc_int8"] <= 1.0 and summary["test/agreement_int8"] >= 0.9
        int8 = torch.jit.load(str(tmp_path / "run" / "int8.pt"))
        assert int8(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_qat_refuses_a_precision_that_casts_the_weights_before_training(make_config, teacher_state):
    """trainer.precision=bf16-true with cifar10_kd_int8 died in the first step inside torch.ao's fake-quant kernel
    ("expected scalar type Float but found BFloat16")."""
    cfg = make_config("+experiment=cifar10_kd_int8", "trainer.precision=bf16-true")
    cfg = make_config("+experiment=cifar10_kd_int8", "trainer.precision=bf16-true",
                      f"teacher.checkpoint={teacher_state(instantiate(cfg.teacher.net))}")
    with pytest.raises(ConfigError, match=r"precision='bf16-true' casts them: use one of 32-true, 32, bf16-mixed"):
        train(cfg)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()


def test_qat_run_resumes_from_its_fake_quant_checkpoint(make_config, teacher_state, monkeypatch):
    import signal

    from kd_lightning.runs.resume import RNGState

    overrides = ["+experiment=cifar10_kd_int8", "trainer.limit_train_batches=2", "trainer.max_epochs=2"]
    cfg = make_config(*overrides)
    overrides.append(f"teacher.checkpoint={teacher_state(instantiate(cfg.teacher.net))}")

    def ctrl_c_in_epoch_1(self, trainer, *args):  # interrupted after epoch 0's checkpoint
        if trainer.current_epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(RNGState, "on_train_epoch_start", ctrl_c_in_epoch_1, raising=False)
    with pytest.raises(SystemExit):
        train(make_config(*overrides))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    monkeypatch.undo()
    second = train(make_config(*overrides))
    assert second["resumed_from"].endswith("last.ckpt") and second["epochs"] == 2 and "test/acc_int8" in second
