"""Driving a study: `prepare` checks everything the user gave and writes nothing; `execute` plans against the
store, runs what it lacks through an executor, stores each unit as it arrives (one transaction per unit) and
writes the report. `run_study` is both, what `batchlab run` does.

Runs are trained first (also runs that are only needed for a task's checkpoint), then the tasks, each starting
from its checkpoint read back from the store. What the executor can do beyond running units
(`executors.Capabilities`) decides which hooks it is given; the driver never asks which executor it is.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..datasets import DataError
from ..engine import RunResult, RunSpec, partition
from ..engine.spec import Checkpoint, TaskSpec, WorkSpec
from ..engine.train import PartialState
from ..env import environment
from ..errors import UsageError
from ..executors import Executor, LocalExecutor, TaskUnit, TrainUnit, UnitFailure, UnitsFailed, failure_message
from ..outputs import StudyOutput
from ..references import USER_ERRORS, error_text, user_frame
from ..report.overrides import overrides_label
from ..store import Store
from ..studies import Results, Study
from ..studies.common import StudyConfig
from ..tasks import TaskResult
from .checks import UNREADABLE, array_loader, check_data, check_device, check_writable, damaged, done_in, open_store
from .config import config_overrides, lookup, make_config, staged_units
from .plan import WorkPlan, forget_damaged, kept_states, work_plan
from .reports import keys_read, write_report


@dataclass
class StudyRun:
    study: str
    profile: str
    report: Path
    wall_s: float
    trained: int  # units computed now: runs trained and tasks computed
    reused: int  # units found in the store
    output: StudyOutput
    tasks: int = 0  # of `trained`, how many were tasks


class Monitor:
    """What a caller (the CLI's progress bar) hears about a study's training. Methods are no-ops. `progress`,
    `metrics` and `kept` come only from an executor whose `Capabilities` declare them (`live`, `partial`)."""

    def start(self, study: str, runs: int, pending: int, run_epochs: int) -> None:
        """`runs` planned, `pending` of them to train (the rest are in the store), `run_epochs` to do."""

    def epoch(self, runs: int, epochs: int) -> None:
        """`runs` runs each finished `epochs` more epochs."""

    def saved(self, runs: int) -> None:
        """`runs` more runs were written to the store."""

    def tasks(self, pending: int) -> None:
        """`pending` tasks are to be computed (after the runs)."""

    def task_done(self) -> None:
        """One more task was computed and written to the store."""

    def finish(self) -> None:
        """Training is over (the report is written next)."""

    def progress(self, runs: int, fraction: float) -> None:
        """`runs` runs are `fraction` (0 to 1) through their current epoch (heard a few times a second)."""

    def metrics(self, epoch: float, step: int, values: dict[str, dict]) -> None:
        """An evaluation of the runs in training: run key -> metric name -> value (None where not finite)."""

    def resumed(self, runs: int, epoch: int, epochs: int) -> None:
        """`runs` runs continue after epoch `epoch` of `epochs`, from the state kept when they were interrupted."""

    def kept(self, runs: int, epoch: int, epochs: int) -> None:
        """Interrupted: the state of `runs` runs after `epoch` of their `epochs` epochs was kept in the store."""

    def damaged(self, line: str) -> None:
        """A stored file was damaged (one line naming it); what it held is computed again."""


@dataclass
class Prepared:
    """A validated study execution: nothing has been written yet."""

    study: Study
    profile: str
    config: StudyConfig
    specs: list[WorkSpec]  # runs and tasks, unique by key, plan order
    out: Path
    device: torch.device
    data_dir: str | None = None

    @property
    def name(self) -> str:
        return self.study.name

    @property
    def variant(self) -> str:
        """The label of the keys set away from the profile ("" for none): it names the report's directory."""
        return overrides_label(config_overrides(self.study, self.profile, self.config))


def prepare(
    name: str,
    *,
    profile: str = "quick",
    overrides: dict[str, Any] | None = None,
    device: str | torch.device = "auto",
    out: str | Path = "batchlab-results",
    check_data_now: bool = True,
    data_dir: str | Path | None = None,
) -> Prepared:
    """Validate everything about a study execution; raise UsageError (or DataError), write nothing."""
    study = lookup(name)
    cfg, specs = make_config(study, profile, overrides or {}, user_code=True)
    out = Path(out)
    check_writable(out)
    dev = check_device(device)
    data_dir = None if data_dir is None else str(data_dir)
    unique = list({s.key: s for s in specs}.values())
    if check_data_now:
        done = done_in(out, [s.key for s in unique])
        check_data([s for s in unique if s.key not in done], dev, data_dir)
    return Prepared(study, profile, cfg, unique, out, dev, data_dir)


def execute(prep: Prepared, monitor: Monitor | None = None, executor: Executor | None = None) -> StudyRun:
    """Compute whatever the plan lacks in the store (one transaction per unit), record the study, write the report.

    A unit the executor could not compute (a Ray worker lost more often than Ray retries it) comes back as
    a `UnitFailure`: everything else is stored, the tasks that start from its runs are not shipped, and
    `UnitsFailed` is raised before the study is recorded; the same call then computes only what is missing."""
    monitor = monitor or Monitor()
    executor = executor or LocalExecutor()
    t0 = time.perf_counter()
    store = open_store(prep.out)
    runs = tasks = 0
    stage = 0
    try:
        env: dict = {}  # the environment the units were computed in, as they report it
        while True:  # the plan, then each stage of follow-ups that the stored numbers name (Study.follow_up)
            plan = work_plan(store, prep.specs)
            forget_damaged(store, plan, monitor.damaged)
            if stage == 0 or plan.runs:  # a later stage without runs says nothing about training
                failed, train_units = train_runs(store, plan, prep, executor, monitor, env)
            else:
                failed, train_units = [], 0
            lost = {key for f in failed for key in f.keys}
            shipped = [t for t in plan.tasks if not any(c.run.key in lost for c in t.checkpoints)]
            failed += compute_tasks(store, shipped, prep, executor, monitor, env)
            if failed:
                planned, skipped = train_units + len(plan.tasks), len(plan.tasks) - len(shipped)
                raise UnitsFailed(failure_message(failed, planned, prep.out, skipped, executor.where))
            runs, tasks = runs + len(plan.runs), tasks + len(plan.tasks)
            read = lambda units: Results(store.runs(keys_read(units)), array_loader(store))  # noqa: E731
            staged = staged_units(prep.study, prep.config, prep.specs, read)
            if len(staged) == len(prep.specs):
                break
            prep, stage = dataclasses.replace(prep, specs=staged), stage + 1
    except BaseException as e:
        store.close()
        # a full disk, the store, memory and batchlab's own refusals have their own one line (cli.run_cli)
        ours = (OSError, sqlite3.Error, MemoryError, UsageError, DataError, UnitsFailed)
        where = user_frame(e) if isinstance(e, USER_ERRORS) and not isinstance(e, ours) else None
        if where is None:
            raise
        # the user's model, data or loss raised (or called exit()) while it trained, after the start-up checks
        raise UsageError(
            f"the user's code raised while training, at {where}: {error_text(e)}; every finished unit is in the store"
        ) from None
    try:
        wall = time.perf_counter() - t0
        record_study(store, prep, runs, tasks, wall, env or environment(prep.device))
        report, output = write_report(prep.name, prep.out, profile=prep.profile, variant=prep.variant, store=store)
    finally:
        store.close()
    reused = max(len(prep.specs) - runs - tasks, 0)
    return StudyRun(prep.name, prep.profile, report, wall, runs + tasks, reused, output, tasks)


def train_runs(
    store: Store, plan: WorkPlan, prep: Prepared, executor: Executor, monitor: Monitor, env: dict
) -> tuple[list[UnitFailure], int]:
    """Train the plan's runs, group by group, storing each chunk as it arrives; the failed units, and how many
    training units there were. Only the hooks the executor declares in its `capabilities` are given to it."""
    supports = executor.capabilities
    planned_runs = [s for s in prep.specs if isinstance(s, RunSpec)]
    resume = kept_states(store, plan.runs, monitor.damaged) if supports.resume else []
    epochs = {s.key: s.epochs for s in plan.runs}
    kept_epochs = sum(len(p.keys) * p.epoch for p in resume)
    monitor.start(prep.name, len(planned_runs), len(plan.runs), sum(epochs.values()) - kept_epochs)
    for p in resume:
        monitor.resumed(len(p.keys), p.epoch, epochs[p.keys[0]])

    def save_chunk(results: list[RunResult]) -> None:
        for result in results:
            env.update(result.env)
            save_result(store, result, rerun=result.key in plan.rerun_for_checkpoints)
        store.delete_partials([r.key for r in results])
        monitor.saved(len(results))

    def keep(partial: PartialState) -> None:
        store.save_partial(list(partial.keys), partial.epoch, partial.meta, partial.arrays)
        monitor.kept(len(partial.keys), partial.epoch, epochs[partial.keys[0]])

    units = [
        TrainUnit(
            tuple(group),
            {s.key: tuple(sorted(plan.checkpoints.get(s.key, ()))) for s in group},
            tuple(p for p in resume if set(p.keys) <= {s.key for s in group}),
        )
        for group in partition(plan.runs)
    ]
    hooks: dict = {}
    if supports.live:
        hooks |= {"on_metrics": monitor.metrics, "on_progress": monitor.progress}
    if supports.partial:
        hooks["on_partial"] = keep
    results = executor.map(units, prep.device, prep.data_dir, on_epoch=monitor.epoch, on_chunk=save_chunk, **hooks)
    failed = [result for _, result in results if isinstance(result, UnitFailure)]
    monitor.finish()
    return failed, len(units)


def compute_tasks(
    store: Store, tasks: list[TaskSpec], prep: Prepared, executor: Executor, monitor: Monitor, env: dict
) -> list[UnitFailure]:
    """Compute the tasks, each given its start checkpoint read from the store as it is shipped, and store each
    as it arrives; the failed units."""
    if not tasks:
        return []
    monitor.tasks(len(tasks))
    units = (TaskUnit(t, start_of(store, t.start), tuple(start_of(store, c) for c in t.others)) for t in tasks)
    failed = []
    for _, result in executor.map(units, prep.device, prep.data_dir):
        if isinstance(result, UnitFailure):
            failed.append(result)
            continue
        env.update(result.env)
        save_task(store, result)
        monitor.task_done()
    return failed


def start_of(store: Store, checkpoint: Checkpoint | None) -> dict[str, np.ndarray] | None:
    """The weights a task starts from (or another checkpoint it reads), from the store (a damaged file is one
    line, UsageError)."""
    if checkpoint is None:
        return None
    try:
        return store.checkpoint(checkpoint.run.key, checkpoint.epoch)
    except UNREADABLE as e:
        raise damaged(
            e, f"the checkpoint after epoch {checkpoint.epoch} of run {checkpoint.run.key}", store.root
        ) from None


def record_study(store: Store, prep: Prepared, runs: int, tasks: int, wall_s: float, env: dict) -> None:
    """The study's record: its config and the keys of its plan (what its report reads), and how it ran (`runs`
    trained and `tasks` computed now)."""
    meta = {
        "profile": prep.profile,
        "device": env["device"],
        "torch": env["torch"],
        "git_commit": env["git_commit"],
        "code_version": env.get("code_version"),
        "trained_runs": runs,
        "computed_tasks": tasks,
        "reused_units": len(prep.specs) - runs - tasks,
        "overrides": config_overrides(prep.study, prep.profile, prep.config),
    }
    store.save_study(
        name=prep.name,
        profile=prep.profile,
        config=prep.config.model_dump(mode="json"),
        run_keys=[s.key for s in prep.specs],
        wall_s=wall_s,
        meta=meta,
        variant=prep.variant,
    )


def run_study(
    name: str,
    *,
    profile: str = "quick",
    overrides: dict[str, Any] | None = None,
    device: str = "auto",
    out: str | Path = "batchlab-results",
    monitor: Monitor | None = None,
    data_dir: str | Path | None = None,
    executor: Executor | None = None,
) -> StudyRun:
    """Compute whatever the study's plan lacks in the store, then write its report."""
    return execute(
        prepare(name, profile=profile, overrides=overrides, device=device, out=out, data_dir=data_dir),
        monitor,
        executor,
    )


def save_result(store: Store, result: RunResult, *, rerun: bool = False) -> None:
    """A training run and the checkpoints it was asked to keep, in one transaction. A run trained again
    only for a missing checkpoint adds that checkpoint and leaves its stored row as it was.

    So does a run another process stored meanwhile (it trained the same run for other checkpoints): its
    row wins, and the checkpoints only this copy kept are added, or this process's tasks would find no
    start. A run is a function of its spec, so either copy's weights are that run's weights."""
    arrays = {(name, epoch): a for epoch, ckpt in result.checkpoints.items() for name, a in ckpt.items()}
    if rerun:
        store.save_artifacts(result.key, arrays)
        return
    stored = store.save_run(
        key=result.key,
        config=result.spec.full_dict(),
        seed=result.spec.seed,
        status=result.status,
        diverged_step=result.diverged_step,
        steps=result.steps,
        wall_s=result.wall_s,
        group_size=result.group_size,
        env=result.env,
        metrics=result.metrics,
        arrays=arrays,
    )
    missing = set() if stored else set(result.checkpoints) - store.checkpoint_epochs(result.key)
    if missing:
        store.save_artifacts(result.key, {(name, e): a for (name, e), a in arrays.items() if e in missing})


def save_task(store: Store, result: TaskResult) -> None:
    """A task's scalars (as metrics at step 0) and arrays, in one transaction."""
    metrics = [{"epoch": 0, "step": 0, **result.scalars}] if result.scalars else []
    store.save_run(
        key=result.key,
        config=result.spec.full_dict(),
        seed=result.spec.seed,
        status=result.status,
        diverged_step=None,
        steps=0,
        wall_s=result.wall_s,
        group_size=1,
        env=result.env,
        metrics=metrics,
        kind=f"task:{result.spec.kind}",
        error=result.error,
        arrays={(name, -1): a for name, a in result.arrays.items()},
    )
