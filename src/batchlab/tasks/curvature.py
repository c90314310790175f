"""The `hessian-noise-scale` task: McCandlish et al. 2018's B_noise = tr(HΣ) / (GᵀHG) at a checkpoint, beside
B_simple = tr(Σ) / |G|² of the same examples.

From n per-example gradients g_i and their Hessian-vector products v_i = H g_i (H the Hessian of the mean loss
over `hessian_examples`), the matrices Q_ij = g_iᵀ v_j and K_ij = g_iᵀ g_j give both noise scales by the same
estimator (`analysis.noise.hessian_noise_estimates`: with H = I, Q is K), and their bootstrap replicates by the
same resampled counts.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from ..analysis.noise import (
    bootstrap_hessian_noise,
    hessian_noise_estimates,
    percentile_interval,
    ratio_replicates,
)
from ..bounds import Count, Examples
from ..engine.curvature import iter_hessian_vector_products
from ..engine.data import loss_for
from ..engine.step import per_example_grads
from . import TaskContext, TaskOutput, register_task


class HessianNoiseArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    examples: Examples = Field(256, ge=2, description="n: examples whose gradients g_i are taken (drawn by the seed).")
    hessian_examples: Examples | None = Field(
        None,
        ge=1,
        description="Examples of H, the first of the same seeded draw (None: the same n examples). Cost: n "
        "Hessian-vector products over these.",
    )
    bootstrap: Count = Field(200, ge=10, description="Bootstrap resamples of the examples (for both intervals).")
    chunk_size: Count = Field(32, ge=1, description="Vectors per vmapped Hessian-vector-product chunk (memory).")


@register_task("hessian-noise-scale", HessianNoiseArgs)
def hessian_noise_scale(args: HessianNoiseArgs, ctx: TaskContext) -> TaskOutput:
    """B_noise = tr(HΣ)/(GᵀHG) and B_simple = tr(Σ)/|G|² at a checkpoint, with 95 % bootstrap intervals.

    Unbiased for the sample's H (ddof 1; the n examples are drawn without replacement from the n_train of
    the training set, so GᵀHG and |G|² carry the finite population correction 1 - n / n_train, as the
    `noise-scale` task's |G|²): tr(HΣ) = (sum_i Q_ii - n gbar^T H gbar) / (n - 1) and GᵀHG = gbar^T H gbar -
    (1 - n / n_train) tr(HΣ) / n, with Q_ij = g_i^T H g_j. BatchNorm runs on its running statistics; the loss
    is the run's own (`loss_for`) or the task's.
    """
    run, data, base, params, buffers = ctx.start_model()
    loss_fn = loss_for(run)
    gen = torch.Generator().manual_seed(ctx.spec.seed)
    n = min(args.examples, data.n_train)
    n_h = min(args.hessian_examples or n, data.n_train)
    perm = torch.randperm(data.n_train, generator=gen).to(ctx.device)
    x, y = data.x_train[perm[:n]], data.y_train[perm[:n]]
    x_h, y_h = data.x_train[perm[:n_h]], data.y_train[perm[:n_h]]
    grads, losses = per_example_grads(
        base, params, x, y, task=data.task, buffers=buffers, chunk_size=args.chunk_size, loss_fn=loss_fn
    )
    flat = {k: g.flatten(1) for k, g in grads.items()}
    gram = sum((g @ g.T).double() for g in flat.values()).cpu()
    q = torch.zeros(n, n, dtype=torch.float64)
    for start, hv in iter_hessian_vector_products(
        base, params, buffers, x_h, y_h, grads, task=data.task, loss_fn=loss_fn, chunk_size=args.chunk_size
    ):
        c = next(iter(hv.values())).shape[0]
        q[:, start : start + c] = sum((flat[k] @ t.flatten(1).T).double() for k, t in hv.items()).cpu()
    fpc = 1 - n / data.n_train
    curv, plain = hessian_noise_estimates(q, fpc=fpc), hessian_noise_estimates(gram, fpc=fpc)
    # the same seed: the same resampled counts for both, so their replicates are paired
    curv_boot = bootstrap_hessian_noise(q, fpc=fpc, resamples=args.bootstrap, seed=ctx.spec.seed)
    plain_boot = bootstrap_hessian_noise(gram, fpc=fpc, resamples=args.bootstrap, seed=ctx.spec.seed)
    b_noise_reps, b_simple_reps = ratio_replicates(*curv_boot), ratio_replicates(*plain_boot)
    noise_lo, noise_hi = percentile_interval(b_noise_reps, 0.95)
    simple_lo, simple_hi = percentile_interval(b_simple_reps, 0.95)
    return TaskOutput(
        scalars={
            "b_noise": curv.b_noise,
            "b_noise_lo": noise_lo,
            "b_noise_hi": noise_hi,
            "trace_h_sigma": curv.trace_h_sigma,
            "g_h_g": curv.g_h_g,
            "b_simple": plain.b_noise,
            "b_simple_lo": simple_lo,
            "b_simple_hi": simple_hi,
            "trace_sigma": plain.trace_h_sigma,
            "grad_sq_norm": plain.g_h_g,
            "mean_loss": float(losses.double().mean()),
            "examples": float(n),
            "hessian_examples": float(n_h),
        },
        arrays={
            "bootstrap_b_noise": b_noise_reps,
            "bootstrap_b_simple": b_simple_reps,
            "bootstrap_trace_h_sigma": curv_boot[1],
            "bootstrap_g_h_g": curv_boot[0],
            "bootstrap_trace_sigma": plain_boot[1],
            "bootstrap_grad_sq_norm": plain_boot[0],
        },
    )
