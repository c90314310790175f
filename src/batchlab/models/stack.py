"""T independent copies of one architecture as stacked tensors, run with torch.func.

Parameters and buffers live in dicts of tensors with a leading run dimension [R, ...]; the forward
pass is `vmap(functional_call(base, ...))`, so one batched kernel serves every run (the
model-ensembling recipe of torch.func). Each copy is initialised from its own seed.

This is also the generic path of any nn.Module (a user's, `from_modules`): BatchNorm's running statistics are
buffers stacked per run, [R, C], handed to `functional_call` under `vmap`, where BatchNorm updates each run's slice
in place in training mode (no `replace_all_batch_norm_modules_`, which would drop them); evaluation reads them.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from .init import init_module
from .mlp import MLP, stacked_mlp_forward


def init_params(base: nn.Module, init: str, seed: int) -> dict[str, torch.Tensor]:
    """Parameters of one copy of `base`, initialised from `seed` alone (on the CPU, float64-free)."""
    module = copy.deepcopy(base).to("cpu", torch.float32)
    init_module(module, init, torch.Generator().manual_seed(int(seed)))
    return {name: p.detach().clone() for name, p in module.named_parameters()}


class Stack:
    """A stack of R copies of `base`: `params[name]` and `buffers[name]` are [R, ...] tensors."""

    def __init__(self, base: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor]):
        self.base = base
        self.matvec_max_batch = 0  # see stacked_mlp_forward; the engine raises it when it compiles
        self.params = params
        self.buffers = buffers
        # every architecture through vmap(functional_call) (the user's models; a test's check of the fast path)
        self.generic = False

    @classmethod
    def from_seeds(cls, base: nn.Module, init: str, seeds: list[int], device, dtype) -> "Stack":
        """R copies, each initialised from its own seed (what training runs start from)."""
        per_run = [init_params(base, init, s) for s in seeds]
        params = {k: torch.stack([p[k] for p in per_run]) for k in per_run[0]}
        buffers = {k: torch.stack([b.detach().clone() for _ in seeds]) for k, b in base.named_buffers()}
        return cls.from_params(base, params, buffers, device, dtype)

    @classmethod
    def from_modules(cls, modules: list[nn.Module], device, dtype) -> "Stack":
        """R copies from R built modules (a user's factory called once per run seed): their parameters and
        buffers stacked with `torch.func.stack_module_state`, on the generic path."""
        params, buffers = stack_module_state(modules)
        stack = cls.from_params(
            modules[0],
            {k: v.detach() for k, v in params.items()},
            {k: v.detach() for k, v in buffers.items()},
            device,
            dtype,
        )
        stack.generic = True
        return stack

    @classmethod
    def from_params(
        cls, base: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor] | None, device, dtype
    ) -> "Stack":
        """A stack of given weights: `params[name]` (and `buffers`) already [R, ...] (a checkpoint, or one
        set of weights repeated R times to step each copy on its own examples)."""
        params = {k: torch.as_tensor(v).to(device, dtype).clone() for k, v in params.items()}
        if buffers is None:  # fresh buffers (BatchNorm: mean 0, variance 1, no batches tracked)
            r = next(iter(params.values())).shape[0]
            buffers = {k: torch.stack([b.detach().clone() for _ in range(r)]) for k, b in base.named_buffers()}
        buffers = {
            k: torch.as_tensor(v).to(device, dtype if torch.as_tensor(v).is_floating_point() else None).clone()
            for k, v in buffers.items()
        }
        base = copy.deepcopy(base).to("meta")  # the stack owns the tensors; base is only a template
        return cls(base, params, buffers)

    def pad_rows(self, multiple: int = 1024, extra: int = 16) -> None:
        """Give each weight matrix whose rows are `multiple` floats long (4 KiB) `extra` unused floats (64 bytes)
        after every row: rows 4 KiB apart share the CPU's cache sets, which slows the matmuls that walk down a
        column. Measured on 2 cores, 32 runs of 784-1024-1024-10 at batch 64: 109 ms a step, 99 ms padded (no
        change for 256-wide rows, and within noise at batch 2). The weights become views into the padded
        storage; their values are unchanged."""
        for name, w in self.params.items():
            if w.dim() == 3 and w.shape[2] % multiple == 0:
                padded = w.new_empty(*w.shape[:2], w.shape[2] + extra)[:, :, : w.shape[2]]
                padded.copy_(w.detach())
                self.params[name] = padded.requires_grad_(w.requires_grad)

    @property
    def n_runs(self) -> int:
        return next(iter(self.params.values())).shape[0]

    def forward(self, x: torch.Tensor, *, shared_input: bool = False, bn_mode: str = "train") -> torch.Tensor:
        """Logits [R, B, ...] for inputs x [R, B, ...] (or [B, ...] given to every run when shared_input).

        bn_mode: "train" normalises BatchNorm layers by the batch's statistics and updates the running
        statistics in `buffers`; "eval" uses the running statistics and leaves them unchanged.
        """
        if bn_mode not in ("train", "eval"):
            raise ValueError(f"bn_mode must be 'train' or 'eval', got {bn_mode!r}")
        self.base.train(bn_mode == "train")
        if isinstance(self.base, MLP) and not self.generic:  # the direct batched-matmul path (same math, fewer kernels)
            return stacked_mlp_forward(self.params, x, self.base.activation, matvec_max_batch=self.matvec_max_batch)

        def one(params, buffers, xb):
            return functional_call(self.base, (params, buffers), (xb,))

        return vmap(one, in_dims=(0, 0, None if shared_input else 0))(self.params, self.buffers, x)

    def module(self, r: int) -> nn.Module:
        """Run r as an ordinary nn.Module (a copy), for inspection or a reference loop."""
        m = copy.deepcopy(self.base).to_empty(device=next(iter(self.params.values())).device)
        m.load_state_dict({**{k: v[r] for k, v in self.params.items()}, **{k: v[r] for k, v in self.buffers.items()}})
        return m
