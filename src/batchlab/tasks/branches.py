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
import torch
from pydantic import BaseModel, ConfigDict, Field

from ..bounds import Count, Examples, Real, Seed
from . import TaskContext, TaskError, TaskOutput, register_task

BRANCH_DATA_SEED = 1000  # a branch's data order: data_order(BRANCH_DATA_SEED + seed, epoch), apart from the reference's


class BranchArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    run: dict = Field(description="RunSpec fields of the branches (the reference run's, at the branch batch size).")
    lrs: list[Real] = Field(min_length=1, description="The lr grid of this batch size (each trained for every seed).")
    seeds: list[Seed] = Field(min_length=1, description="Data-order seeds; seed s of every batch size sees one order.")
    examples: Examples = Field(ge=1, description="The window: training examples each branch sees (its longest window).")
    evals: Count = Field(20, ge=1, description="Evaluations of the training loss, equally spaced in examples.")
    eval_examples: Examples | None = Field(
        2048, ge=1, description="Training examples (a fixed draw, the same for every branch) the loss is measured on."
    )


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
    """Train every (lr, seed) branch from the start checkpoint for `examples` examples at the run's batch size; the
    training loss of each on a fixed draw of `eval_examples` at the branch point and at `evals` points of the window
    (`train_loss` [evals + 1, runs]), and the whole splits' loss and accuracy at its end."""
    return train_branches(args, ctx, final_metrics=True)


@register_task("branch-loss", BranchArgs)
def branch_loss(args: BranchArgs, ctx: TaskContext) -> TaskOutput:
    """`branch` without the whole splits' metrics at the window's end: the draw's training loss only (lr-surge, whose
    many short windows would otherwise spend most of their time evaluating every copy on the whole splits)."""
    return train_branches(args, ctx, final_metrics=False)


def train_branches(args: BranchArgs, ctx: TaskContext, final_metrics: bool) -> TaskOutput:
    from ..engine.data import load_for
    from ..engine.train import GroupTrainer
    from ..probes.metrics import evaluate

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

    n_eval = data.n_train if args.eval_examples is None else min(args.eval_examples, data.n_train)
    subset = torch.randperm(data.n_train, generator=torch.Generator().manual_seed(0))[:n_eval].to(ctx.device)
    x_eval, y_eval = data.x_train[subset], data.y_train[subset]

    def alive() -> np.ndarray:
        return trainer.state.alive.cpu().numpy()

    @torch.no_grad()
    def train_loss() -> np.ndarray:
        """Every branch's loss on the evaluation draw; +inf once it has diverged (an outcome, the worst)."""
        trainer.path.flush()

        def fwd(xc):
            return trainer.state.stack.forward(xc, shared_input=True, bn_mode="eval")

        loss = evaluate(fwd, x_eval, y_eval, len(specs), data.task, trainer.eval_elements, trainer.state.loss_fn)
        return np.where(alive(), loss["loss"].double().cpu().numpy(), np.inf)

    rows = [train_loss()]
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
            rows.append(train_loss())
    final = trainer.measure() if final_metrics else None  # the whole splits, once, at the window's end
    ok = alive()
    arrays = {"train_loss": np.stack(rows)}  # [evals + 1, runs]
    if final is not None:
        arrays |= {
            k: np.where(ok, final[k].double().cpu().numpy(), np.inf if "loss" in k else np.nan)
            for k in ("test_loss", "test_acc", "train_acc")
        }
    return TaskOutput(
        scalars={"batch_size": float(bs), "diverged": float((~ok).sum()), "eval_examples": float(n_eval)},
        arrays=arrays
        | {
            "examples": np.array([0, *at], dtype=float) * bs,
            "lrs": np.repeat(np.asarray(args.lrs, dtype=float), len(args.seeds)),
            "seeds": np.tile(np.asarray(args.seeds, dtype=float), len(args.lrs)),
            "diverged": (~ok).astype(float),
        },
    )
