"""Results out of batchlab: a store's metrics as plain records, one per (unit, evaluation).

    >>> import pandas as pd, batchlab
    >>> df = pd.DataFrame(batchlab.load_metrics("batchlab-results"))

Each record is a flat dict: the unit's ``key``, ``kind`` (``train`` or ``task:<kind>``), ``status`` and
``seed``; the spec fields every study shares (``SPEC_FIELDS``: batch_size, lr, optimizer, epochs, ...);
then ``epoch``, ``step`` and every metric recorded at that evaluation (``train_acc``, ``test_acc``, ...).
A metric stored as NULL (a NaN or infinite value, e.g. after a divergence) is ``float("nan")``; a
metric a unit did not record at that evaluation is absent from the record (pandas shows NaN).
Plain lists of dicts: batchlab does not need pandas, and any tool that reads records can use them.
``metrics_csv`` writes the same records as CSV (``batchlab export``), for tools that read files, not Python.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from .schema import DB_NAME
from .sqlite import Store

__all__ = ["SPEC_FIELDS", "load_metrics", "metrics_columns", "metrics_csv"]

#: The RunSpec fields copied into every record: what most analyses group or filter by. A field a unit's
#: spec lacks (a task's spec has other fields) is None. Lists (widths, batch_switch) stay lists.
SPEC_FIELDS: tuple[str, ...] = (
    "dataset",
    "train_subset",
    "test_subset",
    "model",
    "widths",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "batch_size",
    "epochs",
    "micro_batch",
    "loss_reduction",
    "precision",
)

_LEADING = ("key", "kind", "status", "seed")


def load_metrics(
    path: str | Path,
    *,
    study: str | None = None,
    tasks: bool = False,
    fields: Sequence[str] | None = None,
) -> list[dict]:
    """Every stored metric of the store at ``path`` (a results directory, or its batchlab.sqlite) as records.

    One record per unit and evaluation, sorted by key then step: ``key, kind, status, seed``, the spec
    ``fields`` (default :data:`SPEC_FIELDS`; a task's spec fields it lacks are None), ``epoch``, ``step``
    and one entry per metric. ``study`` keeps only the units of that study's latest recorded execution
    (any profile); ``tasks`` adds the tasks' scalar results (stored as metrics at epoch 0, step 0) to the
    training runs. Reads only (the file is opened read-only, after SQLite's integrity check): a missing store is
    an error, never created. No array file is read, so a damaged one cannot change these numbers.
    """
    root = Path(path)
    if root.name == DB_NAME and root.is_file():
        root = root.parent
    if not Store.exists(root):
        raise FileNotFoundError(f"no batchlab store in {root} (expected {root / DB_NAME})")
    fields = tuple(SPEC_FIELDS if fields is None else fields)
    with Store(root, readonly=True, check=True) as store:
        keys: set[str] | None = None
        if study is not None:
            record = store.study(study)
            if record is None:
                raise KeyError(f"no recorded execution of study {study!r} in {root}")
            keys = set(record["run_keys"])
        units: dict[str, dict] = {}
        for key, config, seed, status, kind in store.db.execute(
            "SELECT key, config, seed, status, kind FROM runs ORDER BY key"
        ):
            if (keys is not None and key not in keys) or (not tasks and kind != "train"):
                continue
            spec = json.loads(config)
            units[key] = {"key": key, "kind": kind, "status": status, "seed": seed} | {f: spec.get(f) for f in fields}
        rows: list[dict] = []
        current: dict | None = None
        for key, epoch, step, name, value in store.db.execute(
            "SELECT key, epoch, step, name, value FROM metrics ORDER BY key, step, name"
        ):
            base = units.get(key)
            if base is None:
                continue
            if current is None or current["key"] != key or current["step"] != step:
                current = {**base, "epoch": int(epoch) if float(epoch).is_integer() else float(epoch), "step": step}
                rows.append(current)
            current[name] = float("nan") if value is None else float(value)
    return rows


def metrics_columns(rows: Sequence[dict]) -> list[str]:
    """The CSV header of ``load_metrics`` records: the unit and spec columns in record order, then ``epoch``,
    ``step``, then every metric any record has, sorted by name."""
    if not rows:
        return [*_LEADING, *SPEC_FIELDS, "epoch", "step"]
    fixed = list(rows[0])[: list(rows[0]).index("step") + 1]
    metrics = sorted({name for row in rows for name in row} - set(fixed))
    return [*fixed, *metrics]


def metrics_csv(rows: Sequence[dict]) -> str:
    """``load_metrics`` records as CSV text, one line per record. Cells: floats at full precision (``repr``,
    ``nan`` for a value stored as not finite), lists as JSON (``widths`` ``[256, 256]``), an empty cell for
    None or for a metric the unit did not record at that evaluation."""
    from ..outputs import csv_text

    return csv_text(rows, metrics_columns(rows))
