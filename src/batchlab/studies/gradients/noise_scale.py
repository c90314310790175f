"""noise-scale: which batch size? The simple noise scale B_simple of the reference run (McCandlish et al. 2018).

B_simple = tr(Sigma) / |G|^2, the estimate of McCandlish et al.'s B_noise when the Hessian is a multiple of
the identity. In their model S = S_min (1 + B_noise / B), doubling the batch nearly halves the steps to a given
loss well below B_noise, saves a third at B_noise / 2 and a quarter at B_noise; beyond it returns diminish.
Estimated at the early and late checkpoints of the reference run by (a) per-example gradients (unbiased
estimators, bootstrap CI over examples) and (b) the two-batch estimator from ordinary small- and big-batch
gradients (averaged over the draws before the ratio; bootstrap CI over draws), which needs no per-example
gradients.

Claim tested:
  N1  the two estimators agree within 25 % at every checkpoint.
"""

from __future__ import annotations

import numpy as np
from matplotlib.ticker import FuncFormatter
from pydantic import Field

from ...analysis.noise import (
    NoiseScaleEMA,
    estimator_ratio_interval,
    log_centred_interval,
    ratio_replicates,
    two_batch_estimates,
    two_batch_replicates,
)
from ...bounds import BatchSize, Count, Examples
from ...engine.spec import TaskSpec
from ...outputs import Table
from ...report.figures import PALETTE, legend_below, new_figure
from ...tasks.gradients import NoiseScaleArgs
from ..common import FigureSpec, Results, Study, StudyOutput
from .claims import N1, rule_n1
from .common import QUICK_REFERENCE, REGIMES, GradientConfig, regime_info


class NoiseScaleConfig(GradientConfig):
    examples: Examples = Field(4096, ge=2, description="Examples of the per-example estimator.")
    small_batch: BatchSize = Field(64, ge=1, description="B_small of the two-batch estimator.")
    big_batch: BatchSize = Field(1024, ge=2, description="B_big of the two-batch estimator.")
    draws: Count = Field(256, ge=2, description="Pairs of small and big batches (fresh examples each).")
    bootstrap: Count = Field(400, ge=10, description="Bootstrap resamples for the confidence intervals.")


