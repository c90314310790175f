"""The result store: one SQLite file per results directory (spec 05/07).

Raw measurements only: every finished run's config, key, seed, environment, status, timings and
per-epoch metrics. Analyses and figures are recomputed from these rows. A run is written in one
transaction when it finishes, so an interrupted study resumes by skipping the keys found here.
"""
from __future__ import annotations

import json
import math
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,
    config TEXT NOT NULL,        -- the RunSpec, all fields, JSON
    seed INTEGER NOT NULL,
    status TEXT NOT NULL,        -- finished | diverged
    diverged_step INTEGER,
    steps INTEGER NOT NULL,
    wall_s REAL NOT NULL,        -- wall time of the group chunk the run trained in
    group_size INTEGER NOT NULL,
    env TEXT NOT NULL,           -- device, torch version, ... JSON
    finished_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS metrics (
    key TEXT NOT NULL REFERENCES runs(key) ON DELETE CASCADE,
    epoch INTEGER NOT NULL,
    step INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL,                  -- NULL where the value was NaN/inf (a diverged run)
    PRIMARY KEY (key, epoch, name)
);
CREATE TABLE IF NOT EXISTS studies (
    name TEXT NOT NULL,
    profile TEXT NOT NULL,
    config TEXT NOT NULL,
    run_keys TEXT NOT NULL,
    wall_s REAL NOT NULL,
    meta TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (name, profile)
);
"""

DB_NAME = "batchlab.sqlite"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class RunRecord:
    key: str
    config: dict
    seed: int
    status: str
    diverged_step: int | None
    steps: int
    wall_s: float
    group_size: int
    env: dict
    metrics: list[dict]  # one dict per evaluation, sorted by epoch: epoch, step, name -> value
    finished_at: str = ""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _clean(value) -> float | None:
    """A metric value as a float; NaN/inf (and None) become NULL. Accepts numpy and 0-d torch scalars."""
    if value is None:
        return None
    x = float(value)
    return x if math.isfinite(x) else None


class Store:
    """SQLite store in `root/batchlab.sqlite` (WAL mode). Creates `root` and the file if needed."""

    def __init__(self, root: str | Path, *, timeout: float = 30.0):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / DB_NAME
        self.db = sqlite3.connect(self.path, timeout=timeout)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a crash loses no committed run
            self.db.execute("PRAGMA foreign_keys=ON")
            with self.db:
                self.db.executescript(SCHEMA)
                if self.db.execute("PRAGMA user_version").fetchone()[0] == 0:
                    self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            self.db.close()
            raise

    @staticmethod
    def exists(root: str | Path) -> bool:
        """Whether `root` holds a store (without creating anything)."""
        return (Path(root) / DB_NAME).is_file()

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def journal_mode(self) -> str:
        return self.db.execute("PRAGMA journal_mode").fetchone()[0]

    @contextmanager
    def transaction(self):
        with self.db:  # commits on success, rolls back on error
            yield self.db

    # --- runs -------------------------------------------------------------------------------------
    def done(self, keys) -> set[str]:
        """The keys among `keys` whose runs are finished (or diverged) in this store."""
        keys = list(keys)
        found: set[str] = set()
        for i in range(0, len(keys), 500):
            part = keys[i:i + 500]
            rows = self.db.execute(f"SELECT key FROM runs WHERE key IN ({','.join('?' * len(part))})", part)
            found |= {r[0] for r in rows}
        return found

    def save_run(self, *, key: str, config: dict, seed: int, status: str, diverged_step: int | None, steps: int,
                 wall_s: float, group_size: int, env: dict, metrics: list[dict]) -> None:
        """Write one run and all its metrics in a single transaction (replacing an older copy)."""
        rows = [(key, m["epoch"], m["step"], name, _clean(v))
                for m in metrics for name, v in m.items() if name not in ("epoch", "step")]
        with self.transaction() as db:
            db.execute("DELETE FROM runs WHERE key = ?", (key,))
            db.execute("INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?)",
                       (key, json.dumps(config, sort_keys=True), int(seed), status, diverged_step, int(steps),
                        float(wall_s), int(group_size), json.dumps(env, sort_keys=True, default=str), _now()))
            db.executemany("INSERT INTO metrics VALUES (?,?,?,?,?)", rows)

    def runs(self, keys) -> dict[str, RunRecord]:
        """The stored runs among `keys`, with their metrics."""
        keys = list(dict.fromkeys(keys))
        out: dict[str, RunRecord] = {}
        for i in range(0, len(keys), 500):
            part = keys[i:i + 500]
            marks = ",".join("?" * len(part))
            per_key: dict[str, dict[int, dict]] = {}
            for key, epoch, step, name, value in self.db.execute(
                    f"SELECT key, epoch, step, name, value FROM metrics WHERE key IN ({marks}) ORDER BY key, epoch", part):
                per_key.setdefault(key, {}).setdefault(epoch, {"epoch": epoch, "step": step})[name] = value
            for row in self.db.execute(f"SELECT * FROM runs WHERE key IN ({marks})", part):
                key = row[0]
                out[key] = RunRecord(key, json.loads(row[1]), row[2], row[3], row[4], row[5], row[6], row[7],
                                     json.loads(row[8]), list(per_key.get(key, {}).values()), row[9])
        return out

    def count_runs(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]

    def finished_at(self) -> dict[str, str]:
        """key -> when the run was written, for every run in the store."""
        return dict(self.db.execute("SELECT key, finished_at FROM runs"))

    # --- studies ----------------------------------------------------------------------------------
    def save_study(self, *, name: str, profile: str, config: dict, run_keys: list[str], wall_s: float,
                   meta: dict) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO studies VALUES (?,?,?,?,?,?,?)",
                       (name, profile, json.dumps(config, sort_keys=True), json.dumps(run_keys), wall_s,
                        json.dumps(meta, sort_keys=True, default=str), _now()))

    def study(self, name: str, profile: str | None = None) -> dict | None:
        """The latest recorded execution of a study (of one profile, if given)."""
        sql = "SELECT name, profile, config, run_keys, wall_s, meta, updated_at FROM studies WHERE name = ?"
        args: tuple = (name,)
        if profile:
            sql, args = sql + " AND profile = ?", (name, profile)
        # INSERT OR REPLACE gives a replaced row a new rowid, so the largest rowid is the latest
        # record (updated_at has a one-second resolution and cannot break ties).
        row = self.db.execute(sql + " ORDER BY rowid DESC LIMIT 1", args).fetchone()
        if row is None:
            return None
        return {"name": row[0], "profile": row[1], "config": json.loads(row[2]), "run_keys": json.loads(row[3]),
                "wall_s": row[4], "meta": json.loads(row[5]), "updated_at": row[6]}
