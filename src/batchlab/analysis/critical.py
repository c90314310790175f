"""The critical batch size measured by branched training, and the rules built on it (pure functions of numbers).

From a checkpoint, branches at batch k B0 train for the same number of examples (the window); the local critical
batch size is the largest k B0 whose loss after the window is not worse than the k = 1 branch's by more than a
margin (Merrill, Arora, Groeneveld & Hajishirzi, "Critical Batch Size Revisited", arXiv 2505.23971, 2025). Here
each k is decided by a one-sided non-inferiority test paired by seed (`decisions.not_worse`), so the answer is an
interval with the seeds' uncertainty, not a point read off one run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from .decisions import Decision, not_worse

EMA_BETA = 0.5  # smoothing of the loss over a window's evaluations: the half-life is one evaluation interval


def smoothed(curve: np.ndarray, beta: float = EMA_BETA) -> np.ndarray:
    """Exponential moving average along axis 0 ([evaluations, ...]), started at the first row: the loss at each
    evaluation with the step-to-step jitter damped. An infinite (diverged) value stays infinite from there on."""
    curve = np.asarray(curve, dtype=float)
    out = np.empty_like(curve)
    out[0] = curve[0]
    for i in range(1, len(curve)):
        with np.errstate(invalid="ignore"):
            out[i] = np.where(np.isinf(curve[i]), np.inf, beta * out[i - 1] + (1 - beta) * curve[i])
    return out


def best_of_grid(values: np.ndarray) -> int:
    """The index of the best lr of a grid from per-seed losses [lrs, seeds]: fewest diverged seeds, then the
    lowest mean log loss (the best of the grid counts)."""
    values = np.asarray(values, dtype=float)
    bad = (~np.isfinite(values) | (values <= 0)).sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(np.isfinite(values) & (values > 0), np.log(np.where(values > 0, values, 1)), np.nan)
    score = [
        (int(bad[i]), float(np.nanmean(logs[i])) if np.isfinite(logs[i]).any() else math.inf)
        for i in range(len(values))
    ]
    return min(range(len(values)), key=lambda i: score[i])


def critical_batch(multipliers: Sequence[float], b0: int, losses: Mapping[float, np.ndarray], margin: float) -> dict:
    """The critical batch size at one checkpoint from per-seed window losses `losses[k]` (paired seeds).

    Each k > 1 is decided against k = 1: accepted (not worse by more than `margin`), rejected, or inconclusive.
    `lower` = B0 x the largest k such that every k' <= k is accepted; `upper` = B0 x the first rejected k (inf
    when none is). `status`: "measured" when the first k that is not accepted is rejected (the interval is
    between neighbouring k), "bounded" when an inconclusive k lies in between, "above range" when every k is
    accepted, "below range" when the first k > 1 is rejected. `point`: the geometric mean of the ends when both
    are finite, else the finite end."""
    ks = sorted(k for k in multipliers if k != 1)
    decisions: dict[float, Decision] = {k: not_worse(losses[1], losses[k], margin) for k in ks}
    lower_k, upper_k, gap = 1.0, math.inf, []
    for k in ks:
        verdict = decisions[k].verdict
        if verdict == "not supported":
            upper_k = k
            break
        if verdict == "supported" and not gap:
            lower_k = k
        elif verdict != "supported":
            gap.append(k)
    lower, upper = b0 * lower_k, b0 * upper_k
    if ks and lower_k == 1 and upper_k == ks[0]:
        status = "below range"
    elif math.isinf(upper):
        status = "bounded" if gap else "above range"
    else:
        status = "bounded" if gap else "measured"
    point = math.sqrt(lower * upper) if math.isfinite(upper) else lower
    needs = [d.why for k, d in decisions.items() if k in gap]
    return {
        "lower": lower,
        "upper": upper,
        "point": point,
        "status": status,
        "decisions": decisions,
        "inconclusive_k": gap,
        "needs": needs,
    }


def ratio_interval(value: tuple[float, float], critical: tuple[float, float]) -> tuple[float, float]:
    """The range of value / critical over the two intervals (a proxy's CI against the measured interval)."""
    lo, hi = value
    c_lo, c_hi = critical
    low = lo / c_hi if c_hi > 0 and math.isfinite(c_hi) else 0.0
    high = hi / c_lo if c_lo > 0 else math.inf
    return low, high


def within_factor(interval: tuple[float, float], factor: float) -> str:
    """supported when a ratio's interval lies inside [1/factor, factor], not supported when it lies outside,
    inconclusive when it crosses an end (or is unknown)."""
    lo, hi = interval
    if not (math.isfinite(lo) or math.isfinite(hi)) or math.isnan(lo) or math.isnan(hi):
        return "inconclusive"
    if 1 / factor <= lo and hi <= factor:
        return "supported"
    if hi < 1 / factor or lo > factor:
        return "not supported"
    return "inconclusive"


def warmup_schedule(
    checkpoint_epochs: Sequence[int], critical_lower: Sequence[float], b0: int
) -> list[tuple[int, int]]:
    """Batch-size warmup driven by the measurement: from each checkpoint's epoch on, the batch doubles while the
    measured critical batch size (its lower end: the largest batch shown not to hurt) exceeds twice the batch;
    never shrinks. [(epoch, batch size)] at the epochs where it changes (epoch 0: the starting batch)."""
    out, b = [(0, b0)], b0
    for epoch, c in sorted(zip(checkpoint_epochs, critical_lower)):
        new = b
        while math.isfinite(c) and c > 2 * new:
            new *= 2
        if new != b:
            out = [e for e in out if e[0] != epoch] + [(int(epoch), int(new))]
            b = new
    return out
