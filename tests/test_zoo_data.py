"""CIFAR-100: its config, sources, and the crop + flip augmentation on both batch paths (DataLoader, resident)."""

from pathlib import Path

import lightning.pytorch as L
import pytest
import torch
from hydra.utils import instantiate

from kd_lightning.data import SyntheticSource, TorchvisionSource
from kd_lightning.errors import DataNotFoundError
from kd_lightning.train import train


def test_cifar100_config_has_repdistillers_statistics_and_augmentation(make_config):
    cfg = make_config("data=cifar100")
    assert cfg.data.num_classes == 100 and cfg.data.name == "cifar100"
    assert list(cfg.data.mean) == [0.5071, 0.4867, 0.4408] and list(cfg.data.std) == [0.2675, 0.2565, 0.2761]
    assert cfg.data.crop_padding == 4 and cfg.data.hflip is True
    npz = make_config("data=cifar100", "data/source=npz").data.source
    assert Path(npz.path).name == "cifar100.npz"


def test_synthetic_cifar100_has_100_classes_of_cifar_images(make_config):
    datamodule = instantiate(make_config("data=cifar100").data)
    datamodule.setup()
    images, labels = datamodule.splits["train"]
    assert images.shape[1:] == (3, 32, 32) and images.dtype == torch.uint8
    assert labels.min() == 0 and labels.max() == 99  # 5744 seeded draws over 100 classes reach both ends
    arrays = SyntheticSource("cifar100", num_classes=100, num_train=10, num_test=10).load()
    assert arrays.x_test.shape == (10, 3, 32, 32)


def test_missing_cifar100_offline_names_torchvisions_folder(tmp_path):
    with pytest.raises(DataNotFoundError, match="cifar-100-python"):
        TorchvisionSource("cifar100", str(tmp_path), download=False).load()



class RecordBatches(L.Callback):
    def __init__(self):
        self.train, self.val = [], []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.train.append(batch[0].detach().clone())

    def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
        self.val.append(batch[0].detach().clone())


@pytest.mark.parametrize("resident", [False, True])
def test_training_batches_are_cropped_and_flipped_on_both_paths(resident, make_config, monkeypatch, one_thread):
    """A zero-padded pixel normalises to exactly -mean/std. A crop shifted by (dy, dx) != (4, 4) has a whole border row
    or column of padding (1 in 81 crops has none), which synthetic images (128 + 50·pattern + 30·noise, a pixel
    black in all channels at ~3e-6) practically never have: the training batch of 64 shows it, validation never."""
    cfg = make_config("data=cifar100", "model=light_nn", f"data.resident={str(resident).lower()}",
                      "trainer.fast_dev_run=true", "test=false", "data.batch_size=64")
    recorder = RecordBatches()
    monkeypatch.setattr("kd_lightning.train.instantiate", _adding(recorder))
    train(cfg)
    mean, std = torch.tensor(cfg.data.mean), torch.tensor(cfg.data.std)
    pad = (-mean / std).view(1, 3, 1, 1)

    def padded(x):  # per image: is a whole border row or column padding?
        is_pad = torch.isclose(x, pad.expand_as(x), atol=1e-5).all(1)  # N, H, W
        borders = [is_pad[:, 0, :], is_pad[:, -1, :], is_pad[:, :, 0], is_pad[:, :, -1]]
        return torch.stack([b.all(1) for b in borders], 1).any(1)

    assert padded(recorder.train[0]).any() and not padded(recorder.val[0]).any()


def _adding(callback):
    """Hydra's instantiate, but the Trainer also gets ``callback``."""
    from hydra.utils import instantiate as hydra_instantiate

    def instantiate_(config, *args, **kwargs):
        if "callbacks" in kwargs and config.get("_target_", "").endswith("Trainer"):
            kwargs["callbacks"] = [*kwargs["callbacks"], callback]
        return hydra_instantiate(config, *args, **kwargs)

    return instantiate_
