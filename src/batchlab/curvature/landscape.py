"""Loss landscapes as arrays: the loss along the segment between two weight vectors (Goodfellow et al. 2015's linear
interpolation) and on a random plane through one, with filter-normalised directions (Li et al. 2018, "Visualizing
the Loss Landscape of Neural Nets", §4).

Every point of a line or grid is one copy of the weights, and the copies are evaluated together as the runs of a
stack (`engine.curvature.MeanLoss`: one vmapped forward pass per chunk of points), on a fixed seeded subset of the
data. The model's buffers (BatchNorm's running statistics) and frozen parameters are its own at every point.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..analysis.landscape import filter_normalised, plane, segment
from ..engine.curvature import losses_at
from ..noise.estimators import split_weights
from ..noise.measure import Data, collect_examples


def interpolation_losses(
    model: nn.Module,
    params_a: dict[str, torch.Tensor] | nn.Module,
    params_b: dict[str, torch.Tensor] | nn.Module,
    data: Data,
    alphas: Sequence[float],
    *,
    loss_fn: Callable | None = None,
    examples: int = 2048,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> np.ndarray:
    """[len(alphas)] the mean loss at (1 − α) θ_a + α θ_b for each α (0 is θ_a, 1 is θ_b; outside [0, 1]
    extrapolates), on a seeded subset of `examples` examples of `data`. `params_a`, `params_b`: {name: tensor} of
    `model`'s trainable parameters, or modules of the same architecture. `loss_fn` (a mean over the batch) defaults
    to cross-entropy for integer targets, squared error for float ones."""
    points = _Points(model, data, loss_fn, examples, device, seed)
    a, b = points.weights(params_a, "params_a"), points.weights(params_b, "params_b")
    return points.losses(segment(a, b), _coordinates(alphas, "alphas"))


def landscape_plane(
    model: nn.Module,
    params: dict[str, torch.Tensor] | nn.Module,
    data: Data,
    grid: Sequence[float] | tuple[Sequence[float], Sequence[float]],
    seed: int = 0,
    *,
    loss_fn: Callable | None = None,
    examples: int = 2048,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """[len(xs), len(ys)] the mean loss at θ + x d1 + y d2 over the grid (one sequence for both axes, or (xs, ys)),
    d1 and d2 random directions drawn from `seed` and filter-normalised as Li et al. 2018
    (`analysis.landscape.filter_normalised`), on a seeded subset of `examples` examples of `data`."""
    pair = isinstance(grid, tuple) and len(grid) == 2 and not np.isscalar(grid[0])
    xs, ys = (_coordinates(g, "grid") for g in (grid if pair else (grid, grid)))
    points = _Points(model, data, loss_fn, examples, device, seed)
    theta = points.weights(params, "params")
    gen = torch.Generator().manual_seed(seed)
    d1, d2 = filter_normalised(theta, gen), filter_normalised(theta, gen)
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    return points.losses(plane(theta, d1, d2), np.stack([gx.ravel(), gy.ravel()], 1)).reshape(len(xs), len(ys))


class _Points:
    """A model's copies at many weight vectors, evaluated as the runs of a stack on a fixed seeded subset."""

    def __init__(self, model, data, loss_fn, examples, device, seed):
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module (got {type(model).__name__})")
        x, y, _ = collect_examples(data, examples, seed)
        self.device = torch.device(device)
        self.params, frozen, buffers = split_weights(model, self.device)
        if not self.params:
            raise ValueError("the model has no parameters that require gradients")
        self.model, self.loss_fn, self.fixed = model, loss_fn, {**frozen, **buffers}
        self.x, self.y = x.to(self.device), y.to(self.device)
        self.task = "regression" if y.is_floating_point() else "classification"

    def weights(self, given, what: str) -> dict[str, torch.Tensor]:
        """{name: tensor} of the model's trainable parameters, from a dict or a module of the same architecture."""
        if isinstance(given, nn.Module):
            given = {k: p for k, p in given.named_parameters() if k in self.params}
        if not isinstance(given, dict) or set(given) != set(self.params):
            missing = sorted(set(self.params) - set(given)) if isinstance(given, dict) else []
            raise ValueError(f"{what} must hold the model's trainable parameters by name (missing {missing[:3]})")
        for k, v in given.items():
            if tuple(v.shape) != tuple(self.params[k].shape):
                raise ValueError(f"{what}[{k!r}] has shape {list(v.shape)}, the model's {list(self.params[k].shape)}")
        ref = next(iter(self.params.values()))
        return {k: given[k].detach().to(ref.device, ref.dtype) for k in self.params}

    def losses(self, at: Callable, coords: np.ndarray) -> np.ndarray:
        ref = next(iter(self.params.values()))
        t = torch.as_tensor(coords, device=ref.device, dtype=ref.dtype)
        found = losses_at(self.model, self.fixed, self.x, self.y, at, t, task=self.task, loss_fn=self.loss_fn,
                          eval_mode=False)  # fmt: skip
        return found.cpu().numpy()


def _coordinates(values, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0 or not np.isfinite(arr).all():
        raise ValueError(f"{what} must be a non-empty sequence of finite numbers")
    return arr
