"""`sharpness(model, loss_fn, data)`: the inputs checked and collected as `noise_scale` checks them, the Hessian
operator of the mean loss on a fixed subset (`engine.curvature.MeanLoss`), and each estimator of
`analysis.spectrum` / `analysis.sharpness` run on it."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ..analysis.sharpness import epsilon_sharpness
from ..analysis.spectrum import METHODS, adam_preconditioner, hutchinson, mean_and_se, preconditioned, top_eigen
from ..engine.curvature import MeanLoss, batch_sharpness_ratios
from ..noise.estimators import check_examples_independent, split_weights
from ..noise.measure import Data, check_loss_is_mean, collect_examples
from .result import BatchSharpness, Sharpness, Spectrum

WHAT = "the Hessian of the mean loss"  # for the messages of the input checks shared with noise_scale
EXAMPLE_CHUNK = 1024  # examples per forward pass of a Hessian-vector product (memory)


def sharpness(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    data: Data,
    *,
    examples: int = 2048,
    top_k: int = 3,
    method: str = "lanczos",
    max_iter: int = 100,
    tol: float = 1e-3,
    trace_samples: int = 32,
    batch_sizes: tuple[int, ...] = (),
    draws: int = 32,
    epsilon: float | None = None,
    epsilon_iter: int = 10,
    optimizer: torch.optim.Optimizer | None = None,
    first_moment_correction: bool = True,
    start: Sharpness | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    chunk: int | None = None,
) -> Sharpness:
    """The curvature of `model`'s mean loss at its current weights, on a fixed seeded subset of `examples` examples
    of `data` (Cohen et al. 2021's "abridged" training set), as `noise_scale` takes its inputs.

    - `top_k` largest Hessian eigenvalues by `method` ("lanczos"; "power" gives the largest in magnitude, top_k=1),
      each converged when its relative residual ‖Hy − θy‖/|θ| <= `tol`, within `max_iter` Hessian-vector products;
      one that did not is NaN in `top_eigenvalues` and shown as not converged (its estimate in `hessian.estimates`).
    - `trace_samples` Rademacher vectors for Hutchinson's tr(H) and its standard error (0: not measured).
    - `batch_sizes`: batch sharpness E_B[g_Bᵀ H_B g_B / ‖g_B‖²] at each, over `draws` batches of the examples.
    - `epsilon`: Keskar et al.'s ε-sharpness with that ε (`epsilon_iter` L-BFGS-B iterations); None: not measured.
    - `optimizer`: a torch Adam or AdamW that has stepped on this model: λ_max(P⁻¹H) with its preconditioner P (see
      `analysis.spectrum.adam_preconditioner`; `first_moment_correction=False` drops Cohen et al.'s (1 − β1^t)).
    - `start`: a previous result, whose top eigenvector starts the iteration (cheap when the weights moved little).

    `loss_fn(output, target)` must average over the batch. The model is not modified; it runs in its own mode on
    `device` (BatchNorm in training mode and active dropout are refused: the loss would not be a fixed mean of
    per-example terms). `chunk` bounds the examples per forward pass (memory); `seed` fixes the subset, the start
    vector, the Rademacher vectors and the batches.
    """
    _check_arguments(
        method, top_k, max_iter, tol, trace_samples, batch_sizes, draws, epsilon, epsilon_iter, examples, chunk
    )
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module (got {type(model).__name__})")
    if not callable(loss_fn):
        raise ValueError("loss_fn must be callable as loss_fn(output, target)")
    check_examples_independent(model, WHAT)
    if any(isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0 for m in model.modules()):
        raise ValueError("dropout is active (training mode): the loss is random, so its Hessian is undefined; "
                         "call model.eval()")  # fmt: skip
    x, y, notes = collect_examples(data, examples, seed)
    device = torch.device(device)
    params, frozen, buffers = split_weights(model, device)
    if not params:
        raise ValueError("the model has no parameters that require gradients")
    check_loss_is_mean(model, loss_fn, params, frozen, buffers, x, y, device, WHAT)
    for b in batch_sizes:
        if b > x.shape[0]:
            raise ValueError(f"batch size {b} is larger than the {x.shape[0]} examples")
    x, y = x.to(device), y.to(device)
    stacked = {k: v[None] for k, v in params.items()}
    others = {k: v[None] for k, v in {**frozen, **buffers}.items()}
    op = MeanLoss(model, stacked, others, x, y, loss_fn=loss_fn, eval_mode=False, example_chunk=chunk or EXAMPLE_CHUNK)
    gen = torch.Generator().manual_seed(seed)
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    v0 = _start_vector(op, start, gen)
    eigen = top_eigen(op.matvec, v0, method=method, k=top_k, max_iter=max_iter, tol=tol, generator=gen)
    hessian = Spectrum.from_eigen(eigen, method, tol, max_iter)
    seconds["eigenvalues"] = time.perf_counter() - t0
    if not hessian.converged:
        notes.append(
            f"the top {top_k} eigenvalues did not all converge within {max_iter} Hessian-vector products "
            f"(tol {tol:g}): those not converged are NaN; raise max_iter or tol"
        )
    result = dict(hessian=hessian, examples=int(x.shape[0]), loss=float(op.losses()[0]))

    if trace_samples:
        t0 = time.perf_counter()
        tr = hutchinson(op.matvec, 1, op.size, samples=trace_samples, chunk=min(8, trace_samples), generator=gen,
                        dtype=op.dtype, device=device)  # fmt: skip
        result.update(trace=float(tr.estimate[0]), trace_se=float(tr.standard_error[0]), trace_samples=trace_samples)
        seconds["trace"] = time.perf_counter() - t0
    if batch_sizes:
        t0 = time.perf_counter()
        found = []
        for b in batch_sizes:
            ratios, _ = batch_sharpness_ratios(model, stacked, others, x, y, b, draws, gen, loss_fn=loss_fn,
                                               eval_mode=False)  # fmt: skip
            mean, se = mean_and_se(ratios[0])
            found.append(BatchSharpness(b, float(mean), float(se), draws))
        result["batch_sharpness"] = tuple(found)
        seconds["batch_sharpness"] = time.perf_counter() - t0
    if epsilon is not None:
        t0 = time.perf_counter()
        result["epsilon"] = _epsilon_sharpness(op, epsilon, epsilon_iter, seed)
        seconds["epsilon_sharpness"] = time.perf_counter() - t0
    if optimizer is not None:
        t0 = time.perf_counter()
        diagonal = op.flatten(
            {k: v[None] for k, v in _adam_diagonal(model, optimizer, first_moment_correction).items()}
        )
        matvec = preconditioned(op.matvec, diagonal.to(device))
        pre = top_eigen(matvec, v0, method=method, max_iter=max_iter, tol=tol, generator=gen)
        result["preconditioned"] = Spectrum.from_eigen(pre, method, tol, max_iter)
        result["adam_threshold"] = _adam_threshold(optimizer)
        seconds["preconditioned"] = time.perf_counter() - t0
    vectors = op.unflatten(eigen.vectors[0])
    return Sharpness(**result, seconds=seconds, notes=tuple(notes), eigenvectors=vectors)


def _start_vector(op: MeanLoss, start: Sharpness | None, gen: torch.Generator) -> torch.Tensor:
    """[1, P]: the previous top eigenvector, else a seeded Gaussian vector."""
    if start is not None:
        if not isinstance(start, Sharpness) or start.eigenvectors is None:
            raise ValueError("start must be a previous sharpness(...) result of the same model")
        vectors = start.eigenvectors
        if set(vectors) != set(op.names) or any(vectors[k].shape[1:] != op.shapes[k] for k in op.names):
            raise ValueError("start is the result of another model (its parameters differ)")
        return op.flatten({k: vectors[k][:1].to(op.device, op.dtype) for k in op.names})
    return torch.randn(1, op.size, generator=gen, dtype=torch.float64).to(op.device, op.dtype)


def _epsilon_sharpness(op: MeanLoss, epsilon: float, max_iter: int, seed: int):
    """Keskar et al.'s ε-sharpness of the operator's mean loss, f and ∇f in float64 numpy for L-BFGS-B."""

    def value_and_grad(theta: np.ndarray):
        flat = torch.as_tensor(theta, device=op.device).to(op.dtype)[None]
        loss, g = op.value_and_grad(op.unflatten(flat))
        return float(loss[0]), op.flatten(g)[0].double().cpu().numpy()

    return epsilon_sharpness(value_and_grad, op.flat_params()[0].double().cpu().numpy(), epsilon, max_iter=max_iter,
                             seed=seed)  # fmt: skip


def _adam_diagonal(model: nn.Module, optimizer, first_moment_correction: bool) -> dict[str, torch.Tensor]:
    """{parameter name: P's diagonal} from a torch Adam/AdamW's state (amsgrad: its running maximum of v)."""
    group_of = {id(p): g for g in getattr(optimizer, "param_groups", []) for p in g["params"]}
    out = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        group, state = group_of.get(id(p)), getattr(optimizer, "state", {}).get(p, {})
        if group is None or "betas" not in group:
            raise ValueError(f"optimizer must be a torch Adam or AdamW over the model's parameters ({name!r} is not "
                             "among its parameters, or it has no betas)")  # fmt: skip
        key = "max_exp_avg_sq" if group.get("amsgrad") else "exp_avg_sq"
        if key not in state or float(state.get("step", 0)) < 1:
            raise ValueError(f"the optimizer has no second-moment average for {name!r} yet: take a step first")
        b1, b2 = group["betas"]
        out[name] = adam_preconditioner(state[key].detach(), float(state["step"]), b1, b2, group["eps"],
                                        first_moment_correction=first_moment_correction)  # fmt: skip
    return out


def _adam_threshold(optimizer) -> float | None:
    """Cohen et al. 2022 threshold (2 + 2β1) / ((1 − β1) η) for λ_max(P⁻¹H), if all groups share lr and β1."""
    found = {(float(g["lr"]), float(g["betas"][0])) for g in optimizer.param_groups}
    if len(found) != 1:
        return None
    ((lr, b1),) = found
    return (2 + 2 * b1) / ((1 - b1) * lr) if lr > 0 and b1 < 1 else None


def _check_arguments(method, top_k, max_iter, tol, trace_samples, batch_sizes, draws, epsilon, epsilon_iter, examples,
                     chunk):  # fmt: skip
    positive = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1  # noqa: E731
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if not positive(top_k):
        raise ValueError(f"top_k must be a positive integer (got {top_k!r})")
    if method == "power" and top_k != 1:
        raise ValueError("method='power' gives the top eigenvalue only: use top_k=1 or method='lanczos'")
    if not positive(max_iter):
        raise ValueError(f"max_iter must be a positive integer (got {max_iter!r})")
    if not (isinstance(tol, (int, float)) and not isinstance(tol, bool) and 0 < tol < 1):
        raise ValueError(f"tol must be a number in (0, 1) (got {tol!r})")
    if not (positive(trace_samples) and trace_samples >= 2) and trace_samples != 0:
        raise ValueError(f"trace_samples must be 0 or an integer of at least 2 (got {trace_samples!r})")
    if not isinstance(batch_sizes, (tuple, list)) or not all(positive(b) for b in batch_sizes):
        raise ValueError(f"batch_sizes must be positive integers (got {batch_sizes!r})")
    if not (positive(draws) and draws >= 2):
        raise ValueError(f"draws must be an integer of at least 2 (got {draws!r})")
    if epsilon is not None and not (
        isinstance(epsilon, (int, float)) and not isinstance(epsilon, bool) and epsilon > 0
    ):
        raise ValueError(f"epsilon must be a positive number or None (got {epsilon!r})")
    if not positive(epsilon_iter):
        raise ValueError(f"epsilon_iter must be a positive integer (got {epsilon_iter!r})")
    if not (positive(examples) and examples >= 2):
        raise ValueError(f"examples must be an integer of at least 2 (got {examples!r})")
    if chunk is not None and not positive(chunk):
        raise ValueError(f"chunk must be a positive integer (got {chunk!r})")
