"""Self-contained HTML reports (one per study, plus the reproduction's index) and CSV tables.

Every file is written atomically (a temporary file in the same directory, then ``os.replace``), so
an interrupted run never leaves a half-written report or table behind.
"""

from __future__ import annotations

import base64
import json
import math
import numbers
from collections.abc import Mapping
from pathlib import Path

import jinja2

from ..claims import VERDICTS, Claim
from ..files import atomic_write_bytes, atomic_write_text
from ..outputs import FigureRef, Table, _columns, csv_text, json_ready, write_csv  # noqa: F401

__all__ = [
    "FigureRef",
    "Table",
    "write_csv",
    "write_study_report",
    "write_index",
    "atomic_write_bytes",
    "atomic_write_text",
    "format_value",
    "format_duration",
    "claim_anchor",
]


# --------------------------------------------------------------------------------------------
# atomic writes


# --------------------------------------------------------------------------------------------
# data


# --------------------------------------------------------------------------------------------
# formatting


def format_value(v) -> str:
    """Numbers for people: floats to 4 significant digits, ints as they are, others via ``str``."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, numbers.Integral):
        return str(int(v))
    if isinstance(v, numbers.Real):
        x = float(v)
        if math.isnan(x):
            return "NaN"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        if x == 0:
            return "0"
        return f"{x:.4g}"
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, default=_json_default, ensure_ascii=False)
    return str(v)


def format_duration(seconds) -> str:
    """``12.3 s``, ``4 min 05 s``, ``1 h 02 min``."""
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return str(seconds)
    if not math.isfinite(s):
        return format_value(s)
    if s < 60:
        return f"{s:.1f} s" if s >= 1 else f"{s:.2f} s"
    if s < 3600:
        m, sec = divmod(int(round(s)), 60)
        return f"{m} min {sec:02d} s"
    h, rem = divmod(int(round(s)), 3600)
    return f"{h} h {rem // 60:02d} min"


def _json_default(o):
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):  # numpy scalars and arrays
        return o.tolist()
    if hasattr(o, "model_dump"):  # pydantic models
        return o.model_dump()
    if hasattr(o, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(o)
    return str(o)


def _pretty_json(v) -> str:
    """Indented JSON, with short lists of scalars kept on one line (``"lrs": [0.01, 0.1, 1.0]``)."""
    plain = json.loads(json.dumps(v, default=_json_default, ensure_ascii=False))
    return _pretty(plain, 0)


def _pretty(v, depth: int) -> str:
    pad, inner = "  " * depth, "  " * (depth + 1)
    if isinstance(v, dict):
        if not v:
            return "{}"
        parts = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {_pretty(x, depth + 1)}" for k, x in v.items()]
        return "{\n" + ",\n".join(parts) + "\n" + pad + "}"
    if isinstance(v, list):
        compact = json.dumps(v, ensure_ascii=False)
        if not v or (all(not isinstance(x, (dict, list)) for x in v) and len(compact) <= 80):
            return compact
        return "[\n" + ",\n".join(inner + _pretty(x, depth + 1) for x in v) + "\n" + pad + "]"
    return json.dumps(v, ensure_ascii=False)


def _is_numeric(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


_LABELS = {
    "config": "Configuration",
    "profile": "Profile",
    "seeds": "Seeds",
    "device": "Device",
    "versions": "Library versions",
    "library_versions": "Library versions",
    "git_commit": "Git commit",
    "git": "Git commit",
    "wall_s": "Wall time",
    "wall_time_s": "Wall time",
    "total_wall_s": "Total wall time",
    "n_runs": "Runs",
}


def _label(key: str) -> str:
    if key in _LABELS:
        return _LABELS[key]
    text = key.replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def _meta_items(meta: Mapping) -> list[dict]:
    """Turn ``meta`` into display items: {label, kind, value} with kind text|chips|json|duration."""
    items = []
    for key, value in (meta or {}).items():
        key = str(key)
        item = {"key": key, "label": _label(key)}
        if key == "config" or (isinstance(value, Mapping) and _nested(value)):
            if hasattr(value, "model_dump"):
                value = value.model_dump()
            n = len(value) if isinstance(value, Mapping) else None
            item.update(kind="json", value=_pretty_json(value), summary=f"{n} keys" if n is not None else "show")
        elif isinstance(value, Mapping):
            item.update(kind="chips", value=[(str(k), format_value(v)) for k, v in value.items()])
        elif _is_numeric(value) and (key.endswith("_s") or key in ("wall", "wall_time", "seconds")):
            item.update(kind="text", value=format_duration(value))
        elif isinstance(value, (list, tuple)):
            if len(value) <= 40 and all(not isinstance(v, (Mapping, list, tuple)) for v in value):
                item.update(kind="text", value=", ".join(format_value(v) for v in value))
            else:
                item.update(kind="json", value=_pretty_json(value), summary=f"{len(value)} items")
        elif isinstance(value, str) and key in ("git_commit", "git", "commit", "config_hash"):
            item.update(kind="code", value=value)
        else:
            item.update(kind="text", value=format_value(value))
        items.append(item)
    return items


def _nested(d: Mapping) -> bool:
    return len(d) > 12 or any(isinstance(v, (Mapping, list, tuple)) for v in d.values())


def _claim_view(c: Claim, *, profile: str | None = None, href: str = "", study: str = "") -> dict:
    return {
        "id": c.id,
        "anchor": claim_anchor(c.id),
        "statement": c.statement,
        "source": c.source,
        "verdict": c.verdict,
        "verdict_class": c.verdict.replace(" ", "-"),
        "evidence": [(str(k), format_value(v)) for k, v in (c.evidence or {}).items()],
        "rule": c.rule,
        "why": c.why,
        "href": href,
        "study": study,
        "recorded": _recorded_view(c, profile),
    }


def claim_anchor(claim_id: str) -> str:
    """The id of a claim's row in its study's report.html: ``report.html#claim-D1``."""
    return "claim-" + _slug(claim_id)


