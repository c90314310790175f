"""From a study name to a report: config -> plan -> skip finished -> group -> train -> store -> report.

`run_study` is what `batchlab run` does. It is two steps: `prepare` checks everything the user gave
(study, profile, `--set` keys and values, device, output directory, data) and writes nothing;
`execute` trains what the store lacks and writes the report. `write_report` is where
`batchlab report` starts (it recomputes tables, figures and claims from the store without training).
"""
from __future__ import annotations

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

import pydantic
import torch

from .engine import RunResult, RunSpec, partition, resolve_device, train_group
from .env import environment
from .errors import UsageError
from .report.figures import save_figure
from .report.html import FigureRef, write_csv, write_study_report
from .store import Store
from .studies import Results, Study, get_study
from .studies.common import StudyConfig, StudyOutput


@dataclass
class StudyRun:
    study: str
    profile: str
    report: Path
    wall_s: float
    trained: int
    reused: int
    output: StudyOutput


class Monitor:
    """What a caller (the CLI's progress bar) hears about a study's training. Methods are no-ops."""

    def start(self, study: str, runs: int, pending: int, run_epochs: int) -> None:
        """`runs` planned, `pending` of them to train (the rest are in the store), `run_epochs` to do."""

    def epoch(self, runs: int, epochs: int) -> None:
        """`runs` runs each finished `epochs` more epochs."""

    def saved(self, runs: int) -> None:
        """`runs` more runs were written to the store."""

    def finish(self) -> None:
        """Training is over (the report is written next)."""


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
    """A bare value for a tuple field becomes a 1-tuple: `--set widths=32` means widths=(32,)."""
    out = dict(overrides)
    for key, value in overrides.items():
        field = config_cls.model_fields.get(key)
        if field is not None and value is not None and not isinstance(value, (list, tuple, dict)) \
                and _is_sequence_type(field.annotation):
            out[key] = (value,)
    return out


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _validation_message(e: pydantic.ValidationError, where: str, given: dict[str, Any] | None = None) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    value = err.get("input")
    if given and len(err["loc"]) == 1 and err["loc"][0] in given:
        value = given[err["loc"][0]]  # what the user typed, not its coerced form
    got = f" (got {value!r})" if "input" in err and not isinstance(value, (dict, pydantic.BaseModel)) else ""
    more = f" (+{e.error_count() - 1} more)" if e.error_count() > 1 else ""
    msg = _one_line(err["msg"]).removeprefix("Value error, ")
    if where == "config":
        return f"invalid value for {loc}: {msg}{got}{more}" if loc else f"invalid config: {msg}{more}"
    # the study's config validated but a run it plans does not: name the run's field
    return f"invalid config: a planned run has an invalid {loc or 'combination'}: {msg}{got}{more}"


