"""Opening the store's SQLite file: recognising it (a batchlab store, a new file, or another program's, which
is never written), SQLite's integrity check, read-only opening, migration, the WAL files, transactions.

`Store` (sqlite.py) adds the rows and arrays on top of this connection.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path

from .schema import (
    DB_NAME,
    MIGRATE_V1,
    MOVE_ASIDE,
    SCHEMA,
    SCHEMA_VERSION,
    STORE_TABLES,
    NotAStoreError,
    StoreCorruptError,
    StoreVersionError,
    check_file,
    statements,
)


def writable_dir(path: Path) -> bool:
    """Whether SQLite can create its -shm and -wal files beside a store (not on read-only media)."""
    return os.access(path, os.W_OK | os.X_OK)


class StoreFile:
    """SQLite store in `root/batchlab.sqlite` (WAL mode). Creates `root` and the file if needed; a store of
    an older schema is migrated in place, in one transaction; one of a newer schema is refused.

    Before anything is written the file is recognised: an empty (or new) one becomes a store, a batchlab store
    is used, and any other SQLite file (another program's) is refused, never written. `readonly=True` (reports,
    exports: commands that only read) opens an existing store with SQLite's `mode=ro`, or `immutable=1` where
    its directory cannot be written (read-only media), and never writes the file; an older store is migrated in
    a copy in memory. `check=True` runs SQLite's integrity check first and refuses a store damaged inside.
    """

    def __init__(self, root: str | Path, *, timeout: float = 30.0, readonly: bool = False, check: bool = False):
        self.root = Path(root)
        self.path = self.root / DB_NAME
        self.readonly = readonly
        self._made_wal_files = False  # a read-only connection made the -wal and -shm files (see `close`)
        if readonly and not self.path.is_file():
            raise FileNotFoundError(f"no batchlab store in {self.root} (expected {self.path})")
        if not readonly:
            self.root.mkdir(parents=True, exist_ok=True)
        check_file(self.path)
        self.db = self._connect(timeout)
        try:
            version = self._recognise()
            if check and version:
                self._check_integrity()
            if not readonly:  # the first writes, once the file is known to be a sound store or a new one
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a crash loses no committed run
            elif version < SCHEMA_VERSION:
                self._copy_to_memory()
            self.db.execute("PRAGMA foreign_keys=ON")
            self._create_or_migrate()
        except sqlite3.OperationalError:  # locked for longer than `timeout`, unreadable file, ...
            self.close()
            raise
        except sqlite3.DatabaseError as e:  # "file is not a database", "database disk image is malformed"
            self.close()
            raise StoreCorruptError(f"{self.path} cannot be used as a store ({e}): {MOVE_ASIDE}") from None
        except BaseException:
            self.close()
            raise

    def _wal_files(self) -> tuple[Path, Path]:
        return self.path.with_name(f"{DB_NAME}-wal"), self.path.with_name(f"{DB_NAME}-shm")

    def _connect(self, timeout: float) -> sqlite3.Connection:
        """In autocommit mode: every write transaction is an explicit BEGIN IMMEDIATE (see `transaction`)."""
        if not self.readonly:
            return sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        wal, shm = self._wal_files()
        mode = "mode=ro"
        if not writable_dir(self.root):  # no -shm can be made: SQLite must be told that nobody writes the file
            if wal.exists() and wal.stat().st_size:
                raise StoreCorruptError(
                    f"{self.path} has changes in {wal.name} that only a writable directory lets SQLite read: "
                    "copy the results directory somewhere writable and run again"
                )
            mode = "immutable=1"
        else:
            self._made_wal_files = not wal.exists() and not shm.exists()
        uri = f"{self.path.absolute().as_uri()}?{mode}"
        return sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)

    def _recognise(self) -> int:
        """The schema version of a batchlab store, 0 for an empty file; any other SQLite file is refused here, before
        anything is written (a batchlab store has a schema version and batchlab's tables)."""
        version = self.schema_version()
        tables = {name for (name,) in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables and version == 0:
            if self.readonly:
                raise NotAStoreError(f"{self.path} is an empty database, not a batchlab store yet: run a study first")
            return 0
        if "runs" in tables:
            self._refuse_newer(version)
        if 1 <= version <= SCHEMA_VERSION and STORE_TABLES <= tables:
            return version
        names = ", ".join(sorted(tables)[:4]) + (", ..." if len(tables) > 4 else "")
        raise NotAStoreError(
            f"{self.path} is not a batchlab store (an SQLite database with tables {names} and schema version "
            f"{version}); batchlab does not write into it: choose another --out"
        )

    def _check_integrity(self) -> None:
        """SQLite's integrity check, before the store is used: a flipped byte inside its pages is refused here
        rather than read as other numbers. `quick_check` is cheaper but misses what matters most: of 400 random
        flips in a real store, 186 silently changed what a report reads; quick_check flags 3 of them,
        integrity_check 129 (the others change a stored value, which no check can see). Measured on an 11 MB
        store: 0.12 s (quick_check 0.03 s); on 105 MB: 0.8 s."""
        problem = self.db.execute("PRAGMA integrity_check(1)").fetchone()[0]
        if problem != "ok":
            raise StoreCorruptError(
                f"{self.path} is damaged inside (SQLite's integrity check: {problem}): {MOVE_ASIDE}"
            )

    def _copy_to_memory(self) -> None:
        """Replace the read-only connection by a copy in memory, which an older schema can be migrated in."""
        memory = sqlite3.connect(":memory:", isolation_level=None)
        self.db.backup(memory)
        self.db.close()
        self.db = memory

    def _create_or_migrate(self) -> None:
        version = self.schema_version()
        if version == SCHEMA_VERSION:
            return  # opening an up-to-date store writes nothing
        self._refuse_newer(version)
        with self.transaction() as db:
            version = self.schema_version()  # again, under the write lock: another process may have done it
            self._refuse_newer(version)
            for statement in statements((MIGRATE_V1 if version == 1 else "") + SCHEMA):
                db.execute(statement)  # not executescript: it would commit, outside our transaction
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _refuse_newer(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StoreVersionError(
                f"{self.path} has schema version {version}, newer than this batchlab's "
                f"{SCHEMA_VERSION}: upgrade batchlab (pip install -U batchlab) to read it"
            )

    @staticmethod
    def exists(root: str | Path) -> bool:
        """Whether `root` holds a store (without creating anything)."""
        return (Path(root) / DB_NAME).is_file()

    def close(self) -> None:
        self.db.close()
        if self._made_wal_files:
            self._made_wal_files = False
            self._remove_wal_files()

    def _remove_wal_files(self) -> None:
        """SQLite reading a WAL-mode file read-only makes its -wal and -shm files beside it (they hold no data)
        and cannot remove them. While the -wal is still empty, a connection that writes nothing lets SQLite
        remove both as it closes, if it is the last one (closing checkpoints the -wal: empty, nothing is copied
        into the store); otherwise they stay until the last connection of a writer closes."""
        wal, _ = self._wal_files()
        if not wal.exists() or wal.stat().st_size:
            return
        db = sqlite3.connect(self.path, timeout=0)
        try:
            db.execute("PRAGMA schema_version").fetchone()  # a read: SQLite opens the -wal, and removes it on close
        except sqlite3.Error:
            pass
        finally:
            db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def journal_mode(self) -> str:
        return self.db.execute("PRAGMA journal_mode").fetchone()[0]

    def schema_version(self) -> int:
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    @contextmanager
    def transaction(self):
        """One write transaction: BEGIN IMMEDIATE takes the write lock at once (waiting up to `timeout` for
        another process's transaction), so two processes never both read-then-write and fail with
        "database is locked"; commits on success, rolls back on any error (KeyboardInterrupt included)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
