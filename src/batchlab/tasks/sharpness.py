"""Curvature at a checkpoint: the task kinds the sharpness and edge-of-stability studies build on.

- `hessian-spectrum`: the top Hessian eigenvalues (Lanczos or power iteration, with convergence) and Hutchinson's
  trace with its standard error, on a seeded abridged subset of the training set (Cohen et al. 2021);
- `batch-sharpness`: E_B[g_Bᵀ H_B g_B / ‖g_B‖²] per batch size (Andreyev & Beneventano 2024);
- `epsilon-sharpness`: Keskar et al. 2017's ε-sharpness per ε;
- `loss-interpolation`: the loss along the segment from the run's initialisation to the checkpoint;
- `loss-between`: the loss along the line through two runs' checkpoints (Keskar et al. 2017, fig. 3);
- `loss-plane`: the loss on a filter-normalised random plane through the checkpoint (Li et al. 2018).

Each is the run's mean loss (its own `loss_for`, or the task's) with BatchNorm on its running statistics, through
`engine.curvature.MeanLoss` and the estimators of `analysis.spectrum`, `analysis.sharpness`, `analysis.landscape`
(the ones `batchlab.sharpness` runs on a user's model). An eigenvalue that did not converge is stored as NaN (NULL),
beside its last estimate, iterations, last change and residual.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from ..analysis.landscape import filter_normalised, plane, segment
from ..analysis.sharpness import epsilon_sharpness as keskar
from ..analysis.spectrum import hutchinson, mean_and_se, top_eigen
from ..engine.curvature import MeanLoss, batch_sharpness_ratios, losses_at
from ..engine.data import loss_for
from . import TaskContext, TaskOutput, register_task

STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def rescaled(run, params: dict[str, torch.Tensor], c: float) -> dict[str, torch.Tensor]:
    """A ReLU MLP's weights with the first layer (weight and bias) times c and the second layer's weight over c: the
    same function, since relu(c z) = c relu(z) for c > 0, but another Hessian (Dinh et al. 2017, "Sharp minima can
    generalize for deep nets", §5)."""
    if c == 1.0:
        return params
    if run.model != "mlp" or run.activation != "relu" or len(run.widths) < 1:
        raise ValueError("rescale applies to the built-in ReLU MLP (model mlp, activation relu)")
    out = dict(params)
    out["net.0.weight"], out["net.0.bias"] = params["net.0.weight"] * c, params["net.0.bias"] * c
    out["net.2.weight"] = params["net.2.weight"] / c
    return out


def _setup(ctx: TaskContext, examples: int | None, chunk: int | None = None, rescale: float = 1.0):
    """The checkpoint's operator over its seeded abridged subset (all training examples when `examples` is None),
    at its weights rescaled by `rescale` (see `rescaled`)."""
    run, data, base, params, buffers = ctx.start_model()
    params = rescaled(run, params, rescale)
    n = data.n_train if examples is None else min(examples, data.n_train)
    gen = torch.Generator().manual_seed(ctx.spec.seed)
    idx = torch.randperm(data.n_train, generator=gen)[:n].sort().values.to(ctx.device)
    op = MeanLoss(
        base, {k: v[None] for k, v in params.items()}, {k: b[None] for k, b in (buffers or {}).items()},
        data.x_train[idx], data.y_train[idx], task=data.task, loss_fn=loss_for(run), example_chunk=chunk,
    )  # fmt: skip
    return run, data, op, gen


class SpectrumArgs(BaseModel):
    model_config = STRICT

    examples: int = Field(2048, ge=2, description="Size of the abridged subset of the training set (seeded).")
    top_k: int = Field(3, ge=1, description="How many of the largest eigenvalues.")
    method: Literal["lanczos", "power"] = Field("lanczos", description="lanczos | power (top_k = 1).")
    max_iter: int = Field(100, ge=1, description="Hessian-vector products at most.")
    tol: float = Field(1e-3, gt=0, lt=1, description="Relative residual at which an eigenpair has converged.")
    trace_samples: int = Field(32, ge=0, description="Rademacher vectors for Hutchinson's trace (0: none).")
    example_chunk: int = Field(1024, ge=1, description="Examples per forward pass (memory).")
    keep_vectors: bool = Field(False, description="Store the top eigenvectors (k x P floats) as an array.")
    rescale: float = Field(
        1.0, gt=0, description="Measure the ReLU MLP with layer 1 x c and layer 2 / c: the same function (Dinh 2017)."
    )


@register_task("hessian-spectrum", SpectrumArgs)
def hessian_spectrum(args: SpectrumArgs, ctx: TaskContext) -> TaskOutput:
    """The top Hessian eigenvalues and the trace at a checkpoint, on an abridged subset of the training set.

    Scalars: lambda_max (NULL unless converged), lambda_max_estimate, iterations, converged, last_change, residual,
    eigenvalue_i for i = 1..k (NULL where not converged), trace and trace_se, loss, examples. Arrays: eigenvalues,
    estimates, residuals, history (the top estimate per iteration), trace_samples (zᵀHz), vectors if kept."""
    if args.method == "power" and args.top_k != 1:
        raise ValueError("method 'power' gives the top eigenvalue only: top_k must be 1")
    _, _, op, gen = _setup(ctx, args.examples, args.example_chunk, args.rescale)
    v0 = torch.randn(1, op.size, generator=gen, dtype=torch.float64).to(op.device, op.dtype)
    eigen = top_eigen(op.matvec, v0, method=args.method, k=args.top_k, max_iter=args.max_iter, tol=args.tol,
                      generator=gen)  # fmt: skip
    settled = eigen.settled()[0]
    scalars = {
        "lambda_max": float(settled[0]),
        "lambda_max_estimate": float(eigen.values[0, 0]),
        "iterations": float(eigen.iterations[0]),
        "converged": float(eigen.converged[0]),
        "last_change": float(eigen.last_change[0]),
        "residual": float(eigen.residual[0, 0]),
        **{f"eigenvalue_{i + 1}": float(v) for i, v in enumerate(settled)},
        "loss": float(op.losses()[0]),
        "examples": float(op.examples),
    }
    arrays = {
        "eigenvalues": settled.cpu().numpy(),
        "estimates": eigen.values[0].cpu().numpy(),
        "residuals": eigen.residual[0].cpu().numpy(),
        "history": eigen.history[:, 0].cpu().numpy(),
    }
    if args.trace_samples:
        tr = hutchinson(op.matvec, 1, op.size, samples=args.trace_samples, generator=gen, dtype=op.dtype,
                        device=op.device)  # fmt: skip
        scalars |= {"trace": float(tr.estimate[0]), "trace_se": float(tr.standard_error[0])}
        arrays["trace_samples"] = tr.samples[0].cpu().numpy()
    if args.keep_vectors:
        arrays["vectors"] = eigen.vectors[0].float().cpu().numpy()
    return TaskOutput(scalars=scalars, arrays=arrays)


class BatchSharpnessArgs(BaseModel):
    model_config = STRICT

    batch_sizes: tuple[int, ...] = Field((64,), min_length=1, description="Batch sizes B.")
    draws: int = Field(64, ge=2, description="Mini-batches per batch size (drawn by the seed).")


@register_task("batch-sharpness", BatchSharpnessArgs)
def batch_sharpness(args: BatchSharpnessArgs, ctx: TaskContext) -> TaskOutput:
    """E_B[g_Bᵀ H_B g_B / ‖g_B‖²] at a checkpoint for each batch size, B drawn from the whole training set: scalars
    batch_sharpness_<B> and batch_sharpness_se_<B>; arrays ratios_<B> and grad_sq_<B> (one per draw)."""
    run, data, base, params, buffers = ctx.start_model()
    if any(b < 1 or b > data.n_train for b in args.batch_sizes):
        raise ValueError(f"batch sizes must be between 1 and the {data.n_train} training examples")
    gen = torch.Generator().manual_seed(ctx.spec.seed)
    stacked = {k: v[None] for k, v in params.items()}
    fixed = {k: b[None] for k, b in (buffers or {}).items()}
    scalars, arrays = {}, {}
    for b in args.batch_sizes:
        ratios, sq = batch_sharpness_ratios(base, stacked, fixed, data.x_train, data.y_train, b, args.draws, gen,
                                            task=data.task, loss_fn=loss_for(run))  # fmt: skip
        mean, se = mean_and_se(ratios[0])
        scalars |= {f"batch_sharpness_{b}": float(mean), f"batch_sharpness_se_{b}": float(se)}
        arrays |= {f"ratios_{b}": ratios[0].cpu().numpy(), f"grad_sq_{b}": sq[0].cpu().numpy()}
    return TaskOutput(scalars=scalars, arrays=arrays)


class EpsilonArgs(BaseModel):
    model_config = STRICT

    epsilons: tuple[float, ...] = Field((1e-3, 5e-4), min_length=1, description="ε values (Keskar et al.'s).")
    max_iter: int = Field(10, ge=1, description="L-BFGS-B iterations of the inner maximisation.")
    examples: int | None = Field(None, ge=2, description="Training examples (seeded subset; None: all).")


@register_task("epsilon-sharpness", EpsilonArgs)
def epsilon_sharpness_task(args: EpsilonArgs, ctx: TaskContext) -> TaskOutput:
    """Keskar et al.'s ε-sharpness (percent) at a checkpoint for each ε: scalars epsilon_sharpness_<ε>,
    max_loss_<ε>, iterations_<ε>, and loss."""
    _, _, op, _ = _setup(ctx, args.examples)

    def value_and_grad(theta: np.ndarray):
        loss, g = op.value_and_grad(op.unflatten(torch.as_tensor(theta, device=op.device).to(op.dtype)[None]))
        return float(loss[0]), op.flatten(g)[0].double().cpu().numpy()

    x0 = op.flat_params()[0].double().cpu().numpy()
    scalars = {"loss": float(op.losses()[0])}
    for eps in args.epsilons:
        e = keskar(value_and_grad, x0, eps, max_iter=args.max_iter, seed=ctx.spec.seed)
        scalars |= {f"epsilon_sharpness_{eps:g}": e.value, f"max_loss_{eps:g}": e.max_loss,
                    f"iterations_{eps:g}": float(e.iterations)}  # fmt: skip
    return TaskOutput(scalars=scalars)


class PlaneArgs(BaseModel):
    model_config = STRICT

    extent: float = Field(1.0, gt=0, description="The grid spans [-extent, extent] along both directions.")
    points: int = Field(21, ge=2, description="Grid points per axis.")
    examples: int = Field(2048, ge=2, description="Size of the abridged subset of the training set (seeded).")


@register_task("loss-plane", PlaneArgs)
def loss_plane(args: PlaneArgs, ctx: TaskContext) -> TaskOutput:
    """The loss on a plane through the checkpoint spanned by two filter-normalised random directions (Li et al.
    2018; drawn from the task's seed): arrays grid [points] and losses [points, points]; scalars loss (the centre)
    and the plane's minimum and maximum."""
    _, _, op, gen = _setup(ctx, args.examples)
    theta = {k: v[0] for k, v in op.params.items()}
    d1, d2 = filter_normalised(theta, gen), filter_normalised(theta, gen)
    grid = torch.linspace(-args.extent, args.extent, args.points, dtype=torch.float64)
    coords = torch.cartesian_prod(grid, grid).to(op.device, op.dtype)
    losses = _points(op, plane(theta, d1, d2), coords).reshape(args.points, args.points)
    return TaskOutput(
        scalars={"loss": float(op.losses()[0]), "plane_min": float(losses.min()), "plane_max": float(losses.max())},
        arrays={"grid": grid.numpy(), "losses": losses},
    )


class InterpolationArgs(BaseModel):
    model_config = STRICT

    alphas: tuple[float, ...] = Field(
        tuple(round(-0.5 + 0.05 * i, 10) for i in range(41)),
        min_length=2,
        description="Positions: 0 the initialisation, 1 the checkpoint.",
    )
    examples: int = Field(2048, ge=2, description="Size of the abridged subset of the training set (seeded).")


@register_task("loss-interpolation", InterpolationArgs)
def loss_interpolation(args: InterpolationArgs, ctx: TaskContext) -> TaskOutput:
    """The loss along the line from the run's initialisation (α = 0, rebuilt from its seed) to the checkpoint
    (α = 1) (Goodfellow et al. 2015): arrays alphas and losses; scalars loss_init and loss_end."""
    from ..engine.state import GroupState

    run, data, op, _ = _setup(ctx, args.examples)
    init = GroupState([run], data, ctx.device).init
    a = {k: init[k][0].to(op.dtype) for k in op.names}
    b = {k: v[0] for k, v in op.params.items()}
    alphas = torch.tensor(args.alphas, dtype=torch.float64)
    losses = _points(op, segment(a, b), alphas.to(op.device, op.dtype))
    ends = _points(op, segment(a, b), torch.tensor([0.0, 1.0], device=op.device, dtype=op.dtype))
    return TaskOutput(
        scalars={"loss_init": float(ends[0]), "loss_end": float(ends[1])},
        arrays={"alphas": alphas.numpy(), "losses": losses},
    )


class BetweenArgs(BaseModel):
    model_config = STRICT

    alphas: tuple[float, ...] = Field(
        tuple(round(-1.0 + 0.05 * i, 10) for i in range(61)),
        min_length=2,
        description="Positions: 0 the start checkpoint, 1 the other (Keskar et al. plot -1 to 2).",
    )
    examples: int = Field(2048, ge=2, description="Size of the abridged subset of the training set (seeded).")
    test_examples: int = Field(0, ge=0, description="Test examples the loss is also measured on (0: none).")


@register_task("loss-between", BetweenArgs)
def loss_between(args: BetweenArgs, ctx: TaskContext) -> TaskOutput:
    """The loss along the line through two runs' weights, (1 − α) θ_start + α θ_other, the other checkpoint being
    the task's `others[0]` (Keskar et al. 2017, fig. 3: a small-batch and a large-batch solution; Goodfellow et al.
    2015): arrays alphas, losses (the abridged training subset) and, with test_examples, test_losses; scalars
    loss_start, loss_other and distance ‖θ_other − θ_start‖. Buffers (BatchNorm's statistics) are the start's."""
    if len(ctx.spec.others) != 1:
        raise ValueError(f"loss-between reads exactly one other checkpoint (got {len(ctx.spec.others)})")
    _, data, op, _ = _setup(ctx, args.examples)
    a = {k: v[0] for k, v in op.params.items()}
    other, _ = ctx.start_params(0)
    if {k: tuple(v.shape) for k, v in other.items()} != {k: tuple(v.shape) for k, v in a.items()}:
        raise ValueError("loss-between: the two checkpoints are not of the same architecture")
    b = {k: other[k].to(op.dtype) for k in a}
    alphas = torch.tensor(args.alphas, dtype=torch.float64)
    line = segment(a, b)
    ends = _points(op, line, torch.tensor([0.0, 1.0], device=op.device, dtype=op.dtype))
    arrays = {"alphas": alphas.numpy(), "losses": _points(op, line, alphas.to(op.device, op.dtype))}
    if args.test_examples:
        m = min(args.test_examples, data.x_test.shape[0])
        fixed = {k: v[0] for k, v in op.buffers.items()}
        arrays["test_losses"] = losses_at(op.base, fixed, data.x_test[:m], data.y_test[:m], line,
                                          alphas.to(op.device, op.dtype), task=op.task,
                                          loss_fn=op.loss_fn).cpu().numpy()  # fmt: skip
    distance = torch.sqrt(sum(((b[k].double() - a[k].double()) ** 2).sum() for k in a))
    return TaskOutput(
        scalars={"loss_start": float(ends[0]), "loss_other": float(ends[1]), "distance": float(distance)},
        arrays=arrays,
    )


def _points(op: MeanLoss, at, coords: torch.Tensor) -> np.ndarray:
    """The loss at the weights at(t) for the points t, on the operator's examples and with its buffers."""
    fixed = {k: b[0] for k, b in op.buffers.items()}
    return losses_at(op.base, fixed, op.x, op.y, at, coords, task=op.task, loss_fn=op.loss_fn).cpu().numpy()
