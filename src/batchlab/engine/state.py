"""A group's training state on the device, and the host copies that let an interrupted chunk resume exactly.

`GroupState` holds every tensor a step reads or changes (so a step can be graph-captured): the stacked
weights, the optimizer, each run's lr table, the alive and diverged flags, the step count and the position in
the epoch's order. A step path (engine/paths) computes each step on it and calls `advance()`.
`PartialState` is what an interrupted chunk keeps on the host to continue to the numbers of an uninterrupted
run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..datasets import Dataset
from ..errors import UsageError
from ..models import Stack
from .data import compute_dtype, data_order, loss_for, template_model
from .optim import StackedOptimizer
from .schedules import epoch_lrs, epoch_plan
from .spec import RunSpec


@dataclass(eq=False)
class PartialState:
    """A chunk interrupted after `epoch` finished epochs: what its runs need to continue exactly.

    `keys`: the runs, in the chunk's order. `arrays`: stacked [R, ...] host arrays of every tensor that
    training changes (GroupState.tensors: weights, buffers, optimizer state and step count, the alive and
    diverged flags) and the checkpoints kept so far ("checkpoint:<epoch>:param:<name>"). `meta`: the step
    count, the wall time so far and the metric records so far (plain JSON).
    """

    keys: tuple[str, ...]
    epoch: int
    meta: dict
    arrays: dict[str, np.ndarray] = field(repr=False)

    def has_checkpoints(self, epochs) -> bool:
        """Whether it holds every checkpoint of `epochs` that lies before its epoch (else it cannot stand in)."""
        return all(any(k.startswith(f"checkpoint:{e}:") for k in self.arrays) for e in epochs if e <= self.epoch)


class GroupState:
    """The device state of a chunk of runs that share a group key.

    `start` (optional) gives the runs' initial weights instead of their seeds' init: {"param:<name>":
    [R, ...], "buffer:<name>": [R, ...]}. `orders` (optional) gives each run its own example order
    instead of `data_order(seed, epoch)`: per run None, an index array [n_train] used every epoch, or
    [epochs, n_train], one row per epoch.
    """

    def __init__(
        self,
        specs: list[RunSpec],
        data: Dataset,
        device: torch.device,
        start: dict[str, np.ndarray] | None = None,
        orders: list | None = None,
    ):
        self.specs, self.data, self.device = specs, data, device
        head = specs[0]
        self.dtype = compute_dtype(head.precision)
        base = template_model(head, data)
        self.loss_fn = loss_for(head)  # the user's loss function, None for "auto"
        if start is None and head.user_model:  # the user's factory builds each run's copy from the run's seed
            modules = [base] + [template_model(s, data) for s in specs[1:]]
            check_same_architecture(head.model, [s.seed for s in specs], modules)
            self.stack = Stack.from_modules(modules, device, self.dtype)
        elif start is None:
            self.stack = Stack.from_seeds(base, head.init, [s.seed for s in specs], device, self.dtype)
        else:
            self.stack = Stack.from_params(
                base,
                {k.removeprefix("param:"): torch.as_tensor(v) for k, v in start.items() if k.startswith("param:")},
                {k.removeprefix("buffer:"): torch.as_tensor(v) for k, v in start.items() if k.startswith("buffer:")},
                device,
                self.dtype,
            )
            self.stack.generic = head.user_model
        self.plan = epoch_plan(head, data.n_train)  # per epoch: (batch size, steps)
        self.orders = check_orders(orders, len(specs), data.n_train, len(self.plan))
        self.init = {k: v.detach().clone() for k, v in self.stack.params.items()}
        for p in self.stack.params.values():
            p.requires_grad_(True)
        self.optimizer = StackedOptimizer(specs, self.stack.params)
        # this epoch's lr per step and run [steps, R], written at each epoch's start (`start_epoch`) in place: CUDA
        # graphs read it where it is
        self.lrs = torch.zeros((max((n for _, n in self.plan), default=0), len(specs)), device=device, dtype=self.dtype)
        self.epoch_step = torch.zeros((), dtype=torch.long, device=device)  # the step's row in `lrs`
        r = len(specs)
        self.alive = torch.ones(r, dtype=torch.bool, device=device)
        self.diverged_step = torch.full((r,), -1, dtype=torch.long, device=device)
        self.step_t = torch.zeros((), dtype=torch.long, device=device)  # global step, on device
        self.offset = torch.zeros((), dtype=torch.long, device=device)  # position in the epoch's order
        self.perm = torch.empty((r, data.n_train), dtype=torch.long, device=device)  # static: graphs read it
        self.arange = torch.arange(data.n_train, device=device)

    def start_epoch(self, epoch: int) -> None:
        n = self.data.n_train
        given = self.orders or [None] * len(self.specs)
        order = torch.stack(
            [data_order(s.order_seed, epoch, n) if o is None else o[epoch] for s, o in zip(self.specs, given)]
        )
        self.perm.copy_(order)
        self.offset.zero_()
        steps = self.plan[epoch][1]
        lrs = np.stack([epoch_lrs(s, epoch, steps) for s in self.specs], axis=1)
        self.lrs[:steps].copy_(torch.as_tensor(lrs, dtype=self.dtype))
        self.epoch_step.zero_()

    def batch_indices(self, batch_size: int) -> torch.Tensor:
        """[R, b]: each run's next batch in its order. On the CPU, where reading the position costs
        nothing, a slice instead of three index kernels."""
        if self.device.type == "cpu":
            offset = int(self.offset)
            return self.perm[:, offset : offset + batch_size]
        return self.perm.index_select(1, self.offset + self.arange[:batch_size])

    def check_losses(self, losses: torch.Tensor) -> torch.Tensor:
        """A run whose loss is not finite stops (diverged); returns this step's lr [R] from the table."""
        finite = torch.isfinite(losses)
        self.diverged_step.copy_(torch.where(self.alive & ~finite, self.step_t, self.diverged_step))
        self.alive &= finite
        return self.lrs.index_select(0, self.epoch_step.view(1)).squeeze(0)  # no host sync, unlike lrs[epoch_step]

    def advance(self, batch_size: int) -> None:
        """The end of every step, whatever its path: one step done, `batch_size` examples further in the order."""
        self.step_t += 1
        self.epoch_step += 1
        self.offset += batch_size

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor that training changes: weights, buffers, optimizer state, flags, the step count (the
        caller flushes its step path first, so that the weights are current)."""
        out = {f"param:{k}": v for k, v in self.stack.params.items()}
        out |= {f"buffer:{k}": v for k, v in self.stack.buffers.items()}
        out |= {f"opt:{p}:{k}": v for p, st in self.optimizer.state.items() for k, v in st.items()}
        return out | {
            "opt:t": self.optimizer.t,
            "alive": self.alive,
            "diverged": self.diverged_step,
            "step": self.step_t,
        }

    def restore(self, partial: PartialState) -> None:
        """Put an interrupted chunk's kept state (the same runs, in the same order) into this state."""
        if partial.keys != tuple(s.key for s in self.specs):
            raise ValueError("the kept state is of other runs than this chunk's")
        live = self.tensors()
        for name, t in live.items():
            if name not in partial.arrays or tuple(partial.arrays[name].shape) != tuple(t.shape):
                raise ValueError(f"the kept state does not fit these runs: {name!r} is missing or of another shape")
        with torch.no_grad():
            for name, t in live.items():
                t.copy_(torch.tensor(partial.arrays[name]))

    def host_copy(self, epochs: int, steps: int, n_records: int) -> HostCopy:
        """The state as host copies: on CUDA into pinned memory without waiting (an event tells when done)."""
        cuda = self.device.type == "cuda"
        tensors = {k: v.detach().to("cpu", non_blocking=cuda, copy=True) for k, v in self.tensors().items()}
        event = None
        if cuda:
            event = torch.cuda.Event()
            event.record()
        return HostCopy(epochs, steps, n_records, tensors, event, time.perf_counter())


