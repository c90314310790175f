"""What a command would do, without doing it: the plan of `--dry-run` with a time estimate.

`dry_run` starts from a `Prepared` study (validated exactly as a real run validates it) and only reads the
store, so a dry run writes nothing: no results directory, no store, no report.

The time estimate is rough and says where it comes from. For a pending run it is, in this order:

1. **the store**: the mean wall time per run-epoch of stored runs that are comparable (same model, widths,
   batch size, precision, data sizes, evaluation cadence, and the same device), each run's share of its group;
2. **a FLOPs rule**: 3 forward passes' FLOPs per training example (forward and backward) plus one forward pass
   over the train and test sets per evaluation, at the device's float32 matmul rate measured now (1024 x 1024,
   the best of 5). Rough both ways: small batches run below that rate, a group of runs stepped together above
   it, and the rate is only as good as the device is idle now. On the project's 2-core CPU, busy with other
   work, it said 37 s for the quick batch-size-sweep (which took 34 s there) and 19 to 43 min for the training
   runs of the quick `reproduce` (measured at 99 and 44 GFLOP/s; 7-9 min in all on an idle machine).

A pending task is estimated by the mean stored wall time of tasks of the same kind on the same device, and is
otherwise left out of the estimate (and counted as such).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import torch

from .engine import RunSpec
from .engine.schedules import total_steps
from .engine.spec import TaskSpec
from .env import device_name
from .store import Store
from .timing import clock, timed


# --- the plan ----------------------------------------------------------------------------------------
@dataclass
class StudyPlan:
    """One study's dry run: what it plans, what the store has, what would be computed and in about how long."""

    name: str
    profile: str
    runs: set[str]  # keys of every run the study needs (its own and those its tasks start from)
    tasks: set[str]
    stored: set[str]  # of runs and tasks, the keys the store has
    train: list[RunSpec]  # runs that would be trained
    rerun: int  # of `train`, runs in the store trained again only for a missing checkpoint
    compute: list[TaskSpec]  # tasks that would be computed
    run_epochs: int = 0
    steps: int = 0
    estimates: dict[str, "Estimate"] = field(default_factory=dict)  # unit key -> its estimate

    @property
    def estimate(self) -> "Estimate":
        return total(self.estimates.values())


@dataclass
class Estimate:
    """Seconds, split by where each part comes from."""

    stored_s: float = 0.0
    stored_units: int = 0
    flops: float = 0.0
    flops_s: float = 0.0
    flops_runs: int = 0
    rate: float = 0.0  # FLOP/s measured now
    unestimated_tasks: int = 0

    @property
    def seconds(self) -> float:
        return self.stored_s + self.flops_s

    def add(self, other: "Estimate") -> None:
        self.stored_s += other.stored_s
        self.stored_units += other.stored_units
        self.flops += other.flops
        self.flops_s += other.flops_s
        self.flops_runs += other.flops_runs
        self.rate = max(self.rate, other.rate)
        self.unestimated_tasks += other.unestimated_tasks

    def text(self) -> str:
        """The estimate in words, each part with its source."""
        parts = []
        if self.stored_units:
            parts.append(f"{self.stored_units} units from stored timings of comparable units on this device")
        if self.flops_runs:
            parts.append(
                f"{self.flops_runs} runs with no comparable timing in the store: {self.flops:.2g} FLOPs at "
                f"{self.rate / 1e9:.0f} GFLOP/s, this device's float32 matmul rate measured now (a rough rule)"
            )
        unknown = f"{self.unestimated_tasks} tasks with no stored timing of their kind, not estimated"
        if not parts:
            return f"unknown ({unknown})" if self.unestimated_tasks else "nothing to compute"
        when = f"about {clock(self.seconds)}" if self.seconds >= 1 else "under a second"
        more = f", plus {unknown}" if self.unestimated_tasks else ""
        return f"{when}{more} ({'; '.join(parts)})"


def total(estimates) -> Estimate:
    """The sum of several units' estimates."""
    out = Estimate()
    for estimate in estimates:
        out.add(estimate)
    return out


