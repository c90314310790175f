"""lr-sensitivity: what does the learning rate do: converge, oscillate, orbit, diverge or stall?

On the quadratic (w - w*)^2 (w* = 2, curvature L = 2) gradient descent multiplies the error by 1 - eta L each
step (LeCun et al. 1998, Efficient BackProp, sec. 5): it converges monotonically for eta L <= 1, converges
while flipping sign for 1 < eta L < 2 (`oscillates`), jumps between w* + e and w* - e forever at eta L = 2
(`period-2`), and diverges above; a converging lr too small for the step budget `stalls`. The grid puts
learning rates on both boundaries, eta = 1/L = 0.5 and eta = 2/L = 1. Every tested lr's trajectory is
classified from its errors alone and checked against that closed form. The MNIST MLP at several learning
rates gets the labels a loss curve can show (converges, fluctuates: SGD noise, diverges, stalls); a run whose
loss becomes NaN or infinite is `diverges` and never stops the other runs of its group.

Claim tested:
  L1  the quadratic's classification matches the closed form at every tested lr, the boundaries included.
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

CURVATURE = 2.0  # L of the quadratic (w - w*)^2: eta L = 1 at lr 0.5, eta L = 2 at lr 1
QUADRATIC_LRS = (0.0005, 0.01, 0.1, 0.3, 0.45, 0.5, 0.55, 0.7, 0.9, 0.95, 1.0, 1.05, 1.2, 1.5)
LABEL_COLOR = dict(zip(LABELS, PALETTE))


class SensitivityConfig(StudyConfig):
    quadratic_lrs: tuple[Annotated[Real, Field(gt=0)], ...] = Field(
        QUADRATIC_LRS,
        min_length=1,
        description="Learning rates on the quadratic (its regimes change at 1/L = 0.5 and 2/L = 1).",
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
    title = "Learning-rate regimes: converge, oscillate, orbit, diverge or stall"
    description = (
        "Gradient descent on the quadratic (w - 2)^2 at many learning rates, the boundaries 0.5 and 1 included, each "
        "trajectory classified and checked against the closed form (the error is multiplied by 1 - 2 lr each "
        "step), and the MNIST MLP at learning rates from 0.001 up, each training-loss curve labelled converges, "
        "fluctuates, diverges or stalls."
    )
    Config = SensitivityConfig
    claims = (L1,)
    # quick: the quadratic as in full; the MLP on 10k examples, 256-wide, 4 learning rates, 3 epochs
    profiles = {"quick": {**QUICK_SETUP, "lrs": (0.001, 0.01, 0.1, 1.0), "epochs": 3}, "full": {}}

    def quadratic(self, cfg: SensitivityConfig) -> TaskSpec:
        args = QuadraticArgs(lrs=cfg.quadratic_lrs, steps=cfg.quadratic_steps, curvature=CURVATURE)
        args = args.model_dump(mode="json")
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
        theory = [quadratic_theory(lr, CURVATURE, cfg.quadratic_steps, cfg.tolerance) for lr in cfg.quadratic_lrs]
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
                rows.append({"problem": "quadratic", "lr": lr, "label": got, "theory": want, "eta L": lr * CURVATURE})
        claim = rule_l1(
            cfg.quadratic_lrs, labels, theory, curvature=CURVATURE, tolerance=cfg.tolerance, steps=cfg.quadratic_steps
        )
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
        fig.suptitle(
            "Learning-rate regimes: converges, oscillates, period-2, diverges, stalls (too slow); SGD fluctuates"
        )
        return StudyOutput(
            figures=[
                FigureSpec(
                    "regimes",
                    fig,
                    "Claim L1: on the quadratic (left) every learning rate's curve should get the regime the "
                    "closed form gives it (each step multiplies the error by 1 − 2 lr: lr ≤ 0.5 converges, 0.5 to 1 "
                    "oscillates, exactly 1 is a period-2 orbit at a constant distance, above 1 diverges; too small "
                    "an lr stalls within the step budget). "
                    "Left: distance to the minimum per step on the quadratic, coloured by the label its trajectory "
                    "got (log scale; a diverging trajectory leaves the plot, lr 0.5 reaches the minimum in one step). "
                    "Right: training loss of the MLP per learning rate, with its label (`fluctuates`: the loss goes "
                    "up at many evaluations, mini-batch noise); a run that became NaN stops where it diverged.",
                )
            ],
            tables=[Table("regimes", rows, "The label of every learning rate, and on the quadratic the theory's.")],
            claims=[claim],
        )