@dataclass(eq=False)
class HostCopy:
    """A GroupState copied to the host at an epoch's end (`epochs` done, `steps` taken, `records` evaluations)."""

    epochs: int
    steps: int
    records: int
    tensors: dict[str, torch.Tensor] = field(repr=False)
    event: torch.cuda.Event | None
    t: float  # when it was taken (perf_counter)

    def partial(self, keys: tuple[str, ...], records: list[dict], saved: dict, wall: float) -> PartialState:
        """The kept state: this copy, the records and the checkpoints up to its epoch, the wall time so far."""
        if self.event is not None:
            self.event.synchronize()
        arrays = {k: v.numpy() for k, v in self.tensors.items()}
        for e, per_run in saved.items():
            if e <= self.epochs:
                arrays |= {f"checkpoint:{e}:{n}": np.stack([run[n] for run in per_run]) for n in per_run[0]}
        meta = {"step": self.steps, "wall_s": wall, "records": [host_record(r) for r in records[: self.records]]}
        return PartialState(keys, self.epochs, meta, arrays)


def check_same_architecture(ref: str, seeds: list[int], modules: list) -> None:
    """The copies a user's factory built for the runs' seeds have the same parameters and buffers (names, shapes,
    dtypes), so that they stack; else a UsageError naming the factory and two seeds."""

    def layout(m):
        return [(k, tuple(v.shape), v.dtype) for k, v in [*m.named_parameters(), *m.named_buffers()]]

    first = layout(modules[0])
    for seed, m in zip(seeds[1:], modules[1:]):
        if layout(m) != first:
            raise UsageError(
                f"model factory {ref!r} built different parameters for seeds {seeds[0]} and {seed}: the runs of a "
                "group must share an architecture (take the architecture from model_args, not from the seed)"
            )


