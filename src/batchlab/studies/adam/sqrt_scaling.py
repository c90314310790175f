"""sqrt-scaling: does Adam keep its loss curve from batch B to kB under the square-root rule? (AS3)

Malladi et al. (2022) derive Adam's SDE and from it a scaling rule: at k times the batch, lr x sqrt(k), and
1 - beta -> k (1 - beta) for both betas (eps / sqrt(k)). The rule rests on the gradient noise dominating the mean
gradient, tr(Sigma) / (B |G|^2) >> k, since Adam's second moment then shrinks as 1/k. Wang & Aitchison (2024) remove
that assumption: their batch-size-invariant Adam computes v from the mean of the squared gradients of micro-batches
of a fixed size (here B), so v does not depend on the batch, and Adam behaves as SGD with a fixed preconditioner,
whose SDE scaling is linear: lr x k and 1 - beta -> k (1 - beta) (our reading of their analysis).

Three variants, each at B and kB for k on a grid up to 16, the same examples seen by every arm, seeds paired (seed s
fixes the init and the data order): (a) `sqrt-lr`, lr x sqrt(k) with the betas kept; (b) `sqrt-lr+betas`, Malladi
et al.'s rule; (c) `invariant`, batch-size-invariant Adam (RunSpec.adam_second_moment="micro-batch", micro_batch B)
with the linear rule. AS3 compares each arm's training loss against examples seen with the base run's, and sets the
largest k that keeps it beside tr(Sigma) / (B |G|^2) measured at the base run's checkpoints (`noise-scale` task).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, model_validator

from ...bounds import BatchSize, Epochs, Real
from ...engine import RunSpec
from ...engine.spec import DATASET_SIZES, Checkpoint, TaskSpec
from ...outputs import Table
from ...report.figures import PALETTE, legend_below, new_figure
from ...tasks.gradients import NoiseScaleArgs
from ..common import FigureSpec, Results, Study, StudyConfig, StudyOutput
from .claims import AS3, AS3_MARGIN, k_chain, rule_as3

VARIANTS = ("sqrt-lr", "sqrt-lr+betas", "invariant")
WINDOW = 0.5  # AS3 compares the mean training loss over the last half of training (fraction of examples seen)


class SqrtScalingConfig(StudyConfig):
    batch_base: BatchSize = Field(32, ge=1, description="The base batch B (and invariant Adam's micro-batch).")
    ks: tuple[Annotated[int, Field(ge=1, le=1024)], ...] = Field(
        (1, 2, 4, 8, 16), min_length=2, description="Batch multipliers k, increasing, from 1 (the base run)."
    )
    variants: tuple[Literal["sqrt-lr", "sqrt-lr+betas", "invariant"], ...] = Field(
        VARIANTS,
        min_length=1,
        description="sqrt-lr: lr x sqrt(k); sqrt-lr+betas: also 1 - beta -> k (1 - beta), eps / sqrt(k) (Malladi "
        "et al. 2022); invariant: v from B-sized micro-batches' squared gradients, lr x k, 1 - beta -> k (1 - beta).",
    )
    lr_base: Real = Field(1e-3, gt=0, description="Adam's learning rate at B.")
    beta1: float = Field(
        0.95, gt=0, lt=1, description="beta1 at B; 1 - k (1 - beta1) must stay above 0 at the largest k."
    )
    beta2: float = Field(0.999, gt=0, lt=1, description="beta2 at B.")
    eps: Real = Field(1e-8, gt=0, description="Adam's eps at B.")
    epochs: Epochs = Field(4, ge=1, description="Epochs of every run (the same examples seen at every k).")
    evaluations_per_epoch: int = Field(
        2, ge=1, le=100, description="Training-loss evaluations per epoch (the curve against examples seen)."
    )
    noise_examples: int = Field(
        1024, ge=2, le=1_000_000, description="Examples of the per-example tr(Sigma) and |G|^2 at each checkpoint."
    )
    noise_bootstrap: int = Field(200, ge=10, le=100_000, description="Bootstrap resamples of that estimate.")
    seeds: int = Field(4, ge=2, le=100, description="Seeds per arm (paired: seed s, the same init and data order).")

    @model_validator(mode="after")
    def _grid(self) -> "SqrtScalingConfig":
        if self.ks[0] != 1 or list(self.ks) != sorted(set(self.ks)):
            raise ValueError("ks must increase from 1 (the base run)")
        top = max(self.ks)
        if ("sqrt-lr+betas" in self.variants or "invariant" in self.variants) and top * (1 - self.beta1) >= 1:
            raise ValueError(f"1 - k (1 - beta1) is not above 0 at k = {top}: raise beta1 above {1 - 1 / top:g}")
        n = self.train_subset or DATASET_SIZES.get(self.dataset, (None,))[0]
        if n is not None and self.batch_base * top > n:
            raise ValueError(f"the largest batch {self.batch_base * top} exceeds the {n} training examples")
        return self


def scaled(variant: str, k: int, cfg: SqrtScalingConfig) -> dict:
    """The Adam settings of `variant` at k B (k = 1: the base run's, shared by every variant)."""
    b1, b2 = cfg.beta1, cfg.beta2
    if k == 1:
        return dict(lr=cfg.lr_base, betas=(b1, b2), eps=cfg.eps)
    if variant == "sqrt-lr":
        return dict(lr=cfg.lr_base * math.sqrt(k), betas=(b1, b2), eps=cfg.eps)
    betas = (1 - k * (1 - b1), 1 - k * (1 - b2))
    if variant == "sqrt-lr+betas":
        return dict(lr=cfg.lr_base * math.sqrt(k), betas=betas, eps=cfg.eps / math.sqrt(k))
    return dict(
        lr=cfg.lr_base * k,
        betas=betas,
        eps=cfg.eps,
        micro_batch=cfg.batch_base,
        adam_second_moment="micro-batch",
    )


class SqrtScaling(Study):
    name = "sqrt-scaling"
    title = "Adam from B to kB: the square-root rule, rescaled betas, and batch-size-invariant Adam"
    description = (
        "Adam at a base batch B and at kB for k up to 16, scaled by lr x sqrt(k), by Malladi et al.'s rule (also "
        "1 - beta -> k (1 - beta)), and as batch-size-invariant Adam (Wang & Aitchison 2024): how far does each keep "
        "the loss curve against examples seen, set beside the measured tr(Sigma) / (B |G|^2)?"
    )
    Config = SqrtScalingConfig
    claims = (AS3,)
    accepts_user_model = "not checked on a user model yet"
    profiles = {
        # 8192 Fashion-MNIST examples, a 784-128-128-10 MLP, B = 32, 4 epochs: 1024 steps at B, 64 at 16 B; the same
        # grid of k as the papers (to 16), 4 seeds: a TOST within ±10 % at a paired spread of a few % needs 3-4
        "quick": {
            "dataset": "fashion-mnist",
            "train_subset": 8192,
            "test_subset": 1000,
            "widths": (128, 128),
        },
        # the whole training set and the built-in CNN (Malladi et al. and Wang & Aitchison train convolutional
        # networks on image data), B = 64, 20 epochs, 8 seeds
        "full": {"dataset": "fashion-mnist", "model": "cnn", "batch_base": 64, "epochs": 20, "seeds": 8},
    }

    # --- the plan ----------------------------------------------------------------------------------------------
    def runs(self, cfg: SqrtScalingConfig) -> dict[tuple[str, int], list[RunSpec]]:
        """(variant, k) -> its seeds; k = 1 is one base run shared by every variant."""
        n = cfg.train_subset or 60_000
        out = {}
        for variant in cfg.variants:
            for k in cfg.ks:
                b = cfg.batch_base * k
                every = max(1, -(-n // b) // cfg.evaluations_per_epoch)
                out[(variant, k)] = cfg.seeded(
                    optimizer="adam",
                    batch_size=b,
                    epochs=cfg.epochs,
                    probes=("metrics",),
                    eval_every=every,
                    **scaled(variant, k, cfg),
                )
        return out

    def noise_tasks(self, cfg: SqrtScalingConfig) -> dict[int, TaskSpec]:
        """Epoch -> tr(Sigma) and |G|^2 at base seed 0's weights: after the first epoch, and where the window starts."""
        base = self.runs(cfg)[(cfg.variants[0], 1)][0]
        args = NoiseScaleArgs(
            examples=cfg.noise_examples,
            small_batch=cfg.batch_base,
            big_batch=2 * cfg.batch_base,
            draws=2,  # the two-batch estimator is not used here: the per-example one has the bootstrap CI
            bootstrap=cfg.noise_bootstrap,
        ).model_dump(mode="json")
        epochs = sorted({1, max(1, int(cfg.epochs * WINDOW))})
        return {e: TaskSpec(kind="noise-scale", args=args, start=Checkpoint(run=base, epoch=e)) for e in epochs}

    def plan(self, cfg: SqrtScalingConfig) -> list[RunSpec | TaskSpec]:
        runs = list(dict.fromkeys(r for specs in self.runs(cfg).values() for r in specs))
        return runs + list(self.noise_tasks(cfg).values())

    # --- the analysis ------------------------------------------------------------------------------------------
    @staticmethod
    def window_loss(results: Results, spec: RunSpec) -> float:
        """Mean training loss over the evaluations in the last half of training (+inf: diverged; NaN: missing)."""
        if not results.has(spec):
            return math.nan
        if results.status(spec) == "diverged":
            return math.inf
        loss, steps = results.series(spec, "train_loss"), results.steps(spec)
        inside = steps >= WINDOW * steps.max()
        return float(np.mean(loss[inside])) if np.isfinite(loss[inside]).all() else math.inf

    def noise_ratio(self, cfg: SqrtScalingConfig, results: Results) -> dict[str, tuple[float, float, float]]:
        """'epoch e' -> tr(Sigma) / (B |G|^2) at base seed 0's weights, with its 95 % bootstrap interval."""
        out = {}
        for epoch, task in self.noise_tasks(cfg).items():
            if not results.has(task) or results.error(task):
                continue
            trace, g2 = (
                results.scalar(task, "per_example_trace_sigma"),
                results.scalar(task, "per_example_grad_sq_norm"),
            )
            boot = results.array(task, "bootstrap_trace_sigma") / results.array(task, "bootstrap_grad_sq_norm")
            boot = boot[np.isfinite(boot) & (boot > 0)] / cfg.batch_base
            lo, hi = np.quantile(boot, [0.025, 0.975]) if boot.size else (math.nan, math.nan)
            out[f"epoch {epoch}"] = (trace / g2 / cfg.batch_base if g2 > 0 else math.nan, float(lo), float(hi))
        return out

    def analyze(self, cfg: SqrtScalingConfig, results: Results) -> StudyOutput:
        runs = self.runs(cfg)
        losses = {
            v: {k: np.array([self.window_loss(results, s) for s in runs[(v, k)]]) for k in cfg.ks} for v in cfg.variants
        }
        ratio = self.noise_ratio(cfg, results)
        rows = []
        for v in cfg.variants:
            k_max, decisions, _ = k_chain(losses[v])
            for k in cfg.ks:
                spec, d = runs[(v, k)][0], decisions.get(k)
                finite = losses[v][k][np.isfinite(losses[v][k])]
                rows.append(
                    {
                        "variant": v,
                        "k": k,
                        "batch": spec.batch_size,
                        "lr": spec.lr,
                        "beta1": spec.betas[0],
                        "beta2": spec.betas[1],
                        "window loss (mean)": float(finite.mean()) if finite.size else None,
                        "diverged seeds": int(np.isposinf(losses[v][k]).sum()),
                        "loss ratio to k=1": math.exp(d.estimate) if d and math.isfinite(d.estimate) else None,
                        f"within ±{100 * AS3_MARGIN:g} % (TOST)": d.verdict if d else "",
                        "k_max": k_max,
                    }
                )
        return StudyOutput(
            figures=[self.figure(cfg, results, runs, ratio)],
            tables=[
                Table(
                    "arms",
                    rows,
                    "Each arm's Adam settings, its mean training loss over the last half of training (seeds, a "
                    "diverged run left out of the mean and counted apart), the ratio to the base run's (paired by "
                    "seed, geometric mean) and the TOST; k_max the last k of the fixed sequence that keeps the curve.",
                ),
                Table(
                    "noise",
                    [
                        {"checkpoint": e, "tr(Sigma)/(B|G|^2)": r[0], "95 % CI": f"[{r[1]:.3g}, {r[2]:.3g}]"}
                        for e, r in ratio.items()
                    ],
                    f"tr(Sigma) / (B |G|^2) at B = {cfg.batch_base}, base seed 0's weights (per-example estimator on "
                    f"{cfg.noise_examples} examples, bootstrap CI): the square-root rule needs it >> k.",
                ),
            ],
            claims=[rule_as3(losses, ratio)],
        )

    def figure(self, cfg: SqrtScalingConfig, results: Results, runs, ratio) -> FigureSpec:
        fig, axes = new_figure(ncols=len(cfg.variants), width=4.4 * len(cfg.variants), height=3.8)
        axes = np.atleast_1d(axes)
        for ax, v in zip(axes, cfg.variants):
            for i, k in enumerate(cfg.ks):
                specs = [s for s in runs[(v, k)] if results.has(s)]
                if not specs:
                    continue
                curves = results.curves(specs, "train_loss")
                seen = results.steps(specs[0]) / max(results.steps(specs[0]).max(), 1)
                color = "black" if k == 1 else PALETTE[(i - 1) % len(PALETTE)]
                ax.plot(seen, np.nanmean(curves, axis=0), "o-", ms=2.5, color=color, label=f"k = {k}")
            ax.axvspan(WINDOW, 1.0, color="#eeeeee", zorder=0)
            ax.set(yscale="log", xlabel="fraction of examples seen", ylabel="training loss (log)", title=v)
        legend_below(fig)
        shown = ", ".join(f"{e}: {r[0]:.3g}" for e, r in ratio.items())
        fig.suptitle(f"Adam at B = {cfg.batch_base} and kB: training loss against examples seen")
        return FigureSpec(
            "loss_vs_examples",
            fig,
            "Look for the k whose curve leaves the black base curve inside the grey window (the last half of "
            "training, where AS3 compares the mean loss within ±{:g} %). Training loss (mean over seeds) against the "
            "fraction of examples seen, per variant: lr x sqrt(k); that and 1 - beta -> k (1 - beta) (Malladi et al. "
            "2022); batch-size-invariant Adam with lr x k (Wang & Aitchison 2024). tr(Sigma)/(B|G|^2) at the base "
            "run: {}.".format(100 * AS3_MARGIN, shown or "not measured"),
        )
