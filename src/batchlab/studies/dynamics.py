"""Study family 2: batch size and training dynamics on the MNIST MLP (spec 02).

Every study here trains the reference setup (784-1024-1024-10 ReLU MLP, Glorot init, SGD, mean
cross-entropy) and differs only in which runs it plans. Runs that two studies share have equal
RunSpecs, hence equal keys, and are trained once: every study builds a configuration through
`cfg.seeded(batch_size=..., lr=..., epochs=...)` with the same fields, and in one profile every
study uses the same setup (`QUICK_SETUP` in `quick`, the reference setup in `full`) and the same
number of epochs (`QUICK_EPOCHS`, 30), so e.g. "batch 64, lr 0.01" is one set of runs for
batch-size-sweep, lr-compensation, schedule-switch (a), distance-grid and adam-vs-sgd.

Each claim's verdict is computed by a pure `rule_dN(...)` function over small arrays (final values
of the seeds, curves), so that the rules can be tested on synthetic numbers; the study's `analyze`
only gathers those arrays from the store.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import Field, model_validator
from scipy import stats

from ..claims import Claim, inconclusive
from ..engine import LRSchedule, RunSpec
from ..report.figures import PALETTE, band, bars, heatmap, new_figure
from ..report.html import Table
from .common import FigureSpec, Results, Study, StudyConfig, StudyOutput, mean_std

# `quick`: a faithful miniature for a 2-core CPU: a 10k/2k MNIST subset, a 256-wide MLP, 2 seeds,
# and QUICK_EPOCHS epochs wherever the spec says 30 (every other epoch count is scaled with it).
QUICK_SETUP = {"train_subset": 10_000, "test_subset": 2_000, "widths": (256, 256), "seeds": 2}
QUICK_EPOCHS = 5
SPEC_EPOCHS = 30

SHEN_2018 = "K. Shen, 'Effect of batch size on training dynamics' (Mini Distill, 2018)"
HOFFER_2017 = "Hoffer, Hubara & Soudry 2017 (Train longer, generalize better)"
WILSON_2017 = "Wilson et al. 2017 (The marginal value of adaptive gradient methods)"

CURVE_METRICS = ("train_acc", "test_acc", "train_loss", "test_loss", "dist_init_w", "dist_init_b")


def run_label(batch_size: int, lr: float, epochs: int | None = None) -> str:
    """'batch 64, lr 0.01' (and ', 480 epochs'): the one way configurations are named in figures and tables."""
    return f"batch {batch_size}, lr {lr:g}" + ("" if epochs is None else f", {epochs} epochs")


# ------------------------------------------------------------------------------------------------
# reading results


def present(results: Results, specs: list[RunSpec]) -> list[RunSpec]:
    return [s for s in specs if results.has(s)]


def finite(values) -> np.ndarray:
    """The finite values of a 1-D sample (a diverged run has NaN metrics)."""
    arr = np.asarray(values, dtype=float).reshape(-1)
    return arr[np.isfinite(arr)]


def mean_curve(results: Results, specs: list[RunSpec], metric: str, x: str = "epoch"):
    """(x, mean, std) of a metric over the present seeds; x is 'epoch' or 'step'. None if no run is present."""
    runs = present(results, specs)
    if not runs:
        return None
    xs = results.epochs(runs[0]) if x == "epoch" else results.steps(runs[0])
    mean, std = mean_std(results.curves(runs, metric))
    return xs, mean, std


def plot_curve(ax, results: Results, specs: list[RunSpec], metric: str, *, x: str = "epoch", scale: float = 1.0,
               shift: float = 0.0, label: str | None = None, color: str | None = None, linestyle: str = "-"):
    """Mean ± std band of a metric vs epoch or step (x shifted by `shift`); nothing if no run is present."""
    curve = mean_curve(results, specs, metric, x)
    if curve is None:
        return None
    xs, mean, std = curve
    return band(ax, xs + shift, scale * mean, scale * std, label=label, color=color, linestyle=linestyle)


def layer_names(results: Results, specs: list[RunSpec], prefix: str = "cos_init:") -> list[str]:
    """Per-layer metric names (e.g. cos_init:net.0, cos_init:net.2, ...) recorded for these runs, in layer order."""
    for s in present(results, specs):
        names = [k for k in results.records[s.key].metrics[0] if k.startswith(prefix)]
        return sorted(names, key=lambda n: [int(p) if p.isdigit() else p for p in n.replace(":", ".").split(".")])
    return []


def initial(results: Results, specs: list[RunSpec], metric: str) -> np.ndarray:
    """A metric at epoch 0 (before training) for each present run."""
    return np.array([results.series(s, metric)[0] for s in present(results, specs)])


def accuracy_curves(results: Results, groups: dict[str, list], title: str, x: str = "epoch"):
    """Train and test accuracy vs epoch (or step), mean and ±1 std band over seeds, one colour per label."""
    fig, (ax_tr, ax_te) = new_figure(ncols=2)
    for i, (label, specs) in enumerate(groups.items()):
        for ax, metric in ((ax_tr, "train_acc"), (ax_te, "test_acc")):
            plot_curve(ax, results, specs, metric, x=x, scale=100, label=label, color=PALETTE[i % len(PALETTE)])
    for ax, split in ((ax_tr, "train"), (ax_te, "test")):
        ax.set_xlabel(x)
        ax.set_ylabel(f"{split} accuracy (%)")
        ax.set_title(f"{split} accuracy")
    ax_te.legend(frameon=False)
    fig.suptitle(title)
    return fig


def final_table(results: Results, groups: dict[str, list], name: str, caption: str,
                metrics: Sequence[str] = CURVE_METRICS, info: Mapping[str, dict] | None = None) -> Table:
    """One row per configuration: final values of `metrics` as mean ± std over seeds, epochs and steps.

    `info` adds leading columns per configuration label (e.g. batch size and lr of a grid cell).
    """
    rows = []
    for label, specs in groups.items():
        runs = present(results, specs)
        row: dict = {"configuration": label, **(info or {}).get(label, {}), "seeds": len(runs)}
        for metric in metrics:
            mean, std = mean_std(results.finals(runs, metric)) if runs else (np.nan, np.nan)
            row[f"{metric} mean"], row[f"{metric} std"] = float(mean), float(std)
        row["epochs"] = int(results.epochs(runs[0])[-1]) if runs else 0
        row["steps"] = int(results.steps(runs[0])[-1]) if runs else 0
        row["diverged"] = sum(results.status(s) == "diverged" for s in runs)
        rows.append(row)
    return Table(name, rows, caption)


# ------------------------------------------------------------------------------------------------
# claim rules: pure functions of small arrays (fractions for accuracies, evidence in pp)


def _pp(sample) -> float:
    return 100 * float(np.mean(sample))


def _missing(samples: Mapping[str, np.ndarray]) -> list[str]:
    """Labels of samples without a single finite value (runs missing or all diverged)."""
    return [label for label, s in samples.items() if finite(s).size == 0]


def _missing_why(missing: list[str]) -> str:
    return f"no finished runs (missing or diverged) for: {', '.join(missing)}"


def _nonfinite(samples: Mapping[str, np.ndarray]) -> int:
    return int(sum(np.size(s) - finite(s).size for s in samples.values()))


def _welch_p(a: np.ndarray, b: np.ndarray) -> float | str:
    if len(a) < 2 or len(b) < 2:
        return "n/a (needs 2 seeds each)"
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return "n/a (no spread)"
    p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return p if np.isfinite(p) else "n/a (no spread)"


def within_pp(reference: np.ndarray, other: np.ndarray, tol_pp: float) -> tuple[bool, float]:
    """Whether mean(other) lies within tol_pp percentage points of mean(reference); and the gap in pp."""
    gap = _pp(other) - _pp(reference)
    return abs(gap) <= tol_pp, gap


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
    if missing := _missing(samples):
        return inconclusive(*D2, rule, _missing_why(missing))
    small, comp = finite(acc_small), finite(acc_large_high_lr)
    ok, gap = within_pp(small, comp, tol_pp)
    evidence: dict = {f"test accuracy {labels[0]} (%)": _pp(small), f"test accuracy {labels[1]} (%)": _pp(comp),
                      "gap (pp)": gap, f"Welch p {labels[1]} vs {labels[0]}": _welch_p(comp, small)}
    if acc_large is not None and finite(acc_large).size:
        evidence[f"test accuracy {labels[2]} (%)"] = _pp(finite(acc_large))
        evidence["gap without raising lr (pp)"] = _pp(finite(acc_large)) - _pp(small)
    if n := _nonfinite(samples):
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
    if missing := _missing(samples):
        return inconclusive(*D3, rule, _missing_why(missing))
    a = finite(acc_a)
    evidence: dict = {"test accuracy (a) (%)": _pp(a)}
    within: dict[str, bool] = {}
    for key in ("(b)", "(c)", "(d)", "(e)"):
        s = finite(samples[key])
        within[key], gap = within_pp(a, s, tol_pp)
        evidence[f"test accuracy {key} (%)"] = _pp(s)
        evidence[f"{key} - (a) (pp)"] = gap
    if n := _nonfinite(samples):
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
    rho, p = (float(v) for v in stats.spearmanr(w[ok_cells], acc[ok_cells]))
    evidence: dict = {"cells": int(ok_cells.sum()), "Spearman rho(W, test accuracy)": rho, "Spearman p": p}
    bs_grid = np.repeat(np.asarray(batch_sizes, dtype=float)[:, None], len(lrs), 1)
    lr_grid = np.repeat(np.asarray(lrs, dtype=float)[None, :], len(batch_sizes), 0)
    for name, grid in (("batch size", bs_grid), ("lr", lr_grid)):
        if np.ptp(grid[ok_cells]) > 0:
            evidence[f"Spearman rho(W, {name})"] = float(stats.spearmanr(grid[ok_cells], w[ok_cells])[0])
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
    if missing := _missing(samples):
        return inconclusive(*D5, rule, _missing_why(missing))
    ws, wl = float(np.mean(finite(w_small))), float(np.mean(finite(w_long)))
    ratio = wl / ws if ws > 0 else float("inf")
    w_ok = abs(ratio - 1) <= w_tol
    acc_ok, gap = within_pp(finite(acc_small), finite(acc_long), tol_pp)
    evidence: dict = {"W batch 64": ws, "W long run": wl, "W ratio long / 64": ratio,
                      "test accuracy batch 64 (%)": _pp(finite(acc_small)),
                      "test accuracy long run (%)": _pp(finite(acc_long)), "accuracy gap long - 64 (pp)": gap}
    if steps_small is not None and steps_long is not None:
        evidence["steps batch 64"], evidence["steps long run"] = int(steps_small), int(steps_long)
    if n := _nonfinite(samples):
        evidence["diverged runs left out"] = n
    ok = w_ok and acc_ok
    why = (f"W ratio {ratio:.3f} ({'within' if w_ok else 'outside'} ±{w_tol:.0%}), accuracy gap {gap:+.2f} pp "
           f"({'within' if acc_ok else 'outside'} ±{tol_pp:g} pp)")
    return Claim(*D5, rule, "supported" if ok else "not supported", evidence, why)


D6 = ("D6", "For SGD the distance from init grows sublinearly in steps; for Adam nearly linearly.",
      f"{HOFFER_2017}; {SHEN_2018}")


def concavity(x, y) -> tuple[float, int]:
    """Fraction of negative second divided differences of y(x) (x increasing), and how many there are."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    slopes = np.diff(y) / np.diff(x)
    second = np.diff(slopes)
    second = second[np.isfinite(second)]
    return (float(np.mean(second < 0)) if second.size else float("nan")), int(second.size)


