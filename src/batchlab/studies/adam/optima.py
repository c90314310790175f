"""The best point of a (learning rate x beta2 half-life) loss grid, and the width of its near-optimal region.

Marek et al. (2025, "Small Batch Size Training for Language Models", arXiv 2507.07101, sec. 3) measure Adam's
second-moment memory as a half-life in tokens (here: examples), t_half = B ln(0.5) / ln(beta2): after t_half
examples an update's weight in the running average of squared gradients has halved. Holding t_half fixed across
batch sizes gives beta2(B) = 0.5^(B / t_half) = beta2_0^(B / B0); holding beta2 fixed makes t_half grow with B.

Everything here is plain numpy on grids `loss[lr, half_life]` (a diverged run is +inf: the worst loss, never the
best; a missing one NaN), so every rule built on it can be tested on synthetic grids.
"""

from __future__ import annotations

import math

import numpy as np

from ...analysis.stats import grid_argmin


def beta2_for(half_life: float, batch_size: int) -> float:
    """beta2 whose second-moment half-life is `half_life` examples at batch size B: 0.5^(B / t_half)."""
    return float(0.5 ** (batch_size / half_life))


def half_life_of(beta2: float, batch_size: int) -> float:
    """t_half = B ln(0.5) / ln(beta2) examples (Marek et al. 2025, eq. 1); 0 for beta2 = 0 (no memory)."""
    return 0.0 if beta2 <= 0 else batch_size * math.log(0.5) / math.log(beta2)


def optimum(grid: np.ndarray, lrs, half_lives) -> dict:
    """The best (lr, half-life) of one grid loss[lr, half_life]: each coordinate refined on its profile (the loss
    minimised over the other hyperparameter); `edge` names a coordinate whose argmin is on the grid's edge."""
    g = np.where(np.isnan(np.asarray(grid, dtype=float)), np.inf, grid)
    if not np.any(np.isfinite(g)):
        return {"lr": math.nan, "half_life": math.nan, "loss": math.nan, "edge": []}
    log_lr, lr_edge = grid_argmin(np.log(lrs), g.min(axis=1))
    log_hl, hl_edge = grid_argmin(np.log(half_lives), g.min(axis=0))
    edge = [name for name, hit in (("lr", lr_edge), ("half-life", hl_edge)) if hit]
    return {"lr": math.exp(log_lr), "half_life": math.exp(log_hl), "loss": float(g.min()), "edge": edge}


def width(profile: np.ndarray, log10_grid, pct: float, resolution: int = 1001) -> float:
    """Decades of a log-spaced grid over which the profile loss, interpolated linearly in log x, lies within `pct` %
    of the profile's best (Marek et al. 2025, fig. 1b: the near-optimal region). Interpolated rather than counted,
    so that the width does not jump with where the optimum falls between grid points. A diverged point (+inf) is
    outside, and so is the interval towards it (it counts as ten times the worst finished loss); NaN when nothing
    finished."""
    profile = np.asarray(profile, dtype=float)
    finite = np.isfinite(profile)
    if not np.any(finite):
        return float("nan")
    best = float(profile[finite].min())
    worst = 10 * float(profile[finite].max())
    x = np.asarray(log10_grid, dtype=float)
    fine = np.linspace(x[0], x[-1], resolution)
    inside = np.interp(fine, x, np.where(finite, profile, worst)) <= best * (1 + pct / 100)
    return float(inside.mean() * (x[-1] - x[0]))


def widths(grid: np.ndarray, lrs, half_lives, pct: float) -> tuple[float, float]:
    """(decades of lr, decades of half-life) within `pct` % of the best loss of grid loss[lr, half_life], each on
    its profile (the other hyperparameter tuned): how far one can mis-set it and stay near the best."""
    g = np.where(np.isnan(np.asarray(grid, dtype=float)), np.inf, grid)
    if not np.any(np.isfinite(g)):
        return float("nan"), float("nan")
    return width(g.min(axis=1), np.log10(lrs), pct), width(g.min(axis=0), np.log10(half_lives), pct)
