"""The claims of the Adam-and-batch-size family (AS1-AS6), each decided by a pure rule over the numbers its study
gathers from the store, so every rule can be tested on synthetic input. Thresholds are stated before any number is
seen and come from the config, never from the data."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from ...analysis.decisions import (
    ALPHA,
    Decision,
    equivalent,
    exponent_interval,
    fit_exponent,
    fixed_sequence,
    holm,
    holm_evidence,
    joint_verdict,
    seeds_needed,
)
from ...analysis.trends import trend
from ...claims import Claim, ClaimSpec
from .optima import beta2_for, optimum, widths

# --- lr-surge (AS1, AS2) -------------------------------------------------------------------------------------------

LI_2024 = (
    "Li et al. 2024, Surge Phenomenon in Optimal Learning Rate and Batch Size Scaling (NeurIPS 2024, arXiv 2405.14578)"
)
MCCANDLISH = "McCandlish, Kaplan, Amodei et al. 2018, An Empirical Model of Large-Batch Training (arXiv 1812.06162)"

AS1 = ClaimSpec(
    "AS1",
    "For SGD the optimal lr grows with the batch size and saturates: eps_max / (1 + B_noise / B).",
    f"{MCCANDLISH}, sec. 2.2; {LI_2024}, sec. 1 and 3",
)
AS2 = ClaimSpec(
    "AS2",
    "For Adam the optimal lr surges: it rises, peaks near B_noise, then falls, "
    "eps_max / (0.5 (sqrt(B_noise / B) + sqrt(B / B_noise))).",
    f"{LI_2024}, sec. 3 (the sign-of-gradient case) and sec. 4 (the Fashion-MNIST CNN)",
)


def surge_rule(margin: float, level: float) -> str:
    return (
        "r = leave-one-batch-size-out weighted squared error of log lr_opt under the surge form / under the SGD form "
        "(weights: 1 / the bootstrap variance of each batch size's log lr_opt, seeds resampled); its "
        f"{100 * level:g} % bootstrap interval decides against 1 - margin = {1 - margin:g}: the surge form better "
        "(upper end below) or not better (lower end at or above); batch sizes whose optimum is the lr grid's first "
        "or last point are left out of the fits (censored) and named; fewer than 4 left: inconclusive. AS2 also needs "
        "the surge fit's peak B_peak inside the batch sizes fitted: the better fit peaking outside them is no surge "
        "measured (not supported)"
    )


def _undecided(spec: ClaimSpec, rule: str, cmp: dict, margin: float, seeds: int, evidence: dict) -> Claim:
    """Inconclusive, with about how many seeds would move the interval off the threshold (the bootstrap sd of
    log r scales as 1 / sqrt(seeds))."""
    sd = cmp["log_ratio_sd"] * math.sqrt(seeds)
    distance = abs(math.log(max(cmp["ratio"], 1e-300)) - math.log(1 - margin))
    need = seeds_needed(sd, distance) if np.isfinite(sd) else None
    evidence = evidence | {"seeds needed (about)": need if need is not None else "more than the ratio's spread allows"}
    why = (
        f"the {cmp['replicates_used']} bootstrap replicates put r in [{cmp['ratio_ci'][0]:.3g}, "
        f"{cmp['ratio_ci'][1]:.3g}], across the threshold {1 - margin:g}"
    )
    return spec.claim(rule, "inconclusive", evidence, why)


def surge_evidence(cmp: dict, batch_sizes, censored, noise: dict) -> dict:
    """The numbers every lr-surge verdict shows: the ratio, both fits, the peak and the noise scales beside it."""
    (sgd_eps, sgd_bn, _), (surge_eps, _, _) = cmp["fits"]["sgd"], cmp["fits"]["surge"]
    out = {
        "r = E_surge / E_sgd": cmp["ratio"],
        "r interval lo": cmp["ratio_ci"][0],
        "r interval hi": cmp["ratio_ci"][1],
        "SGD form: eps_max": math.exp(sgd_eps),
        "SGD form: B_noise": math.exp(sgd_bn),
        "surge form: eps_max": math.exp(surge_eps),
        "B_peak (surge form's B_noise)": cmp["b_peak"],
        "B_peak at the fit's bound (no peak within B / 1000 .. 1000 B)": "yes" if cmp.get("b_peak_at_bound") else "no",
        "B_peak 95% lo": cmp["b_peak_ci"][0],
        "B_peak 95% hi": cmp["b_peak_ci"][1],
        "batch sizes fitted": ", ".join(str(b) for b in batch_sizes),
        "censored (optimum at the grid's edge)": ", ".join(str(b) for b in censored) or "none",
    }
    for name, value in noise.items():
        out[name] = value
        if name in ("B_simple", "B_noise (Hessian)") and np.isfinite(value) and value > 0:
            out[f"B_peak / {name}"] = cmp["b_peak"] / value
    return out


def rule_surge(
    spec: ClaimSpec, cmp: dict | None, batch_sizes, censored, noise: dict, margin: float, level: float, seeds: int,
    expect: str,
) -> Claim:  # fmt: skip
    """AS1 (expect "sgd") and AS2 (expect "surge") by one statistic, r = E_surge / E_sgd (see `surge_rule`).

    AS2: supported when r's interval lies below 1 - margin and the surge fit peaks inside the batch sizes fitted;
    not supported when the interval's lower end is at or above 1 - margin, or when it lies below and the surge fit
    peaks outside the batch sizes fitted: no rise-and-fall measured. (Whether B_peak's whole 95 % interval lies
    outside the grid is shown in the evidence, not judged: that condition was thought of after the quick profile's
    first pilot, and a rule is not changed after seeing which way it turns a claim.) AS1: supported when the lower
    end is at or above 1 - margin (the monotone, saturating form is not beaten by the margin); not supported when
    the whole interval lies below it."""
    rule = surge_rule(margin, level)
    if cmp is None:
        why = f"fewer than 4 batch sizes with an optimum inside the lr grid (censored: {', '.join(map(str, censored))})"
        return spec.inconclusive(rule, why)
    evidence = surge_evidence(cmp, batch_sizes, censored, noise)
    lo, hi = cmp["ratio_ci"]
    threshold = 1 - margin
    inside = min(batch_sizes) <= cmp["b_peak"] <= max(batch_sizes)
    peak_lo, peak_hi = cmp["b_peak_ci"]
    beyond = peak_lo > max(batch_sizes) or peak_hi < min(batch_sizes)
    evidence |= {"B_peak 95% interval wholly outside the batch sizes (shown, not judged)": "yes" if beyond else "no"}
    if not np.isfinite([lo, hi]).all():
        return spec.inconclusive(rule, "the bootstrap gave no interval for r", evidence)
    if expect == "surge":
        if hi < threshold and inside:
            why = (
                f"the surge form predicts held-out batch sizes better (r <= {hi:.3g}), peaking at B {cmp['b_peak']:.3g}"
            )
            return spec.claim(rule, "supported", evidence, why)
        if lo >= threshold or hi < threshold:
            why = (
                f"the surge form is not better by the margin (r >= {lo:.3g})"
                if lo >= threshold
                else f"the better fit peaks at B {cmp['b_peak']:.3g}, outside the batch sizes measured: no fall seen"
            )
            return spec.claim(rule, "not supported", evidence, why)
    else:
        if lo >= threshold:
            why = f"the monotone form is not beaten by the margin on held-out batch sizes (r >= {lo:.3g})"
            return spec.claim(rule, "supported", evidence, why)
        if hi < threshold:
            why = (
                f"the optimal lr falls beyond B {cmp['b_peak']:.3g}: the surge form is better (r <= {hi:.3g})"
                if inside
                else f"the surge form, rising without saturating on this grid, is better (r <= {hi:.3g})"
            )
            return spec.claim(rule, "not supported", evidence, why)
    return _undecided(spec, rule, cmp, margin, seeds, evidence)


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
