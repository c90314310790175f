"""The executor boundary: a work unit (plain data) in, its result out.

`execute(unit, device, data_dir)` is a pure function of plain data: no closures, no global
state, the data directory passed explicitly, the environment recorded where the work ran. The
driver (batchlab.runner) decides what runs and alone writes the store; an executor decides where
units run. `LocalExecutor` runs them one after another in this process; a distributed executor
needs only to ship the same units and bring back the same results.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from .engine import RunResult, RunSpec, resolve_device, train_group
from .engine.spec import TaskSpec
from .engine.train import MetricsCallback, PartialCallback, PartialState, ProgressCallback
from .env import environment
from .tasks import TaskContext, TaskError, TaskResult, task_kind


@dataclass(frozen=True)
class TrainUnit:
    """Runs that share a group key, trained in lock-step; `checkpoints[key]` lists the epochs after
    which that run's weights are returned (0: its initialisation); `resume`: kept states of its runs'
    interrupted training, to continue from."""

    specs: tuple[RunSpec, ...]
    checkpoints: dict[str, tuple[int, ...]] = field(default_factory=dict)
    resume: tuple[PartialState, ...] = ()

    @property
    def keys(self) -> list[str]:
        return [s.key for s in self.specs]


@dataclass(frozen=True)
class TaskUnit:
    """A task and, when it starts from a checkpoint, that checkpoint's arrays (filled in by the driver)."""

    spec: TaskSpec
    start: dict[str, np.ndarray] | None = None

    @property
    def keys(self) -> list[str]:
        return [self.spec.key]


Unit = TrainUnit | TaskUnit
Result = list[RunResult] | TaskResult


def execute(
    unit: Unit,
    device: str | torch.device = "auto",
    data_dir: str | None = None,
    *,
    on_epoch: Callable[[int, int], None] | None = None,
    on_chunk: Callable[[list[RunResult]], None] | None = None,
    on_metrics: MetricsCallback | None = None,
    on_progress: ProgressCallback | None = None,
    on_partial: PartialCallback | None = None,
) -> Result:
    """Compute one unit on `device`. The `on_*` hooks are optional, for a local caller (see `train_group`)."""
    device = resolve_device(device)
    env = environment(device)
    if isinstance(unit, TaskUnit):
        return run_task(unit, device, data_dir, env)
    wanted = sorted({e for epochs in unit.checkpoints.values() for e in epochs})

    def finish(results: list[RunResult]) -> list[RunResult]:
        for r in results:
            r.env = env
            keep = set(unit.checkpoints.get(r.key, ()))
            r.checkpoints = {e: a for e, a in r.checkpoints.items() if e in keep}
        if on_chunk is not None:
            on_chunk(results)
        return results

    return train_group(
        list(unit.specs),
        device=device,
        on_epoch=on_epoch,
        data_dir=data_dir,
        checkpoints=frozenset(wanted),
        on_chunk=finish,
        on_metrics=on_metrics,
        on_progress=on_progress,
        on_partial=on_partial,
        resume=unit.resume,
    )


def run_task(unit: TaskUnit, device: torch.device, data_dir: str | None, env: dict) -> TaskResult:
    kind = task_kind(unit.spec.kind)
    args = kind.Args(**unit.spec.args)
    ctx = TaskContext(unit.spec, device, data_dir, unit.start)
    t0 = time.perf_counter()
    try:
        out = kind.fn(args, ctx)
    except TaskError as e:
        return TaskResult(unit.spec, "error", {}, {}, time.perf_counter() - t0, env, f"{e.name}: {e.message}")
    return TaskResult(unit.spec, "finished", dict(out.scalars), dict(out.arrays), time.perf_counter() - t0, env)


class LocalExecutor:
    """Runs units one after another in this process, on one device."""

    name = "local"

    def map(
        self,
        units: Iterable[Unit],
        device: str | torch.device,
        data_dir: str | None = None,
        *,
        on_epoch: Callable[[int, int], None] | None = None,
        on_chunk: Callable[[list[RunResult]], None] | None = None,
        **hooks,
    ) -> Iterator[tuple[Unit, Result]]:
        """Yield (unit, result) as each unit finishes. A training unit's chunks also reach `on_chunk`
        as soon as they exist, so a driver can store them before the whole group is done; `hooks`
        (`on_metrics`, `on_progress`, `on_partial`) reach `execute`."""
        for unit in units:
            yield unit, execute(unit, device, data_dir, on_epoch=on_epoch, on_chunk=on_chunk, **hooks)
