"""Tasks of the gradient-descent-variants studies that need no network."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..bounds import MAX_REAL, Real, Steps
from . import TaskContext, TaskOutput, register_task


class QuadraticArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    lrs: tuple[Real, ...] = Field(min_length=1, description="Learning rates eta (each > 0).")
    steps: Steps = Field(100, ge=1, description="Gradient steps per learning rate.")
    w0: Real = Field(0.0, ge=-MAX_REAL, description="Starting point.")
    w_star: Real = Field(2.0, ge=-MAX_REAL, description="The minimum of f(w) = L/2 (w - w*)^2.")
    curvature: Real = Field(2.0, gt=0, description="L, the second derivative: 2 is (w - w*)^2.")


@register_task("quadratic-gd", QuadraticArgs)
def quadratic_gd(args: QuadraticArgs, ctx: TaskContext) -> TaskOutput:
    """Gradient descent on f(w) = L/2 (w - w*)^2, f'(w) = L (w - w*): the error w_t - w* of every step, per lr
    (a diverging trajectory overflows to inf, which the store keeps as such in the array)."""
    lrs = np.asarray(args.lrs, dtype=float)[:, None]
    errors = np.empty((len(args.lrs), args.steps + 1))
    w = np.full((len(args.lrs), 1), args.w0, dtype=float)
    errors[:, 0] = (w - args.w_star)[:, 0]
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(1, args.steps + 1):
            w = w - lrs * args.curvature * (w - args.w_star)
            errors[:, t] = (w - args.w_star)[:, 0]
    return TaskOutput(arrays={"errors": errors, "lrs": lrs[:, 0]})


class StepCostArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    run: dict = Field(description="The RunSpec (its fields) whose training step is timed.")
    steps: Steps = Field(20, ge=1, description="Steps timed (after a warm-up of up to 10).")


@register_task("step-cost", StepCostArgs)
def step_cost(args: StepCostArgs, ctx: TaskContext) -> TaskOutput:
    """Seconds per training step of one run alone on this device, and the peak memory of its steps: measured
    by the CUDA allocator on a GPU; on a CPU (where PyTorch keeps no peak) estimated from the tensors a
    step must hold: weights, gradients and optimizer state, and the batch's activations for backward."""
    import torch

    from ..engine import RunSpec
    from ..engine.data import load_for
    from ..timing import engine_steps_time, peak_memory

    spec = RunSpec(**args.run)
    data = load_for(spec, ctx.device, ctx.data_dir)
    per_epoch = -(-data.n_train // spec.batch_size)
    spec = spec.model_copy(update={"epochs": max(spec.epochs, -(-(args.steps + 20) // per_epoch))})
    seconds: list[float] = []
    peak = peak_memory(lambda: seconds.append(engine_steps_time([spec], ctx.device, args.steps)), ctx.device)
    scalars = {"seconds_per_step": seconds[0], "memory_measured": float(peak is not None)}
    if peak is None:
        widths = (data.input_dim, *spec.widths, data.num_classes or 1)
        n_params = sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
        state = 2 if spec.optimizer in ("adam", "adamw", "lamb") else int(spec.momentum > 0 or spec.optimizer == "lars")
        activations = spec.batch_size * sum(widths) * 2  # pre- and post-activation of every layer
        bytes_per = torch.finfo(torch.float64 if spec.precision == "float64" else torch.float32).bits // 8
        peak = (n_params * (2 + state) + activations) * bytes_per
    scalars["peak_memory_bytes"] = float(peak)
    return TaskOutput(scalars=scalars)
