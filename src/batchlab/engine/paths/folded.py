"""The folded SGD step: plain SGD on an MLP, the update inside the weight-gradient matmul (engine/fold.py)."""

from __future__ import annotations

import math

import torch

from ...models import model_traits
from ..fold import DEFER_ROWS, FoldedSGD
from ..optim import RULES, SGD
from ..state import GroupState
from .autograd import CompiledPath, matvec_max_batch
from .base import StepPath


class FoldedPath(StepPath):
    """Forward, loss gradient and update written out, no autograd, no separate optimizer pass.

    The CPU keeps activations batch-major, defers tiny batches' updates of the big layers (FoldedSGD's
    factors, added to the weights by `flush`) and pads 4 KiB weight rows; CUDA keeps them feature-major and
    gives batches of at most `matvec_max_batch` examples to the compiled step's multiply-sum layers.
    `feature_major` and `defer_rows` (None: the device's) choose the layout and the deferral for a test or
    a benchmark.
    """

    name = "folded"
    graphs = True

    @staticmethod
    def blocker(specs, device, task) -> str | None:
        """Only plain SGD on a model whose forward the fold writes out (an MLP), with cross-entropy."""
        head = specs[0]
        if not model_traits(head.model).folds:
            return f"model {head.model}"
        if task != "classification":
            return f"task {task}"
        if head.loss != "auto":  # the fold writes cross-entropy's gradient out
            return f"loss {head.loss}"
        if head.precision == "bf16":
            return "bf16 autocast"
        if head.micro_batch is not None:
            return "micro-batches"
        for s in specs:
            if s.optimizer != "sgd" or s.momentum > 0 or s.weight_decay > 0:
                return f"optimizer {s.optimizer} (momentum {s.momentum}, weight decay {s.weight_decay})"
        if type(RULES["sgd"]) is not SGD:  # a rule registered in SGD's place is respected
            return f"a registered sgd rule ({type(RULES['sgd']).__name__})"
        return None

    def __init__(self, state: GroupState, feature_major: bool | None = None, defer_rows: int | None = None):
        super().__init__(state)
        head, cuda = state.specs[0], state.device.type == "cuda"
        self.fold = FoldedSGD(
            head.activation,
            len(head.widths) + 1,
            head.loss_reduction,
            cuda if feature_major is None else feature_major,
            (0 if cuda else DEFER_ROWS) if defer_rows is None else defer_rows,
        )
        self.tiny = CompiledPath(state) if cuda else None
        self.min_batch = matvec_max_batch() if cuda else 0  # batches up to this size take `tiny`
        if not cuda:
            state.stack.pad_rows()  # the folded step's matmuls walk down the weights' columns

    def step(self, batch_size: int) -> None:
        if batch_size <= self.min_batch:
            self.flush()
            return self.tiny.step(batch_size)
        s = self.state
        idx = s.batch_indices(batch_size)
        y = s.data.y_train[idx]
        params = s.stack.params  # as they are: the fold adds or keeps its deferred updates itself
        logits, cache = self.fold.forward(params, s.data.x_train[idx])
        if self.all_alive_and_finite(logits):
            lr, mask = s.lrs[int(s.epoch_step)], False
        else:
            lr, mask = s.check_losses(self.fold.losses(logits, y)), True
        self.fold.backward_update(params, logits, y, cache, lr, s.alive, mask)
        s.optimizer.t += 1  # the fold is SGD's update: it counts the optimizer's steps as StackedOptimizer.step does
        s.advance(batch_size)
        return None

    def all_alive_and_finite(self, logits: torch.Tensor) -> bool:
        """Every run alive and its logits finite (so its loss too): a free check on the CPU, after which the
        step needs no per-run losses, no divergence bookkeeping and no masks (a dozen operations fewer); never
        on CUDA, where it would wait for the device."""
        s = self.state
        return s.device.type == "cpu" and bool(s.alive.all()) and math.isfinite(logits.sum().item())

    def flush(self) -> None:
        if self.fold.rows:
            self.fold.flush(self.state.stack.params)
