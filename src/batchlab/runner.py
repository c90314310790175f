"""From a study name to a report: config -> plan -> skip finished -> group -> train -> store -> report.

`run_study` is what `batchlab run` does; `write_report` is where `batchlab report` starts (it
recomputes tables, figures and claims from the store without training).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pydantic
import torch

from .engine import RunResult, partition, resolve_device, train_group
from .env import environment
from .errors import UsageError
from .report.figures import save_figure
from .report.html import FigureRef, write_csv, write_study_report
from .store import Store
from .studies import Results, Study, get_study
from .studies.common import StudyOutput


@dataclass
class StudyRun:
    study: str
    profile: str
    report: Path
    wall_s: float
    trained: int
    reused: int
    output: StudyOutput


def parse_value(raw: str) -> Any:
    """A `--set` value: JSON if it parses (numbers, true, [1,2]), a comma list, else the string."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        if "," in raw:
            return [parse_value(part.strip()) for part in raw.split(",")]
        return raw


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise UsageError(f"--set {pair!r}: expected key=value")
        key, raw = pair.split("=", 1)
        out[key.strip()] = parse_value(raw.strip())
    return out


def make_config(study: Study, profile: str, overrides: dict[str, Any]):
    """The validated study config; any problem becomes one clear line."""
    if profile not in study.profiles:
        raise UsageError(f"unknown profile {profile!r} for {study.name}; choose one of {', '.join(study.profiles)}")
    unknown = sorted(set(overrides) - set(study.Config.model_fields))
    if unknown:
        raise UsageError(f"unknown key {unknown[0]!r} for study {study.name}; valid keys: "
                         f"{', '.join(study.Config.model_fields)}")
    try:
        cfg = study.config(profile, overrides)
        specs = study.plan(cfg)
    except pydantic.ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        raise UsageError(f"invalid value for {loc}: {err['msg']} (got {err.get('input')!r})") from None
    return cfg, specs


def check_writable(out: Path) -> None:
    """Refuse an output directory we cannot create or write, before anything is written."""
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: not writable (check the path and its permissions)")


def lookup(name: str) -> Study:
    try:
        return get_study(name)
    except KeyError as e:
        raise UsageError(e.args[0]) from None


def run_study(name: str, *, profile: str = "quick", overrides: dict[str, Any] | None = None,
              device: str = "auto", out: str | Path = "batchlab-results",
              progress: Callable[[str, int, int], Any] | None = None,
              on_epoch: Callable[[int, int], None] | None = None) -> StudyRun:
    """Train whatever the study's plan lacks in the store, then write its report."""
    study = lookup(name)
    cfg, specs = make_config(study, profile, overrides or {})
    out = Path(out)
    check_writable(out)
    try:
        dev = resolve_device(device)
    except ValueError as e:
        raise UsageError(str(e)) from None
    t0 = time.perf_counter()
    store = Store(out)
    try:
        unique = list({s.key: s for s in specs}.values())
        done = store.done(s.key for s in unique)
        pending = [s for s in unique if s.key not in done]
        if progress:
            progress(name, len(unique), sum(s.epochs for s in pending))
        env = environment(dev)
        for group in partition(pending):
            for result in train_group(group, device=dev, on_epoch=on_epoch):
                save_result(store, result, env)
        wall = time.perf_counter() - t0
        meta = {"profile": profile, "device": env["device"], "torch": env["torch"], "git_commit": env["git_commit"],
                "trained_runs": len(pending), "reused_runs": len(unique) - len(pending)}
        store.save_study(name=name, profile=profile, config=cfg.model_dump(mode="json"),
                         run_keys=[s.key for s in unique], wall_s=wall, meta=meta)
        report, output = write_report(name, out, profile=profile, store=store)
    finally:
        store.close()
    return StudyRun(name, profile, report, wall, len(pending), len(unique) - len(pending), output)


def save_result(store: Store, result: RunResult, env: dict) -> None:
    store.save_run(key=result.key, config=result.spec.full_dict(), seed=result.spec.seed, status=result.status,
                   diverged_step=result.diverged_step, steps=result.steps, wall_s=result.wall_s,
                   group_size=result.group_size, env=env, metrics=result.metrics)


def write_report(name: str, out: str | Path, *, profile: str | None = None,
                 store: Store | None = None) -> tuple[Path, StudyOutput]:
    """Recompute a study's figures, tables and claims from the store and write its report.html."""
    study = lookup(name)
    out = Path(out)
    own = store is None
    if own:
        if not (out / "batchlab.sqlite").exists():
            raise UsageError(f"no results in {out}: run `batchlab run {name} --out {out}` first")
        store = Store(out)
    try:
        record = store.study(name, profile)
        if record is None:
            raise UsageError(f"{name} has no recorded results in {out}; run `batchlab run {name}` first")
        cfg = study.Config(**record["config"])
        specs = study.plan(cfg)
        results = Results(store.runs(s.key for s in specs))
        output = study.analyze(cfg, results)
        env = next(iter(results.records.values())).env if results.records else {}
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
        "git commit": env.get("git_commit"), "training wall time (s)": round(results.wall_s(specs), 2),
        "runs": len(results.records), "config": cfg.model_dump(mode="json"),
    }
    report = write_study_report(study_dir / "report.html", study=name, title=study.title,
                                description=study.description, meta=meta, figures=figures,
                                tables=output.tables, claims=output.claims)
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return report, output
