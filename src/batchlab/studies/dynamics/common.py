"""What the five batch-size studies share: the quick setup, sources, names, reading results, PairConfig.

Runs that two studies share must have equal RunSpecs (hence equal keys) so that they are trained
once: every study builds its runs through `cfg.seeded(batch_size=..., lr=..., epochs=...)` (or
`PairConfig.sgd`) with the same fields, and one profile uses one setup and one number of epochs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import Field, model_validator

from ...bounds import BatchSize, Epochs, Real
from ...engine import RunSpec
from ...outputs import Table
from ...report.figures import band, color_of, config_colors, legend_below, new_figure, zoom_accuracy
from ..common import Results, StudyConfig, mean_std

# `quick`: a faithful miniature for a 2-core CPU that keeps the regime of the protocol (measured in
# docs/profiles.md): batch 64 ends near 100 % training accuracy (full: 99.95 %), batch 1024 takes exactly
# 1/16 of its steps per epoch (4096 = 4 batches of 1024), 3 seeds as in full. QUICK_EPOCHS replaces the
# protocol's SPEC_EPOCHS; the other epoch counts (60, 31, 480) scale with it.
QUICK_SETUP = {"train_subset": 4096, "test_subset": 2_000, "widths": (256, 256), "seeds": 3}
QUICK_EPOCHS = 45
SPEC_EPOCHS = 30

SHEN_2018 = "K. Shen, 'Effect of batch size on training dynamics' (Mini Distill, 2018)"
HOFFER_2017 = "Hoffer, Hubara & Soudry 2017 (Train longer, generalize better)"
WILSON_2017 = "Wilson et al. 2017 (The marginal value of adaptive gradient methods)"

ACCURACY_CAPTION = (
    "Train (left) and test (right) accuracy vs epoch; line = mean over seeds, band = ±1 std. The y axes are "
    "zoomed to the last half of training, where the runs are compared (earlier, lower values leave at the bottom)."
)

CURVE_METRICS = ("train_acc", "test_acc", "train_loss", "test_loss", "dist_init_w", "dist_init_b")


def run_label(batch_size: int, lr: float, epochs: int | None = None) -> str:
    """'batch 64, lr 0.01' (and ', 480 epochs'): the one way configurations are named in figures and tables."""
    return f"batch {batch_size}, lr {lr:g}" + ("" if epochs is None else f", {epochs} epochs")


class PairConfig(StudyConfig):
    """A small and a large batch at a base lr for `epochs` epochs: batch 64 and 1024, lr 0.01, 30 epochs."""

    small_batch: BatchSize = Field(
        64, ge=1, description="The small batch size, the reference the large batch is held to."
    )
    large_batch: BatchSize = Field(1024, ge=1, description="The large batch size (must be larger than small_batch).")
    lr: Real = Field(0.01, gt=0, description="Base SGD learning rate, the same for both batch sizes.")
    epochs: Epochs = Field(
        SPEC_EPOCHS, ge=1, description="Epochs of each base run; longer schedules are set in multiples of it."
    )

    @model_validator(mode="after")
    def _order(self):
        if self.small_batch >= self.large_batch:
            raise ValueError("small_batch must be smaller than large_batch")
        return self

    def sgd(self, batch_size: int, lr: float | None = None, epochs: int | None = None, **fields) -> list[RunSpec]:
        """The seeds of one SGD configuration: the one way studies here build it, so shared runs share keys."""
        return self.seeded(
            batch_size=batch_size,
            lr=self.lr if lr is None else lr,
            epochs=self.epochs if epochs is None else epochs,
            **fields,
        )


# ------------------------------------------------------------------------------------------------
# reading results


def present(results: Results, specs: list[RunSpec]) -> list[RunSpec]:
    """The runs among `specs` that are in the store."""
    return [s for s in specs if results.has(s)]


def mean_curve(results: Results, specs: list[RunSpec], metric: str, x: str = "epoch"):
    """(x, mean, std) of a metric over the present seeds; x is 'epoch' or 'step'. None if no run is present."""
    runs = present(results, specs)
    if not runs:
        return None
    xs = results.epochs(runs[0]) if x == "epoch" else results.steps(runs[0])
    mean, std = mean_std(results.curves(runs, metric))
    return xs, mean, std


def plot_curve(
    ax,
    results: Results,
    specs: list[RunSpec],
    metric: str,
    *,
    x: str = "epoch",
    scale: float = 1.0,
    shift: float = 0.0,
    label: str | None = None,
    color: str | None = None,
    linestyle: str = "-",
):
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


def accuracy_curves(
    results: Results, groups: dict[str, list], title: str, x: str = "epoch", colors: dict[str, str] | None = None
):
    """Train and test accuracy vs epoch (or step), mean and ±1 std band over seeds, one colour per label
    (`colors`, by default `config_colors` of the labels), each panel zoomed to where the runs end
    (`zoom_accuracy`), one legend below both."""
    colors = colors or config_colors(groups)
    fig, (ax_tr, ax_te) = new_figure(ncols=2)
    for label, specs in groups.items():
        for ax, metric in ((ax_tr, "train_acc"), (ax_te, "test_acc")):
            plot_curve(ax, results, specs, metric, x=x, scale=100, label=label, color=color_of(colors, label))
    for ax, split in ((ax_tr, "train"), (ax_te, "test")):
        ax.set_xlabel(x)
        ax.set_ylabel(f"{split} accuracy (%)")
        ax.set_title(f"{split} accuracy")
        zoom_accuracy(ax, top=100)
    legend_below(fig)
    fig.suptitle(title)
    return fig


def final_table(
    results: Results,
    groups: dict[str, list],
    name: str,
    caption: str,
    metrics: Sequence[str] = CURVE_METRICS,
    info: Mapping[str, dict] | None = None,
) -> Table:
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
