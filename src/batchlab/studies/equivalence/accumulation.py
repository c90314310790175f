"""accumulation: does gradient accumulation (micro-batches) give the weights of the direct batch?

Gradient accumulation is a run option of the engine: `RunSpec(micro_batch=32, batch_size=256)`
computes each step's batch as 8 micro-batches of 32 and combines their gradients before one
update. Each configuration here is one `accumulation` task, which trains the two runs (the same
init and data order, with and without `micro_batch`) with the engine's own training loop for a
few steps and compares the final weights. (A task rather than two planned runs because the
comparison needs both runs' final weights in one place; it trains through `train_group`, so the
path tested is the one every study's training uses.)

Claims tested:
  A1  without BatchNorm, float64: the final weights agree to a relative 1e-12 for SGD, momentum,
      Adam and LARS (only the order of the additions of the gradient changes; LARS's layer-wise
      trust ratio, nonlinear in the gradient, is taken once per step on the accumulated gradient);
  A2  with BatchNorm they differ (relative difference above 1e-6): every micro-batch is normalised
      by its own statistics, and the running statistics are updated once per micro-batch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ...bounds import BatchSize, Examples, Seed, Steps
from ...engine.spec import TaskSpec
from ...outputs import Table
from ...report.figures import new_figure
from ...tasks.equivalence import (
    OPTIMIZER_SETTINGS,
    AccumulationArgs,
    AccumulationOptimizer,
    ImageDataset,
    Precision,
    task_args,
)
from ..common import FigureSpec, Results, Study, StudyOutput, check_subsets
from .claims import A1, A2, ACCUMULATION_BN_DIFFERS, ACCUMULATION_EXACT, rule_a1, rule_a2
from .common import LOG_FLOOR, layer_label, log_bars, outcome, scalars, tensor_names, value

LABELS = {"sgd": "SGD", "momentum": "momentum", "adam": "Adam", "lars": "LARS"}


class AccumulationConfig(BaseModel):
    """Each model x optimizer: direct batch vs micro-batches, one accumulation task."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    dataset: ImageDataset = Field("mnist", description="The images: mnist or fashion-mnist.")
    models: tuple[Literal["cnn", "cnn-bn"], ...] = Field(
        ("cnn", "cnn-bn"), min_length=1, description="The CNN without and with BatchNorm."
    )
    optimizers: tuple[AccumulationOptimizer, ...] = Field(
        ("sgd", "momentum", "adam", "lars"),
        min_length=1,
        description="sgd (lr 0.1), momentum (0.9, lr 0.1), adam (lr 1e-3), lars (lr 10, momentum 0.9, decay 5e-4).",
    )
    batch_size: BatchSize = Field(256, ge=2, description="The batch of every step.")
    micro_batch: BatchSize = Field(32, ge=1, description="Micro-batch of the accumulated run (must divide batch_size).")
    precision: Precision = Field("float64", description="Compute precision (the claims are stated for float64).")
    steps: Steps = Field(
        10, ge=1, description="Steps of both runs (one epoch over the first steps x batch_size training images)."
    )
    test_subset: Examples | None = Field(
        None, ge=1, description="Evaluate both runs on the first N test images (None: all 10k)."
    )
    seed: Seed = Field(0, ge=0, description="Seed of the initialisation and the data order of both runs.")

    @model_validator(mode="after")
    def _divides(self):
        for name in ("models", "optimizers"):
            if not getattr(self, name):
                raise ValueError(f"{name} must name at least one value")
        n_train = check_subsets(self.dataset, None, self.test_subset)
        if self.steps * self.batch_size > n_train:
            need = f"{self.steps} steps of batch_size {self.batch_size} need more than the {n_train} training images"
            raise ValueError(need)
        if self.batch_size % self.micro_batch or self.micro_batch >= self.batch_size:
            raise ValueError(f"micro_batch {self.micro_batch} must be a proper divisor of batch_size {self.batch_size}")
        return self


