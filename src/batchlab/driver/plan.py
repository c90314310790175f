"""What a plan needs from the store: the units it lacks (or holds damaged), in the order they can run, and the
states kept from interrupted training to continue from. `work_plan` reads only (a dry run calls it too)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..engine import RunSpec
from ..engine.spec import TaskSpec, WorkSpec
from ..engine.train import PartialState
from ..store import Store


@dataclass
class WorkPlan:
    """What the store lacks: runs to train (with the checkpoints to keep), and tasks to compute."""

    runs: list[RunSpec]
    checkpoints: dict[str, set[int]]  # run key -> epochs whose weights a pending task needs
    tasks: list[TaskSpec]
    rerun_for_checkpoints: set[str]  # runs in the store, trained again only for a missing checkpoint
    damaged: dict[str, Path] = field(default_factory=dict)  # stored units computed again: key -> their damaged file


def work_plan(store: Store, units: list[WorkSpec]) -> WorkPlan:
    """Runs before the tasks that need their checkpoints; nothing that the store already has whole. A stored unit
    whose array file is missing or does not match its SHA-256 is damaged: planned again, with the checkpoints it
    had (`forget_damaged` deletes it before it is computed)."""
    runs = {u.key: u for u in units if isinstance(u, RunSpec)}
    tasks = [u for u in units if isinstance(u, TaskSpec)]
    for t in tasks:
        for c in t.checkpoints:
            runs.setdefault(c.run.key, c.run)
    done = store.done([*runs, *(t.key for t in tasks)])
    damaged = store.damaged(done)
    done -= set(damaged)
    pending_tasks = [t for t in tasks if t.key not in done]
    checkpoints: dict[str, set[int]] = {}
    for t in pending_tasks:
        for c in t.checkpoints:
            checkpoints.setdefault(c.run.key, set()).add(c.epoch)
    rerun = set()
    for key, epochs in list(checkpoints.items()):
        if key in done:
            missing = epochs - store.checkpoint_epochs(key)
            if missing:
                checkpoints[key] = missing
                rerun.add(key)
            else:
                del checkpoints[key]
    for key in damaged.keys() & runs.keys():
        checkpoints.setdefault(key, set()).update(store.checkpoint_epochs(key))
    pending_runs = [r for k, r in runs.items() if k not in done or k in rerun]
    return WorkPlan(pending_runs, checkpoints, pending_tasks, rerun, damaged)


def forget_damaged(store: Store, plan: WorkPlan, say: Callable[[str], None]) -> None:
    """Delete the plan's damaged units from the store, saying which file each had, so they are computed again
    and stored in their place."""
    if plan.damaged:
        for key, path in plan.damaged.items():
            say(f"{path} is damaged or missing: unit {key} is computed again")
        store.forget(plan.damaged)


def kept_states(store: Store, runs: list[RunSpec], say: Callable[[str], None] | None = None) -> list[PartialState]:
    """The states kept from interrupted training whose runs are all among `runs` (to continue from). A
    state whose runs were stored since (by another process, or an older batchlab) is deleted; one of
    other runs (another study's) is left alone; a damaged one (missing, or not the bytes of its SHA-256) is
    said in one line and deleted (its runs start again)."""
    pending = {s.key for s in runs}
    out = []
    for record in store.partials():
        if not set(record.keys) <= pending:
            if store.done(record.keys):
                store.delete_partials(record.keys)
            continue
        try:
            arrays = store.load_partial(record)
        except OSError as e:
            if say is not None:
                path = getattr(e, "path", store.partial_path(record.sha256))
                say(f"{path} is damaged or unreadable: its {len(record.keys)} runs start again from epoch 0")
            store.delete_partials(record.keys)
            continue
        out.append(PartialState(record.keys, record.epoch, record.meta, arrays))
    return out
