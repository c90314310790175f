"""gradient-competition: is one big-batch gradient shorter than the sum of many small-batch gradients?

The hypothesis: the examples of a batch "compete", so the gradient of a big batch is shorter than
the sum of the small-batch gradients over the same examples. From a checkpoint of the reference run
(`early` and `late`), each trial draws 1024 distinct training examples (its own seeded draw, the same
for every batch size), steps through them in batches of B with an SGD step (lr 0.01) after each,
and adds up the gradients of the last layer's weight matrix. ||sum|| is stored per trial, with a
histogram of the summed gradient's elements. Trials are stacked like runs: one batched kernel.

With the `mean` reduction every step's gradient is a mean, so 1024/B steps add up to a sum that
shrinks with B by construction; with `sum` each step adds its examples' gradients, and at lr = 0 the
sum is the same for every B (same examples, same weights): the control. Any dependence on B under
`sum` and lr > 0 comes from the weights moving during the pass.

Claims tested:
  G1  larger batches make larger summed steps (alpha > 0 in ||sum|| ~ B^alpha over the batch sizes whose passes
      stayed stable: a pass whose loss rose tenfold diverged), per reduction;
  G2  the relative spread std/mean of ||sum|| grows with B (Spearman > 0.8, on its bootstrap CI);
  G3  the summed gradient's elements get heavier-tailed with B (their kurtosis, scale-free; Spearman > 0.8);
  G4  control: lr = 0 with `sum` gives the same ||sum|| for every B (relative spread < 1e-5).
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from ...bounds import BatchSize, Count, Examples, Real
from ...engine.spec import TaskSpec
from ...outputs import Table
from ...report.figures import PALETTE, legend_below, new_figure
from ...tasks.gradients import HIST_EDGES, CompetitionArgs
from ..common import FigureSpec, Results, Study, StudyOutput
from .claims import G1, G2, G3, G4, diverged_passes, power_law, rule_g1, rule_g2, rule_g3, rule_g4
from .common import QUICK_REFERENCE, REGIMES, GradientConfig, regime_info

BATCH_SIZES = (1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 64, 128, 256, 512, 1024)


def _sparse_symlog_ticks(ax, linthresh: float, per_side: int = 4) -> None:
    """At most `per_side` labelled decades on each side of 0 of a symlog axis (all of them overlap)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter

    lo, hi = ax.get_xlim()
    top = max(abs(lo), abs(hi), linthresh * 10)
    kmin, kmax = int(np.ceil(np.log10(linthresh))), int(np.floor(np.log10(top)))
    step = max(1, int(np.ceil((kmax - kmin + 1) / per_side)))
    ks = list(range(kmax, kmin - 1, -step))
    ticks = sorted([-(10.0**k) for k in ks] + [0.0] + [10.0**k for k in ks])
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(FixedLocator([]))
    ax.xaxis.set_major_formatter(
        FuncFormatter(lambda v, _: "0" if v == 0 else f"${'-' if v < 0 else ''}10^{{{int(round(np.log10(abs(v))))}}}$")
    )


class CompetitionConfig(GradientConfig):
    batch_sizes: tuple[Annotated[BatchSize, Field(ge=1)], ...] = Field(
        BATCH_SIZES, min_length=3, description="Batch sizes B; each trial takes its examples in batches of B."
    )
    trials: Count = Field(1000, ge=2, description="Trials per batch size and regime (each its own draw of examples).")
    examples: Examples = Field(1024, ge=1, description="Examples per trial.")
    lr: Real = Field(0.01, gt=0, description="SGD learning rate of the steps through the examples.")
    reductions: tuple[Literal["mean", "sum"], ...] = Field(
        ("mean", "sum"), min_length=1, description="Loss reductions to measure (every figure says which it shows)."
    )
    control: bool = Field(True, description="Also run the lr = 0 control with the sum reduction (claim G4).")
    trial_chunk: Count = Field(0, ge=0, description="Trials computed together (0: as many as fit in memory).")


