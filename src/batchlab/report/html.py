"""Self-contained HTML reports (one per study, plus the reproduction's index) and CSV tables.

Every file is written atomically (a temporary file in the same directory, then ``os.replace``), so
an interrupted run never leaves a half-written report or table behind.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from ..claims import VERDICTS, Claim
from ..files import atomic_write_bytes, atomic_write_text

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
]


# --------------------------------------------------------------------------------------------
# atomic writes


# --------------------------------------------------------------------------------------------
# data


@dataclass
class FigureRef:
    """A figure to embed: ``path`` to a PNG (SVG also accepted) and its caption."""

    path: Path
    caption: str


@dataclass
class Table:
    """A table to show: ``rows`` are dicts sharing keys (columns in first-seen order)."""

    name: str
    rows: list[dict] = field(default_factory=list)
    caption: str = ""


def _columns(rows: Iterable[Mapping]) -> list[str]:
    cols: dict[str, None] = {}
    for row in rows:
        for key in row:
            cols.setdefault(str(key), None)
    return list(cols)


def write_csv(path: Path, rows: list[dict]) -> Path:
    """Write ``rows`` as CSV (header = union of keys, first-seen order), atomically; creates the parent.

    Floats are written at full precision (``repr``), missing keys as empty cells.
    """
    rows = list(rows)
    cols = _columns(rows)
    buf = io.StringIO(newline="")
    if cols:
        writer = csv.DictWriter(buf, fieldnames=cols, restval="", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({str(k): _csv_value(v) for k, v in row.items()})
    return atomic_write_text(Path(path), buf.getvalue())


def _csv_value(v):
    if isinstance(v, bool) or v is None:
        return "" if v is None else v
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        return repr(float(v))
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, default=str)
    return v


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


def _claim_view(c: Claim) -> dict:
    return {
        "id": c.id,
        "statement": c.statement,
        "source": c.source,
        "verdict": c.verdict,
        "verdict_class": c.verdict.replace(" ", "-"),
        "evidence": [(str(k), format_value(v)) for k, v in (c.evidence or {}).items()],
        "rule": c.rule,
        "why": c.why,
    }


def _verdict_counts(claims: list[Claim]) -> list[tuple[str, str, int]]:
    counts = {v: 0 for v in VERDICTS}
    for c in claims:
        counts[c.verdict] = counts.get(c.verdict, 0) + 1
    return [(v, v.replace(" ", "-"), n) for v, n in counts.items()]


def _table_view(t: Table) -> dict:
    rows = list(t.rows or [])
    cols = _columns(rows)
    numeric = {
        c: all((r.get(c) is None) or _is_numeric(r.get(c)) for r in rows) and any(_is_numeric(r.get(c)) for r in rows)
        for c in cols
    }
    body = [[(format_value(r.get(c)) if c in r else "", numeric[c]) for c in cols] for r in rows]
    return {
        "name": t.name,
        "anchor": "table-" + _slug(t.name),
        "caption": t.caption,
        "columns": [(c, numeric[c]) for c in cols],
        "rows": body,
    }


def _slug(text: str) -> str:
    out = "".join(ch.lower() if ch.isalnum() else "-" for ch in str(text))
    return "-".join(p for p in out.split("-") if p) or "x"


_MIME = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def _figure_view(f: FigureRef, index: int) -> dict:
    path = Path(f.path)
    view = {"caption": f.caption, "name": path.name, "index": index, "anchor": f"fig-{index}", "src": None}
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
) -> str:
    """The study report as an HTML string (see :func:`write_study_report`)."""
    return (
        _env()
        .get_template("study.html.j2")
        .render(
            study=study,
            title=title,
            description=description,
            meta=_meta_items(meta),
            figures=[_figure_view(f, i + 1) for i, f in enumerate(figures)],
            tables=[_table_view(t) for t in tables],
            claims=[_claim_view(c) for c in claims],
            counts=_verdict_counts(claims),
            version=_version(),
        )
    )


def write_study_report(path: Path, **fields) -> Path:
    """Write one self-contained HTML report for a study (figures embedded, CSS inline), atomically.

    `fields` are those of :func:`render_study_report` (study, title, description, meta, figures,
    tables, claims). Sections: title and description, what was run, claims, figures, tables.
    """
    return atomic_write_text(Path(path), render_study_report(**fields))


def render_index(*, title: str, meta: dict, studies: list[dict], claims: list[Claim], total_wall_s: float) -> str:
    """The reproduction summary page as an HTML string (see :func:`write_index`)."""
    study_views = []
    for s in studies:
        study_views.append(
            {
                "name": str(s.get("name", "")),
                "title": str(s.get("title") or s.get("name", "")),
                "href": str(s.get("href", "")),
                "wall_s": s.get("wall_s"),
                "n_runs": s.get("n_runs"),
            }
        )
    return (
        _env()
        .get_template("index.html.j2")
        .render(
            title=title,
            meta=_meta_items(meta),
            studies=study_views,
            claims=[_claim_view(c) for c in claims],
            counts=_verdict_counts(claims),
            total_wall=format_duration(total_wall_s),
            n_runs_total=sum(int(s["n_runs"]) for s in study_views if _is_numeric(s["n_runs"])),
            version=_version(),
        )
    )


def write_index(
    path: Path, *, title: str, meta: dict, studies: list[dict], claims: list[Claim], total_wall_s: float
) -> Path:
    """Write the reproduction's ``index.html``: total time, full claims table, links to each study.

    ``studies`` are dicts with keys ``name``, ``title``, ``href`` (relative link), ``wall_s``, ``n_runs``.
    """
    html = render_index(title=title, meta=meta, studies=studies, claims=claims, total_wall_s=total_wall_s)
    return atomic_write_text(Path(path), html)
