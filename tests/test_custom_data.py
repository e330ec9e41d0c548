"""Your own data: an image folder, any torch Dataset, a Hugging Face dataset; computed normalisation statistics."""

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from kd_lightning.data import ClassificationDataModule, DatasetSource, HuggingFaceSource, ImageFolderSource
from kd_lightning.data.custom import channel_stats
from kd_lightning.errors import ConfigError, DataNotFoundError
from kd_lightning.train import train

from conftest import MNIST_NPZ


@pytest.fixture(scope="module")
def mnist_folder(tmp_path_factory):
    """200 real MNIST training images as root/<digit>/<i>.png (20 per class); returns (root, images, labels)."""
    if not MNIST_NPZ.is_file():
        pytest.skip(f"real MNIST not available at {MNIST_NPZ}")
    with np.load(MNIST_NPZ) as full:
        x, y = full["x_train"][:2000], full["y_train"][:2000]
    chosen = np.concatenate([np.flatnonzero(y == c)[:20] for c in range(10)])
    root = tmp_path_factory.mktemp("mnist_folder")
    for i in chosen:
        (root / str(y[i])).mkdir(exist_ok=True)
        Image.fromarray(x[i]).save(root / str(y[i]) / f"{i:05d}.png")
    return root, x[chosen], y[chosen]


def test_image_folder_reads_every_image_with_its_class(mnist_folder):
    root, images, labels = mnist_folder
    arrays = ImageFolderSource(str(root), num_classes=10, test_fraction=0.2).load()
    assert arrays.x_train.shape == (160, 1, 28, 28) and arrays.x_test.shape == (40, 1, 28, 28)
    assert arrays.x_train.dtype == torch.uint8 and arrays.x_val is None
    assert torch.bincount(torch.cat([arrays.y_train, arrays.y_test]), minlength=10).tolist() == [20] * 10
    # pixels survive the PNG round trip: each decoded image equals an original with the same label
    originals = {bytes(img.tobytes()): int(lab) for img, lab in zip(images, labels)}
    decoded = torch.cat([arrays.x_train, arrays.x_test])[:, 0].numpy()
    assert [originals[bytes(img.tobytes())] for img in decoded] == torch.cat([arrays.y_train, arrays.y_test]).tolist()


def test_image_folder_trains_a_teacher_and_a_kd_student(mnist_folder, make_config, tmp_path):
    root, _, _ = mnist_folder
    data = ["data=image_folder", "data/source=image_folder", f"data.source.root={root}", "data.num_classes=10",
            "data.val_size=20",
            "data.batch_size=32"]
    teacher = train(make_config(*data, "model=mlp_teacher", "run_name=folder_teacher", "trainer.max_epochs=2",
                                f"paths.output_dir={tmp_path}/teacher"))
    student = train(make_config(*data, "model=mlp_student", "teacher=mnist_mlp", "distill=kd", "run_name=folder_kd",
                                f"teacher.checkpoint={tmp_path}/teacher/checkpoints/last.ckpt",
                                f"paths.output_dir={tmp_path}/kd"))
    assert teacher["status"] == student["status"] == "done"
    assert teacher["config"]["dataset"] == "image_folder" and student["config"]["method"] == "DistillationModule"
    assert 0.0 <= student["test/acc"] <= 1.0 and teacher["test/acc"] > 0.2  # 10 classes: chance is 0.1


def test_train_val_test_folders_and_computed_statistics(tmp_path):
    for split, count in (("train", 4), ("val", 2), ("test", 2)):
        for cls, value in (("cat", 0), ("dog", 255)):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(np.full((4, 6, 3), value, np.uint8)).save(tmp_path / split / cls / f"{i}.png")
    source = ImageFolderSource(str(tmp_path))
    datamodule = ClassificationDataModule("mine", source, num_classes=2, mean=None, std=None, val_size=3)
    datamodule.setup("fit")
    assert source.classes == ["cat", "dog"]
    assert [len(datamodule.splits[s][1]) for s in ("train", "val", "test")] == [8, 4, 4]  # val/ used, not val_size
    # half the pixels 0, half 1 (in 0..1): mean 0.5, population std 0.5, per channel
    assert datamodule.transform.mean.tolist() == pytest.approx([0.5] * 3)
    assert datamodule.transform.std.tolist() == pytest.approx([0.5] * 3)


