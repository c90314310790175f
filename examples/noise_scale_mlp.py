"""The gradient noise scale of a small MLP on MNIST, after a little training (a few seconds on a CPU).

Run from the repository root:

    python examples/noise_scale_mlp.py

or, through the command line, with this file's `factory` (the current folder is searched for the module, so
the dotted name works from the repository root; a file path works from anywhere):

    batchlab noise-scale --model examples.noise_scale_mlp:factory
    batchlab noise-scale --model path/to/examples/noise_scale_mlp.py:factory

B_simple (McCandlish et al. 2018, arXiv:1812.06162) is measured at the weights after `STEPS` steps of SGD;
it usually grows as training goes on, which `main` shows by measuring it twice.
"""

from __future__ import annotations

import torch
from torch import nn

from batchlab.datasets import load_dataset
from batchlab.noise import format_noise_scale, noise_scale

TRAIN_EXAMPLES = 4096  # the first MNIST training images (MNIST ships inside batchlab)
BATCH = 64
STEPS = 150
SAMPLES = 1024  # examples the noise scale is measured on


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, seed: int = 0) -> None:
    """Plain SGD with momentum on random batches; the loss is a mean over the batch, as noise_scale needs."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(steps):
        idx = torch.randint(x.shape[0], (BATCH,), generator=gen)
        opt.zero_grad()
        loss_fn(model(x[idx]), y[idx]).backward()
        opt.step()


def data() -> tuple[torch.Tensor, torch.Tensor]:
    mnist = load_dataset("mnist", train_subset=TRAIN_EXAMPLES)  # flattened [N, 784], normalised
    return mnist.x_train, mnist.y_train


def factory(steps: int = STEPS):
    """(model, loss_fn, (x, y)) for `noise_scale` or `batchlab noise-scale --model ...:factory`."""
    torch.manual_seed(0)
    x, y = data()
    model = make_model()
    train(model, x, y, steps)
    return model, nn.CrossEntropyLoss(), (x, y)


def main() -> None:
    torch.manual_seed(0)
    x, y = data()
    model = make_model()
    loss_fn = nn.CrossEntropyLoss()
    done = 0
    for steps in (20, STEPS):
        train(model, x, y, steps - done, seed=steps)
        done = steps
        with torch.no_grad():
            accuracy = (model(x).argmax(1) == y).float().mean().item()
        ns = noise_scale(model, loss_fn, (x, y), samples=SAMPLES, seed=0)
        print(f"after {steps} steps of SGD (batch {BATCH}), training accuracy {accuracy:.1%}:")
        print(format_noise_scale(ns))
        print()


if __name__ == "__main__":
    main()
