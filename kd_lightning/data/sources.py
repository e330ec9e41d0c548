"""Where images come from. Every source returns the whole dataset as uint8 tensors (N, C, H, W) and int64 labels."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

import numpy as np
import torch

from kd_lightning.errors import ConfigError, DataNotFoundError

log = logging.getLogger(__name__)


@dataclass
class Arrays:
    """A dataset's official train and test parts (and a validation part, if the dataset has its own)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None


def _as_nchw_uint8(images) -> torch.Tensor:
    images = torch.as_tensor(np.asarray(images))
    if images.dtype != torch.uint8:
        raise ConfigError(f"images must be uint8 pixels in 0..255, got dtype {images.dtype}")
    if images.ndim == 3:  # N, H, W grey
        return images.unsqueeze(1).contiguous()
    if images.ndim == 4 and images.shape[-1] in (1, 3):  # N, H, W, C
        return images.permute(0, 3, 1, 2).contiguous()
    raise ConfigError(f"expected images shaped (N, H, W) or (N, H, W, C), got {tuple(images.shape)}")


def _as_labels(labels) -> torch.Tensor:
    return torch.as_tensor(np.asarray(labels), dtype=torch.long).reshape(-1)


# dataset name → (torchvision class, its folder under root, image shape)
DATASETS = {
    "mnist": ("MNIST", "MNIST/raw", (1, 28, 28)),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw", (1, 28, 28)),
    "cifar10": ("CIFAR10", "cifar-10-batches-py", (3, 32, 32)),
    "cifar100": ("CIFAR100", "cifar-100-python", (3, 32, 32)),  # torchvision's targets are the 100 fine labels
}


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; accepted: {', '.join(DATASETS)}")


# Datasets that ship inside the package (see data/embedded/README.md: licence, checksums), used when torchvision
# can neither find nor download them: the README's main job then runs offline.
EMBEDDED_DIR = Path(__file__).parent / "embedded"
EMBEDDED = {"mnist": ("mnist.npz", "094b831e432331f1f6d6829ab9bfff4551410a81e1f816c9cce482d3e9b3ba57")}


def embedded_copy(name: str) -> Path | None:
    """The packaged copy of dataset ``name``, checked against its SHA-256, or None if the package ships none."""
    if name not in EMBEDDED:
        return None
    filename, expected = EMBEDDED[name]
    path = EMBEDDED_DIR / filename
    if not path.is_file():
        return None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected:
        raise DataNotFoundError(f"the embedded {name} copy {path} is damaged (SHA-256 {digest}, expected {expected}): "
                                f"reinstall kd_lightning")
    return path


class TorchvisionSource:
    """A torchvision dataset (``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``) under ``root``, downloaded if
    absent.

    If it can be neither found nor downloaded and the package ships a copy (MNIST), that copy is used, with one
    log line saying so.
    """

    def __init__(self, name: str, root: str, download: bool = True):
        _check_name(name)
        self.name, self.root, self.download = name, Path(root), download

    def prepare(self) -> None:
        """Download once (Lightning calls this on one process before ``setup``); the decoded arrays stay cached."""
        self.load()

    def load(self) -> Arrays:
        return _load_torchvision_or_embedded(self.name, self.root.resolve(), self.download)


def _torchvision_datasets(name: str, root: Path, download: bool):
    import torchvision

    class_name, folder, _ = DATASETS[name]
    dataset_cls = getattr(torchvision.datasets, class_name)
    printed = io.StringIO()  # torchvision prints each mirror it tries: shown on success, summarised on failure
    try:
        with contextlib.redirect_stdout(printed):
            datasets = (
                dataset_cls(str(root), train=True, download=download),
                dataset_cls(str(root), train=False, download=download),
            )
        print(printed.getvalue(), end="")
        return datasets
    except (RuntimeError, OSError, URLError) as err:
        where = (root / folder).resolve()
        raise DataNotFoundError(
            f"{name} is not in {where} and could not be downloaded ({type(err).__name__}: {err}).\n"
            f"Provide it in one of these ways:\n"
            f"  - run once on a machine with internet access (torchvision downloads it into {root.resolve()}),\n"
            f"  - copy torchvision's files for {name} into {where},\n"
            f"  - use a Keras-style .npz (x_train, y_train, x_test, y_test): "
            f"data/source=npz data.source.path=/path/to/{name}.npz"
        ) from err