def make_config(study: Study, profile: str, overrides: dict[str, Any]) -> tuple[StudyConfig, list[RunSpec]]:
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
        specs = study.plan(cfg)
    except pydantic.ValidationError as e:
        raise UsageError(_validation_message(e, "plan")) from None
    except ValueError as e:
        raise UsageError(f"invalid config: {_one_line(e)}") from None
    return cfg, specs


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
        raise UsageError(_one_line(e)) from None
    except RuntimeError:  # torch.device("gpu"): not a device string
        raise UsageError(f"--device {device}: not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UsageError(f"--device {device}: there are only {torch.cuda.device_count()} CUDA devices")
    return dev


def open_store(out: Path) -> Store:
    """The store in `out` (created if needed), with file-system errors as one line."""
    try:
        return Store(out)
    except (OSError, sqlite3.Error) as e:
        raise UsageError(f"cannot open the store in {out}: {_one_line(e)}") from None


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
    except (OSError, sqlite3.Error) as e:
        raise UsageError(f"cannot read the store in {out}: {_one_line(e)}") from None


def check_data(specs: list[RunSpec], device: torch.device) -> None:
    """Load (and cache) the data the pending runs need, so a data problem stops us before any write."""
    from .engine.data import load_for

    seen = set()
    for spec in specs:
        what = (spec.dataset, spec.train_subset, spec.test_subset, spec.normalize, spec.model, spec.precision)
        if what not in seen:
            seen.add(what)
            load_for(spec, device)  # raises DataError with a one-line message


# --- run ---------------------------------------------------------------------------------------------
@dataclass
class Prepared:
    """A validated study execution: nothing has been written yet."""

    study: Study
    profile: str
    config: StudyConfig
    specs: list[RunSpec]  # unique by key, plan order
    out: Path
    device: torch.device

    @property
    def name(self) -> str:
        return self.study.name


def prepare(name: str, *, profile: str = "quick", overrides: dict[str, Any] | None = None,
            device: str | torch.device = "auto", out: str | Path = "batchlab-results",
            check_data_now: bool = True) -> Prepared:
    """Validate everything about a study execution; raise UsageError (or DataError), write nothing."""
    study = lookup(name)
    cfg, specs = make_config(study, profile, overrides or {})
    out = Path(out)
    check_writable(out)
    dev = check_device(device)
    unique = list({s.key: s for s in specs}.values())
    if check_data_now:
        done = _done_in(out, [s.key for s in unique])
        check_data([s for s in unique if s.key not in done], dev)
    return Prepared(study, profile, cfg, unique, out, dev)


def execute(prep: Prepared, monitor: Monitor | None = None) -> StudyRun:
    """Train whatever the plan lacks in the store (one transaction per run), then write the report."""
    monitor = monitor or Monitor()
    t0 = time.perf_counter()
    store = open_store(prep.out)
    try:
        done = store.done(s.key for s in prep.specs)
        pending = [s for s in prep.specs if s.key not in done]
        monitor.start(prep.name, len(prep.specs), len(pending), sum(s.epochs for s in pending))
        env = environment(prep.device)
        def save_chunk(results: list[RunResult]) -> None:
            for result in results:
                save_result(store, result, env)
            monitor.saved(len(results))

        for group in partition(pending):
            train_group(group, device=prep.device, on_epoch=monitor.epoch, on_chunk=save_chunk)
        monitor.finish()
        wall = time.perf_counter() - t0
        meta = {"profile": prep.profile, "device": env["device"], "torch": env["torch"],
                "git_commit": env["git_commit"], "trained_runs": len(pending),
                "reused_runs": len(prep.specs) - len(pending)}
        store.save_study(name=prep.name, profile=prep.profile, config=prep.config.model_dump(mode="json"),
                         run_keys=[s.key for s in prep.specs], wall_s=wall, meta=meta)
        report, output = write_report(prep.name, prep.out, profile=prep.profile, store=store)
    finally:
        store.close()
    return StudyRun(prep.name, prep.profile, report, wall, len(pending), len(prep.specs) - len(pending), output)


def run_study(name: str, *, profile: str = "quick", overrides: dict[str, Any] | None = None,
              device: str = "auto", out: str | Path = "batchlab-results",
              monitor: Monitor | None = None) -> StudyRun:
    """Train whatever the study's plan lacks in the store, then write its report."""
    return execute(prepare(name, profile=profile, overrides=overrides, device=device, out=out), monitor)


def save_result(store: Store, result: RunResult, env: dict) -> None:
    store.save_run(key=result.key, config=result.spec.full_dict(), seed=result.spec.seed, status=result.status,
                   diverged_step=result.diverged_step, steps=result.steps, wall_s=result.wall_s,
                   group_size=result.group_size, env=env, metrics=result.metrics)


# --- report ------------------------------------------------------------------------------------------
def write_report(name: str, out: str | Path, *, profile: str | None = None,
                 store: Store | None = None) -> tuple[Path, StudyOutput]:
    """Recompute a study's figures, tables and claims from the store and write its report.html.

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
        record = store.study(name, profile)
        if record is None:
            which = f" with profile {profile!r}" if profile else ""
            raise UsageError(f"{name} has no recorded results{which} in {out}; "
                             f"run `batchlab run {name} --out {out}` first")
        try:
            cfg = study.Config(**record["config"])
            specs = study.plan(cfg)
        except ValueError as e:  # pydantic.ValidationError included: the study changed since the run
            raise UsageError(f"the recorded config of {name} in {out} is no longer valid "
                             f"({_one_line(e)}); run the study again") from None
        results = Results(store.runs(s.key for s in specs))
        if not results.records:
            raise UsageError(f"{name}: none of its runs are in {out}; run `batchlab run {name} --out {out}` first")
        output = study.analyze(cfg, results)
        env = next(iter(results.records.values())).env
    finally:
        if own:
            store.close()
    study_dir = out / name
    figures = []
    for fig in output.figures:
        paths = save_figure(fig.figure, study_dir / "figures", fig.name)
        figures.append(FigureRef(paths["png"], fig.caption))
    for table in output.tables:
        write_csv(study_dir / "tables" / f"{table.name}.csv", table.rows)
    meta = {
        "profile": record["profile"], "seeds": getattr(cfg, "seeds", None), "device": env.get("device"),
        "library versions": {k: env.get(k) for k in ("torch", "cuda", "numpy", "python", "batchlab")},
        "git_commit": env.get("git_commit"), "training wall time (s)": round(results.wall_s(specs), 2),
        "runs": len(results.records), "config": cfg.model_dump(mode="json"),
    }
    report = write_study_report(study_dir / "report.html", study=name, title=study.title,
                                description=study.description, meta=meta, figures=figures,
                                tables=output.tables, claims=output.claims)
    return report, output
