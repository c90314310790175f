"""Claim rules of the curvature family (K1-K3: sharp minima; ES1-ES3: the edge of stability), as pure functions of
stored numbers. Thresholds are stated before any number is seen and come from the config (`band`, `step`), never
from the data. A run whose estimate did not converge, that diverged or that never reached its target is left out of
the tests and counted in the evidence."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from ...analysis.decisions import ALPHA, Decision, equivalent, higher, lower
from ...analysis.trends import rank_association, trend
from ...claims import Claim, ClaimSpec

KESKAR = (
    "Keskar et al. 2017, On Large-Batch Training for Deep Learning: Generalization Gap and Sharp Minima "
    "(arXiv 1609.04836)"
)
COHEN_2021 = (
    "Cohen, Kaur, Li, Kolter & Talwalkar 2021, Gradient Descent on Neural Networks Typically Occurs at the Edge of "
    "Stability (arXiv 2103.00065)"
)
ANDREYEV = "Andreyev & Beneventano 2024, Edge of Stochastic Stability (arXiv 2412.20553)"
COHEN_2022 = "Cohen et al. 2022, Adaptive Gradient Methods at the Edge of Stability (arXiv 2207.14484)"
DINH = "Dinh, Pascanu, Bengio & Bengio 2017, Sharp Minima Can Generalize For Deep Nets (arXiv 1703.04933)"

K1 = ClaimSpec(
    "K1",
    "Large batches find sharper minima: lambda_max at the end of training grows with the batch size.",
    f"{KESKAR}, sec. 2.1 and table 3",
)
K2 = ClaimSpec(
    "K2",
    "Sharper solutions generalise worse: across runs, the larger lambda_max, the lower the test accuracy.",
    f"{KESKAR}, sec. 2 (noise drives SGD to flat minima that generalise better)",
)
K3 = ClaimSpec(
    "K3",
    "On the line through a small-batch and a large-batch solution, the loss curves up more steeply "
    "around the large-batch end.",
    f"{KESKAR}, fig. 3",
)
ES1 = ClaimSpec(
    "ES1",
    "Full-batch gradient descent: lambda_max rises to 2/lr and hovers there, within 10 % over the "
    "last half of training, while the loss keeps falling, non-monotonically.",
    f"{COHEN_2021}, sec. 3",
)
ES2 = ClaimSpec(
    "ES2",
    "With mini-batches it is the batch sharpness, not lambda_max, that settles near 2/lr; "
    "lambda_max settles lower the smaller the batch.",
    f"{ANDREYEV}, sec. 3-4",
)
ES3 = ClaimSpec(
    "ES3",
    "Full-batch Adam: the preconditioned sharpness lambda_max(P^-1 H) rises to (2 + 2 beta1) / "
    "((1 - beta1) lr), 38/lr at beta1 = 0.9, and hovers there.",
    f"{COHEN_2022}, sec. 3",
)


def _fmt(values) -> str:
    return ", ".join("nan" if not np.isfinite(v) else f"{v:.4g}" for v in np.asarray(values, dtype=float))


# --- K: sharp minima -----------------------------------------------------------------------------------------------


def rule_k1(batch_sizes: Sequence[int], lam: np.ndarray, left_out: Mapping[str, int] | None = None) -> Claim:
    """K1: lam [B, seeds] (lambda_max of each run's final weights, NaN where it did not converge or the run did not
    finish). Page's L test of an increasing trend over the batch sizes, seeds as blocks (one-sided, alpha 0.05)."""
    rule = (
        "lambda_max of the final weights grows with the batch size: Page's L test of an increasing trend across the "
        f"batch sizes, seeds as blocks, one-sided at {ALPHA:g}; the opposite trend significant: not supported (a batch "
        "size with fewer than 2 finished seeds is left out and named; a seed takes part with every batch size left)"
    )
    lam = np.asarray(lam, dtype=float)
    d = trend(list(lam), increasing=True, labels=[f"B={b}" for b in batch_sizes])
    evidence = {f"lambda_max at B={b} (per seed)": _fmt(row) for b, row in zip(batch_sizes, lam)}
    evidence |= {
        "mean per-seed Spearman rho (B, lambda_max)": d.estimate,
        "Page p (increasing)": d.p,
        "seeds with every batch size": d.n[0],
    }
    pairs = lam[0], lam[-1]
    if np.isfinite(pairs[0]).any() and np.isfinite(pairs[1]).any():
        big = higher(np.log(np.clip(pairs[0], 1e-300, None)), np.log(np.clip(pairs[-1], 1e-300, None)))
        if math.isfinite(big.estimate):
            evidence[f"lambda_max ratio B={batch_sizes[-1]} / B={batch_sizes[0]} (geometric mean)"] = math.exp(
                big.estimate
            )
    evidence |= {f"left out: {k}": v for k, v in (left_out or {}).items() if v}
    return K1.claim(rule, d.verdict, evidence, d.why)


