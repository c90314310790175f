"""Data sets as tensors already on the training device: MNIST, Fashion-MNIST, regression."""

from .idx import DataError, load_idx_dir
from .registry import DATASETS, Dataset, load_dataset
from .synthetic import regression_problem

__all__ = ["DATASETS", "DataError", "Dataset", "load_dataset", "load_idx_dir", "regression_problem"]
