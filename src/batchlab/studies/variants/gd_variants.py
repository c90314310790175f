"""gd-variants: batch gradient descent, SGD and mini-batch SGD on linear regression, measured every step.

On y = X w* + noise (X ~ N(0, 1), N = 1000, d = 10, noise 0.1; a linear model with bias, mean squared
error): batch GD (the whole set, lr 0.1, one step per epoch), SGD with batch 1 (lr 0.01, reshuffled
every epoch) and mini-batch SGD with batch 32 (lr 0.05), 50 epochs, several seeds. The training loss
is measured after every step and drawn against epochs, examples seen, steps and wall time on the
device used. A 2-parameter version (d = 2, no bias) gives each variant's path over the loss contours,
exported as a table for the explorer.

Claim tested:
  V2  batch GD's loss never rises from one step to the next while SGD's does; and at each of the first
      5 epochs (`early_epochs`) SGD and mini-batch SGD are below batch GD (one-sided paired t on the worst
      epoch's log ratio, Holm over the two). Not "below at every epoch": batch GD converges linearly to the
      same noise floor and may pass them late in a long run, which says nothing about early progress.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ...bounds import BatchSize, Epochs, Examples, Real, Seed, Width
from ...datasets import regression_problem
from ...engine import RunSpec
from ...outputs import Table
from ...report.figures import PALETTE, legend_below, new_figure
from ..common import FigureSpec, Results, Study, StudyOutput, check_fits
from .claims import V2, rises, rule_v2


class VariantsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    n: Examples = Field(1000, ge=2, description="Examples of the regression problem.")
    d: Width = Field(10, ge=1, description="Input dimension.")
    noise: Real = Field(0.1, ge=0, description="Noise std of the targets.")
    data_seed: Seed = Field(0, ge=0, description="Seed of the regression problem.")
    epochs: Epochs = Field(50, ge=1, description="Epochs of every variant.")
    seeds: int = Field(3, ge=1, le=100, description="Seeds (initialisation and order) per variant, paired.")
    gd_lr: Real = Field(0.1, gt=0, description="Batch gradient descent's learning rate.")
    sgd_lr: Real = Field(0.01, gt=0, description="SGD's (batch 1) learning rate.")
    minibatch: BatchSize = Field(32, ge=1, description="The mini-batch size.")
    minibatch_lr: Real = Field(0.05, gt=0, description="Mini-batch SGD's learning rate.")
    contour_epochs: Epochs = Field(5, ge=1, description="Epochs of the 2-parameter paths over the contours.")
    early_epochs: Epochs = Field(
        5, ge=1, description="V2's early training: the first epochs compared per epoch (fewer epochs: inconclusive)."
    )

    @model_validator(mode="after")
    def _fits(self) -> "VariantsConfig":
        check_fits({"minibatch": self.minibatch}, self.n, f"examples of the regression problem (n={self.n})")
        return self


class GDVariants(Study):
    name = "gd-variants"
    accepts_user_model = (
        "it trains a linear regression on synthetic data, where the gradient-descent variants have a closed form"
    )
    title = "Batch GD, SGD and mini-batch SGD on linear regression"
    description = (
        "Linear regression (1000 examples, 10 inputs): batch gradient descent, SGD with one example per step and "
        "mini-batch SGD (32), the training loss after every step against epochs, examples seen, steps and wall "
        "time; and the paths of the three over the loss contours of a 2-parameter version."
    )
    Config = VariantsConfig
    claims = (V2,)
    # quick: 10 epochs (SGD's 10 000 steps, each measured, dominate the time); everything else as in full
    profiles = {"quick": {"epochs": 10}, "full": {}}

    def variants(self, cfg: VariantsConfig) -> dict[str, tuple[int, float]]:
        return {
            "batch GD": (cfg.n, cfg.gd_lr),
            "SGD (batch 1)": (1, cfg.sgd_lr),
            f"mini-batch ({cfg.minibatch})": (cfg.minibatch, cfg.minibatch_lr),
        }

    def runs(self, cfg: VariantsConfig, *, contour: bool = False) -> dict[str, list[RunSpec]]:
        d, epochs = (2, cfg.contour_epochs) if contour else (cfg.d, cfg.epochs)
        common = dict(
            dataset="regression",
            model="linear",
            widths=(),
            regression=(cfg.n, d, cfg.noise, cfg.data_seed),
            bias=not contour,
            epochs=epochs,
            eval_every=1,
            probes=("metrics", "weights") if contour else ("metrics",),
            init="torch",
        )
        seeds = [0] if contour else range(cfg.seeds)
        return {
            name: [RunSpec(**common, batch_size=b, lr=lr, seed=s) for s in seeds]
            for name, (b, lr) in self.variants(cfg).items()
        }

    def plan(self, cfg: VariantsConfig) -> list[RunSpec]:
        return [r for runs in (self.runs(cfg), self.runs(cfg, contour=True)) for rs in runs.values() for r in rs]

    def analyze(self, cfg: VariantsConfig, results: Results) -> StudyOutput:
        runs = self.runs(cfg)
        fig, axes = new_figure(ncols=4, width=17, height=3.8)
        per_step, per_epoch = {}, {}
        for i, (name, specs) in enumerate(runs.items()):
            present = [s for s in specs if results.has(s)]
            if not present:
                continue
            b = specs[0].batch_size
            loss = results.curves(present, "train_loss")
            mean = np.nanmean(loss, 0)
            steps = results.steps(present[0]).astype(float)
            epochs = results.epochs(present[0]).astype(float)
            wall = np.mean([results.records[s.key].wall_s / max(results.records[s.key].steps, 1) for s in present])
            for ax, x in zip(axes, (epochs, epochs * cfg.n, steps, steps * wall)):
                ax.plot(np.maximum(x, x[1] if len(x) > 1 else 1), mean, color=PALETTE[i], linewidth=1, label=name)
            at_epochs = np.isclose(epochs, np.round(epochs)) & (epochs >= 1)
            per_step[name], per_epoch[name] = loss, loss[:, at_epochs]
            del b
        clocks = (
            ("epoch", "per epoch"),
            ("examples seen (gradient evaluations)", "per example seen"),
            ("step (parameter updates)", "per step"),
            ("wall time (s)", "per second"),
        )
        for ax, (xlabel, title) in zip(axes, clocks):
            ax.set(xscale="log", yscale="log", xlabel=f"{xlabel}, log", ylabel="training loss (MSE, log)", title=title)
        legend_below(fig)
        fig.suptitle("Batch GD, SGD and mini-batch SGD on linear regression: training loss against four clocks")
        contour_fig, paths = self.contours(cfg, results)
        figures = [
            FigureSpec(
                "loss_curves",
                fig,
                "Compare the left panel's first epochs (per epoch: are SGD and mini-batch ahead?) with the third (per "
                "step: batch GD's curve never goes up, SGD's does): claim V2. "
                "Training loss (mean over seeds, log-log) after every step of each variant, against epochs, examples "
                "seen, steps and wall time on the device used (the group's time per step).",
            )
        ]
        if contour_fig is not None:
            figures.append(
                FigureSpec(
                    "paths",
                    contour_fig,
                    "Look at how straight each path heads for the star: batch GD follows the contours' gradient, "
                    "SGD zigzags around it. "
                    f"The 2-parameter problem (no bias): loss contours and each variant's path over "
                    f"{cfg.contour_epochs} epochs from the same start (seed 0); the star is the least-squares "
                    "solution.",
                )
            )
        tables = [Table("paths", paths, "Every step of each variant on the 2-parameter problem (for the explorer).")]
        tables.append(
            Table(
                "variants",
                [
                    {
                        "variant": k,
                        "loss at epochs 1..": ", ".join(f"{v:.3g}" for v in np.nanmean(per_epoch[k], 0)[:10]),
                        "steps where the loss rose (per seed)": "/".join(str(rises(c)) for c in per_step[k]),
                        "steps": per_step[k].shape[1] - 1,
                    }
                    for k in per_epoch
                ],
                "Mean training loss at the first epochs, and how many steps raised the loss (V2's smoothness).",
            )
        )
        return StudyOutput(
            figures=figures, tables=tables, claims=[rule_v2(per_step, per_epoch, early=cfg.early_epochs)]
        )

    def contours(self, cfg: VariantsConfig, results: Results):
        runs = {k: v[0] for k, v in self.runs(cfg, contour=True).items() if results.has(v[0])}
        if not runs:
            return None, []
        x, y, _, _, _ = regression_problem(cfg.data_seed, cfg.n, 2, cfg.noise)
        x, y = x.numpy(), y.numpy()[:, 0]
        w_ls = np.linalg.lstsq(x, y, rcond=None)[0]
        rows, paths = [], {}
        for name, spec in runs.items():
            w0, w1 = results.series(spec, "w:linear.weight[0]"), results.series(spec, "w:linear.weight[1]")
            paths[name] = (w0, w1)
            rows += [
                {"variant": name, "step": int(s), "w0": float(a), "w1": float(b)}
                for s, a, b in zip(results.steps(spec), w0, w1)
            ]
        lo = np.nanmin([np.nanmin(np.r_[p[0], p[1]]) for p in paths.values()] + [w_ls.min()]) - 0.5
        hi = np.nanmax([np.nanmax(np.r_[p[0], p[1]]) for p in paths.values()] + [w_ls.max()]) + 0.5
        grid = np.linspace(lo, hi, 120)
        a, b = np.meshgrid(grid, grid)
        loss = ((x[:, 0, None, None] * a + x[:, 1, None, None] * b - y[:, None, None]) ** 2).mean(0)
        fig, ax = new_figure(width=5.5, height=5)
        ax.contour(a, b, loss, levels=np.geomspace(loss.min() + 1e-3, loss.max(), 15), colors="#bbbbbb", linewidths=0.7)
        for i, (name, (w0, w1)) in enumerate(paths.items()):
            ax.plot(w0, w1, color=PALETTE[i], linewidth=0.9, marker="." if len(w0) < 60 else None, label=name)
        ax.plot(*w_ls, "k*", markersize=10, label="least squares")
        ax.set(xlabel="weight w_0", ylabel="weight w_1", title="paths over the loss contours (MSE)", aspect="equal")
        ax.legend(frameon=False)
        return fig, rows