class _NoStore:
    """What `work_plan` reads from a store, for a results directory that has none (nothing is created)."""

    def done(self, keys) -> set[str]:
        return set()

    def checkpoint_epochs(self, key: str) -> set[int]:
        return set()

    def damaged(self, keys) -> dict:
        return {}


def dry_run(prep) -> StudyPlan:
    """The plan of a prepared study against its store, read-only, with a time estimate."""
    from .driver.checks import open_store
    from .driver.plan import work_plan

    runs = {s.key for s in prep.specs if isinstance(s, RunSpec)}
    runs |= {c.run.key for s in prep.specs if isinstance(s, TaskSpec) for c in s.checkpoints}
    tasks = {s.key for s in prep.specs if isinstance(s, TaskSpec)}
    if Store.exists(prep.out):
        with open_store(prep.out, readonly=True) as store:
            plan = work_plan(store, prep.specs)
            stored = store.done([*runs, *tasks]) - plan.damaged.keys()
            timings = Timings.read(store, device_name(prep.device))
    else:
        plan = work_plan(_NoStore(), prep.specs)
        stored, timings = set(), Timings({}, {})
    out = StudyPlan(
        prep.name, prep.profile, runs, tasks, stored, plan.runs, len(plan.rerun_for_checkpoints), plan.tasks
    )
    for spec in plan.runs:
        out.run_epochs += spec.epochs
        out.steps += total_steps(spec, n_train(spec, prep))
        out.estimates[spec.key] = timings.run(spec, prep)
    for task in plan.tasks:
        out.estimates[task.key] = timings.task(task)
    return out


def n_train(spec: RunSpec, prep) -> int:
    """The run's training examples (the data is loaded and cached by `prepare` already)."""
    from .engine.data import load_for

    return load_for(spec, prep.device, prep.data_dir).n_train


# --- timings -------------------------------------------------------------------------------------------
def comparable(config: dict) -> tuple:
    """What a run's time per epoch depends on, besides the device: its shape, its data and its evaluations."""
    keys = ("model", "widths", "batch_size", "batch_switch", "precision", "dataset", "train_subset", "test_subset")
    return (*(json.dumps(config.get(k)) for k in keys), json.dumps(config.get("probes")), config.get("eval_every"))


@dataclass
class Timings:
    """Stored wall time on one device: per run-epoch of comparable runs, and per task of each kind (means)."""

    per_run_epoch: dict[tuple, float]
    per_task: dict[str, float]

    @classmethod
    def read(cls, store: Store, device: str) -> "Timings":
        runs: dict[tuple, list[float]] = {}
        tasks: dict[str, list[float]] = {}
        for config, env, wall_s, group_size, kind, status in store.timings():
            if env.get("device") != device or status == "error":
                continue
            if kind == "train":
                if config.get("epochs") and status == "finished" and not config.get("stop_metric"):
                    runs.setdefault(comparable(config), []).append(wall_s / max(group_size, 1) / config["epochs"])
            else:
                tasks.setdefault(kind, []).append(wall_s)
        return cls({k: float(np.mean(v)) for k, v in runs.items()}, {k: float(np.mean(v)) for k, v in tasks.items()})

    def run(self, spec: RunSpec, prep) -> Estimate:
        per_epoch = self.per_run_epoch.get(comparable(spec.full_dict()))
        if per_epoch is not None:
            return Estimate(stored_s=per_epoch * spec.epochs, stored_units=1)
        flops, rate = run_flops(spec, prep)
        return Estimate(flops=flops, flops_s=flops / rate, flops_runs=1, rate=rate)

    def task(self, task: TaskSpec) -> Estimate:
        seconds = self.per_task.get(f"task:{task.kind}")
        if seconds is None:
            return Estimate(unestimated_tasks=1)
        return Estimate(stored_s=seconds, stored_units=1)


