"""The autograd step: per-run losses, autograd's backward pass, then the optimizer's update rule.

It computes every run the engine accepts (any model, optimizer, precision, micro-batches), so it is the
reference the other paths are tested against. `CompiledPath` is the same step with torch.compile's kernels.
A new path starts as a copy of this file: a StepPath subclass with a `name`, a `blocker` that says which runs
it cannot compute, and a `step` that ends with `state.advance`; `choose_path` (paths/__init__.py) lists it.
"""

from __future__ import annotations

import os

import torch

from ..device import can_compile
from ..state import GroupState
from ..step import (
    accumulate,
    accumulate_grads,
    accumulate_squares,
    autograd_value_and_grads,
    batch_losses,
    per_run_value_and_grads,
)
from .base import StepPath


def matvec_max_batch() -> int:
    """Batches up to this size use the compiled multiply-sum layers of `stacked_mlp_forward` when a group has
    several runs (H100, batch 2: 3 runs 158 us/step vs 210 with cuBLAS; 1 run 109 vs 98.5, so a single run keeps
    cuBLAS; benchmarks/small_batch.py measures it). BATCHLAB_MATVEC_MAX_BATCH, read when a path is made."""
    return int(os.environ.get("BATCHLAB_MATVEC_MAX_BATCH", "4"))


class AutogradPath(StepPath):
    """Eager: one kernel per elementwise operation, cuBLAS matmuls, no CUDA graphs (the plain path)."""

    name = "autograd"

    def __init__(self, state: GroupState):
        super().__init__(state)
        head = state.specs[0]
        self.precision, self.reduction, self.micro_batch = head.precision, head.loss_reduction, head.micro_batch
        self.losses, self.update = self.eager_losses, self.eager_update  # CompiledPath compiles them
        self.micro_batch_squares = head.adam_second_moment == "micro-batch"

    def step(self, batch_size: int) -> None:
        idx = self.state.batch_indices(batch_size)
        if self.micro_batch_squares:  # batch-size-invariant Adam: v from the micro-batches' squared gradients
            s = self.state
            grads_of = self.generic_grads if s.stack.generic else autograd_value_and_grads(self.losses, s.stack.params)
            losses, grads, squares = accumulate_squares(grads_of, idx, self.micro_batch)
            return self.update(losses, grads, batch_size, squares)
        if self.state.stack.generic:  # any nn.Module: PyTorch's ensembling recipe, vmap(grad(loss of one run))
            losses, grads = accumulate(self.generic_grads, idx, micro_batch=self.micro_batch, reduction=self.reduction)
        else:
            losses, grads = accumulate_grads(
                self.losses, idx, self.state.stack.params, micro_batch=self.micro_batch, reduction=self.reduction
            )
        self.update(losses, grads, batch_size)

    def generic_grads(self, idx: torch.Tensor, weight: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-run losses and gradients of a user's model on the examples `idx` [R, b]."""
        s = self.state
        x, y = s.data.x_train[idx], s.data.y_train[idx]
        with torch.autocast(s.device.type, torch.bfloat16, enabled=self.precision == "bf16"):
            return per_run_value_and_grads(
                s.stack, x, y, weight, task=s.data.task, reduction=self.reduction, loss_fn=s.loss_fn
            )

    def eager_losses(self, idx: torch.Tensor) -> torch.Tensor:
        """Per-run loss of each run's batch, gathered on the device."""
        s = self.state
        autocast = torch.autocast(s.device.type, torch.bfloat16) if self.precision == "bf16" else None
        return batch_losses(
            s.stack,
            s.data.x_train[idx],
            s.data.y_train[idx],
            task=s.data.task,
            reduction=self.reduction,
            autocast=autocast,
            loss_fn=s.loss_fn,
        )

    def eager_update(
        self,
        losses: torch.Tensor,
        grads: dict[str, torch.Tensor],
        batch_size: int,
        squares: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """Divergence mask, this step's lr from the table, the update, the counters (`squares`: Adam's second-moment
        input when it is not the gradient's square)."""
        s = self.state
        lr = s.check_losses(losses)
        s.optimizer.step(s.stack.params, grads, lr, s.alive, consume_grads=True, squares=squares)
        s.advance(batch_size)


class CompiledPath(AutogradPath):
    """The autograd step with torch.compile merging the loss, and the bookkeeping with the optimizer's update,
    into a few generated kernels (each weight read once per update instead of once per elementwise op); on
    CUDA the whole step is replayed from CUDA graphs, and tiny batches of a group of several runs take the
    multiply-sum layers (`matvec_max_batch`)."""

    name = "compiled"
    graphs = True

    @staticmethod
    def blocker(specs, device, task) -> str | None:
        if specs[0].user_model:
            return "a user's model (the generic stacked path is eager)"
        return None if can_compile(device) else "no C++ compiler (torch.compile needs one on the CPU)"

    def __init__(self, state: GroupState):
        super().__init__(state)
        self.losses = torch.compile(self.eager_losses)
        self.update = torch.compile(self.eager_update)
        state.stack.matvec_max_batch = matvec_max_batch() if len(state.specs) > 1 else 0
