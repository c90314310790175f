"""The state of interrupted training, kept in a store until its runs are trained again and stored.

Not results: the `partial` table (created on the first interrupt that keeps something, outside the schema
version) and `partial/<sha256>.npz` hold the weights, optimizer state and metrics so far of a group chunk
interrupted by Ctrl-C. `Store` has these methods; they are apart because they are the one part of the store
that is deleted again and never read by a report.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from pathlib import Path

import numpy as np

from ..files import atomic_write_bytes
from .schema import PARTIAL_DIR, PARTIAL_SCHEMA, PartialRecord, now, read_checked


class PartialStates:
    """The kept states of interrupted training; mixed into `Store` (uses its `db`, `root` and `transaction`)."""

    def partial_path(self, sha256: str) -> Path:
        return self.root / PARTIAL_DIR / f"{sha256}.npz"

    def save_partial(self, keys: list[str], epoch: int, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        """Keep an interrupted chunk's state, replacing an older one of the same runs. The arrays' file is
        written atomically first, then the row in one transaction: a reader finds the whole state or none."""
        buf = io.BytesIO()
        np.savez(buf, **{name: np.asarray(a) for name, a in arrays.items()})  # (ascontiguousarray makes 0-d 1-d)
        data = buf.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        new_file = not self.partial_path(sha).exists()
        if new_file:
            atomic_write_bytes(self.partial_path(sha), data)
        try:
            with self.transaction() as db:
                db.execute(PARTIAL_SCHEMA)
                old = db.execute("SELECT sha256 FROM partial WHERE keys = ?", (json.dumps(list(keys)),)).fetchall()
                db.execute(
                    "INSERT OR REPLACE INTO partial VALUES (?,?,?,?,?)",
                    (json.dumps(list(keys)), int(epoch), json.dumps(meta), sha, now()),
                )
        except BaseException:  # e.g. a second Ctrl-C: no row, so no file either
            if new_file:
                self.partial_path(sha).unlink(missing_ok=True)
            raise
        self._drop_partial_files({h for (h,) in old})

    def partials(self) -> list[PartialRecord]:
        """Every kept state of interrupted training (the caller checks that its runs are still to train)."""
        if not self._has_partial_table():
            return []
        rows = self.db.execute("SELECT keys, epoch, meta, sha256, saved_at FROM partial ORDER BY rowid")
        return [PartialRecord(tuple(json.loads(k)), e, json.loads(m), h, t) for k, e, m, h, t in rows]

    def load_partial(self, record: PartialRecord) -> dict[str, np.ndarray]:
        """A kept state's arrays, its file checked against the SHA-256 of its row (`DamagedFileError` if not; an
        OSError if numpy cannot read it)."""
        path = self.partial_path(record.sha256)
        data = read_checked(path, record.sha256)
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                return {name: npz[name] for name in npz.files}
        except (ValueError, EOFError, zipfile.BadZipFile) as e:  # empty, cut, altered (but hashed so)
            raise OSError(f"the kept training state {path.name} in {self.root} is unreadable: {e}") from None

    def delete_partials(self, keys) -> int:
        """Forget every kept state that holds one of `keys` (its runs are stored now); returns how many."""
        if not self._has_partial_table():
            return 0
        keys = set(keys)
        rows = self.db.execute("SELECT keys, sha256 FROM partial").fetchall()
        stale = [(k, h) for k, h in rows if keys & set(json.loads(k))]
        if stale:
            with self.transaction() as db:
                db.executemany("DELETE FROM partial WHERE keys = ?", [(k,) for k, _ in stale])
            self._drop_partial_files({h for _, h in stale})
        return len(stale)

    def _has_partial_table(self) -> bool:
        return bool(self.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'partial'").fetchone())

    def _drop_partial_files(self, shas: set[str]) -> None:
        """Remove the arrays of replaced or deleted states that no row refers to any more, and those of a
        write that never got its row (older than an hour: a newer one may be another process's, about to)."""
        used = {h for (h,) in self.db.execute("SELECT sha256 FROM partial")}
        old = {p.stem for p in (self.root / PARTIAL_DIR).glob("*.npz") if time.time() - p.stat().st_mtime > 3600}
        for sha in (shas | old) - used:
            self.partial_path(sha).unlink(missing_ok=True)
