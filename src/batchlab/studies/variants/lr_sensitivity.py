"""lr-sensitivity: what does the learning rate do: converge, oscillate, diverge or stall?

On the quadratic L(w) = (w - w*)^2 (w* = 2) gradient descent multiplies the error by (1 - 2 lr) each
step: monotone convergence for 0 < lr < 0.5, oscillating convergence for 0.5 < lr < 1, divergence
for lr > 1, and too slow to reach the tolerance in the step budget ("stalls") for a tiny lr. Every
tested lr is classified from its trajectory and checked against that theory. The same four labels
are given to the MNIST MLP at several learning rates from its training-loss curve; a run whose loss
becomes NaN or infinite is `diverges` and never stops the other runs of its group.

Claim tested:
  L1  the quadratic's classification matches the theory at every tested lr.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from ...analysis.regimes import LABELS, classify_loss, classify_trajectory, quadratic_theory
from ...bounds import BatchSize, Count, Epochs, Real, Steps
from ...engine import RunSpec
from ...engine.spec import TaskSpec
from ...outputs import Table
from ...report.figures import PALETTE, legend_below, new_figure
from ...tasks.variants import QuadraticArgs
from ..common import FigureSpec, Results, Study, StudyConfig, StudyOutput
from .claims import L1, rule_l1
from .common import QUICK_SETUP

QUADRATIC_LRS = (0.0005, 0.01, 0.1, 0.3, 0.45, 0.55, 0.7, 0.9, 0.95, 1.05, 1.2, 1.5)
LABEL_COLOR = dict(zip(LABELS, PALETTE))


class SensitivityConfig(StudyConfig):
    quadratic_lrs: tuple[Annotated[Real, Field(gt=0)], ...] = Field(
        QUADRATIC_LRS, min_length=1, description="Learning rates on the quadratic (avoid the boundaries 0.5 and 1)."
    )
    quadratic_steps: Steps = Field(100, ge=1, description="Step budget on the quadratic.")
    tolerance: float = Field(1e-6, gt=0, lt=1, description="Converged: |w - w*| below this fraction of its start.")
    lrs: tuple[Annotated[Real, Field(gt=0)], ...] = Field(
        tuple(float(f"{x:.3g}") for x in np.logspace(-3, 0.5, 15)),
        min_length=1,
        description="Learning rates of the MLP (SGD).",
    )
    batch_size: BatchSize = Field(64, ge=1, description="Batch size of the MLP runs.")
    epochs: Epochs = Field(10, ge=1, description="Epochs of the MLP runs.")
    evaluations: Count = Field(40, ge=2, description="Training-loss evaluations per MLP run (the curve classified).")
    seeds: int = Field(1, ge=1, le=100, description="Seeds per learning rate.")


class LRSensitivity(Study):
    name = "lr-sensitivity"
    accepts_user_model = "its claim is about gradient descent on a quadratic, computed in closed form, not a network"
    title = "Learning-rate regimes: converge, oscillate, diverge or stall"
    description = (
        "Gradient descent on the quadratic (w - 2)^2 at many learning rates, each trajectory classified and "
        "checked against the exact theory (the error is multiplied by 1 - 2 lr each step), and the MNIST MLP "
        "at learning rates from 0.001 up, each training-loss curve given the same four labels."
    )
    Config = SensitivityConfig
    claims = (L1,)
    # quick: the quadratic as in full; the MLP on 10k examples, 256-wide, 4 learning rates, 3 epochs
    profiles = {"quick": {**QUICK_SETUP, "lrs": (0.001, 0.01, 0.1, 1.0), "epochs": 3}, "full": {}}

    def quadratic(self, cfg: SensitivityConfig) -> TaskSpec:
        args = QuadraticArgs(lrs=cfg.quadratic_lrs, steps=cfg.quadratic_steps).model_dump(mode="json")
        return TaskSpec(kind="quadratic-gd", args=args)

    def runs(self, cfg: SensitivityConfig) -> dict[float, list[RunSpec]]:
        steps = cfg.epochs * -(-(cfg.train_subset or 60_000) // cfg.batch_size)
        every = max(1, steps // cfg.evaluations)
        return {
            lr: cfg.seeded(batch_size=cfg.batch_size, lr=lr, epochs=cfg.epochs, eval_every=every, probes=("metrics",))
            for lr in cfg.lrs
        }

    def plan(self, cfg: SensitivityConfig) -> list[RunSpec | TaskSpec]:
        return [self.quadratic(cfg), *(r for runs in self.runs(cfg).values() for r in runs)]

    def analyze(self, cfg: SensitivityConfig, results: Results) -> StudyOutput:
        fig, axes = new_figure(ncols=2, width=11, height=4.2)
        task = self.quadratic(cfg)
        rows, labels = [], None
        theory = [quadratic_theory(lr, cfg.quadratic_steps, cfg.tolerance) for lr in cfg.quadratic_lrs]
        if results.has(task) and not results.error(task):
            errors = results.array(task, "errors")
            labels = [classify_trajectory(e, cfg.tolerance) for e in errors]
            for i, (lr, e, got, want) in enumerate(zip(cfg.quadratic_lrs, errors, labels, theory)):
                shown = np.abs(e[:40])
                axes[0].plot(
                    np.where(np.isfinite(shown) & (shown > 0), shown, np.nan),
                    color=LABEL_COLOR[got],
                    linewidth=1,
                    alpha=0.8,
                    label=got if got not in labels[:i] else None,
                )
                rows.append({"problem": "quadratic", "lr": lr, "label": got, "theory": want, "1 - 2 lr": 1 - 2 * lr})
        claim = rule_l1(cfg.quadratic_lrs, labels, theory, tolerance=cfg.tolerance, steps=cfg.quadratic_steps)
        axes[0].set(
            yscale="log", xlabel="step", ylabel="|w − w*|, distance to the minimum (log)", title="quadratic (w − 2)²"
        )
        for i, (lr, specs) in enumerate(self.runs(cfg).items()):
            for spec in specs:
                if not results.has(spec):
                    continue
                loss = results.series(spec, "train_loss")
                label = classify_loss(loss)
                shown = np.where(np.isfinite(loss), loss, np.nan)
                axes[1].plot(results.steps(spec), shown, color=PALETTE[i % len(PALETTE)], label=f"lr {lr:g}: {label}")
                rows.append(
                    {
                        "problem": "mnist mlp",
                        "lr": lr,
                        "label": label,
                        "seed": spec.seed,
                        "status": results.status(spec),
                        "final train loss": float(loss[-1]),
                    }
                )
        axes[1].set(
            yscale="log", xlabel="step", ylabel="training loss (cross-entropy, nats, log)", title="MNIST MLP (SGD)"
        )
        legend_below(fig)
        fig.suptitle("Four learning-rate regimes: converges, oscillates, diverges, stalls (too slow)")
        return StudyOutput(
            figures=[
                FigureSpec(
                    "regimes",
                    fig,
                    "Claim L1: on the quadratic (left) every learning rate's curve should get the regime the "
                    "theory gives it (each step multiplies the error by 1 − 2 lr: lr < 0.5 converges, 0.5 to 1 "
                    "oscillates, above 1 diverges; too small an lr stalls within the step budget). "
                    "Left: distance to the minimum per step on the quadratic, coloured by the label its trajectory "
                    "got (log scale; a diverging trajectory leaves the plot). Right: training loss of the MLP per "
                    "learning rate, with its label; a run that became NaN stops where it diverged.",
                )
            ],
            tables=[Table("regimes", rows, "The label of every learning rate, and on the quadratic the theory's.")],
            claims=[claim],
        )
