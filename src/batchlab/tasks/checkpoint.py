"""Tasks at a training run's checkpoint."""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from ..bounds import Count, Examples
from ..engine.data import loss_for
from ..engine.step import per_example_grads
from . import TaskContext, TaskOutput, register_task


class GradientNormsArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    examples: Examples = Field(
        256, ge=1, description="How many training examples (drawn without replacement by the seed)."
    )
    chunk_size: Count = Field(64, ge=1, description="Examples per vectorised chunk (bounds memory).")


@register_task("gradient-norms", GradientNormsArgs)
def gradient_norms(args: GradientNormsArgs, ctx: TaskContext) -> TaskOutput:
    """Per-example gradient norms at a checkpoint: ||g_i||^2 for each example and ||mean_i g_i||^2.

    The two estimate E||g||^2 = ||G||^2 + tr(Sigma) and ||G||^2 (+ tr(Sigma)/n), the ingredients of the
    gradient noise scale B_simple = tr(Sigma) / ||G||^2 (McCandlish et al. 2018).
    """
    run, data, base, params, buffers = ctx.start_model()
    g = torch.Generator().manual_seed(ctx.spec.seed)
    idx = torch.randperm(data.n_train, generator=g)[: min(args.examples, data.n_train)].to(ctx.device)
    grads, losses = per_example_grads(
        base,
        params,
        data.x_train[idx],
        data.y_train[idx],
        task=data.task,
        buffers=buffers,
        chunk_size=args.chunk_size,
        loss_fn=loss_for(run),
    )
    sq = sum(v.flatten(1).double().pow(2).sum(1) for v in grads.values())
    mean_sq = sum(v.double().mean(0).pow(2).sum() for v in grads.values())
    return TaskOutput(
        scalars={
            "mean_sq_norm": float(sq.mean()),
            "sq_norm_of_mean": float(mean_sq),
            "mean_loss": float(losses.double().mean()),
            "examples": float(idx.numel()),
        },
        arrays={"sq_norms": sq.cpu().numpy(), "examples": idx.cpu().numpy().astype(np.int64)},
    )


class RerunAloneArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    run: dict = Field(description="The RunSpec (its fields) to train again, alone in a group of one.")


@register_task("rerun-alone", RerunAloneArgs)
def rerun_alone(args: RerunAloneArgs, ctx: TaskContext) -> TaskOutput:
    """Train a run again alone, to measure how much of its result is rounding noise of its group.

    A run's result depends on its group only through floating-point rounding (which kernels run for
    a group of that size): exactly nothing in float64. In float32 a chaotic run amplifies that
    rounding, so the difference between the run alone and in its group measures how much of the
    seed-to-seed spread is rounding noise rather than the seed.
    """
    from ..engine import RunSpec, train_group

    (result,) = train_group([RunSpec(**args.run)], device=ctx.device, data_dir=ctx.data_dir)
    final = result.metrics[-1] if result.metrics else {}
    return TaskOutput(scalars={k: float(v) for k, v in final.items() if v is not None and k not in ("epoch", "step")})
