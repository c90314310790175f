"""The claims of the Adam-and-batch-size family (AS1-AS6), each decided by a pure rule over the numbers its study
gathers from the store, so every rule can be tested on synthetic input."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from ...analysis.decisions import (
    ALPHA,
    exponent_interval,
    fit_exponent,
    holm,
    holm_evidence,
    joint_verdict,
    seeds_needed,
)
from ...analysis.trends import trend
from ...claims import Claim, ClaimSpec
from .optima import beta2_for, optimum, widths

# --- beta2-halflife (AS4, AS5, AS6) -----------------------------------------------------------------------------
MAREK = 'Marek et al. 2025, "Small Batch Size Training for Language Models" (arXiv 2507.07101)'
AS4 = ClaimSpec(
    "AS4",
    "The best beta2 keeps the second moment's half-life in examples fixed across batch sizes: beta2* = beta2_0^(B/B0), "
    "not a fixed beta2.",
    f"{MAREK}, sec. 3 (half-life t_half = B ln 0.5 / ln beta2)",
)
AS5 = ClaimSpec(
    "AS5",
    "With beta2 tuned, the best Adam learning rate grows more slowly than sqrt(B) (about 3x from batch 1 to 1024, "
    "not 32x).",
    f"{MAREK}, sec. 3",
)
AS6 = ClaimSpec(
    "AS6",
    "Small batches are more robust to mis-set hyperparameters: the region of lr and of beta2 half-life within x % of "
    "the best loss narrows as the batch grows.",
    f"{MAREK}, sec. 4 and fig. 1b",
)
AS4_MARGIN = 0.25  # |slope of log t_half* against log B| below this: the half-life is fixed (slope 1: beta2 fixed)
AS5_SQRT = 0.5  # the square-root rule's exponent
AS6_PCT = 5.0  # the near-optimal region: final loss within this % of the best


def seed_optima(losses: np.ndarray, lrs, half_lives) -> list[list[dict]]:
    """`optimum` of each seed's grid at each batch size: [B][seed]; losses [B, lr, half_life, seed]."""
    losses = np.asarray(losses, dtype=float)
    return [[optimum(losses[b, :, :, s], lrs, half_lives) for s in range(losses.shape[3])] for b in range(len(losses))]


def mean_optima(losses: np.ndarray, lrs, half_lives) -> list[dict]:
    """`optimum` of the seed-mean grid at each batch size (a diverged seed makes its cell +inf, the worst)."""
    losses = np.asarray(losses, dtype=float)
    with warnings.catch_warnings():  # a cell no seed finished stays NaN (missing), quietly
        warnings.simplefilter("ignore", RuntimeWarning)
        return [optimum(np.nanmean(g, axis=-1), lrs, half_lives) for g in losses]


def _per_seed_exponents(batch_sizes, optima: list[list[dict]], key: str) -> np.ndarray:
    """[seeds, B] of the seeds' best `key`, the shape `exponent_interval` fits a power law to, one per seed."""
    return np.array([[optima[b][s][key] for b in range(len(batch_sizes))] for s in range(len(optima[0]))])


def _edges(batch_sizes, best: list[dict], coordinate: str) -> list[int]:
    return [b for b, o in zip(batch_sizes, best) if coordinate in o["edge"]]


