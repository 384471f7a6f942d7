"""Data sets by name: the generated ``shapes`` set and real ones (CIFAR, STL-10, ImageNet, folders)."""

from sslbook.data.base import DataError, DataInfo, TensorImageDataset
from sslbook.data.registry import DATA_ROOT, available, load_dataset
from sslbook.data.subsets import LabelledStream, hide_labels, labelled_subset

__all__ = [
    "DATA_ROOT",
    "DataError",
    "DataInfo",
    "LabelledStream",
    "TensorImageDataset",
    "available",
    "hide_labels",
    "labelled_subset",
    "load_dataset",
]
