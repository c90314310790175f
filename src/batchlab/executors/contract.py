"""The executor contract: work units in, results out, and what an executor can do beyond that.

The driver (`batchlab.driver`) decides what runs and alone writes the store; an executor decides where units
run. Units and results are plain data (specs, numpy arrays), so an executor that ships them elsewhere needs no
access to the store or to the driver's process. An executor that cannot compute a unit yields a `UnitFailure`
in place of its result: the driver stores everything else, then raises `UnitsFailed` (exit code 1).

What differs between executors is declared in `Capabilities`, and the driver passes only the hooks an
executor declares: a local executor hears every step and can keep an interrupted chunk's state; one that
ships units elsewhere reports finished units only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from ..engine import RunResult, RunSpec
from ..engine.spec import TaskSpec
from ..engine.train import MetricsCallback, PartialCallback, PartialState, ProgressCallback
from ..tasks import TaskResult


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
    """A task and, when it starts from a checkpoint, that checkpoint's arrays, and those of its other checkpoints
    (`spec.others`, in order), filled in by the driver."""

    spec: TaskSpec
    start: dict[str, np.ndarray] | None = None
    others: tuple[dict[str, np.ndarray], ...] = ()

    @property
    def keys(self) -> list[str]:
        return [self.spec.key]


Unit = TrainUnit | TaskUnit  # what an executor runs (a spec is `engine.spec.WorkSpec`; a unit wraps specs)
Result = list[RunResult] | TaskResult  # a training unit's runs (in its order), or a task's result


@dataclass(frozen=True)
class UnitFailure:
    """A unit an executor could not compute (a worker lost more often than it is retried, or an exception)."""

    unit: Unit
    error: str  # one line: the exception's type and message

    @property
    def keys(self) -> list[str]:
        return self.unit.keys


class UnitsFailed(RuntimeError):
    """Some units could not be computed; every other finished unit is in the store (exit code 1)."""


def failure_message(failures: list[UnitFailure], units: int, out, skipped_tasks: int, where: str) -> str:
    """The one line the CLI prints when units failed (`skipped_tasks`: tasks not shipped, their run failed;
    `where`: the executor's `where`, e.g. "on the Ray workers")."""
    first = failures[0]
    skipped = f", and {skipped_tasks} tasks that start from their runs were not shipped" if skipped_tasks else ""
    return (
        f"{len(failures)} of {units} work units could not be computed {where} "
        f"(first: {first.keys[0]}: {first.error}){skipped}; every other unit is in the store in {out}: "
        "run the same command again to compute only what is missing"
    )


@dataclass(frozen=True)
class Capabilities:
    """What an executor does beyond running units; the driver passes the hooks of what is declared, no others.

    `live`: units run in the driver's process, so progress inside an epoch and each evaluation's metrics reach
    `on_progress` and `on_metrics` as they happen (the progress bar moves within a unit).
    `partial`: at Ctrl-C the interrupted chunk's state reaches `on_partial`, for the driver to keep.
    `resume`: a `TrainUnit.resume` state is continued from (else the driver leaves it out, and the runs start
    again from their initialisation: the same numbers, later).
    """

    live: bool = False
    partial: bool = False
    resume: bool = False


@runtime_checkable
class Executor(Protocol):
    """Runs work units somewhere and yields their results; `LocalExecutor` and `RayExecutor` implement it.

    An executor is a context manager: inside the with-block it is ready (a cluster joined); leaving it frees
    what it started. `map` yields `(unit, result)` as each unit finishes, in any order, or `(unit,
    UnitFailure)`. A training unit's results also reach `on_chunk` as soon as they exist (the driver stores
    them there; a unit trained in chunks may call it several times), and its run-epochs reach `on_epoch(runs,
    epochs)`, at the latest when the unit is done. `hooks` holds `on_metrics`, `on_progress` and `on_partial`
    only where `capabilities` declares them.
    """

    name: str  # the --executor value
    where: str  # where units run, for messages: "on the Ray workers"
    capabilities: Capabilities

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc) -> None: ...

    def device_type(self, device: torch.device) -> str:
        """The kind of device ("cpu", "cuda") units run on when the driver is given `device`."""
        ...

    def map(
        self,
        units: Iterable[Unit],
        device: torch.device,
        data_dir: str | None = None,
        *,
        on_epoch: Callable[[int, int], None] | None = None,
        on_chunk: Callable[[list[RunResult]], None] | None = None,
        **hooks: MetricsCallback | ProgressCallback | PartialCallback,
    ) -> Iterator[tuple[Unit, Result | UnitFailure]]: ...
