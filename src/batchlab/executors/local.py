"""The local executor: units run one after another in this process, on one device.

`execute(unit, device, data_dir)` is a pure function of plain data: no closures, no global
state, the data directory passed explicitly, the environment recorded where the work ran. It is
what every executor calls where the work runs (`RayExecutor` on its workers); `LocalExecutor`
calls it here, with the live hooks of training (progress, metrics, the state kept at Ctrl-C).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

import torch

from ..engine import RunResult, resolve_device, train_group
from ..engine.train import MetricsCallback, PartialCallback, ProgressCallback
from ..env import environment
from ..tasks import TaskContext, TaskError, TaskResult, task_kind
from .contract import Capabilities, Result, TaskUnit, Unit


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
            r.env = env | {"step_path": r.step_path, "step_path_reason": r.step_path_reason}  # which arithmetic
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
    ctx = TaskContext(unit.spec, device, data_dir, unit.start, unit.others)
    t0 = time.perf_counter()
    try:
        out = kind.fn(args, ctx)
    except TaskError as e:
        return TaskResult(unit.spec, "error", {}, {}, time.perf_counter() - t0, env, f"{e.name}: {e.message}")
    return TaskResult(unit.spec, "finished", dict(out.scalars), dict(out.arrays), time.perf_counter() - t0, env)


class LocalExecutor:
    """Runs units one after another in this process, on one device; it hears every step (`Capabilities`)."""

    name = "local"
    where = "in this process"
    capabilities = Capabilities(live=True, partial=True, resume=True)

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def device_type(self, device: torch.device) -> str:
        return torch.device(device).type

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
