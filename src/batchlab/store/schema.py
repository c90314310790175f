"""What a store holds: the SQLite schema (and the migration from version 1), the records read back from it, and
the errors of a store that cannot be used. `sqlite.Store` reads and writes it."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,
    config TEXT NOT NULL,        -- the RunSpec or TaskSpec, all fields, JSON
    seed INTEGER NOT NULL,
    status TEXT NOT NULL,        -- finished | diverged | error (a task's named, expected failure)
    diverged_step INTEGER,
    steps INTEGER NOT NULL,
    wall_s REAL NOT NULL,        -- wall time of the group chunk the run trained in (a task: its own)
    group_size INTEGER NOT NULL,
    env TEXT NOT NULL,           -- device, torch version, ... JSON
    finished_at TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'train',  -- 'train', or 'task:<kind>'
    error TEXT                   -- status 'error': what happened, in words
);
CREATE TABLE IF NOT EXISTS metrics (
    key TEXT NOT NULL REFERENCES runs(key) ON DELETE CASCADE,
    epoch REAL NOT NULL,         -- fractional when evaluated inside an epoch
    step INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL,                  -- NULL where the value was NaN/inf (a diverged run)
    PRIMARY KEY (key, step, name)
);
CREATE TABLE IF NOT EXISTS artifacts (
    key TEXT NOT NULL REFERENCES runs(key) ON DELETE CASCADE,
    name TEXT NOT NULL,          -- a task's array name, or 'param:<tensor>' / 'buffer:<tensor>' of a checkpoint
    epoch INTEGER NOT NULL,      -- checkpoints: the epoch after which the weights were taken; arrays: -1
    sha256 TEXT NOT NULL,        -- the file artifacts/<sha256[:2]>/<sha256>.npy
    dtype TEXT NOT NULL,
    shape TEXT NOT NULL,         -- JSON list
    PRIMARY KEY (key, name, epoch)
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

# v1 (the first release): metrics keyed by (key, epoch, name), no unit kinds, no artifacts.
MIGRATE_V1 = """
ALTER TABLE runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'train';
ALTER TABLE runs ADD COLUMN error TEXT;
CREATE TABLE metrics_v2 (
    key TEXT NOT NULL REFERENCES runs(key) ON DELETE CASCADE,
    epoch REAL NOT NULL,
    step INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (key, step, name)
);
INSERT INTO metrics_v2 (key, epoch, step, name, value) SELECT key, epoch, step, name, value FROM metrics;
DROP TABLE metrics;
ALTER TABLE metrics_v2 RENAME TO metrics;
"""

# Created on the first interrupt that keeps something (not part of the schema version: a batchlab that does
# not know the table never reads it, and a stale row is never used, see `Store.partials`).
PARTIAL_SCHEMA = """
CREATE TABLE IF NOT EXISTS partial (
    keys TEXT PRIMARY KEY,       -- JSON list: the run keys of an interrupted group chunk, in its order
    epoch INTEGER NOT NULL,      -- finished epochs the state holds
    meta TEXT NOT NULL,          -- JSON: step count, wall time, the metric records so far
    sha256 TEXT NOT NULL,        -- the arrays (weights, optimizer state, flags): partial/<sha256>.npz
    saved_at TEXT NOT NULL
)
"""

# A batchlab store has a schema version (PRAGMA user_version) from 1 to SCHEMA_VERSION and these tables (every
# version has had them); an SQLite file with neither is another program's and is never written.
STORE_TABLES = frozenset({"runs", "metrics", "studies"})

DB_NAME = "batchlab.sqlite"
ARTIFACT_DIR = "artifacts"
PARTIAL_DIR = "partial"
SCHEMA_VERSION = 2
CHECKPOINT_EPOCHLESS = -1  # the epoch column of a task's arrays


class StoreVersionError(Exception):
    """The store was written by a newer batchlab (a schema this version does not know)."""


class StoreCorruptError(Exception):
    """`batchlab.sqlite` is not an SQLite database, or is truncated or damaged."""


class NotAStoreError(StoreCorruptError):
    """`batchlab.sqlite` is a sound SQLite database, but not a batchlab store (another program's, or empty)."""


class DamagedFileError(OSError):
    """A stored file (an array, a kept training state) is missing, or its bytes are not the SHA-256 it was stored
    under: the unit it belongs to is damaged, and `batchlab run` computes it again. `path` names the file."""

    def __init__(self, message: str, path: Path):
        super().__init__(message)
        self.path = path


SQLITE_MAGIC = b"SQLite format 3\x00"
MOVE_ASIDE = "move it aside (or choose another --out) and run again"
RUN_AGAIN = "run the study again (the same `batchlab run` command) to compute it again"


def read_checked(path: Path, sha256: str) -> bytes:
    """The bytes of a content-addressed file, checked against the SHA-256 it was stored under (its name, and for a
    kept state its row), so that a flipped bit or a replaced file is found before its numbers are used. The cost
    is the hash: about 4 ms for a 7.3 MB checkpoint (np.load itself takes 0.4 ms from the page cache)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DamagedFileError(f"{path} is missing or unreadable ({e.strerror or e}): {RUN_AGAIN}", path) from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise DamagedFileError(
            f"{path} is damaged (its bytes are not the SHA-256 it was stored under): {RUN_AGAIN}", path
        )
    return data


def check_file(path: Path) -> None:
    """Refuse a file that cannot be a whole SQLite database, before SQLite opens (and may write) it.

    The 100-byte header names the page size and, when it is current, the number of pages: a file
    shorter than that was truncated. This reads 100 bytes, so it costs nothing on large stores; damage
    inside the pages is found by SQLite when they are read (and reported the same way).
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if size == 0:
        return  # SQLite treats an empty file as an empty database
    with open(path, "rb") as fh:
        header = fh.read(100)
    hint = MOVE_ASIDE
    if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
        raise StoreCorruptError(f"{path} is not a batchlab store (not an SQLite database): {hint}")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    header_is_current = header[24:28] == header[92:96]
    if page_size < 512 or page_size & (page_size - 1) or (header_is_current and size < pages * page_size):
        raise StoreCorruptError(
            f"{path} is truncated or damaged ({size} bytes, its header says {pages} pages of {page_size}): {hint}"
        )


@dataclass(frozen=True)
class ArtifactRef:
    name: str
    epoch: int
    sha256: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class PartialRecord:
    """An interrupted group chunk's training state, kept so that the same runs continue from `epoch`."""

    keys: tuple[str, ...]
    epoch: int
    meta: dict
    sha256: str
    saved_at: str = ""


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
    metrics: list[dict]  # one dict per evaluation, sorted by step: epoch, step, name -> value
    finished_at: str = ""
    kind: str = "train"
    error: str | None = None
    artifacts: tuple[ArtifactRef, ...] = field(default=(), repr=False)


def statements(script: str) -> list[str]:
    """The statements of an SQL script without its `--` comments (which may hold quotes and semicolons)."""
    code = "\n".join(line.split("--", 1)[0] for line in script.splitlines())
    return [part.strip() for part in code.split(";") if part.strip()]


def now() -> str:
    """A row's time stamp (local time, one-second resolution)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
