"""Checks of the environment before anything is written: the output directory, the device, the store, the data.
Each failure is one line (UsageError, or DataError from the data sets)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..engine import resolve_device
from ..engine.spec import TaskSpec, WorkSpec
from ..errors import UsageError, one_line
from ..references import is_reference
from ..store import ArtifactRef, Store, StoreCorruptError, StoreVersionError


def check_writable(out: Path) -> None:
    """Refuse an output directory we cannot create or write, before anything is written."""
    out = Path(out)
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        if probe.is_symlink():  # a dangling link: mkdir would fail
            raise UsageError(f"--out {out}: {probe} is a broken symbolic link")
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        what = "is not a directory" if probe == out else f"cannot be created: {probe} is not a directory"
        raise UsageError(f"--out {out}: {what}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: not writable ({probe} does not allow writing)")
    db = out / "batchlab.sqlite"
    if db.exists() and not os.access(db, os.R_OK | os.W_OK):
        raise UsageError(f"--out {out}: the store {db} is not writable")
    if out.is_dir():  # the store's arrays and the reports go into folders inside it: found now, not after training
        for folder, _, _ in os.walk(out):
            if not os.access(folder, os.W_OK | os.X_OK):
                raise UsageError(f"--out {out}: the folder {folder} inside it does not allow writing")


def check_device(device: str | torch.device) -> torch.device:
    try:
        dev = resolve_device(device)
    except ValueError as e:
        raise UsageError(one_line(e)) from None
    except RuntimeError:  # torch.device("gpu"): not a device string
        raise UsageError(f"--device {device}: not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UsageError(f"--device {device}: there are only {torch.cuda.device_count()} CUDA devices")
    return dev


def open_store(out: Path, *, readonly: bool = False) -> Store:
    """The store in `out` (created if needed; `readonly`: opened read-only, for commands that only read it), once
    SQLite's integrity check has passed and before anything is written; every refusal is one line."""
    try:
        return Store(out, readonly=readonly, check=True)
    except (StoreVersionError, StoreCorruptError) as e:
        raise UsageError(one_line(e)) from None
    except (OSError, sqlite3.Error) as e:
        raise UsageError(f"cannot open the store in {out}: {one_line(e)}{store_hint(e)}") from None


UNREADABLE = (OSError, ValueError, EOFError)  # what reading a missing, empty, cut or altered array file raises


def damaged(e: Exception, what: str, out) -> UsageError:
    """An array of the store that cannot be read (`what`: which one), as one line saying what to do. The store's
    OSError names the file already; numpy's own errors (an empty file's EOFError) do not."""
    why = one_line(e) if isinstance(e, OSError) else f"{what} cannot be read ({type(e).__name__}: {one_line(e)})"
    return UsageError(f"{why}; the store in {out} is damaged: move it aside (or choose another --out) and run again")


def array_loader(store: Store) -> Callable[[ArtifactRef], np.ndarray]:
    """`store.load_array` for what the driver reads (a report's arrays), a damaged file as one line (UsageError)."""

    def load(ref: ArtifactRef) -> np.ndarray:
        try:
            return store.load_array(ref)
        except UNREADABLE as e:
            raise damaged(e, f"array {ref.name!r} ({store.artifact_path(ref.sha256).name})", store.root) from None

    return load


def store_hint(e: Exception) -> str:
    """What to do about an SQLite error, appended to its message ("" when there is nothing to say)."""
    if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
        return " (another process held it too long: wait for it, or run again)"
    if isinstance(e, sqlite3.OperationalError) and ("full" in str(e) or "readonly" in str(e)):
        return (
            ": free some space, or make the store writable, and run the same command again (what was finished is kept)"
        )
    if isinstance(e, sqlite3.DatabaseError) and not isinstance(e, sqlite3.OperationalError):
        return ": the store is damaged; move it aside (or choose another --out) and run again"
    return ""


def done_in(out: Path, keys: list[str]) -> set[str]:
    """Keys already in the store at `out`; reads only (checking the store, so that a damaged or foreign one is
    refused before anything is done), and creates nothing when there is no store."""
    if not Store.exists(out):
        return set()
    with open_store(out, readonly=True) as store:
        try:
            return store.done(keys)
        except sqlite3.Error as e:
            raise UsageError(f"cannot read the store in {out}: {one_line(e)}{store_hint(e)}") from None


def check_data(specs: list[WorkSpec], device: torch.device, data_dir: str | None = None) -> None:
    """Load (and cache) the data the pending runs need, so a data problem stops us before any write."""
    from ..engine.data import check_run, load_for

    seen = set()
    for spec in specs:
        if isinstance(spec, TaskSpec):
            if spec.start is None:
                continue
            spec = spec.start.run
        user = (spec.model, spec.model_args, spec.dataset, spec.dataset_args, spec.loss, spec.precision)
        if spec.user_model or is_reference(spec.dataset) or is_reference(spec.loss):
            if repr(user) not in seen:  # the run as the engine builds it: data, model, output against the loss
                seen.add(repr(user))
                check_run(spec, device, data_dir)
            continue
        what = (spec.dataset, spec.train_subset, spec.test_subset, spec.normalize, spec.model, spec.precision)
        if what not in seen:
            seen.add(what)
            load_for(spec, device, data_dir)  # raises DataError with a one-line message
