"""The gradient noise scale of any model at its current weights (McCandlish et al. 2018, arXiv:1812.06162).

    from batchlab import noise_scale
    ns = noise_scale(model, loss_fn, (x, y), samples=1024)
    print(ns)  # B_simple, its confidence interval, |G|², tr(Σ) and what they mean for the batch size

B_simple = tr(Σ) / |G|² compares the noise of a single example's gradient (tr(Σ), the summed variance) with
the squared norm of the true gradient. Up to batch sizes of about B_simple, a doubled batch nearly halves
the steps to a given loss; beyond it, returns diminish. Two estimators (formulas in `analysis.noise`):

- "per-example": every example's gradient by `torch.func` (`vmap` of `grad` over `functional_call`), a
  chunk of examples at a time, keeping only ‖g_i‖², the running sum of the gradients and a fixed-size
  sketch of each g_i for the bootstrap. Works for any `nn.Module` whose ops `vmap` supports.
- "two-batch": only ordinary backward passes. The samples are split into disjoint "draws" of a big
  batch, each cut into small batches, as data-parallel training gets them for free (per-device and
  all-reduced gradients); the norms are averaged over draws and the ratio taken last.
- "auto": per-example, falling back to two-batch if `torch.func` fails (an unsupported op, memory).

Both assume the loss of a batch is the mean of per-example losses; BatchNorm in training mode breaks it
(examples interact through the batch statistics) and is refused.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import sys
import textwrap
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.utils.data import DataLoader

from .analysis.noise import (
    DEFAULT_RESAMPLES,
    CountSketch,
    NoiseEstimate,
    bootstrap_per_example_ci,
    bootstrap_two_batch_ci,
    per_example_moments,
    two_batch_estimates,
)

ESTIMATORS = ("auto", "per-example", "two-batch")
CITATION = "McCandlish et al. 2018, arXiv:1812.06162"
# float64 entries kept per example for the bootstrap (gradients, or a sketch of them): 64 MiB in all
FEATURE_BUDGET = 2**23
MIN_SKETCH = 256
# per-example gradient entries computed at once, bounding the memory of one vmap chunk
CHUNK_BUDGET = 2**24
MAX_CHUNK = 256
TWO_BATCH_CHUNK = 1024  # examples per ordinary backward pass in the two-batch estimator
FEW_DRAWS = 20

Data = tuple[torch.Tensor, torch.Tensor] | DataLoader | Iterable


@dataclass(frozen=True)
class NoiseScale:
    """The measured gradient noise scale at the model's current weights.

    `grad_sq_norm` (|G|²) and `trace_sigma` (tr(Σ)) are unbiased estimates; `b_simple` is their ratio
    (+inf when the |G|² estimate is ≤ 0: the signal is below what the samples can resolve); `ci` is a
    bootstrap interval at `level`. `batch_sizes` and `draws` describe the two-batch estimator.
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

    def __str__(self) -> str:
        lo, hi = self.ci
        return (
            f"B_simple ≈ {format_b(self.b_simple)} ({self.level:.0%} CI {format_b(lo)}–{format_b(hi)}; "
            f"{self.estimator} estimator, {self.samples} samples)\n"
            f"|G|² = {self.grad_sq_norm:.4g}, tr(Σ) = {self.trace_sigma:.4g}"
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
) -> NoiseScale:
    """Measure B_simple = tr(Σ)/|G|² of `model` under `loss_fn` on `samples` examples of `data`.

    `loss_fn(output, target)` must average over the batch (reduction="mean"). `data` is `(x, y)` tensors
    (a seeded random subset of `samples` rows is used, all rows if fewer) or a DataLoader (batches of
    `(x, y)` are taken until `samples` examples are collected). `batch_sizes=(small, big)` sets the
    two-batch estimator (default: big = samples // 32, small = big // 8). `chunk` bounds the examples per
    vmapped chunk or backward pass (memory). `seed` fixes the subset, the draws and the bootstrap.
    The model is not modified: its parameters and buffers are passed through `functional_call` on
    `device`, in the model's own train/eval mode (dropout in training mode draws one mask per example).
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
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module (got {type(model).__name__})")
    if not callable(loss_fn):
        raise ValueError("loss_fn must be callable as loss_fn(output, target)")
    check_examples_independent(model)

    x, y, notes = _collect(data, samples, seed)
    n = x.shape[0]
    if batch_sizes is not None:
        _check_batch_sizes(batch_sizes, n)
    device = torch.device(device)
    params, frozen, buffers = _weights(model, device)
    if not params:
        raise ValueError("the model has no parameters that require gradients")
    if any(isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0 for m in model.modules()):
        notes.append(
            "dropout is active (training mode): each example draws its own mask, and its noise counts in tr(Σ)"
        )
    _check_loss_is_mean(model, loss_fn, params, frozen, buffers, x, y, device)

    if estimator in ("auto", "per-example"):
        try:
            est, ci = _per_example(model, loss_fn, x, y, params, frozen, buffers, device, chunk, seed, level, resamples)
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
            return _result(est, ci, "per-example", n, level, None, None, notes)

    small, big = batch_sizes if batch_sizes is not None else default_batch_sizes(n)
    draws = n // big
    est, ci = _two_batch(
        model, loss_fn, x, y, params, frozen, buffers, device, small, big, chunk, seed, level, resamples
    )
    if draws * big < n:
        notes.append(f"the two-batch estimator used {draws * big} of the {n} samples ({draws} draws of {big})")
    if draws < 2:
        notes.append("one draw only: no confidence interval; use more samples or smaller batch sizes")
    elif draws < FEW_DRAWS:
        notes.append(f"only {draws} draws: the bootstrap interval is rough; use more samples or smaller batch sizes")
    return _result(est, ci, "two-batch", draws * big, level, (small, big), draws, notes)


def default_batch_sizes(n: int) -> tuple[int, int]:
    """(small, big) for the two-batch estimator: 32 draws of a big batch, each cut into 8 small ones.

    The estimate's spread hardly depends on the sizes (it is mostly the samples' own), but its bootstrap
    interval needs many independent draws."""
    big = max(2, n // 32)
    return max(1, big // 8), big


def per_example_grads(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    chunk: int | None = None,
    device: torch.device | str | None = None,
) -> dict[str, torch.Tensor]:
    """The gradient of each example's loss, {parameter name: [n, *shape]}, by torch.func.

    Every example's gradient is kept, so this is for small n; `noise_scale` streams them instead.
    """
    check_examples_independent(model)
    device = torch.device(device) if device is not None else _model_device(model)
    params, frozen, buffers = _weights(model, device)
    parts = [g for _, g in _iter_per_example_grads(model, loss_fn, x, y, params, frozen, buffers, device, chunk)]
    return {k: torch.cat([p[k] for p in parts]) for k in params}


def check_examples_independent(model: nn.Module) -> None:
    """Refuse BatchNorm in training mode: it normalises each example by the batch's statistics, so the
    batch loss is not a mean of per-example losses and per-example gradients do not add up to it."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
            where = f"at {name!r}" if name else "(the model itself)"
            raise ValueError(
                f"{type(module).__name__} in training mode {where} couples the examples of a batch through its "
                "batch statistics, so the loss is not a mean of per-example terms and the noise scale is "
                "undefined; call model.eval() to use its running statistics"
            )


