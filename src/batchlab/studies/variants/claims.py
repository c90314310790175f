"""The claims of the gradient-descent-variants family (V2, L1, S1, S2), each decided by a pure rule over the
numbers its study gathers from the store, so every rule can be tested on synthetic input."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from ...analysis.decisions import (
    ALPHA,
    Decision,
    equivalent,
    fixed_sequence,
    higher,
    holm,
    holm_evidence,
    joint_verdict,
    lower,
)
from ...claims import Claim, ClaimSpec

# The claims, as the studies declare them (gd-variants V2, lr-sensitivity L1, linear-scaling S1, lars S2).
V2 = ClaimSpec(
    "V2",
    "Batch gradient descent is smooth but slow per epoch: its loss never goes up from one step to the next, while "
    "SGD's fluctuates; over the first epochs SGD and mini-batch SGD get further per epoch than batch GD.",
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

V2_RISE = 1e-5  # a step "raises" the loss when it grows by more than this fraction: above float32 rounding of a mean
S1_PP = 1.0  # "keeps the accuracy": the final test accuracy within this many pp of the B_base run (TOST)
DIVERGED_ACC = 0.0  # the test accuracy a diverged run counts as: the worst outcome (its outputs are NaN)


def rises(loss: np.ndarray, rtol: float = V2_RISE) -> int:
    """How many steps of a loss curve go up by more than `rtol` of the loss before them; a non-finite loss after a
    finite one counts as a rise (diverging is not smooth)."""
    a, b = np.asarray(loss[:-1], dtype=float), np.asarray(loss[1:], dtype=float)
    with np.errstate(invalid="ignore"):
        up = (b - a > rtol * np.abs(a)) | (np.isfinite(a) & ~np.isfinite(b))
    return int(up.sum())


def _worst_epoch(variant: np.ndarray, gd: np.ndarray) -> np.ndarray:
    """Per seed, the largest log(loss / batch GD's loss) over the epochs given: below 0 when the variant is ahead at
    every one of them; +inf where the variant's loss is not finite (it diverged: behind)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(variant / gd)
    logs = np.where(np.isfinite(variant), logs, np.inf)
    return logs.max(axis=1)


def _diverged_decision(worst: np.ndarray, test: str) -> Decision:
    k = int(np.isposinf(worst).sum())
    why = f"{k} of {len(worst)} seeds diverged early (counted as behind)"
    return Decision("not supported", math.inf, (math.inf, math.inf), 1.0, test, (len(worst),), why)


def rule_v2(per_step: Mapping[str, np.ndarray], per_epoch: Mapping[str, np.ndarray], *, early: int) -> Claim:
    """V2: `per_step[variant]` [seeds, evaluations] the training loss after every step and `per_epoch[variant]`
    [seeds, epochs] the loss at the end of epochs 1, 2, ..., batch GD first, SGD (batch 1) second, then mini-batch;
    seed s is the same init in every variant. Three parts, all needed: batch GD smooth, SGD not, and over the first
    `early` epochs both stochastic variants ahead of batch GD per epoch (the textbook picture, e.g. Bottou, Curtis
    & Nocedal 2018, sec. 3), not "ahead at every epoch", which batch GD, converging linearly to the same noise
    floor, may stop being late in a long run."""
    rule = (
        f"(1) batch GD's training loss never rises from one step to the next in any seed (a rise: by more than "
        f"{V2_RISE:g} of the loss, above float32 rounding); (2) SGD's rises at some step in every seed; (3) at each of "
        f"epochs 1..{early}, SGD's and mini-batch SGD's training loss is below batch GD's: per seed the largest of the "
        f"{early} log(loss / batch GD's loss), below 0 by a one-sided t paired by seed, Holm over the two variants, "
        f"alpha {ALPHA:g}"
    )
    if len(per_step) < 3 or any(np.size(v) == 0 for v in (*per_step.values(), *per_epoch.values())):
        return V2.inconclusive(rule, "runs missing")
    gd, sgd, *_ = per_step
    seen = min(np.shape(v)[1] for v in per_epoch.values())
    if seen < early:
        return V2.inconclusive(rule, f"only {seen} epochs measured, the rule looks at the first {early}")
    up = {v: [rises(c) for c in np.atleast_2d(curves)] for v, curves in per_step.items()}
    smooth, fluctuates = all(k == 0 for k in up[gd]), all(k > 0 for k in up[sgd])
    base = np.asarray(per_epoch[gd], dtype=float)[:, :early]
    tests = {}
    for v in list(per_step)[1:]:
        worst = _worst_epoch(np.asarray(per_epoch[v], dtype=float)[:, :early], base)
        test = f"one-sided paired t on the worst of epochs 1..{early} of log(loss / batch GD's)"
        tests[v] = _diverged_decision(worst, test) if np.isposinf(worst).any() else lower(np.zeros_like(worst), worst)
    adjusted = holm([d.p for d in tests.values()])
    ahead = joint_verdict(list(tests.values()), adjusted)
    evidence: dict = {f"{v}: steps where the loss rose (per seed)": "/".join(map(str, k)) for v, k in up.items()}
    evidence |= {
        f"{v}: steps where the loss rose (%)": 100 * float(np.mean(k)) / max(np.shape(per_step[v])[1] - 1, 1)
        for v, k in up.items()
    }
    evidence |= {
        f"{v}: mean training loss at epoch {early}": float(np.mean(per_epoch[v][:, early - 1])) for v in per_epoch
    }
    evidence |= holm_evidence(
        {f"{v} vs batch GD, worst early epoch (log ratio)": d for v, d in tests.items()}, adjusted
    )
    parts = [
        "batch GD's loss never rose" if smooth else f"batch GD's loss rose at {max(up[gd])} steps in some seed",
        "SGD's rose in every seed" if fluctuates else "SGD's never rose in some seed",
    ]
    if ahead == "supported":
        parts.append(f"both stochastic variants ahead at each of epochs 1..{early} (Holm)")
    else:
        parts += [f"{v} vs batch GD ({d.verdict}): {d.why}" for v, d in tests.items()]
    verdict = "not supported" if not smooth or not fluctuates else ahead
    return V2.claim(rule, verdict, evidence, "; ".join(parts))


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


def keeps_accuracy(acc: Mapping[int, np.ndarray], batch_base: int) -> list[tuple[int, Decision]]:
    """S1's test at every B above B_base, in increasing B: TOST of the final test accuracy (pp, paired by seed)
    against B_base's within S1_PP (`acc[B]`: per-seed fractions, diverged seeds already at DIVERGED_ACC)."""
    base = 100 * np.asarray(acc[batch_base], dtype=float)
    return [(b, equivalent(base, 100 * np.asarray(acc[b], dtype=float), S1_PP)) for b in sorted(acc) if b > batch_base]


def _chain(acc: Mapping[int, np.ndarray], batch_base: int) -> tuple[int, tuple[int, Decision] | None]:
    """(B_max: the largest B up to which every B keeps the accuracy, the stop: (B, its decision) or None)."""
    tests = keeps_accuracy(acc, batch_base)
    k, stop = fixed_sequence([d for _, d in tests])
    return ([batch_base] + [b for b, _ in tests])[k], (tests[k] if stop is not None else None)


def b_max(acc: Mapping[int, np.ndarray], batch_base: int) -> int:
    """The largest B such that B and every batch below it keep B_base's accuracy (`keeps_accuracy`, in sequence);
    B_base itself when the first batch above it does not."""
    return _chain(acc, batch_base)[0]


def rule_s1(acc: Mapping[str, Mapping[str, Mapping[int, np.ndarray]]], batch_base: int) -> Claim:
    """S1: acc[optimizer][scaling rule][B] -> per-seed final test accuracies (seed s the same init and order for
    every B; a diverged seed already at DIVERGED_ACC, a missing one NaN), for "linear" and "linear+warmup"."""
    rule = (
        f"per optimizer, batches tested from B_base = {batch_base} up in a fixed sequence (each at alpha {ALPHA:g}, "
        f"stopping at the first that fails): B keeps the accuracy when its final test accuracy is within ±{S1_PP:g} "
        f"pp of B_base's (TOST paired by seed, 90 % CI; a diverged run counts {100 * DIVERGED_ACC:g} %); B_max is the "
        "last batch kept. Supported when linear+warmup keeps it beyond B_base, up to a batch at which linear scaling "
        "without warmup is shown to lose it (CI outside the margin); not supported when linear+warmup is shown to "
        "lose it right after B_base or at a batch linear without warmup keeps"
    )
    if not acc:
        return S1.inconclusive(rule, "no runs stored")
    evidence: dict = {}
    verdicts, whys = [], []
    for opt, per in acc.items():
        base = np.asarray(per["linear+warmup"].get(batch_base, []), dtype=float)
        if base.size and np.all(base[np.isfinite(base)] == DIVERGED_ACC) and np.isfinite(base).any():
            verdicts.append("inconclusive")  # a tie of diverged runs is no accuracy kept
            whys.append(f"{opt}: B_base = {batch_base} diverged in every seed: there is no accuracy to keep")
            continue
        (w_max, w_stop), (l_max, l_stop) = _chain(per["linear+warmup"], batch_base), _chain(per["linear"], batch_base)
        for name, bmax, stop in (("linear+warmup", w_max, w_stop), ("linear", l_max, l_stop)):
            evidence[f"{opt}: B_max {name}"] = bmax
            if stop is not None:
                b, d = stop
                evidence[f"{opt}: {name} stops at B {b}"] = f"{d.verdict}: {d.why}"
        w_lost = w_stop[0] if w_stop and w_stop[1].verdict == "not supported" else None
        l_lost = l_stop[0] if l_stop and l_stop[1].verdict == "not supported" else None
        first = min(b for b in per["linear+warmup"] if b > batch_base)
        if w_lost is not None and (w_lost == first or w_lost <= l_max):
            verdicts.append("not supported")
            where = "right after B_base" if w_lost == first else f"where linear without warmup keeps it (to {l_max})"
            whys.append(f"{opt}: linear+warmup loses the accuracy at {w_lost}, {where}")
        elif w_max > batch_base and l_lost is not None and l_lost <= w_max:
            verdicts.append("supported")
            whys.append(f"{opt}: linear+warmup keeps the accuracy to {w_max}, linear alone loses it at {l_lost}")
        else:
            verdicts.append("inconclusive")
            largest = max(per["linear"])
            if w_stop is None and l_stop is None:
                whys.append(f"{opt}: both keep the accuracy to the largest batch tested, {largest}: raise the batches")
            elif w_lost is not None and w_lost == l_lost:
                whys.append(
                    f"{opt}: both keep the accuracy to {w_max} and lose it at {w_lost}: warmup does not move B_max on "
                    "this grid (a batch between the two could)"
                )
            else:
                stops = (("linear+warmup", w_stop), ("linear", l_stop))
                whys.append(f"{opt}: " + "; ".join(f"{n} at {s[0]}: {s[1].why}" for n, s in stops if s is not None))
    verdict = next((v for v in ("not supported", "inconclusive") if v in verdicts), "supported")
    return S1.claim(rule, verdict, evidence, "; ".join(whys))


def rule_s2(test: Mapping[str, np.ndarray], lrs: Mapping[str, float], largest: int) -> Claim:
    """S2: test[optimizer] -> the final test accuracies (fractions; a diverged run at DIVERGED_ACC, a missing one
    NaN) of the test seeds at the largest batch, each optimizer at `lrs[optimizer]`: SGD's from the linear rule,
    LARS's and LAMB's the best of their grid on the tuning seeds, which the test seeds do not include."""
    rule = (
        f"at the largest batch, on test seeds disjoint from the tuning seeds that chose LARS's and LAMB's lr, each of "
        f"LARS and LAMB has a higher mean final test accuracy than SGD with linear scaling and warmup: one-sided t "
        f"paired by seed, Holm over the two, alpha {ALPHA:g}; a diverged run counts {100 * DIVERGED_ACC:g} %, the "
        "worst outcome"
    )
    shown = {
        f"{o} (lr {lrs[o]:g}) test acc (%)": 100 * float(np.nanmean(a)) for o, a in test.items() if np.isfinite(a).any()
    }
    evidence = {"batch size": largest, **shown}
    missing = [o for o in ("sgd", "lars", "lamb") if o not in test or not np.isfinite(test[o]).any()]
    if missing:
        return S2.inconclusive(rule, f"runs missing: {', '.join(missing)}", evidence)
    sgd = 100 * np.asarray(test["sgd"], dtype=float)
    tests = {o: higher(sgd, 100 * np.asarray(test[o], dtype=float)) for o in ("lars", "lamb")}
    adjusted = holm([d.p for d in tests.values()])
    evidence |= holm_evidence({f"{o} - SGD": d for o, d in tests.items()}, adjusted, unit="pp")
    verdict = joint_verdict(list(tests.values()), adjusted)
    why = "; ".join(f"{o} vs SGD: {d.why} (Holm p = {p:.2g})" for (o, d), p in zip(tests.items(), adjusted))
    return S2.claim(rule, verdict, evidence, why)
