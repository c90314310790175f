"""Group scheduling: runs partitioned into groups that step in lock-step, each trained in chunks that fit.

A group is trained in chunks of at most `runs_that_fit` runs (an estimate), each of runs that take the same step
path (`split_by_path`); a chunk that still does not fit is halved and tried again. A chunk interrupted earlier (a
kept PartialState) is trained first, as it was.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..datasets import Dataset
from ..errors import UsageError
from ..models import activation_elements, model_traits
from .data import check_run, load_for, template_model
from .device import resolve_device
from .paths import split_by_path
from .spec import RunSpec, group_key
from .state import PartialState
from .train import (
    ChunkCallback,
    EpochCallback,
    GroupTrainer,
    MetricsCallback,
    PartialCallback,
    ProgressCallback,
    RunResult,
)


def partition(specs: list[RunSpec]) -> list[list[RunSpec]]:
    """Runs with the same group key together, in the order of their first run."""
    groups: dict[str, list[RunSpec]] = {}
    for spec in specs:
        groups.setdefault(group_key(spec), []).append(spec)
    return list(groups.values())


def _float(data: Dataset, base: torch.nn.Module) -> torch.dtype:
    """The dtype a model's inputs keep: integer inputs (token ids) as they are, floats as the model's."""
    x = data.x_train
    return next(base.parameters()).dtype if x.is_floating_point() else x.dtype


def runs_that_fit(spec: RunSpec, data: Dataset, device: torch.device, fraction: float = 0.6) -> int:
    """How many runs of this kind fit in device memory at once (the engine chunks groups by it)."""
    base = template_model(spec, data)
    n_params = sum(p.numel() for p in base.parameters())
    bytes_per = 8 if spec.precision == "float64" else 4
    max_batch = max(spec.batch_size_at(e) for e in range(max(spec.epochs, 1)))
    if spec.user_model:  # every submodule's output on one example, measured; kept for the backward pass
        activations = activation_elements(base.to(data.x_train.device), data.x_train[:1].to(_float(data, base)))
    else:  # the widest layer's, per layer, as for an MLP, scaled by what the model declares
        width = max([data.input_dim, *spec.widths]) * model_traits(spec.model).step_activations
        activations = width * (len(spec.widths) + 2)
    # params, init copy, grads, two optimizer buffers, update temporaries; activations of a step
    per_run = bytes_per * (7 * n_params + 6 * min(max_batch, data.n_train) * activations)
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return max(1, int(free * fraction // per_run))


class OutOfMemory(UsageError):
    """Even one run does not fit the device: one line for the user, no traceback."""


def is_out_of_memory(e: BaseException) -> bool:
    """A device allocation failure: CUDA's OutOfMemoryError, or the CPU allocator's RuntimeError."""
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    return isinstance(e, (oom, torch.cuda.OutOfMemoryError, MemoryError)) or (
        isinstance(e, RuntimeError) and "can't allocate memory" in str(e)
    )


def train_group(
    specs: list[RunSpec],
    *,
    device: str | torch.device = "auto",
    on_epoch: EpochCallback | None = None,
    max_runs: int | None = None,
    keep_params: bool = False,
    data_dir: str | None = None,
    path: str = "auto",
    on_chunk: ChunkCallback | None = None,
    checkpoints: set[int] | frozenset[int] = frozenset(),
    start: dict[str, np.ndarray] | None = None,
    orders: list | None = None,
    on_metrics: MetricsCallback | None = None,
    on_progress: ProgressCallback | None = None,
    on_partial: PartialCallback | None = None,
    resume: tuple[PartialState, ...] | list[PartialState] = (),
) -> list[RunResult]:
    """Train runs that share a group key in lock-step, chunked to fit memory; results in input order.

    `path`: the step path asked for (`choose_path`: "auto", or "autograd" for the plain eager path,
    "compiled", "folded"). `on_chunk` receives each chunk's results as soon as they exist (the driver stores
    them then, so an interrupted group keeps its finished chunks). `checkpoints`: epochs after which every
    run's weights are kept (0: the init). `start` and `orders`: given initial weights ([R, ...] arrays) and
    example orders, as for GroupState. `on_metrics(epoch, step, {run key: {metric: value}})` hears every
    evaluation; `on_progress` and `on_partial`: see `GroupTrainer.run`. `resume`: states kept by
    `on_partial`; a chunk of exactly those runs is trained first and continues where it stopped.
    """
    if not specs:
        return []
    keys = {group_key(s) for s in specs}
    if len(keys) != 1:
        raise ValueError("train_group: runs differ in fields that must be shared (model, data, batch schedule, ...)")
    device = resolve_device(device)
    check_run(specs[0], device, data_dir)  # a user's model, data or loss: checked on two examples first
    data = load_for(specs[0], device, data_dir)
    chunk = min(max_runs or len(specs), runs_that_fit(specs[0], data, device))
    index = {s.key: i for i, s in enumerate(specs)}
    parts = split_by_path(specs, device, path, data.task)
    part_of = {i: n for n, part in enumerate(parts) for i in part}
    resumed: list[tuple[list[int], PartialState]] = []  # (run indices, kept state): trained first, as they were
    taken: set[int] = set()
    for partial in resume:
        idx = [index.get(k, -1) for k in partial.keys]
        if (
            -1 not in idx
            and not taken & set(idx)
            and len({part_of[i] for i in idx}) == 1  # kept by a version that mixed step paths in a chunk: not used
            and partial.has_checkpoints(checkpoints)
        ):
            resumed.append((idx, partial))
            taken |= set(idx)
    # per step path (its number in `parts`), the runs still to train
    rest = {n: left for n, part in enumerate(parts) if (left := [i for i in part if i not in taken])}
    results: list[RunResult | None] = [None] * len(specs)
    while resumed or rest:
        idx, partial = resumed[0] if resumed else (next(iter(rest.values()))[:chunk], None)
        n = part_of[idx[0]]
        part = [specs[i] for i in idx]
        part_start = None if start is None else {k: np.asarray(v)[idx] for k, v in start.items()}
        part_orders = None if orders is None else [orders[i] for i in idx]
        try:
            trainer = GroupTrainer(part, data, device, path, part_start, part_orders)
            done = trainer.run(
                on_epoch,
                keep_params,
                checkpoints,
                on_metrics=on_metrics,
                on_progress=on_progress,
                on_partial=on_partial,
                resume=partial,
            )
        except (RuntimeError, MemoryError) as e:
            if not is_out_of_memory(e):
                raise
            del e  # the traceback holds the failed chunk's tensors
            if partial is not None:  # the interrupted chunk does not fit any more: its runs start again
                resumed.pop(0)
                rest[n] = sorted(rest.get(n, []) + idx)
            elif len(idx) == 1:
                s = part[0]
                raise OutOfMemory(
                    f"out of memory on {device} for a single run ({s.model} {list(s.widths)}, batch "
                    f"{s.batch_size}, {s.precision}): use a smaller batch_size or model, micro_batch, or another device"
                ) from None
            else:
                chunk = max(1, len(idx) // 2)  # the estimate was optimistic: halve this chunk and retry
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        if on_chunk:
            on_chunk(done)
        for i, result in zip(idx, done):
            results[i] = result
        if partial is not None:
            resumed.pop(0)
        else:
            rest[n] = rest[n][len(idx) :]
            if not rest[n]:
                del rest[n]
    return results