def test_channel_stats_by_hand():
    images = torch.tensor([[[[0, 51]]], [[[102, 255]]]], dtype=torch.uint8)  # values 0, .2, .4, 1
    mean, std = channel_stats(images, chunk=1)
    assert mean == pytest.approx([0.4]) and std == pytest.approx([((.16 + .04 + 0 + .36) / 4) ** 0.5])


def write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_image_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(DataNotFoundError, match="no folder"):
        ImageFolderSource(str(tmp_path / "absent")).load()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no images in"):
        ImageFolderSource(str(tmp_path / "empty")).load()
    grey = np.zeros((5, 5), np.uint8)
    write(tmp_path / "bad" / "a" / "0.png", grey)
    (tmp_path / "bad" / "a" / "1.png").write_bytes(b"not a png")
    with pytest.raises(ConfigError, match=r"cannot read image .*1\.png"):
        ImageFolderSource(str(tmp_path / "bad")).load()
    for split, cls in (("train", "a"), ("train", "b"), ("test", "a"), ("test", "c")):
        write(tmp_path / "mismatch" / split / cls / "0.png", grey)
    with pytest.raises(ConfigError, match=r"only in test: \['c'\], only in train: \['b'\]"):
        ImageFolderSource(str(tmp_path / "mismatch")).load()
    with pytest.raises(ConfigError, match=r"has 2 classes \(a, b\) but data.num_classes=10"):
        ImageFolderSource(str(tmp_path / "mismatch" / "train"), num_classes=10).load()
    write(tmp_path / "sizes" / "a" / "0.png", grey)
    write(tmp_path / "sizes" / "a" / "1.png", np.zeros((7, 5), np.uint8))
    with pytest.raises(ConfigError, match=r"images differ in shape.*image_size"):
        ImageFolderSource(str(tmp_path / "sizes")).load()
    resized = ImageFolderSource(str(tmp_path / "sizes"), image_size=[3, 4], channels=3, test_fraction=0.5).load()
    assert resized.x_train.shape == (1, 3, 3, 4)


def test_any_dataset_by_target_gets_uint8_images_and_indices():
    fake = {"_target_": "torchvision.datasets.FakeData", "size": 40, "image_size": [3, 8, 8], "num_classes": 4,
            "transform": {"_target_": "torchvision.transforms.ToTensor"}}
    source = instantiate({"_target_": "kd_lightning.data.DatasetSource", "train": fake,
                          "test": {**fake, "size": 8, "random_offset": 40}})
    datamodule = ClassificationDataModule("fake", source, num_classes=4, mean=[0.5] * 3, std=[0.5] * 3, val_size=8,
                                          batch_size=16)
    datamodule.setup("fit")
    images, labels, index = next(iter(datamodule.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (16, 3, 8, 8) and index.max() < 32
    # ToTensor's floats came back as the dataset's own uint8 pixels
    raw, _ = instantiate({k: v for k, v in fake.items() if k != "transform"})[0]
    assert torch.equal(source.load().x_train[0], torch.from_numpy(np.asarray(raw)).permute(2, 0, 1))


def test_dataset_source_rejects_normalised_floats():
    normalised = [(torch.full((1, 2, 2), -1.0), 0)]
    with pytest.raises(ConfigError, match=r"float images must lie in 0..1"):
        DatasetSource(normalised, normalised).load()


def test_hugging_face_dataset_from_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    images = [Image.fromarray(np.full((6, 6), 10 * i, np.uint8)) for i in range(6)]
    part = datasets.Dataset.from_dict({"img": images, "label": [0, 1, 2, 0, 1, 2]})
    datasets.DatasetDict({"train": part, "test": part.select([0, 1])}).save_to_disk(str(tmp_path / "hf"))
    arrays = HuggingFaceSource(str(tmp_path / "hf"), image_key="img").load()
    assert arrays.x_train.shape == (6, 1, 6, 6) and arrays.x_train[3, 0, 0, 0] == 30
    assert arrays.y_test.tolist() == [0, 1]
    with pytest.raises(ConfigError, match=r"columns \['img', 'label'\], not \['image'\]"):
        HuggingFaceSource(str(tmp_path / "hf")).load()
