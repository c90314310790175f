"""What a study produces, as plain data: tables, figures and claims (the renderer in `report/` draws them).

Study modules import these, never the HTML renderer; `store/export.py` writes CSV with `csv_text`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .claims import Claim
from .files import atomic_write_text


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


def table_columns(rows: Iterable[Mapping]) -> list[str]:
    """The union of the rows' keys, in first-seen order: a table's columns."""
    cols: dict[str, None] = {}
    for row in rows:
        for key in row:
            cols.setdefault(str(key), None)
    return list(cols)


def write_csv(path: Path, rows: list[dict]) -> Path:
    """Write ``rows`` as CSV (header = union of keys, first-seen order), atomically; creates the parent.

    Floats are written at full precision (``repr``), missing keys as empty cells.
    """
    return atomic_write_text(Path(path), csv_text(rows))


def csv_text(rows: Iterable[Mapping], columns: list[str] | None = None) -> str:
    """``rows`` as CSV text, as :func:`write_csv` writes them (``columns``: the header, default the union of keys)."""
    rows = list(rows)
    cols = table_columns(rows) if columns is None else columns
    buf = io.StringIO(newline="")
    if cols:
        writer = csv.DictWriter(buf, fieldnames=cols, restval="", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({str(k): _csv_value(v) for k, v in row.items()})
    return buf.getvalue()


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


@dataclass
class FigureSpec:
    """A matplotlib figure a study made, its file stem and caption (saved by the driver)."""

    name: str
    figure: Any
    caption: str


@dataclass
class StudyOutput:
    figures: list[FigureSpec] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)


def json_ready(value):
    """JSON-ready: numpy scalars become numbers, tuples lists, NaN and infinities null (strict JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
