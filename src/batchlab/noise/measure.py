"""`noise_scale(model, loss_fn, data)`: the inputs checked and collected, an estimator chosen (per-example,
falling back to two-batch), the result with its interval, recommendation and notes."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.data import DataLoader

from ..analysis.noise import DEFAULT_RESAMPLES, NoiseEstimate
from .estimators import (
    HESSIAN_BUDGET,
    check_examples_independent,
    measure_hessian_noise,
    measure_per_example,
    measure_two_batch,
    split_weights,
)
from .text import format_b, recommendation

ESTIMATORS = ("auto", "per-example", "two-batch")
FEW_DRAWS = 20

Data = tuple[torch.Tensor, torch.Tensor] | DataLoader | Iterable


@dataclass(frozen=True)
class NoiseScale:
    """The measured gradient noise scale at the model's current weights.

    `grad_sq_norm` (|G|²) and `trace_sigma` (tr(Σ)) are unbiased estimates; `b_simple` is their ratio
    (+inf when the |G|² estimate is ≤ 0: the signal is below what the samples can resolve); `ci` is a
    bootstrap interval at `level`. `batch_sizes` and `draws` describe the two-batch estimator.

    `b_noise` = tr(HΣ)/(GᵀHG) (`trace_h_sigma` over `g_h_g`, H the Hessian of the mean loss over the
    `hessian_samples` examples it used), with its bootstrap interval `b_noise_ci`: McCandlish et al.'s B_noise,
    which B_simple approximates (equal when H is a multiple of the identity). None when not measured (the
    two-batch estimator, `hessian_samples=0`, or Hessian-vector products that failed; `notes` say which).
    """

    b_simple: float
    ci: tuple[float, float]
    grad_sq_norm: float
    trace_sigma: float
    estimator: str
    samples: int
    level: float = 0.95
    batch_sizes: tuple[int, int] | None = None
    draws: int | None = None
    recommendation: str = ""
    notes: tuple[str, ...] = ()
    b_noise: float | None = None
    b_noise_ci: tuple[float, float] | None = None
    trace_h_sigma: float | None = None
    g_h_g: float | None = None
    hessian_samples: int | None = None

    def __str__(self) -> str:
        lo, hi = self.ci
        text = (
            f"B_simple ≈ {format_b(self.b_simple)} ({self.level:.0%} CI {format_b(lo)}–{format_b(hi)}; "
            f"{self.estimator} estimator, {self.samples} samples)\n"
            f"|G|² = {self.grad_sq_norm:.4g}, tr(Σ) = {self.trace_sigma:.4g}"
        )
        if self.b_noise is None:
            return text
        lo, hi = self.b_noise_ci
        return (
            f"{text}\nB_noise ≈ {format_b(self.b_noise)} ({self.level:.0%} CI {format_b(lo)}–{format_b(hi)}; "
            f"Hessian-weighted, {self.hessian_samples} samples)\n"
            f"GᵀHG = {self.g_h_g:.4g}, tr(HΣ) = {self.trace_h_sigma:.4g}"
        )


def noise_scale(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    data: Data,
    *,
    samples: int = 1024,
    estimator: str = "auto",
    batch_sizes: tuple[int, int] | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    level: float = 0.95,
    chunk: int | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    hessian_samples: int | None = 256,
) -> NoiseScale:
    """Measure B_simple = tr(Σ)/|G|² of `model` under `loss_fn` on `samples` examples of `data`.

    `loss_fn(output, target)` must average over the batch (reduction="mean"). `data` is `(x, y)` tensors
    (a seeded random subset of `samples` rows is used, all rows if fewer) or a DataLoader (batches of
    `(x, y)` are taken until `samples` examples are collected). `batch_sizes=(small, big)` sets the
    two-batch estimator (default: big = samples // 32, small = big // 8). `chunk` bounds the examples per
    vmapped chunk or backward pass (memory). `seed` fixes the subset, the draws and the bootstrap.
    `hessian_samples`: B_noise = tr(HΣ)/(GᵀHG) is measured on a seeded subset of at most this many of the
    samples (per-example estimator only; n Hessian-vector products); 0 or None leaves it out.
    The model is not modified: its parameters and buffers are passed through `functional_call` on
    `device`, in the model's own train/eval mode (dropout in training mode draws one mask per example).

    The `samples` are treated as a sample from a much larger population (no finite-population correction):
    tr(Σ) is the per-example variance and a batch of B drawn from the population has variance tr(Σ)/B. Batches
    drawn without replacement from a finite set of N examples have less, tr(Σ)/B · (N − B)/(N − 1); so when
    `samples` is close to the whole data set and you train on exactly that set, the noise at batch B is lower
    than B_simple implies, and zero at B = N (the full-batch gradient has no noise).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
        raise ValueError(f"samples must be an integer of at least 2 (got {samples!r})")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1 (got {level!r})")
    if chunk is not None and (not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"chunk must be a positive integer (got {chunk!r})")
    if not isinstance(resamples, int) or resamples < 1:
        raise ValueError(f"resamples must be a positive integer (got {resamples!r})")
    bad_int = isinstance(hessian_samples, bool) or not isinstance(hessian_samples, int)
    if hessian_samples is not None and (bad_int or hessian_samples == 1 or hessian_samples < 0):
        raise ValueError(f"hessian_samples must be 0, None or an integer of at least 2 (got {hessian_samples!r})")
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module (got {type(model).__name__})")
    if not callable(loss_fn):
        raise ValueError("loss_fn must be callable as loss_fn(output, target)")
    check_examples_independent(model)

    x, y, notes = collect_examples(data, samples, seed)
    n = x.shape[0]
    if batch_sizes is not None:
        _check_batch_sizes(batch_sizes, n)
    device = torch.device(device)
    params, frozen, buffers = split_weights(model, device)
    if not params:
        raise ValueError("the model has no parameters that require gradients")
    if any(isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0 for m in model.modules()):
        notes.append(
            "dropout is active (training mode): each example draws its own mask, and its noise counts in tr(Σ)"
        )
    check_loss_is_mean(model, loss_fn, params, frozen, buffers, x, y, device)

    if estimator in ("auto", "per-example"):
        try:
            est, ci = measure_per_example(
                model, loss_fn, x, y, params, frozen, buffers, device, chunk, seed, level, resamples
            )
        except (RuntimeError, NotImplementedError) as exc:  # torch.func errors, out of memory
            if estimator == "per-example":
                raise RuntimeError(
                    f"per-example gradients with torch.func failed: {_first_line(exc)}; "
                    "estimator='two-batch' needs only ordinary backward passes"
                ) from exc
            notes.append(
                f"per-example gradients failed under torch.func ({type(exc).__name__}: {_first_line(exc)}); "
                "used the two-batch estimator instead"
            )
        else:
            result = _result(est, ci, "per-example", n, level, None, None, notes)
            if not hessian_samples:
                return result
            weights = (params, frozen, buffers)
            return _with_b_noise(result, model, loss_fn, x, y, weights, device, chunk, seed, resamples, hessian_samples)

    small, big = batch_sizes if batch_sizes is not None else default_batch_sizes(n)
    draws = n // big
    est, ci = measure_two_batch(
        model, loss_fn, x, y, params, frozen, buffers, device, small, big, chunk, seed, level, resamples
    )
    if draws * big < n:
        notes.append(f"the two-batch estimator used {draws * big} of the {n} samples ({draws} draws of {big})")
    if draws < 2:
        notes.append("one draw only: no confidence interval; use more samples or smaller batch sizes")
    elif draws < FEW_DRAWS:
        notes.append(f"only {draws} draws: the bootstrap interval is rough; use more samples or smaller batch sizes")
    if hessian_samples:
        notes.append("B_noise needs per-example gradients, which the two-batch estimator does not take: not measured")
    return _result(est, ci, "two-batch", draws * big, level, (small, big), draws, notes)


def default_batch_sizes(n: int) -> tuple[int, int]:
    """(small, big) for the two-batch estimator: 32 draws of a big batch, each cut into 8 small ones.

    The estimate's spread hardly depends on the sizes (it is mostly the samples' own), but its bootstrap
    interval needs many independent draws."""
    big = max(2, n // 32)
    return max(1, big // 8), big


def _result(est: NoiseEstimate, ci, estimator, samples, level, batch_sizes, draws, notes) -> NoiseScale:
    b = est.b_simple
    if math.isinf(b):
        notes.append("the |G|² estimate is ≤ 0: the gradient is below the noise these samples can resolve")
    return NoiseScale(
        b_simple=b,
        ci=(float(ci[0]), float(ci[1])),
        grad_sq_norm=est.grad_sq_norm,
        trace_sigma=est.trace_sigma,
        estimator=estimator,
        samples=samples,
        level=level,
        batch_sizes=batch_sizes,
        draws=draws,
        recommendation=recommendation(b, ci, samples, level),
        notes=tuple(notes),
    )


def _with_b_noise(result: NoiseScale, model, loss_fn, x, y, weights, device, chunk, seed, resamples, limit):
    """`result` with B_noise measured on a seeded subset of at most `limit` of its samples (fewer when their
    gradients would not fit HESSIAN_BUDGET entries), or with a note saying why it is not."""
    params, frozen, buffers = weights
    n, size = x.shape[0], sum(p.numel() for p in params.values())
    m = min(limit, n, max(2, HESSIAN_BUDGET // size))
    notes = list(result.notes)
    if m < min(limit, n):
        notes.append(f"B_noise used {m} samples: the gradients of more would exceed {HESSIAN_BUDGET:,} entries")
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))[:m].sort().values
    xs, ys = x[idx.to(x.device)], y[idx.to(y.device)]
    try:
        est, ci = measure_hessian_noise(
            model, loss_fn, xs, ys, params, frozen, buffers, device, chunk, seed, result.level, resamples
        )
    except (RuntimeError, NotImplementedError) as exc:  # an op without forward-mode AD or vmap rule, memory
        notes.append(
            f"B_noise not measured: Hessian-vector products failed under torch.func ({type(exc).__name__}: "
            f"{_first_line(exc)})"
        )
        return dataclasses.replace(result, notes=tuple(notes))
    if math.isinf(est.b_noise):
        notes.append("the GᵀHG estimate is ≤ 0: no positive curvature along the gradient that these samples resolve")
    return dataclasses.replace(
        result,
        b_noise=est.b_noise,
        b_noise_ci=(float(ci[0]), float(ci[1])),
        trace_h_sigma=est.trace_h_sigma,
        g_h_g=est.g_h_g,
        hessian_samples=m,
        notes=tuple(notes),
    )


# ---------------------------------------------------------------------------------------------------------
# inputs


def collect_examples(data, samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """`samples` examples as (x, y): a seeded subset of tensors (in their order), or the first of a loader."""
    notes: list[str] = []
    if isinstance(data, (tuple, list)):
        if len(data) != 2 or not all(isinstance(t, torch.Tensor) for t in data):
            raise ValueError("data must be (inputs, targets) tensors or a torch.utils.data.DataLoader")
        x, y = data
        if x.dim() == 0 or y.dim() == 0 or x.shape[0] != y.shape[0]:
            raise ValueError(f"x and y must have the same number of examples (got {_rows(x)} and {_rows(y)})")
        total = x.shape[0]
        if total > samples:
            idx = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:samples].sort().values
            x, y = x[idx.to(x.device)], y[idx.to(y.device)]
        elif total < samples:
            notes.append(f"the data has {total} examples; all were used ({samples} asked)")
    elif isinstance(data, (DataLoader, Iterable)) and not isinstance(data, (str, bytes, torch.Tensor)):
        xs, ys, count = [], [], 0
        for batch in data:
            if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                raise ValueError("each batch of the DataLoader must be (inputs, targets)")
            xb, yb = torch.as_tensor(batch[0]), torch.as_tensor(batch[1])
            if xb.dim() == 0 or yb.dim() == 0 or xb.shape[0] != yb.shape[0]:
                raise ValueError(f"a batch has {_rows(xb)} inputs but {_rows(yb)} targets")
            xs.append(xb)
            ys.append(yb)
            count += xb.shape[0]
            if count >= samples:
                break
        if not xs:
            raise ValueError("the DataLoader gave no batches")
        x, y = torch.cat(xs)[:samples], torch.cat(ys)[:samples]
        if count < samples:
            notes.append(f"the DataLoader gave only {count} examples; all were used ({samples} asked)")
    else:
        raise ValueError(f"data must be (inputs, targets) tensors or a DataLoader (got {type(data).__name__})")
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 examples (the data has {x.shape[0]})")
    return x, y, notes


def _check_batch_sizes(batch_sizes, n: int) -> None:
    if (
        not isinstance(batch_sizes, (tuple, list))
        or len(batch_sizes) != 2
        or not all(isinstance(b, int) and not isinstance(b, bool) for b in batch_sizes)
    ):
        raise ValueError(f"batch_sizes must be two integers (small, big) (got {batch_sizes!r})")
    small, big = batch_sizes
    if not 1 <= small < big:
        raise ValueError(f"batch_sizes must satisfy 1 <= small < big (got {small}, {big})")
    if big > n:
        raise ValueError(f"the big batch ({big}) is larger than the {n} samples")


def check_loss_is_mean(model, loss_fn, params, frozen, buffers, x, y, device, what: str = "the noise scale") -> None:
    """The loss of a few examples together must be a scalar equal to the mean of their own losses (a ValueError
    saying why not, and that `what` is undefined for such a loss)."""
    m = min(4, x.shape[0])
    xs, ys = x[:m].to(device), y[:m].to(device)
    weights = (params, frozen, buffers)
    with torch.no_grad():
        out = functional_call(model, weights, (xs,))
        loss = loss_fn(out, ys)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ValueError(f"loss_fn must return a scalar, the mean over the batch (got {shape})")
        if not torch.equal(out, functional_call(model, weights, (xs,))):
            return  # a random model (dropout): the comparison below would not be exact
        each = torch.stack(
            [loss_fn(functional_call(model, weights, (xs[i : i + 1],)), ys[i : i + 1]) for i in range(m)]
        )
    batch, mean = loss.double().reshape(()), each.double().mean()
    tol = 1e-3 if loss.dtype in (torch.float32, torch.float64) else 3e-2
    if abs(batch - mean) <= tol * (abs(mean) + each.double().abs().max()) + 1e-12:
        return
    if abs(batch - m * mean) <= tol * m * abs(mean):
        raise ValueError(
            f"loss_fn sums over the batch (the loss of {m} examples is {m} times the mean of their losses); "
            "use reduction='mean'"
        )
    raise ValueError(
        f"the loss of {m} examples together ({float(batch):.6g}) is not the mean of their own losses "
        f"({float(mean):.6g}): something in the model or loss_fn couples the examples of a batch, so {what} is "
        "undefined for it"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _rows(t: torch.Tensor):
    return t.shape[0] if t.dim() > 0 else "a scalar"
