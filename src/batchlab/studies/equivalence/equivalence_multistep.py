"""equivalence-multistep: over several steps with momentum, which "equivalent" procedures really are?

The CNN without BatchNorm, SGD with momentum 0.9 and lr 0.01, K fixed seeded batches of 64 (the
batches of a smaller K are the first batches of a larger one). From the same theta0:
  A  K momentum steps, one per batch (one optimizer, its state kept across steps);
  B  the same examples one at a time, 64 K single-example momentum steps in the same order;
  C  per batch, the mean of the per-example gradients applied as a plain SGD step, no momentum
     (what a comparison "with gradient averaging" often does by mistake);
  D  per batch, the mean of the per-example gradients applied as a momentum step with one
     persistent optimizer (correct gradient accumulation).

Claims tested:
  E6  A = D up to rounding for every K (float64 relative difference below 1e-9);
  E7  the A-B difference grows with K;
  E8  A-C is larger than A-B, and A-D is at rounding level: C differs because it dropped the
      momentum, not because it averaged gradients. The comparison of C with B is confounded (B
      takes 64 times as many steps), which the report says in words.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ...bounds import BatchSize, Count, Examples, Real, Seed, Steps
from ...engine.spec import TaskSpec
from ...outputs import Table
from ...report.figures import PALETTE, legend_below, new_figure
from ...tasks.equivalence import ImageDataset, MultistepArgs, Precision, task_args
from ..common import FigureSpec, Results, Study, StudyOutput, check_subsets
from .claims import E6, E7, E8, EXACT_F64, rule_e6, rule_e7, rule_e8
from .common import EPS, LOG_FLOOR, outcome, scalars, value

VARIANTS = {
    "B": "B: single-example steps",
    "C": "C: averaged gradients, no momentum",
    "D": "D: averaged gradients, momentum",
}


class MultistepConfig(BaseModel):
    """K fixed batches; one multistep-equivalence task per K."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    dataset: ImageDataset = Field("mnist", description="The images: mnist or fashion-mnist.")
    ks: tuple[Annotated[Steps, Field(ge=1)], ...] = Field(
        (2, 5, 10), min_length=1, description="Numbers of batches (steps of A) to compare."
    )
    batch_size: BatchSize = Field(64, ge=1, description="Examples per batch.")
    lr: Real = Field(0.01, gt=0, description="Learning rate of every variant.")
    momentum: float = Field(0.9, ge=0, lt=1, description="Momentum of A, B and D (C uses none).")
    precision: Precision = Field("float64", description="Compute precision (the claims are stated for float64).")
    train_subset: Examples | None = Field(
        None, ge=1, description="The batches are drawn from the first N training images (None: all 60k)."
    )
    test_subset: Examples | None = Field(
        None, ge=1, description="Evaluate every variant on the first N test images (None: all 10k)."
    )
    seed: Seed = Field(0, ge=0, description="Seed of the initialisation and of the batch draw.")
    chunk_size: Count = Field(64, ge=1, description="Per-example gradients computed together (bounds memory).")

    @model_validator(mode="after")
    def _check(self):
        if not self.ks or any(k < 1 for k in self.ks) or len(set(self.ks)) != len(self.ks):
            raise ValueError("ks must be one or more distinct positive numbers of batches")
        n_train = check_subsets(self.dataset, self.train_subset, self.test_subset)
        if max(self.ks) * self.batch_size > n_train:
            need = f"{max(self.ks)} batches of {self.batch_size} need more than the {n_train} training images"
            raise ValueError(need)
        return self


