"""Keskar et al. 2017's ε-sharpness (arXiv:1609.04836, metric 2.1): how much the loss can rise inside a small box
around the weights, relative to the loss,

    φ(x, ε) = 100 (max_{y ∈ C_ε} f(x + y) − f(x)) / (1 + f(x)),   C_ε = {y : |y_i| <= ε (|x_i| + 1)},

in the full parameter space (their A = I). The inner maximum is taken, as they do, by L-BFGS-B with the box as its
bounds (scipy), for a few iterations: a local maximum, so φ is a lower bound of the true one. The search starts
from a seeded random point of the box, not its centre, where a zero gradient (a minimum) would stop it at once.
Nothing here knows about models: `value_and_grad` is f and ∇f of a flat float64 vector.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, minimize


@dataclass(frozen=True)
class EpsilonSharpness:
    """φ (`value`, in percent), f(x) (`loss`), the largest f found in the box (`max_loss`), ε, and the work done."""

    value: float
    loss: float
    max_loss: float
    epsilon: float
    iterations: int
    evaluations: int


def epsilon_sharpness(
    value_and_grad: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x: np.ndarray,
    epsilon: float = 1e-3,
    *,
    max_iter: int = 10,
    seed: int = 0,
) -> EpsilonSharpness:
    """φ(x, ε) by L-BFGS-B ascent inside C_ε (see the module); `max_iter` L-BFGS-B iterations at most."""
    if not (isinstance(epsilon, (int, float)) and epsilon > 0):
        raise ValueError(f"epsilon must be a positive number (got {epsilon!r})")
    if not isinstance(max_iter, int) or isinstance(max_iter, bool) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer (got {max_iter!r})")
    x = np.asarray(x, dtype=np.float64)
    radius = epsilon * (np.abs(x) + 1)
    f0, _ = value_and_grad(x)
    best = [float(f0)]

    def negated(y):
        f, g = value_and_grad(x + y)
        best[0] = max(best[0], float(f))
        return -float(f), -np.asarray(g, dtype=np.float64)

    start = np.random.default_rng(seed).uniform(-1, 1, x.shape) * radius
    res = minimize(negated, start, jac=True, method="L-BFGS-B", bounds=Bounds(-radius, radius),
                   options={"maxiter": max_iter})  # fmt: skip
    f0 = float(f0)
    return EpsilonSharpness(
        value=100 * (best[0] - f0) / (1 + f0),
        loss=f0,
        max_loss=best[0],
        epsilon=float(epsilon),
        iterations=int(res.nit),
        evaluations=int(res.nfev),
    )