def run_flops(spec: RunSpec, prep) -> tuple[float, float]:
    """A run's FLOPs (3 forward passes per training example, one per example of both splits per evaluation),
    and the device's float32 matmul rate measured now."""
    from .engine.data import load_for

    data = load_for(spec, prep.device, prep.data_dir)
    if spec.user_model:  # the user's module, built as the engine builds it
        forward = _user_forward_flops(spec.model, json.dumps(spec.model_args, sort_keys=True), data.x_train[:1])
    else:
        forward = _forward_flops(spec.model, tuple(spec.widths), spec.activation, tuple(data.x_train.shape[1:]))
    evaluations = spec.epochs + 1 if spec.probes else 0
    flops = forward * (3 * data.n_train * spec.epochs + evaluations * (data.n_train + len(data.x_test)))
    return flops, matmul_rate(prep.device)


@cache
def _forward_flops(model: str, widths: tuple, activation: str, shape: tuple) -> float:
    """FLOPs of one example's forward pass (matmuls and convolutions, as torch counts them), on the meta device:
    no weights exist (widths of 2^20 and 2^20 once asked this for 4 TB)."""
    from torch.utils.flop_counter import FlopCounterMode

    from .models import build_model

    with torch.device("meta"):
        net = build_model(model, input_dim=shape[-1], widths=widths, activation=activation)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.zeros((1, *shape), device="meta"))
    return float(counter.get_total_flops())


def _user_forward_flops(model: str, args: str, example: torch.Tensor) -> float:
    """FLOPs of one example's forward pass through a user's model (`args`: its factory's arguments as JSON)."""
    from torch.utils.flop_counter import FlopCounterMode

    from .references import build_model

    key = (model, args, tuple(example.shape), example.dtype)
    if key not in _USER_FLOPS:
        net = build_model(model, json.loads(args), seed=0)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            net(example.float().cpu() if example.is_floating_point() else example.cpu())
        _USER_FLOPS[key] = float(counter.get_total_flops())
    return _USER_FLOPS[key]


_USER_FLOPS: dict = {}


@cache
def matmul_rate(device: torch.device, n: int = 1024) -> float:
    """FLOP/s of an n x n float32 matmul on `device`: the best of 5 timings (the least disturbed by other work)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b  # warm-up
    return 2.0 * n**3 / timed(lambda: a @ b, device, 5)


# --- in words ------------------------------------------------------------------------------------------
def dry_run_lines(plan: StudyPlan, out) -> list[str]:
    """A study's dry run in two lines."""
    stored_runs, stored_tasks = len(plan.runs & plan.stored), len(plan.tasks & plan.stored)
    again = f", {plan.rerun} of them again for a missing checkpoint" if plan.rerun else ""
    what = [f"train {len(plan.train)} runs ({plan.run_epochs} run-epochs, {plan.steps} steps{again})"] * bool(
        plan.train
    )
    what += [f"compute {len(plan.compute)} tasks"] * bool(plan.compute)
    what = f"would {' and '.join(what)}" if what else "nothing to compute"
    head = (
        f"{plan.name} ({plan.profile}): {len(plan.runs)} runs and {len(plan.tasks)} tasks planned, "
        f"{stored_runs} runs and {stored_tasks} tasks already in {out}; {what}"
    )
    return [head, f"  estimate: {plan.estimate.text()}"] if plan.estimates else [head]


def summary(plans: list[StudyPlan], out) -> list[str]:
    """The last line of a dry run; for several studies, their total first (a run two studies share counted once)."""
    lines = []
    if len(plans) > 1:
        runs = set().union(*(p.runs for p in plans))
        tasks = set().union(*(p.tasks for p in plans))
        stored = set().union(*(p.stored for p in plans))
        train = {s.key: s for p in plans for s in p.train}
        compute = {s.key for p in plans for s in p.compute}
        estimates = {k: e for p in plans for k, e in p.estimates.items()}
        lines += [
            f"all {len(plans)} studies: {len(runs)} runs and {len(tasks)} tasks planned (a run two studies share "
            f"counted once), {len(runs & stored)} runs and {len(tasks & stored)} tasks already in {out}; would "
            f"train {len(train)} runs ({sum(s.epochs for s in train.values())} run-epochs) and compute "
            f"{len(compute)} tasks",
            f"  estimate: {total(estimates.values()).text()}",
        ]
    return [*lines, "dry run: nothing was computed or written"]
