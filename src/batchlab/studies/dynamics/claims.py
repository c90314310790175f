"""The claims D1-D8 of the batch-size family, each decided by a pure rule over small arrays.

A rule takes the final values of the seeds (fractions for accuracies) or their curves and returns a
Claim, so it can be tested on synthetic numbers; the studies only gather those arrays from the store.
A configuration whose runs are missing or all diverged makes a claim `inconclusive`, never `not
supported`; diverged seeds next to finished ones are left out and counted in the evidence (D1, whose
rule compares the seeds' spread, is inconclusive as soon as one seed diverged).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ...analysis.stats import (
    concavity,
    finite,
    linear_r2,
    nonfinite,
    power_law_exponent,
    pp,
    spearman,
    welch_p,
    within_pp,
    without_finite,
)
from ...claims import Claim, inconclusive
from .common import HOFFER_2017, SHEN_2018, WILSON_2017


def _missing_why(labels: list[str]) -> str:
    return f"no finished runs (missing or diverged) for: {', '.join(labels)}"


def _diverged(samples: Mapping[str, np.ndarray]) -> int:
    """How many values of all samples together are not finite (diverged runs left out)."""
    return sum(nonfinite(samples).values())


# ------------------------------------------------------------------------------------------------
# D1 (batch-size-sweep)

D1 = ("D1", "At fixed lr and epochs, a larger batch gives lower final test accuracy.",
      "Keskar et al. 2017 (large-batch training); Hoffer et al. 2017")

# The batch sizes the claim is stated for; a sweep may add others (the full profile also trains batch 2).
D1_BATCH_SIZES = (64, 256, 1024)


def d1_batch_sizes(batch_sizes: Sequence[int]) -> list[int]:
    """The batch sizes D1 compares: those of D1_BATCH_SIZES the sweep has, else (fewer than 2) all, in order."""
    sizes = [b for b in D1_BATCH_SIZES if b in batch_sizes]
    return sizes if len(sizes) >= 2 else sorted(batch_sizes)


def monotone_decrease_claim(id: str, statement: str, source: str, labels: list, samples: list[np.ndarray],
                            what: str, *, name: str = "") -> Claim:
    """Mean decreases along `labels`, each step larger than 2 seed standard deviations of either neighbour.

    `samples[i]` are the seeds' final values for `labels[i]`; `name` prefixes a label where the why
    names a configuration (e.g. "batch " for labels 64, 256, ...). A seed with a non-finite value
    (a diverged run) makes the claim inconclusive: its spread, and so the 2-sd test, is undefined.
    """
    rule = (f"mean final {what} decreases monotonically over {' < '.join(map(str, labels))}, and each "
            "decrease exceeds 2 standard deviations (ddof=1) of the seeds of either neighbour")
    if len(labels) < 2:
        return inconclusive(id, statement, source, rule, "needs at least 2 configurations to compare")
    diverged = nonfinite({f"{name}{label}": s for label, s in zip(labels, samples)})
    if diverged:
        sizes = {f"{name}{label}": np.size(s) for label, s in zip(labels, samples)}
        which = ", ".join(f"{label} ({n} of {sizes[label]} seeds)" for label, n in diverged.items())
        return inconclusive(id, statement, source, rule,
                            f"diverged runs (non-finite final {what}) in {which}: the decrease is not measurable")
    if any(len(s) < 2 for s in samples):
        return inconclusive(id, statement, source, rule, "needs at least 2 seeds per configuration")
    evidence: dict = {}
    ok = True
    for (a, sa), (b, sb) in zip(zip(labels, samples), zip(labels[1:], samples[1:])):
        drop = float(np.mean(sa) - np.mean(sb))
        two_sd = 2 * max(float(np.std(sa, ddof=1)), float(np.std(sb, ddof=1)))
        evidence[f"drop {a}->{b} (pp)"] = 100 * drop
        evidence[f"2 sd {a}/{b} (pp)"] = 100 * two_sd
        evidence[f"Welch p {a} vs {b}"] = welch_p(sa, sb)
        ok &= drop > two_sd
    for label, s in zip(labels, samples):
        evidence[f"{what} {label} (%)"] = 100 * float(np.mean(s))
    why = ("every step is a decrease larger than 2 sd" if ok else
           "at least one step is not a decrease larger than 2 sd of the seeds")
    return Claim(id, statement, source, rule, "supported" if ok else "not supported", evidence, why)


def rule_d1(batch_sizes: Sequence[int], acc: Sequence[np.ndarray]) -> Claim:
    """D1: final test accuracy (seeds, fractions) falls by more than 2 sd at each step up in batch size."""
    return monotone_decrease_claim(*D1, list(batch_sizes), list(acc), "test accuracy", name="batch ")


# ------------------------------------------------------------------------------------------------
# D2 (lr-compensation), D3 (schedule-switch), D4 and D5 (distance-grid), D6-D8 (adam-vs-sgd)

D2 = ("D2", "Raising the learning rate 10x at batch 1024 recovers the test accuracy of batch 64.",
      f"{SHEN_2018}; Goyal et al. 2017 (linear scaling rule)")


def rule_d2(acc_small, acc_large_high_lr, acc_large=None, *, tol_pp: float = 0.5,
            labels: Sequence[str] = ("batch 64, lr 0.01", "batch 1024, lr 0.1", "batch 1024, lr 0.01")) -> Claim:
    """D2: mean final test accuracy of the large batch at the raised lr is within tol_pp of the small batch's.

    `acc_*` are the seeds' final test accuracies (fractions); `acc_large` (large batch at the base
    lr) only adds the gap being closed to the evidence.
    """
    rule = f"|mean test accuracy({labels[1]}) - mean test accuracy({labels[0]})| <= {tol_pp:g} pp"
    samples = {labels[0]: acc_small, labels[1]: acc_large_high_lr}
    if missing := without_finite(samples):
        return inconclusive(*D2, rule, _missing_why(missing))
    small, comp = finite(acc_small), finite(acc_large_high_lr)
    ok, gap = within_pp(small, comp, tol_pp)
    evidence: dict = {f"test accuracy {labels[0]} (%)": pp(small), f"test accuracy {labels[1]} (%)": pp(comp),
                      "gap (pp)": gap, f"Welch p {labels[1]} vs {labels[0]}": welch_p(comp, small)}
    if acc_large is not None and finite(acc_large).size:
        evidence[f"test accuracy {labels[2]} (%)"] = pp(finite(acc_large))
        evidence["gap without raising lr (pp)"] = pp(finite(acc_large)) - pp(small)
    if n := _diverged(samples):
        evidence["diverged runs left out"] = n
    if ok:
        why = f"{labels[1]} ends {gap:+.2f} pp from {labels[0]}, within ±{tol_pp:g} pp"
    elif gap > 0:
        why = f"the raised lr overshoots: {labels[1]} ends {gap:+.2f} pp above {labels[0]}, outside ±{tol_pp:g} pp"
    else:
        why = f"{labels[1]} stays {-gap:.2f} pp below {labels[0]}, more than {tol_pp:g} pp"
    return Claim(*D2, rule, "supported" if ok else "not supported", evidence, why)


D3 = ("D3", "A large batch does not get the model stuck: switching to a small batch, or raising the lr, at any "
            "point recovers the small-batch accuracy, while merely training longer at the large batch does not.",
      SHEN_2018)


D3_TOL_PP = 0.5


def rule_d3(acc_a, acc_b, acc_c, acc_d, acc_e, *, tol_pp: float = D3_TOL_PP) -> Claim:
    """D3: schedules (c), (d), (e) end within tol_pp of (a); the control (b) does not.

    (a) small batch; (b) large batch twice as long; (c) large batch 1 epoch, then small; (d) large
    batch, then small; (e) large batch twice as long with lr x10 in the second half. Final test
    accuracies of the seeds, fractions.
    """
    rule = (f"|mean test accuracy - (a)| <= {tol_pp:g} pp for each of (c), (d), (e), "
            f"and > {tol_pp:g} pp for the control (b)")
    samples = {"(a)": acc_a, "(b)": acc_b, "(c)": acc_c, "(d)": acc_d, "(e)": acc_e}
    if missing := without_finite(samples):
        return inconclusive(*D3, rule, _missing_why(missing))
    a = finite(acc_a)
    evidence: dict = {"test accuracy (a) (%)": pp(a)}
    within: dict[str, bool] = {}
    for key in ("(b)", "(c)", "(d)", "(e)"):
        s = finite(samples[key])
        within[key], gap = within_pp(a, s, tol_pp)
        evidence[f"test accuracy {key} (%)"] = pp(s)
        evidence[f"{key} - (a) (pp)"] = gap
    if n := _diverged(samples):
        evidence["diverged runs left out"] = n
    recovered = [k for k in ("(c)", "(d)", "(e)") if within[k]]
    failed = [k for k in ("(c)", "(d)", "(e)") if not within[k]]
    ok = not failed and not within["(b)"]
    if ok:
        why = f"(c), (d), (e) all end within {tol_pp:g} pp of (a), the control (b) does not"
    else:
        parts = []
        if failed:
            parts.append(f"{', '.join(failed)} end{'s' if len(failed) == 1 else ''} more than {tol_pp:g} pp from (a)")
        if within["(b)"]:
            parts.append(f"the control (b) also ends within {tol_pp:g} pp of (a), so training longer alone suffices")
        if recovered:
            parts.append(f"{', '.join(recovered)} recover{'s' if len(recovered) == 1 else ''}")
        why = "; ".join(parts)
    return Claim(*D3, rule, "supported" if ok else "not supported", evidence, why)


D4 = ("D4", "Better solutions lie farther from the initialisation: W grows as the batch shrinks or the lr grows, "
            "and test accuracy rises with W across the grid.", f"{SHEN_2018}; {HOFFER_2017}")


def rule_d4(w, acc, batch_sizes: Sequence[int], lrs: Sequence[float], *, threshold: float = 0.7,
            min_cells: int = 4) -> Claim:
    """D4: Spearman correlation between the cells' mean W and mean test accuracy exceeds `threshold`.

    `w` and `acc` are [len(batch_sizes), len(lrs)] arrays of per-cell means (NaN where a cell has no
    finished run). Whether W decreases with batch size at every lr, and increases with lr at every
    batch size, is reported in the evidence (the statement's first half), not part of the rule.
    """
    rule = (f"Spearman rank correlation of W with test accuracy over the grid cells (cell means) > {threshold:g} "
            f"(needs >= {min_cells} cells)")
    w, acc = np.asarray(w, dtype=float), np.asarray(acc, dtype=float)
    ok_cells = np.isfinite(w) & np.isfinite(acc)
    if ok_cells.sum() < min_cells:
        return inconclusive(*D4, rule, f"only {int(ok_cells.sum())} grid cells have finished runs")
    if np.ptp(w[ok_cells]) == 0 or np.ptp(acc[ok_cells]) == 0:
        return inconclusive(*D4, rule, "W or test accuracy is the same in every cell: there is no ranking to correlate")
    rho, p = spearman(w[ok_cells], acc[ok_cells])
    evidence: dict = {"cells": int(ok_cells.sum()), "Spearman rho(W, test accuracy)": rho, "Spearman p": p}
    bs_grid = np.repeat(np.asarray(batch_sizes, dtype=float)[:, None], len(lrs), 1)
    lr_grid = np.repeat(np.asarray(lrs, dtype=float)[None, :], len(batch_sizes), 0)
    for name, grid in (("batch size", bs_grid), ("lr", lr_grid)):
        if np.ptp(grid[ok_cells]) > 0:
            evidence[f"Spearman rho(W, {name})"] = spearman(grid[ok_cells], w[ok_cells])[0]
    b_order, lr_order = np.argsort(batch_sizes), np.argsort(lrs)
    shrink = [bool(np.all(np.diff(w[b_order, j]) < 0)) for j in range(len(lrs)) if np.isfinite(w[:, j]).all()]
    grow = [bool(np.all(np.diff(w[i, lr_order]) > 0)) for i in range(len(batch_sizes)) if np.isfinite(w[i]).all()]
    evidence["W grows as batch shrinks, at every lr"] = ("yes" if shrink and all(shrink) else
                                                         f"no ({sum(shrink)} of {len(shrink)} lrs)")
    evidence["W grows with lr, at every batch size"] = ("yes" if grow and all(grow) else
                                                        f"no ({sum(grow)} of {len(grow)} batch sizes)")
    ok = rho > threshold
    why = (f"rho = {rho:.2f} {'>' if ok else '<='} {threshold:g}; W grows as batch shrinks at every lr: "
           f"{evidence['W grows as batch shrinks, at every lr']}; W grows with lr at every batch: "
           f"{evidence['W grows with lr, at every batch size']}")
    return Claim(*D4, rule, "supported" if ok else "not supported", evidence, why)


D5 = ("D5", "Batch 1024 trained for 16x the epochs (as many steps as batch 64) reaches the distance from init "
            "and the test accuracy of batch 64.", f"{HOFFER_2017} (regime adaptation); {SHEN_2018}")


def rule_d5(w_small, acc_small, w_long, acc_long, *, w_tol: float = 0.15, tol_pp: float = 0.5,
            steps_small: int | None = None, steps_long: int | None = None) -> Claim:
    """D5: the long large-batch run's mean W within w_tol (relative) and mean accuracy within tol_pp of batch 64's."""
    rule = (f"|mean W(long) / mean W(batch 64) - 1| <= {w_tol:.0%} and |mean test accuracy(long) - "
            f"mean test accuracy(batch 64)| <= {tol_pp:g} pp")
    samples = {"batch 64 W": w_small, "batch 64 accuracy": acc_small, "long run W": w_long,
               "long run accuracy": acc_long}
    if missing := without_finite(samples):
        return inconclusive(*D5, rule, _missing_why(missing))
    ws, wl = float(np.mean(finite(w_small))), float(np.mean(finite(w_long)))
    ratio = wl / ws if ws > 0 else float("inf")
    w_ok = abs(ratio - 1) <= w_tol
    acc_ok, gap = within_pp(finite(acc_small), finite(acc_long), tol_pp)
    evidence: dict = {"W batch 64": ws, "W long run": wl, "W ratio long / 64": ratio,
                      "test accuracy batch 64 (%)": pp(finite(acc_small)),
                      "test accuracy long run (%)": pp(finite(acc_long)), "accuracy gap long - 64 (pp)": gap}
    if steps_small is not None and steps_long is not None:
        evidence["steps batch 64"], evidence["steps long run"] = int(steps_small), int(steps_long)
    if n := _diverged(samples):
        evidence["diverged runs left out"] = n
    ok = w_ok and acc_ok
    why = (f"W ratio {ratio:.3f} ({'within' if w_ok else 'outside'} ±{w_tol:.0%}), accuracy gap {gap:+.2f} pp "
           f"({'within' if acc_ok else 'outside'} ±{tol_pp:g} pp)")
    return Claim(*D5, rule, "supported" if ok else "not supported", evidence, why)


D6 = ("D6", "For SGD the distance from init grows sublinearly in steps; for Adam nearly linearly.",
      f"{HOFFER_2017}; {SHEN_2018}")


def rule_d6(sgd_steps, sgd_w, adam_epochs, adam_w, *, fit_start: float, fit_end: float | None = None,
            concave_fraction: float = 0.8, r2_min: float = 0.95, sgd_epochs=None) -> Claim:
    """D6: the SGD curve W(step) is concave, the Adam curve W(epoch) is linear over [fit_start, fit_end].

    `sgd_w` / `adam_w` are W at every evaluation, [seeds, evaluations] (or 1-D), including epoch 0;
    the seed mean is tested. Concave: at least `concave_fraction` of the second divided differences
    of W vs step are negative (W(0) = 0, so a concave curve is sublinear). Linear: R^2 of a
    least-squares line through Adam's W vs epoch, epochs fit_start..fit_end, exceeds `r2_min`.
    `sgd_epochs` (optional) adds SGD's R^2 over the same window to the evidence, for contrast.
    """
    end = "the last epoch" if fit_end is None else f"{fit_end:g}"
    rule = (f"SGD: >= {concave_fraction:.0%} of the second differences of mean W vs step are negative (concave); "
            f"Adam: R^2 > {r2_min:g} for a linear fit of mean W vs epoch over epochs {fit_start:g}..{end}")
    sgd_w, adam_w = np.atleast_2d(np.asarray(sgd_w, dtype=float)), np.atleast_2d(np.asarray(adam_w, dtype=float))
    if sgd_w.size == 0 or adam_w.size == 0:
        return inconclusive(*D6, rule, "SGD or Adam runs are missing")
    sgd_mean, adam_mean = np.nanmean(sgd_w, 0), np.nanmean(adam_w, 0)
    sgd_x, adam_x = np.asarray(sgd_steps, dtype=float), np.asarray(adam_epochs, dtype=float)
    frac, n_second = concavity(sgd_x, sgd_mean)
    window = (adam_x >= fit_start) & (adam_x <= (np.inf if fit_end is None else fit_end))
    if n_second < 2 or window.sum() < 3:
        return inconclusive(*D6, rule, f"too few evaluations: {n_second} SGD second differences (need 2), "
                                       f"{int(window.sum())} Adam points in the fit window (need 3)")
    r2 = linear_r2(adam_x[window], adam_mean[window])
    evidence: dict = {
        "SGD negative second differences": f"{round(frac * n_second)} of {n_second}",
        "SGD fraction negative": frac,
        "SGD power-law exponent (W ~ steps^a)": power_law_exponent(sgd_x, sgd_mean),
        "SGD linear-fit R^2 (all evaluations)": linear_r2(sgd_x, sgd_mean),
        "Adam linear-fit R^2": r2,
        "Adam power-law exponent (W ~ epochs^a)": power_law_exponent(adam_x, adam_mean),
        "Adam fit window (epochs)": f"{adam_x[window][0]:g}..{adam_x[window][-1]:g}",
    }
    if sgd_epochs is not None and len(sgd_epochs) == len(sgd_mean):
        sgd_e = np.asarray(sgd_epochs, dtype=float)
        in_window = (sgd_e >= fit_start) & (sgd_e <= (np.inf if fit_end is None else fit_end))
        evidence["SGD linear-fit R^2 (Adam's window)"] = linear_r2(sgd_e[in_window], sgd_mean[in_window])
    if not np.isfinite(r2):
        return Claim(*D6, rule, "inconclusive", evidence, "Adam's W is constant or non-finite in the fit window")
    concave, linear = frac >= concave_fraction, r2 > r2_min
    ok = concave and linear
    why = (f"SGD curve {'is' if concave else 'is not'} concave ({frac:.0%} of second differences negative); "
           f"Adam's linear fit has R^2 = {r2:.3f} ({'>' if linear else '<='} {r2_min:g})")
    sgd_r2 = evidence.get("SGD linear-fit R^2 (Adam's window)", float("nan"))
    if np.isfinite(sgd_r2) and sgd_r2 > r2_min:
        why += (f"; note that a line fits SGD's W over the same window about as well (R^2 = {sgd_r2:.3f}), so this "
                "window is too short to tell the two shapes apart by R^2 alone")
    return Claim(*D6, rule, "supported" if ok else "not supported", evidence, why)


D7 = ("D7", "Adam travels much farther from the initialisation than SGD and generalises worse here.",
      f"{SHEN_2018}; {WILSON_2017}")


def rule_d7(w_sgd, w_adam, acc_sgd, acc_adam, *, factor: float = 10.0) -> Claim:
    """D7: mean W of Adam > factor x mean W of SGD, and Adam's mean final test accuracy is lower than SGD's."""
    rule = f"mean W(Adam) > {factor:g} x mean W(SGD) and mean test accuracy(Adam) < mean test accuracy(SGD)"
    samples = {"SGD W": w_sgd, "Adam W": w_adam, "SGD accuracy": acc_sgd, "Adam accuracy": acc_adam}
    if missing := without_finite(samples):
        return inconclusive(*D7, rule, _missing_why(missing))
    ws, wa = float(np.mean(finite(w_sgd))), float(np.mean(finite(w_adam)))
    ratio = wa / ws if ws > 0 else float("inf")
    a_sgd, a_adam = finite(acc_sgd), finite(acc_adam)
    far, worse = ratio > factor, pp(a_adam) < pp(a_sgd)
    evidence: dict = {"W SGD": ws, "W Adam": wa, "W ratio Adam / SGD": ratio,
                      "test accuracy SGD (%)": pp(a_sgd), "test accuracy Adam (%)": pp(a_adam),
                      "accuracy gap Adam - SGD (pp)": pp(a_adam) - pp(a_sgd),
                      "Welch p accuracy": welch_p(a_adam, a_sgd)}
    if n := _diverged(samples):
        evidence["diverged runs left out"] = n
    ok = far and worse
    why = (f"Adam's W is {ratio:.1f}x SGD's ({'>' if far else '<='} {factor:g}x) and its test accuracy is "
           f"{'lower' if worse else 'not lower'} ({pp(a_adam) - pp(a_sgd):+.2f} pp)")
    return Claim(*D7, rule, "supported" if ok else "not supported", evidence, why)


D8 = ("D8", "SGD mostly rotates the weights on the sphere of their initial norm (norm kept, every layer within a "
            "small angle of its init); Adam moves every layer far from its initial direction.", SHEN_2018)


D8_SGD_COS_MIN, D8_ADAM_COS_MAX = 0.85, 0.5


def rule_d8(norm0_sgd, normT_sgd, cos_sgd: Mapping[str, Sequence[float]], cos_adam: Mapping[str, Sequence[float]],
            *, norm_tol: float = 0.10, sgd_cos_min: float = D8_SGD_COS_MIN,
            adam_cos_max: float = D8_ADAM_COS_MAX) -> Claim:
    """D8: SGD's mean ||w_T|| within norm_tol of mean ||w_0||, every SGD layer's mean cosine > sgd_cos_min,
    and every Adam layer's mean cosine < adam_cos_max. `cos_*` map layer name -> the seeds' final cosines."""
    rule = (f"SGD: |mean ||w_T|| / mean ||w_0|| - 1| <= {norm_tol:.0%} and every per-layer cosine to init > "
            f"{sgd_cos_min:g}; Adam: every per-layer cosine < {adam_cos_max:g} (seed means)")
    samples = {"SGD ||w_0||": norm0_sgd, "SGD ||w_T||": normT_sgd}
    samples |= {f"SGD cos {k}": v for k, v in cos_sgd.items()} | {f"Adam cos {k}": v for k, v in cos_adam.items()}
    if not cos_sgd or not cos_adam:
        return inconclusive(*D8, rule, "no per-layer cosines recorded for SGD or Adam")
    if missing := without_finite(samples):
        return inconclusive(*D8, rule, _missing_why(missing))
    n0, nT = float(np.mean(finite(norm0_sgd))), float(np.mean(finite(normT_sgd)))
    ratio = nT / n0
    evidence: dict = {"SGD ||w_0||": n0, "SGD ||w_T||": nT, "SGD norm ratio": ratio}
    sgd_means = {k: float(np.mean(finite(v))) for k, v in cos_sgd.items()}
    adam_means = {k: float(np.mean(finite(v))) for k, v in cos_adam.items()}
    evidence |= {f"SGD cos {k.removeprefix('cos_init:')}": v for k, v in sgd_means.items()}
    evidence |= {f"Adam cos {k.removeprefix('cos_init:')}": v for k, v in adam_means.items()}
    norm_ok = abs(ratio - 1) <= norm_tol
    sgd_ok = min(sgd_means.values()) > sgd_cos_min
    adam_ok = max(adam_means.values()) < adam_cos_max
    ok = norm_ok and sgd_ok and adam_ok
    why = (f"SGD norm ratio {ratio:.3f} ({'within' if norm_ok else 'outside'} ±{norm_tol:.0%}); lowest SGD layer "
           f"cosine {min(sgd_means.values()):.3f} ({'>' if sgd_ok else '<='} {sgd_cos_min:g}); highest Adam layer "
           f"cosine {max(adam_means.values()):.3f} ({'<' if adam_ok else '>='} {adam_cos_max:g})")
    return Claim(*D8, rule, "supported" if ok else "not supported", evidence, why)
