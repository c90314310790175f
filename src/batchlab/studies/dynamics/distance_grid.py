"""distance-grid: how far do the weights travel from their initialisation, and is farther better?

W = ||w_T - w_0|| is the distance over all weight matrices together, B the same over the biases.
A grid of batch sizes x learning rates is trained for `epochs` epochs; in addition, batch 1024 is
trained 16x longer so that it takes as many steps as batch 64 does in `epochs` epochs.

Claims tested:
  D4  better solutions lie farther from the initialisation: over the grid cells, the rank correlation
      (Spearman) of W with test accuracy is above 0.7. Whether W grows as the batch shrinks and as the
      lr grows is reported next to it.
  D5  batch 1024 trained for as many steps as batch 64 reaches batch 64's W (within 15 %) and its test
      accuracy (within 0.5 percentage points).
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from ...analysis.stats import finite
from ...bounds import BatchSize, Epochs, Real
from ...engine import RunSpec
from ...engine.spec import DATASET_SIZES
from ...report.figures import PALETTE, heatmap, label_points, legend_below, new_figure, zoom_accuracy
from ..common import FigureSpec, Results, Study, StudyOutput
from .claims import D4, D5, rule_d4, rule_d5
from .common import CURVE_METRICS, QUICK_EPOCHS, QUICK_SETUP, PairConfig, final_table, plot_curve, present, run_label

W_LABEL = "W = ‖w_T − w_0‖ (L2 distance from init)"


class DistanceGridConfig(PairConfig):
    batch_sizes: tuple[Annotated[BatchSize, Field(ge=1)], ...] = Field(
        (64, 256, 1024), min_length=2, description="Batch sizes of the grid (rows), each at every lr."
    )
    lrs: tuple[Annotated[Real, Field(gt=0)], ...] = Field(
        (0.001, 0.01, 0.03, 0.1),
        min_length=1,
        description="SGD learning rates of the grid (columns), each at every batch size.",
    )

    long_eval_epochs: Epochs = Field(
        1,
        ge=1,
        description="Evaluate the long run every this many epochs (1: after every epoch, as every other run).",
    )

    @property
    def long_epochs(self) -> int:
        """(large/small) x epochs: as many steps at the large batch as the small batch takes in `epochs`."""
        return self.epochs * self.large_batch // self.small_batch

    def long_run(self) -> list[RunSpec]:
        """Batch `large_batch` for `long_epochs`. Evaluating it every `long_eval_epochs` epochs (in steps: a
        whole number of its epochs) measures it as often per step as batch `small_batch` is per epoch when
        long_eval_epochs = large/small; evaluation is most of the cost of this run's many short epochs."""
        if self.long_eval_epochs == 1:
            return self.sgd(self.large_batch, epochs=self.long_epochs)
        n = self.train_subset or DATASET_SIZES[self.dataset][0]
        per_epoch = n // self.large_batch if self.drop_last else -(-n // self.large_batch)
        return self.sgd(self.large_batch, epochs=self.long_epochs, eval_every=self.long_eval_epochs * per_epoch)


