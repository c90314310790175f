"""Self-contained HTML reports: one per study, plus the reproduction's index.

Every file is written atomically (a temporary file in the same directory, then ``os.replace``), so
an interrupted run never leaves a half-written report behind. What the pages show is built in
`views.py`; the layout is in `templates/`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import jinja2

from ..claims import Claim
from ..files import atomic_write_text
from ..outputs import FigureRef, Table
from .formatting import format_duration, format_value, is_numeric
from .views import (
    agreement,
    claim_anchor,
    claim_view,
    configuration_view,
    figure_view,
    key_first,
    meta_items,
    table_view,
    verdict_counts,
)

__all__ = ["render_study_report", "write_study_report", "render_index", "write_index"]

_ENV: jinja2.Environment | None = None


def _env() -> jinja2.Environment:
    global _ENV
    if _ENV is None:
        env = jinja2.Environment(
            loader=jinja2.PackageLoader("batchlab.report", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        env.filters["fmt"] = format_value
        env.filters["duration"] = format_duration
        _ENV = env
    return _ENV


def _version() -> str:
    try:
        from .. import __version__

        return str(__version__)
    except Exception:  # pragma: no cover - version is always there in an installed package
        return ""


def render_study_report(
    *,
    study: str,
    title: str,
    description: str,
    meta: dict,
    figures: list[FigureRef],
    tables: list[Table],
    claims: list[Claim],
    overrides: Mapping | None = None,
) -> str:
    """The study report as an HTML string (see :func:`write_study_report`).

    ``meta["profile"]`` decides whether the recorded full-protocol verdicts are shown beside the claims
    (they are, when a verdict is recorded and the profile is not the recorded one). The page says which
    configuration it shows: the profile and ``overrides`` (the keys set away from the profile's values) in
    its header, and ``meta["config"]`` as a table with those keys marked.
    """
    profile = (meta or {}).get("profile")
    claim_views = [claim_view(c, profile=profile) for c in claims]
    config = (meta or {}).get("config")
    configuration = configuration_view(profile, overrides or {}, config if isinstance(config, Mapping) else None)
    return (
        _env()
        .get_template("study.html.j2")
        .render(
            study=study,
            title=title,
            description=description,
            meta=meta_items({k: v for k, v in (meta or {}).items() if not (k == "config" and configuration["rows"])}),
            configuration=configuration,
            figures=[figure_view(f, i + 1) for i, f in enumerate(figures)],
            tables=[table_view(t) for t in tables],
            claims=claim_views,
            show_recorded=any(c["recorded"] for c in claim_views),
            agreement=agreement(claim_views),
            counts=verdict_counts(claims),
            version=_version(),
        )
    )


def write_study_report(path: Path, **fields) -> Path:
    """Write one self-contained HTML report for a study (figures embedded, CSS inline), atomically.

    `fields` are those of :func:`render_study_report` (study, title, description, meta, figures,
    tables, claims). Sections: title and description, what was run, claims, figures, tables.
    """
    return atomic_write_text(Path(path), render_study_report(**fields))


def render_index(
    *,
    title: str,
    meta: dict,
    studies: list[dict],
    claims: list[Claim],
    total_wall_s: float,
    overridden_runs: list[dict] | None = None,
) -> str:
    """The reproduction summary page as an HTML string (see :func:`write_index`)."""
    profile = (meta or {}).get("profile")
    study_views, claim_study = [], {}
    for s in studies:
        href = str(s.get("href", ""))
        view = {
            "name": str(s.get("name", "")),
            "title": str(s.get("title") or s.get("name", "")),
            "href": href,
            "wall_s": s.get("wall_s"),
            "compute_s": s.get("compute_s"),
            "n_runs": s.get("n_runs"),
            "n_tasks": s.get("n_tasks"),
            "trained": s.get("trained"),
            "reused": s.get("reused"),
            "claims": list(s.get("claims") or []),
        }
        for cid in view["claims"]:
            claim_study.setdefault(cid, view)
        study_views.append(view)
    claim_views = []
    for c in claims:
        s = claim_study.get(c.id)
        href = f"{s['href']}#{claim_anchor(c.id)}" if s and s["href"] else ""
        view = claim_view(c, profile=profile, href=href, study=s["name"] if s else "")
        view["evidence"] = key_first(view["evidence"])  # the index shows the first few: the estimates
        claim_views.append(view)
    for s in study_views:
        s["counts"] = verdict_counts([c for c in claims if claim_study.get(c.id) is s])
    return (
        _env()
        .get_template("index.html.j2")
        .render(
            title=title,
            meta=meta_items(meta),
            studies=study_views,
            titles={s["name"]: s["title"] for s in study_views},
            claims=claim_views,
            show_recorded=any(c["recorded"] for c in claim_views),
            agreement=agreement(claim_views),
            counts=verdict_counts(claims),
            total_wall=format_duration(total_wall_s),
            total_wall_s=total_wall_s,
            n_runs_total=_total(study_views, "n_runs"),
            n_tasks_total=_total(study_views, "n_tasks"),
            compute_total=format_duration(
                sum(float(v["compute_s"]) for v in study_views if is_numeric(v["compute_s"]))
            ),
            show_compute=any(is_numeric(v["compute_s"]) for v in study_views),
            overridden_runs=list(overridden_runs or []),
            version=_version(),
        )
    )


def _total(views: list[dict], key: str) -> int | None:
    values = [int(v[key]) for v in views if is_numeric(v.get(key))]
    return sum(values) if values else None


def write_index(path: Path, **fields) -> Path:
    """Write the reproduction's ``index.html``: the full claims table (each claim linked to its row in its
    study's report, with the recorded full-protocol verdict beside it when there is one), what was run,
    and the time per study.

    `fields` are those of :func:`render_index` (title, meta, studies, claims, total_wall_s, overridden_runs).
    ``studies`` are dicts with keys ``name``, ``title``, ``href`` (relative link), ``wall_s``, ``n_runs`` and
    optionally ``n_tasks``, ``trained``, ``reused``, ``compute_s`` (the device time its stored units took when
    they were computed) and ``claims`` (the ids of the study's claims, for the links). ``overridden_runs`` (dicts with
    ``name``, ``profile``, ``overrides``, ``href``, ``updated_at``) are the studies' runs with ``--set`` overrides
    in the store: listed apart, below, since the claims above are those of the plain profile.
    """
    return atomic_write_text(Path(path), render_index(**fields))
