"""Run the batchlab CLI and kill this very process (SIGKILL) at a chosen point, like a power cut, or make a write
fail there as a full disk or a read-only folder would.

    python tests/crash_driver.py POINT N -- batchlab arguments...

POINT names where the N-th event kills the process:
- `epoch`: the N-th epoch of training has finished (runs of the group are still training);
- `stored`: the N-th unit was committed to the store (between two stored units);
- `in-transaction`: inside the N-th unit's transaction, after its row and before its metrics;
- `artifact-file`: the N-th array file is fully written to its temporary name, not yet renamed;
- `artifact-rows`: the N-th unit's array files are in place, its transaction not yet begun;
- `report`: the N-th report file (figure, table, claims.json, report.html) is written to its
  temporary name, not yet renamed.

faults the command must survive with one line and exit code 2 (N: the N-th event fails):
- `full-array`, `full-report`: the N-th array file, or report file, finds no space left on the device;
- `full-db`: the N-th store transaction fails as SQLite does on a full disk ("database or disk is full");
- `read-only` (N: the start of a folder's name in --out: `artifacts`, `STUDY@`): every file written in that
  folder is refused (EACCES), as for a folder made read-only (which root, running the tests, would write);

and points that kill nothing:
- `race`: before the N-th unit is stored, wait until $BATCHLAB_RACE_PROCESSES processes got there (each leaves
  a file in the folder $BATCHLAB_RACE), so that they all hold a copy of the same unit and race to store it;
- `slow-keep`: keeping the state of interrupted training (at Ctrl-C) first leaves the file $BATCHLAB_MARK, then
  takes 2 s, so that a test can press Ctrl-C again meanwhile.
"""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import sys
import time
from contextlib import contextmanager
from pathlib import Path


def main() -> None:
    point, arg = sys.argv[1], sys.argv[2]
    n = int(arg) if arg.isdigit() else 0
    args = sys.argv[sys.argv.index("--") + 1 :]
    count = {"n": 0}

    def tick() -> None:
        count["n"] += 1
        if count["n"] == n:
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    from batchlab import cli, files
    from batchlab.store import sqlite as store

    if point == "epoch":
        epoch = cli.TrainingProgress.epoch

        def on_epoch(self, runs, epochs):
            epoch(self, runs, epochs)
            tick()

        cli.TrainingProgress.epoch = on_epoch
    elif point == "stored":
        save = store.Store.save_run

        def save_then_tick(self, **kw):
            written = save(self, **kw)
            tick()
            return written

        store.Store.save_run = save_then_tick
    elif point == "in-transaction":
        save = store.Store.save_run

        def save_with_trace(self, **kw):
            def trace(statement: str) -> None:
                if statement.startswith("INSERT INTO metrics"):
                    self.db.set_trace_callback(None)
                    tick()

            self.db.set_trace_callback(trace)
            try:
                return save(self, **kw)
            finally:
                self.db.set_trace_callback(None)

        store.Store.save_run = save_with_trace
    elif point in ("artifact-file", "report"):
        replace = files.os.replace
        suffixes = (".npy",) if point == "artifact-file" else (".html", ".png", ".svg", ".pdf", ".csv", ".json")

        def replace_with_tick(src, dst, *a, **kw):
            if str(dst).endswith(suffixes):
                tick()
            return replace(src, dst, *a, **kw)

        files.os.replace = replace_with_tick
    elif point == "artifact-rows":
        rows = store.Store._artifact_rows

        def rows_then_tick(self, key, arrays):
            out = rows(self, key, arrays)
            if out:
                tick()
            return out

        store.Store._artifact_rows = rows_then_tick
    elif point in ("full-array", "full-report"):
        replace = files.os.replace
        suffixes = (".npy",) if point == "full-array" else (".html", ".png", ".svg", ".pdf", ".csv", ".json")

        def replace_or_full(src, dst, *a, **kw):
            if str(dst).endswith(suffixes):
                count["n"] += 1
                if count["n"] == n:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return replace(src, dst, *a, **kw)

        files.os.replace = replace_or_full
    elif point == "full-db":
        transaction = store.Store.transaction

        @contextmanager
        def full_transaction(self):
            with transaction(self) as db:
                yield db
                count["n"] += 1
                if count["n"] == n:  # its statements ran; SQLite cannot grow the file to commit them
                    raise sqlite3.OperationalError("database or disk is full")

        store.Store.transaction = full_transaction
    elif point == "read-only":
        out = Path(args[args.index("--out") + 1]).resolve()
        mkstemp = files.tempfile.mkstemp

        def refused(*a, dir=None, prefix="", suffix="", **kw):
            inside = Path(dir).resolve()
            if inside.is_relative_to(out) and inside != out and inside.relative_to(out).parts[0].startswith(arg):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.path.join(dir, prefix + "x" + suffix))
            return mkstemp(*a, dir=dir, prefix=prefix, suffix=suffix, **kw)

        files.tempfile.mkstemp = refused
    elif point == "slow-keep":
        keep = store.Store.save_partial

        def slow_keep(self, *a, **kw):
            Path(os.environ["BATCHLAB_MARK"]).touch()
            time.sleep(2.0)
            return keep(self, *a, **kw)

        store.Store.save_partial = slow_keep
    elif point == "race":
        save = store.Store.save_run

        def wait_then_save(self, **kw):
            count["n"] += 1
            if count["n"] == n:
                wait_for_the_others(Path(os.environ["BATCHLAB_RACE"]), int(os.environ["BATCHLAB_RACE_PROCESSES"]))
            return save(self, **kw)

        store.Store.save_run = wait_then_save
    else:
        raise SystemExit(f"unknown point {point!r}")
    cli.main(args)


def wait_for_the_others(folder: Path, processes: int, timeout: float = 120.0) -> None:
    """A barrier between processes: leave a file in `folder`, wait until `processes` files are there."""
    (folder / str(os.getpid())).touch()
    deadline = time.monotonic() + timeout
    while len(list(folder.iterdir())) < processes:
        if time.monotonic() > deadline:
            raise SystemExit(f"race: only {len(list(folder.iterdir()))} of {processes} processes came")
        time.sleep(0.05)


if __name__ == "__main__":
    main()
