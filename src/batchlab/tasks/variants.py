"""Tasks of the gradient-descent-variants studies that need no network."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from . import TaskContext, TaskOutput, register_task


class QuadraticArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    lrs: tuple[float, ...] = Field(min_length=1, description="Learning rates eta (each > 0).")
    steps: int = Field(100, ge=1, description="Gradient steps per learning rate.")
    w0: float = Field(0.0, description="Starting point.")
    w_star: float = Field(2.0, description="The minimum of L(w) = (w - w*)^2.")


@register_task("quadratic-gd", QuadraticArgs)
def quadratic_gd(args: QuadraticArgs, ctx: TaskContext) -> TaskOutput:
    """Gradient descent on L(w) = (w - w*)^2, dL/dw = 2 (w - w*): the error w_t - w* of every step, per lr
    (a diverging trajectory overflows to inf, which the store keeps as such in the array)."""
    lrs = np.asarray(args.lrs, dtype=float)[:, None]
    errors = np.empty((len(args.lrs), args.steps + 1))
    w = np.full((len(args.lrs), 1), args.w0, dtype=float)
    errors[:, 0] = (w - args.w_star)[:, 0]
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(1, args.steps + 1):
            w = w - lrs * 2 * (w - args.w_star)
            errors[:, t] = (w - args.w_star)[:, 0]
    return TaskOutput(arrays={"errors": errors, "lrs": lrs[:, 0]})
