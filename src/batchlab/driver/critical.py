"""The answer to "which batch size should I use?" for a model and data: the critical-batch study run on them, its
measured critical batch size per checkpoint with the proxies beside it, the time per step of each batch size on
this device, and a recommendation computed from those numbers (`batchlab critical-batch`, `batchlab.critical_batch`).

The recommendation: among the batch sizes the measurement accepted at every checkpoint (after the same number of
examples their loss is within the margin of B0's, so they waste at most that), the one with the fewest seconds per
example on this device; and the warmup (when to double the batch) that the measured critical batch size allows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..analysis.critical import warmup_schedule
from ..errors import UsageError
from ..outputs import StudyOutput, json_ready

STUDY = "critical-batch"


@dataclass
class Checkpointed:
    """The measurement at one checkpoint: the critical batch size's interval and each proxy with its ratio."""

    fraction: float
    epoch: int
    lower: float
    upper: float
    status: str
    b_simple: float
    b_simple_ci: tuple[float, float]
    b_noise: float
    b_noise_ci: tuple[float, float]
    b_simple_two_batch: float
    b_simple_two_batch_ci: tuple[float, float]


@dataclass
class CriticalAnswer:
    """What `critical_batch` measured and recommends (`to_json()`: the documented JSON, docs/results-format.md)."""

    model: str
    data: str
    optimizer: str
    b0: int
    margin: float
    checkpoints: list[Checkpointed]
    seconds_per_step: dict[int, float]
    batch_size: int
    warmup: list[tuple[int, int]]
    why: str
    claims: list[dict] = field(default_factory=list)
    report: str = ""

    def to_json(self) -> dict:
        doc = asdict(self)
        doc["seconds_per_step"] = {str(b): s for b, s in self.seconds_per_step.items()}
        doc["warmup"] = [{"epoch": e, "batch_size": b} for e, b in self.warmup]
        return json_ready(doc)

    def __str__(self) -> str:
        lines = [f"B0 = {self.b0}, margin {100 * self.margin:g} % ({self.optimizer})"]
        for c in self.checkpoints:
            upper = "∞" if not math.isfinite(c.upper) else f"{c.upper:g}"
            lines.append(
                f"  {100 * c.fraction:5.1f} %: critical [{c.lower:g}, {upper}] ({c.status}); "
                f"B_simple {c.b_simple:.4g} [{c.b_simple_ci[0]:.4g}, {c.b_simple_ci[1]:.4g}], "
                f"B_noise {c.b_noise:.4g} [{c.b_noise_ci[0]:.4g}, {c.b_noise_ci[1]:.4g}]; two-batch B_simple "
                f"{c.b_simple_two_batch:.4g} [{c.b_simple_two_batch_ci[0]:.4g}, {c.b_simple_two_batch_ci[1]:.4g}]"
            )
        times = ", ".join(f"{b}: {1e3 * s:.3g} ms" for b, s in self.seconds_per_step.items() if math.isfinite(s))
        lines.append(f"time per step on this device: {times}")
        lines.append(f"recommended batch size: {self.batch_size} ({self.why})")
        lines.append("warmup: " + ", ".join(f"from epoch {e}: batch {b}" for e, b in self.warmup))
        return "\n".join(lines)


