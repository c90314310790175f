"""`index.html` of `batchlab reproduce`: every claim of every study, what was run, and the time per study."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ..engine.spec import TaskSpec
from ..env import environment
from ..errors import UsageError
from ..report.html import write_index
from ..report.overrides import format_set_value, report_dir_name
from ..store import Store
from .reports import write_claims_json
from .run import Prepared, StudyRun


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
    env = environment(device)
    studies, claims = [], []
    with Store(out) as store:
        compute = {prep.name: store.compute_s([s.key for s in prep.specs]) for prep, _, _ in done}
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
    write_claims_json(
        Path(out) / "claims.json",
        study="reproduce",
        profile=profile,
        claims=claims,
        meta={
            "device": env["device"],
            "torch": env["torch"],
            "date": time.strftime("%Y-%m-%d"),
            "command": meta["command"],
            "total_wall_s": total_wall_s,
            "studies": {
                s["name"]: {"wall_s": s["wall_s"], "trained_runs": s["trained"], "reused_runs": s["reused"]}
                for s in studies
            },
        },
    )
    return write_index(
        Path(out) / "index.html",
        title=f"batchlab reproduction ({profile})",
        meta=meta,
        studies=studies,
        claims=claims,
        total_wall_s=total_wall_s,
        overridden_runs=sorted(variants, key=lambda v: (v["name"], v["profile"], v["overrides"])),
    )


def select_studies(names: str | None) -> list[str]:
    """The studies `--studies a,b` names, in catalogue order (all when None); an unknown name is a UsageError."""
    from ..studies import REGISTRY

    if names is None:
        return list(REGISTRY)
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in REGISTRY]
    if unknown or not wanted:
        raise UsageError(
            f"--studies: unknown study {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"known studies: {', '.join(REGISTRY)}"
        )
    return [n for n in REGISTRY if n in wanted]


def variant_view(out: str | Path, record: dict) -> dict:
    """A study record with `--set` overrides, as the index lists it (a link when its report exists)."""
    page = f"{report_dir_name(record['name'], record['variant'])}/report.html"
    overrides = record["meta"].get("overrides")
    return {
        "name": record["name"],
        "profile": record["profile"],
        "overrides": ", ".join(f"{k}={format_set_value(v)}" for k, v in overrides.items())
        if overrides
        else record["variant"],
        "href": page if (Path(out) / page).is_file() else "",
        "updated_at": record["updated_at"],
    }
