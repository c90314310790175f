"""The claims of the gradient-descent-variants family (V2, L1, S1, S2), each decided by a pure rule over the
numbers its study gathers from the store, so every rule can be tested on synthetic input."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...analysis.decisions import higher
from ...claims import Claim, ClaimSpec

# The claims, as the studies declare them (gd-variants V2, lr-sensitivity L1, linear-scaling S1, lars S2).
V2 = ClaimSpec(
    "V2",
    "Per epoch, stochastic and mini-batch gradient descent get further than batch GD; per step, batch GD is "
    "the smoothest.",
    "textbook (e.g. Bottou, Curtis & Nocedal 2018, Optimization Methods for Large-Scale Machine Learning)",
)
L1 = ClaimSpec(
    "L1",
    "On a quadratic, the learning rate decides convergence exactly as the theory says.",
    "the gradient-descent update on a quadratic (LeCun et al. 1998, Efficient BackProp, sec. 5; Goodfellow, Bengio "
    "& Courville 2016, ch. 4.3)",
)
S1 = ClaimSpec(
    "S1",
    "With gradual warmup, linear lr scaling keeps the accuracy of small-batch training up to a large batch.",
    "Goyal et al. 2017, Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour",
)
S2 = ClaimSpec(
    "S2",
    "At very large batches, layer-wise adaptive optimizers (LARS, LAMB) beat linearly scaled SGD.",
    "You, Gitman & Ginsburg 2017 (LARS); You et al. 2019 (LAMB)",
)

S1_PP = 1.0  # "keeps the accuracy": the mean final test accuracy within this many pp of the B_base run


def rule_v2(per_epoch: dict, smooth: dict) -> Claim:
    """V2: `per_epoch[variant]` is its mean training loss at every epoch (batch GD first); `smooth[variant]` the
    spread of its relative step-to-step loss changes over the second half of training."""
    rule = (
        "at every epoch the mean training loss of SGD and of mini-batch SGD is below batch GD's, and batch GD has "
        "the smallest spread (std) of relative step-to-step loss changes over the second half of training"
    )
    if len(per_epoch) < 3:
        return V2.inconclusive(rule, "runs missing")
    gd, *others = per_epoch
    ahead = all(np.all(per_epoch[o] < per_epoch[gd]) for o in others)
    smoothest = min(smooth, key=smooth.get) == gd
    evidence = {f"{k}: final training loss": float(v[-1]) for k, v in per_epoch.items()}
    evidence |= {f"{k}: step-to-step spread": v for k, v in smooth.items()}
    verdict = "supported" if ahead and smoothest else "not supported"
    why = ("stochastic variants ahead at every epoch" if ahead else "batch GD is not behind at every epoch") + (
        "; batch GD the smoothest" if smoothest else f"; the smoothest is {min(smooth, key=smooth.get)}"
    )
    return V2.claim(rule, verdict, evidence, why)


def rule_l1(
    lrs: Sequence[float],
    labels: Sequence[str] | None,
    theory: Sequence[str],
    *,
    curvature: float,
    tolerance: float,
    steps: int,
) -> Claim:
    """L1: the label of every tested lr's trajectory on the quadratic (None: the task is missing), found from its
    errors alone (`regimes.classify_trajectory`), equals the closed form's (`regimes.quadratic_theory`)."""
    rule = (
        "every tested lr's label from its trajectory alone (period-2: |e_t| stays |e_0| while its sign flips every "
        f"step; diverges: |e_T| > |e_0|; stalls: |e_T| > {tolerance:g} |e_0|; oscillates: the sign flips; else "
        f"converges) equals the closed form's from eta L (L = {curvature:g}): eta L > 2 diverges, eta L = 2 "
        f"period-2, |1 - eta L|^{steps} > {tolerance:g} stalls, 1 < eta L < 2 oscillates, eta L <= 1 converges"
    )
    if labels is None:
        return L1.inconclusive(rule, "the quadratic task is missing")
    mismatches = [(lr, g, w) for lr, g, w in zip(lrs, labels, theory) if g != w]
    evidence: dict = {
        f"lr {lr:g} (eta L {lr * curvature:g})": f"{g} (theory {w})" for lr, g, w in zip(lrs, labels, theory)
    }
    on = [f"{k}/L" for k in (1, 2) if any(lr * curvature == k for lr in lrs)]
    evidence["boundaries on the grid"] = ", ".join(on) or "none"
    why = (
        f"{len(lrs)} of {len(lrs)} learning rates match"
        if not mismatches
        else "mismatch at " + ", ".join(f"lr {lr:g}: {g} vs {w}" for lr, g, w in mismatches)
    )
    return L1.claim(rule, "not supported" if mismatches else "supported", evidence, why)


