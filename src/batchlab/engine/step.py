"""The pure pieces of a training step, shared by training runs and by tasks at fixed weights.

- `batch_losses`: each run's loss on its own batch, for a stack of R runs.
- `accumulate_grads`: loss and gradients of every run, optionally over micro-batches (gradient
  accumulation): with a mean loss, the batch gradient is sum_k (b_k / b) grad(mean loss of micro-batch
  k), equal to the direct gradient up to rounding when nothing couples the examples (no BatchNorm).
- `per_example_grads` and `per_example_sq_norms`: one gradient per example, by vectorisation. The
  examples are treated as runs of a stack whose every copy holds the same weights and sees one
  example, so the per-example backward pass is the same batched code that trains groups of runs;
  done in chunks so that memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from ..models import MLP, Stack
from ..models.mlp import ACTIVATION_FNS
from ..probes import per_run_loss

LossFn = Callable[[torch.Tensor], torch.Tensor]  # a batch slice [R, b] (indices or inputs) -> losses [R]


def batch_losses(
    stack: Stack,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    task: str = "classification",
    reduction: str = "mean",
    bn_mode: str = "train",
    autocast: torch.autocast | None = None,
    loss_fn: Callable | None = None,
) -> torch.Tensor:
    """Loss of each run on its own batch: x [R, b, ...], y [R, b, ...] -> [R] (`loss_fn`: the user's, else the
    task's: cross-entropy or squared error, see per_run_loss)."""
    if autocast is None:
        out = stack.forward(x, bn_mode=bn_mode)
    else:
        with autocast:
            out = stack.forward(x, bn_mode=bn_mode)
    return per_run_loss(out, y, task, reduction, loss_fn)


def accumulate_grads(
    loss_fn: LossFn,
    batch: torch.Tensor,
    params: dict[str, torch.Tensor],
    *,
    micro_batch: int | None = None,
    reduction: str = "mean",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-run losses [R] and the gradient of each run's loss with respect to its own parameters.

    `batch` is [R, b, ...] (what `loss_fn` takes: indices or inputs); its dimension 1 is split into
    micro-batches of `micro_batch` examples when given. Runs are independent, so the gradient of the
    sum of the runs' losses is every run's own gradient.
    """
    return accumulate(autograd_value_and_grads(loss_fn, params), batch, micro_batch=micro_batch, reduction=reduction)


def autograd_value_and_grads(loss_fn: LossFn, params: dict[str, torch.Tensor]) -> Callable:
    """`value_and_grads(part, weight=1.0)`: the runs' losses on `part` (times `weight`) and their autograd gradients."""
    names = list(params)

    def value_and_grads(part: torch.Tensor, weight: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        losses = loss_fn(part) * weight if weight != 1.0 else loss_fn(part)
        grads = torch.autograd.grad(losses.sum(), [params[n] for n in names])
        return losses.detach(), dict(zip(names, grads))

    return value_and_grads


def accumulate(
    value_and_grads: Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]],
    batch: torch.Tensor,
    *,
    micro_batch: int | None = None,
    reduction: str = "mean",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`value_and_grads(batch)` (losses [R], gradients), over micro-batches of `micro_batch` examples when given:
    the sum of `value_and_grads(part, weight)`, the loss weighted by the part's share of the batch for a mean
    loss (before the gradient is taken, so the sum is the batch's gradient)."""
    b = batch.shape[1]
    if micro_batch is None or micro_batch >= b:
        return value_and_grads(batch)
    total_loss, total = None, None
    for start in range(0, b, micro_batch):
        part = batch[:, start : start + micro_batch]
        weight = part.shape[1] / b if reduction == "mean" else 1.0
        losses, grads = value_and_grads(part, weight)
        if total is None:
            total_loss, total = losses, grads
        else:
            total_loss = total_loss + losses
            total = {k: total[k] + g for k, g in grads.items()}
    return total_loss, total


def accumulate_squares(
    value_and_grads: Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]],
    batch: torch.Tensor,
    micro_batch: int,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Mean losses [R], the batch's mean gradient and the mean over micro-batches of each micro-batch's squared mean
    gradient, (1/k) sum_j g_j^2: the second-moment input of batch-size-invariant Adam (Wang & Aitchison 2024, arXiv
    2402.18824), whose expectation does not depend on the batch size when `micro_batch` is fixed. The micro-batches
    are equal (RunSpec checks that `micro_batch` divides the batch size); one micro-batch gives g and g^2. An epoch's
    last batch, when shorter, may end in a shorter micro-batch: the loss and gradient weigh each part by its share of
    the batch (so they stay the batch's), the squares count each part once."""
    b = batch.shape[1]
    parts = [batch[:, start : start + micro_batch] for start in range(0, b, micro_batch)]
    once = 1.0 / len(parts)
    total_loss, total, squares = None, None, None
    for part in parts:
        share = part.shape[1] / b
        losses, grads = value_and_grads(part)
        if total is None:
            total_loss, total = losses * share, {k: g * share for k, g in grads.items()}
            squares = {k: g * g * once for k, g in grads.items()}
        else:
            total_loss = total_loss + losses * share
            total = {k: total[k] + g * share for k, g in grads.items()}
            squares = {k: squares[k] + g * g * once for k, g in grads.items()}
    return total_loss, total, squares


def per_run_value_and_grads(
    stack: Stack,
    x: torch.Tensor,
    y: torch.Tensor,
    weight: float = 1.0,
    *,
    task: str,
    reduction: str,
    loss_fn: Callable | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Losses [R] and gradients of a generic stack (any nn.Module) by `vmap(grad_and_value(loss of one run))`,
    PyTorch's ensembling recipe. Same values as autograd through the vmapped forward (`batch_losses`), but a
    linear layer's weight gradient comes out in the weight's own layout instead of transposed, so the update
    reads it contiguously (2 CPU cores, the 784-256-256-10 MLP by reference, 32 runs at batch 64: 29.4 -> 23.5
    ms per step, where the recipe itself takes 26; the strided update cost 8 ms of it)."""

    def one(params, buffers, xb, yb):
        out = functional_call(stack.base, (params, buffers), (xb,))
        loss = per_run_loss(out.unsqueeze(0), yb.unsqueeze(0), task, reduction, loss_fn)[0]
        return loss * weight if weight != 1.0 else loss

    stack.base.train(True)
    grads, losses = vmap(grad_and_value(one))(stack.params, stack.buffers, x, y)
    return losses.detach(), grads


def repeat_params(params: dict[str, torch.Tensor], r: int) -> dict[str, torch.Tensor]:
    """One set of weights (unstacked) as R identical stacked copies [R, ...]."""
    return {k: v.detach().unsqueeze(0).expand(r, *v.shape).clone() for k, v in params.items()}


def single_example_stack(
    base: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor] | None, n: int
) -> Stack:
    """n copies of one model's weights (and buffers), ready to take one example each."""
    ref = next(iter(params.values()))
    stack = Stack.from_params(
        base, repeat_params(params, n), None if buffers is None else repeat_params(buffers, n), ref.device, ref.dtype
    )
    for p in stack.params.values():
        p.requires_grad_(True)
    return stack


def per_example_grads(
    base: nn.Module,
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    task: str = "classification",
    buffers: dict[str, torch.Tensor] | None = None,
    bn_mode: str = "eval",
    chunk_size: int = 64,
    loss_fn: Callable | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The gradient of the loss of each example at the given weights: {name: [N, ...]} and losses [N].

    `params` and `buffers` are one model's (unstacked). `bn_mode="eval"` uses BatchNorm's running
    statistics; `"train"` normalises each example by its own statistics, which BatchNorm1d cannot do
    (one value per channel: PyTorch raises ValueError). `loss_fn`: the run's own (see `loss_for`), else the
    task's.
    """
    grads: dict[str, list[torch.Tensor]] = {k: [] for k in params}
    losses = []
    for start in range(0, x.shape[0], chunk_size):
        xc, yc = x[start : start + chunk_size], y[start : start + chunk_size]
        stack = single_example_stack(base, params, buffers, xc.shape[0])
        loss, g = accumulate_grads(
            lambda xb: batch_losses(stack, xb, yc.unsqueeze(1), task=task, bn_mode=bn_mode, loss_fn=loss_fn),
            xc.unsqueeze(1),
            stack.params,
        )
        losses.append(loss)
        for k, v in g.items():
            grads[k].append(v)
    return {k: torch.cat(v) for k, v in grads.items()}, torch.cat(losses)


def per_example_sq_norms(
    base: nn.Module,
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    task: str = "classification",
    buffers: dict[str, torch.Tensor] | None = None,
    chunk_size: int = 256,
    loss_fn: Callable | None = None,
) -> torch.Tensor:
    """||g_i||^2 of every example's gradient (all parameters together), [N], one chunk at a time.

    For an MLP no per-example gradient is formed: a linear layer z = W a + b has the per-example
    gradient dW_i = delta_i a_i^T, whose squared norm is ||delta_i||^2 ||a_i||^2 (Goodfellow 2015,
    "Efficient per-example gradient computations"), and db_i = delta_i. So one ordinary backward
    pass to the pre-activations gives every norm, with memory O(N x width) instead of O(N x params).
    Other models take the general per-example path.
    """
    out = []
    for start in range(0, x.shape[0], chunk_size):
        xc, yc = x[start : start + chunk_size], y[start : start + chunk_size]
        if isinstance(base, MLP):
            out.append(_mlp_sq_norms(base, params, xc, yc, task, loss_fn))
        else:
            g, _ = per_example_grads(
                base, params, xc, yc, task=task, buffers=buffers, chunk_size=chunk_size, loss_fn=loss_fn
            )
            out.append(sum(v.flatten(1).pow(2).sum(1) for v in g.values()))
    return torch.cat(out)


def mlp_deltas(
    base: MLP, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, task: str, loss_fn=None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(a_l, delta_l) per linear layer: its inputs [N, in] and the gradient of example i's own loss at its
    pre-activations [N, out], from one ordinary backward pass. Example i's gradient of layer l is then
    delta_i a_i^T (weight) and delta_i (bias), without ever forming it (Goodfellow 2015). `loss_fn` (the
    user's, a mean of per-example terms) replaces the task's loss."""
    act = ACTIVATION_FNS[base.activation]
    n_layers = sum(1 for k in params if k.endswith(".weight"))
    h = x.flatten(1)
    inputs, pre = [], []
    for i in range(n_layers):
        w = params[f"net.{2 * i}.weight"].detach().requires_grad_(True)  # puts z in the graph
        z = torch.addmm(params[f"net.{2 * i}.bias"].detach(), h, w.t())
        inputs.append(h.detach())
        pre.append(z)
        h = act(z) if i < n_layers - 1 else z
    # the sum of the examples' own losses: its gradient at z_i is example i's delta
    loss = per_run_loss(h.unsqueeze(0), y.unsqueeze(0), task, "sum", loss_fn).sum()
    return list(zip(inputs, torch.autograd.grad(loss, pre)))


def _mlp_sq_norms(
    base: MLP, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, task: str, loss_fn=None
) -> torch.Tensor:
    sq = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for a, d in mlp_deltas(base, params, x, y, task, loss_fn):
        d2 = d.pow(2).sum(1)
        sq += d2 * a.pow(2).sum(1) + d2  # weight, then bias
    return sq.detach()