def rule_k2(lam: np.ndarray, acc: np.ndarray, within: Mapping[str, float] | None = None) -> Claim:
    """K2: across every run (all batch sizes and seeds), Spearman's rho of lambda_max against test accuracy < 0 by
    a one-sided permutation test; not supported when rho > 0 is significant."""
    rule = (
        "Spearman rho of (lambda_max, final test accuracy) across all runs < 0, one-sided permutation test at "
        f"{ALPHA:g} (95 % bootstrap CI shown); rho > 0 significant: not supported"
    )
    d = rank_association(lam, acc, negative=True)
    evidence = {
        "Spearman rho": d.estimate,
        "95 % CI": f"[{d.ci[0]:.3g}, {d.ci[1]:.3g}]",
        "p (negative)": d.p,
        "runs": d.n[0],
    }
    evidence |= {f"within {k}: rho": v for k, v in (within or {}).items()}
    return K2.claim(rule, d.verdict, evidence, d.why)


def curvature_along(alphas: np.ndarray, losses: np.ndarray, end: float, step: float) -> float:
    """The mean loss increase at distance `step` on both sides of `end` on the line: (L(end - s) + L(end + s)) / 2
    - L(end), the slope cancelled (NaN when a point is not on the grid or not finite)."""
    alphas, losses = np.asarray(alphas, dtype=float), np.asarray(losses, dtype=float)

    def at(a: float) -> float:
        i = int(np.argmin(np.abs(alphas - a)))
        return float(losses[i]) if abs(alphas[i] - a) < 1e-9 else math.nan

    return (at(end - step) + at(end + step)) / 2 - at(end)


def rule_k3(
    small: Sequence[float], large: Sequence[float], step: float, labels: tuple[int, int], missing: str = ""
) -> Claim:
    """K3: per seed, the mean loss increase at distance `step` (a fraction of the segment) on both sides of each end;
    the large-batch end's larger by a paired one-sided t."""
    rule = (
        f"per seed, (L(e - {step:g}) + L(e + {step:g})) / 2 - L(e) at each end e of the line from the B={labels[0]} "
        f"(alpha 0) to the B={labels[1]} solution (alpha 1) of the same seed: larger at the large-batch end, paired "
        f"one-sided t at {ALPHA:g}"
    )
    s, g = np.asarray(small, dtype=float), np.asarray(large, dtype=float)
    d = higher(s, g)
    evidence = {
        f"increase around B={labels[0]} (per seed)": _fmt(s),
        f"increase around B={labels[1]} (per seed)": _fmt(g),
    }
    evidence |= d.evidence(prefix="large - small: ")
    if missing:
        evidence["lines left out"] = missing
    why = f"{d.why}; {missing}" if missing and d.verdict == "inconclusive" else d.why
    return K3.claim(rule, d.verdict, evidence, why)


# --- ES: the edge of stability ----------------------------------------------------------------------------------


def at_edge(ratios: Sequence[float], band: float) -> Decision:
    """TOST that the seeds' mean of (last-half mean) / threshold lies within 1 ± band (90 % CI inside)."""
    r = np.asarray(ratios, dtype=float)
    return equivalent(np.ones_like(r), r, band)


def _diverged(k: int, n: int) -> Decision:
    """A diverged run is an outcome: it did not settle anywhere."""
    return Decision(
        "not supported", math.nan, (math.nan,) * 2, math.nan, "diverged runs", (n,), f"{k} of {n} seeds diverged"
    )


def _joint(parts: Mapping[str, Decision]) -> tuple[str, str]:
    """Every part needed: any not supported -> not supported (naming it); all supported -> supported."""
    bad = [f"{k}: {d.why}" for k, d in parts.items() if d.verdict == "not supported"]
    if bad:
        return "not supported", "; ".join(bad)
    open_ = [f"{k}: {d.why}" for k, d in parts.items() if d.verdict == "inconclusive"]
    if open_:
        return "inconclusive", "; ".join(open_)
    return "supported", "every part holds"


