"""tradeoffs: what a batch size costs and buys, measured on the device the study runs on.

The textbook cartoon (bigger batches: fewer, slower steps, more memory, less gradient noise, and at
a fixed budget of epochs a lower accuracy) as numbers for the reference MLP, per batch size: peak
memory and time per step of one run alone (the `step-cost` task: the CUDA allocator's peak on a GPU,
an estimate from the tensors a step holds on a CPU), steps per epoch, time per epoch, examples per
second, the gradient noise E||g_B - G||^2 measured for every B (the `gradient-variance` task: mini-batches
drawn with replacement from N examples, N the largest B, at the weights after the first epoch of the
B = 64 run, G their mean gradient) beside the prediction tr(Sigma)/B from the same per-example gradients,
and the test accuracy after a fixed number of epochs (the same examples for every B) and after a fixed
number of steps. The table feeds the explorer's batch-size panel. No claim: this is a measurement.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from ...bounds import BatchSize, Count, Epochs, Real, Steps
from ...engine import RunSpec
from ...engine.spec import Checkpoint, TaskSpec
from ...outputs import Table
from ...report.figures import PALETTE, new_figure
from ...tasks.gradients import VarianceArgs
from ...tasks.variants import StepCostArgs
from ..common import FigureSpec, Results, Study, StudyConfig, StudyOutput
from .common import QUICK_SETUP


class TradeoffsConfig(StudyConfig):
    batch_sizes: tuple[Annotated[BatchSize, Field(ge=1)], ...] = Field(
        tuple(2**k for k in range(14)), min_length=2, description="Batch sizes (1 to 8192)."
    )
    lr: Real = Field(0.01, gt=0, description="SGD learning rate of every batch size.")
    epochs: Epochs = Field(5, ge=1, description="The fixed budget of epochs (the same examples for every B).")
    steps: Steps = Field(500, ge=1, description="The fixed budget of steps (accuracy after this many steps).")
    timed_steps: Steps = Field(20, ge=1, description="Steps timed per batch size by the step-cost task.")
    noise_batch: BatchSize = Field(
        64, ge=1, description="The run at whose first-epoch checkpoint the noise is measured."
    )
    noise_draws: Count = Field(200, ge=2, description="Mini-batches drawn per B to measure E||g_B - G||^2.")
    seeds: int = Field(1, ge=1, le=100, description="Seeds per batch size.")


class Tradeoffs(Study):
    name = "tradeoffs"
    accepts_user_model = "its step-cost and gradient-variance tasks are computed for the built-in MLP"
    title = "What a batch size costs and buys on this device"
    description = (
        "Per batch size, for the reference MLP on the device used: peak memory and time per step, steps and time "
        "per epoch, examples per second, gradient noise E||g_B - G||^2 measured per B (beside tr(Sigma)/B), and "
        "test accuracy after a fixed number of epochs and after a fixed number of steps."
    )
    Config = TradeoffsConfig
    # quick: 10240 examples, a 256-wide MLP, batch sizes 4 to 4096 in steps of 4x, 3 epochs, 300 steps
    profiles = {
        "quick": {**QUICK_SETUP, "batch_sizes": (4, 16, 64, 256, 1024, 4096), "epochs": 3, "steps": 300},
        "full": {},
    }

    def runs(self, cfg: TradeoffsConfig) -> dict[int, list[RunSpec]]:
        n = cfg.train_subset or 60_000
        out = {}
        for b in cfg.batch_sizes:
            per_epoch = -(-n // b)
            epochs = max(cfg.epochs, -(-cfg.steps // per_epoch))  # long enough for both budgets
            every = cfg.steps if cfg.steps < per_epoch else 0  # an evaluation at `steps` when inside epoch 1
            out[b] = cfg.seeded(batch_size=b, lr=cfg.lr, epochs=epochs, eval_every=every, probes=("metrics",))
        return out

    def cost(self, cfg: TradeoffsConfig, b: int) -> TaskSpec:
        run = cfg.run(0, batch_size=b, lr=cfg.lr, epochs=1, probes=())
        args = StepCostArgs(run=run.as_dict(), steps=cfg.timed_steps)
        return TaskSpec(kind="step-cost", args=args.model_dump(mode="json"))

    def noise(self, cfg: TradeoffsConfig) -> TaskSpec:
        run = cfg.run(0, batch_size=cfg.noise_batch, lr=cfg.lr, epochs=1, probes=("metrics",))
        examples = max(2, *cfg.batch_sizes)  # every B drawn from the same N examples, G their mean gradient
        args = VarianceArgs(problem="checkpoint", examples=examples, batch_sizes=cfg.batch_sizes, draws=cfg.noise_draws)
        return TaskSpec(kind="gradient-variance", args=args.model_dump(mode="json"), start=Checkpoint(run=run, epoch=1))

    def plan(self, cfg: TradeoffsConfig) -> list[RunSpec | TaskSpec]:
        runs = [r for rs in self.runs(cfg).values() for r in rs]
        return [*runs, *(self.cost(cfg, b) for b in cfg.batch_sizes), self.noise(cfg)]

    @staticmethod
    def at_step(results: Results, spec: RunSpec, metric: str, step: float) -> float:
        """The metric at the first evaluation at or after `step` (NaN if none)."""
        steps = results.steps(spec)
        after = np.flatnonzero(steps >= step)
        return float(results.series(spec, metric)[after[0]]) if after.size else np.nan

    def table_rows(self, cfg: TradeoffsConfig, results: Results) -> list[dict]:
        """One row per batch size: the report's table and figure, and the explorer's batch-size panel."""
        n = cfg.train_subset or 60_000
        noise_task = self.noise(cfg)
        noise = {}
        if results.has(noise_task) and not results.error(noise_task):
            measured = zip(
                results.array(noise_task, "batch_sizes"),
                results.array(noise_task, "measured_with_replacement"),
                results.array(noise_task, "sd_with_replacement") / np.sqrt(cfg.noise_draws),
                results.array(noise_task, "predicted_with_replacement"),
            )
            noise = {int(b): (m, se, p) for b, m, se, p in measured}
        rows = []
        for b, specs in self.runs(cfg).items():
            cost = self.cost(cfg, b)
            step_s = results.scalar(cost, "seconds_per_step") if results.has(cost) else np.nan
            memory = results.scalar(cost, "peak_memory_bytes") if results.has(cost) else np.nan
            measured = results.has(cost) and results.scalar(cost, "memory_measured") > 0
            per_epoch = -(-n // b)
            present = [s for s in specs if results.has(s)]
            acc_epochs = [self.at_step(results, s, "test_acc", cfg.epochs * per_epoch) for s in present]
            acc_steps = [self.at_step(results, s, "test_acc", cfg.steps) for s in present]
            rows.append(
                {
                    "B": b,
                    "steps per epoch": per_epoch,
                    "time per step (ms)": 1e3 * step_s,
                    "time per epoch (s)": step_s * per_epoch,
                    "examples per second": b / step_s if step_s > 0 else np.nan,
                    "peak memory (MB)": memory / 2**20,
                    "memory": "measured" if measured else "estimated",
                    "gradient noise E||g_B - G||^2 (measured)": noise.get(b, (np.nan,) * 3)[0],
                    "its Monte Carlo standard error": noise.get(b, (np.nan,) * 3)[1],
                    "gradient noise tr(Sigma)/B (predicted)": noise.get(b, (np.nan,) * 3)[2],
                    f"test acc after {cfg.epochs} epochs (%)": 100 * float(np.nanmean(acc_epochs)) if present else None,
                    f"test acc after {cfg.steps} steps (%)": 100 * float(np.nanmean(acc_steps)) if present else None,
                }
            )
        return rows

    def analyze(self, cfg: TradeoffsConfig, results: Results) -> StudyOutput:
        rows = self.table_rows(cfg, results)
        bs = [r["B"] for r in rows]
        fig, axes = new_figure(ncols=3, nrows=2, width=13, height=7)
        panels = [
            ("time per epoch (s)", "time per epoch (s)", True),
            ("examples per second", "examples per second", True),
            ("peak memory (MB)", f"peak memory (MB, {rows[0]['memory'] if rows else ''})", True),
            ("gradient noise E||g_B - G||^2 (measured)", "E‖g_B − G‖² (dots: measured; dotted: tr(Σ)/B)", True),
            (f"test acc after {cfg.epochs} epochs (%)", f"test accuracy after {cfg.epochs} epochs (%)", False),
            (f"test acc after {cfg.steps} steps (%)", f"test accuracy after {cfg.steps} steps (%)", False),
        ]
        titles = (
            "cost: time per epoch",
            "cost: throughput",
            "cost: memory",
            "gain: less gradient noise",
            f"accuracy at a budget of {cfg.epochs} epochs",
            f"accuracy at a budget of {cfg.steps} steps",
        )
        for ax, (key, label, log), title in zip(axes.flat, panels, titles):
            ax.plot(bs, [r[key] for r in rows], "o-", color=PALETTE[0])
            if key.startswith("gradient noise"):  # the 1/B prediction from the same per-example gradients
                ax.plot(bs, [r["gradient noise tr(Sigma)/B (predicted)"] for r in rows], ":", color="#555555")
            ax.set(
                xscale="log",
                yscale="log" if log else "linear",
                xlabel="batch size B (log)",
                ylabel=label + (", log" if log else ""),
                title=title,
            )
        fig.suptitle("What a batch size costs and what it buys, measured on this device")
        return StudyOutput(
            figures=[
                FigureSpec(
                    "tradeoffs",
                    fig,
                    "Read the top row as the price of a larger batch and the bottom row as what it buys: at a fixed "
                    "step budget a larger batch helps, at a fixed epoch budget it can hurt. "
                    "What a batch size costs (time per epoch, throughput, memory) and buys (less gradient noise: "
                    f"E‖g_B − G‖² measured over {cfg.noise_draws} mini-batches per B at one checkpoint, with tr(Σ)/B "
                    "dotted; accuracy at a fixed budget of epochs, i.e. of examples, and at a fixed budget of steps), "
                    "per batch size, on the device the study ran on.",
                )
            ],
            tables=[
                Table("tradeoffs", rows, "Measured per batch size on this device (the explorer reads this table).")
            ],
            claims=[],
        )