class EquivalenceMultistep(Study):
    name = "equivalence-multistep"
    accepts_user_model = (
        "its tasks compare several steps of the built-in models (mlp, cnn, cnn-bn), taken per example and as a batch"
    )
    title = "Several momentum steps: batch steps vs single-example steps vs gradient averaging"
    description = (
        "K momentum-SGD steps on K fixed batches (A) against: the same examples taken one at a time (B), the "
        "averaged per-example gradients applied without momentum (C), and the averaged per-example gradients "
        "applied with a persistent momentum optimizer (D, gradient accumulation). D must equal A: the mean of "
        "the per-example gradients is the batch gradient, and the same momentum update of the same gradient "
        "gives the same weights. B differs more with every batch: it takes one step per example, at weights "
        "the previous example left, so it takes 64 times as many steps of the same lr and follows its own "
        "path. C differs from A only by its missing momentum, which A-D at rounding level proves: averaging "
        "gradients is exact, dropping the momentum is not. Comparing C with B mixes all of these causes "
        "(step count, order, momentum), so their ranking says nothing about accumulation by itself."
    )
    Config = MultistepConfig
    claims = (E6, E7, E8)
    # quick: smaller batches and fewer of them, on a 10k training pool; full: the protocol
    profiles = {"quick": {"ks": (2, 5, 10), "batch_size": 32, "train_subset": 10_000, "test_subset": 500}, "full": {}}

    def tasks(self, cfg: MultistepConfig) -> dict[int, TaskSpec]:
        """K -> its task."""
        out = {}
        for k in sorted(cfg.ks):
            args = MultistepArgs(
                dataset=cfg.dataset,
                k=k,
                batch_size=cfg.batch_size,
                lr=cfg.lr,
                momentum=cfg.momentum,
                precision=cfg.precision,
                train_subset=cfg.train_subset,
                test_subset=cfg.test_subset,
                chunk_size=cfg.chunk_size,
            )
            out[k] = TaskSpec(kind="multistep-equivalence", args=task_args(args), seed=cfg.seed)
        return out

    def plan(self, cfg: MultistepConfig) -> list[TaskSpec]:
        return list(self.tasks(cfg).values())

    def figure(self, cfg: MultistepConfig, results: Results, tasks: dict[int, TaskSpec]):
        fig, axes = new_figure(ncols=2, width=11, height=4)
        ks = list(tasks)
        for i, (x, label) in enumerate(VARIANTS.items()):
            for ax, stat in ((axes[0], "mean"), (axes[1], "rel")):
                ys = np.array([value(results, tasks[k], f"A{x}_{stat}") for k in ks])
                ax.plot(ks, np.where(ys == 0, LOG_FLOOR, ys), marker="o", color=PALETTE[i], label=label)
        axes[1].axhline(
            EPS[cfg.precision], color="#555555", linestyle="--", linewidth=1, label=f"{cfg.precision} machine epsilon"
        )
        axes[1].axhline(EXACT_F64, color="#555555", linestyle=":", linewidth=1.2, label=f"E6 threshold {EXACT_F64:g}")
        axes[0].set(ylabel="mean |A − X| over all weights (log scale)", title="mean difference from A")
        axes[1].set(ylabel="‖A − X‖ / ‖A − θ0‖ (ratio, log scale)", title="relative difference from A")
        for ax in axes:
            ax.set(xlabel="K (number of batches, one step each)", yscale="log")
            ax.set_xticks(ks)
        legend_below(fig)
        fig.suptitle(
            f"K steps: how far B, C and D end from A ({cfg.precision}, batches of {cfg.batch_size}, lr {cfg.lr:g}, "
            f"momentum {cfg.momentum:g})"
        )
        return fig

    def table(self, results: Results, tasks: dict[int, TaskSpec]) -> Table:
        rows = []
        for k, spec in tasks.items():
            v = scalars(results, spec)
            row = {"K": k, "outcome": outcome(results, spec)}
            for x in VARIANTS:
                for stat in ("max", "mean", "rel", "cos"):
                    row[f"A{x}_{stat}"] = v.get(f"A{x}_{stat}")
            for w in ("A", "B", "C", "D"):
                row[f"||{w}-theta0||"] = v.get(f"update_norm_{w}")
            for w in ("theta0", "A", "B", "C", "D"):
                row[f"{w} test_acc"] = v.get(f"{w}_test_acc")
                row[f"{w} test_loss"] = v.get(f"{w}_test_loss")
            rows.append(row)
        return Table(
            "multistep",
            rows,
            "Per K: max, mean and relative (||A-X|| / ||A-theta0||) difference and "
            "cos(A-theta0, X-theta0) of B, C and D from A; distance of each variant from "
            "theta0; test loss and accuracy of every variant.",
        )

    def analyze(self, cfg: MultistepConfig, results: Results) -> StudyOutput:
        tasks = self.tasks(cfg)
        ks = list(tasks)
        get = lambda name: [value(results, tasks[k], name) for k in ks]  # noqa: E731
        return StudyOutput(
            figures=[
                FigureSpec(
                    "difference_vs_k",
                    self.figure(cfg, results, tasks),
                    "Look at the right panel: D (accumulation) should stay at the rounding level for every K "
                    "(claim E6) while B's difference from A grows with K (E7). "
                    "Difference of B, C and D from A against the number of batches K (log scale): left the "
                    "mean absolute difference, right the difference relative to A's distance from theta0. "
                    f"Exactly 0 is drawn at {LOG_FLOOR:g}. D sits at the rounding level: accumulation "
                    "is exact; C's gap is the dropped momentum.",
                )
            ],
            tables=[self.table(results, tasks)],
            claims=[
                rule_e6(ks, get("AD_rel")),
                rule_e7(ks, get("AB_mean"), get("AB_max")),
                rule_e8(
                    ks,
                    get("AB_mean"),
                    get("AC_mean"),
                    get("AD_rel"),
                    travel=np.divide(get("update_norm_B"), get("update_norm_A")),
                    batch_size=cfg.batch_size,
                ),
            ],
        )
