"""The result store: one SQLite file per results directory, and content-addressed array files beside it.

Raw measurements only: every finished unit of work (a training run or a task) with its config,
key, seed, environment, status and timings; metrics keyed by step (several evaluations per epoch
are possible); and arrays (a task's results, a run's checkpoints) as artifacts. Analyses and
figures are recomputed from these rows. A unit is written in one transaction when it finishes, so
an interrupted study resumes by skipping the keys found here.

Arrays live in files, not BLOBs: `artifacts/<aa>/<sha256>.npy` beside the database, named by the
SHA-256 of their bytes and written atomically (temporary file, fsync, rename) *before* the
transaction that references them commits. So a row never points at a partial file; a crash between
the two leaves at most an unreferenced file, which is harmless; equal arrays are stored once; the
SQLite file (and its write-ahead log) stays small however large the checkpoints are; and any tool
that reads .npy can open them. The cost: a store is a folder, not a single file. The name is checked on
every read, so a damaged file is never used: its unit is damaged (`damaged`), and `batchlab run` computes it
again in its place.

The schema and the records read back are in `schema.py`; the state of training interrupted by Ctrl-C, which
is not a result, in `partial.py`.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..files import atomic_write_bytes
from .connection import StoreFile
from .partial import PartialStates
from .schema import (
    ARTIFACT_DIR,
    CHECKPOINT_EPOCHLESS,
    ArtifactRef,
    DamagedFileError,
    RunRecord,
    now,
    read_checked,
)


def _clean(value) -> float | None:
    """A metric value as a float; NaN/inf (and None) become NULL. Accepts numpy and 0-d torch scalars."""
    if value is None:
        return None
    x = float(value)
    return x if math.isfinite(x) else None


def _epoch(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


class Store(StoreFile, PartialStates):
    """The rows and arrays of a store (its file is opened by `StoreFile`)."""

    # --- arrays -----------------------------------------------------------------------------------
    def artifact_path(self, sha256: str) -> Path:
        return self.root / ARTIFACT_DIR / sha256[:2] / f"{sha256}.npy"

    def put_array(self, array: np.ndarray) -> ArtifactRef:
        """Write an array's file (atomically, once per content) and return its reference (no row yet)."""
        array = np.asarray(array)
        data = npy_bytes(array)
        sha = hashlib.sha256(data).hexdigest()
        path = self.artifact_path(sha)
        if not self._intact(sha):  # equal content, equal name: written once (again if its file was damaged)
            atomic_write_bytes(path, data)
        return ArtifactRef("", CHECKPOINT_EPOCHLESS, sha, str(array.dtype), tuple(array.shape))

    def load_array(self, ref: ArtifactRef) -> np.ndarray:
        """An array read back, its file checked against its SHA-256 name (`DamagedFileError`, naming it, if not)."""
        return np.load(io.BytesIO(read_checked(self.artifact_path(ref.sha256), ref.sha256)), allow_pickle=False)

    def _intact(self, sha256: str) -> bool:
        """Whether the array file named `sha256` exists and holds those bytes."""
        try:
            read_checked(self.artifact_path(sha256), sha256)
        except DamagedFileError:
            return False
        return True

    def damaged(self, keys) -> dict[str, Path]:
        """The stored units among `keys` with an array file that is missing or not the bytes of its SHA-256 name,
        and that file: damaged units, which `batchlab run` computes again."""
        keys = list(keys)
        out: dict[str, Path] = {}
        intact: dict[str, bool] = {}  # a file two units share is hashed once
        for i in range(0, len(keys), 500):
            part = keys[i : i + 500]
            marks = ",".join("?" * len(part))
            for key, sha in self.db.execute(
                f"SELECT key, sha256 FROM artifacts WHERE key IN ({marks}) ORDER BY key, epoch, name", part
            ):
                if sha not in intact:
                    intact[sha] = self._intact(sha)
                if key not in out and not intact[sha]:
                    out[key] = self.artifact_path(sha)
        return out

    def forget(self, keys) -> None:
        """Delete stored units (their rows, metrics and artifact rows, in one transaction) to compute them again."""
        with self.transaction() as db:
            db.executemany("DELETE FROM runs WHERE key = ?", [(k,) for k in keys])

    def _artifact_rows(self, key: str, arrays: dict[tuple[str, int], np.ndarray]) -> list[tuple]:
        rows = []
        for (name, epoch), array in arrays.items():
            ref = self.put_array(array)
            rows.append((key, name, int(epoch), ref.sha256, ref.dtype, json.dumps(list(ref.shape))))
        return rows

    def save_artifacts(self, key: str, arrays: dict[tuple[str, int], np.ndarray]) -> None:
        """Add (name, epoch) -> array artifacts to a stored unit (e.g. a checkpoint asked for later)."""
        rows = self._artifact_rows(key, arrays)
        with self.transaction() as db:  # another process may have added the same checkpoint: keep the first
            db.executemany("INSERT OR IGNORE INTO artifacts VALUES (?,?,?,?,?,?)", rows)

    def artifacts(self, key: str) -> tuple[ArtifactRef, ...]:
        rows = self.db.execute(
            "SELECT name, epoch, sha256, dtype, shape FROM artifacts WHERE key = ? ORDER BY epoch, name", (key,)
        )
        return tuple(ArtifactRef(n, e, h, d, tuple(json.loads(sh))) for n, e, h, d, sh in rows)

    def checkpoint_epochs(self, key: str) -> set[int]:
        rows = self.db.execute("SELECT DISTINCT epoch FROM artifacts WHERE key = ? AND name LIKE 'param:%'", (key,))
        return {r[0] for r in rows}

    def checkpoint(self, key: str, epoch: int) -> dict[str, np.ndarray] | None:
        """A run's weights after `epoch` epochs ({"param:<name>": array, "buffer:<name>": array}), if stored."""
        refs = [r for r in self.artifacts(key) if r.epoch == epoch and r.name.split(":", 1)[0] in ("param", "buffer")]
        if not refs:
            return None
        return {r.name: self.load_array(r) for r in refs}

    # --- runs and tasks ---------------------------------------------------------------------------
    def done(self, keys) -> set[str]:
        """The keys among `keys` whose units are stored (finished, diverged, or a named error)."""
        keys = list(keys)
        found: set[str] = set()
        for i in range(0, len(keys), 500):
            part = keys[i : i + 500]
            rows = self.db.execute(f"SELECT key FROM runs WHERE key IN ({','.join('?' * len(part))})", part)
            found |= {r[0] for r in rows}
        return found

    def save_run(
        self,
        *,
        key: str,
        config: dict,
        seed: int,
        status: str,
        diverged_step: int | None,
        steps: int,
        wall_s: float,
        group_size: int,
        env: dict,
        metrics: list[dict],
        kind: str = "train",
        error: str | None = None,
        arrays: dict[tuple[str, int], np.ndarray] | None = None,
        replace: bool = False,
    ) -> bool:
        """Write one unit, its metrics and its arrays in a single transaction; False if it was already stored.

        The first copy of a key wins: when two processes computed the same unit, the second one's write is
        skipped, so a key never has two versions (its numbers are those every reader has seen since it
        appeared). `replace=True` overwrites instead. The arrays' files are written first; only the
        transaction makes them part of the unit.
        """
        rows = [
            (key, m["epoch"], m["step"], name, _clean(v))
            for m in metrics
            for name, v in m.items()
            if name not in ("epoch", "step")
        ]
        artifact_rows = self._artifact_rows(key, arrays or {})
        with self.transaction() as db:
            if replace:
                db.execute("DELETE FROM runs WHERE key = ?", (key,))
            elif db.execute("SELECT 1 FROM runs WHERE key = ?", (key,)).fetchone():
                return False
            db.execute(
                "INSERT INTO runs (key, config, seed, status, diverged_step, steps, wall_s, group_size, env, "
                "finished_at, kind, error) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    key,
                    json.dumps(config, sort_keys=True),
                    int(seed),
                    status,
                    diverged_step,
                    int(steps),
                    float(wall_s),
                    int(group_size),
                    json.dumps(env, sort_keys=True, default=str),
                    now(),
                    kind,
                    error,
                ),
            )
            db.executemany("INSERT INTO metrics VALUES (?,?,?,?,?)", rows)
            db.executemany("INSERT INTO artifacts VALUES (?,?,?,?,?,?)", artifact_rows)
        return True

    def runs(self, keys) -> dict[str, RunRecord]:
        """The stored units among `keys`, with their metrics and artifact references."""
        keys = list(dict.fromkeys(keys))
        out: dict[str, RunRecord] = {}
        for i in range(0, len(keys), 500):
            part = keys[i : i + 500]
            marks = ",".join("?" * len(part))
            per_key: dict[str, dict[int, dict]] = {}
            for key, epoch, step, name, value in self.db.execute(
                f"SELECT key, epoch, step, name, value FROM metrics WHERE key IN ({marks}) ORDER BY key, step", part
            ):
                per_key.setdefault(key, {}).setdefault(step, {"epoch": _epoch(epoch), "step": step})[name] = value
            arts: dict[str, list[ArtifactRef]] = {}
            for key, n, e, h, d, sh in self.db.execute(
                f"SELECT key, name, epoch, sha256, dtype, shape FROM artifacts WHERE key IN ({marks}) "
                "ORDER BY key, epoch, name",
                part,
            ):
                arts.setdefault(key, []).append(ArtifactRef(n, e, h, d, tuple(json.loads(sh))))
            for row in self.db.execute(
                "SELECT key, config, seed, status, diverged_step, steps, wall_s, group_size, env, finished_at, "
                f"kind, error FROM runs WHERE key IN ({marks})",
                part,
            ):
                key = row[0]
                out[key] = RunRecord(
                    key,
                    json.loads(row[1]),
                    row[2],
                    row[3],
                    row[4],
                    row[5],
                    row[6],
                    row[7],
                    json.loads(row[8]),
                    list(per_key.get(key, {}).values()),
                    row[9],
                    row[10],
                    row[11],
                    tuple(arts.get(key, ())),
                )
        return out

    def keys(self) -> list[str]:
        """Every stored unit's key."""
        return [key for (key,) in self.db.execute("SELECT key FROM runs")]

    def compute_s(self, keys: list[str]) -> float:
        """Device time the stored units among `keys` took when they were computed: each run's share of its
        group's wall time."""
        total = 0.0
        for i in range(0, len(keys), 500):
            part = keys[i : i + 500]
            row = self.db.execute(
                f"SELECT SUM(wall_s / group_size) FROM runs WHERE key IN ({','.join('?' * len(part))})", part
            ).fetchone()
            total += row[0] or 0.0
        return total

    def timings(self) -> Iterator[tuple[dict, dict, float, int, str, str]]:
        """(config, env, wall_s, group_size, kind, status) of every stored unit: what time estimates read."""
        for config, env, wall_s, group_size, kind, status in self.db.execute(
            "SELECT config, env, wall_s, group_size, kind, status FROM runs"
        ):
            yield json.loads(config), json.loads(env), wall_s, group_size, kind, status

    def count_runs(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]

    def finished_at(self) -> dict[str, str]:
        """key -> when the unit was written, for every unit in the store."""
        return dict(self.db.execute("SELECT key, finished_at FROM runs"))

    # --- studies ----------------------------------------------------------------------------------
    def save_study(
        self,
        *,
        name: str,
        profile: str,
        config: dict,
        run_keys: list[str],
        wall_s: float,
        meta: dict,
        variant: str = "",
    ) -> None:
        """Record a study's execution. A `variant` (the label of its `--set` overrides) is recorded as its own
        study, `name@variant`, so it never replaces the record of the plain profile."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO studies VALUES (?,?,?,?,?,?,?)",
                (
                    f"{name}@{variant}" if variant else name,
                    profile,
                    json.dumps(config, sort_keys=True),
                    json.dumps(run_keys),
                    wall_s,
                    json.dumps(meta, sort_keys=True, default=str),
                    now(),
                ),
            )

    def study(self, name: str, profile: str | None = None, variant: str | None = None) -> dict | None:
        """The latest recorded execution of a study (of one profile, if given; of one `variant`, if given:
        "" is the plain profile, None any variant). The record's `variant` is "" for the plain profile."""
        rows = self.study_records(name, profile, variant, latest=True)
        return rows[0] if rows else None

    def study_records(
        self, name: str | None = None, profile: str | None = None, variant: str | None = None, *, latest=False
    ) -> list[dict]:
        """Recorded executions, latest first: of a study (all of them if None), a profile, a variant."""
        sql = "SELECT name, profile, config, run_keys, wall_s, meta, updated_at FROM studies WHERE 1"
        args: list = []
        if name is not None and variant is None:  # the study itself or any of its variants
            sql += " AND (name = ? OR substr(name, 1, ?) = ?)"
            args += [name, len(name) + 1, f"{name}@"]
        elif name is not None:
            sql, args = sql + " AND name = ?", [*args, f"{name}@{variant}" if variant else name]
        if profile:
            sql, args = sql + " AND profile = ?", [*args, profile]
        # INSERT OR REPLACE gives a replaced row a new rowid, so the largest rowid is the latest
        # record (updated_at has a one-second resolution and cannot break ties).
        sql += " ORDER BY rowid DESC" + (" LIMIT 1" if latest else "")
        out = []
        for row in self.db.execute(sql, args):
            study, _, label = row[0].partition("@")
            out.append(
                {
                    "name": study,
                    "variant": label,
                    "profile": row[1],
                    "config": json.loads(row[2]),
                    "run_keys": json.loads(row[3]),
                    "wall_s": row[4],
                    "meta": json.loads(row[5]),
                    "updated_at": row[6],
                }
            )
        return out