class Accumulation(Study):
    name = "accumulation"
    accepts_user_model = "its tasks compare gradient accumulation on the built-in models (mlp, cnn, cnn-bn) only"
    title = "Gradient accumulation (micro-batches) vs the direct batch"
    description = (
        "The same runs trained for a few steps with each batch computed directly and as micro-batches whose "
        "gradients are added before one update (RunSpec.micro_batch). With a mean loss, the batch gradient is "
        "the sum of the micro-batch gradients, each weighted by its share of the batch: only the order of the "
        "additions changes, so without BatchNorm the weights agree to float64 rounding whatever the optimizer "
        "does with the gradient, LARS included: its trust ratio ||w|| / ||g|| is nonlinear in the gradient, but "
        "it is taken once per step, on the whole accumulated gradient. With BatchNorm each micro-batch is "
        "normalised by its own mean and variance, so the examples see a different function than in the whole "
        "batch, and the running statistics are updated once per micro-batch: accumulation is then a different "
        "computation, not a rounding of the same one."
    )
    Config = AccumulationConfig
    claims = (A1, A2)
    # quick: 2 steps of batch 64 as micro-batches of 8, on a small test set; full: 10 steps of 256 as 8 x 32
    profiles = {"quick": {"batch_size": 64, "micro_batch": 8, "steps": 2, "test_subset": 200}, "full": {}}

    def tasks(self, cfg: AccumulationConfig) -> dict[tuple[str, str], TaskSpec]:
        """(model, optimizer) -> its task."""
        out = {}
        for model in cfg.models:
            for optimizer in cfg.optimizers:
                args = AccumulationArgs(
                    dataset=cfg.dataset,
                    model=model,
                    optimizer=optimizer,
                    batch_size=cfg.batch_size,
                    micro_batch=cfg.micro_batch,
                    precision=cfg.precision,
                    steps=cfg.steps,
                    test_subset=cfg.test_subset,
                )
                out[(model, optimizer)] = TaskSpec(kind="accumulation", args=task_args(args), seed=cfg.seed)
        return out

    def plan(self, cfg: AccumulationConfig) -> list[TaskSpec]:
        return list(self.tasks(cfg).values())

    def figure(self, cfg: AccumulationConfig, results: Results, tasks: dict[tuple[str, str], TaskSpec]):
        fig, axes = new_figure(ncols=2, width=12, height=4)
        groups = {
            model: [value(results, tasks.get((model, o)), "MD_rel") for o in cfg.optimizers] for model in cfg.models
        }
        log_bars(
            axes[0],
            groups,
            [LABELS[o] for o in cfg.optimizers],
            eps_lines=(cfg.precision,),
            thresholds={
                f"A1: below {ACCUMULATION_EXACT:g}": ACCUMULATION_EXACT,
                f"A2: above {ACCUMULATION_BN_DIFFERS:g}": ACCUMULATION_BN_DIFFERS,
            },
            ylabel="‖W_micro − W_direct‖ / ‖W_direct − θ0‖",
            xlabel="optimizer (one colour per model)",
        )
        axes[0].set_title("all weights", fontsize=9)
        per_layer = {LABELS[o]: scalars(results, tasks.get(("cnn-bn", o))) for o in cfg.optimizers}
        names = next((tensor_names(v, "MD_rel", "cnn-bn") for v in per_layer.values() if v), [])
        if names:
            log_bars(
                axes[1],
                {lab: [v.get(f"MD_rel:{n}") for n in names] for lab, v in per_layer.items()},
                [layer_label("cnn-bn", n) for n in names],
                eps_lines=(cfg.precision,),
                ylabel="relative difference of the tensor (ratio)",
                xlabel="parameter tensor (cnn-bn)",
            )
        axes[1].set_title("cnn-bn, per parameter tensor", fontsize=9)
        fig.suptitle(
            f"Micro-batches of {cfg.micro_batch} vs the direct batch of {cfg.batch_size} "
            f"({cfg.precision}, final weights)"
        )
        return fig

    def table(self, results: Results, tasks: dict[tuple[str, str], TaskSpec]) -> Table:
        rows = []
        for (model, optimizer), spec in tasks.items():
            v = scalars(results, spec)
            row = {
                "model": model,
                "optimizer": optimizer,
                "lr": OPTIMIZER_SETTINGS[optimizer]["lr"],
                "outcome": outcome(results, spec),
                "steps": v.get("steps"),
            }
            for stat in ("max", "mean", "rel", "cos"):
                row[f"params {stat}"] = v.get(f"MD_{stat}")
            row["buffers rel"] = v.get("buf_MD_rel")
            row["buffers max"] = v.get("buf_MD_max")
            row["||W_direct - theta0||"] = v.get("update_norm")
            for label in ("direct", "micro"):
                for metric in ("test_acc", "test_loss"):
                    row[f"{label} {metric}"] = v.get(f"{label}_{metric}")
            rows.append(row)
        return Table(
            "accumulation",
            rows,
            "Micro-batch run vs direct run after the same steps: max, mean and relative "
            "(||W_micro - W_direct|| / ||W_direct - theta0||) difference of the "
            "parameters, cos of their updates; BatchNorm running buffers apart.",
        )

    def analyze(self, cfg: AccumulationConfig, results: Results) -> StudyOutput:
        tasks = self.tasks(cfg)
        labels = [LABELS[o] for o in cfg.optimizers]
        rel = {m: [value(results, tasks[(m, o)], "MD_rel") for o in cfg.optimizers] for m in cfg.models}
        claims = [
            rule_a1(labels, rel["cnn"]) if "cnn" in rel else rule_a1([], []),
            rule_a2(labels, rel["cnn-bn"]) if "cnn-bn" in rel else rule_a2([], []),
        ]
        return StudyOutput(
            figures=[
                FigureSpec(
                    "relative_difference",
                    self.figure(cfg, results, tasks),
                    "Look at the left panel: without BatchNorm the bars should sit at the rounding level, below "
                    "the A1 line (accumulation is exact); with BatchNorm above the A2 line (each micro-batch is "
                    "normalised by its own statistics). "
                    "Left: relative difference of the final weights, micro-batches vs direct batch, per "
                    "optimizer, without and with BatchNorm (log scale; dashed: machine epsilon, dotted: "
                    f"the A1/A2 thresholds; exactly 0 drawn at {LOG_FLOOR:g}). Right: with BatchNorm, per "
                    "parameter tensor.",
                )
            ],
            tables=[self.table(results, tasks)],
            claims=claims,
        )
