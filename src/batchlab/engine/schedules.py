"""Learning-rate and batch-size schedules as pure functions of the step.

The engine writes each epoch's table of per-run learning rates to the device when the epoch starts, so inside
the step loop the lr is read from device memory by the step counter: no host work per step, and the step stays
capturable in a CUDA graph. One epoch at a time: a table of every step of a long run (10^8 steps, the bound)
would take gigabytes.
"""

from __future__ import annotations

import math

import numpy as np

from .spec import LRSchedule, RunSpec


def lr_factor(schedule: LRSchedule, epoch: float, total_epochs: float) -> float:
    """Multiplier of the base lr at fractional `epoch` (0 = start of training)."""
    if schedule.kind == "constant":
        return 1.0
    if schedule.kind == "step":
        return schedule.gamma ** sum(epoch >= m for m in schedule.milestones)
    w = schedule.warmup_epochs
    if w > 0 and epoch < w:
        return schedule.warmup_start + (1 - schedule.warmup_start) * epoch / w
    if schedule.kind == "warmup":
        return 1.0
    t = min(max((epoch - w) / max(total_epochs - w, 1e-12), 0.0), 1.0)  # cosine
    return schedule.final_factor + (1 - schedule.final_factor) * 0.5 * (1 + math.cos(math.pi * t))


def steps_in_epoch(n_train: int, batch_size: int, drop_last: bool) -> int:
    return n_train // batch_size if drop_last else math.ceil(n_train / batch_size)


def epoch_plan(spec: RunSpec, n_train: int) -> list[tuple[int, int]]:
    """(batch_size, steps) for every epoch of the run's batch-size schedule."""
    plan = []
    for epoch in range(spec.epochs):
        bs = min(spec.batch_size_at(epoch), n_train)
        plan.append((bs, steps_in_epoch(n_train, bs, spec.drop_last)))
    return plan


def total_steps(spec: RunSpec, n_train: int) -> int:
    """The run's steps, `epoch_plan`'s sum counted per segment of its batch schedule, without a list of every
    epoch (a dry run of a million epochs held 61 MB of them)."""
    segments = [(0, spec.batch_size), *spec.batch_switch, (max(spec.epochs, 0), 0)]
    return sum(
        (end - start) * steps_in_epoch(n_train, min(bs, n_train), spec.drop_last)
        for (start, bs), (end, _) in zip(segments, segments[1:])
    )


def epoch_lrs(spec: RunSpec, epoch: int, steps: int) -> np.ndarray:
    """The lr of each of the `steps` steps of epoch `epoch`, evaluated at the fractional epoch where it starts."""
    if spec.lr_schedule.kind == "constant":
        return np.full(steps, spec.lr * 1.0)
    frac = epoch + np.arange(steps) / steps
    return np.array([spec.lr * lr_factor(spec.lr_schedule, f, spec.epochs) for f in frac], dtype=float)


def lr_table(spec: RunSpec, n_train: int) -> np.ndarray:
    """The lr of every step of the run (for tests and figures; training reads one epoch's at a time)."""
    rows = [epoch_lrs(spec, epoch, steps) for epoch, (_, steps) in enumerate(epoch_plan(spec, n_train))]
    return np.concatenate(rows) if rows else np.zeros(0)
