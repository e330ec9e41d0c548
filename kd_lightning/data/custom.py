"""Your own data as a source: an image folder, any ``torch.utils.data.Dataset``, a Hugging Face dataset.

Like the built-in sources, each decodes the whole dataset once into uint8 (N, C, H, W) tensors
(:class:`~kd_lightning.data.sources.Arrays`), so the datamodule, the resident loader and the teacher cache
(which keys on the sample index the datamodule adds) work unchanged. Meant for datasets that fit in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from kd_lightning.data.sources import Arrays
from kd_lightning.errors import ConfigError, DataNotFoundError

SPLIT_FOLDERS = ("train", "val", "test")


def _to_chw_uint8(image, where: str) -> torch.Tensor:
    """A PIL image, HWC/HW array or CHW/HW tensor (uint8 0..255 or float 0..1) → uint8 (C, H, W)."""
    if hasattr(image, "getbands"):  # PIL
        image = np.asarray(image)
    if isinstance(image, np.ndarray):  # numpy/PIL convention: (H, W) or (H, W, C)
        tensor = torch.from_numpy(np.ascontiguousarray(image))
        tensor = tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    elif isinstance(image, torch.Tensor):  # torchvision convention: (C, H, W) or (H, W)
        tensor = image.unsqueeze(0) if image.ndim == 2 else image
    else:
        raise ConfigError(f"{where}: expected a PIL image, array or tensor, got {type(image).__name__}")
    if tensor.ndim != 3:
        raise ConfigError(f"{where}: expected an image shaped (C, H, W) or (H, W), got {tuple(tensor.shape)}")
    if tensor.is_floating_point():
        if tensor.min() < 0 or tensor.max() > 1:
            raise ConfigError(f"{where}: float images must lie in 0..1 (ToTensor), got {float(tensor.min()):.3g}.."
                              f"{float(tensor.max()):.3g}; drop Normalize from the dataset's transform")
        tensor = (tensor * 255).round()
    return tensor.to(torch.uint8).contiguous()


def _stack(images: list[torch.Tensor], names: list[str], what: str) -> torch.Tensor:
    shapes = {}
    for image, name in zip(images, names):
        shapes.setdefault(tuple(image.shape), name)
    if len(shapes) > 1:
        examples = "; ".join(f"{name}: {'×'.join(map(str, shape))}" for shape, name in list(shapes.items())[:3])
        raise ConfigError(f"{what}: images differ in shape (C×H×W) ({examples}): set data.source.image_size=[H, W] "
                          f"(and data.source.channels) to resize/convert them all")
    return torch.stack(images)


class ImageFolderSource:
    """Images in class subfolders, torchvision's ImageFolder layout, decoded with PIL.

    ``root/train/<class>/*.png`` (+ ``root/test/``, optionally ``root/val/``), or just ``root/<class>/*`` split
    with a seeded ``test_fraction``. Classes are the sorted subfolder names (label 0 is the first), and every
    split must have the same ones. ``image_size=[H, W]`` resizes (bilinear), ``channels`` 1 or 3 converts
    (grey "L" / "RGB"); otherwise every image must already share one shape and mode.
    Without ``val/`` the datamodule draws ``data.val_size`` validation images from the training split.
    """

    def __init__(self, root: str, num_classes: int | None = None, image_size: Sequence[int] | None = None,
                 channels: int | None = None, test_fraction: float = 0.2, split_seed: int = 0,
                 extensions: Sequence[str] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")):
        self.root, self.num_classes = Path(root), num_classes
        self.image_size = tuple(image_size) if image_size is not None else None
        if channels not in (None, 1, 3):
            raise ConfigError(f"data.source.channels={channels}: accepted are 1 (grey), 3 (RGB) or null (as stored)")
        self.channels, self.test_fraction, self.split_seed = channels, test_fraction, split_seed
        self.extensions = tuple(e.lower() for e in extensions)
        self.classes: list[str] = []

    def _read_split(self, folder: Path) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        from torchvision.datasets.folder import find_classes, make_dataset

        try:
            classes, class_to_idx = find_classes(str(folder))
            samples = make_dataset(str(folder), class_to_idx, extensions=self.extensions)
        except FileNotFoundError as err:
            raise ConfigError(f"no images in {folder}: expected {folder}/<class name>/<image> with an extension in "
                              f"{list(self.extensions)} ({err})") from err
        images = [self._decode(Path(path)) for path, _ in samples]
        stacked = _stack(images, [path for path, _ in samples], str(folder))
        return classes, stacked, torch.tensor([label for _, label in samples], dtype=torch.long)

    def _decode(self, path: Path) -> torch.Tensor:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                if self.channels is not None:
                    image = image.convert("L" if self.channels == 1 else "RGB")
                elif image.mode not in ("L", "RGB"):
                    image = image.convert("RGB")
                if self.image_size is not None:
                    image = image.resize(self.image_size[::-1], Image.Resampling.BILINEAR)  # PIL takes (W, H)
                return _to_chw_uint8(image, str(path))
        except (UnidentifiedImageError, OSError) as err:
            raise ConfigError(f"cannot read image {path}: {err}. Remove or replace it.") from err

    def load(self) -> Arrays:
        if not self.root.is_dir():
            raise DataNotFoundError(f"no folder {self.root.resolve()}: set data.source.root to a folder of class "
                                    f"subfolders (or with train/ and test/ holding them)")
        present = [name for name in SPLIT_FOLDERS if (self.root / name).is_dir()]
        if present:
            if "train" not in present:
                raise ConfigError(f"{self.root} has {present} but no train/ folder")
            splits = {name: self._read_split(self.root / name) for name in present}
        else:
            splits = {"train": self._read_split(self.root)}
        self.classes = splits["train"][0]
        for name, (classes, _, _) in splits.items():
            if classes != self.classes:
                only_here = sorted(set(classes) - set(self.classes))
                only_train = sorted(set(self.classes) - set(classes))
                raise ConfigError(f"{self.root / name} has other classes than {self.root / 'train'}: only in {name}: "
                                  f"{only_here}, only in train: {only_train}; every split needs the same class folders")
        if self.num_classes is not None and len(self.classes) != self.num_classes:
            raise ConfigError(f"{self.root} has {len(self.classes)} classes ({', '.join(self.classes[:10])}"
                              f"{', ...' if len(self.classes) > 10 else ''}) but data.num_classes={self.num_classes}")
        _, x_train, y_train = splits["train"]
        if "test" in splits:
            _, x_test, y_test = splits["test"]
        else:
            x_train, y_train, x_test, y_test = self._split_off_test(x_train, y_train)
        x_val, y_val = splits["val"][1:] if "val" in splits else (None, None)
        return Arrays(x_train, y_train, x_test, y_test, x_val, y_val)

    def _split_off_test(self, x: torch.Tensor, y: torch.Tensor):
        n_test = round(self.test_fraction * len(y))
        if not 0 < n_test < len(y):
            raise ConfigError(f"data.source.test_fraction={self.test_fraction} of {len(y)} images leaves no test or "
                              f"no training images; or add a test/ folder")
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(self.split_seed))
        test, train = order[:n_test], order[n_test:]
        return x[train], y[train], x[test], y[test]


def _dataset_arrays(dataset, what: str, image_key: str = "image", label_key: str = "label"):
    """Every sample of a map-style dataset → (uint8 images, labels)."""
    if dataset is None:
        return None, None
    try:
        size = len(dataset)
    except TypeError as err:
        raise ConfigError(f"{what} ({type(dataset).__name__}) must have a length (a map-style Dataset)") from err
    if size == 0:
        raise ConfigError(f"{what} ({type(dataset).__name__}) is empty")
    images, labels = [], []
    for i in range(size):
        sample = dataset[i]
        if isinstance(sample, dict):
            image, label = sample[image_key], sample[label_key]
        elif isinstance(sample, (tuple, list)) and len(sample) >= 2:
            image, label = sample[0], sample[1]
        else:
            raise ConfigError(f"{what}[{i}] is a {type(sample).__name__}: expected (image, label) or a dict with "
                              f"{image_key!r} and {label_key!r}")
        images.append(_to_chw_uint8(image, f"{what}[{i}]"))
        labels.append(int(label))
    return _stack(images, [f"{what}[{i}]" for i in range(size)], what), torch.tensor(labels, dtype=torch.long)


class DatasetSource:
    """Any map-style ``torch.utils.data.Dataset`` returning ``(image, label)`` (or a dict), given by ``_target_``.

    ``train``, ``test`` (and optionally ``val``) are datasets, e.g. from the config::

        source:
          _target_: kd_lightning.data.DatasetSource
          train: {_target_: torchvision.datasets.FashionMNIST, root: data, train: true}
          test: {_target_: torchvision.datasets.FashionMNIST, root: data, train: false}

    Images may be PIL images, HWC arrays or CHW tensors (uint8, or float 0..1 as ``ToTensor`` gives: no
    ``Normalize``: the datamodule normalises). The datamodule adds the sample index itself.
    """

    def __init__(self, train, test, val=None, image_key: str = "image", label_key: str = "label"):
        self.train, self.test, self.val = train, test, val
        self.image_key, self.label_key = image_key, label_key

    def load(self) -> Arrays:
        keys = {"image_key": self.image_key, "label_key": self.label_key}
        x_train, y_train = _dataset_arrays(self.train, "data.source.train", **keys)
        x_test, y_test = _dataset_arrays(self.test, "data.source.test", **keys)
        x_val, y_val = _dataset_arrays(self.val, "data.source.val", **keys)
        return Arrays(x_train, y_train, x_test, y_test, x_val, y_val)


class HuggingFaceSource:
    """A Hugging Face ``datasets`` dataset: ``load_dataset(path, name, **kwargs)``, or ``load_from_disk(path)``
    when ``path`` is a folder written by ``save_to_disk``. ``image_key``/``label_key`` name the columns
    (``img``/``label`` for CIFAR-10 on the Hub); ``val_split`` may be null (the datamodule then draws one)."""

    def __init__(self, path: str, name: str | None = None, train_split: str = "train", test_split: str = "test",
                 val_split: str | None = None, image_key: str = "image", label_key: str = "label", **kwargs):
        self.path, self.name, self.kwargs = path, name, kwargs
        self.splits = {"train": train_split, "test": test_split, "val": val_split}
        self.image_key, self.label_key = image_key, label_key

    def _load(self):
        try:
            import datasets
        except ImportError as err:
            raise ConfigError("data/source=huggingface needs the datasets package: pip install "
                              "'kd_lightning[hf]'") from err
        if (Path(self.path) / "dataset_dict.json").is_file():
            return datasets.load_from_disk(self.path)
        return datasets.load_dataset(self.path, self.name, **self.kwargs)

    def load(self) -> Arrays:
        dataset = self._load()
        arrays = {}
        for role, split in self.splits.items():
            if split is None:
                arrays[role] = (None, None)
                continue
            if split not in dataset:
                raise ConfigError(f"{self.path} has splits {list(dataset)}, not {split!r} (data.source.{role}_split)")
            part = dataset[split]
            missing = {self.image_key, self.label_key} - set(part.column_names)
            if missing:
                raise ConfigError(f"{self.path}[{split}] has columns {part.column_names}, not {sorted(missing)}: set "
                                  f"data.source.image_key / label_key")
            arrays[role] = _dataset_arrays(part, f"{self.path}[{split}]", self.image_key, self.label_key)
        return Arrays(*arrays["train"], *arrays["test"], *arrays["val"])


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 (N, C, H, W) images scaled to 0..1 (population std), in chunks."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk].to(torch.float64) / 255.0
        total += part.sum(dim=(0, 2, 3))
        squares += part.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt()
    return mean.tolist(), std.clamp_min(1e-6).tolist()
