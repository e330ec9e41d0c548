"""Data: sources (torchvision, Keras-style .npz, synthetic, image folder, any Dataset, Hugging Face), the datamodule, batch transforms and loaders."""

from kd_lightning.data.custom import DatasetSource, HuggingFaceSource, ImageFolderSource
from kd_lightning.data.datamodule import ClassificationDataModule, IndexedTensorDataset
from kd_lightning.data.loaders import ResidentBatches
from kd_lightning.data.sources import Arrays, NpzSource, SyntheticSource, TorchvisionSource
from kd_lightning.data.transforms import BatchTransform

__all__ = [
    "Arrays",
    "BatchTransform",
    "ClassificationDataModule",
    "DatasetSource",
    "HuggingFaceSource",
    "ImageFolderSource",
    "IndexedTensorDataset",
    "NpzSource",
    "ResidentBatches",
    "SyntheticSource",
    "TorchvisionSource",
]