class DistanceGrid(Study):
    name = "distance-grid"
    accepts_user_model = None
    title = "Distance from initialisation across batch sizes and learning rates"
    description = (
        "How far do the weights travel from their initialisation (W = ||w_T - w_0|| over the weight "
        "matrices, B over the biases), and do better solutions lie farther away? A grid of batch sizes "
        "and learning rates, plus batch 1024 trained 16x longer so that it takes as many steps as batch "
        "64 (Hoffer et al. 2017; Shen 2018)."
    )
    Config = DistanceGridConfig
    claims = (D4, D5)
    # quick: the long run (640 epochs of 4 steps) is evaluated every 16 epochs, i.e. every 64 steps like batch
    # 64 (once per epoch): per-epoch evaluation of it alone was a third of the family's quick time
    profiles = {
        "quick": QUICK_SETUP | {"epochs": QUICK_EPOCHS, "lrs": (0.01, 0.1), "long_eval_epochs": 16},
        "full": {},
    }

    def cell(self, cfg: DistanceGridConfig, b: int, lr: float) -> list[RunSpec]:
        return cfg.sgd(b, lr)

    def trio(self, cfg: DistanceGridConfig) -> dict[str, list]:
        """Batch 64 and 1024 at the base lr, and batch 1024 for long_epochs: the distance-vs-time comparison."""
        return {
            run_label(cfg.small_batch, cfg.lr, cfg.epochs): cfg.sgd(cfg.small_batch),
            run_label(cfg.large_batch, cfg.lr, cfg.epochs): cfg.sgd(cfg.large_batch),
            run_label(cfg.large_batch, cfg.lr, cfg.long_epochs): cfg.long_run(),
        }

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
        from matplotlib.lines import Line2D
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        fig, (ax_h, ax_s) = new_figure(ncols=2, width=11, height=4.2)
        text = [
            [f"W {w[i, j]:.3g}\nB {b[i, j]:.3g}\n{100 * acc[i, j]:.2f} %" for j in range(len(cfg.lrs))]
            for i in range(len(cfg.batch_sizes))
        ]
        heatmap(
            ax_h,
            w,
            [f"batch {x}" for x in cfg.batch_sizes],
            [f"lr {x:g}" for x in cfg.lrs],
            cell_text=text,
            colorbar_label=W_LABEL,
        )
        ax_h.set(xlabel="SGD learning rate", ylabel="batch size")
        ax_h.set_title("per cell: W, B and test accuracy")
        markers = "osD^v<>"
        xs, ys, names = [], [], []
        for j, lr in enumerate(cfg.lrs):
            for i, bs in enumerate(cfg.batch_sizes):
                if np.isfinite(w[i, j]) and np.isfinite(acc[i, j]):
                    ax_s.scatter(
                        w[i, j], 100 * acc[i, j], color=PALETTE[j % len(PALETTE)], marker=markers[i % 7], s=40, zorder=3
                    )
                    xs.append(w[i, j])
                    ys.append(100 * acc[i, j])
                    names.append(str(bs))
        ax_s.set_xscale("log")
        ax_s.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax_s.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax_s.xaxis.set_minor_formatter(NullFormatter())
        ax_s.margins(x=0.12, y=0.12)
        ax_s.set_xlabel(f"{W_LABEL}, log scale")
        ax_s.set_ylabel("test accuracy (%)")
        ax_s.set_title("test accuracy vs W (point label: batch size)")
        handles = [
            Line2D([], [], linestyle="", marker="o", color=PALETTE[j % len(PALETTE)], label=f"lr {lr:g}")
            for j, lr in enumerate(cfg.lrs)
        ] + [
            Line2D([], [], linestyle="", marker=markers[i % 7], color="#777777", label=f"batch {bs}")
            for i, bs in enumerate(cfg.batch_sizes)
        ]
        if xs:
            ax_s.legend(handles=handles, frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
            label_points(ax_s, xs, ys, names)
        fig.suptitle(
            f"Distance from init and test accuracy across batch sizes and learning rates (SGD, {cfg.epochs} "
            f"epoch{'s' if cfg.epochs != 1 else ''}, mean over seeds)"
        )
        return fig

    def distance_figure(self, cfg: DistanceGridConfig, results: Results, trio: dict[str, list]):
        fig, axes = new_figure(ncols=3, width=13, height=3.6)
        for i, (label, specs) in reversed(list(enumerate(trio.items()))):
            style = dict(label=label, color=PALETTE[i % len(PALETTE)], linestyle="--" if i == 2 else "-")
            plot_curve(axes[0], results, specs, "dist_init_w", x="epoch", **style)
            plot_curve(axes[1], results, specs, "dist_init_w", x="step", **style)
            plot_curve(axes[2], results, specs, "test_acc", x="step", scale=100, **style)
        ref = finite(results.finals(next(iter(trio.values())), "dist_init_w"))
        for k, ax in enumerate(axes[:2]):
            if ref.size:
                ax.axhline(
                    ref.mean(),
                    color="#555555",
                    linestyle=":",
                    linewidth=1,
                    label=f"final W of batch {cfg.small_batch}" if k == 0 else None,
                )
            ax.set_ylabel("W = ‖w_t − w_0‖ (L2 distance from init)")
        axes[0].set(xlabel="epoch", title="distance from init vs epoch")
        axes[1].set(xlabel="step", title="distance from init vs step")
        axes[2].set(xlabel="step", ylabel="test accuracy (%)", title="test accuracy vs step")
        zoom_accuracy(axes[2], top=100)  # where each run ends, not 0-100 %
        legend_below(fig)
        fig.suptitle(
            f"SGD, lr {cfg.lr:g}: batch {cfg.small_batch} and {cfg.large_batch} for {cfg.epochs} epochs, "
            f"and batch {cfg.large_batch} for {cfg.long_epochs} (as many steps as batch {cfg.small_batch})"
        )
        return fig

    def analyze(self, cfg: DistanceGridConfig, results: Results) -> StudyOutput:
        w, b, acc = (self.grid_means(cfg, results, m) for m in ("dist_init_w", "dist_init_b", "test_acc"))
        trio = self.trio(cfg)
        cells = {run_label(bs, lr): self.cell(cfg, bs, lr) for bs in cfg.batch_sizes for lr in cfg.lrs}
        info = {run_label(bs, lr): {"batch size": bs, "lr": lr} for bs in cfg.batch_sizes for lr in cfg.lrs}
        small, _, long = trio.values()
        long_runs, small_runs = present(results, long), present(results, small)
        d5 = rule_d5(
            results.finals(small, "dist_init_w"),
            results.finals(small, "test_acc"),
            results.finals(long, "dist_init_w"),
            results.finals(long, "test_acc"),
            steps_small=int(results.steps(small_runs[0])[-1]) if small_runs else None,
            steps_long=int(results.steps(long_runs[0])[-1]) if long_runs else None,
        )
        metrics = (*CURVE_METRICS, "norm_w", "norm_b")
        return StudyOutput(
            figures=[
                FigureSpec(
                    "distance_grid",
                    self.grid_figure(cfg, w, b, acc),
                    "Look for the rise from lower left to upper right (claim D4): the cells that end farther "
                    "from their initialisation (smaller batch, larger lr) reach the higher test accuracy. Left: "
                    f"per cell, W (colour), B and test accuracy (mean over seeds) after {cfg.epochs} epochs of "
                    "SGD. Right: test accuracy vs W, one point per cell (colour: lr, marker and label: batch size).",
                ),
                FigureSpec(
                    "distance_vs_epoch_and_step",
                    self.distance_figure(cfg, results, trio),
                    f"Look at the middle panel: plotted against steps instead of epochs, batch {cfg.large_batch} "
                    f"trained {cfg.long_epochs} epochs (dashed) follows batch {cfg.small_batch}'s curve and ends "
                    f"at its distance (dotted line) and, right, its test accuracy (claim D5). Distance from init "
                    f"vs epoch (left) and vs step (middle), test accuracy vs step (right), SGD at lr {cfg.lr:g}; "
                    "line = mean over seeds, band = ±1 std.",
                ),
            ],
            tables=[
                final_table(
                    results,
                    cells,
                    "grid",
                    "Per grid cell: final W, B, accuracy and loss (mean and std over seeds)",
                    metrics,
                    info,
                ),
                final_table(
                    results,
                    trio,
                    "long_run",
                    f"Batch {cfg.large_batch} trained {cfg.long_epochs} epochs against the references",
                    metrics,
                ),
            ],
            claims=[
                rule_d4(
                    [
                        [results.finals(self.cell(cfg, bs, lr), "dist_init_w") for lr in cfg.lrs]
                        for bs in cfg.batch_sizes
                    ],
                    acc,
                    cfg.batch_sizes,
                    cfg.lrs,
                ),
                d5,
            ],
        )
