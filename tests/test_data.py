"""Sources, splits, batch transforms and the resident loader."""

import numpy as np
import pytest
import torch

from kd_lightning.data import BatchTransform, ClassificationDataModule, NpzSource, ResidentBatches, SyntheticSource, TorchvisionSource
from kd_lightning.errors import DataNotFoundError


def datamodule(**kw):
    args = dict(name="cifar10", source=SyntheticSource("cifar10", num_train=600, num_test=100), num_classes=10,
                mean=[0.5] * 3, std=[0.25] * 3, val_size=100, batch_size=32)
    return ClassificationDataModule(**{**args, **kw})


def test_split_is_seeded_disjoint_and_complete():
    a, b, c = datamodule(), datamodule(), datamodule(split_seed=1)
    for dm in (a, b, c):
        dm.setup()
    assert len(a.splits["train"][1]) == 500 and len(a.splits["val"][1]) == 100 and len(a.splits["test"][1]) == 100
    assert torch.equal(a.splits["val"][0], b.splits["val"][0])
    assert not torch.equal(a.splits["val"][0], c.splits["val"][0])
    # train and val together are the whole training set, each image once
    whole = SyntheticSource("cifar10", num_train=600, num_test=100).load().x_train
    joined = torch.cat([a.splits["train"][0], a.splits["val"][0]]).flatten(1)
    assert sorted(map(bytes, joined.numpy())) == sorted(map(bytes, whole.flatten(1).numpy()))


def test_npz_source_reads_keras_layout(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.zeros((4, 5, 6, 3), np.uint8), y_train=np.arange(4), x_test=np.full((2, 5, 6, 3), 7, np.uint8),
             y_test=np.arange(2))
    arrays = NpzSource(str(path)).load()
    assert arrays.x_train.shape == (4, 3, 5, 6) and arrays.x_train.dtype == torch.uint8
    assert arrays.x_test.unique().tolist() == [7] and arrays.y_train.dtype == torch.long


def test_missing_data_offline_says_where_it_looked_and_how_to_provide_it(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        TorchvisionSource("cifar10", str(tmp_path), download=False).load()
    message = str(err.value)
    assert str(tmp_path / "cifar-10-batches-py") in message and "data/source=npz" in message
    with pytest.raises(DataNotFoundError, match="no .npz file at"):
        NpzSource(str(tmp_path / "missing.npz")).load()


def test_mnist_offline_falls_back_to_the_embedded_copy_and_says_so(tmp_path, caplog):
    import kd_lightning.data.sources as sources

    sources._load_torchvision_or_embedded.cache_clear()
    with caplog.at_level("WARNING"):
        arrays = TorchvisionSource("mnist", str(tmp_path), download=False).load()
    assert tuple(arrays.x_train.shape) == (60000, 1, 28, 28) and tuple(arrays.x_test.shape) == (10000, 1, 28, 28)
    assert arrays.y_train.bincount().tolist()[:2] == [5923, 6742]  # MNIST's official class counts
    assert [r.getMessage() for r in caplog.records if "shipped with kd_lightning" in r.getMessage()]


def test_a_damaged_embedded_copy_is_refused(tmp_path, monkeypatch):
    import kd_lightning.data.sources as sources

    (tmp_path / "mnist.npz").write_bytes(b"not the dataset")
    monkeypatch.setattr(sources, "EMBEDDED_DIR", tmp_path)
    with pytest.raises(DataNotFoundError, match="damaged"):
        sources.embedded_copy("mnist")
    assert sources.embedded_copy("cifar10") is None  # nothing shipped: the download error stands


def test_transform_normalises_with_the_datasets_mean_and_std():
    transform = BatchTransform(mean=[0.5, 0.25, 0.0], std=[0.5, 0.25, 1.0])
    images = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 3, 2, 2)
    out = transform(images, train=False)
    assert out[0, :, 0, 0].tolist() == pytest.approx([-1.0, -1.0, 0.0])
    assert out[1, :, 0, 0].tolist() == pytest.approx([1.0, 3.0, 1.0])


def test_augmentation_keeps_shape_and_pixels_and_only_touches_training_batches():
    images = torch.randint(1, 256, (64, 3, 8, 8), dtype=torch.uint8)
    transform = BatchTransform(mean=[0.0] * 3, std=[1 / 255] * 3, crop_padding=2, hflip=True)  # output = pixel value
    assert torch.equal(transform(images, train=False), images.float())
    out = transform(images, train=True)
    assert out.shape == images.shape
    assert set(out.unique().tolist()) <= set(images.unique().tolist()) | {0.0}  # crops pad with zeros
    assert not torch.equal(out, images.float())
    assert (out[:, :, 2:6, 2:6] == 0).sum() == 0  # a 2-pixel shift never brings padding into the centre


def test_resident_batches_cover_each_index_once_per_epoch_and_are_seeded():
    n = 103
    loader = ResidentBatches(torch.arange(n) * 10, torch.arange(n), batch_size=16, shuffle=True, seed=3)
    assert len(loader) == 7
    epoch0 = torch.cat([index for _, _, index in loader])
    assert sorted(epoch0.tolist()) == list(range(n))
    images, labels, index = next(iter(loader))
    assert torch.equal(images, index * 10) and torch.equal(labels, index)
    again = torch.cat([i for _, _, i in ResidentBatches(torch.arange(n), torch.arange(n), 16, True, seed=3)])
    assert torch.equal(epoch0, again)
    loader.set_epoch(1)
    epoch1 = torch.cat([index for _, _, index in loader])
    assert sorted(epoch1.tolist()) == list(range(n)) and not torch.equal(epoch0, epoch1)


def test_resident_batches_shard_across_ranks_like_distributed_sampler():
    n, world = 10, 3
    shards = [torch.cat([i for _, _, i in ResidentBatches(torch.arange(n), torch.arange(n), 2, True, 0, rank=r, world_size=world)])
              for r in range(world)]
    assert [len(s) for s in shards] == [4, 4, 4]  # padded to 12, like DistributedSampler
    assert set(torch.cat(shards).tolist()) == set(range(n))
