"""Branched training: from one checkpoint of a reference run, copies trained at a larger batch for a fixed number
of examples (the measurement of the critical batch size, after Merrill, Arora, Groeneveld & Hajishirzi,
"Critical Batch Size Revisited", arXiv 2505.23971, 2025).

One task is one batch size: its lr grid x data-order seeds train as one stacked group on the engine's step
path, every copy starting from the checkpoint's weights (and BatchNorm statistics). The optimizer's state starts
afresh at the branch point (checkpoints hold weights only): exact for plain SGD, a shared transient of every
branch, the k = 1 one included, for momentum and Adam.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from . import TaskContext, TaskError, TaskOutput, register_task

BRANCH_DATA_SEED = 1000  # a branch's data order: data_order(BRANCH_DATA_SEED + seed, epoch), apart from the reference's


class BranchArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    run: dict = Field(description="RunSpec fields of the branches (the reference run's, at the branch batch size).")
    lrs: list[float] = Field(min_length=1, description="The lr grid of this batch size (each trained for every seed).")
    seeds: list[int] = Field(min_length=1, description="Data-order seeds; seed s of every batch size sees one order.")
    examples: int = Field(ge=1, description="The window: training examples each branch sees (its longest window).")
    evals: int = Field(20, ge=1, description="Evaluations of the whole training loss, equally spaced in examples.")


def branch_specs(args: BranchArgs, n_train: int) -> list:
    """The branches' RunSpecs, lr-major then seed (the order of every output row), with epochs enough for the
    window of full batches (the lr table covers them)."""
    from ..engine import RunSpec

    base = RunSpec(**args.run)
    per_epoch = max(1, n_train // base.batch_size) * base.batch_size
    epochs = max(base.epochs, math.ceil(args.examples / per_epoch) + 1)
    return [
        base.model_copy(update={"lr": lr, "seed": s, "data_seed": BRANCH_DATA_SEED + s, "epochs": epochs})
        for lr in args.lrs
        for s in args.seeds
    ]


def eval_steps(examples: int, batch_size: int, evals: int) -> list[int]:
    """The steps after which the loss is evaluated: `evals` points equally spaced in examples over a window of
    ceil(examples / batch_size) steps (a batch size that does not divide the window sees up to one batch more)."""
    steps = math.ceil(examples / batch_size)
    return sorted({max(1, round(steps * j / evals)) for j in range(1, evals + 1)})


@register_task("branch", BranchArgs)
def branch(args: BranchArgs, ctx: TaskContext) -> TaskOutput:
    """Train every (lr, seed) branch from the start checkpoint for `examples` examples at the run's batch size;
    the exact training and test loss of each at `evals` points of the window, and at the branch point."""
    from ..engine.data import load_for
    from ..engine.train import GroupTrainer

    if ctx.start is None:
        raise ValueError("a branch task starts from a checkpoint")
    from ..engine import RunSpec

    data = load_for(RunSpec(**args.run), ctx.device, ctx.data_dir)
    bs = RunSpec(**args.run).batch_size
    if bs > data.n_train:
        raise TaskError("batch", f"batch {bs} exceeds the {data.n_train} training examples")
    specs = branch_specs(args, data.n_train)
    at = eval_steps(args.examples, bs, args.evals)
    stacked = {k: np.repeat(v[None], len(specs), 0) for k, v in ctx.start.items()}
    trainer = GroupTrainer(specs, data, ctx.device, start=stacked)
    per_epoch = data.n_train // bs  # full batches only: every step of every branch has kB0 examples

    def measure() -> dict[str, np.ndarray]:
        """The whole splits' loss and accuracy of every branch; +inf loss (NaN accuracy) once it has diverged: an
        outcome, worse than any finite loss."""
        values, alive = trainer.measure(), trainer.state.alive.cpu().numpy()
        return {
            k: np.where(alive, values[k].double().cpu().numpy(), np.inf if "loss" in k else np.nan)
            for k in ("train_loss", "test_loss", "train_acc", "test_acc")
        }

    rows = [measure()]
    epoch, done = 0, 0
    trainer.state.start_epoch(epoch)
    for step in range(1, at[-1] + 1):
        if done == per_epoch:
            epoch, done = epoch + 1, 0
            trainer.state.start_epoch(epoch)
        trainer.step(bs)
        done += 1
        if step in at:
            trainer.freeze_nonfinite()
            rows.append(measure())
    alive = trainer.state.alive.cpu().numpy()
    arrays = {k: np.stack([r[k] for r in rows]) for k in rows[0]}  # [evals + 1, runs]
    return TaskOutput(
        scalars={"batch_size": float(bs), "diverged": float((~alive).sum())},
        arrays=arrays
        | {
            "examples": np.array([0, *at], dtype=float) * bs,
            "lrs": np.repeat(np.asarray(args.lrs, dtype=float), len(args.seeds)),
            "seeds": np.tile(np.asarray(args.seeds, dtype=float), len(args.lrs)),
            "diverged": (~alive).astype(float),
        },
    )