def answer_from(output: StudyOutput, cfg, seconds_per_step: dict[int, float]) -> CriticalAnswer:
    """The answer from the study's output (its `critical_batch` table) and the measured step times."""
    rows = next((t.rows for t in output.tables if t.name == "critical_batch"), [])
    if not rows:
        raise UsageError(f"{STUDY}: no checkpoint was measured (the branches are missing or failed): see its report")
    checkpoints = [
        Checkpointed(
            r["checkpoint (% of training)"] / 100,
            r["epoch"],
            r["critical batch, lower"],
            r["critical batch, upper"],
            r["status"],
            r["B_simple"],
            (r["B_simple 95% lo"], r["B_simple 95% hi"]),
            r["B_noise"],
            (r["B_noise 95% lo"], r["B_noise 95% hi"]),
            r["B_simple two-batch"],
            (r["B_simple two-batch 95% lo"], r["B_simple two-batch 95% hi"]),
        )
        for r in rows
    ]
    safe = min(c.lower for c in checkpoints)
    per_example = {b: s / b for b, s in seconds_per_step.items() if b <= safe and math.isfinite(s)}
    best = min(per_example, key=per_example.get) if per_example else cfg.batch_size
    why = (
        f"the fastest per example on this device ({1e6 * per_example[best]:.3g} µs) among the batches accepted "
        f"at every checkpoint (≤ {safe:g}: their loss after the same examples within +{100 * cfg.margin:g} % of B0's)"
        if per_example
        else "no batch above B0 was accepted at every checkpoint"
    )
    schedule = warmup_schedule([c.epoch for c in checkpoints], [c.lower for c in checkpoints], cfg.batch_size)
    claims = [{"id": c.id, "verdict": c.verdict, "why": c.why} for c in output.claims]
    return CriticalAnswer(
        str(cfg.model), str(cfg.dataset), cfg.optimizer, cfg.batch_size, cfg.margin, checkpoints,
        seconds_per_step, int(best), schedule, why, claims,
    )  # fmt: skip


def step_times(cfg, device: torch.device, data_dir: str | None, steps: int = 5) -> dict[int, float]:
    """Seconds per step of one run at each branch batch size on `device` (the engine's own step, best of 2)."""
    from ..timing import engine_steps_time

    out = {}
    for k in cfg.multipliers:
        b = cfg.batch_size * k
        spec = cfg.run(0, batch_size=b, lr=cfg.lrs[0], epochs=20, optimizer=cfg.optimizer, probes=())
        try:
            out[b] = engine_steps_time([spec], device, steps, data_dir=data_dir, repeat=2)
        except ValueError:  # fewer steps in the lr table than asked (a batch near the data's size)
            out[b] = math.nan
    return out


def reference(value: str | Callable, what: str) -> str:
    """A factory given as a function becomes its reference: `module:name`, or `file.py:name` for a script's."""
    if isinstance(value, str):
        return value
    if not callable(value) or "<" in getattr(value, "__qualname__", "<"):
        raise UsageError(f"{what} must be a reference 'package.module:factory' or a module-level function")
    module = getattr(value, "__module__", None)
    if module == "__main__":
        import __main__

        path = getattr(__main__, "__file__", None)
        if path is None:
            raise UsageError(
                f"{what}: a function defined interactively cannot be imported by the runs; put it in a file"
            )
        return f"{Path(path).resolve()}:{value.__qualname__}"
    return f"{module}:{value.__qualname__}"


def critical_batch(
    model: str | Callable,
    data: str | Callable,
    *,
    optimizer: str = "sgd",
    loss: str | Callable | None = None,
    model_args: dict[str, Any] | None = None,
    data_args: dict[str, Any] | None = None,
    profile: str = "quick",
    out: str | Path = "batchlab-results",
    device: str = "auto",
    data_dir: str | Path | None = None,
    monitor=None,
    **sets: Any,
) -> CriticalAnswer:
    """Measure the critical batch size of `model` on `data` and recommend a batch size (see the module docstring).

    `model`: a factory returning an nn.Module (a module-level function or 'package.module:factory'); `data`: one
    returning (x_train, y_train, x_test, y_test) or (train, test) Datasets; `loss`: fn(output, target) -> mean
    (default: cross-entropy for integer targets, squared error for float ones). `sets`: the study's config keys
    (batch_size, lrs, multipliers, window, checkpoints, margin, ...). Results go to the store in `out` and are
    reused by the next call."""
    from .run import execute, prepare

    overrides = {"model": reference(model, "model"), "dataset": reference(data, "data"), "optimizer": optimizer}
    if loss is not None:
        overrides["loss"] = reference(loss, "loss")
    if model_args:
        overrides["model_args"] = dict(model_args)
    if data_args:
        overrides["dataset_args"] = dict(data_args)
    overrides |= {"train_subset": None, "test_subset": None}  # the quick profile's subsets are the built-in data's
    prep = prepare(STUDY, profile=profile, overrides=overrides | sets, device=device, out=out, data_dir=data_dir)
    result = execute(prep, monitor)
    answer = answer_from(result.output, prep.config, step_times(prep.config, prep.device, prep.data_dir))
    answer.report = str(result.report)
    return answer
