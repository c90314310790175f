"""The three ways of taking one step that the equivalence tasks compare, from the same weights theta0:

A  one optimizer step on the whole batch (`batch_step`),
B  one fresh single-example step per example, then the average of the weights (`single_example_steps`,
   vectorised: the examples are the runs of a stack of copies of theta0),
C  the mean of the per-example gradients, applied as one fresh step (`mean_grad_step`).

`estimate_bn_statistics` gives BatchNorm's running statistics at theta0 from training data, for the
single-example passes of B and C in eval mode.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ..engine import RunSpec
from ..engine.optim import StackedOptimizer
from ..engine.step import accumulate_grads, batch_losses, single_example_stack

# A coordinate's update counts as "sign-like" when its size is lr within this fraction (Adam's first step).
SIGN_TOL = 0.01

Tensors = dict[str, torch.Tensor]


def fresh_step(spec: RunSpec, params: Tensors, grads: Tensors) -> None:
    """One update of every run of a stack ([R, ...] tensors) by `spec`'s rule, from a fresh optimizer state."""
    ref = next(iter(params.values()))
    r = ref.shape[0]
    opt = StackedOptimizer([spec] * r, params)
    opt.step(
        params,
        grads,
        torch.full((r,), spec.lr, dtype=ref.dtype, device=ref.device),
        torch.ones(r, dtype=torch.bool, device=ref.device),
    )


def batch_step(
    base: nn.Module, params0: Tensors, buffers0: Tensors | None, x: torch.Tensor, y: torch.Tensor, spec: RunSpec
) -> tuple[Tensors, Tensors]:
    """Approach A: one fresh step of `spec` on the whole batch (mean loss, BatchNorm in train mode).

    Returns the new weights and buffers (BatchNorm's running statistics move once, by the batch's).
    """
    stack = single_example_stack(base, params0, buffers0, 1)
    _, grads = accumulate_grads(
        lambda xb: batch_losses(stack, xb, y.unsqueeze(0), bn_mode="train"), x.unsqueeze(0), stack.params
    )
    fresh_step(spec, stack.params, grads)
    return ({k: v[0].detach() for k, v in stack.params.items()}, {k: v[0] for k, v in stack.buffers.items()})


@torch.no_grad()
def estimate_bn_statistics(
    base: nn.Module, params0: Tensors, buffers0: Tensors, x: torch.Tensor, batch_size: int
) -> Tensors:
    """BatchNorm's running statistics re-estimated at theta0: the batches of `batch_size` examples of `x`, each
    in train mode, and the plain average of their statistics (mean, unbiased variance), which is what
    `torch.optim.swa_utils.update_bn` computes (Izmailov et al. 2018, SWA: momentum None, a cumulative average).

    Why: at initialisation the running statistics are mean 0 and variance 1, so a single-example pass in eval
    mode runs the network un-normalised, a different function from the batch pass; these are the statistics
    a network trained at these weights would carry. `x` holds whole batches (a remainder is left out).
    """
    probe = copy.deepcopy(base)
    for m in probe.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            m.momentum = 1.0  # each pass replaces the running statistics by its batch's; averaged below
    n = x.shape[0] // batch_size
    if n < 1:
        raise ValueError(f"{x.shape[0]} examples hold no batch of {batch_size}")
    sums: Tensors = {}
    for i in range(n):
        stack = single_example_stack(probe, params0, buffers0, 1)
        stack.forward(x[i * batch_size : (i + 1) * batch_size].unsqueeze(0), bn_mode="train")
        for k, b in stack.buffers.items():
            if b.is_floating_point():
                sums[k] = sums[k] + b[0] if k in sums else b[0].clone()
    # a counter (num_batches_tracked) counts the batches, as update_bn's does
    return {k: sums[k] / n if k in sums else torch.full_like(b, n) for k, b in buffers0.items()}


@dataclass
class SingleSteps:
    """What the per-example pass gives: B's weights and buffers, the mean per-example gradient (for C),
    B formed by averaging the updates theta_i - theta0 instead of the weights, and the mean fraction of
    coordinates whose single-example update is sign-like (|step| = lr; counted for Adam only, else 0)."""

    params: Tensors
    buffers: Tensors
    mean_grad: Tensors
    params_from_updates: Tensors
    signlike_single: float


def single_example_steps(
    base: nn.Module,
    params0: Tensors,
    buffers0: Tensors | None,
    x: torch.Tensor,
    y: torch.Tensor,
    spec: RunSpec,
    *,
    bn_mode: str = "eval",
    chunk_size: int = 32,
) -> SingleSteps:
    """Approach B, vectorised: theta_i = one fresh step of `spec` from theta0 on example i alone, then
    mean_i theta_i (summed in the compute dtype, chunk by chunk, as a literal average of weights would be).

    Each chunk is a stack of copies of theta0, copy i seeing example i (`bn_mode`: "eval" normalises by
    the running statistics; "train" by the example's own, impossible for BatchNorm1d).
    """
    n = x.shape[0]
    zeros = {k: torch.zeros_like(v) for k, v in params0.items()}
    sum_params, sum_updates, sum_grads = dict(zeros), dict(zeros), dict(zeros)
    sum_buffers: Tensors = {}
    signlike = 0.0
    n_coords = sum(v.numel() for v in params0.values())
    count_signlike = spec.optimizer in ("adam", "adamw")  # only Adam's steps can be sign-like
    for start in range(0, n, chunk_size):
        xc, yc = x[start : start + chunk_size], y[start : start + chunk_size]
        stack = single_example_stack(base, params0, buffers0, xc.shape[0])
        _, grads = accumulate_grads(
            lambda xb: batch_losses(stack, xb, yc.unsqueeze(1), bn_mode=bn_mode), xc.unsqueeze(1), stack.params
        )
        fresh_step(spec, stack.params, grads)
        near_lr = torch.zeros(xc.shape[0], dtype=torch.float64, device=x.device)
        with torch.no_grad():
            for k, p in stack.params.items():
                update = p - params0[k]
                sum_params[k] = sum_params[k] + p.sum(0)
                sum_updates[k] = sum_updates[k] + update.sum(0)
                sum_grads[k] = sum_grads[k] + grads[k].sum(0)
                if count_signlike:
                    near_lr += ((update.abs() - spec.lr).abs() <= SIGN_TOL * spec.lr).flatten(1).sum(1).double()
            for k, b in stack.buffers.items():
                if b.is_floating_point():
                    sum_buffers[k] = sum_buffers[k] + b.sum(0) if k in sum_buffers else b.sum(0)
                else:  # a counter (num_batches_tracked): the same in every copy
                    sum_buffers[k] = b[0]
        signlike += float(near_lr.sum()) / n_coords
    buffers = {k: (v / n if v.is_floating_point() else v) for k, v in sum_buffers.items()}
    return SingleSteps(
        params={k: v / n for k, v in sum_params.items()},
        buffers=buffers,
        mean_grad={k: v / n for k, v in sum_grads.items()},
        params_from_updates={k: params0[k] + v / n for k, v in sum_updates.items()},
        signlike_single=signlike / n,
    )


def mean_grad_step(params0: Tensors, mean_grad: Tensors, spec: RunSpec) -> Tensors:
    """Approach C: the mean per-example gradient applied as one fresh step of `spec` from theta0."""
    params = {k: v.detach().clone().unsqueeze(0) for k, v in params0.items()}
    fresh_step(spec, params, {k: v.unsqueeze(0) for k, v in mean_grad.items()})
    return {k: v[0] for k, v in params.items()}
