"""The claims of the equivalence family (E1-E8, A1-A2), each decided by a pure rule over a few numbers.

The studies gather the numbers from the store (a missing or failed task gives NaN) and pass them
here, so every rule can be tested on synthetic input. The numbers are differences between weights
after a step (or a few): "relative" is ||A - X|| / ||A - theta0||, the difference measured against
the size of the update. A deterministic computation has no seeds to average over, so a rule is a
threshold on the measured value; a value that is missing gives `inconclusive`, never a verdict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ...claims import Claim, ClaimSpec

# rounding level of a float64 comparison (a float64 difference ~1e-16 relative; 1e-9 leaves a wide margin)
EXACT_F64 = 1e-9
# float32: the direction of the averaged update must agree with the batch update
EXACT_F32_COS = 0.9999
# "breaks the equivalence": the difference is a sizeable fraction of the update itself
ADAM_BREAKS = 0.1
BN_BREAKS = 1e-3
# gradient accumulation in float64: exact up to a few roundings of each gradient
ACCUMULATION_EXACT = 1e-12
ACCUMULATION_BN_DIFFERS = 1e-6

LINEARITY = "linearity of the SGD update: mean_i(theta0 - lr g_i) = theta0 - lr mean_i g_i"
ADAM = "Kingma & Ba 2015 (Adam: the first update is lr g / (|g| + eps), about lr sign(g))"
BATCHNORM = "Ioffe & Szegedy 2015 (Batch Normalization: the output of an example depends on its batch)"
ACCUMULATION = "gradient accumulation as practised in large-batch training (e.g. Goyal et al. 2017)"
LARS = "You, Gitman & Ginsburg 2017 (LARS: the trust ratio is taken on the whole step's gradient)"

E1 = ClaimSpec(
    "E1",
    "Plain SGD without BatchNorm: one step on a batch equals the average of the single-example steps (up to rounding).",
    LINEARITY,
)
E2 = ClaimSpec(
    "E2",
    "Momentum does not matter for one step from a fresh optimizer state: the equivalence holds as for plain SGD.",
    LINEARITY + "; a fresh momentum buffer's first step is lr g",
)
E3 = ClaimSpec("E3", "Adam breaks the equivalence already at its first step.", ADAM)
E4 = ClaimSpec(
    "E4",
    "BatchNorm breaks the equivalence (single-example passes normalised by running statistics estimated from "
    "training data).",
    BATCHNORM,
)
E5 = ClaimSpec("E5", "Weight decay keeps the equivalence (the decay term is linear in the weights).", LINEARITY)
E6 = ClaimSpec(
    "E6",
    "Gradient accumulation with the same optimizer is exact: K momentum steps on batches equal K momentum "
    "steps on the averaged per-example gradients.",
    ACCUMULATION,
)
E7 = ClaimSpec(
    "E7",
    "The difference between K batch steps and the same examples taken one at a time grows with K.",
    "sequential single-example SGD vs mini-batch SGD (order and step count differ)",
)
E8 = ClaimSpec(
    "E8",
    "Averaged per-example gradients applied without momentum differ from the batch run more than "
    "single-example steps do, and the cause is the dropped momentum, not the averaging.",
    ACCUMULATION,
)
A1 = ClaimSpec(
    "A1",
    "Gradient accumulation (micro-batches) gives the weights of the direct batch, without BatchNorm, for "
    "SGD, momentum, Adam and LARS.",
    f"{ACCUMULATION}; {LARS}",
)
A2 = ClaimSpec(
    "A2",
    "With BatchNorm, gradient accumulation differs from the direct batch (each micro-batch is normalised "
    "by its own statistics).",
    BATCHNORM,
)

FLOAT32_NOTE = (
    "the float32 relative difference is reported, not judged: averaging N float32 copies of the "
    "weights rounds every weight by about 1e-7 of its own size, which is large next to one small "
    "update (averaging the updates theta_i - theta0 instead shrinks it)"
)


def _finite(x) -> bool:
    return x is not None and math.isfinite(float(x))


def rule_exact(
    spec: ClaimSpec,
    rel64: float,
    cos32: float | None = None,
    rel32: float | None = None,
    rel32_updates: float | None = None,
) -> Claim:
    """E1, E2, E5: A = B up to rounding. float64: relative difference < EXACT_F64. float32 (when run):
    cos(A - theta0, B - theta0) > EXACT_F32_COS; its relative difference is evidence only."""
    rule = (
        f"float64: ||A-B|| / ||A-theta0|| < {EXACT_F64:g}; float32: cos(A-theta0, B-theta0) > "
        f"{EXACT_F32_COS:g} (its relative difference is shown, not judged)"
    )
    if not _finite(rel64):
        return spec.inconclusive(rule, "the float64 comparison is missing (not run, or failed)")
    evidence: dict = {"float64 ||A-B||/||A-theta0||": float(rel64)}
    ok64 = rel64 < EXACT_F64
    ok32 = True
    if _finite(cos32):
        evidence["float32 1 - cos(A-theta0, B-theta0)"] = 1.0 - float(cos32)
        ok32 = cos32 > EXACT_F32_COS
    if _finite(rel32):
        evidence["float32 ||A-B||/||A-theta0|| (not judged)"] = float(rel32)
    if _finite(rel32_updates):
        evidence["float32, B as the average of the updates: relative difference"] = float(rel32_updates)
    verdict = "supported" if ok64 and ok32 else "not supported"
    parts = [f"float64 relative difference {rel64:.2g} {'<' if ok64 else '>='} {EXACT_F64:g}"]
    if _finite(cos32):
        parts.append(f"float32 1 - cosine {1 - cos32:.2g} {'<' if ok32 else '>='} {1 - EXACT_F32_COS:.2g}")
        parts.append(FLOAT32_NOTE)
    else:
        parts.append("float32 was not run: decided on float64 alone")
    return spec.claim(rule, verdict, evidence, "; ".join(parts))


def rule_e1(rel64, cos32=None, rel32=None, rel32_updates=None) -> Claim:
    """E1: plain SGD, cnn without BatchNorm."""
    return rule_exact(E1, rel64, cos32, rel32, rel32_updates)


def rule_e2(rel64, cos32=None, rel32=None, rel32_updates=None) -> Claim:
    """E2: SGD with momentum 0.9, one step from a fresh state, cnn without BatchNorm."""
    return rule_exact(E2, rel64, cos32, rel32, rel32_updates)


def rule_e5(rel64, cos32=None, rel32=None, rel32_updates=None) -> Claim:
    """E5: SGD with weight decay, cnn without BatchNorm."""
    return rule_exact(E5, rel64, cos32, rel32, rel32_updates)


def rule_e3(
    rel: float,
    cos: float | None = None,
    signlike_batch: float | None = None,
    signlike_single: float | None = None,
    shrink: float | None = None,
    precision: str = "float64",
) -> Claim:
    """E3: Adam's first step: ||A-B|| / ||A-theta0|| > ADAM_BREAKS. `signlike_*`: fraction of coordinates
    whose update is +-lr (batch step, single-example steps); `shrink` = ||B-theta0|| / ||A-theta0||."""
    rule = f"{precision}: ||A-B|| / ||A-theta0|| > {ADAM_BREAKS:g} (cosine and sign-like fractions shown)"
    if not _finite(rel):
        return E3.inconclusive(rule, "the Adam comparison is missing (not run, or failed)")
    evidence: dict = {f"{precision} ||A-B||/||A-theta0||": float(rel)}
    for label, value in (
        ("cos(A-theta0, B-theta0)", cos),
        ("batch step: fraction of coordinates moved by lr", signlike_batch),
        ("single-example steps: fraction moved by lr (mean)", signlike_single),
        ("||B-theta0|| / ||A-theta0||", shrink),
    ):
        if _finite(value):
            evidence[label] = float(value)
    verdict = "supported" if rel > ADAM_BREAKS else "not supported"
    why = (
        f"relative difference {rel:.3g} {'>' if rel > ADAM_BREAKS else '<='} {ADAM_BREAKS:g}. Adam's first "
        "update is lr g / (|g| + eps), about lr sign(g) in every coordinate whose gradient is not tiny, so "
        "each single-example step has the same size whatever the gradient; their average mixes signs "
        "that disagree between examples, giving a shorter vector that points elsewhere than the batch "
        "update (the sign of the mean gradient)"
    )
    if _finite(cos):
        why += f": cosine {cos:.3g}"
    if _finite(shrink):
        why += f", length ratio {shrink:.3g}"
    return E3.claim(rule, verdict, evidence, why)


def rule_e4(
    rel64: float,
    init_rel64: float | None = None,
    *,
    cos: float | None = None,
    length: float | None = None,
    init_cos: float | None = None,
    init_length: float | None = None,
    stats_examples: float | None = None,
    buffers_rel: float | None = None,
    error: str | None = None,
    others: dict[str, float] | None = None,
) -> Claim:
    """E4: cnn-bn, plain SGD, single-example passes in eval mode with running statistics estimated from
    training data at theta0 (`rel64`, `cos`, `length` = ||B-theta0|| / ||A-theta0||): float64 relative
    difference > BN_BREAKS.

    The same numbers with the initial running statistics (mean 0, variance 1: `init_*`) are evidence only:
    with them a single-example pass runs the network un-normalised, a different function, so their
    difference mixes that with BatchNorm's own effect. `stats_examples`: how many training images the
    statistics came from; `buffers_rel`: the running buffers' difference; `error`: the task's named error
    (e.g. bn_single=train); `others`: the judged difference for the other optimizers (evidence)."""
    rule = (
        f"cnn-bn, plain SGD, bn_single=eval with running statistics estimated from training data at theta0, "
        f"float64: ||A-B|| / ||A-theta0|| > {BN_BREAKS:g} (with the initial statistics (0, 1): shown, not judged)"
    )
    if error:
        return E4.inconclusive(rule, f"the cnn-bn task ended with a named error: {error}")
    init = ""
    if _finite(init_rel64):
        init = f"with the initial running statistics (mean 0, variance 1) the difference is {init_rel64:.3g}"
        if _finite(init_length):
            init += f", but there B moves only {init_length:.2g} times as far as A"
        init += (
            ": un-normalised, each single-example pass is a different function from the batch pass, and that "
            "number mixes this with BatchNorm's own effect"
        )
    if not _finite(rel64):
        return E4.inconclusive(
            rule,
            "the comparison with running statistics estimated from data is missing" + (f"; {init}" if init else ""),
        )
    evidence: dict = {"data statistics: float64 ||A-B||/||A-theta0||": float(rel64)}
    for label, value in (
        ("data statistics: cos(A-theta0, B-theta0)", cos),
        ("data statistics: ||B-theta0|| / ||A-theta0||", length),
        ("data statistics: training images they were estimated from", stats_examples),
        ("initial statistics (0, 1): float64 ||A-B||/||A-theta0|| (not judged)", init_rel64),
        ("initial statistics (0, 1): cos(A-theta0, B-theta0)", init_cos),
        ("initial statistics (0, 1): ||B-theta0|| / ||A-theta0||", init_length),
        ("running buffers: ||A-B|| / ||A-buffers0||", buffers_rel),
    ):
        if _finite(value):
            evidence[label] = float(value)
    for name, value in (others or {}).items():
        if _finite(value):
            evidence[f"{name}, data statistics: ||A-B||/||A-theta0||"] = float(value)
    ok = rel64 > BN_BREAKS
    why = f"relative difference {rel64:.3g} {'>' if ok else '<='} {BN_BREAKS:g} with running statistics estimated from"
    why += f" {stats_examples:.0f} training images at theta0" if _finite(stats_examples) else " training data at theta0"
    if _finite(cos) and _finite(length):
        why += f" (cosine {cos:.3g}, B moves {length:.3g} times as far as A)"
    why += (
        ". In the batch step every example is normalised by the batch's mean and variance, and the gradient flows "
        "through those statistics, which removes from each channel's gradient its mean over the batch and its "
        "component along the normalised values; a single-example pass in eval mode divides by fixed statistics "
        "and keeps both, so the single-example "
        "gradients no longer average to the batch gradient. The running statistics move only in the batch step"
    )
    if init:
        why += f". For comparison, {init}"
    return E4.claim(rule, "supported" if ok else "not supported", evidence, why)


def _by_k(ks: Sequence[int], *arrays) -> tuple[np.ndarray, ...]:
    order = np.argsort(np.asarray(ks))
    return (np.asarray(ks)[order], *(np.asarray(a, dtype=float)[order] for a in arrays))


def rule_e6(ks: Sequence[int], rel_ad: Sequence[float]) -> Claim:
    """E6: ||A-D|| / ||A-theta0|| < EXACT_F64 (float64) for every K."""
    rule = f"float64: ||A-D|| / ||A-theta0|| < {EXACT_F64:g} for every K"
    ks, rel = _by_k(ks, rel_ad)
    if ks.size == 0 or not np.isfinite(rel).all():
        missing = [int(k) for k, r in zip(ks, rel) if not np.isfinite(r)]
        return E6.inconclusive(rule, f"missing comparisons (K = {missing or 'none run'})")
    evidence = {f"K={k}: ||A-D||/||A-theta0||": float(r) for k, r in zip(ks, rel)}
    bad = [int(k) for k, r in zip(ks, rel) if not r < EXACT_F64]
    why = (
        f"largest relative difference {rel.max():.2g}: the mean of the per-example gradients is the batch "
        "gradient, and the same momentum update applied to the same gradient gives the same weights, "
        "whatever way the gradient was summed"
        if not bad
        else f"relative difference >= {EXACT_F64:g} at K = {bad}"
    )
    return E6.claim(rule, "supported" if not bad else "not supported", evidence, why)


def rule_e7(ks: Sequence[int], ab_mean: Sequence[float], ab_max: Sequence[float] | None = None) -> Claim:
    """E7: mean |A-B| strictly increases with K (at least two K); `ab_max` (max |A-B|) is evidence only."""
    rule = "mean |A-B| over all weights increases strictly from each K to the next"
    ks, mean, mx = _by_k(ks, ab_mean, ab_max if ab_max is not None else np.full(len(ab_mean), np.nan))
    keep = np.isfinite(mean)
    ks, mean, mx = ks[keep], mean[keep], mx[keep]
    if ks.size < 2:
        return E7.inconclusive(rule, "needs the comparison at two or more K")
    evidence: dict = {}
    for k, m, x in zip(ks, mean, mx):
        evidence[f"K={k}: mean |A-B|"] = float(m)
        if np.isfinite(x):
            evidence[f"K={k}: max |A-B|"] = float(x)
    steps = np.diff(mean)
    up = bool((steps > 0).all())
    if up:
        why = (
            f"mean |A-B| grows at every step of K ({' < '.join(f'{m:.3g}' for m in mean)}): the single-example "
            "run takes b steps per batch, each on its own example at the weights the previous one left, so "
            "it follows its own path, which drifts further from the batch run's with every batch"
        )
    else:
        at = int(np.argmin(steps))
        why = f"mean |A-B| does not grow from K={ks[at]} ({mean[at]:.3g}) to K={ks[at + 1]} ({mean[at + 1]:.3g})"
    return E7.claim(rule, "supported" if up else "not supported", evidence, why)


def rule_e8(
    ks: Sequence[int],
    ab_mean: Sequence[float],
    ac_mean: Sequence[float],
    rel_ad: Sequence[float],
    travel: Sequence[float] | None = None,
    batch_size: int | None = None,
) -> Claim:
    """E8: for every K, mean |A-C| > mean |A-B| and ||A-D|| / ||A-theta0|| < EXACT_F64 (float64).

    The second part is what makes the first readable: D averages the gradients exactly as C does but
    keeps the momentum, so when D equals A, whatever separates C from A is the dropped momentum.
    `travel`: ||B-theta0|| / ||A-theta0|| per K, and `batch_size` (b): evidence, and what the why says
    about how much farther B goes than A."""
    rule = f"for every K: mean |A-C| > mean |A-B|, and ||A-D|| / ||A-theta0|| < {EXACT_F64:g} (float64)"
    travel = np.full(len(ab_mean), np.nan) if travel is None else travel
    ks, ab, ac, ad, far = _by_k(ks, ab_mean, ac_mean, rel_ad, travel)
    keep = np.isfinite(ab) & np.isfinite(ac) & np.isfinite(ad)
    if not keep.any():
        return E8.inconclusive(rule, "the multistep comparisons are missing")
    ks, ab, ac, ad, far = ks[keep], ab[keep], ac[keep], ad[keep], far[keep]
    evidence: dict = {}
    for k, b, c, d, f in zip(ks, ab, ac, ad, far):
        evidence |= {
            f"K={k}: mean |A-B|": float(b),
            f"K={k}: mean |A-C|": float(c),
            f"K={k}: ||A-D||/||A-theta0||": float(d),
        }
        if np.isfinite(f):
            evidence[f"K={k}: ||B-theta0||/||A-theta0||"] = float(f)
    larger = ac > ab
    exact = ad < EXACT_F64
    cause = (
        "D averages the per-example gradients exactly as C does but keeps the momentum, and D equals A "
        "to rounding: so the averaging (accumulation) is exact, and C differs from A only because it "
        "dropped the momentum"
        if exact.all()
        else f"but A-D is not at rounding level at K = {[int(k) for k in ks[~exact]]}, so the cause is not isolated"
    )
    if larger.all() and exact.all():
        return E8.claim(rule, "supported", evidence, f"mean |A-C| exceeds mean |A-B| at every K; {cause}")
    if 1 in ks:
        cause += " (at K=1 C equals A too: a fresh momentum buffer's first step is lr g)"
    smaller = [int(k) for k in ks[~larger]]
    why = (
        f"mean |A-C| is not larger than mean |A-B| at K = {smaller}: the single-example run takes b steps of "
        f"the same lr per batch where A takes one, so it is the farther one{_travel(far, batch_size)}. "
        f"The comparison of C with B is confounded (step count, order and momentum all differ); {cause}"
        if smaller
        else f"mean |A-C| > mean |A-B| at every K, {cause}"
    )
    return E8.claim(rule, "not supported", evidence, why)


def _span(lo: float, hi: float, fmt: str) -> str:
    a, z = f"{lo:{fmt}}", f"{hi:{fmt}}"
    return a if a == z else f"{a} to {z}"


def _travel(ratio: np.ndarray, b: int | None) -> str:
    """How much farther from theta0 B ends than A, in the measured ratios ||B-theta0|| / ||A-theta0|| (and in
    units of b, the batch size); '' when none was measured."""
    ratio = ratio[np.isfinite(ratio)]
    if not ratio.size:
        return ""
    lo, hi = float(ratio.min()), float(ratio.max())
    out = f", ending {_span(lo, hi, '.3g')} times as far from theta0 as A"
    if b:
        out += f" ({_span(lo / b, hi / b, '.3g')} times b = {b})"
        if lo > b:
            out += (
                ": more than b, as its momentum buffer fills within its first few dozen steps while A's fills "
                "over K steps, so more of B's steps are amplified towards 1 / (1 - momentum)"
            )
    return out


def every_optimizer_claim(
    spec: ClaimSpec,
    rule: str,
    labels: Sequence[str],
    rel: Sequence[float],
    *,
    below: float | None = None,
    above: float | None = None,
    why: str,
) -> Claim:
    """Supported when every optimizer's relative difference lies below `below` (or above `above`); `why`
    explains a supported verdict and may use {worst}, the value closest to the threshold."""
    rel = np.asarray(rel, dtype=float)
    if rel.size == 0 or not np.isfinite(rel).all():
        missing = [lab for lab, r in zip(labels, rel) if not np.isfinite(r)]
        return spec.inconclusive(rule, f"missing comparisons: {missing or 'none run'}")
    evidence = {f"{lab}: relative difference": float(r) for lab, r in zip(labels, rel)}
    if below is not None:
        bad, worst, side = [lab for lab, r in zip(labels, rel) if not r < below], rel.max(), f">= {below:g}"
    else:
        bad, worst, side = [lab for lab, r in zip(labels, rel) if not r > above], rel.min(), f"<= {above:g}"
    if bad:
        return spec.claim(rule, "not supported", evidence, f"relative difference {side} for {', '.join(bad)}")
    return spec.claim(rule, "supported", evidence, why.format(worst=f"{worst:.2g}"))


def rule_a1(labels: Sequence[str], rel: Sequence[float]) -> Claim:
    """A1: without BatchNorm, ||micro - direct|| / ||direct - theta0|| < ACCUMULATION_EXACT for every optimizer
    (`labels`: their names as the study shows them, "LARS" among them when run)."""
    rule = (
        f"float64, no BatchNorm: ||W_micro - W_direct|| / ||W_direct - theta0|| < {ACCUMULATION_EXACT:g} "
        "for every optimizer"
    )
    why = (
        "largest relative difference {worst}: with a mean loss, the batch gradient is the sum of the micro-batch "
        "gradients weighted by their share of the batch, so only the order of the additions changes, and the "
        "optimizer receives the same gradient"
    )
    if "LARS" in labels:
        why += (
            "; this holds for LARS too: its layer-wise trust ratio ||w|| / ||g|| is nonlinear in the gradient, but "
            "it is taken once per step, on the whole accumulated gradient"
        )
    return every_optimizer_claim(A1, rule, labels, rel, below=ACCUMULATION_EXACT, why=why)


def rule_a2(labels: Sequence[str], rel: Sequence[float]) -> Claim:
    """A2: with BatchNorm, ||micro - direct|| / ||direct - theta0|| > ACCUMULATION_BN_DIFFERS for every optimizer."""
    rule = (
        f"float64, cnn-bn: ||W_micro - W_direct|| / ||W_direct - theta0|| > {ACCUMULATION_BN_DIFFERS:g} "
        "for every optimizer"
    )
    why = (
        "smallest relative difference {worst}: each micro-batch is normalised by its own mean and variance, so the "
        "examples see different functions than in the whole batch, and the running statistics are updated once "
        "per micro-batch instead of once per step"
    )
    return every_optimizer_claim(A2, rule, labels, rel, above=ACCUMULATION_BN_DIFFERS, why=why)