def recommendation(b: float, ci: tuple[float, float], samples: int, level: float = 0.95) -> str:
    """What B_simple means for the choice of batch size, in plain words (McCandlish et al. 2018)."""
    lo, hi = ci
    later = (
        "B_simple is measured at the current weights and usually grows as training proceeds: "
        "measure again later in training."
    )
    if math.isnan(b):
        return f"B_simple could not be estimated from these {samples} samples."
    if math.isinf(b):
        above = f" (the {level:.0%} interval starts at about {format_b(lo)})" if math.isfinite(lo) else ""
        return (
            f"The gradient's signal cannot be told apart from its noise with {samples} samples (the estimate "
            f"of |G|² is ≤ 0), so B_simple is too large to measure here{above}: larger batches probably still "
            f"pay off almost fully. Measure with more samples ({CITATION}). {later}"
        )
    interval = f"{level:.0%} CI {format_b(lo)}–{format_b(hi)}"
    head = f"B_simple ≈ {format_b(b)} ({interval}) at the current weights ({CITATION})."
    if b < 2:
        body = (
            "The gradient's signal dominates its noise even for single examples, so larger batches save few "
            "steps: each doubling of the batch saves less than half the steps to a given loss."
        )
    else:
        body = (
            f"Up to a batch size of about {format_b(b)}, doubling the batch still nearly halves the number of "
            "steps to a given loss; beyond it, returns diminish (each doubling saves less than half the "
            f"steps, while the examples processed keep growing). A batch near {format_b(b)} balances the two: "
            "about twice the minimum number of steps and twice the minimum number of examples."
        )
    tail = " The upper end of the interval is unbounded: more samples would narrow it." if math.isinf(hi) else ""
    return f"{head} {body}{tail} {later}"


