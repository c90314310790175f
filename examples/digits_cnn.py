"""Your own model and data in batchlab: a small CNN on scikit-learn's handwritten digits (8x8 images, 1797 of
them, shipped inside scikit-learn: nothing is downloaded).

Run from the repository root (the current folder is searched first, so the dotted names work):

    batchlab run batch-size-sweep --model examples.digits_cnn:model --data examples.digits_cnn:data

with a factory's keyword arguments:

    batchlab run batch-size-sweep --model examples.digits_cnn:model --model-arg channels=16 \\
        --data examples.digits_cnn:data --data-arg test_fraction=0.25

`model()` returns an `nn.Module`; `data()` returns (x_train, y_train, x_test, y_test) tensors. The targets are
integer classes, so the loss is cross-entropy (float targets would get mean squared error; `--loss
package.module:fn` names another). batchlab trains every seed, batch size and lr of a study as stacked copies
of this module, each with its own initialisation (its seed) and data order.
"""

from __future__ import annotations

import torch
from torch import nn


def model(channels: int = 8, hidden: int = 32) -> nn.Module:
    """Two 3x3 convolutions with batch norm (8x8 -> 4x4 -> 2x2) and a small classifier, 3,706 parameters with the
    defaults. Batch norm lets plain SGD at the studies' lr 0.01 train it within the quick profile's 45 epochs;
    batchlab keeps its running statistics per run."""
    return nn.Sequential(
        nn.Conv2d(1, channels, 3, padding=1),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(channels, 2 * channels, 3, padding=1),
        nn.BatchNorm2d(2 * channels),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * channels * 4, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 10),
    )


def data(test_fraction: float = 0.2, seed: int = 0):
    """scikit-learn's digits as [N, 1, 8, 8] float32 pixels in [0, 1] and int64 labels, split by a fixed
    permutation (the same split every call): 1438 training and 359 test images by default."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = round(test_fraction * len(x))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]
