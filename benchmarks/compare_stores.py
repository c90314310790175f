"""Are two results directories the same numbers? Keys, statuses, metric values (bit for bit) and arrays.

A refactor promises "every number unchanged": run `batchlab reproduce --profile quick` before and after into
two directories, then

    python benchmarks/compare_stores.py BEFORE AFTER            # every unit of both
    python benchmarks/compare_stores.py BEFORE AFTER --common   # only the units both have (one study rerun)

It reads the SQLite files directly (read only) and compares, per unit key: its status, diverged step and step
count; every metric row (key, step, name) with its value compared as the 8 bytes of the float (NaN/inf are
stored as NULL); every artifact (name, epoch) by its SHA-256, which is the array's content hash. Timings,
environments and dates are allowed to differ, and so are the metrics that are clock readings (`CLOCKS`: the
step-cost task's `seconds_per_step`), which are compared for presence only. Exit 0 when equal, 1 with the
first differences listed.
"""

from __future__ import annotations

import argparse
import sqlite3
import struct
import sys
from pathlib import Path

CLOCKS = {"seconds_per_step"}  # metrics that measure wall time: a rerun reads another clock


def read(out: Path) -> dict[str, dict]:
    """Every unit of the store in ``out``: key -> {row, metrics, artifacts}."""
    path = out / "batchlab.sqlite"
    if not path.is_file():
        raise SystemExit(f"error: no store at {path}")
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    units: dict[str, dict] = {}
    for key, kind, status, diverged, steps in con.execute("SELECT key, kind, status, diverged_step, steps FROM runs"):
        units[key] = {"row": (kind, status, diverged, steps), "metrics": {}, "artifacts": {}}
    for key, step, name, value in con.execute("SELECT key, step, name, value FROM metrics"):
        if name in CLOCKS:
            value = 0.0 if value is not None else None  # present or not, never its reading
        units[key]["metrics"][(step, name)] = None if value is None else struct.pack("<d", value)
    for key, name, epoch, sha in con.execute("SELECT key, name, epoch, sha256 FROM artifacts"):
        units[key]["artifacts"][(name, epoch)] = sha
    con.close()
    return units


def differences(a: dict[str, dict], b: dict[str, dict], common: bool) -> list[str]:
    out = []
    keys_a, keys_b = set(a), set(b)
    if not common:
        out += [f"only in the first: {k}" for k in sorted(keys_a - keys_b)]
        out += [f"only in the second: {k}" for k in sorted(keys_b - keys_a)]
    for key in sorted(keys_a & keys_b):
        ua, ub = a[key], b[key]
        if ua["row"] != ub["row"]:
            out.append(f"{key}: (kind, status, diverged_step, steps) {ua['row']} != {ub['row']}")
        for what in ("metrics", "artifacts"):
            ma, mb = ua[what], ub[what]
            for k in sorted(set(ma) | set(mb), key=str):
                if ma.get(k) != mb.get(k):
                    va = _show(ma.get(k), k in ma)
                    vb = _show(mb.get(k), k in mb)
                    out.append(f"{key}: {what} {k}: {va} != {vb}")
    return out


def _show(v, present: bool) -> str:
    if not present:
        return "(missing)"
    if isinstance(v, bytes):
        return repr(struct.unpack("<d", v)[0])
    return str(v)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("first", type=Path, help="a results directory (holds batchlab.sqlite)")
    p.add_argument("second", type=Path, help="the other results directory")
    p.add_argument("--common", action="store_true", help="compare only the units both stores hold")
    p.add_argument("--show", type=int, default=20, help="how many differences to print")
    args = p.parse_args(argv)
    a, b = read(args.first), read(args.second)
    diff = differences(a, b, args.common)
    both = len(set(a) & set(b))
    n_metrics = sum(len(a[k]["metrics"]) for k in set(a) & set(b))
    n_arrays = sum(len(a[k]["artifacts"]) for k in set(a) & set(b))
    if diff:
        print(f"{len(diff)} differences ({both} units in both):")
        for line in diff[: args.show]:
            print("  " + line)
        return 1
    print(f"equal: {both} units, {n_metrics} metric values bit for bit, {n_arrays} arrays by SHA-256")
    return 0


if __name__ == "__main__":
    sys.exit(main())
