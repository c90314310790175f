"""Step paths: the arithmetic of a training step, chosen once per chunk by `choose_path` (a group is split by path
first: `split_by_path`).

- `autograd`: autograd's backward pass and the optimizer's update rule; computes every run (the reference). A user's
  model (RunSpec.model a reference "package.module:factory") always takes it: the generic stacked step, the loss
  through `vmap(functional_call)` over the stacked parameters and buffers (models/stack.py).
- `compiled`: the same with torch.compile's kernels, and on CUDA the step replayed from CUDA graphs.
- `folded`: plain SGD on an MLP with the update inside the weight-gradient matmul (engine/fold.py).

A path is a `StepPath` (base.py); a new one is a copy of autograd.py, added to PATHS below.
"""

from __future__ import annotations

import os

import torch

from ..spec import RunSpec
from .autograd import AutogradPath, CompiledPath
from .base import StepPath
from .folded import FoldedPath

PATHS: dict[str, type[StepPath]] = {p.name: p for p in (AutogradPath, CompiledPath, FoldedPath)}
REQUESTS = ("auto", *PATHS)


def choose_path(
    specs: list[RunSpec], device: torch.device, request: str = "auto", task: str = "classification"
) -> tuple[type[StepPath], str]:
    """The step path of a group of runs on `device`, and the reason it was chosen (recorded with each run).

    `request="auto"`: the folded step where it applies, on the CPU always and on CUDA with BATCHLAB_FOLD_CUDA=1
    (opt-in until a GPU has timed it against the compiled step: benchmarks/fold_ablation.py); else the compiled
    step on CUDA and the autograd step on the CPU. A path asked for by name is taken where it can compute
    these runs, else what "auto" takes without the folded step. `task`: the data's ("classification" or
    "regression"). Environment variables are read here, at each call.
    """
    cuda = device.type == "cuda"
    default = CompiledPath if cuda else AutogradPath
    if request == "auto":
        fold_on_cuda = os.environ.get("BATCHLAB_FOLD_CUDA", "0") == "1"
        if not cuda:
            wanted, why = [FoldedPath, default], "auto on the CPU"
        elif fold_on_cuda:
            wanted, why = [FoldedPath, default], "auto on CUDA with BATCHLAB_FOLD_CUDA=1"
        else:
            wanted, why = [default], "auto on CUDA (the folded step is opt-in there: BATCHLAB_FOLD_CUDA=1)"
    elif request in PATHS:
        wanted, why = [PATHS[request], default], f"{request} asked for"
    else:
        raise ValueError(f"unknown step path {request!r}; choose one of {', '.join(REQUESTS)}")
    reasons = [why]
    for path in dict.fromkeys([*wanted, AutogradPath]):
        blocker = path.blocker(specs, device, task)
        if blocker is None:
            return path, "; ".join(reasons)
        reasons.append(f"not {path.name}: {blocker}")
    raise AssertionError("the autograd path computes every run")


def split_by_path(
    specs: list[RunSpec], device: torch.device, request: str = "auto", task: str = "classification"
) -> list[list[int]]:
    """The indices of `specs` by the step path each run would take alone, in the order of their first run.

    A group trains as one part per path, so a run's arithmetic never depends on the runs beside it: a plain SGD
    run beside a momentum run took the autograd step, and the folded one once the other was stored (after a
    resume of linear-scaling its float32 numbers moved by 1.1e-7; after an out-of-memory halving, by 7.2e-6)."""
    parts: dict[type[StepPath], list[int]] = {}
    for i, spec in enumerate(specs):
        parts.setdefault(choose_path([spec], device, request, task)[0], []).append(i)
    return list(parts.values())


__all__ = [
    "PATHS",
    "REQUESTS",
    "StepPath",
    "AutogradPath",
    "CompiledPath",
    "FoldedPath",
    "choose_path",
    "split_by_path",
]
