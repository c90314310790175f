"""A study's report from the store: its record's config and run keys, the study's analysis, the diverged runs,
report.html with its figures and tables, and claims.json. Nothing is computed: `batchlab report` starts here."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import RunSpec
from ..engine.spec import TaskSpec, WorkSpec
from ..errors import UsageError, one_line
from ..files import atomic_write_text
from ..outputs import FigureRef, StudyOutput, Table, json_ready, write_csv
from ..report.figure_files import save_figure
from ..report.figure_fit import fit_text
from ..report.html import write_study_report
from ..report.overrides import configuration_line, overrides_label, report_dir_name
from ..store import DamagedFileError, Store
from ..studies import Results, Study
from ..studies.common import StudyConfig, rounding_evidence
from .checks import array_loader, open_store, store_hint
from .config import config_overrides, lookup, make_config, staged_units, study_units


@dataclass
class Recorded:
    """A study record read back as its report reads it: the keys the record stored, not a new plan."""

    config: StudyConfig
    specs: list[WorkSpec]  # the units of the recorded config's plan that the record lists, in plan order
    results: Results  # those units, and the runs their tasks start from, as stored
    unrecorded: list[str]  # keys the current code plans for that config that the record lacks

    def note(self, name: str) -> str | None:
        """The sentence a report and the console give when the code plans units the record lacks."""
        if not self.unrecorded:
            return None
        n = len(self.unrecorded)
        return (
            f"{name}: the current code plans {n} unit{'s' * (n > 1)} that its record lacks (first: "
            f"{self.unrecorded[0]}); the report shows the {len(self.specs)} recorded ones: run the study again "
            "to compute the others"
        )


def recorded_results(store: Store, study: Study, record: dict) -> Recorded:
    """A study's recorded config (`store.study(...)`), the units its record lists and their `Results` in the
    store, as its report reads them. A task's start run is read too: its metrics describe the checkpoint the
    task measured. The recorded config is planned again only to give the records their specs (and to name the
    planned keys the record lacks: the code changed since). Raises ValueError (pydantic's included) when the
    study no longer accepts the recorded config."""
    cfg = study.Config(**record["config"])
    stored = set(record["run_keys"])
    planned = study_units(study, cfg)
    read = lambda units: Results(store.runs(keys_read(units)), array_loader(store))  # noqa: E731
    planned = staged_units(study, cfg, planned, read)
    specs = [s for s in planned if s.key in stored]
    unrecorded = list(dict.fromkeys(s.key for s in planned if s.key not in stored))
    return Recorded(cfg, specs, read(specs), unrecorded)


def keys_read(specs: list[WorkSpec]) -> list[str]:
    """The keys a report reads for a plan: its units, and the runs whose checkpoints its tasks start from or read."""
    starts = [c.run.key for s in specs if isinstance(s, TaskSpec) for c in s.checkpoints]
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
            wanted.add((p, overrides_label(config_overrides(study, p, make_config(study, p, sets)[0]))))
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
    say: Callable[[str], None] | None = None,
) -> tuple[Path, StudyOutput]:
    """Recompute a study's figures, tables and claims from the store and write its report.html.

    Which record: the latest of `profile` and `variant` (None: any); `sets` (`--set` overrides, {} for the
    plain profile) names the variant as `batchlab run` did. A variant's report goes to `out/STUDY@<label>/`.
    Every check (study, profile, results present, recorded config valid) runs before any write. Units the
    current code plans that the record lacks are named in the report and told to `say`.
    """
    study = lookup(name)
    out = Path(out)
    if profile is not None and profile not in study.profiles:
        raise UsageError(f"unknown profile {profile!r} for {name}; choose one of {', '.join(study.profiles)}")
    own = store is None
    if own:
        if not Store.exists(out):
            raise UsageError(f"no results in {out}: run `batchlab run {name} --out {out}` first")
        store = open_store(out, readonly=True)  # a report writes its files, never the store
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
            recorded = recorded_results(store, study, record)
        except ValueError as e:  # pydantic.ValidationError included: the study changed since the run
            raise UsageError(
                f"the recorded config of {name} in {out} is no longer valid ({one_line(e)}); run the study again"
            ) from None
        results, specs = recorded.results, recorded.specs
        if not results.records:
            raise UsageError(f"{name}: none of its runs are in {out}; run `batchlab run {name} --out {out}` first")
        output = with_rounding_evidence(study.analyze(recorded.config, results), results, specs)
        if diverged := diverged_table(results, specs):
            output.tables.append(diverged)
    except sqlite3.Error as e:
        raise UsageError(f"cannot read the store in {out}: {one_line(e)}{store_hint(e)}") from None
    except DamagedFileError as e:  # an array file missing, or not the bytes of its SHA-256: `run` computes it again
        raise UsageError(one_line(e)) from None
    except OSError as e:
        raise UsageError(f"cannot read the store in {out}: {one_line(e)}") from None
    finally:
        if own:
            store.close()
    if (note := recorded.note(name)) and say is not None:
        say(note)
    return write_files(study, out / report_dir_name(name, record["variant"]), record, recorded, output), output


def write_files(study: Study, study_dir: Path, record: dict, recorded: Recorded, output: StudyOutput) -> Path:
    """A study's report directory: figures (PNG, SVG, PDF), tables as CSV, claims.json, report.html."""
    cfg, results = recorded.config, recorded.results
    env = next(iter(results.records.values())).env
    changed = config_overrides(study, record["profile"], cfg)
    figures = []
    for fig in output.figures:
        paths = save_figure(fit_text(fig.figure), study_dir / "figures", fig.name)  # labels wrapped to the page
        figures.append(FigureRef(paths["png"], fig.caption))
    for table in output.tables:
        write_csv(study_dir / "tables" / f"{table.name}.csv", table.rows)
    meta = {
        "profile": record["profile"],
        "overrides": configuration_line(changed, record["profile"]),
        "seeds": getattr(cfg, "seeds", None),
        "device": env.get("device"),
        "library versions": {k: env.get(k) for k in ("torch", "cuda", "numpy", "python", "batchlab")},
        "git_commit": env.get("git_commit"),
        "code_version": env.get("code_version"),
        "training wall time (s)": round(results.wall_s(recorded.specs), 2),
        "runs": len(results.records),
        "config": cfg.shown() if isinstance(cfg, StudyConfig) else cfg.model_dump(mode="json"),
    }
    unrecorded = {"not in the record": recorded.note(study.name)} if recorded.unrecorded else {}
    write_claims_json(
        study_dir / "claims.json",
        study=study.name,
        profile=record["profile"],
        claims=output.claims,
        meta={
            "overrides": changed,
            "config": meta["config"],
            **{k: meta[k] for k in ("device", "git_commit", "code_version", "library versions")},
            **({"unrecorded_keys": recorded.unrecorded} if recorded.unrecorded else {}),
        },
    )
    return write_study_report(
        study_dir / "report.html",
        study=study.name,
        title=study.title,
        description=study.description,
        meta=meta | unrecorded,
        figures=figures,
        tables=output.tables,
        claims=output.claims,
        overrides=changed,
    )


def with_rounding_evidence(output: StudyOutput, results: Results, units: list[WorkSpec]) -> StudyOutput:
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


DIVERGED_FIELDS = ("optimizer", "lr", "momentum", "batch_size", "epochs", "loss_reduction", "precision", "seed")


def diverged_table(results: Results, specs: list[WorkSpec]) -> Table | None:
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