def describe(ns: NoiseScale, width: int = 100) -> str:
    """The lines a command line prints for a `NoiseScale`."""
    how = f"{ns.estimator} estimator, {ns.samples} samples"
    if ns.batch_sizes is not None:
        how += f", batch sizes {ns.batch_sizes[0]} and {ns.batch_sizes[1]}, {ns.draws} draws"
    lo, hi = ns.ci
    lines = [
        f"Gradient noise scale ({how})",
        f"  B_simple  ≈ {format_b(ns.b_simple)}  ({ns.level:.0%} CI {format_b(lo)}–{format_b(hi)})",
        f"  |G|²      = {ns.grad_sq_norm:.4g}  (squared norm of the true gradient)",
        f"  tr(Σ)     = {ns.trace_sigma:.4g}  (variance of one example's gradient, summed over parameters)",
        "",
        *textwrap.wrap(ns.recommendation, width),
    ]
    lines += [line for note in ns.notes for line in textwrap.wrap(f"note: {note}", width, subsequent_indent="  ")]
    return "\n".join(lines)


def format_b(b: float) -> str:
    """Two significant figures: 483.2 -> '480', 3.46 -> '3.5', 12345 -> '12000'; +inf -> '∞'."""
    if math.isnan(b):
        return "n/a"
    if math.isinf(b):
        return "∞" if b > 0 else "-∞"
    r = float(f"{b:.2g}")
    return f"{r:.0f}" if abs(r) >= 10 else f"{r:g}"