def power_law_exponent(x, y) -> float:
    """alpha of y ~ c x^alpha, least squares on log-log over the points with x > 0 and y > 0."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = (x > 0) & (y > 0) & np.isfinite(y)
    if keep.sum() < 2:
        return float("nan")
    return float(stats.linregress(np.log(x[keep]), np.log(y[keep])).slope)


def linear_r2(x, y) -> float:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(y)
    if keep.sum() < 3 or np.ptp(y[keep]) == 0:
        return float("nan")
    return float(stats.linregress(x[keep], y[keep]).rvalue ** 2)


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
    if missing := _missing(samples):
        return inconclusive(*D7, rule, _missing_why(missing))
    ws, wa = float(np.mean(finite(w_sgd))), float(np.mean(finite(w_adam)))
    ratio = wa / ws if ws > 0 else float("inf")
    a_sgd, a_adam = finite(acc_sgd), finite(acc_adam)
    far, worse = ratio > factor, _pp(a_adam) < _pp(a_sgd)
    evidence: dict = {"W SGD": ws, "W Adam": wa, "W ratio Adam / SGD": ratio,
                      "test accuracy SGD (%)": _pp(a_sgd), "test accuracy Adam (%)": _pp(a_adam),
                      "accuracy gap Adam - SGD (pp)": _pp(a_adam) - _pp(a_sgd),
                      "Welch p accuracy": _welch_p(a_adam, a_sgd)}
    if n := _nonfinite(samples):
        evidence["diverged runs left out"] = n
    ok = far and worse
    why = (f"Adam's W is {ratio:.1f}x SGD's ({'>' if far else '<='} {factor:g}x) and its test accuracy is "
           f"{'lower' if worse else 'not lower'} ({_pp(a_adam) - _pp(a_sgd):+.2f} pp)")
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
    if missing := _missing(samples):
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


# ------------------------------------------------------------------------------------------------
# batch-size-sweep (D1)


def monotone_decrease_claim(id: str, statement: str, source: str, labels: list, samples: list[np.ndarray],
                            what: str) -> Claim:
    """Mean decreases along `labels`, each step larger than 2 seed standard deviations (spec 02 D1)."""
    rule = (f"mean final {what} decreases monotonically over {' < '.join(map(str, labels))}, and each "
            "decrease exceeds 2 standard deviations (ddof=1) of the seeds of either neighbour")
    if len(labels) < 2:
        return inconclusive(id, statement, source, rule, "needs at least 2 configurations to compare")
    if any(len(s) < 2 for s in samples):
        return inconclusive(id, statement, source, rule, "needs at least 2 seeds per configuration")
    evidence: dict = {}
    ok = True
    for (a, sa), (b, sb) in zip(zip(labels, samples), zip(labels[1:], samples[1:])):
        drop = float(np.mean(sa) - np.mean(sb))
        two_sd = 2 * max(float(np.std(sa, ddof=1)), float(np.std(sb, ddof=1)))
        evidence[f"drop {a}->{b} (pp)"] = 100 * drop
        evidence[f"2 sd {a}/{b} (pp)"] = 100 * two_sd
        evidence[f"Welch p {a} vs {b}"] = float(stats.ttest_ind(sa, sb, equal_var=False).pvalue)
        ok &= drop > two_sd
    for label, s in zip(labels, samples):
        evidence[f"{what} {label} (%)"] = 100 * float(np.mean(s))
    why = ("every step is a decrease larger than 2 sd" if ok else
           "at least one step is not a decrease larger than 2 sd of the seeds")
    return Claim(id, statement, source, rule, "supported" if ok else "not supported", evidence, why)


class BatchSizeSweepConfig(StudyConfig):
    batch_sizes: tuple[int, ...] = Field((64, 256, 1024), min_length=2)
    lr: float = Field(0.01, gt=0)
    epochs: int = Field(SPEC_EPOCHS, ge=1)


class BatchSizeSweep(Study):
    name = "batch-size-sweep"
    title = "Accuracy curves vs batch size"
    description = ("SGD at a fixed learning rate and number of epochs, for several batch sizes. A larger batch "
                   "takes fewer steps per epoch; at fixed lr and epochs it is expected to reach a lower accuracy "
                   "(Keskar et al. 2017; Hoffer et al. 2017).")
    Config = BatchSizeSweepConfig
    profiles = {
        "quick": QUICK_SETUP | {"epochs": QUICK_EPOCHS},
        "full": {"batch_sizes": (2, 64, 256, 1024)},
    }

    def groups(self, cfg: BatchSizeSweepConfig) -> dict[str, list]:
        return {f"batch {b}": cfg.seeded(batch_size=b, lr=cfg.lr, epochs=cfg.epochs) for b in cfg.batch_sizes}

    def plan(self, cfg: BatchSizeSweepConfig) -> list:
        return [s for specs in self.groups(cfg).values() for s in specs]

    def analyze(self, cfg: BatchSizeSweepConfig, results: Results) -> StudyOutput:
        groups = self.groups(cfg)
        fig = accuracy_curves(results, groups, f"SGD, lr {cfg.lr}: accuracy vs epoch by batch size")
        table = final_table(results, groups, "final", "Final values after the last epoch (mean and std over seeds)")
        return StudyOutput(
            figures=[FigureSpec("accuracy_vs_epoch", fig,
                                "Train (left) and test (right) accuracy vs epoch; line = mean over seeds, band = ±1 std.")],
            tables=[table],
            claims=[self.claim_d1(cfg, results)],
        )

    def claim_d1(self, cfg: BatchSizeSweepConfig, results: Results) -> Claim:
        statement = "At fixed lr and epochs, a larger batch gives lower final test accuracy."
        source = "Keskar et al. 2017 (large-batch training); Hoffer et al. 2017"
        sizes = [b for b in (64, 256, 1024) if b in cfg.batch_sizes]  # the spec's rule, where present
        if len(sizes) < 2:
            sizes = sorted(cfg.batch_sizes)
        samples = [results.finals(cfg.seeded(batch_size=b, lr=cfg.lr, epochs=cfg.epochs), "test_acc") for b in sizes]
        return monotone_decrease_claim("D1", statement, source, sizes, samples, "test accuracy")


# ------------------------------------------------------------------------------------------------
# lr-compensation (D2)


class PairConfig(StudyConfig):
    """A small and a large batch at the base lr for `epochs` epochs (spec 02: 64, 1024, lr 0.01, 30 epochs)."""

    small_batch: int = Field(64, ge=1)
    large_batch: int = Field(1024, ge=1)
    lr: float = Field(0.01, gt=0)
    epochs: int = Field(SPEC_EPOCHS, ge=1)

    @model_validator(mode="after")
    def _order(self):
        if self.small_batch >= self.large_batch:
            raise ValueError("small_batch must be smaller than large_batch")
        return self

    def sgd(self, batch_size: int, lr: float | None = None, epochs: int | None = None, **fields) -> list[RunSpec]:
        """The seeds of one SGD configuration: the one way studies here build it, so shared runs share keys."""
        return self.seeded(batch_size=batch_size, lr=self.lr if lr is None else lr,
                           epochs=self.epochs if epochs is None else epochs, **fields)


class LRCompensationConfig(PairConfig):
    raised_lr: float = Field(0.1, gt=0)


class LRCompensation(Study):
    name = "lr-compensation"
    title = "Compensating a large batch with a larger learning rate"
    description = ("Batch 1024 takes 16x fewer steps per epoch than batch 64. Raising its lr 10x (0.01 -> 0.1) "
                   "is expected to recover the small-batch accuracy in the same number of epochs (Shen 2018; the "
                   "linear scaling rule of Goyal et al. 2017 would suggest 16x).")
    Config = LRCompensationConfig
    profiles = {"quick": QUICK_SETUP | {"epochs": QUICK_EPOCHS}, "full": {}}

    def groups(self, cfg: LRCompensationConfig) -> dict[str, list]:
        return {run_label(cfg.small_batch, cfg.lr): cfg.sgd(cfg.small_batch),
                run_label(cfg.large_batch, cfg.lr): cfg.sgd(cfg.large_batch),
                run_label(cfg.large_batch, cfg.raised_lr): cfg.sgd(cfg.large_batch, cfg.raised_lr)}

    def plan(self, cfg: LRCompensationConfig) -> list:
        return [s for specs in self.groups(cfg).values() for s in specs]

    def analyze(self, cfg: LRCompensationConfig, results: Results) -> StudyOutput:
        groups = self.groups(cfg)
        labels = list(groups)
        fig = accuracy_curves(results, groups, f"Raising the lr of batch {cfg.large_batch} (SGD, {cfg.epochs} epochs)")
        small, large, comp = (results.finals(groups[k], "test_acc") for k in labels)
        claim = rule_d2(small, comp, large, labels=(labels[0], labels[2], labels[1]))
        return StudyOutput(
            figures=[FigureSpec("accuracy_vs_epoch", fig, "Train (left) and test (right) accuracy vs epoch; "
                                                          "line = mean over seeds, band = ±1 std.")],
            tables=[final_table(results, groups, "final",
                                "Final values after the last epoch (mean and std over seeds)")],
            claims=[claim],
        )


# ------------------------------------------------------------------------------------------------
# schedule-switch (D3)


@dataclass(frozen=True)
class Schedule:
    """One of the five schedules: its label, runs and total epochs. Each changes (if it does) exactly where its
    last `cfg.epochs` epochs begin, so aligning the schedules on their ends aligns the switches too."""

    label: str
    specs: list
    epochs: int


class ScheduleSwitchConfig(PairConfig):
    first_switch: int = Field(1, ge=1)  # (c): epochs at the large batch before switching
    lr_factor: float = Field(10.0, gt=0)  # (e): lr multiplier for the second half


class ScheduleSwitch(Study):
    name = "schedule-switch"
    title = "Switching from a large to a small batch, or raising the lr"
    description = ("Does a large batch get the model stuck? Five schedules, compared over the last epochs of each: "
                   "(a) batch 64; (b) batch 1024 for twice as long (control); (c) batch 1024 for 1 epoch, then batch "
                   "64; (d) batch 1024, then batch 64; (e) batch 1024 twice as long with lr x10 in the second half "
                   "(Shen 2018).")
    Config = ScheduleSwitchConfig
    profiles = {"quick": QUICK_SETUP | {"epochs": QUICK_EPOCHS}, "full": {}}

    def schedules(self, cfg: ScheduleSwitchConfig) -> list[Schedule]:
        e, s, big, k = cfg.epochs, cfg.small_batch, cfg.large_batch, cfg.first_switch
        raised = LRSchedule(kind="step", milestones=(float(e),), gamma=cfg.lr_factor)
        return [
            Schedule(f"(a) batch {s}, {e} ep", cfg.sgd(s), e),
            Schedule(f"(b) batch {big}, {2 * e} ep", cfg.sgd(big, epochs=2 * e), 2 * e),
            Schedule(f"(c) batch {big} {k} ep → {s} {e} ep",
                     cfg.sgd(big, epochs=k + e, batch_switch=((k, s),)), k + e),
            Schedule(f"(d) batch {big} {e} ep → {s} {e} ep",
                     cfg.sgd(big, epochs=2 * e, batch_switch=((e, s),)), 2 * e),
            Schedule(f"(e) batch {big}, {2 * e} ep, lr ×{cfg.lr_factor:g} from ep {e + 1}",
                     cfg.sgd(big, epochs=2 * e, lr_schedule=raised), 2 * e),
        ]

    def plan(self, cfg: ScheduleSwitchConfig) -> list:
        return [s for sch in self.schedules(cfg) for s in sch.specs]

    def figure(self, cfg: ScheduleSwitchConfig, results: Results, schedules: list[Schedule], tol_pp: float):
        """Curves aligned on the last `epochs` epochs of each schedule (x = 0 where that window starts)."""
        e = cfg.epochs
        fig, axes = new_figure(ncols=3, width=13, height=3.8)
        for i, sch in enumerate(schedules):
            style = dict(shift=-(sch.epochs - e), scale=100, label=sch.label, color=PALETTE[i % len(PALETTE)])
            for ax, metric in zip(axes, ("train_acc", "test_acc", "test_acc")):
                plot_curve(ax, results, sch.specs, metric, **style)
        for ax, title in zip(axes, ("train accuracy", "test accuracy", f"test accuracy, last {e} epochs (zoom)")):
            ax.axvspan(-e, 0, color="#000000", alpha=0.04, linewidth=0)
            ax.axvline(0, color="#555555", linestyle="--", linewidth=1)
            ax.set_xlim(-e, e)
            ax.set(xlabel=f"epoch, aligned on the last {e}", ylabel=f"{title.split(',')[0]} (%)", title=title)
        # the zoom: the last epochs only, with the D3 band of +-tol_pp around (a)'s final accuracy
        zoom = axes[2]
        zoom.set_xlim(0.5, e + 0.25)
        finals = [100 * finite(results.finals(sch.specs, "test_acc")).mean() for sch in schedules
                  if finite(results.finals(sch.specs, "test_acc")).size]
        ref = finite(results.finals(schedules[0].specs, "test_acc"))
        if ref.size:
            zoom.axhspan(100 * ref.mean() - tol_pp, 100 * ref.mean() + tol_pp, color=PALETTE[0], alpha=0.12,
                         linewidth=0, label=f"(a) ± {tol_pp:g} pp")
        if finals:
            lo = [100 * np.nanmin(c[1][c[0] >= sch.epochs - e + 1]) for sch in schedules
                  if (c := mean_curve(results, sch.specs, "test_acc")) is not None]
            zoom.set_ylim(max(min(lo), min(finals) - 5) - 0.5, max(finals) + 1)
        zoom.legend(frameon=False, fontsize=7.5, loc="lower right")
        fig.suptitle(f"Five schedules aligned on their last {e} epochs")
        return fig

    def analyze(self, cfg: ScheduleSwitchConfig, results: Results) -> StudyOutput:
        schedules = self.schedules(cfg)
        groups = {sch.label: sch.specs for sch in schedules}
        accs = [results.finals(sch.specs, "test_acc") for sch in schedules]
        return StudyOutput(
            figures=[FigureSpec("last_epochs", self.figure(cfg, results, schedules, D3_TOL_PP),
                                f"Train and test accuracy of each schedule, aligned so that its last {cfg.epochs} "
                                f"epochs lie in [0, {cfg.epochs}]; the dashed line marks where (c), (d) switch to "
                                f"batch {cfg.small_batch} and (e) raises the lr; the shaded part is the schedule's "
                                "earlier training (for (a) there is none). Right: the last epochs enlarged, with the "
                                f"±{D3_TOL_PP:g} pp band around (a)'s final test accuracy that D3 tests. Line = mean, "
                                "band = ±1 std.")],
            tables=[final_table(results, groups, "final", "Final values of each schedule (mean and std over seeds)")],
            claims=[rule_d3(*accs, tol_pp=D3_TOL_PP)],
        )


# ------------------------------------------------------------------------------------------------
# distance-grid (D4, D5)


class DistanceGridConfig(PairConfig):
    batch_sizes: tuple[int, ...] = Field((64, 256, 1024), min_length=2)
    lrs: tuple[float, ...] = Field((0.001, 0.01, 0.03, 0.1), min_length=1)

    @property
    def long_epochs(self) -> int:
        """(large/small) x epochs: as many steps at the large batch as the small batch takes in `epochs`."""
        return self.epochs * self.large_batch // self.small_batch


class DistanceGrid(Study):
    name = "distance-grid"
    title = "Distance from initialisation across batch sizes and learning rates"
    description = ("How far do the weights travel from their initialisation (W = ||w_T - w_0|| over the weight "
                   "matrices, B over the biases), and do better solutions lie farther away? A grid of batch sizes "
                   "and learning rates, plus batch 1024 trained 16x longer so that it takes as many steps as batch "
                   "64 (Hoffer et al. 2017; Shen 2018).")
    Config = DistanceGridConfig
    profiles = {"quick": QUICK_SETUP | {"epochs": QUICK_EPOCHS, "lrs": (0.01, 0.1)}, "full": {}}

    def cell(self, cfg: DistanceGridConfig, b: int, lr: float) -> list[RunSpec]:
        return cfg.sgd(b, lr)

    def trio(self, cfg: DistanceGridConfig) -> dict[str, list]:
        """Batch 64 and 1024 at the base lr, and batch 1024 for long_epochs: the distance-vs-time comparison."""
        return {run_label(cfg.small_batch, cfg.lr, cfg.epochs): cfg.sgd(cfg.small_batch),
                run_label(cfg.large_batch, cfg.lr, cfg.epochs): cfg.sgd(cfg.large_batch),
                run_label(cfg.large_batch, cfg.lr, cfg.long_epochs): cfg.sgd(cfg.large_batch, epochs=cfg.long_epochs)}

    def plan(self, cfg: DistanceGridConfig) -> list:
        grid = [s for b in cfg.batch_sizes for lr in cfg.lrs for s in self.cell(cfg, b, lr)]
        return list({s.key: s for s in grid + [s for specs in self.trio(cfg).values() for s in specs]}.values())

    def grid_means(self, cfg: DistanceGridConfig, results: Results, metric: str) -> np.ndarray:
        out = np.full((len(cfg.batch_sizes), len(cfg.lrs)), np.nan)
        for i, b in enumerate(cfg.batch_sizes):
            for j, lr in enumerate(cfg.lrs):
                vals = finite(results.finals(self.cell(cfg, b, lr), metric))
                out[i, j] = vals.mean() if vals.size else np.nan
        return out

    def grid_figure(self, cfg: DistanceGridConfig, w: np.ndarray, b: np.ndarray, acc: np.ndarray):
        fig, (ax_h, ax_s) = new_figure(ncols=2, width=10, height=3.8)
        text = [[f"W {w[i, j]:.3g}\nB {b[i, j]:.3g}\n{100 * acc[i, j]:.2f} %" for j in range(len(cfg.lrs))]
                for i in range(len(cfg.batch_sizes))]
        heatmap(ax_h, w, [f"batch {x}" for x in cfg.batch_sizes], [f"lr {x:g}" for x in cfg.lrs], cell_text=text,
                colorbar_label="W = ||w_T - w_0||")
        ax_h.set_title(f"W, B and test accuracy after {cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''}")
        markers = "osD^v<>"
        for j, lr in enumerate(cfg.lrs):
            for i, bs in enumerate(cfg.batch_sizes):
                if np.isfinite(w[i, j]) and np.isfinite(acc[i, j]):
                    ax_s.scatter(w[i, j], 100 * acc[i, j], color=PALETTE[j % len(PALETTE)], marker=markers[i % 7],
                                 s=40, label=f"lr {lr:g}" if i == 0 else None, zorder=3)
                    ax_s.annotate(str(bs), (w[i, j], 100 * acc[i, j]), textcoords="offset points", xytext=(5, -3),
                                  fontsize=7.5)
        ax_s.set_xscale("log")
        ax_s.set_xlabel("W (log scale)")
        ax_s.set_ylabel("test accuracy (%)")
        ax_s.set_title("test accuracy vs W (labels: batch size)")
        ax_s.legend(frameon=False)
        return fig

    def distance_figure(self, cfg: DistanceGridConfig, results: Results, trio: dict[str, list]):
        fig, axes = new_figure(ncols=3, width=13, height=3.6)
        for i, (label, specs) in reversed(list(enumerate(trio.items()))):
            style = dict(label=label, color=PALETTE[i % len(PALETTE)], linestyle="--" if i == 2 else "-")
            plot_curve(axes[0], results, specs, "dist_init_w", x="epoch", **style)
            plot_curve(axes[1], results, specs, "dist_init_w", x="step", **style)
            plot_curve(axes[2], results, specs, "test_acc", x="step", scale=100, **style)
        ref = finite(results.finals(next(iter(trio.values())), "dist_init_w"))
        for ax in axes[:2]:
            if ref.size:
                ax.axhline(ref.mean(), color="#555555", linestyle=":", linewidth=1)
            ax.set_ylabel("W = ||w_t - w_0||")
        axes[0].set(xlabel="epoch", title="distance from init vs epoch")
        axes[1].set(xlabel="step", title="distance from init vs step")
        axes[2].set(xlabel="step", ylabel="test accuracy (%)", title="test accuracy vs step")
        handles, labels = axes[2].get_legend_handles_labels()
        axes[2].legend(handles[::-1], labels[::-1], frameon=False, fontsize=8, loc="lower right")
        fig.suptitle(f"SGD, lr {cfg.lr:g}: batch {cfg.small_batch} and {cfg.large_batch} for {cfg.epochs} epochs, "
                     f"and batch {cfg.large_batch} for {cfg.long_epochs} (as many steps as batch {cfg.small_batch})")
        return fig

    def analyze(self, cfg: DistanceGridConfig, results: Results) -> StudyOutput:
        w, b, acc = (self.grid_means(cfg, results, m) for m in ("dist_init_w", "dist_init_b", "test_acc"))
        trio = self.trio(cfg)
        cells = {run_label(bs, lr): self.cell(cfg, bs, lr) for bs in cfg.batch_sizes for lr in cfg.lrs}
        info = {run_label(bs, lr): {"batch size": bs, "lr": lr} for bs in cfg.batch_sizes for lr in cfg.lrs}
        small, _, long = trio.values()
        long_runs, small_runs = present(results, long), present(results, small)
        d5 = rule_d5(results.finals(small, "dist_init_w"), results.finals(small, "test_acc"),
                     results.finals(long, "dist_init_w"), results.finals(long, "test_acc"),
                     steps_small=int(results.steps(small_runs[0])[-1]) if small_runs else None,
                     steps_long=int(results.steps(long_runs[0])[-1]) if long_runs else None)
        metrics = (*CURVE_METRICS, "norm_w", "norm_b")
        return StudyOutput(
            figures=[FigureSpec("distance_grid", self.grid_figure(cfg, w, b, acc),
                                "Left: per cell, W (colour), B and test accuracy (mean over seeds) after "
                                f"{cfg.epochs} epochs of SGD. Right: test accuracy vs W, one point per cell."),
                     FigureSpec("distance_vs_epoch_and_step", self.distance_figure(cfg, results, trio),
                                f"Distance from init vs epoch (left) and vs step (middle), and test accuracy vs step "
                                f"(right) for batch {cfg.small_batch} and {cfg.large_batch} at lr {cfg.lr:g}, and "
                                f"batch {cfg.large_batch} for {cfg.long_epochs} epochs (dashed). Dotted: W of batch "
                                f"{cfg.small_batch} at the end. Line = mean, band = ±1 std.")],
            tables=[final_table(results, cells, "grid", "Per grid cell: final W, B, accuracy and loss (mean and std "
                                                        "over seeds)", metrics, info),
                    final_table(results, trio, "long_run", f"Batch {cfg.large_batch} trained {cfg.long_epochs} epochs "
                                                           "against the references", metrics)],
            claims=[rule_d4(w, acc, cfg.batch_sizes, cfg.lrs), d5],
        )


# ------------------------------------------------------------------------------------------------
# adam-vs-sgd (D6, D7, D8)


class AdamVsSGDConfig(StudyConfig):
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.01, gt=0)  # SGD
    adam_lr: float = Field(0.01, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    epochs: int = Field(SPEC_EPOCHS, ge=2)
    fit_start: int = Field(5, ge=0)  # D6: Adam's linear fit over epochs fit_start..epochs

    @model_validator(mode="after")
    def _window(self):
        if self.fit_start > self.epochs - 2:
            raise ValueError("fit_start must leave at least 3 epochs for the linear fit")
        return self


class AdamVsSGD(Study):
    name = "adam-vs-sgd"
    title = "Adam vs SGD: distance travelled and where the weights end up"
    description = ("Adam (lr 0.01) and SGD (lr 0.01) at batch 64: distance from init (W, B), distance from the "
                   "origin, per-layer cosine to init and test accuracy (Shen 2018; Wilson et al. 2017).")
    Config = AdamVsSGDConfig
    # quick: the spec's fit window 5..30 scaled to QUICK_EPOCHS
    profiles = {"quick": QUICK_SETUP | {"epochs": QUICK_EPOCHS,
                                        "fit_start": max(1, round(5 * QUICK_EPOCHS / SPEC_EPOCHS))},
                "full": {}}

    def groups(self, cfg: AdamVsSGDConfig) -> dict[str, list]:
        return {"SGD": cfg.seeded(batch_size=cfg.batch_size, lr=cfg.lr, epochs=cfg.epochs),
                "Adam": cfg.seeded(batch_size=cfg.batch_size, lr=cfg.adam_lr, epochs=cfg.epochs, optimizer="adam",
                                   betas=cfg.betas, eps=cfg.eps)}

    def plan(self, cfg: AdamVsSGDConfig) -> list:
        return [s for specs in self.groups(cfg).values() for s in specs]

    def distance_figure(self, cfg: AdamVsSGDConfig, results: Results, groups: dict[str, list]):
        fig, axes = new_figure(ncols=3, width=13, height=3.8)
        for i, (label, specs) in enumerate(groups.items()):
            color = PALETTE[i]
            for metric, ls in (("dist_init_w", "-"), ("dist_init_b", ":")):
                curve = mean_curve(results, specs, metric, x="step")
                if curve is not None:  # log-log: W(0) = 0 is left out; a power law is a straight line
                    xs, mean, std = curve
                    band(axes[0], xs[1:], mean[1:], std[1:], label=f"{label} {'W' if ls == '-' else 'B'}",
                         color=color, linestyle=ls)
            curve = mean_curve(results, specs, "dist_init_w")
            if curve is not None and np.isfinite(curve[1][-1]) and curve[1][-1] > 0:
                xs, mean, std = curve
                band(axes[1], xs, mean / mean[-1], std / mean[-1], label=label, color=color)
                window = xs >= cfg.fit_start
                if window.sum() >= 2:
                    fit = stats.linregress(xs[window], mean[window] / mean[-1])
                    axes[1].plot(xs[window], fit.intercept + fit.slope * xs[window], color=color, linestyle="--",
                                 linewidth=1, label=f"{label} linear fit, R² = {fit.rvalue ** 2:.3f}")
            plot_curve(axes[2], results, specs, "norm_w", label=label, color=color)
        axes[1].axvspan(cfg.fit_start, cfg.epochs, color="#000000", alpha=0.05, linewidth=0)
        n0 = initial(results, groups["SGD"], "norm_w")
        if n0.size:
            axes[2].axhline(n0.mean(), color="#555555", linestyle=":", linewidth=1, label="||w_0||")
        axes[0].set(xscale="log", yscale="log", xlabel="step", ylabel="distance from init",
                    title="W and B vs step (log-log)")
        axes[1].set(xlabel="epoch", ylabel="W / final W",
                    title=f"shape of W (fit: epochs {cfg.fit_start}-{cfg.epochs})")
        axes[2].set(xlabel="epoch", ylabel="||w_t||", title="distance from origin")
        for ax in axes:
            ax.legend(frameon=False, fontsize=7.5)
        fig.suptitle(f"Batch {cfg.batch_size}: SGD (lr {cfg.lr:g}) vs Adam (lr {cfg.adam_lr:g})")
        return fig

    def cosines(self, results: Results, specs: list[RunSpec]) -> dict[str, np.ndarray]:
        return {name: results.finals(specs, name) for name in layer_names(results, specs)}

    def cosine_figure(self, cos: dict[str, dict[str, np.ndarray]]):
        fig, ax = new_figure(width=5, height=3.4)
        layers = list(dict.fromkeys(k for c in cos.values() for k in c))  # layer order, as recorded
        heights = {opt: [float(np.mean(c[k])) if k in c and c[k].size else np.nan for k in layers]
                   for opt, c in cos.items()}
        errors = {opt: [mean_std(c[k])[1] if k in c and c[k].size else 0.0 for k in layers] for opt, c in cos.items()}
        bars(ax, heights, [f"layer {i + 1}\n({k.removeprefix('cos_init:')})" for i, k in enumerate(layers)],
             errors=errors)
        ax.axhline(D8_SGD_COS_MIN, color=PALETTE[0], linestyle=":", linewidth=1.2,
                   label=f"D8: SGD > {D8_SGD_COS_MIN:g}")
        ax.axhline(D8_ADAM_COS_MAX, color=PALETTE[1], linestyle=":", linewidth=1.2,
                   label=f"D8: Adam < {D8_ADAM_COS_MAX:g}")
        lowest = min([0.0, *[h for v in heights.values() for h in v if np.isfinite(h)]])
        ax.set(ylim=(lowest - 0.05, 1.35), ylabel="cos(w_T, w_0)", title="per-layer cosine to init")
        ax.legend(frameon=False, ncol=2, fontsize=8, loc="upper center")
        return fig

    def analyze(self, cfg: AdamVsSGDConfig, results: Results) -> StudyOutput:
        groups = self.groups(cfg)
        sgd, adam = groups["SGD"], groups["Adam"]
        cos = {label: self.cosines(results, specs) for label, specs in groups.items()}
        sgd_runs, adam_runs = present(results, sgd), present(results, adam)
        d6 = rule_d6(results.steps(sgd_runs[0]) if sgd_runs else [], results.curves(sgd, "dist_init_w"),
                     results.epochs(adam_runs[0]) if adam_runs else [], results.curves(adam, "dist_init_w"),
                     fit_start=cfg.fit_start, fit_end=cfg.epochs,
                     sgd_epochs=results.epochs(sgd_runs[0]) if sgd_runs else None)
        d7 = rule_d7(results.finals(sgd, "dist_init_w"), results.finals(adam, "dist_init_w"),
                     results.finals(sgd, "test_acc"), results.finals(adam, "test_acc"))
        d8 = rule_d8(initial(results, sgd, "norm_w"), results.finals(sgd, "norm_w"), cos["SGD"], cos["Adam"])
        metrics = (*CURVE_METRICS, "norm_w", "norm_b", *layer_names(results, sgd + adam))
        table = final_table(results, groups, "final", "Final values (mean and std over seeds); norm_w = ||w_T||, "
                                                      "cos_init:<layer> = cos(w_T, w_0) of each weight matrix",
                            metrics)
        for row, specs in zip(table.rows, groups.values()):
            mean, std = mean_std(initial(results, specs, "norm_w"))
            row["norm_w at init mean"], row["norm_w at init std"] = float(mean), float(std)
        return StudyOutput(
            figures=[FigureSpec("distance_from_init", self.distance_figure(cfg, results, groups),
                                "Left: W (solid) and B (dotted) vs step on log-log axes, where W ~ steps^a is a "
                                "straight line of slope a. Middle: W divided by its final value vs epoch, with least-"
                                "squares lines over the shaded window that D6 fits. Right: distance from the origin "
                                "||w_t|| vs epoch, dotted = ||w_0||. Line = mean, band = ±1 std."),
                     FigureSpec("per_layer_cosine", self.cosine_figure(cos),
                                "Cosine between each weight matrix and its initial value after training (mean ± std "
                                "over seeds); dotted: the D8 thresholds."),
                     FigureSpec("accuracy_vs_epoch", accuracy_curves(results, groups, "SGD vs Adam: accuracy vs epoch"),
                                "Train (left) and test (right) accuracy vs epoch; line = mean, band = ±1 std.")],
            tables=[table],
            claims=[d6, d7, d8],
        )


STUDIES: list[Study] = [BatchSizeSweep(), LRCompensation(), ScheduleSwitch(), DistanceGrid(), AdamVsSGD()]