def check_orders(orders, runs: int, n: int, epochs: int) -> list | None:
    """Given example orders as [epochs, n] index tensors per run (None: the run's own `data_order`)."""
    if orders is None:
        return None
    if len(orders) != runs:
        raise ValueError(f"orders: one entry per run expected ({runs}), got {len(orders)}")
    out = []
    for r, order in enumerate(orders):
        if order is None:
            out.append(None)
            continue
        o = torch.as_tensor(np.asarray(order), dtype=torch.long)
        if o.dim() == 1:
            o = o.unsqueeze(0).expand(epochs, -1)
        if o.dim() != 2 or o.shape[1] != n or o.shape[0] < epochs:
            raise ValueError(f"orders[{r}]: expected [{n}] or [{epochs}, {n}] example indices, got {list(o.shape)}")
        if o.numel() and (int(o.min()) < 0 or int(o.max()) >= n):
            raise ValueError(f"orders[{r}]: example indices must lie in 0..{n - 1}")
        out.append(o)
    return out


def host_record(record: dict) -> dict:
    """An evaluation's record as plain numbers: each metric a list with one value per run."""
    return {k: (v.detach().cpu().tolist() if torch.is_tensor(v) else v) for k, v in record.items()}


def resume_checkpoints(partial: PartialState) -> dict[int, list[dict[str, np.ndarray]]]:
    """The checkpoints a kept state holds, as `run` keeps them: epoch -> per run, name -> array."""
    out: dict[int, dict[str, np.ndarray]] = {}
    for key, array in partial.arrays.items():
        if key.startswith("checkpoint:"):
            _, epoch, name = key.split(":", 2)
            out.setdefault(int(epoch), {})[name] = array
    return {
        e: [{n: a[r].copy() for n, a in arrays.items()} for r in range(len(partial.keys))] for e, arrays in out.items()
    }