def load_factory(spec: str) -> tuple[nn.Module, Callable, Data]:
    """Import and call a factory named "package.module:function" (or "path/to/file.py:function").

    The function takes no arguments and returns `(model, loss_fn, data)` as `noise_scale` takes them. A
    dotted module is searched on sys.path with the current folder first, so from the repository root
    "examples.noise_scale_mlp:factory" works under the `batchlab` command as well as `python -m`.
    Raises ValueError for a malformed spec, a module or attribute that cannot be found, or a wrong
    return value; errors raised inside the factory itself propagate unchanged.
    """
    if not isinstance(spec, str):
        raise ValueError(f"factory spec must be a string 'package.module:function' (got {type(spec).__name__})")
    where, sep, attr = spec.rpartition(":")
    if not sep or not where or not attr:
        raise ValueError(f"factory spec {spec!r} must look like 'package.module:function'")
    if not all(part.isidentifier() for part in attr.split(".")):
        raise ValueError(f"factory spec {spec!r}: {attr!r} is not a Python name")
    module = _import_file(where, spec) if where.endswith(".py") or os.sep in where or "/" in where else None
    if module is None:
        if not all(part.isidentifier() for part in where.split(".")):
            raise ValueError(f"factory spec {spec!r}: {where!r} is not a dotted module name")
        module = _import_module(where, spec)
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"factory spec {spec!r}: module {module.__name__!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"factory spec {spec!r}: {attr!r} is not callable (its type is {type(obj).__name__})")
    result = obj()
    expected = "must return (model, loss_fn, data) with data as (x, y) tensors or a DataLoader"
    if not isinstance(result, (tuple, list)) or len(result) != 3:
        raise ValueError(f"factory {spec!r} {expected}; got {_kind(result)}")
    model, loss_fn, data = result
    if not isinstance(model, nn.Module):
        raise ValueError(f"factory {spec!r} {expected}; its model is {_kind(model)}, not a torch.nn.Module")
    if not callable(loss_fn):
        raise ValueError(f"factory {spec!r} {expected}; its loss_fn is {_kind(loss_fn)}, not callable")
    if isinstance(data, (tuple, list)):
        if len(data) != 2 or not all(isinstance(t, torch.Tensor) for t in data):
            raise ValueError(f"factory {spec!r} {expected}; its data is {_kind(data)}")
    elif not isinstance(data, Iterable):
        raise ValueError(f"factory {spec!r} {expected}; its data is {_kind(data)}")
    return model, loss_fn, data


# ---------------------------------------------------------------------------------------------------------
# estimators on a model


