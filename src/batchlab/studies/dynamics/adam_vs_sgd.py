"""adam-vs-sgd: how differently do Adam and SGD move the weights?

Adam and SGD, both at lr 0.01 and batch 64, trained for the same epochs. Recorded: the distance from
the initialisation (W over the weight matrices, B over the biases), the distance from the origin
||w_t||, the cosine between each weight matrix and its initial value, and test accuracy.

Claims tested:
  D6  SGD's distance from init grows sublinearly in steps, Adam's nearly linearly: fitted per seed as
      W ~ t^a after the first epochs, Adam's a is at least 0.8 and SGD's clearly smaller (a straight-
      line R^2 cannot tell t from sqrt(t) over such a window, so it is shown but does not decide).
  D7  Adam travels much farther than SGD (more than 10x the distance, every seed) and ends at a
      significantly lower test accuracy.
  D8  SGD mostly rotates the weights: for every seed their norm stays within 10 % of the initial norm
      and every layer keeps a cosine above 0.85 to its initial value; every Adam layer ends below 0.5.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field, model_validator

from ...analysis.stats import linear_fit, mean_std
from ...bounds import BatchSize, Epochs, Real
from ...engine import RunSpec
from ...report.figures import band, bars, color_of, config_colors, legend_below, new_figure
from ..common import FigureSpec, Results, Study, StudyConfig, StudyOutput
from .claims import D6, D7, D8, D8_ADAM_COS_MAX, D8_SGD_COS_MIN, rule_d6, rule_d7, rule_d8
from .common import (
    ACCURACY_CAPTION,
    CURVE_METRICS,
    QUICK_EPOCHS,
    QUICK_SETUP,
    SPEC_EPOCHS,
    accuracy_curves,
    final_table,
    initial,
    layer_names,
    mean_curve,
    plot_curve,
    present,
)

Beta = Annotated[float, Field(ge=0, lt=1)]


class AdamVsSGDConfig(StudyConfig):
    batch_size: BatchSize = Field(64, ge=1, description="Batch size of both optimizers.")
    lr: Real = Field(0.01, gt=0, description="SGD learning rate.")
    adam_lr: Real = Field(0.01, gt=0, description="Adam learning rate.")
    betas: tuple[Beta, Beta] = Field(
        (0.9, 0.999), description="Adam's decay rates of the first and second moment estimates (beta1, beta2)."
    )
    eps: Real = Field(1e-8, gt=0, description="Adam's epsilon, added to the denominator for numerical stability.")
    epochs: Epochs = Field(SPEC_EPOCHS, ge=2, description="Epochs of training of both optimizers.")
    fit_start: Epochs = Field(
        5, ge=0, description="D6: first epoch of the power-law fits W ~ t^a, which run to the last epoch."
    )

    @model_validator(mode="after")
    def _window(self):
        if self.fit_start > self.epochs - 2:
            raise ValueError("fit_start must leave at least 3 epochs for the linear fit")
        return self


class AdamVsSGD(Study):
    name = "adam-vs-sgd"
    accepts_user_model = None
    title = "Adam vs SGD: distance travelled and where the weights end up"
    description = (
        "Adam (lr 0.01) and SGD (lr 0.01) at batch 64: distance from init (W, B), distance from the "
        "origin, per-layer cosine to init and test accuracy (Shen 2018; Wilson et al. 2017)."
    )
    Config = AdamVsSGDConfig
    claims = (D6, D7, D8)
    # quick: the D6 fit starts at the same fraction of training as in full (epoch 5 of 30), at least epoch 1
    profiles = {
        "quick": QUICK_SETUP | {"epochs": QUICK_EPOCHS, "fit_start": max(1, round(5 * QUICK_EPOCHS / SPEC_EPOCHS))},
        "full": {},
    }

    def groups(self, cfg: AdamVsSGDConfig) -> dict[str, list]:
        """ "SGD" and "Adam" -> their seeds."""
        return {
            "SGD": cfg.seeded(batch_size=cfg.batch_size, lr=cfg.lr, epochs=cfg.epochs),
            "Adam": cfg.seeded(
                batch_size=cfg.batch_size,
                lr=cfg.adam_lr,
                epochs=cfg.epochs,
                optimizer="adam",
                betas=cfg.betas,
                eps=cfg.eps,
            ),
        }

    def plan(self, cfg: AdamVsSGDConfig) -> list:
        return [s for specs in self.groups(cfg).values() for s in specs]

    def distance_figure(self, cfg: AdamVsSGDConfig, results: Results, groups: dict[str, list]):
        fig, axes = new_figure(ncols=3, width=13, height=3.8)
        colors = config_colors(groups)  # SGD and Adam have one colour each in all three figures
        for label, specs in groups.items():
            color = color_of(colors, label)
            for metric, ls in (("dist_init_w", "-"), ("dist_init_b", ":")):
                curve = mean_curve(results, specs, metric, x="step")
                if curve is not None:  # log-log: W(0) = 0 is left out; a power law is a straight line
                    xs, mean, std = curve
                    band(
                        axes[0],
                        xs[1:],
                        mean[1:],
                        std[1:],
                        label=f"{label} {'W' if ls == '-' else 'B'}",
                        color=color,
                        linestyle=ls,
                    )
            curve = mean_curve(results, specs, "dist_init_w")
            if curve is not None and np.isfinite(curve[1][-1]) and curve[1][-1] > 0:
                xs, mean, std = curve
                band(axes[1], xs, mean / mean[-1], std / mean[-1], label=label, color=color)
                window = xs >= cfg.fit_start
                if window.sum() >= 2:
                    intercept, slope, r2 = linear_fit(xs[window], mean[window] / mean[-1])
                    axes[1].plot(
                        xs[window],
                        intercept + slope * xs[window],
                        color=color,
                        linestyle="--",
                        linewidth=1,
                        label=f"{label} linear fit, R² = {r2:.3f}",
                    )
            plot_curve(axes[2], results, specs, "norm_w", label=label, color=color)
        axes[1].axvspan(cfg.fit_start, cfg.epochs, color="#000000", alpha=0.05, linewidth=0)
        n0 = initial(results, groups["SGD"], "norm_w")
        if n0.size:
            axes[2].axhline(n0.mean(), color="#555555", linestyle=":", linewidth=1, label="‖w_0‖ (at init)")
        axes[0].set(
            xscale="log",
            yscale="log",
            xlabel="step",
            ylabel="L2 distance from init (W: weights, B: biases)",
            title="W and B vs step (log-log)",
        )
        axes[1].set(
            xlabel="epoch", ylabel="W / final W (ratio)", title=f"shape of W (fit: epochs {cfg.fit_start}-{cfg.epochs})"
        )
        axes[2].set(xlabel="epoch", ylabel="‖w_t‖ (L2 norm of all weights)", title="distance from origin")
        legend_below(fig)
        fig.suptitle(f"Batch {cfg.batch_size}: SGD (lr {cfg.lr:g}) vs Adam (lr {cfg.adam_lr:g})")
        return fig

    def cosines(self, results: Results, specs: list[RunSpec]) -> dict[str, np.ndarray]:
        return {name: results.finals(specs, name) for name in layer_names(results, specs)}

    def cosine_figure(self, cos: dict[str, dict[str, np.ndarray]]):
        colors = config_colors(cos)
        fig, ax = new_figure(width=5, height=3.4)
        layers = list(dict.fromkeys(k for c in cos.values() for k in c))  # layer order, as recorded
        heights = {
            opt: [float(np.mean(c[k])) if k in c and c[k].size else np.nan for k in layers] for opt, c in cos.items()
        }
        errors = {opt: [mean_std(c[k])[1] if k in c and c[k].size else 0.0 for k in layers] for opt, c in cos.items()}
        bars(
            ax,
            heights,
            [f"layer {i + 1}\n({k.removeprefix('cos_init:')})" for i, k in enumerate(layers)],
            errors=errors,
            colors=colors,
        )
        sgd, adam = color_of(colors, "SGD"), color_of(colors, "Adam")
        ax.axhline(D8_SGD_COS_MIN, color=sgd, linestyle=":", linewidth=1.2, label=f"D8: SGD > {D8_SGD_COS_MIN:g}")
        ax.axhline(D8_ADAM_COS_MAX, color=adam, linestyle=":", linewidth=1.2, label=f"D8: Adam < {D8_ADAM_COS_MAX:g}")
        lowest = min([0.0, *[h for v in heights.values() for h in v if np.isfinite(h)]])
        ax.set(
            ylim=(lowest - 0.05, 1.35),
            xlabel="weight matrix, input to output",
            ylabel="cos(w_T, w_0) (1 = unchanged direction)",
            title="per-layer cosine to init after training",
        )
        ax.legend(frameon=False, ncol=2, fontsize=8, loc="upper center")
        return fig

    def analyze(self, cfg: AdamVsSGDConfig, results: Results) -> StudyOutput:
        groups = self.groups(cfg)
        sgd, adam = groups["SGD"], groups["Adam"]
        cos = {label: self.cosines(results, specs) for label, specs in groups.items()}
        sgd_runs, adam_runs = present(results, sgd), present(results, adam)
        d6 = rule_d6(
            results.steps(sgd_runs[0]) if sgd_runs else [],
            results.curves(sgd, "dist_init_w"),
            results.steps(adam_runs[0]) if adam_runs else [],
            results.curves(adam, "dist_init_w"),
            fit_start=cfg.fit_start,
            fit_end=cfg.epochs,
            sgd_epochs=results.epochs(sgd_runs[0]) if sgd_runs else None,
            adam_epochs=results.epochs(adam_runs[0]) if adam_runs else None,
        )
        d7 = rule_d7(
            results.finals(sgd, "dist_init_w"),
            results.finals(adam, "dist_init_w"),
            results.finals(sgd, "test_acc"),
            results.finals(adam, "test_acc"),
        )
        d8 = rule_d8(initial(results, sgd, "norm_w"), results.finals(sgd, "norm_w"), cos["SGD"], cos["Adam"])
        metrics = (*CURVE_METRICS, "norm_w", "norm_b", *layer_names(results, sgd + adam))
        table = final_table(
            results,
            groups,
            "final",
            "Final values (mean and std over seeds); norm_w = ||w_T||, "
            "cos_init:<layer> = cos(w_T, w_0) of each weight matrix",
            metrics,
        )
        for row, specs in zip(table.rows, groups.values()):
            mean, std = mean_std(initial(results, specs, "norm_w"))
            row["norm_w at init mean"], row["norm_w at init std"] = float(mean), float(std)
        return StudyOutput(
            figures=[
                FigureSpec(
                    "distance_from_init",
                    self.distance_figure(cfg, results, groups),
                    "Look at the gap between the two W lines (claim D7: Adam's W more than 10x SGD's) and at "
                    "their slopes on the log-log plot (claim D6: a slope near 1 is linear growth, below 1 "
                    "sublinear). Left: W (solid) and B (dotted) vs step on log-log axes, where W ~ steps^a is a "
                    "straight line of slope a. Middle: W divided by its final value vs epoch, with least-"
                    "squares lines over the shaded window where D6 fits W ~ t^a (R^2 shown as evidence only). "
                    "Right: distance from the origin ||w_t|| vs epoch, dotted = ||w_0||. Line = mean, band = ±1 std.",
                ),
                FigureSpec(
                    "per_layer_cosine",
                    self.cosine_figure(cos),
                    "Claim D8 expects every SGD bar above its dotted line (the direction of each layer barely "
                    "changes) and every Adam bar below its own. Cosine between each weight matrix and its "
                    "initial value after training (mean ± std over seeds); dotted: the D8 thresholds.",
                ),
                FigureSpec(
                    "accuracy_vs_epoch",
                    accuracy_curves(results, groups, "SGD vs Adam: accuracy vs epoch"),
                    "Look at the end of the test curves (right): claim D7 expects Adam below SGD. " + ACCURACY_CAPTION,
                ),
            ],
            tables=[table],
            claims=[d6, d7, d8],
        )