def rule_s1(b_maxes: dict[str, dict[str, int]], batch_base: int, largest: int) -> Claim:
    """S1: b_maxes[optimizer][scaling rule] -> B_max (`linear_scaling.b_max`)."""
    rule = (
        f"per optimizer: B_max (mean final test accuracy within {S1_PP:g} pp of the B_base run at every batch up to "
        "it) of linear+warmup above B_base and above B_max of linear without warmup"
    )
    if not b_maxes:
        return S1.inconclusive(rule, "no runs stored")
    evidence = {f"{opt}: B_max {r}": b for opt, per in b_maxes.items() for r, b in per.items()}
    failed = [o for o, per in b_maxes.items() if per["linear+warmup"] <= batch_base]
    lower = [o for o, per in b_maxes.items() if per["linear+warmup"] < per["linear"]]
    ties = [o for o, per in b_maxes.items() if per["linear+warmup"] == per["linear"]]
    if failed or lower:
        why = (f"linear+warmup breaks right after B_base for {', '.join(failed)}" if failed else "") + (
            f"{'; ' if failed else ''}warmup lowers B_max for {', '.join(lower)}" if lower else ""
        )
        return S1.claim(rule, "not supported", evidence, why)
    if ties:
        at_top = all(b_maxes[o]["linear"] == largest for o in ties)
        why = f"warmup gives the same B_max as no warmup for {', '.join(ties)}" + (
            f" (both reach the largest batch tested, {largest}: raise the batch sizes to see a difference)"
            if at_top
            else ""
        )
        return S1.claim(rule, "inconclusive", evidence, why)
    why = "; ".join(f"{o}: {per['linear']} -> {per['linear+warmup']} with warmup" for o, per in b_maxes.items())
    return S1.claim(rule, "supported", evidence, why)


def rule_s2(best: dict, largest: int, diverged: dict | None = None) -> Claim:
    """S2: `best[optimizer]` = (its best lr, that lr's final test accuracies over seeds) at the largest batch;
    `diverged[optimizer]` says how many of its runs diverged there."""
    rule = (
        "at the largest batch, the better of LARS and LAMB (each at its best lr) has a higher mean final test "
        "accuracy than SGD with linear scaling and warmup: one-sided paired t over seeds, alpha 0.05"
    )
    diverged = diverged or {}
    if "sgd" not in best or not ({"lars", "lamb"} & set(best)):
        shown = {f"{o} (lr {best[o][0]:g}) test acc (%)": 100 * float(np.nanmean(best[o][1])) for o in best}
        evidence = {"batch size": largest, **shown, **{f"{o}: diverged": v for o, v in diverged.items()}}
        why = "no finished runs to compare: " + ("; ".join(f"{o}: {v}" for o, v in diverged.items()) or "runs missing")
        if "sgd" not in best and "sgd" in diverged:
            why += " (a diverged run is left out of every comparison, so the rule cannot compare against SGD)"
        return S2.inconclusive(rule, why, evidence)
    challenger = max((o for o in ("lars", "lamb") if o in best), key=lambda o: np.nanmean(best[o][1]))
    decision = higher(best["sgd"][1], best[challenger][1])
    evidence = {
        "batch size": largest,
        "SGD (linear scaling) test acc (%)": 100 * float(np.nanmean(best["sgd"][1])),
        **{
            f"{o} (lr {best[o][0]:g}) test acc (%)": 100 * float(np.nanmean(best[o][1]))
            for o in ("lars", "lamb")
            if o in best
        },
        **decision.evidence(f"{challenger} - SGD: ", 100, "pp"),
    }
    return S2.claim(rule, decision.verdict, evidence, f"{challenger} vs SGD: {decision.why}")
