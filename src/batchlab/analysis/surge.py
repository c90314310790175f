"""The optimal learning rate against the batch size, and the two forms it is fitted with.

Li et al. 2024 ("Surge Phenomenon in Optimal Learning Rate and Batch Size Scaling", arXiv 2405.14578) define the
optimal lr at a batch size B as the lr of the largest loss decrease from one point of training; for SGD it follows
McCandlish et al. 2018's eps_max / (1 + B_noise / B) (monotone, saturating), for sign-like updates (Adam) their
eps_max / (0.5 (sqrt(B_noise / B) + sqrt(B / B_noise))), which peaks at B = B_noise and falls beyond it.

Both forms have two parameters (log eps_max, log B_noise); they are fitted by weighted least squares on log lr:
for each B_noise of a fine log grid, log eps_max is the weighted mean residual (closed form), and the best B_noise
wins. Forms are compared by their leave-one-batch-size-out error, so the extra curvature of the surge form earns
nothing unless it predicts a held-out batch size better.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .stats import grid_argmin

FORMS = ("sgd", "surge")
GRID_POINTS = 1201  # log B_noise candidates, from min(B) / 1000 to max(B) x 1000


def shape(form: str, batch_sizes, log_b_noise) -> np.ndarray:
    """log(lr / eps_max) of `form` at `batch_sizes` for each log B_noise: [len(log_b_noise), len(batch_sizes)]."""
    b = np.asarray(batch_sizes, dtype=float)[None, :]
    bn = np.exp(np.asarray(log_b_noise, dtype=float))[:, None]
    if form == "sgd":
        return -np.log1p(bn / b)
    if form == "surge":
        r = np.sqrt(bn / b)
        return -np.log(0.5 * (r + 1.0 / r))
    raise ValueError(f"unknown form {form!r}; choose one of {', '.join(FORMS)}")


def _grid(batch_sizes) -> np.ndarray:
    b = np.asarray(batch_sizes, dtype=float)
    return np.linspace(math.log(b.min() / 1000), math.log(b.max() * 1000), GRID_POINTS)


def fit(form: str, batch_sizes, log_lr, weights, grid: np.ndarray | None = None) -> tuple[float, float, float]:
    """(log eps_max, log B_noise, weighted SSE) of `form` fitted to log_lr by weighted least squares."""
    grid = _grid(batch_sizes) if grid is None else grid
    f = shape(form, batch_sizes, grid)
    y, w = np.asarray(log_lr, dtype=float), np.asarray(weights, dtype=float)
    log_eps = ((y - f) * w).sum(1) / w.sum()
    sse = (w * (y - f - log_eps[:, None]) ** 2).sum(1)
    i = int(np.argmin(sse))
    return float(log_eps[i]), float(grid[i]), float(sse[i])


def predict(form: str, batch_sizes, log_eps: float, log_b_noise: float) -> np.ndarray:
    return log_eps + shape(form, batch_sizes, [log_b_noise])[0]


def held_out_error(form: str, batch_sizes, log_lr, weights) -> float:
    """Leave-one-batch-size-out: fit on the others, the weighted squared error at the one left out, summed."""
    b, y, w = (np.asarray(v, dtype=float) for v in (batch_sizes, log_lr, weights))
    grid, total = _grid(b), 0.0
    for j in range(b.size):
        keep = np.arange(b.size) != j
        log_eps, log_bn, _ = fit(form, b[keep], y[keep], w[keep], grid)
        total += w[j] * float(predict(form, b[j : j + 1], log_eps, log_bn)[0] - y[j]) ** 2
    return total


def optimal_log_lr(mean_decrease, log_lrs) -> tuple[float, bool]:
    """The log lr of the largest mean decrease, refined by the vertex of the parabola through the best grid point
    and its two neighbours (kept between them); `at_edge` when the best is the grid's first or last lr (the
    optimum may lie outside: censored). NaN when no lr has a finite decrease (every one diverged somewhere)."""
    d = np.asarray(mean_decrease, dtype=float)
    return grid_argmin(log_lrs, -np.where(np.isfinite(d), d, -np.inf))


def optimal_lrs(decreases: Sequence[np.ndarray], log_lrs: Sequence[np.ndarray], resamples: int, seed: int) -> dict:
    """Per batch size, the optimal log lr of the seed mean and of `resamples` bootstrap resamples of the seeds.

    decreases[k]: [lrs, seeds] loss decreases at batch size k (-inf where a branch diverged: an lr that diverges in
    some seed has the worst mean). Seed s of every batch size saw the same data order, so one resample of the seed
    indices serves every batch size (paired). Returns point [B], edge [B] (bool), replicates [resamples, B]."""
    n_seeds = decreases[0].shape[1]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_seeds, size=(resamples, n_seeds))
    point, edge = zip(*(optimal_log_lr(d.mean(1), x) for d, x in zip(decreases, log_lrs)))
    reps = np.array([[optimal_log_lr(d[:, idx].mean(1), x)[0] for d, x in zip(decreases, log_lrs)] for idx in draws])
    return {"point": np.array(point), "edge": np.array(edge), "replicates": reps.reshape(resamples, len(decreases))}


def weights(replicates: np.ndarray, log_lrs: Sequence[np.ndarray]) -> np.ndarray:
    """1 / the variance of each batch size's optimal log lr over the bootstrap, floored by the grid's resolution
    (spacing^2 / 12: a seed resample that always picks one grid point is not infinitely precise)."""
    spacing = np.array([np.diff(x).mean() if len(x) > 1 else 1.0 for x in log_lrs])
    var = np.nanvar(replicates, axis=0, ddof=1) if replicates.shape[0] > 1 else np.zeros(len(log_lrs))
    return 1.0 / (np.nan_to_num(var) + spacing**2 / 12)


def compare_forms(batch_sizes, log_lr, reps: np.ndarray, w: np.ndarray, level: float = 0.90) -> dict:
    """Both fits, their held-out errors, the ratio r = E_surge / E_sgd with its bootstrap interval (`level`,
    two-sided: each end a one-sided bound at (1 - level) / 2), and the surge fit's peak B_peak with its interval."""
    b, y = np.asarray(batch_sizes, dtype=float), np.asarray(log_lr, dtype=float)
    fits = {form: fit(form, b, y, w) for form in FORMS}
    errors = {form: held_out_error(form, b, y, w) for form in FORMS}
    log_r, peaks = [], []
    for row in reps:
        if not np.isfinite(row).all():
            continue
        e = {form: held_out_error(form, b, row, w) for form in FORMS}
        log_r.append(math.log(max(e["surge"], 1e-300) / max(e["sgd"], 1e-300)))
        peaks.append(fit("surge", b, row, w)[1])
    tail = 100 * (1 - level) / 2
    log_r_ci = tuple(np.percentile(log_r, [tail, 100 - tail])) if len(log_r) > 1 else (math.nan, math.nan)
    peak_ci = tuple(np.exp(np.percentile(peaks, [2.5, 97.5]))) if len(peaks) > 1 else (math.nan, math.nan)
    return {
        "fits": fits,
        "errors": errors,
        "ratio": errors["surge"] / errors["sgd"] if errors["sgd"] > 0 else math.inf,
        "ratio_ci": (math.exp(log_r_ci[0]), math.exp(log_r_ci[1])) if np.isfinite(log_r_ci).all() else log_r_ci,
        "log_ratio_sd": float(np.std(log_r, ddof=1)) if len(log_r) > 1 else math.nan,
        "b_peak": math.exp(fits["surge"][1]),
        "b_peak_at_bound": fits["surge"][1] in (_grid(b)[0], _grid(b)[-1]),  # the fit ran to min(B)/1000 or 1000 max(B)
        "b_peak_ci": peak_ci,
        "replicates_used": len(log_r),
    }
