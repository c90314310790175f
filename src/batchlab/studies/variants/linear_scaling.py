"""linear-scaling: how far does lr = lr_base B / B_base carry a large batch, with and without warmup?

Goyal et al. (2017) trained ImageNet at batch 8192 in an hour with two rules: scale the learning
rate linearly with the batch (lr = lr_base B / B_base), and warm it up gradually from lr_base over
the first 5 epochs. The square-root rule (lr_base sqrt(B / B_base); Krizhevsky 2014, Hoffer et al.
2017) is the gentler alternative. For B from 64 to 8192, plain SGD and momentum 0.9, the same epochs
for every B: the final test accuracy against the B_base run, and B_max, the largest batch up to
which a rule keeps it: within 1 pp by an equivalence test (TOST, Schuirmann 1987) paired by seed, the
batches tested in increasing order and the sequence stopped at the first that fails (fixed-sequence
testing). A diverged run counts 0 %.

Claim tested:
  S1  with warmup, linear scaling keeps the accuracy beyond B_base, up to a batch at which linear scaling
      without warmup is shown to lose it, for each optimizer.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field, model_validator

from ...analysis.stats import mean_std
from ...bounds import BatchSize, Epochs, EpochTime, Real
from ...engine import RunSpec
from ...outputs import Table
from ...report.figures import PALETTE, band, legend_below, new_figure, zoom_accuracy
from ..common import FigureSpec, Results, Study, StudyConfig, StudyOutput
from .claims import S1, S1_PP, b_max, keeps_accuracy, rule_s1
from .common import QUICK_SETUP, scaled_lr, scored_accuracy, warmup

SCALING_RULES = ("linear", "linear+warmup", "sqrt")  # how the lr follows the batch size (not optimizer rules)


class ScalingConfig(StudyConfig):
    batch_sizes: tuple[Annotated[BatchSize, Field(ge=1)], ...] = Field(
        (64, 128, 256, 512, 1024, 2048, 4096, 8192), min_length=2, description="Batch sizes; the first is B_base."
    )
    lr_base: Real = Field(0.01, gt=0, description="The learning rate at B_base.")
    optimizers: tuple[Literal["sgd", "momentum"], ...] = Field(
        ("sgd", "momentum"), min_length=1, description="Plain SGD, and SGD with momentum 0.9."
    )
    epochs: Epochs = Field(30, ge=1, description="Epochs of every run, whatever its batch size.")
    warmup_epochs: EpochTime = Field(5, ge=0, description="Gradual warmup length (linear+warmup).")
    seeds: int = Field(5, ge=2, le=100, description="Seeds per configuration (paired: seed s, the same init).")

    @model_validator(mode="after")
    def _warmup_inside(self) -> "ScalingConfig":
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs:g}) must be shorter than epochs ({self.epochs})")
        return self


class LinearScaling(Study):
    name = "linear-scaling"
    accepts_user_model = None
    title = "Linear and square-root learning-rate scaling, with and without warmup"
    description = (
        "For batch sizes from B_base = 64 up, the learning rate scaled linearly with the batch (with and without "
        "Goyal et al.'s gradual warmup) or with its square root, for plain SGD and momentum 0.9, the same number "
        "of epochs for every batch: how far does each rule keep the small-batch accuracy?"
    )
    Config = ScalingConfig
    claims = (S1,)
    # quick: 10240 examples and a 128-wide MLP, batches 64..4096, 12 epochs with a 2-epoch warmup: a sixth
    # of training, as the full 5 of 30 (with 2 of 8 epochs warmup cost 1.2 pp at batch 1024 by itself); 4 seeds,
    # what a TOST within 1 pp needs at a paired spread of about 0.3 pp
    profiles = {
        "quick": {
            **QUICK_SETUP,
            "widths": (128, 128),
            "batch_sizes": (64, 256, 1024, 4096),
            "epochs": 12,
            "warmup_epochs": 2,
            "seeds": 4,
        },
        "full": {},
    }

    def runs(self, cfg: ScalingConfig) -> dict[tuple[str, str, int], list[RunSpec]]:
        base = cfg.batch_sizes[0]
        out = {}
        for opt in cfg.optimizers:
            momentum = 0.9 if opt == "momentum" else 0.0
            for scaling in SCALING_RULES:
                for b in cfg.batch_sizes:
                    lr = scaled_lr(scaling.split("+")[0], cfg.lr_base, b, base)
                    schedule = warmup(cfg.lr_base, lr, cfg.warmup_epochs if scaling.endswith("warmup") else 0)
                    out[(opt, scaling, b)] = cfg.seeded(
                        batch_size=b,
                        lr=lr,
                        momentum=momentum,
                        epochs=cfg.epochs,
                        lr_schedule=schedule,
                        probes=("metrics",),
                    )
        return out

    def plan(self, cfg: ScalingConfig) -> list[RunSpec]:
        return [r for runs in self.runs(cfg).values() for r in runs]

    def analyze(self, cfg: ScalingConfig, results: Results) -> StudyOutput:
        runs = self.runs(cfg)
        acc = {k: scored_accuracy(results, v) for k, v in runs.items()}
        means = {k: float(np.nanmean(v)) if np.isfinite(v).any() else np.nan for k, v in acc.items()}
        base = cfg.batch_sizes[0]
        per_rule = {
            opt: {rule: {b: acc[(opt, rule, b)] for b in cfg.batch_sizes} for rule in SCALING_RULES}
            for opt in cfg.optimizers
        }
        tests = {
            (o, r, b): d for o, per in per_rule.items() for r, a in per.items() for b, d in keeps_accuracy(a, base)
        }
        maxes = {o: {r: b_max(a, base) for r, a in per.items()} for o, per in per_rule.items()}
        fig, axes = new_figure(ncols=len(cfg.optimizers) + 1, width=4.6 * (len(cfg.optimizers) + 1), height=4)
        axes = np.atleast_1d(axes)
        for ax, opt in zip(axes, cfg.optimizers):
            for i, scaling in enumerate(SCALING_RULES):
                ys = [100 * means[(opt, scaling, b)] for b in cfg.batch_sizes]
                ax.plot(cfg.batch_sizes, ys, "o-", color=PALETTE[i], label=f"{scaling} (B_max {maxes[opt][scaling]})")
            ax.axhspan(
                100 * means[(opt, SCALING_RULES[0], base)] - S1_PP,
                100 * means[(opt, SCALING_RULES[0], base)] + S1_PP,
                color="#dddddd",
                label=f"within ±{S1_PP:g} pp of B={base}",
            )
            ax.set(xscale="log", xlabel="batch size B (log)", ylabel="final test accuracy (%)", title=opt)
            ax.set_xticks(list(cfg.batch_sizes), [str(b) for b in cfg.batch_sizes])  # the batch sizes run
            ax.minorticks_off()
        largest = cfg.batch_sizes[-1]
        for i, scaling in enumerate(SCALING_RULES):
            specs = runs[(cfg.optimizers[-1], scaling, largest)]
            curves = results.curves(specs, "test_acc")
            if curves.size:
                m, s = mean_std(curves)
                band(axes[-1], results.epochs(specs[0]), 100 * m, 100 * s, label=scaling, color=PALETTE[i])
        axes[-1].set(xlabel="epoch", ylabel="test accuracy (%)", title=f"B = {largest}, {cfg.optimizers[-1]}")
        zoom_accuracy(axes[-1], top=100)  # where the runs end, not 0-100 %
        legend_below(fig)
        fig.suptitle("Scaling the learning rate with the batch size: how far does each rule keep the accuracy?")
        rows = [
            {
                "optimizer": o,
                "rule": r,
                "B": b,
                "lr": runs[(o, r, b)][0].lr,
                "mean final test acc (%)": 100 * means[(o, r, b)],
                "seeds": int(np.isfinite(acc[(o, r, b)]).sum()),
                f"- B={base} (pp)": tests[(o, r, b)].estimate if b != base else None,
                "90 % CI (pp)": f"[{tests[(o, r, b)].ci[0]:.2f}, {tests[(o, r, b)].ci[1]:.2f}]" if b != base else "",
                f"within ±{S1_PP:g} pp (TOST)": tests[(o, r, b)].verdict if b != base else "",
            }
            for (o, r, b) in runs
        ]
        return StudyOutput(
            figures=[
                FigureSpec(
                    "accuracy_vs_batch",
                    fig,
                    "Look for the largest B at which a rule's curve is still inside the grey band: claim S1 expects "
                    "linear scaling with warmup to stay in it up to a larger batch than linear scaling alone. "
                    "Final test accuracy against the batch size for each lr scaling rule (mean over seeds, a diverged "
                    f"run at 0 %; the grey band is ±{S1_PP:g} pp around the B_base run), per optimizer; right: test "
                    "accuracy during training at the largest batch. B_max in the legend is the last batch that an "
                    "equivalence test (TOST, paired by seed) shows within the band, the batches tested in increasing "
                    "order: a mean inside the band with too few seeds to show it does not count.",
                )
            ],
            tables=[
                Table(
                    "scaling",
                    rows,
                    "Learning rate and mean final test accuracy per optimizer, rule and B, and the TOST against "
                    f"B={base} (paired by seed; a diverged run at 0 %).",
                )
            ],
            claims=[
                rule_s1({o: {r: per[r] for r in ("linear", "linear+warmup")} for o, per in per_rule.items()}, base)
            ],
        )