@functools.lru_cache(maxsize=2)  # a multirun's jobs try the download once
def _load_torchvision_or_embedded(name: str, root: Path, download: bool) -> Arrays:
    try:
        return _load_torchvision(name, root, download)
    except DataNotFoundError as err:
        embedded = embedded_copy(name)
        if embedded is None:
            raise
        cause = err.__cause__
        log.warning("%s: not in %s and no download possible (%s); using the copy shipped with kd_lightning: %s",
                    name, root, type(cause).__name__ if cause else "not found", embedded)
        return _load_npz(embedded, embedded.stat().st_mtime_ns)


# Decoded arrays are cached per process, keyed by what was read: the jobs of a multirun read their dataset
# from disk once. Nothing modifies them in place.
@functools.lru_cache(maxsize=2)
def _load_torchvision(name: str, root: Path, download: bool) -> Arrays:
    train, test = _torchvision_datasets(name, root, download)
    return Arrays(_as_nchw_uint8(train.data), _as_labels(train.targets), _as_nchw_uint8(test.data), _as_labels(test.targets))


class NpzSource:
    """A Keras-style ``.npz`` file with ``x_train, y_train, x_test, y_test`` (uint8 HWC or HW images)."""

    def __init__(self, path: str):
        self.path = Path(path)

    def load(self) -> Arrays:
        if not self.path.is_file():
            raise DataNotFoundError(
                f"no .npz file at {self.path.resolve()}. Set data.source.path to a Keras-style .npz "
                f"(arrays x_train, y_train, x_test, y_test), or use data/source=torchvision to download."
            )
        return _load_npz(self.path.resolve(), self.path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _load_npz(path: Path, mtime_ns: int) -> Arrays:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(arrays.files)
            if missing:
                raise ConfigError(f"{path} lacks arrays {sorted(missing)}; it has {sorted(arrays.files)}")
            return Arrays(
                _as_nchw_uint8(arrays["x_train"]),
                _as_labels(arrays["y_train"]),
                _as_nchw_uint8(arrays["x_test"]),
                _as_labels(arrays["y_test"]),
            )
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # truncated or not an .npz
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(
            f"cannot read {path} as a Keras-style .npz ({type(err).__name__}: {err}): the file is damaged or "
            f"truncated; copy it again, or point data.source.path at a good one"
        ) from None


class SyntheticSource:
    """Images shaped like dataset ``name``'s, random but with a class-dependent pattern: learnable, tiny (for tests)."""

    def __init__(self, name: str, num_classes: int = 10, num_train: int = 6000, num_test: int = 500, seed: int = 0):
        _check_name(name)
        self.image_shape, self.num_classes = DATASETS[name][2], num_classes
        self.num_train, self.num_test, self.seed = num_train, num_test, seed

    def _make(self, n: int, generator: torch.Generator, patterns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(self.num_classes, (n,), generator=generator)
        noise = torch.randn((n, *self.image_shape), generator=generator)
        images = 128 + 50 * patterns[labels] + 30 * noise
        return images.clamp(0, 255).to(torch.uint8), labels

    def load(self) -> Arrays:
        generator = torch.Generator().manual_seed(self.seed)
        patterns = torch.randn((self.num_classes, *self.image_shape), generator=generator)
        x_train, y_train = self._make(self.num_train, generator, patterns)
        x_test, y_test = self._make(self.num_test, generator, patterns)
        return Arrays(x_train, y_train, x_test, y_test)

