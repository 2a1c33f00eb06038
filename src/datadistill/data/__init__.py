"""Datasets: the registry, `DatasetSpec`, `RealData` and the registered loaders."""

from . import mnist  # noqa: F401  (registers mnist, fashion_mnist, digits, procedural)
from . import folders, vision  # noqa: F401  (register cifar10, cifar100, svhn; tinyimagenet, imagefolder)
from .registry import (DATASETS, DatasetDownloadError, DatasetEntry, DatasetMissingError, DatasetOptionError,
                       default_root, load_dataset, register_dataset)
from .spec import DataRef, DatasetSpec, LoadedDataset, RealData
from .zca import ZCA, ZCAError, apply_zca, fit_zca, match_whitening, whiten_dataset

__all__ = [
    "DATASETS", "DatasetEntry", "DatasetMissingError", "DatasetDownloadError", "DatasetOptionError", "DataRef", "DatasetSpec",
    "LoadedDataset", "RealData", "default_root", "load_dataset", "register_dataset",
    "ZCA", "ZCAError", "apply_zca", "fit_zca", "match_whitening", "whiten_dataset",
]
