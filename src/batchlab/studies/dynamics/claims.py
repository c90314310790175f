"""The claims D1-D8 of the batch-size family, each decided by a pure rule over small arrays.

A rule takes the seeds' final values (fractions for accuracies, in seed order) or their curves and
returns a Claim, so it can be tested on synthetic numbers; the studies only gather those arrays
from the store. The statistics (batchlab.analysis.decisions): every configuration uses the same
seeds (seed s fixes the init and the data order), so two configurations are compared seed by seed
(paired t) where both have the seed, by Welch's t otherwise; "within m" is a TOST equivalence test
(the 90 % CI of the difference inside ±m); "lower"/"larger" a one-sided test at alpha = 0.05;
several tests inside one claim are Holm-corrected. A diverged seed is left out and counted in the
evidence. Too few seeds to decide (fewer than 2, or a CI wider than the margin) gives
`inconclusive`, never `not supported`, with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ...analysis.decisions import (
    ALPHA,
    Decision,
    difference,
    equivalent,
    exponent_interval,
    holm,
    holm_evidence,
    joint_verdict,
    lower,
    ratio_within,
)
from ...analysis.stats import concavity, finite, linear_r2, pp, spearman
from ...claims import Claim, ClaimSpec, SeedRule, monotone_decrease_claim
from .common import HOFFER_2017, SHEN_2018, WILSON_2017

# The claims, as the studies declare them (batch-size-sweep D1, lr-compensation D2, schedule-switch D3,
# distance-grid D4 and D5, adam-vs-sgd D6-D8).
D1 = ClaimSpec(
    "D1",
    "At fixed lr and epochs, a larger batch gives lower final test accuracy.",
    "Keskar et al. 2017 (large-batch training); Hoffer et al. 2017",
)
D2 = ClaimSpec(
    "D2",
    "Raising the learning rate 10x at batch 1024 recovers the test accuracy of batch 64.",
    f"{SHEN_2018}; Goyal et al. 2017 (linear scaling rule)",
)
D3 = ClaimSpec(
    "D3",
    "A large batch does not get the model stuck: switching to a small batch, or raising the lr, at any "
    "point recovers the small-batch accuracy, while merely training longer at the large batch does not.",
    SHEN_2018,
)
D4 = ClaimSpec(
    "D4",
    "Better solutions lie farther from the initialisation: W grows as the batch shrinks or the lr grows, "
    "and test accuracy rises with W across the grid.",
    f"{SHEN_2018}; {HOFFER_2017}",
)
D5 = ClaimSpec(
    "D5",
    "Batch 1024 trained for 16x the epochs (as many steps as batch 64) reaches the distance from init "
    "and the test accuracy of batch 64.",
    f"{HOFFER_2017} (regime adaptation); {SHEN_2018}",
)
D6 = ClaimSpec(
    "D6",
    "For SGD the distance from init grows sublinearly in steps; for Adam nearly linearly.",
    f"{HOFFER_2017}; {SHEN_2018}",
)
D7 = ClaimSpec(
    "D7",
    "Adam travels much farther from the initialisation than SGD and generalises worse here.",
    f"{SHEN_2018}; {WILSON_2017}",
)
D8 = ClaimSpec(
    "D8",
    "SGD mostly rotates the weights on the sphere of their initial norm (norm kept, every layer within a "
    "small angle of its init); Adam moves every layer far from its initial direction.",
    SHEN_2018,
)

# The batch sizes the claim is stated for; a sweep may add others (the full profile also trains batch 2).
D1_BATCH_SIZES = (64, 256, 1024)


def d1_batch_sizes(batch_sizes: Sequence[int]) -> list[int]:
    """The batch sizes D1 compares: those of D1_BATCH_SIZES the sweep has, else (fewer than 2) all, in order."""
    sizes = [b for b in D1_BATCH_SIZES if b in batch_sizes]
    return sizes if len(sizes) >= 2 else sorted(batch_sizes)


def _evidence(d: Decision, label: str, scale: float = 1.0, unit: str = "pp") -> dict:
    return d.evidence(prefix=f"{label}: ", scale=scale, unit=unit)


def _in_pp(values) -> np.ndarray:
    """Accuracies (fractions, seed order) in percent, so that differences, CIs and margins read in pp."""
    return 100 * np.asarray(values, dtype=float)


def rule_d1(batch_sizes: Sequence[int], acc: Sequence[np.ndarray]) -> Claim:
    """D1: final test accuracy (seeds, fractions) falls significantly at each step up in batch size."""
    return monotone_decrease_claim(D1, list(batch_sizes), list(acc), "test accuracy", name="batch ")


def rule_d2(
    acc_small,
    acc_large_high_lr,
    acc_large=None,
    *,
    tol_pp: float = 0.5,
    labels: Sequence[str] = ("batch 64, lr 0.01", "batch 1024, lr 0.1", "batch 1024, lr 0.01"),
) -> Claim:
    """D2: the large batch at the raised lr is equivalent to the small batch within tol_pp (TOST, paired by seed).

    `acc_*` are the seeds' final test accuracies (fractions); `acc_large` (large batch at the base
    lr) only adds the gap being closed to the evidence.
    """
    rule = (
        f"test accuracy({labels[1]}) equivalent to test accuracy({labels[0]}) within ±{tol_pp:g} pp "
        f"(TOST, paired by seed, 90 % CI inside the margin)"
    )
    seeds = SeedRule(D2, rule, {labels[0]: acc_small, labels[1]: acc_large_high_lr})
    if unfinished := seeds.unfinished():
        return unfinished
    d = equivalent(_in_pp(acc_small), _in_pp(acc_large_high_lr), tol_pp)
    evidence: dict = {
        f"test accuracy {labels[0]} (%)": pp(finite(acc_small)),
        f"test accuracy {labels[1]} (%)": pp(finite(acc_large_high_lr)),
        **_evidence(d, f"{labels[1]} - {labels[0]}"),
    }
    if acc_large is not None and finite(acc_large).size:
        evidence[f"test accuracy {labels[2]} (%)"] = pp(finite(acc_large))
        evidence["gap without raising lr (pp)"] = pp(finite(acc_large)) - pp(finite(acc_small))
    return seeds.claim(d.verdict, evidence, f"{labels[1]} - {labels[0]} = {d.estimate:+.2f} pp: {d.why} pp")


D3_TOL_PP = 0.5


def rule_d3(acc_a, acc_b, acc_c, acc_d, acc_e, *, tol_pp: float = D3_TOL_PP) -> Claim:
    """D3: (c), (d), (e) each equivalent to (a) within tol_pp, and the control (b) significantly more than
    tol_pp below (a); the four tests Holm-corrected.

    (a) small batch; (b) large batch twice as long; (c) large batch 1 epoch, then small; (d) large
    batch, then small; (e) large batch twice as long with lr x10 in the second half. Final test
    accuracies of the seeds (fractions, seed order).
    """
    rule = (
        f"(c), (d), (e) each equivalent to (a) within ±{tol_pp:g} pp (TOST), and the control (b) more than "
        f"{tol_pp:g} pp below (a) (one-sided t); paired by seed, Holm-corrected over the four tests"
    )
    samples = {"(a)": acc_a, "(b)": acc_b, "(c)": acc_c, "(d)": acc_d, "(e)": acc_e}
    seeds = SeedRule(D3, rule, samples)
    if unfinished := seeds.unfinished():
        return unfinished
    tests = {key: equivalent(_in_pp(acc_a), _in_pp(samples[key]), tol_pp) for key in ("(c)", "(d)", "(e)")}
    tests["(b)"] = lower(_in_pp(acc_a), _in_pp(acc_b), by=tol_pp)
    adjusted = holm([d.p for d in tests.values()])
    evidence: dict = {f"test accuracy {k} (%)": pp(finite(v)) for k, v in samples.items()}
    evidence |= holm_evidence({f"{key} - (a)": d for key, d in tests.items()}, adjusted, unit="pp")
    verdict = joint_verdict(list(tests.values()), adjusted)
    parts = [f"{k}: {d.verdict} ({d.why})" for k, d in tests.items()]
    if verdict == "inconclusive" and all(d.verdict == "supported" for d in tests.values()):
        parts.append("not every Holm-adjusted p is below alpha")
    return seeds.claim(verdict, evidence, "; ".join(parts))


def rule_d4(
    w_seeds, acc, batch_sizes: Sequence[int], lrs: Sequence[float], *, threshold: float = 0.7, min_cells: int = 4
) -> Claim:
    """D4: W increases significantly at each step as the batch shrinks (per lr) and as the lr grows (per batch
    size), Holm-corrected over all steps; and the Spearman correlation of the cells' mean W with their mean
    test accuracy exceeds `threshold`.

    `w_seeds[i][j]` are the seeds' final W of cell (batch_sizes[i], lrs[j]) (seed order; NaN where
    diverged or missing); `acc` is the [batch sizes, lrs] array of cell mean test accuracies.
    """
    rule = (
        f"W increases significantly at each step as the batch shrinks (per lr) and as the lr grows (per batch "
        f"size) (one-sided t, paired by seed, Holm over all steps), and Spearman rho(cell mean W, cell mean "
        f"test accuracy) > {threshold:g} (needs >= {min_cells} cells)"
    )
    nb, nl = len(batch_sizes), len(lrs)
    cells = [[np.asarray(w_seeds[i][j], dtype=float).reshape(-1) for j in range(nl)] for i in range(nb)]
    w = np.array([[finite(c).mean() if finite(c).size else np.nan for c in row] for row in cells])
    acc = np.asarray(acc, dtype=float)
    ok_cells = np.isfinite(w) & np.isfinite(acc)
    if ok_cells.sum() < min_cells:
        return D4.inconclusive(rule, f"only {int(ok_cells.sum())} grid cells have finished runs")
    if np.ptp(w[ok_cells]) == 0 or np.ptp(acc[ok_cells]) == 0:
        return D4.inconclusive(rule, "W or test accuracy is the same in every cell: there is no ranking to correlate")
    rho, p = spearman(w[ok_cells], acc[ok_cells])
    evidence: dict = {"cells": int(ok_cells.sum()), "Spearman rho(W, test accuracy)": rho, "Spearman p": p}
    b_order, lr_order = list(np.argsort(batch_sizes)[::-1]), list(np.argsort(lrs))  # W should grow along these
    steps: dict[str, Decision] = {}
    for j in range(nl):
        for i0, i1 in zip(b_order, b_order[1:]):
            if finite(cells[i0][j]).size and finite(cells[i1][j]).size:
                steps[f"lr {lrs[j]:g}: batch {batch_sizes[i0]} -> {batch_sizes[i1]}"] = lower(
                    cells[i1][j], cells[i0][j]
                )
    for i in range(nb):
        for j0, j1 in zip(lr_order, lr_order[1:]):
            if finite(cells[i][j0]).size and finite(cells[i][j1]).size:
                steps[f"batch {batch_sizes[i]}: lr {lrs[j0]:g} -> {lrs[j1]:g}"] = lower(cells[i][j1], cells[i][j0])
    adjusted = holm([d.p if np.isfinite(d.p) else 1.0 for d in steps.values()]) if steps else []
    # `lower(next, prev)` tests prev < next, i.e. W grows along the step; its estimate is prev - next
    grow_verdict = joint_verdict(list(steps.values()), adjusted) if steps else "inconclusive"
    significant = sum(p < ALPHA and d.verdict == "supported" for d, p in zip(steps.values(), adjusted))
    evidence["W steps significantly growing (Holm)"] = f"{significant} of {len(steps)}"
    against = [k for k, d in steps.items() if d.verdict == "not supported"]
    if against:
        evidence["W steps significantly not growing"] = "; ".join(against)
    corr_ok = rho > threshold
    verdict = (
        "not supported"
        if not corr_ok or grow_verdict == "not supported"
        else "supported"
        if grow_verdict == "supported"
        else "inconclusive"
    )
    why = (
        f"rho = {rho:.2f} ({'>' if corr_ok else '<='} {threshold:g}); W grows significantly at {significant} of "
        f"{len(steps)} steps after Holm correction" + (f"; not growing at {', '.join(against)}" if against else "")
    )
    return D4.claim(rule, verdict, evidence, why)


def rule_d5(
    w_small,
    acc_small,
    w_long,
    acc_long,
    *,
    w_band: tuple[float, float] = (0.85, 1.15),
    tol_pp: float = 0.5,
    steps_small: int | None = None,
    steps_long: int | None = None,
) -> Claim:
    """D5: the 95 % CI of the W ratio long / batch 64 lies inside w_band, and the long run's test accuracy is
    equivalent to batch 64's within tol_pp (TOST); both paired by seed."""
    rule = (
        f"95 % CI of W(long) / W(batch 64) inside {w_band[0]:g}-{w_band[1]:g} (paired log-ratio t), and test "
        f"accuracy(long) equivalent to test accuracy(batch 64) within ±{tol_pp:g} pp (TOST)"
    )
    samples = {
        "batch 64 W": w_small,
        "batch 64 accuracy": acc_small,
        "long run W": w_long,
        "long run accuracy": acc_long,
    }
    seeds = SeedRule(D5, rule, samples)
    if unfinished := seeds.unfinished():
        return unfinished
    ratio = ratio_within(w_small, w_long, *w_band)
    acc = equivalent(_in_pp(acc_small), _in_pp(acc_long), tol_pp)
    evidence: dict = {
        "W batch 64": float(np.mean(finite(w_small))),
        "W long run": float(np.mean(finite(w_long))),
        **_evidence(ratio, "W ratio long / 64", scale=1.0, unit=""),
        "test accuracy batch 64 (%)": pp(finite(acc_small)),
        "test accuracy long run (%)": pp(finite(acc_long)),
        **_evidence(acc, "accuracy long - 64"),
    }
    if steps_small is not None and steps_long is not None:
        evidence["steps batch 64"], evidence["steps long run"] = int(steps_small), int(steps_long)
    why = f"W ratio {ratio.estimate:.3f}: {ratio.why}; accuracy gap {acc.estimate:+.2f} pp: {acc.why}"
    return seeds.claim(joint_verdict([ratio, acc]), evidence, why)


