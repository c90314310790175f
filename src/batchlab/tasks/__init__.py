"""Tasks: computations at fixed weights, the second kind of work unit beside training runs.

A task kind is a pure function registered under a name, with a pydantic model of its arguments:
`fn(args, ctx) -> TaskOutput` (named scalars and arrays). A `TaskSpec` names the kind, holds the
arguments as plain data, a seed, and optionally the checkpoint it starts from; the executor looks
the kind up here, so a worker process needs nothing but the spec (and the checkpoint's arrays).

A task that meets an expected, explainable limit (for example BatchNorm1d asked to normalise a
single example) raises `TaskError(name, message)`: the store records it as status `error` with
that message, the report shows it, and a rerun does not retry it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pydantic
import torch

from ..engine.spec import TaskSpec


class TaskError(Exception):
    """An expected, named outcome that ends a task without a result (stored as status `error`)."""

    def __init__(self, name: str, message: str):
        super().__init__(f"{name}: {message}")
        self.name, self.message = name, message


@dataclass
class TaskContext:
    """Where a task runs: the device, where data files are, and the checkpoint it starts from."""

    spec: TaskSpec
    device: torch.device
    data_dir: str | None = None
    start: dict[str, np.ndarray] | None = None  # {"param:<name>": array, "buffer:<name>": array}
    others: tuple[dict[str, np.ndarray], ...] = ()  # the arrays of spec.others, in order

    def start_params(self, which: int | None = None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The checkpoint as (params, buffers) tensors on the device (float64 copies are the task's choice); with
        `which`, the checkpoint spec.others[which] instead of the start."""
        arrays = self.start if which is None else (self.others[which] if which < len(self.others) else None)
        if arrays is None:
            raise ValueError("this task has no start checkpoint" if which is None else f"no other checkpoint {which}")
        params = {k.removeprefix("param:"): torch.as_tensor(v, device=self.device)
                  for k, v in arrays.items() if k.startswith("param:")}  # fmt: skip
        buffers = {k.removeprefix("buffer:"): torch.as_tensor(v, device=self.device)
                   for k, v in arrays.items() if k.startswith("buffer:")}  # fmt: skip
        return params, buffers

    def start_model(self):
        """The start run, its data, its template model, and the checkpoint's params and buffers in the run's
        compute dtype (buffers None when the model has none): what a task at a checkpoint works on."""
        from ..engine.data import compute_dtype, load_for, template_model

        run = self.spec.start.run
        data = load_for(run, self.device, self.data_dir)
        dtype = compute_dtype(run.precision)
        params, buffers = self.start_params()
        params = {k: v.to(dtype) for k, v in params.items()}
        buffers = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in buffers.items()}
        return run, data, template_model(run, data), params, buffers or None


@dataclass
class TaskOutput:
    """What a task computed: named scalars (stored as metrics) and arrays (stored as artifacts)."""

    scalars: dict[str, float] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class TaskResult:
    """A task's output as the executor returns it to the driver, which stores it."""

    spec: TaskSpec
    status: str  # "finished" | "error"
    scalars: dict[str, float]
    arrays: dict[str, np.ndarray]
    wall_s: float
    env: dict
    error: str | None = None

    @property
    def key(self) -> str:
        return self.spec.key


@dataclass(frozen=True)
class TaskKind:
    name: str
    Args: type[pydantic.BaseModel]
    fn: Callable[[Any, TaskContext], TaskOutput]
    doc: str


TASKS: dict[str, TaskKind] = {}


def register_task(name: str, args: type[pydantic.BaseModel]):
    """Decorator: register `fn(args, ctx) -> TaskOutput` as the task kind `name`."""

    def wrap(fn):
        TASKS[name] = TaskKind(name, args, fn, (fn.__doc__ or "").strip().split("\n")[0])
        return fn

    return wrap


def task_kind(name: str) -> TaskKind:
    _load_builtin()
    if name not in TASKS:
        raise ValueError(f"unknown task kind {name!r}; known kinds: {', '.join(TASKS)}")
    return TASKS[name]


def validate_task(spec: TaskSpec) -> pydantic.BaseModel:
    """The task's arguments, validated by its kind (raises ValueError / pydantic.ValidationError)."""
    return task_kind(spec.kind).Args(**spec.args)


def _load_builtin() -> None:
    from . import builtin  # noqa: F401  (registers the built-in kinds)


__all__ = [
    "TASKS",
    "TaskContext",
    "TaskError",
    "TaskKind",
    "TaskOutput",
    "TaskResult",
    "register_task",
    "task_kind",
    "validate_task",
]