def _recorded_view(c: Claim, profile: str | None) -> dict | None:
    """The recorded full-protocol verdict of this claim, when one is shipped and this run's profile differs."""
    from .recorded import MINIATURE_NOTE, key_numbers, recorded_claim

    found = recorded_claim(c.id)
    if found is None:
        return None
    rec, full = found
    if profile is not None and profile == rec.profile:
        return None  # the run is itself of the recorded protocol: its own verdict is the one to read
    differs = full.verdict != c.verdict
    return {
        "verdict": full.verdict,
        "verdict_class": full.verdict.replace(" ", "-"),
        "where": rec.label,
        "ours": profile or "this run",
        "source": rec.source,
        "differs": differs,
        "numbers": [(k, format_value(a), format_value(b)) for k, a, b in key_numbers(c.evidence, full.evidence)]
        if differs
        else [],
        "note": MINIATURE_NOTE
        if differs and profile == "quick"
        else (f"This run ({profile or 'another profile'}) and the recorded full protocol disagree." if differs else ""),
        "why": full.why,
    }


def _key_first(evidence: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Evidence with its key numbers (estimates, accuracies, ratios) before p-values, test names and seed counts."""
    from .recorded import is_key_number

    return [e for e in evidence if is_key_number(e[0])] + [e for e in evidence if not is_key_number(e[0])]


def _agreement(views: list[dict]) -> dict | None:
    """How many claims with a recorded full verdict agree with it: {"n", "agree", "where"}; None if none."""
    compared = [v["recorded"] for v in views if v["recorded"]]
    if not compared:
        return None
    wheres = sorted({r["where"] for r in compared})
    return {"n": len(compared), "agree": sum(not r["differs"] for r in compared), "where": "; ".join(wheres)}


def _verdict_counts(claims: list[Claim]) -> list[tuple[str, str, int]]:
    counts = {v: 0 for v in VERDICTS}
    for c in claims:
        counts[c.verdict] = counts.get(c.verdict, 0) + 1
    return [(v, v.replace(" ", "-"), n) for v, n in counts.items()]


def _table_view(t: Table) -> dict:
    """Cells formatted for people; a ``X mean`` column followed by ``X std`` becomes one ``X (mean ± std)``
    column (the CSV keeps both, at full precision)."""
    rows = list(t.rows or [])
    cols = _columns(rows)
    numeric = {
        c: all((r.get(c) is None) or _is_numeric(r.get(c)) for r in rows) and any(_is_numeric(r.get(c)) for r in rows)
        for c in cols
    }
    shown: list[tuple[str, list[str]]] = []  # header, source columns
    i = 0
    while i < len(cols):
        c = cols[i]
        nxt = cols[i + 1] if i + 1 < len(cols) else None
        if c.endswith(" mean") and nxt == c[: -len(" mean")] + " std" and numeric[c] and numeric[nxt]:
            shown.append((c[: -len(" mean")] + " (mean ± std)", [c, nxt]))
            i += 2
        else:
            shown.append((c, [c]))
            i += 1

    def cell(r: Mapping, sources: list[str]) -> str:
        if len(sources) == 2:
            mean, std = r.get(sources[0]), r.get(sources[1])
            if mean is None or sources[0] not in r:
                return ""
            if std is None or not _is_numeric(std) or not math.isfinite(float(std)):
                return format_value(mean)
            return f"{format_value(mean)} ± {_short(std)}"
        return format_value(r.get(sources[0])) if sources[0] in r else ""

    body = [[_cell_view(cell(r, src), numeric[src[0]]) for _, src in shown] for r in rows]
    return {
        "name": t.name,
        "anchor": "table-" + _slug(t.name),
        "caption": t.caption,
        "columns": [(h, numeric[src[0]]) for h, src in shown],
        "rows": body,
        "tall": len(rows) > TALL_TABLE_ROWS,
    }


#: A table with more rows scrolls inside a box of its own, its header row kept in view.
TALL_TABLE_ROWS = 25
LONG_TEXT = 40  # a text cell longer than this may wrap; shorter ones never break inside a word


def _cell_view(text: str, numeric: bool) -> tuple[str, str]:
    """(text, CSS class): "num" right-aligned numbers, "long" text that may wrap, "" text kept on one line."""
    return text, "num" if numeric else ("long" if len(text) > LONG_TEXT else "")


def _short(v) -> str:
    """A spread to 2 significant digits (0.004243 -> 0.0042)."""
    x = float(v)
    return "0" if x == 0 else f"{x:.2g}"


def _slug(text: str) -> str:
    out = "".join(ch.lower() if ch.isalnum() else "-" for ch in str(text))
    return "-".join(p for p in out.split("-") if p) or "x"


_MIME = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def _figure_view(f: FigureRef, index: int) -> dict:
    path = Path(f.path)
    view = {"caption": f.caption, "name": path.name, "index": index, "anchor": f"fig-{index}", "src": None}
    # the files beside the report (PNG, SVG, PDF for a paper), linked relative to it: figures/NAME.EXT
    view["files"] = [
        (ext, f"{path.parent.name}/{path.stem}.{ext}")
        for ext in ("png", "svg", "pdf")
        if path.parent.name == "figures" and path.with_suffix(f".{ext}").is_file()
    ]
    try:
        data = path.read_bytes()
    except OSError as exc:
        view["error"] = f"figure file could not be read: {path} ({exc.strerror or exc})"
        return view
    mime = _MIME.get(path.suffix.lower(), "image/png")
    view["src"] = f"data:{mime};base64," + base64.b64encode(data).decode("ascii")
    return view


# --------------------------------------------------------------------------------------------
# rendering


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
    claim_views = [_claim_view(c, profile=profile) for c in claims]
    config = (meta or {}).get("config")
    configuration = _configuration_view(profile, overrides or {}, config if isinstance(config, Mapping) else None)
    return (
        _env()
        .get_template("study.html.j2")
        .render(
            study=study,
            title=title,
            description=description,
            meta=_meta_items({k: v for k, v in (meta or {}).items() if not (k == "config" and configuration["rows"])}),
            configuration=configuration,
            figures=[_figure_view(f, i + 1) for i, f in enumerate(figures)],
            tables=[_table_view(t) for t in tables],
            claims=claim_views,
            show_recorded=any(c["recorded"] for c in claim_views),
            agreement=_agreement(claim_views),
            counts=_verdict_counts(claims),
            version=_version(),
        )
    )


def _configuration_view(profile: str | None, overrides: Mapping, config: Mapping | None) -> dict:
    """Which configuration a page shows: a line (the profile, and ``key=value`` for each override) and the
    rows of the full config, ``(key, value, overridden)``."""
    from .variants import set_value

    line = " ".join(f"--set {k}={set_value(v)}" for k, v in overrides.items())  # as typed: copy, paste
    return {
        "profile": profile or "",
        "overrides": line,
        "rows": [(str(k), format_value(v), k in overrides) for k, v in (config or {}).items()],
    }


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
    variants: list[dict] | None = None,
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
        view = _claim_view(c, profile=profile, href=href, study=s["name"] if s else "")
        view["evidence"] = _key_first(view["evidence"])  # the index shows the first few: the estimates
        claim_views.append(view)
    for s in study_views:
        s["counts"] = _verdict_counts([c for c in claims if claim_study.get(c.id) is s])
    return (
        _env()
        .get_template("index.html.j2")
        .render(
            title=title,
            meta=_meta_items(meta),
            studies=study_views,
            titles={s["name"]: s["title"] for s in study_views},
            claims=claim_views,
            show_recorded=any(c["recorded"] for c in claim_views),
            agreement=_agreement(claim_views),
            counts=_verdict_counts(claims),
            total_wall=format_duration(total_wall_s),
            total_wall_s=total_wall_s,
            n_runs_total=_total(study_views, "n_runs"),
            n_tasks_total=_total(study_views, "n_tasks"),
            compute_total=format_duration(
                sum(float(v["compute_s"]) for v in study_views if _is_numeric(v["compute_s"]))
            ),
            show_compute=any(_is_numeric(v["compute_s"]) for v in study_views),
            variants=list(variants or []),
            version=_version(),
        )
    )


def _total(views: list[dict], key: str) -> int | None:
    values = [int(v[key]) for v in views if _is_numeric(v.get(key))]
    return sum(values) if values else None


def write_index(path: Path, **fields) -> Path:
    """Write the reproduction's ``index.html``: the full claims table (each claim linked to its row in its
    study's report, with the recorded full-protocol verdict beside it when there is one), what was run,
    and the time per study.

    `fields` are those of :func:`render_index` (title, meta, studies, claims, total_wall_s, variants).
    ``studies`` are dicts with keys ``name``, ``title``, ``href`` (relative link), ``wall_s``, ``n_runs`` and
    optionally ``n_tasks``, ``trained``, ``reused``, ``compute_s`` (the device time its stored units took when
    they were computed) and ``claims`` (the ids of the study's claims, for the links). ``variants`` (dicts with
    ``name``, ``profile``, ``overrides``, ``href``, ``updated_at``) are the studies' runs with ``--set`` overrides
    in the store: listed apart, below, since the claims above are those of the plain profile.
    """
    return atomic_write_text(Path(path), render_index(**fields))
