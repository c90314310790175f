"""What the report templates show: claims, tables, figures and the run's metadata as plain dicts of
formatted text (the templates only lay them out)."""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from pathlib import Path

from ..claims import VERDICTS, Claim
from ..outputs import FigureRef, Table, table_columns
from .formatting import format_duration, format_value, is_numeric, pretty_json
from .overrides import format_set_value
from .recorded import MINIATURE_NOTE, is_key_number, key_numbers, recorded_claim

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


def meta_items(meta: Mapping) -> list[dict]:
    """Turn ``meta`` into display items: {label, kind, value} with kind text|chips|json|duration."""
    items = []
    for key, value in (meta or {}).items():
        key = str(key)
        item = {"key": key, "label": _label(key)}
        if key == "config" or (isinstance(value, Mapping) and _nested(value)):
            if hasattr(value, "model_dump"):
                value = value.model_dump()
            n = len(value) if isinstance(value, Mapping) else None
            item.update(kind="json", value=pretty_json(value), summary=f"{n} keys" if n is not None else "show")
        elif isinstance(value, Mapping):
            item.update(kind="chips", value=[(str(k), format_value(v)) for k, v in value.items()])
        elif is_numeric(value) and (key.endswith("_s") or key in ("wall", "wall_time", "seconds")):
            item.update(kind="text", value=format_duration(value))
        elif isinstance(value, (list, tuple)):
            if len(value) <= 40 and all(not isinstance(v, (Mapping, list, tuple)) for v in value):
                item.update(kind="text", value=", ".join(format_value(v) for v in value))
            else:
                item.update(kind="json", value=pretty_json(value), summary=f"{len(value)} items")
        elif isinstance(value, str) and key in ("git_commit", "git", "commit", "config_hash"):
            item.update(kind="code", value=value)
        else:
            item.update(kind="text", value=format_value(value))
        items.append(item)
    return items


def _nested(d: Mapping) -> bool:
    return len(d) > 12 or any(isinstance(v, (Mapping, list, tuple)) for v in d.values())


def claim_view(c: Claim, *, profile: str | None = None, href: str = "", study: str = "") -> dict:
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


def key_first(evidence: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Evidence with its key numbers (estimates, accuracies, ratios) before p-values, test names and seed counts."""
    return [e for e in evidence if is_key_number(e[0])] + [e for e in evidence if not is_key_number(e[0])]


def agreement(views: list[dict]) -> dict | None:
    """How many claims with a recorded full verdict agree with it: {"n", "agree", "where"}; None if none."""
    compared = [v["recorded"] for v in views if v["recorded"]]
    if not compared:
        return None
    wheres = sorted({r["where"] for r in compared})
    return {"n": len(compared), "agree": sum(not r["differs"] for r in compared), "where": "; ".join(wheres)}


def verdict_counts(claims: list[Claim]) -> list[tuple[str, str, int]]:
    counts = {v: 0 for v in VERDICTS}
    for c in claims:
        counts[c.verdict] = counts.get(c.verdict, 0) + 1
    return [(v, v.replace(" ", "-"), n) for v, n in counts.items()]


def table_view(t: Table) -> dict:
    """Cells formatted for people; a ``X mean`` column followed by ``X std`` becomes one ``X (mean ± std)``
    column (the CSV keeps both, at full precision)."""
    rows = list(t.rows or [])
    cols = table_columns(rows)
    numeric = {
        c: all((r.get(c) is None) or is_numeric(r.get(c)) for r in rows) and any(is_numeric(r.get(c)) for r in rows)
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
            if std is None or not is_numeric(std) or not math.isfinite(float(std)):
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


def figure_view(f: FigureRef, index: int) -> dict:
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


def configuration_view(profile: str | None, overrides: Mapping, config: Mapping | None) -> dict:
    """Which configuration a page shows: a line (the profile, and ``key=value`` for each override) and the
    rows of the full config, ``(key, value, overridden)``."""
    line = " ".join(f"--set {k}={format_set_value(v)}" for k, v in overrides.items())  # as typed: copy, paste
    return {
        "profile": profile or "",
        "overrides": line,
        "rows": [(str(k), format_value(v), k in overrides) for k, v in (config or {}).items()],
    }