D6_ADAM_MIN_EXPONENT = 0.8


def rule_d6(
    sgd_steps,
    sgd_w,
    adam_steps,
    adam_w,
    *,
    fit_start: float,
    fit_end: float | None = None,
    sgd_epochs=None,
    adam_epochs=None,
    min_exponent: float = D6_ADAM_MIN_EXPONENT,
) -> Claim:
    """D6: fit log W = a log t + c per seed over epochs fit_start..fit_end; Adam's mean exponent >= min_exponent
    and SGD's exponent below Adam's, the bootstrap CI over seeds of (a_Adam - a_SGD) above 0.

    `sgd_w` / `adam_w` are W at every evaluation, [seeds, evaluations]; `*_steps` the step of each
    evaluation and `*_epochs` its epoch (the fit window is in epochs; without epochs every evaluation
    is used). A straight-line R^2 cannot tell linear growth from sqrt(t) and is evidence only.
    """
    end = "the last epoch" if fit_end is None else f"{fit_end:g}"
    rule = (
        f"per seed, fit log W = a log(step) + c over epochs {fit_start:g}..{end}: Adam's mean a >= {min_exponent:g} "
        f"and the 95 % t interval (Welch, over seeds) of a(Adam) - a(SGD) above 0"
    )
    sgd_w, adam_w = np.atleast_2d(np.asarray(sgd_w, dtype=float)), np.atleast_2d(np.asarray(adam_w, dtype=float))
    if sgd_w.size == 0 or adam_w.size == 0:
        return D6.inconclusive(rule, "SGD or Adam runs are missing")

    def window(steps, epochs, w):
        x = np.asarray(steps, dtype=float)
        e = x if epochs is None else np.asarray(epochs, dtype=float)
        keep = (e >= fit_start) & (e <= (np.inf if fit_end is None else fit_end)) & (x > 0)
        return x[keep], w[:, keep]

    sx, sw = window(sgd_steps, sgd_epochs, sgd_w)
    ax_, aw = window(adam_steps, adam_epochs, adam_w)
    if sx.size < 3 or ax_.size < 3:
        return D6.inconclusive(rule, f"too few evaluations in the fit window ({sx.size} SGD, {ax_.size} Adam; need 3)")
    sgd_fit, adam_fit = exponent_interval(sx, sw), exponent_interval(ax_, aw)
    if sgd_fit["n"] < 2 or adam_fit["n"] < 2:
        return D6.inconclusive(rule, "needs at least 2 finished seeds of SGD and of Adam")
    diff_ci = difference(sgd_fit["per_seed"], adam_fit["per_seed"], paired=False)["ci"]
    sgd_mean = np.nanmean(sgd_w, 0)
    frac, n_second = concavity(np.asarray(sgd_steps, dtype=float), sgd_mean)
    evidence: dict = {
        "SGD exponent a (mean over seeds)": sgd_fit["mean"],
        "SGD exponent 95 % CI": f"[{sgd_fit['ci'][0]:.3f}, {sgd_fit['ci'][1]:.3f}]",
        "Adam exponent a (mean over seeds)": adam_fit["mean"],
        "Adam exponent 95 % CI": f"[{adam_fit['ci'][0]:.3f}, {adam_fit['ci'][1]:.3f}]",
        "a(Adam) - a(SGD) 95 % CI": f"[{diff_ci[0]:.3f}, {diff_ci[1]:.3f}]",
        "test": "per-seed log-log least squares, Student t intervals over seeds (Welch for the difference)",
        "seeds": f"{sgd_fit['n']}/{adam_fit['n']}",
        "SGD negative second differences (evidence only)": f"{round(frac * n_second)} of {n_second}",
        "Adam linear-fit R^2 in the window (evidence only)": linear_r2(ax_, np.nanmean(aw, 0)),
        "SGD linear-fit R^2 in the window (evidence only)": linear_r2(sx, np.nanmean(sw, 0)),
    }
    linear_adam = adam_fit["mean"] >= min_exponent
    apart = diff_ci[0] > 0
    if linear_adam and apart:
        verdict = "supported"
    elif adam_fit["ci"][1] < min_exponent or diff_ci[1] <= 0:
        verdict = "not supported"
    else:
        verdict = "inconclusive"
    why = (
        f"Adam's W grows like t^{adam_fit['mean']:.2f} (95 % CI {adam_fit['ci'][0]:.2f}-{adam_fit['ci'][1]:.2f}; "
        f"'nearly linear' needs >= {min_exponent:g}), SGD's like t^{sgd_fit['mean']:.2f}; the difference's CI is "
        f"[{diff_ci[0]:.2f}, {diff_ci[1]:.2f}]"
    )
    if verdict != "supported" and evidence["Adam linear-fit R^2 in the window (evidence only)"] > 0.95:
        why += (
            "; a straight line still fits Adam's W with R^2 > 0.95, which is why R^2 alone cannot decide: "
            "sqrt(t) fits a short window as well"
        )
    return D6.claim(rule, verdict, evidence, why)


