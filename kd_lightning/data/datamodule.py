"""One LightningDataModule for image classification, shared by every training scheme."""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as L
import torch
from torch.utils.data import DataLoader, Dataset

from kd_lightning.data.custom import channel_stats
from kd_lightning.data.loaders import ResidentBatches
from kd_lightning.data.sources import Arrays
from kd_lightning.data.transforms import BatchTransform
from kd_lightning.errors import ConfigError
from kd_lightning.runs.resume import ResumableLoader

SPLITS = ("train", "val", "test")


class IndexedTensorDataset(Dataset):
    """``(image uint8, label, index)`` per sample; the index keys the teacher-output cache."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i], i


class ClassificationDataModule(L.LightningDataModule):
    """Train/val/test splits of an image-classification source, batches of ``(x, y, index)``.

    The validation set is a seeded random ``val_size`` images of the official training set; the test set
    is the official one. Batches are handed over as loaded (images uint8); :attr:`transform` is the public
    :class:`BatchTransform` (normalisation, and augmentation of training batches) that the training module applies
    where it decides: on the device, after the transfer, or inside its captured step. ``resident=True`` keeps each
    split on the training device and slices batches there (:class:`ResidentBatches`) instead of a DataLoader.
    """

    def __init__(
        self,
        name: str,
        source,
        num_classes: int,
        mean: Sequence[float] | None,
        std: Sequence[float] | None,
        val_size: int | float = 5000,
        split_seed: int = 0,
        seed: int = 0,
        batch_size: int = 128,
        eval_batch_size: int = 1024,
        num_workers: int = 0,
        resident: bool = False,
        crop_padding: int = 0,
        hflip: bool = False,
        channels_last: bool = False,
        max_train_samples: int | None = None,
    ):
        super().__init__()
        self.name, self.source, self.num_classes = name, source, num_classes
        self.val_size, self.split_seed, self.seed = val_size, split_seed, seed
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.resident, self.max_train_samples = resident, max_train_samples
        self._transform_args = (crop_padding, hflip, channels_last)
        # mean/std null: computed from the training split in setup (kd_lightning.data.custom.channel_stats)
        self.transform = BatchTransform(mean, std, *self._transform_args) if mean is not None and std is not None else None
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def prepare_data(self) -> None:
        prepare = getattr(self.source, "prepare", None)
        if prepare is not None:
            prepare()

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = self._split(self.source.load())
        if self.transform is None:
            self.transform = BatchTransform(*channel_stats(self.splits["train"][0]), *self._transform_args)

    def _split(self, arrays: Arrays) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        for name, images, labels in (("train", arrays.x_train, arrays.y_train), ("test", arrays.x_test, arrays.y_test),
                                     ("val", getattr(arrays, "x_val", None), getattr(arrays, "y_val", None))):
            if labels is not None and images is not None and len(images) != len(labels):
                raise ConfigError(
                    f"{self.name} {name} split has {len(images)} images but {len(labels)} labels: expected one "
                    f"label per image (the data file is damaged or its arrays are mismatched)"
                )
        for name, labels in (("train", arrays.y_train), ("test", arrays.y_test), ("val", arrays.y_val)):
            if labels is None:
                continue
            if labels.min() < 0 or labels.max() >= self.num_classes:
                raise ConfigError(
                    f"{self.name} {name} labels span {int(labels.min())}..{int(labels.max())} "
                    f"but data.num_classes={self.num_classes}"
                )
        n = len(arrays.y_train)
        if arrays.x_val is not None:  # the dataset's own validation split
            train = torch.arange(n)[: self.max_train_samples]
            return {
                "train": (arrays.x_train[train], arrays.y_train[train]),
                "val": (arrays.x_val, arrays.y_val),
                "test": (arrays.x_test, arrays.y_test),
            }
        if isinstance(self.val_size, float) and 0 < self.val_size < 1:  # a fraction of the training split
            self.val_size = max(1, round(self.val_size * n))
        if not 0 < self.val_size < n:
            raise ConfigError(f"data.val_size={self.val_size} must be between 1 and {n - 1} (training set size {n})")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed))
        val, train = order[: self.val_size], order[self.val_size :]
        if self.max_train_samples is not None:
            train = train[: self.max_train_samples]
        return {
            "train": (arrays.x_train[train], arrays.y_train[train]),
            "val": (arrays.x_train[val], arrays.y_train[val]),
            "test": (arrays.x_test, arrays.y_test),
        }

    @property
    def augments(self) -> bool:
        """Whether a training sample's input changes from epoch to epoch."""
        crop_padding, hflip, _ = self._transform_args
        return crop_padding > 0 or hflip

    @property
    def num_train_samples(self) -> int:
        return len(self.splits["train"][1])

    def _loader(self, split: str):
        images, labels = self.splits[split]
        train = split == "train"
        batch_size = self.batch_size if train else self.eval_batch_size
        if self.resident:
            trainer = self.trainer
            device = trainer.strategy.root_device if trainer is not None else images.device
            rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
            return ResidentBatches(
                images.to(device), labels.to(device), batch_size, shuffle=train, seed=self.seed, rank=rank, world_size=world
            )
        if train and (self.trainer is None or self.trainer.world_size == 1):
            # the epoch's order from seed + epoch, its position saved in checkpoints: exact resume (under DDP,
            # Lightning's DistributedSampler orders by seed + epoch itself)
            return ResumableLoader(IndexedTensorDataset(images, labels), batch_size=batch_size, seed=self.seed,
                                   num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                                   pin_memory=torch.cuda.is_available())
        return DataLoader(
            IndexedTensorDataset(images, labels),
            batch_size=batch_size,
            shuffle=train,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self):
        return self._loader("train")

    def val_dataloader(self):
        return self._loader("val")

    def test_dataloader(self):
        return self._loader("test")
