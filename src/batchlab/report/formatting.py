"""Values for people: numbers to 4 significant digits, durations, indented JSON (the HTML reports and the
explorer show them; the CSV beside a table keeps full precision)."""

from __future__ import annotations

import json
import math
import numbers
from pathlib import Path


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


def pretty_json(v) -> str:
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


def is_numeric(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)
