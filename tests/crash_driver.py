"""Run the batchlab CLI and kill this very process (SIGKILL) at a chosen point, like a power cut.

    python tests/crash_driver.py POINT N -- batchlab arguments...

POINT names where the N-th event kills the process:
- `epoch`: the N-th epoch of training has finished (runs of the group are still training);
- `stored`: the N-th unit was committed to the store (between two stored units);
- `in-transaction`: inside the N-th unit's transaction, after its row and before its metrics;
- `artifact-file`: the N-th array file is fully written to its temporary name, not yet renamed;
- `artifact-rows`: the N-th unit's array files are in place, its transaction not yet begun;
- `report`: the N-th report file (figure, table, claims.json, report.html) is written to its
  temporary name, not yet renamed.

and one that kills nothing:
- `race`: before the N-th unit is stored, wait until $BATCHLAB_RACE_PROCESSES processes got there (each leaves
  a file in the folder $BATCHLAB_RACE), so that they all hold a copy of the same unit and race to store it.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path


def main() -> None:
    point, n = sys.argv[1], int(sys.argv[2])
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