def _per_example(model, loss_fn, x, y, params, frozen, buffers, device, chunk, seed, level, resamples):
    """One pass of per-example gradients: ‖g_i‖², Σ g_i and a feature row per example for the bootstrap."""
    n = x.shape[0]
    shapes = [p.shape for p in params.values()]
    size = sum(p.numel() for p in params.values())
    k = max(MIN_SKETCH, FEATURE_BUDGET // n)
    sketch = CountSketch(shapes, k, seed=seed, device=device) if size > k else None
    sq = torch.empty(n, dtype=torch.float64)
    features = torch.empty(n, k if sketch is not None else size, dtype=torch.float64)
    total = [torch.zeros(p.shape, dtype=torch.float64, device=device) for p in params.values()]
    for start, g in _iter_per_example_grads(model, loss_fn, x, y, params, frozen, buffers, device, chunk):
        gs = list(g.values())
        c = gs[0].shape[0]
        sq[start : start + c] = sum(t.reshape(c, -1).double().square().sum(1) for t in gs).cpu()
        for acc, t in zip(total, gs):
            acc += t.double().sum(0)
        if sketch is not None:
            features[start : start + c] = sketch(gs).cpu()
        else:
            features[start : start + c] = torch.cat([t.reshape(c, -1).double() for t in gs], 1).cpu()
    mean_sq = float(sum(acc.square().sum() for acc in total)) / n**2
    est = per_example_moments(float(sq.sum()), mean_sq, n)
    ci = bootstrap_per_example_ci(sq, features, mean_sq, level=level, resamples=resamples, seed=seed)
    return est, ci


def _iter_per_example_grads(
    model, loss_fn, x, y, params, frozen, buffers, device, chunk
) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """(start, {name: [c, *shape]}) for consecutive chunks of examples, by vmap(grad(loss of one example))."""

    def loss_one(p, xi, yi):
        out = functional_call(model, (p, frozen, buffers), (xi.unsqueeze(0),))
        return loss_fn(out, yi.unsqueeze(0))

    # "different": dropout in training mode draws an independent mask for every example, as in a batch
    per_example = vmap(grad(loss_one), in_dims=(None, 0, 0), randomness="different")
    size = sum(p.numel() for p in params.values())
    chunk = chunk or max(1, min(MAX_CHUNK, CHUNK_BUDGET // size))
    for start in range(0, x.shape[0], chunk):
        xc = x[start : start + chunk].to(device)
        yc = y[start : start + chunk].to(device)
        yield start, per_example(params, xc, yc)


def _two_batch(model, loss_fn, x, y, params, frozen, buffers, device, small, big, chunk, seed, level, resamples):
    """Disjoint draws of a big batch cut into small batches: ‖g_small‖² [draws, big // small], ‖g_big‖² [draws]."""
    n = x.shape[0]
    draws, per_draw = n // big, big // small
    chunk = chunk or TWO_BATCH_CHUNK
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}

    def grad_sum(idx: torch.Tensor) -> torch.Tensor:
        """Σ_i g_i over the examples idx, flat float64, by micro-batches of `chunk` (mean loss × count)."""
        total = None
        for s in range(0, idx.numel(), chunk):
            part = idx[s : s + chunk]
            out = functional_call(model, (leaves, frozen, buffers), (x[part].to(device),))
            loss = loss_fn(out, y[part].to(device)) * part.numel()
            gs = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
            flat = torch.cat(
                [
                    (g if g is not None else torch.zeros_like(p)).reshape(-1).double()
                    for g, p in zip(gs, leaves.values())
                ]
            )
            total = flat if total is None else total + flat
        return total

    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    small_sq = np.empty((draws, per_draw))
    big_sq = np.empty(draws)
    for d in range(draws):
        block = perm[d * big : (d + 1) * big]
        big_sum = 0.0
        for j in range(per_draw):
            s = grad_sum(block[j * small : (j + 1) * small])
            small_sq[d, j] = float((s / small).square().sum())
            big_sum = big_sum + s
        if per_draw * small < big:
            big_sum = big_sum + grad_sum(block[per_draw * small :])
        big_sq[d] = float((big_sum / big).square().sum())
    est = two_batch_estimates(small_sq, big_sq, small, big)
    ci = bootstrap_two_batch_ci(small_sq, big_sq, small, big, level=level, resamples=resamples, seed=seed)
    return est, ci


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


# ---------------------------------------------------------------------------------------------------------
# inputs


def _collect(data, samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
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


def _weights(model: nn.Module, device: torch.device):
    """Trainable parameters, frozen parameters and buffers, detached, on `device`."""
    params, frozen = {}, {}
    for name, p in model.named_parameters():
        (params if p.requires_grad else frozen)[name] = p.detach().to(device)
    buffers = {name: b.detach().to(device) for name, b in model.named_buffers()}
    return params, frozen, buffers


def _check_loss_is_mean(model, loss_fn, params, frozen, buffers, x, y, device) -> None:
    """The loss of a few examples together must be a scalar equal to the mean of their own losses."""
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
        f"({float(mean):.6g}): something in the model or loss_fn couples the examples of a batch, so the noise "
        "scale is undefined for it"
    )


def _import_module(name: str, spec: str):
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise ValueError(
                f"factory spec {spec!r}: no module named {exc.name!r} (searched the current folder {cwd} and "
                "sys.path); run from the folder that contains it, or give a file: path/to/file.py:function"
            ) from exc
        raise ValueError(f"factory spec {spec!r}: importing {name!r} failed: {exc}") from exc
    except Exception as exc:
        raise ValueError(f"factory spec {spec!r}: importing {name!r} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        if added:
            sys.path.remove(cwd)


def _import_file(where: str, spec: str):
    path = Path(where)
    if not path.is_file():
        raise ValueError(f"factory spec {spec!r}: no file {str(path)!r}")
    name = f"_batchlab_factory_{path.stem}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"factory spec {spec!r}: {str(path)!r} is not a Python file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ValueError(f"factory spec {spec!r}: importing {str(path)!r} failed: {type(exc).__name__}: {exc}") from exc
    return module


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _kind(obj) -> str:
    if isinstance(obj, (tuple, list)):
        return f"a {type(obj).__name__} of {len(obj)}"
    return "None" if obj is None else f"a {type(obj).__name__}"


def _rows(t: torch.Tensor):
    return t.shape[0] if t.dim() > 0 else "a scalar"