def _flatness(grid: np.ndarray) -> float:
    """max / min - 1 of the seed-mean loss over the half-lives, the lr tuned at each (grid [lr, half-life, seed])."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        profile = np.nanmin(np.nanmean(grid, axis=-1), axis=0)
    return float(profile.max() / profile.min() - 1)


def _optima_evidence(batch_sizes, best: list[dict]) -> dict:
    ev = {}
    for b, o in zip(batch_sizes, best):
        ev[f"B={b}: best lr"] = o["lr"]
        ev[f"B={b}: best half-life (examples)"] = o["half_life"]
        ev[f"B={b}: best beta2"] = beta2_for(o["half_life"], b) if o["half_life"] > 0 else math.nan
    return ev


def rule_as4(batch_sizes: Sequence[int], lrs, half_lives, losses, *, margin: float = AS4_MARGIN) -> Claim:
    """AS4: losses [B, lr, half_life, seed] (final held-out loss; diverged +inf). Per seed, the best half-life at
    each B (refined on its profile) and the slope of log t_half* against log B; a Student t interval over the seeds
    at 90 % (TOST at alpha 0.05). supported: it lies inside ±margin (fixed half-life); not supported: entirely
    outside (slope 1 is beta2 fixed); inconclusive otherwise, or when the seed-mean optimum is on the grid's edge at
    some B (the grid does not bracket it)."""
    rule = (
        f"slope of log(best half-life) against log B, per seed, 90 % t interval over seeds inside ±{margin:g} "
        f"(TOST, alpha {ALPHA:g}); slope 1 is beta2 fixed; the best half-life on the grid's edge: inconclusive"
    )
    slopes = exponent_interval(
        batch_sizes,
        _per_seed_exponents(batch_sizes, seed_optima(losses, lrs, half_lives), "half_life"),
        alpha=2 * ALPHA,
    )
    best = mean_optima(losses, lrs, half_lives)
    lo, hi = slopes["ci"]
    est = slopes["mean"]
    pooled = fit_exponent(batch_sizes, [o["half_life"] for o in best])
    evidence = {
        "slope (mean over seeds)": est,
        "slope 90 % CI": f"[{lo:.3g}, {hi:.3g}]",
        "slope of the seed-mean optimum": pooled,
        "seeds": slopes["n"],
        "beta2 fixed (slope 1) excluded": "yes" if hi < 1 else "no",
    } | _optima_evidence(batch_sizes, best)
    if slopes["n"] < 2:
        return AS4.inconclusive(
            rule, f"{slopes['n']} seeds with a best half-life at every batch size: needs 2", evidence
        )
    if edges := _edges(batch_sizes, best, "half-life"):
        flat = [_flatness(np.asarray(losses, dtype=float)[list(batch_sizes).index(b)]) for b in edges]
        why = (
            f"the best half-life is on the grid's edge at B = {', '.join(map(str, edges))}: widen half_lives; the "
            f"loss, lr tuned, varies by {', '.join(f'{100 * f:.2g}' for f in flat)} % across the half-lives there "
            "(a profile flat within the seeds' noise locates no optimum)"
        )
        return AS4.claim(rule, "inconclusive", evidence, why)
    label = f"slope {est:+.3g}, 90 % CI [{lo:.3g}, {hi:.3g}]"
    if -margin < lo and hi < margin:
        return AS4.claim(rule, "supported", evidence, f"{label} inside ±{margin:g}: the half-life stays fixed")
    if lo >= margin or hi <= -margin:
        return AS4.claim(rule, "not supported", evidence, f"{label} outside ±{margin:g}")
    sd = float(np.std(slopes["per_seed"], ddof=1))
    need = seeds_needed(sd, margin - abs(est)) if abs(est) < margin else None
    more = f"; needs about {need} seeds to decide at this spread" if need else ""
    return AS4.claim(rule, "inconclusive", evidence, f"{label} crosses ±{margin:g}{more}")


def rule_as5(batch_sizes: Sequence[int], lrs, half_lives, losses, *, sqrt: float = AS5_SQRT) -> Claim:
    """AS5: per seed, the best lr at each B (beta2's half-life tuned) and the exponent a of lr* ~ B^a; one-sided at
    alpha on the t interval over seeds. supported: the upper bound lies below 0.5; not supported: the lower bound
    lies above it (sqrt scaling or faster); inconclusive otherwise, or when the best lr is on the grid's edge."""
    rule = (
        f"exponent a of best lr ~ B^a, per seed, one-sided t bound over seeds below {sqrt:g} (alpha {ALPHA:g}); "
        "the best lr on the grid's edge: inconclusive"
    )
    fit = exponent_interval(
        batch_sizes, _per_seed_exponents(batch_sizes, seed_optima(losses, lrs, half_lives), "lr"), alpha=2 * ALPHA
    )
    best = mean_optima(losses, lrs, half_lives)
    lo, hi = fit["ci"]
    est = fit["mean"]
    span = max(batch_sizes) / min(batch_sizes)
    evidence = {
        "exponent (mean over seeds)": est,
        "exponent one-sided 95 % bounds": f"[{lo:.3g}, {hi:.3g}]",
        "seeds": fit["n"],
        f"best lr ratio B={max(batch_sizes)} / B={min(batch_sizes)}": best[-1]["lr"] / best[0]["lr"],
        "the square-root rule's ratio": math.sqrt(span),
    } | _optima_evidence(batch_sizes, best)
    if fit["n"] < 2:
        return AS5.inconclusive(rule, f"{fit['n']} seeds with a best lr at every batch size: needs 2", evidence)
    if edges := _edges(batch_sizes, best, "lr"):
        return AS5.claim(
            rule,
            "inconclusive",
            evidence,
            f"the best lr is on the grid's edge at B = {', '.join(map(str, edges))}: widen lrs",
        )
    label = f"exponent {est:.3g}, one-sided bounds [{lo:.3g}, {hi:.3g}]"
    if hi < sqrt:
        return AS5.claim(rule, "supported", evidence, f"{label}: below {sqrt:g}")
    if lo > sqrt:
        return AS5.claim(rule, "not supported", evidence, f"{label}: above {sqrt:g}")
    need = seeds_needed(float(np.std(fit["per_seed"], ddof=1)), sqrt - est) if est < sqrt else None
    more = f"; needs about {need} seeds to decide at this spread" if need else ""
    return AS5.claim(rule, "inconclusive", evidence, f"{label} crosses {sqrt:g}{more}")


def rule_as6(batch_sizes: Sequence[int], lrs, half_lives, losses, *, pct: float = AS6_PCT) -> Claim:
    """AS6: per seed and batch size, the decades of lr and of half-life within `pct` % of that seed's best loss
    (each on its profile, the other tuned; a diverged run is outside); each width must fall with B: Page's trend
    test, seeds as blocks, Holm over the two. Both supported -> supported; either the opposite -> not supported."""
    rule = (
        f"decades of lr and of half-life within {pct:g} % of the best final loss, per seed; each decreasing in B "
        f"(Page's L test, seeds as blocks, Holm over the two, alpha {ALPHA:g})"
    )
    losses = np.asarray(losses, dtype=float)
    w = np.array(
        [[widths(losses[b, :, :, s], lrs, half_lives, pct) for s in range(losses.shape[3])] for b in range(len(losses))]
    )
    tests = {
        "lr width": trend(list(w[:, :, 0]), increasing=False, labels=batch_sizes),
        "half-life width": trend(list(w[:, :, 1]), increasing=False, labels=batch_sizes),
    }
    p = [d.p for d in tests.values()]
    adjusted = holm(p) if all(math.isfinite(x) for x in p) else None
    evidence = holm_evidence(tests, adjusted or [math.nan, math.nan])
    for b, row in zip(batch_sizes, w):
        evidence[f"B={b}: lr width (decades)"] = float(np.nanmean(row[:, 0]))
        evidence[f"B={b}: half-life width (decades)"] = float(np.nanmean(row[:, 1]))
    verdict = joint_verdict(list(tests.values()), adjusted) if adjusted else "inconclusive"
    why = "; ".join(f"{k}: {d.why}" for k, d in tests.items())
    return AS6.claim(rule, verdict, evidence, why)
