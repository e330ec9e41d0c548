"""Data: sources (torchvision, Keras-style .npz, synthetic), the datamodule, batch transforms and loaders."""

from kd_lightning.data.datamodule import ClassificationDataModule, IndexedTensorDataset
from kd_lightning.data.loaders import ResidentBatches
from kd_lightning.data.sources import Arrays, NpzSource, SyntheticSource, TorchvisionSource
from kd_lightning.data.transforms import BatchTransform

__all__ = [
    "Arrays",
    "BatchTransform",
    "ClassificationDataModule",
    "IndexedTensorDataset",
    "NpzSource",
    "ResidentBatches",
    "SyntheticSource",
    "TorchvisionSource",
]