def rule_d7(w_sgd, w_adam, acc_sgd, acc_adam, *, factor: float = 10.0) -> Claim:
    """D7: W(Adam) > factor x W(SGD) for every seed pair, and Adam's test accuracy significantly lower
    (one-sided t, paired by seed)."""
    rule = (
        f"W(Adam) > {factor:g} x W(SGD) for every seed (pair), and test accuracy(Adam) significantly lower than "
        f"test accuracy(SGD) (one-sided t, paired by seed, alpha {ALPHA:g})"
    )
    seeds = SeedRule(D7, rule, {"SGD W": w_sgd, "Adam W": w_adam, "SGD accuracy": acc_sgd, "Adam accuracy": acc_adam})
    if unfinished := seeds.unfinished():
        return unfinished
    ws, wa = np.asarray(w_sgd, dtype=float).reshape(-1), np.asarray(w_adam, dtype=float).reshape(-1)
    if ws.shape == wa.shape:
        keep = np.isfinite(ws) & np.isfinite(wa)
        ratios = wa[keep] / ws[keep]
    else:  # not the same seeds: every Adam run against every SGD run
        ratios = (finite(wa)[:, None] / finite(ws)[None, :]).reshape(-1)
    acc = lower(_in_pp(acc_sgd), _in_pp(acc_adam))
    evidence: dict = {
        "W SGD": float(np.mean(finite(ws))),
        "W Adam": float(np.mean(finite(wa))),
        "W ratio Adam / SGD, smallest pair": float(ratios.min()),
        "W ratio Adam / SGD, mean": float(ratios.mean()),
        "test accuracy SGD (%)": pp(finite(acc_sgd)),
        "test accuracy Adam (%)": pp(finite(acc_adam)),
        **_evidence(acc, "accuracy Adam - SGD"),
    }
    far = bool(np.all(ratios > factor))
    verdict = "not supported" if not far else acc.verdict
    why = (
        f"smallest W ratio Adam / SGD over seed pairs {ratios.min():.1f} ({'>' if far else '<='} {factor:g}); "
        f"accuracy Adam - SGD {acc.estimate:+.2f} pp: {acc.why}"
    )
    return seeds.claim(verdict, evidence, why)