def _variant(reduction: str, lr: float) -> str:
    return f"{reduction}, lr {lr:g}"


class GradientCompetition(Study):
    name = "gradient-competition"
    accepts_user_model = "its per-example gradient Gram matrices are computed for the built-in MLP's layers"
    title = "Do the examples of a batch compete? Summed gradients across batch sizes"
    description = (
        "From checkpoints of the reference MLP (batch 1024, lr 0.01) early and late in training, each trial "
        "steps through its own draw of 1024 training examples in batches of B (SGD after each batch) and adds up "
        "the last layer's weight gradients; ||sum|| is compared across B. With a mean loss the sum shrinks with "
        "B by construction (1024/B steps, each a mean); with a summed loss and lr = 0 it is the same for every "
        "B, the control: any dependence on B at lr > 0 comes from the weights moving during the pass."
    )
    Config = CompetitionConfig
    claims = (G1, G2, G3, G4)
    profiles = {"quick": {**QUICK_REFERENCE, "trials": 16}, "full": {}}

    def tasks(self, cfg: CompetitionConfig) -> dict[tuple[str, str, int], TaskSpec]:
        """(regime, variant, B) -> its task."""
        variants = [(r, cfg.lr) for r in cfg.reductions] + ([("sum", 0.0)] if cfg.control else [])
        out = {}
        for regime in REGIMES:
            for reduction, lr in variants:
                for b in cfg.batch_sizes:
                    args = CompetitionArgs(
                        batch_size=b,
                        trials=cfg.trials,
                        examples=cfg.examples,
                        lr=lr,
                        reduction=reduction,
                        trial_chunk=cfg.trial_chunk,
                    )
                    spec = TaskSpec(
                        kind="gradient-competition",
                        args=args.model_dump(mode="json"),
                        seed=cfg.seed,
                        start=cfg.checkpoint(regime),
                    )
                    out[(regime, _variant(reduction, lr), b)] = spec
        return out

    def plan(self, cfg: CompetitionConfig) -> list[TaskSpec]:
        if cfg.examples > (cfg.train_subset or 60_000):
            raise ValueError(f"examples {cfg.examples} exceeds the training set")
        return list(self.tasks(cfg).values())

    # --- analysis -------------------------------------------------------------------------------------
    def arrays(self, cfg, results: Results, tasks, name: str) -> dict[tuple[str, str], np.ndarray]:
        """(regime, variant) -> the tasks' per-trial array `name` as [B, trials] (NaN rows where a task is missing,
        or where an older store has no such array)."""
        out = {}
        for (regime, variant, b), spec in tasks.items():
            rows = out.setdefault((regime, variant), np.full((len(cfg.batch_sizes), cfg.trials), np.nan))
            if results.has(spec) and not results.error(spec) and name in results.array_names(spec):
                rows[cfg.batch_sizes.index(b)] = results.array(spec, name)
        return out

    def histograms(self, cfg, results, tasks) -> dict[tuple[str, str], list]:
        """(regime, variant) -> the pooled element histogram per B (None where missing)."""
        out = {}
        for (regime, variant, b), spec in tasks.items():
            ok = results.has(spec) and not results.error(spec)
            out.setdefault((regime, variant), []).append(results.array(spec, "element_hist") if ok else None)
        return out

    def analyze(self, cfg: CompetitionConfig, results: Results) -> StudyOutput:
        tasks = self.tasks(cfg)
        norms = self.arrays(cfg, results, tasks, "norms")
        kurtosis = self.arrays(cfg, results, tasks, "kurtosis")
        before, after = (self.arrays(cfg, results, tasks, k) for k in ("loss_before", "loss_after"))
        diverged = {k: diverged_passes(n, before[k], after[k]) for k, n in norms.items()}
        hists = self.histograms(cfg, results, tasks)
        moving = [_variant(r, cfg.lr) for r in cfg.reductions]

        def per_reduction(arrays):
            return {regime: {v.split(",")[0]: arrays[(regime, v)] for v in moving} for regime in REGIMES}

        fits = {
            regime: {
                v.split(",")[0]: power_law(cfg.batch_sizes, norms[(regime, v)], diverged[(regime, v)]) for v in moving
            }
            for regime in REGIMES
        }
        spread = {}
        if cfg.control:
            for regime in REGIMES:
                n = norms[(regime, _variant("sum", 0.0))]
                spread[regime] = float(np.max((n.max(0) - n.min(0)) / n.mean(0))) if np.all(np.isfinite(n)) else np.nan
        info = regime_info(results, cfg)
        claims = [
            rule_g1(fits),
            rule_g2(cfg.batch_sizes, per_reduction(norms)),
            rule_g3(cfg.batch_sizes, per_reduction(kurtosis)),
        ]
        if cfg.control:
            claims.append(rule_g4(spread))
        regimes_text = ", ".join(
            f"{r}: epoch {i['epoch']}, train acc {100 * i.get('train_acc', np.nan):.1f} %" for r, i in info.items()
        )
        return StudyOutput(
            figures=[
                FigureSpec(
                    "norm_vs_batch",
                    self.norm_figure(cfg, norms, fits),
                    "Mean (points, +-1 std as error bars) of ||sum of last-layer gradients|| over the trials against "
                    "B, log-log, with the power law B^alpha fitted over the stable batch sizes and its 95 % CI; one "
                    f"panel per regime ({regimes_text}), one line per reduction (the lr = 0 control dashed). Crosses "
                    "mark batch sizes whose passes diverged (the loss on their examples rose tenfold): left out of the "
                    "fit. Look at the slope: the sign of alpha is G1.",
                ),
                FigureSpec(
                    "rescaled",
                    self.rescaled_figure(cfg, norms),
                    "Look at the dashed std lines: claim G2 expects them to rise with B. "
                    "Mean and std of ||sum|| rescaled by mu_largest B / mu_B, so that every B has the largest batch's "
                    "mean: what is left is the shape of the spread (G2: std/mean growing with B), per reduction.",
                ),
                FigureSpec(
                    "ridge",
                    self.ridge_figure(cfg, norms),
                    "Histograms of the rescaled norms per batch size (one row per B, B growing upwards), per regime "
                    "and reduction (lr > 0): wider rows mean more spread relative to the mean.",
                ),
                FigureSpec(
                    "elements",
                    self.element_figure(cfg, hists, kurtosis, moving),
                    "Left: elements of the summed last-layer gradient pooled over all trials, per B, |value| on a log "
                    "axis, counts on a log axis (early regime, first reduction): the curves move left with B under a "
                    "mean loss, which is scale, not shape. Right: the kurtosis E v^4 / (E v^2)^2 of a trial's "
                    "elements (mean +- std over trials) against B, per regime and reduction: the scale-free tail "
                    "weight G3 reads (3 for Gaussian elements).",
                ),
            ],
            tables=[self.table(cfg, norms, kurtosis, diverged)],
            claims=claims,
        )

    def norm_figure(self, cfg, norms, fits):
        fig, axes = new_figure(ncols=len(REGIMES), width=5.2 * len(REGIMES), height=6)  # room for a 6-line legend
        variants = list(dict.fromkeys(v for _, v in norms))
        for ax, regime in zip(np.atleast_1d(axes), REGIMES):
            for i, variant in enumerate(variants):
                n = norms[(regime, variant)]
                mean, std = np.nanmean(n, 1), np.nanstd(n, 1, ddof=1)
                control = variant.endswith("lr 0")
                label = f"{regime}, {variant}" + (" (control)" if control else "")
                fit = fits[regime].get(variant.split(",")[0]) if not control else None
                if fit and np.isfinite(fit["alpha"]):
                    label += f": alpha {fit['alpha']:.3f} [{fit['ci'][0]:.3f}, {fit['ci'][1]:.3f}]"
                    xs = np.array([b for b in cfg.batch_sizes if b not in fit["diverged B"]], dtype=float)
                    ax.plot(xs, fit["c"] * xs ** fit["alpha"], color=PALETTE[i], linewidth=0.8, alpha=0.6)
                if fit and fit["diverged B"]:
                    rows = [cfg.batch_sizes.index(b) for b in fit["diverged B"]]
                    ax.plot(fit["diverged B"], mean[rows], "x", color=PALETTE[i], markersize=8, markeredgewidth=1.5)
                ax.errorbar(
                    cfg.batch_sizes,
                    mean,
                    yerr=std,
                    fmt="o--" if control else "o",
                    markersize=3,
                    color=PALETTE[i],
                    label=label,
                    capsize=2,
                    linewidth=1,
                )
            ax.set(
                xscale="log",
                yscale="log",
                xlabel="batch size B",
                ylabel="‖Σ g‖: L2 norm of the summed\nlast-layer weight gradient (log)",
                title=f"{regime} checkpoint",
            )
        legend_below(fig)
        fig.suptitle("Summed gradient of a batch against the batch size B (mean ± std over the trials)")
        return fig

    def rescaled_figure(self, cfg, norms):
        variants = [v for v in dict.fromkeys(v for _, v in norms) if not v.endswith("lr 0")]
        fig, axes = new_figure(ncols=len(variants), width=5 * len(variants), height=3.8)
        big = int(np.argmax(cfg.batch_sizes))
        for ax, variant in zip(np.atleast_1d(axes), variants):
            for i, regime in enumerate(REGIMES):
                n = norms[(regime, variant)]
                mean, std = np.nanmean(n, 1), np.nanstd(n, 1, ddof=1)
                scale = mean[big] / mean
                ax.plot(cfg.batch_sizes, mean * scale, "o-", color=PALETTE[i], markersize=3, label=f"{regime}: mean")
                ax.plot(cfg.batch_sizes, std * scale, "s--", color=PALETTE[i], markersize=3, label=f"{regime}: std")
            ax.set(
                xscale="log",
                yscale="log",
                xlabel="batch size B",
                ylabel="‖Σ g‖ × μ_largest B / μ_B (log)",
                title=f"reduction: {variant}",
            )
        legend_below(fig)  # the same four labels in each panel; inside, they covered the sum panel's lines
        fig.suptitle("Spread of the summed gradient with the mean scaled away: std (dashed) vs mean (solid)")
        return fig

    def ridge_figure(self, cfg, norms):
        variants = [v for v in dict.fromkeys(v for _, v in norms) if not v.endswith("lr 0")]
        fig, axes = new_figure(ncols=len(REGIMES) * len(variants), width=3.4 * len(REGIMES) * len(variants), height=5)
        big = int(np.argmax(cfg.batch_sizes))
        for ax, (regime, variant) in zip(np.atleast_1d(axes), [(r, v) for r in REGIMES for v in variants]):
            n = norms[(regime, variant)]
            scaled = n * (np.nanmean(n[big]) / np.nanmean(n, 1))[:, None]
            finite = scaled[np.isfinite(scaled)]
            if finite.size == 0:
                continue
            bins = np.linspace(finite.min(), finite.max(), 40)
            for row, b in enumerate(cfg.batch_sizes):
                h, edges = np.histogram(scaled[row][np.isfinite(scaled[row])], bins=bins)
                h = 0.9 * h / max(h.max(), 1)
                ax.fill_between(edges[:-1], row, row + h, step="post", color=PALETTE[row % len(PALETTE)], alpha=0.7)
            ax.set_yticks(range(len(cfg.batch_sizes)), [str(b) for b in cfg.batch_sizes])
            ax.set(xlabel="‖Σ g‖ × μ_largest B / μ_B", ylabel="batch size B", title=f"{regime}, {variant}")
        fig.suptitle("Distribution of the rescaled summed-gradient norm over the trials, one row per batch size")
        return fig

    def element_figure(self, cfg, hists, kurtosis, moving):
        import matplotlib.pyplot as plt
        from matplotlib.colors import LogNorm

        fig, axes = new_figure(ncols=2, width=11, height=5)
        key = (REGIMES[0], moving[0])
        centers = np.sqrt(HIST_EDGES[:-1] * HIST_EDGES[1:])
        # one line per batch size, 15 of them: coloured along a scale of B with a colour bar, not a legend (a
        # legend of 15 entries took most of the page and the 8-colour palette repeated)
        shade = plt.cm.ScalarMappable(LogNorm(min(cfg.batch_sizes), max(cfg.batch_sizes)), "viridis")
        for b, h in zip(cfg.batch_sizes, hists[key]):
            if h is None:
                continue
            pos = h[0, 1:-1]
            neg = h[1, 1:-1]
            color = shade.to_rgba(b)
            axes[0].plot(centers, np.where(pos > 0, pos, np.nan), color=color, linewidth=0.9)
            axes[0].plot(-centers, np.where(neg > 0, neg, np.nan), color=color, linewidth=0.9)
        fig.colorbar(shade, ax=axes[0], label="batch size B", fraction=0.05, pad=0.02)
        linthresh = float(HIST_EDGES[0]) * 10
        axes[0].set_xscale("symlog", linthresh=linthresh)
        _sparse_symlog_ticks(axes[0], linthresh)
        axes[0].set(
            yscale="log",
            xlabel="value of an element of the summed gradient (symlog)",
            ylabel="count of elements, all trials (log)",
            title=f"{key[0]}, {key[1]}",
        )
        for i, ((regime, variant), k) in enumerate((key, v) for key, v in kurtosis.items() if key[1] in moving):
            with np.errstate(all="ignore"):
                mean, std = np.nanmean(k, 1), np.nanstd(k, 1)
            axes[1].errorbar(
                cfg.batch_sizes,
                mean,
                yerr=std,
                fmt="o-",
                color=PALETTE[i],
                markersize=3,
                capsize=2,
                label=f"{regime}, {variant}",
            )
        axes[1].axhline(3.0, color="#555555", linestyle=":", linewidth=1)
        axes[1].set(
            xscale="log",
            yscale="log",
            xlabel="batch size B",
            ylabel="kurtosis of the elements, E v⁴ / (E v²)² (log)",
            title="tail weight, scale-free (G3); dotted: Gaussian",
        )
        legend_below(fig)
        fig.suptitle("How heavy are the tails of the summed gradient's elements?")
        return fig

    def table(self, cfg, norms, kurtosis, diverged) -> Table:
        rows = []
        for (regime, variant), n in norms.items():
            for i, b in enumerate(cfg.batch_sizes):
                mean = float(np.nanmean(n[i])) if np.isfinite(n[i]).any() else None
                std = float(np.nanstd(n[i], ddof=1)) if np.isfinite(n[i]).sum() > 1 else None
                k = kurtosis[(regime, variant)][i]
                rows.append(
                    {
                        "regime": regime,
                        "reduction, lr": variant,
                        "B": b,
                        "trials": int(np.isfinite(n[i]).sum()),
                        "diverged trials": int(diverged[(regime, variant)][i].sum()),
                        "mean ||sum||": mean,
                        "std ||sum||": std,
                        "std/mean": None if not mean or std is None else std / mean,
                        "mean kurtosis": float(np.nanmean(k)) if np.isfinite(k).any() else None,
                    }
                )
        return Table(
            "competition",
            rows,
            "Per regime, reduction (and lr) and B: trials, diverged trials, mean, std, std/mean of ||sum||, and the "
            "mean kurtosis of the summed gradient's elements.",
        )
