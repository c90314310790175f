"""Hessian-vector products of a model's mean loss at fixed weights, by torch.func (forward-over-reverse).

H v = d/dε ∇L(θ + ε v) at ε = 0: `jvp` of `grad` (Pearlmutter 1994), one forward-mode pass through the
backward pass, about the cost of two or three gradients, with H never formed. `vmap` over the vectors batches
only the tangents (the primal gradient is shared), a chunk of vectors at a time so that memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vmap

from ..probes import per_run_loss


def iter_hessian_vector_products(
    base: nn.Module,
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor] | None,
    x: torch.Tensor,
    y: torch.Tensor,
    vectors: dict[str, torch.Tensor],
    *,
    task: str = "classification",
    loss_fn: Callable | None = None,
    chunk_size: int = 32,
    example_chunk: int | None = None,
    eval_mode: bool = True,
) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """(start, {name: [c, ...]}): H v for consecutive chunks of the vectors, where H is the Hessian (with respect
    to `params`) of the mean loss over the examples (x, y); see `hessian_vector_products`."""
    names = list(params)
    primal = {k: v.detach() for k, v in params.items()}
    buffers = {k: v.detach() for k, v in (buffers or {}).items()}
    n = x.shape[0]
    step = example_chunk or n
    parts = [(x[s : s + step], y[s : s + step]) for s in range(0, n, step)]

    def mean_loss(p, xb, yb):
        out = functional_call(base, (p, buffers), (xb,))
        return per_run_loss(out.unsqueeze(0), yb.unsqueeze(0), task, "mean", loss_fn)[0]

    def hvp(v):
        total = None
        for xb, yb in parts:  # H of the mean over all n: each part's Hessian weighted by its share
            _, hv = jvp(lambda p: grad(mean_loss)(p, xb, yb), (primal,), (v,))
            w = xb.shape[0] / n
            total = {k: hv[k] * w for k in names} if total is None else {k: total[k] + hv[k] * w for k in names}
        return total

    modes = [(m, m.training) for m in base.modules()]
    if eval_mode:  # BatchNorm on its running statistics (as per_example_grads' bn_mode="eval")
        base.eval()
    try:
        m = next(iter(vectors.values())).shape[0]
        for start in range(0, m, chunk_size):
            v = {k: vectors[k][start : start + chunk_size].to(primal[k].device, primal[k].dtype) for k in names}
            yield start, {k: t.detach() for k, t in vmap(hvp)(v).items()}
    finally:
        for module, training in modes:
            module.training = training


def hessian_vector_products(
    base: nn.Module,
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor] | None,
    x: torch.Tensor,
    y: torch.Tensor,
    vectors: dict[str, torch.Tensor],
    *,
    task: str = "classification",
    loss_fn: Callable | None = None,
    chunk_size: int = 32,
    example_chunk: int | None = None,
    eval_mode: bool = True,
) -> dict[str, torch.Tensor]:
    """H V {name: [n, ...]} for a batch of vectors V {name: [n, ...]}, H the Hessian of the mean loss over (x, y).

    `base` is the model's template (on any device, the meta device included: its weights are `params` and
    `buffers`, one model's, unstacked). The loss is `loss_fn(output, target)` (the user's, a mean over the
    examples) or the task's (cross-entropy over the last dimension, or squared error: `per_run_loss`).
    `eval_mode` puts the template in evaluation mode meanwhile (BatchNorm on its running statistics, as
    `per_example_grads` with bn_mode="eval"); its modes are restored after. `chunk_size` vectors are vmapped
    at once; `example_chunk` splits the examples of H (their Hessians added, weighted by their share), so
    memory grows with chunk_size x example_chunk activations.
    """
    out: dict[str, list[torch.Tensor]] = {k: [] for k in params}
    for _, hv in iter_hessian_vector_products(
        base, params, buffers, x, y, vectors, task=task, loss_fn=loss_fn, chunk_size=chunk_size,
        example_chunk=example_chunk, eval_mode=eval_mode,
    ):  # fmt: skip
        for k, t in hv.items():
            out[k].append(t)
    return {k: torch.cat(v) for k, v in out.items()}