D8_SGD_COS_MIN, D8_ADAM_COS_MAX = 0.85, 0.5


def rule_d8(
    norm0_sgd,
    normT_sgd,
    cos_sgd: Mapping[str, Sequence[float]],
    cos_adam: Mapping[str, Sequence[float]],
    *,
    norm_tol: float = 0.10,
    sgd_cos_min: float = D8_SGD_COS_MIN,
    adam_cos_max: float = D8_ADAM_COS_MAX,
) -> Claim:
    """D8, for every seed: SGD's ||w_T|| within norm_tol of its ||w_0|| and every SGD layer's cosine to init >
    sgd_cos_min; every Adam layer's cosine < adam_cos_max. `cos_*` map layer name -> the seeds' final cosines.
    Needs at least 2 finished seeds of each (one seed cannot show that it holds "for every seed")."""
    rule = (
        f"for every seed: SGD ||w_T|| within {norm_tol:.0%} of ||w_0|| and every SGD per-layer cosine to init > "
        f"{sgd_cos_min:g}; every Adam per-layer cosine < {adam_cos_max:g} (at least 2 seeds each)"
    )
    samples = {"SGD ||w_0||": norm0_sgd, "SGD ||w_T||": normT_sgd}
    samples |= {f"SGD cos {k}": v for k, v in cos_sgd.items()} | {f"Adam cos {k}": v for k, v in cos_adam.items()}
    seeds = SeedRule(D8, rule, samples)  # decided for every seed: the evidence counts the seeds, not the diverged
    if not cos_sgd or not cos_adam:
        return seeds.inconclusive("no per-layer cosines recorded for SGD or Adam")
    if unfinished := seeds.unfinished():
        return unfinished
    n0, nT = np.asarray(norm0_sgd, dtype=float).reshape(-1), np.asarray(normT_sgd, dtype=float).reshape(-1)
    ratios = finite(nT / n0) if n0.shape == nT.shape else finite(nT) / float(np.mean(finite(n0)))
    sgd_cos = np.concatenate([finite(v) for v in cos_sgd.values()])
    adam_cos = np.concatenate([finite(v) for v in cos_adam.values()])
    n_sgd, n_adam = min(finite(v).size for v in cos_sgd.values()), min(finite(v).size for v in cos_adam.values())
    evidence: dict = {
        "SGD norm ratio ||w_T|| / ||w_0|| (range over seeds)": f"{ratios.min():.3f}-{ratios.max():.3f}",
        "SGD lowest per-layer cosine (any seed)": float(sgd_cos.min()),
        "Adam highest per-layer cosine (any seed)": float(adam_cos.max()),
        "seeds": f"{n_sgd}/{n_adam}",
        "test": "every seed against the thresholds",
    }
    evidence |= {f"SGD cos {k.removeprefix('cos_init:')} (mean)": float(np.mean(finite(v))) for k, v in cos_sgd.items()}
    evidence |= {
        f"Adam cos {k.removeprefix('cos_init:')} (mean)": float(np.mean(finite(v))) for k, v in cos_adam.items()
    }
    norm_ok = bool(np.all(np.abs(ratios - 1) <= norm_tol))
    sgd_ok, adam_ok = bool(sgd_cos.min() > sgd_cos_min), bool(adam_cos.max() < adam_cos_max)
    why = (
        f"SGD norm ratios {ratios.min():.3f}-{ratios.max():.3f} ({'within' if norm_ok else 'not all within'} "
        f"±{norm_tol:.0%}); lowest SGD layer cosine {sgd_cos.min():.3f} ({'>' if sgd_ok else '<='} {sgd_cos_min:g}); "
        f"highest Adam layer cosine {adam_cos.max():.3f} ({'<' if adam_ok else '>='} {adam_cos_max:g})"
    )
    if not (norm_ok and sgd_ok and adam_ok):
        return D8.claim(rule, "not supported", evidence, why)
    if min(n_sgd, n_adam, ratios.size) < 2:
        return D8.claim(rule, "inconclusive", evidence, why + "; needs at least 2 seeds each")
    return D8.claim(rule, "supported", evidence, why)
