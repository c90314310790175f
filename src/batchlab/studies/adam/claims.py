"""The claims of the Adam-and-batch-size family (AS1-AS6), each decided by a pure rule over the numbers its study
gathers from the store, so every rule can be tested on synthetic input."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ...analysis.decisions import ALPHA, Decision, equivalent, fixed_sequence
from ...claims import Claim, ClaimSpec

# --- sqrt-scaling (AS3) -----------------------------------------------------------------------------------------
AS3 = ClaimSpec(
    "AS3",
    "Going from batch B to kB, Adam keeps its loss curve against examples seen, for some k > 1, under the "
    "square-root rule with rescaled betas (lr x sqrt(k), 1 - beta -> k (1 - beta)) and under batch-size-invariant "
    "Adam (v from the mean of squared micro-batch gradients); the rule needs tr(Sigma) / (B |G|^2) >> k.",
    "Malladi et al. 2022, On the SDEs and Scaling Rules for Adaptive Gradient Algorithms (NeurIPS); Wang & "
    "Aitchison 2024, Batch size invariant Adam (arXiv 2402.18824)",
)
AS3_MARGIN = 0.10  # "the curves overlap": the window's mean training loss within ±10 % of the base run's (TOST)
AS3_DECIDING = ("sqrt-lr+betas", "invariant")  # the papers' rules; "sqrt-lr" (betas kept) is shown beside them


def overlaps(base: np.ndarray, arm: np.ndarray, margin: float = AS3_MARGIN) -> Decision:
    """Whether an arm's loss over the window is within ±`margin` (a fraction) of the base run's: TOST on the log of
    the per-seed ratio (paired by seed), margin log(1 + margin). `arm` holds +inf for a diverged seed: a diverged
    arm does not overlap (an outcome, not a missing seed)."""
    base, arm = np.asarray(base, dtype=float), np.asarray(arm, dtype=float)
    test = f"TOST (paired t on log(loss ratio), margin ±log(1 + {margin:g}), {100 * (1 - 2 * ALPHA):.0f} % CI)"
    if (gone := int(np.isposinf(arm).sum())) > 0:
        why = f"{gone} of {arm.size} seeds diverged"
        return Decision("not supported", math.inf, (math.inf, math.inf), float("nan"), test, (arm.size,), why)
    return equivalent(np.log(base), np.log(arm), math.log1p(margin))


def k_chain(
    losses: Mapping[int, np.ndarray], margin: float = AS3_MARGIN
) -> tuple[int, dict[int, Decision], int | None]:
    """(k_max, the decision at each k > 1, the k that stopped the sequence or None): `losses[k]` the per-seed window
    loss at k B (k = 1 the base), the ks tested upward in a fixed sequence (each at alpha, stopping at the first
    that is not shown to overlap), so k_max is the largest k up to which every k overlaps."""
    ks = sorted(k for k in losses if k > 1)
    decisions = {k: overlaps(losses[1], losses[k], margin) for k in ks}
    n, stop = fixed_sequence([decisions[k] for k in ks])
    return ([1] + ks)[n], decisions, (ks[n] if stop is not None else None)


def rule_as3(
    losses: Mapping[str, Mapping[int, np.ndarray]], noise_ratio: Mapping[str, tuple[float, float, float]]
) -> Claim:
    """AS3: losses[variant][k] -> per-seed mean training loss over the window (the last half of training, against
    examples seen; +inf for a diverged seed, NaN for a missing one), k = 1 the shared base run; noise_ratio[label]
    -> (estimate, CI low, CI high) of tr(Sigma) / (B |G|^2) at the base batch. Decided by the papers' rules
    (AS3_DECIDING) at the first k above 1; every variant's k_max is reported against the ratio."""
    rule = (
        f"per variant, k tested upward in a fixed sequence (alpha {ALPHA:g} each): kB keeps the curve when its mean "
        f"training loss over the last half of training is within ±{100 * AS3_MARGIN:g} % of B's (TOST on the log "
        "ratio, paired by seed; a diverged arm does not keep it); k_max the last k kept. Supported when both the "
        "square-root rule with rescaled betas and batch-size-invariant Adam keep it at the first k above 1; not "
        "supported when either is shown not to; else inconclusive. k_max of every variant is set beside the measured "
        "tr(Sigma) / (B |G|^2), which the square-root rule needs to be >> k"
    )
    evidence: dict = {
        f"tr(Sigma)/(B|G|^2), {label}": f"{e:.3g} [{lo:.3g}, {hi:.3g}]" for label, (e, lo, hi) in noise_ratio.items()
    }
    if not losses:
        return AS3.inconclusive(rule, "no runs stored", evidence)
    base = np.asarray(next(iter(losses.values())).get(1, []), dtype=float)
    if base.size == 0 or not np.isfinite(base).any():
        return AS3.inconclusive(rule, "the base runs are missing or diverged in every seed", evidence)
    verdicts, whys = {}, []
    for variant, per_k in losses.items():
        k_max, decisions, stop = k_chain(per_k)
        evidence[f"{variant}: k_max"] = k_max
        for k, d in decisions.items():
            evidence[f"{variant}, k={k}: loss ratio"] = (
                math.exp(d.estimate) if math.isfinite(d.estimate) else d.estimate
            )
            evidence[f"{variant}, k={k}: {d.test.split(' (')[0]}"] = f"{d.verdict}: {d.why}"
        first = decisions[min(decisions)] if decisions else None
        verdicts[variant] = first.verdict if first else "inconclusive"
        tail = f", stops at k={stop} ({decisions[stop].verdict}: {decisions[stop].why})" if stop else ""
        whys.append(f"{variant}: k_max {k_max}{tail}")
    whys += [f"{v}: not run (it decides the claim)" for v in AS3_DECIDING if v not in verdicts]
    deciding = [verdicts.get(v, "inconclusive") for v in AS3_DECIDING]
    if "not supported" in deciding:
        verdict = "not supported"
    elif all(v == "supported" for v in deciding):
        verdict = "supported"
    else:
        verdict = "inconclusive"
    if noise_ratio:
        whys.append("tr(Sigma)/(B|G|^2) " + ", ".join(f"{label} {e:.3g}" for label, (e, _, _) in noise_ratio.items()))
    return AS3.claim(rule, verdict, evidence, "; ".join(whys))