class NoiseScaleStudy(Study):
    name = "noise-scale"
    accepts_user_model = (
        "its noise-scale tasks start from the built-in MLP's checkpoints; for your own model use "
        "`batchlab noise-scale --model`"
    )
    title = "The gradient noise scale B_simple: which batch size?"
    description = (
        "B_simple = tr(Sigma)/|G|^2 (McCandlish et al. 2018) of the reference MLP early and late in training, "
        "from per-example gradients and from the two-batch estimator (ordinary gradients of a small and a big "
        "batch, averaged over many draws before the ratio is taken). In McCandlish et al.'s model a doubled batch "
        "nearly halves the steps well below the noise scale, saves a third at half of it and a quarter at it; "
        "beyond it returns diminish. B_simple grows as training proceeds."
    )
    Config = NoiseScaleConfig
    claims = (N1,)
    # quick: 4096 examples, as in full: fewer cannot resolve a B_simple of thousands (|G|^2 drowns in tr(Sigma)/N)
    profiles = {"quick": {**QUICK_REFERENCE, "draws": 64, "bootstrap": 200}, "full": {}}

    def tasks(self, cfg: NoiseScaleConfig) -> dict[str, TaskSpec]:
        args = NoiseScaleArgs(
            examples=cfg.examples,
            small_batch=cfg.small_batch,
            big_batch=cfg.big_batch,
            draws=cfg.draws,
            bootstrap=cfg.bootstrap,
        ).model_dump(mode="json")
        return {
            regime: TaskSpec(kind="noise-scale", args=args, seed=cfg.seed, start=cfg.checkpoint(regime))
            for regime in REGIMES
        }

    def plan(self, cfg: NoiseScaleConfig) -> list[TaskSpec]:
        return list(self.tasks(cfg).values())

    def estimates(self, cfg, results: Results) -> dict[str, dict]:
        out = {}
        for regime, spec in self.tasks(cfg).items():
            if not results.has(spec) or results.error(spec):
                continue
            small, big = results.array(spec, "small_sq_norms"), results.array(spec, "big_sq_norms")
            tb = two_batch_estimates(small, big, cfg.small_batch, cfg.big_batch)
            trace_b, g2_b = results.array(spec, "bootstrap_trace_sigma"), results.array(spec, "bootstrap_grad_sq_norm")
            ratio = trace_b / np.where(g2_b > 0, g2_b, np.nan)
            b_simple = results.scalar(spec, "per_example_b_simple")
            two_boot = two_batch_replicates(small, big, cfg.small_batch, cfg.big_batch, cfg.bootstrap, cfg.seed)
            out[regime] = {
                "per-example B_simple": b_simple,
                "per-example CI": log_centred_interval(ratio, b_simple),
                "per-example tr(Sigma)": results.scalar(spec, "per_example_trace_sigma"),
                "per-example |G|^2": results.scalar(spec, "per_example_grad_sq_norm"),
                "two-batch B_simple": tb.b_simple if np.isfinite(tb.b_simple) else np.nan,  # |G|^2 <= 0: NaN
                "two-batch CI": log_centred_interval(two_boot, tb.b_simple),  # = log_centred_two_batch_ci
                "two-batch tr(Sigma)": tb.trace_sigma,
                "two-batch |G|^2": tb.grad_sq_norm,
                "ratio two-batch / per-example, 95 % CI": estimator_ratio_interval(
                    ratio_replicates(g2_b, trace_b), two_boot, tb.b_simple / b_simple
                ),
            }
        return out

    @staticmethod
    def during_training(cfg: NoiseScaleConfig, results: Results, decay: float = 0.7) -> list[dict]:
        """The reference run's noise probe per evaluation: raw |G|^2 and tr(Sigma), each smoothed by an EMA
        (bias-corrected), and B_simple as the ratio of the smoothed values."""
        run = cfg.reference_run()
        if not results.has(run):
            return []
        ema = NoiseScaleEMA(decay)
        rows = []
        series = {k: results.series(run, k) for k in ("noise_grad_sq_norm", "noise_trace_sigma", "train_loss")}
        for i, (step, epoch) in enumerate(zip(results.steps(run), results.epochs(run))):
            g2, tr = series["noise_grad_sq_norm"][i], series["noise_trace_sigma"][i]
            if np.isfinite(g2) and np.isfinite(tr):
                ema.update(g2, tr)
            rows.append(
                {
                    "step": int(step),
                    "epoch": float(epoch),
                    "train_loss": float(series["train_loss"][i]),
                    "|G|^2": float(g2),
                    "tr(Sigma)": float(tr),
                    "smoothed B_simple": ema.b_simple,
                }
            )
        return rows

    @staticmethod
    def training_panel(ax, rows: list[dict]) -> None:
        if not rows:
            return
        steps = [r["step"] for r in rows]
        b = np.array([r["smoothed B_simple"] for r in rows], dtype=float)
        ax.plot(
            steps,
            np.where(np.isfinite(b) & (b > 0), b, np.nan),
            "o-",
            color=PALETTE[0],
            markersize=3,
            label="B_simple (smoothed)",
        )
        ax.set(yscale="log", xlabel="step", ylabel="B_simple (examples, log)", title="during the reference run")
        loss = ax.twinx()
        loss.plot(steps, [r["train_loss"] for r in rows], color=PALETTE[1], linewidth=1, label="train loss")
        loss.set(ylabel="train loss (cross-entropy, nats, log)", yscale="log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")  # "0.6", not "6 x 10^-1", on a short log axis
        loss.yaxis.set_major_formatter(plain)
        loss.yaxis.set_minor_formatter(plain)

    def analyze(self, cfg: NoiseScaleConfig, results: Results) -> StudyOutput:
        est = self.estimates(cfg, results)
        info = regime_info(results, cfg)
        fig, axes = new_figure(ncols=2, width=11, height=4)
        ax = axes[0]
        for i, (method, offset) in enumerate((("per-example", -0.12), ("two-batch", 0.12))):
            xs, ys, lo, hi = [], [], [], []
            for j, regime in enumerate(REGIMES):
                if regime in est:
                    e = est[regime]
                    xs.append(j + offset)
                    ys.append(e[f"{method} B_simple"])
                    # a percentile CI need not contain the estimate (a skewed bootstrap): clip the bars at it
                    lo.append(max(0.0, e[f"{method} B_simple"] - e[f"{method} CI"][0]))
                    hi.append(max(0.0, e[f"{method} CI"][1] - e[f"{method} B_simple"]))
            ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", color=PALETTE[i], capsize=3, label=method)
        ax.set_xticks(
            range(len(REGIMES)),
            [
                f"{r}\n(epoch {info[r]['epoch']}, test acc {100 * info[r].get('test_acc', np.nan):.1f} %)"
                for r in REGIMES
            ],
        )
        ax.set(
            yscale="log",
            xlabel="checkpoint of the reference run",
            ylabel="B_simple (examples, log)",
            title="two estimators, 95 % bootstrap CIs",
        )
        fig.suptitle("Gradient noise scale B_simple = tr(Σ) / |G|²: the batch size beyond which returns diminish")
        probe = self.during_training(cfg, results)
        self.training_panel(axes[1], probe)
        legend_below(fig)  # one legend for both panels and the twin axis: below, never over the curves
        rows = [
            {"regime": r, **{k: (f"[{v[0]:.4g}, {v[1]:.4g}]" if isinstance(v, tuple) else v) for k, v in e.items()}}
            for r, e in est.items()
        ]
        claim = rule_n1(
            {
                r: (e["per-example B_simple"], e["two-batch B_simple"], e["ratio two-batch / per-example, 95 % CI"])
                for r, e in est.items()
            }
        )
        return StudyOutput(
            figures=[
                FigureSpec(
                    "b_simple",
                    fig,
                    "Look at the left panel: the two estimators' intervals should overlap at each checkpoint "
                    "(claim N1). "
                    "Left: B_simple at the early and late checkpoints by both estimators, with 95 % bootstrap CIs "
                    "(log axis). Right: B_simple during the reference run, from the noise probe after every epoch "
                    "(|G|^2 and tr(Sigma) smoothed apart, ratio last), next to the training loss. A batch up to "
                    "about B_simple uses examples efficiently; B_simple grows as the loss falls.",
                )
            ],
            tables=[
                Table("noise_scale", rows, "Both estimators' tr(Sigma), |G|^2 and B_simple per checkpoint."),
                Table("during_training", probe, "The noise probe of the reference run after every epoch."),
            ],
            claims=[claim],
        )
