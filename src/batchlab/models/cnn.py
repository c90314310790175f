"""The small MNIST CNN of the equivalence studies, with or without BatchNorm.

Conv(1->32, 3x3, pad 1)-ReLU-MaxPool(2)-Conv(32->64, 3x3, pad 1)-ReLU-MaxPool(2)-Flatten-
Linear(3136->128)-ReLU-Linear(128->10); `batchnorm=True` adds BatchNorm2d(32), BatchNorm2d(64) and
BatchNorm1d(128), each before its ReLU.
"""

from __future__ import annotations

from torch import nn

from .traits import ModelTraits


class CNN(nn.Module):
    # images in; about 32x the activations per image of an MLP layer of 1024 units (32 channels x 28 x 28 after
    # the first convolution): evaluation chunks 32x smaller (4 float64 CNN runs peaked at 19.7 GB with the
    # MLP's), and a training step's estimate 64x the MLP's
    TRAITS = ModelTraits(images=True, step_activations=64, eval_activations=32)

    def __init__(self, batchnorm: bool = False, num_classes: int = 10):
        super().__init__()

        def norm(kind, n):
            return [kind(n)] if batchnorm else []

        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            *norm(nn.BatchNorm2d, 32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            *norm(nn.BatchNorm2d, 64),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, 128),
            *norm(nn.BatchNorm1d, 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )

    def forward(self, x):
        if x.dim() == 2:  # flattened images
            x = x.view(-1, 1, 28, 28)
        return self.classifier(self.features(x))