def rule_edge(
    spec: ClaimSpec,
    arms: Mapping[str, Mapping[str, np.ndarray]],
    band: float,
    what: str,
    threshold: str,
    monotone_loss: bool = True,
) -> Claim:
    """ES1 (and ES3): for each arm (an lr), per seed: `ratio` = last-half mean of the sharpness / threshold,
    `low` = the smallest sharpness / threshold in the first half, `loss_mid` and `loss_end` (training loss at the
    middle and the end), `ups` = loss increases between consecutive evaluations in the last half. Needs, in every
    arm: ratio within 1 ± band (TOST), the sharpness risen to it (ratio > low, paired one-sided t), and with
    `monotone_loss` the loss lower at the end than at the middle (paired one-sided t) and some rise in it."""
    rule = (
        f"for every lr: the seeds' last-half mean of {what} / {threshold} within 1 ± {band:g} (TOST, 90 % CI), above "
        f"its first-half minimum (paired one-sided t)"
        + (
            ", and the training loss lower at the end than at the middle (paired one-sided t) with at least one "
            "rise between evaluations in its last half"
            if monotone_loss
            else ""
        )
    )
    if not arms:
        return spec.inconclusive(rule, "no runs")
    parts: dict[str, Decision] = {}
    evidence: dict = {}
    for label, a in arms.items():
        parts[f"{label} at the edge"] = at_edge(a["ratio"], band)
        parts[f"{label} risen"] = higher(a["low"], a["ratio"])
        evidence |= {
            f"{label}: {what} / {threshold} (last half, per seed)": _fmt(a["ratio"]),
            f"{label}: first-half minimum / {threshold}": _fmt(a["low"]),
        }
        if monotone_loss:
            parts[f"{label} loss falls"] = lower(a["loss_mid"], a["loss_end"])
            ups = np.asarray(a["ups"], dtype=float)
            evidence[f"{label}: loss rises in the last half (per seed)"] = _fmt(ups)
            if not np.nansum(ups) > 0:
                parts[f"{label} non-monotone"] = Decision(
                    "inconclusive",
                    0.0,
                    (0.0, 0.0),
                    math.nan,
                    "count",
                    (len(ups),),
                    "the loss never rose between two evaluations: finer evaluations could tell",
                )
        if a.get("not_converged"):
            evidence[f"{label}: runs whose estimates did not converge (left out)"] = a["not_converged"]
        if a.get("diverged"):
            parts[f"{label} stable"] = _diverged(int(a["diverged"]), len(np.asarray(a["ratio"])))
    evidence |= {f"{k}": d.why for k, d in parts.items()}
    verdict, why = _joint(parts)
    return spec.claim(rule, verdict, evidence, why)


def rule_es2(
    batch_sizes: Sequence[int], batch_ratio: np.ndarray, lam_ratio: np.ndarray, band: float, diverged: int = 0
) -> Claim:
    """ES2: batch_ratio and lam_ratio [B, seeds], the last-half means of batch sharpness and lambda_max over 2/lr.
    Needs: batch sharpness / (2/lr) within 1 ± band at every B (TOST); lambda_max increasing in B (Page's L test,
    seeds as blocks); lambda_max / (2/lr) at the smallest B below 1 - band (one-sided t)."""
    rule = (
        f"at every batch size the seeds' last-half mean of batch sharpness / (2/lr) within 1 ± {band:g} (TOST); "
        "lambda_max increasing with the batch size (Page's L test, seeds as blocks); lambda_max / (2/lr) at the "
        f"smallest batch below {1 - band:g} (one-sided t); all at {ALPHA:g}"
    )
    bs, lr = np.asarray(batch_ratio, dtype=float), np.asarray(lam_ratio, dtype=float)
    parts = {f"batch sharpness at B={b}": at_edge(row, band) for b, row in zip(batch_sizes, bs)}
    parts["lambda_max grows with B"] = trend(list(lr), increasing=True, labels=[f"B={b}" for b in batch_sizes])
    parts[f"lambda_max below the edge at B={batch_sizes[0]}"] = lower(np.full_like(lr[0], 1 - band), lr[0])
    if diverged:
        parts["every run stable"] = _diverged(diverged, bs.size)
    evidence = {f"B={b}: batch sharpness / (2/lr) (per seed)": _fmt(row) for b, row in zip(batch_sizes, bs)}
    evidence |= {f"B={b}: lambda_max / (2/lr) (per seed)": _fmt(row) for b, row in zip(batch_sizes, lr)}
    evidence |= {k: d.why for k, d in parts.items()}
    verdict, why = _joint(parts)
    return ES2.claim(rule, verdict, evidence, why)
