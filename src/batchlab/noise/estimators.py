"""The two estimators of `noise_scale` run on a model: per-example gradients by `torch.func` (streamed in
chunks) and the two-batch estimator from ordinary backward passes; and B_noise = tr(HΣ)/(GᵀHG) from per-example
gradients and their Hessian-vector products. The formulas are in `analysis.noise`."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from ..analysis.noise import (
    CountSketch,
    HessianNoiseEstimate,
    bootstrap_hessian_noise,
    bootstrap_per_example_ci,
    bootstrap_two_batch_ci,
    hessian_noise_estimates,
    per_example_estimates,
    percentile_interval,
    ratio_replicates,
    two_batch_estimates,
)

# float64 entries kept per example for the bootstrap (gradients, or a sketch of them): 64 MiB in all
FEATURE_BUDGET = 2**23
MIN_SKETCH = 256
# per-example gradient entries computed at once, bounding the memory of one vmap chunk
CHUNK_BUDGET = 2**24
MAX_CHUNK = 256
TWO_BATCH_CHUNK = 1024  # examples per ordinary backward pass in the two-batch estimator
# B_noise keeps every one of its examples' gradients: at most this many entries (256 MiB in float32)
HESSIAN_BUDGET = 2**26
HVP_CHUNK = 32  # vectors per vmapped Hessian-vector-product chunk


def check_examples_independent(model: nn.Module, what: str = "the noise scale") -> None:
    """Refuse BatchNorm in training mode: it normalises each example by the batch's statistics, so the
    batch loss is not a mean of per-example losses and per-example gradients do not add up to it (`what` names
    the quantity that is then undefined, for the message)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
            where = f"at {name!r}" if name else "(the model itself)"
            raise ValueError(
                f"{type(module).__name__} in training mode {where} couples the examples of a batch through its "
                f"batch statistics, so the loss is not a mean of per-example terms and {what} is undefined; "
                "call model.eval() to use its running statistics"
            )


def split_weights(model: nn.Module, device: torch.device):
    """Trainable parameters, frozen parameters and buffers, detached, on `device`."""
    params, frozen = {}, {}
    for name, p in model.named_parameters():
        (params if p.requires_grad else frozen)[name] = p.detach().to(device)
    buffers = {name: b.detach().to(device) for name, b in model.named_buffers()}
    return params, frozen, buffers


def module_per_example_grads(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    chunk: int | None = None,
    device: torch.device | str | None = None,
) -> dict[str, torch.Tensor]:
    """The gradient of each example's loss, {parameter name: [n, *shape]}, for any `nn.Module` by torch.func.

    Every example's gradient is kept, so this is for small n; `noise_scale` streams them instead. (The
    engine's `engine.step.per_example_grads` does the same for batchlab's own models, as a stack of runs.)
    """
    check_examples_independent(model)
    device = torch.device(device) if device is not None else _model_device(model)
    params, frozen, buffers = split_weights(model, device)
    parts = [g for _, g in _iter_per_example_grads(model, loss_fn, x, y, params, frozen, buffers, device, chunk)]
    return {k: torch.cat([p[k] for p in parts]) for k in params}


def measure_per_example(model, loss_fn, x, y, params, frozen, buffers, device, chunk, seed, level, resamples):
    """The per-example estimator and its bootstrap interval, from one pass of per-example gradients: ‖g_i‖²,
    Σ g_i and a feature row per example for the bootstrap."""
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
    est = per_example_estimates(float(sq.sum()), mean_sq, n)
    ci = bootstrap_per_example_ci(sq, features, mean_sq, level=level, resamples=resamples, seed=seed)
    return est, ci


def measure_hessian_noise(
    model, loss_fn, x, y, params, frozen, buffers, device, chunk, seed, level, resamples
) -> tuple[HessianNoiseEstimate, tuple[float, float]]:
    """B_noise = tr(HΣ)/(GᵀHG) on the examples (x, y), H the Hessian of their mean loss: per-example gradients
    g_i (kept), their products H g_i by forward-over-reverse (`engine.curvature`), Q_ij = g_iᵀ H g_j, then
    `hessian_noise_estimates` and a percentile bootstrap interval (`bootstrap_hessian_noise`). The model runs in
    its own mode, as for the gradients."""
    from ..engine.curvature import iter_hessian_vector_products

    n = x.shape[0]
    parts = [g for _, g in _iter_per_example_grads(model, loss_fn, x, y, params, frozen, buffers, device, chunk)]
    grads = {k: torch.cat([p[k] for p in parts]) for k in params}
    flat = {k: g.reshape(n, -1) for k, g in grads.items()}
    size = sum(p.numel() for p in params.values())
    q = torch.zeros(n, n, dtype=torch.float64)
    for start, hv in iter_hessian_vector_products(
        model, params, {**frozen, **buffers}, x.to(device), y.to(device), grads, loss_fn=loss_fn,
        chunk_size=chunk or max(1, min(HVP_CHUNK, CHUNK_BUDGET // size)), example_chunk=MAX_CHUNK, eval_mode=False,
    ):  # fmt: skip
        c = next(iter(hv.values())).shape[0]
        q[:, start : start + c] = sum((flat[k] @ t.reshape(c, -1).T).double() for k, t in hv.items()).cpu()
    est = hessian_noise_estimates(q)
    ci = percentile_interval(ratio_replicates(*bootstrap_hessian_noise(q, resamples=resamples, seed=seed)), level)
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


def measure_two_batch(model, loss_fn, x, y, params, frozen, buffers, device, small, big, chunk, seed, level, resamples):
    """The two-batch estimator and its bootstrap interval, from disjoint draws of a big batch cut into small
    batches: ‖g_small‖² [draws, big // small], ‖g_big‖² [draws]."""
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


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
