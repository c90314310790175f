"""Device-resident data for a run, and each run's own data order.

Data is loaded once per process and device and kept there; batches are gathered on the device by
index (airbench style), so there is no DataLoader and no host work inside the step loop.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from ..datasets import Dataset, load_dataset
from ..models import build_model, model_traits
from .spec import RunSpec


def data_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The permutation of the n training examples that run `seed` uses in `epoch` (CPU, int64).

    A pure function of (seed, epoch): a run's batches never depend on its group, and training can
    resume at any epoch.
    """
    state = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(2, dtype=np.uint64)
    g = torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))
    return torch.randperm(n, generator=g)


def compute_dtype(precision: str) -> torch.dtype:
    return torch.float64 if precision == "float64" else torch.float32


@functools.lru_cache(maxsize=8)
def _load(name, device, dtype, train_subset, test_subset, normalize, flatten, data_dir, regression) -> Dataset:
    n, d, noise, seed = regression
    return load_dataset(
        name,
        device=device,
        dtype=dtype,
        train_subset=train_subset,
        test_subset=test_subset,
        normalize=normalize,
        flatten=flatten,
        data_dir=data_dir,
        seed=seed,
        n=n,
        d=d,
        noise=noise,
    )


def template_model(spec: RunSpec, data: Dataset) -> nn.Module:
    """The run's architecture sized to its data, as a template (the engine initialises the weights)."""
    return build_model(
        spec.model,
        input_dim=data.input_dim,
        num_outputs=data.num_classes or 1,
        widths=spec.widths,
        activation=spec.activation,
        bias=spec.bias,
    )


def load_for(spec: RunSpec, device: torch.device, data_dir: str | None = None) -> Dataset:
    """The dataset a run trains on, on `device`, in the run's compute dtype (cached per process)."""
    flatten = not model_traits(spec.model).images
    return _load(
        spec.dataset,
        str(device),
        compute_dtype(spec.precision),
        spec.train_subset,
        spec.test_subset,
        spec.normalize,
        flatten,
        data_dir,
        tuple(spec.regression),
    )
