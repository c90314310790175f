"""The driver: config -> plan -> skip what the store has -> group -> execute -> store -> report.

`run_study` is what `batchlab run` does. It is two steps: `prepare` checks everything the user gave
(study, profile, `--set` keys and values, device, output directory, data) and writes nothing;
`execute` computes what the store lacks and writes the report. A plan holds training runs and
tasks; runs are trained first (also runs that are only needed for a task's checkpoint), then the
tasks, each starting from its checkpoint read back from the store. The driver alone writes the
store, one transaction per finished unit. `write_report` is where `batchlab report` starts (it
recomputes tables, figures and claims from the store without computing anything).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import sqlite3
import time
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import torch

from .engine import RunResult, RunSpec, partition, resolve_device
from .engine.spec import TaskSpec, Unit
from .engine.train import PartialState
from .env import environment
from .errors import UsageError, one_line
from .executor import LocalExecutor, TaskUnit, TrainUnit
from .ray_executor import RayExecutor, UnitFailure, UnitsFailed, failure_message
from .report.figures import fit_text, save_figure
from .report.html import FigureRef, Table, atomic_write_text, json_ready, write_csv, write_study_report
from .report.variants import describe, overrides, report_dir_name, set_value, variant_label
from .store import Store, StoreCorruptError, StoreVersionError
from .studies import Results, Study, get_study
from .studies.common import StudyConfig, StudyOutput, rounding_evidence, rounding_tasks
from .tasks import TaskResult, validate_task


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
    """What a caller (the CLI's progress bar) hears about a study's training. Methods are no-ops."""

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


# --- `--set key=value` ------------------------------------------------------------------------------
def parse_value(raw: str) -> Any:
    """A `--set` value: JSON if it parses (numbers, true, null, [1,2]), a comma list, else the string."""
    raw = raw.strip()
    if raw in ("None", "none"):
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        if "," in raw:
            return [parse_value(part) for part in raw.split(",")]
        return raw


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        key, eq, raw = pair.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"--set {pair!r}: expected key=value, e.g. --set lr=0.1")
        out[key.strip()] = parse_value(raw)
    return out


def _is_sequence_type(annotation: Any) -> bool:
    """Whether a field's annotation is a tuple/list (or an optional one)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_sequence_type(a) for a in typing.get_args(annotation) if a is not type(None))
    return annotation in (tuple, list) or origin in (tuple, list)


def coerce_overrides(config_cls: type[StudyConfig], overrides: dict[str, Any]) -> dict[str, Any]:
    """A bare value for a tuple field becomes a 1-tuple: `--set widths=32` means widths=(32,); and an empty one
    the empty list, so that `--set widths=` is refused as empty rather than as a list holding ''."""
    out = dict(overrides)
    for key, value in overrides.items():
        field = config_cls.model_fields.get(key)
        if value == "" and field is not None and _is_sequence_type(field.annotation):
            out[key] = ()
        elif (
            field is not None
            and value is not None
            and not isinstance(value, (list, tuple, dict))
            and _is_sequence_type(field.annotation)
        ):
            out[key] = (value,)
    return out


def _validation_message(e: pydantic.ValidationError, where: str, given: dict[str, Any] | None = None) -> str:
    err = e.errors()[0]
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
    value = err.get("input")
    if given and len(err["loc"]) == 1 and err["loc"][0] in given:
        value = given[err["loc"][0]]  # what the user typed, not its coerced form
    got = f" (got {value!r})" if "input" in err and not isinstance(value, (dict, pydantic.BaseModel)) else ""
    more = f" (+{e.error_count() - 1} more)" if e.error_count() > 1 else ""
    msg = one_line(err["msg"]).removeprefix("Value error, ")
    if where == "config":
        return f"invalid value for {loc}: {msg}{got}{more}" if loc else f"invalid config: {msg}{more}"
    # the study's config validated but a run it plans does not: name the run's field
    if not loc:
        return f"invalid config: {msg}{more}"
    return f"invalid config: a planned run has an invalid {loc}: {msg}{got}{more}"


def make_config(study: Study, profile: str, overrides: dict[str, Any]) -> tuple[StudyConfig, list[Unit]]:
    """The validated study config and its plan; any problem becomes one clear line (UsageError)."""
    if profile not in study.profiles:
        raise UsageError(f"unknown profile {profile!r} for {study.name}; choose one of {', '.join(study.profiles)}")
    fields = list(study.Config.model_fields)
    unknown = [k for k in overrides if k not in study.Config.model_fields]
    if unknown:
        close = difflib.get_close_matches(unknown[0], fields, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UsageError(f"unknown key {unknown[0]!r} for study {study.name}{hint}; valid keys: {', '.join(fields)}")
    try:
        cfg = study.config(profile, coerce_overrides(study.Config, overrides))
    except pydantic.ValidationError as e:
        raise UsageError(_validation_message(e, "config", overrides)) from None
    try:
        specs = study_units(study, cfg)
    except pydantic.ValidationError as e:
        raise UsageError(_validation_message(e, "plan")) from None
    except ValueError as e:
        raise UsageError(f"invalid config: {one_line(e)}") from None
    for spec in specs:
        if isinstance(spec, TaskSpec):
            try:
                validate_task(spec)
            except pydantic.ValidationError as e:
                raise UsageError(_validation_message(e, "plan")) from None
            except ValueError as e:
                raise UsageError(f"invalid config: {one_line(e)}") from None
    return cfg, specs


def study_units(study: Study, cfg: StudyConfig) -> list[Unit]:
    """The study's plan, and the rounding check's reruns when the config asks for them."""
    units = study.plan(cfg)
    if getattr(cfg, "rounding_check", False):
        units = [*units, *rounding_tasks(units)]
    return units


def with_rounding_evidence(output: StudyOutput, results: Results, units: list[Unit]) -> StudyOutput:
    """Every claim of a study rests on the study's runs: add what the rounding check measured to each."""
    extra = rounding_evidence(results, units)
    runs = [u for u in units if isinstance(u, RunSpec)]
    if not extra and runs:
        extra = {
            "seed spread mostly rounding noise": "no: in float64 a run does not depend on its group"
            if all(r.precision == "float64" for r in runs)
            else "not measured (--set rounding_check=true trains seed 0 of each configuration alone to measure it)"
        }
    if extra:
        output.claims = [dataclasses.replace(c, evidence={**c.evidence, **extra}) for c in output.claims]
    return output


# --- output directory and device --------------------------------------------------------------------
def check_writable(out: Path) -> None:
    """Refuse an output directory we cannot create or write, before anything is written."""
    out = Path(out)
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        if probe.is_symlink():  # a dangling link: mkdir would fail
            raise UsageError(f"--out {out}: {probe} is a broken symbolic link")
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        what = "is not a directory" if probe == out else f"cannot be created: {probe} is not a directory"
        raise UsageError(f"--out {out}: {what}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: not writable ({probe} does not allow writing)")
    db = out / "batchlab.sqlite"
    if db.exists() and not os.access(db, os.R_OK | os.W_OK):
        raise UsageError(f"--out {out}: the store {db} is not writable")


def check_device(device: str | torch.device) -> torch.device:
    try:
        dev = resolve_device(device)
    except ValueError as e:
        raise UsageError(one_line(e)) from None
    except RuntimeError:  # torch.device("gpu"): not a device string
        raise UsageError(f"--device {device}: not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UsageError(f"--device {device}: there are only {torch.cuda.device_count()} CUDA devices")
    return dev


def open_store(out: Path) -> Store:
    """The store in `out` (created if needed), with file-system errors as one line."""
    try:
        return Store(out)
    except (StoreVersionError, StoreCorruptError) as e:
        raise UsageError(one_line(e)) from None
    except (OSError, sqlite3.Error) as e:
        raise UsageError(f"cannot open the store in {out}: {one_line(e)}{_store_hint(e)}") from None


def _store_hint(e: Exception) -> str:
    if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
        return " (another process held it too long: wait for it, or run again)"
    if isinstance(e, sqlite3.DatabaseError) and not isinstance(e, sqlite3.OperationalError):
        return ": the store is damaged; move it aside (or choose another --out) and run again"
    return ""


def lookup(name: str) -> Study:
    try:
        return get_study(name)
    except KeyError as e:
        raise UsageError(e.args[0]) from None


def _done_in(out: Path, keys: list[str]) -> set[str]:
    """Keys already in the store at `out`; reads only, and creates nothing when there is no store."""
    if not Store.exists(out):
        return set()
    try:
        with Store(out) as store:
            return store.done(keys)
    except (StoreVersionError, StoreCorruptError) as e:
        raise UsageError(one_line(e)) from None
    except (OSError, sqlite3.Error) as e:
        raise UsageError(f"cannot read the store in {out}: {one_line(e)}{_store_hint(e)}") from None


def check_data(specs: list[Unit], device: torch.device, data_dir: str | None = None) -> None:
    """Load (and cache) the data the pending runs need, so a data problem stops us before any write."""
    from .engine.data import load_for

    seen = set()
    for spec in specs:
        if isinstance(spec, TaskSpec):
            if spec.start is None:
                continue
            spec = spec.start.run
        what = (spec.dataset, spec.train_subset, spec.test_subset, spec.normalize, spec.model, spec.precision)
        if what not in seen:
            seen.add(what)
            load_for(spec, device, data_dir)  # raises DataError with a one-line message


# --- run ---------------------------------------------------------------------------------------------
@dataclass
class Prepared:
    """A validated study execution: nothing has been written yet."""

    study: Study
    profile: str
    config: StudyConfig
    specs: list[Unit]  # runs and tasks, unique by key, plan order
    out: Path
    device: torch.device
    data_dir: str | None = None

    @property
    def name(self) -> str:
        return self.study.name

    @property
    def variant(self) -> str:
        """The label of the keys set away from the profile ("" for none): it names the report's directory."""
        return variant_label(config_overrides(self.study, self.profile, self.config))


def config_overrides(study: Study, profile: str, cfg: StudyConfig) -> dict[str, Any]:
    """The keys of `cfg` whose values differ from the profile's (JSON values, sorted by key)."""
    return overrides(cfg.model_dump(mode="json"), study.config(profile).model_dump(mode="json"))


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
    cfg, specs = make_config(study, profile, overrides or {})
    out = Path(out)
    check_writable(out)
    dev = check_device(device)
    data_dir = None if data_dir is None else str(data_dir)
    unique = list({s.key: s for s in specs}.values())
    if check_data_now:
        done = _done_in(out, [s.key for s in unique])
        check_data([s for s in unique if s.key not in done], dev, data_dir)
    return Prepared(study, profile, cfg, unique, out, dev, data_dir)


@dataclass
class WorkPlan:
    """What the store lacks: runs to train (with the checkpoints to keep), and tasks to compute."""

    runs: list[RunSpec]
    checkpoints: dict[str, set[int]]  # run key -> epochs whose weights a pending task needs
    tasks: list[TaskSpec]
    rerun_for_checkpoints: set[str]  # runs in the store, trained again only for a missing checkpoint


def work_plan(store: Store, units: list[Unit]) -> WorkPlan:
    """Runs before the tasks that need their checkpoints; nothing that the store already has."""
    runs = {u.key: u for u in units if isinstance(u, RunSpec)}
    tasks = [u for u in units if isinstance(u, TaskSpec)]
    for t in tasks:
        if t.start is not None:
            runs.setdefault(t.start.run.key, t.start.run)
    done = store.done([*runs, *(t.key for t in tasks)])
    pending_tasks = [t for t in tasks if t.key not in done]
    checkpoints: dict[str, set[int]] = {}
    for t in pending_tasks:
        if t.start is not None:
            checkpoints.setdefault(t.start.run.key, set()).add(t.start.epoch)
    rerun = set()
    for key, epochs in list(checkpoints.items()):
        if key in done:
            missing = epochs - store.checkpoint_epochs(key)
            if missing:
                checkpoints[key] = missing
                rerun.add(key)
            else:
                del checkpoints[key]
    pending_runs = [r for k, r in runs.items() if k not in done or k in rerun]
    return WorkPlan(pending_runs, checkpoints, pending_tasks, rerun)


def execute(
    prep: Prepared, monitor: Monitor | None = None, executor: LocalExecutor | RayExecutor | None = None
) -> StudyRun:
    """Compute whatever the plan lacks in the store (one transaction per unit), then write the report.

    A unit the executor could not compute (a Ray worker lost more often than Ray retries it) comes back as
    a `UnitFailure`: everything else is stored, the tasks that start from its runs are not shipped, and
    `UnitsFailed` is raised before the study is recorded; the same call then computes only what is missing."""
    monitor = monitor or Monitor()
    executor = executor or LocalExecutor()
    t0 = time.perf_counter()
    store = open_store(prep.out)
    try:
        plan = work_plan(store, prep.specs)
        planned_runs = [s for s in prep.specs if isinstance(s, RunSpec)]
        resume = kept_states(store, plan.runs)
        epochs = {s.key: s.epochs for s in plan.runs}
        kept_epochs = sum(len(p.keys) * p.epoch for p in resume)
        monitor.start(prep.name, len(planned_runs), len(plan.runs), sum(epochs.values()) - kept_epochs)
        for p in resume:
            monitor.resumed(len(p.keys), p.epoch, epochs[p.keys[0]])
        env: dict = {}

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
        # the live hooks need the work in this process (a distributed executor reports finished units only)
        hooks = (
            {"on_metrics": monitor.metrics, "on_progress": monitor.progress, "on_partial": keep}
            if isinstance(executor, LocalExecutor)
            else {}
        )
        failed: list[UnitFailure] = []
        for _, result in executor.map(
            units, prep.device, prep.data_dir, on_epoch=monitor.epoch, on_chunk=save_chunk, **hooks
        ):
            if isinstance(result, UnitFailure):
                failed.append(result)
        monitor.finish()
        lost = {key for f in failed for key in f.keys}
        tasks = [t for t in plan.tasks if t.start is None or t.start.run.key not in lost]
        if tasks:
            monitor.tasks(len(tasks))
            task_units = (
                TaskUnit(t, None if t.start is None else store.checkpoint(t.start.run.key, t.start.epoch))
                for t in tasks
            )
            for _, result in executor.map(task_units, prep.device, prep.data_dir):
                if isinstance(result, UnitFailure):
                    failed.append(result)
                    continue
                env.update(result.env)
                save_task(store, result)
                monitor.task_done()
        if failed:
            units_planned = len(units) + len(plan.tasks)
            raise UnitsFailed(failure_message(failed, units_planned, prep.out, len(plan.tasks) - len(tasks)))
        wall = time.perf_counter() - t0
        trained = len(plan.runs) + len(plan.tasks)
        env = env or environment(prep.device)
        meta = {
            "profile": prep.profile,
            "device": env["device"],
            "torch": env["torch"],
            "git_commit": env["git_commit"],
            "code_version": env.get("code_version"),
            "trained_runs": len(plan.runs),
            "computed_tasks": len(plan.tasks),
            "reused_units": len(prep.specs) - trained,
            "overrides": config_overrides(prep.study, prep.profile, prep.config),
        }
        store.save_study(
            name=prep.name,
            profile=prep.profile,
            config=prep.config.model_dump(mode="json"),
            run_keys=[s.key for s in prep.specs],
            wall_s=wall,
            meta=meta,
            variant=prep.variant,
        )
        report, output = write_report(prep.name, prep.out, profile=prep.profile, variant=prep.variant, store=store)
    finally:
        store.close()
    reused = max(len(prep.specs) - trained, 0)
    return StudyRun(prep.name, prep.profile, report, wall, trained, reused, output, len(plan.tasks))


def run_study(
    name: str,
    *,
    profile: str = "quick",
    overrides: dict[str, Any] | None = None,
    device: str = "auto",
    out: str | Path = "batchlab-results",
    monitor: Monitor | None = None,
    data_dir: str | Path | None = None,
    executor: LocalExecutor | RayExecutor | None = None,
) -> StudyRun:
    """Compute whatever the study's plan lacks in the store, then write its report."""
    return execute(
        prepare(name, profile=profile, overrides=overrides, device=device, out=out, data_dir=data_dir),
        monitor,
        executor,
    )


def kept_states(store: Store, runs: list[RunSpec]) -> list[PartialState]:
    """The states kept from interrupted training whose runs are all among `runs` (to continue from). A
    state whose runs were stored since (by another process, or an older batchlab) is deleted; one of
    other runs (another study's) is left alone; an unreadable one is ignored (its runs start again)."""
    pending = {s.key for s in runs}
    out = []
    for record in store.partials():
        if not set(record.keys) <= pending:
            if store.done(record.keys):
                store.delete_partials(record.keys)
            continue
        try:
            arrays = store.load_partial(record)
        except OSError:
            continue
        out.append(PartialState(record.keys, record.epoch, record.meta, arrays))
    return out


def save_result(store: Store, result: RunResult, *, rerun: bool = False) -> None:
    """A training run and the checkpoints it was asked to keep, in one transaction. A run trained again
    only for a missing checkpoint adds that checkpoint and leaves its stored row as it was."""
    arrays = {(name, epoch): a for epoch, ckpt in result.checkpoints.items() for name, a in ckpt.items()}
    if rerun:
        store.save_artifacts(result.key, arrays)
        return
    store.save_run(
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


# --- report ------------------------------------------------------------------------------------------
def recorded_results(store: Store, study: Study, record: dict) -> tuple[StudyConfig, list[Unit], Results]:
    """A study's recorded config (`store.study(...)`), its plan and the `Results` of that plan in the store,
    as its report reads them. A task's start run is read too: its metrics describe the checkpoint the task
    measured. Raises ValueError (pydantic's included) when the study no longer accepts the recorded config."""
    cfg = study.Config(**record["config"])
    specs = study_units(study, cfg)
    return cfg, specs, Results(store.runs(keys_read(specs)), store.load_array)


def keys_read(specs: list[Unit]) -> list[str]:
    """The keys a report reads for a plan: its units, and the runs whose checkpoints its tasks start from."""
    starts = [s.start.run.key for s in specs if isinstance(s, TaskSpec) and s.start is not None]
    return [*(s.key for s in specs), *starts]


def find_record(
    store: Store, study: Study, profile: str | None, variant: str | None, sets: dict[str, Any] | None
) -> dict | None:
    """The latest study record of `profile` (any if None) and `variant` (any if None), or, when `sets` (the
    `--set` overrides, {} for none) is given, the latest record whose config those overrides give: their
    variant label is computed for each profile (the label depends on the profile's defaults)."""
    if sets is None:
        return store.study(study.name, profile, variant)
    wanted, errors = set(), []
    for p in [profile] if profile else list(study.profiles):
        try:
            wanted.add((p, variant_label(config_overrides(study, p, make_config(study, p, sets)[0]))))
        except UsageError as e:
            errors.append(e)
    if not wanted:
        raise errors[0]
    return next((r for r in store.study_records(study.name) if (r["profile"], r["variant"]) in wanted), None)


def write_report(
    name: str,
    out: str | Path,
    *,
    profile: str | None = None,
    variant: str | None = None,
    sets: dict[str, Any] | None = None,
    store: Store | None = None,
) -> tuple[Path, StudyOutput]:
    """Recompute a study's figures, tables and claims from the store and write its report.html.

    Which record: the latest of `profile` and `variant` (None: any); `sets` (`--set` overrides, {} for the
    plain profile) names the variant as `batchlab run` did. A variant's report goes to `out/STUDY@<label>/`.
    Every check (study, profile, results present, recorded config valid) runs before any write.
    """
    study = lookup(name)
    out = Path(out)
    if profile is not None and profile not in study.profiles:
        raise UsageError(f"unknown profile {profile!r} for {name}; choose one of {', '.join(study.profiles)}")
    own = store is None
    if own:
        if not Store.exists(out):
            raise UsageError(f"no results in {out}: run `batchlab run {name} --out {out}` first")
        store = open_store(out)
    try:
        record = find_record(store, study, profile, variant, sets)
        if record is None:
            which = f" with profile {profile!r}" if profile else ""
            which += " with these --set values" if sets else (f" for {variant}" if variant else "")
            others = [r["variant"] for r in store.study_records(name) if r["variant"]]
            hint = f" (it has results with --set: {', '.join(sorted(set(others)))})" if others and not sets else ""
            raise UsageError(
                f"{name} has no recorded results{which} in {out}{hint}; run `batchlab run {name} --out {out}` first"
            )
        try:
            cfg, specs, results = recorded_results(store, study, record)
        except ValueError as e:  # pydantic.ValidationError included: the study changed since the run
            raise UsageError(
                f"the recorded config of {name} in {out} is no longer valid ({one_line(e)}); run the study again"
            ) from None
        if not results.records:
            raise UsageError(f"{name}: none of its runs are in {out}; run `batchlab run {name} --out {out}` first")
        output = with_rounding_evidence(study.analyze(cfg, results), results, specs)
        if diverged := diverged_table(results, specs):
            output.tables.append(diverged)
        env = next(iter(results.records.values())).env
    except sqlite3.Error as e:
        raise UsageError(f"cannot read the store in {out}: {one_line(e)}{_store_hint(e)}") from None
    except OSError as e:  # an artifact file missing or unreadable
        raise UsageError(f"{one_line(e)}; the store is damaged: move {out} aside and run again") from None
    finally:
        if own:
            store.close()
    study_dir = out / report_dir_name(name, record["variant"])
    changed = config_overrides(study, record["profile"], cfg)
    figures = []
    for fig in output.figures:
        paths = save_figure(fit_text(fig.figure), study_dir / "figures", fig.name)  # labels wrapped to the page
        figures.append(FigureRef(paths["png"], fig.caption))
    for table in output.tables:
        write_csv(study_dir / "tables" / f"{table.name}.csv", table.rows)
    meta = {
        "profile": record["profile"],
        "overrides": describe(changed, record["profile"]),
        "seeds": getattr(cfg, "seeds", None),
        "device": env.get("device"),
        "library versions": {k: env.get(k) for k in ("torch", "cuda", "numpy", "python", "batchlab")},
        "git_commit": env.get("git_commit"),
        "code_version": env.get("code_version"),
        "training wall time (s)": round(results.wall_s(specs), 2),
        "runs": len(results.records),
        "config": cfg.model_dump(mode="json"),
    }
    write_claims_json(
        study_dir / "claims.json",
        study=name,
        profile=record["profile"],
        claims=output.claims,
        meta={
            "overrides": changed,
            "config": meta["config"],
            **{k: meta[k] for k in ("device", "git_commit", "code_version", "library versions")},
        },
    )
    report = write_study_report(
        study_dir / "report.html",
        study=name,
        title=study.title,
        description=study.description,
        meta=meta,
        figures=figures,
        tables=output.tables,
        claims=output.claims,
        overrides=changed,
    )
    return report, output


def write_reproduction_index(
    out: str | Path,
    *,
    profile: str,
    device: torch.device,
    done: list[tuple[Prepared, StudyRun, float]],
    total_wall_s: float,
) -> Path:
    """`out/index.html` of `batchlab reproduce`: every claim (linked to its study report), what was run, and
    the time per study. `done` has, per study in run order, its prepared execution, its result and the wall
    time of both (computing what the store lacked, and the report)."""
    from .report.html import write_index

    env = environment(device)
    studies, claims = [], []
    with Store(out) as store:
        compute = {prep.name: stored_compute_s(store, [s.key for s in prep.specs]) for prep, _, _ in done}
        variants = [variant_view(out, r) for r in store.study_records() if r["variant"]]
    for prep, result, wall_s in done:
        planned_tasks = sum(isinstance(s, TaskSpec) for s in prep.specs)
        studies.append(
            {
                "name": prep.name,
                "title": prep.study.title,
                "href": f"{prep.name}/report.html",
                "wall_s": wall_s,
                "compute_s": compute[prep.name],
                "n_runs": len(prep.specs),
                "n_tasks": planned_tasks,
                "trained": result.trained,
                "reused": result.reused,
                "claims": [c.id for c in result.output.claims],
            }
        )
        claims += result.output.claims
    n_units = sum(s["n_runs"] for s in studies)
    n_tasks = sum(s["n_tasks"] for s in studies)
    meta = {
        "profile": profile,
        "studies": len(studies),
        "training runs": n_units - n_tasks,
        "tasks": n_tasks,
        "computed now": sum(s["trained"] for s in studies),
        "reused from the store": sum(s["reused"] for s in studies),
        "device": env["device"],
        "torch": env["torch"],
        "git_commit": env["git_commit"] or env["code_version"],
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "total_wall_s": total_wall_s,
        "command": f"batchlab reproduce --profile {profile} --device {device} --out {out}",
    }
    return write_index(
        Path(out) / "index.html",
        title=f"batchlab reproduction ({profile})",
        meta=meta,
        studies=studies,
        claims=claims,
        total_wall_s=total_wall_s,
        variants=sorted(variants, key=lambda v: (v["name"], v["profile"], v["overrides"])),
    )


def variant_view(out: str | Path, record: dict) -> dict:
    """A study record with `--set` overrides, as the index lists it (a link when its report exists)."""
    page = f"{report_dir_name(record['name'], record['variant'])}/report.html"
    overrides = record["meta"].get("overrides")
    return {
        "name": record["name"],
        "profile": record["profile"],
        "overrides": ", ".join(f"{k}={set_value(v)}" for k, v in overrides.items()) if overrides else record["variant"],
        "href": page if (Path(out) / page).is_file() else "",
        "updated_at": record["updated_at"],
    }


def stored_compute_s(store: Store, keys: list[str]) -> float:
    """Device time the stored units took when they were computed: each run's share of its group's wall time."""
    total = 0.0
    for i in range(0, len(keys), 500):
        part = keys[i : i + 500]
        row = store.db.execute(
            f"SELECT SUM(wall_s / group_size) FROM runs WHERE key IN ({','.join('?' * len(part))})", part
        ).fetchone()
        total += row[0] or 0.0
    return total


DIVERGED_FIELDS = ("optimizer", "lr", "momentum", "batch_size", "epochs", "loss_reduction", "precision", "seed")


def diverged_table(results: Results, specs: list[Unit]) -> Table | None:
    """Which runs diverged (a NaN or infinite loss) and at which step; None when none did.

    A diverged run stops updating at that step (its group goes on without it) and its later
    metrics are NaN; every claim leaves it out of its samples and counts it in its evidence.
    """
    rows = []
    for spec in specs:
        if isinstance(spec, RunSpec) and results.has(spec) and results.status(spec) == "diverged":
            step = results.records[spec.key].diverged_step
            steps, epochs = results.steps(spec), results.epochs(spec)
            epoch = None if step is None or len(steps) < 2 else round(float(np.interp(step, steps, epochs)), 2)
            rows.append(
                {
                    **{k: getattr(spec, k) for k in DIVERGED_FIELDS},
                    "diverged at step": step,
                    "epoch": epoch,
                    "key": spec.key,
                }
            )
    if not rows:
        return None
    return Table(
        "diverged_runs",
        rows,
        f"{len(rows)} of {sum(isinstance(s, RunSpec) for s in specs)} runs diverged (NaN or infinite loss). A "
        "diverged run is left out of every claim's samples and counted in its evidence.",
    )


def write_claims_json(path: Path, *, study: str, profile: str, claims: list, meta: dict) -> Path:
    """The claims as data beside report.html: id, statement, source, rule, verdict, why and evidence."""
    doc = {"study": study, "profile": profile, **meta, "claims": [c.to_dict() for c in claims]}
    return atomic_write_text(path, json.dumps(json_ready(doc), indent=1, allow_nan=False) + "\n")
