"""Synthetic linear regression for the gradient-descent-variants studies: a convex
problem whose optimum and curvature are known in closed form."""

from __future__ import annotations

import torch

from .idx import DataError


def regression_problem(
    seed: int, n: int, d: int, noise: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """X ~ N(0,1) [n, d], w* ~ N(0,1) [d], y = X w* + noise·N(0,1) [n, 1]; a test set of n more.

    Drawn in float64 on the CPU from a generator seeded with `seed`, so the problem is the same
    on every device and dtype; the true weights are returned so studies can measure the distance
    to the optimum and draw exact loss contours.
    Returns (X, y, w_star, X_test, y_test).
    """
    if n < 1 or d < 1 or noise < 0:
        raise DataError(f"regression: need n >= 1, d >= 1, noise >= 0 (got n={n}, d={d}, noise={noise})")
    gen = torch.Generator().manual_seed(seed)

    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    w_star = draw(d)
    x_train, x_test = draw(n, d), draw(n, d)
    y_train = (x_train @ w_star).unsqueeze(1) + noise * draw(n, 1)
    y_test = (x_test @ w_star).unsqueeze(1) + noise * draw(n, 1)
    return x_train, y_train, w_star, x_test, y_test
