"""The lock-step loop: a chunk of a group of independent runs trained together on one device.

Each epoch: every run's example order, then its steps, each taken by the group's step path (engine/paths,
chosen once by `choose_path`) on the group's device state (engine/state.py); the evaluations at the runs'
cadence, a check for weights that overflowed, the checkpoints asked for. No host synchronisation happens
inside an epoch on CUDA; the probes' values are read back after each evaluation without stalling the device.

A run's result does not depend on its group: its init and its data order come from its own seed
(or from a given checkpoint and a given index sequence), a chunk's runs take one step path (engine/groups.py
splits a group by path), and every kernel treats runs separately; on the CPU bit for bit in chunks of at
least two runs (README, "Float32 and chaos").
Chunking a group to fit the device is engine/groups.py's.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..datasets import Dataset
from ..models import activation_elements, model_traits
from ..probes import ProbeContext, run_probes
from .curvature import StackCurvature
from .device import CudaGraphs, autocast_mode, tf32_mode
from .feed import MetricsCallback, MetricsFeed
from .paths import choose_path
from .spec import RunSpec
from .state import GroupState, HostCopy, PartialState, host_record, resume_checkpoints
from .step import batch_losses


@dataclass
class RunResult:
    """What one run produced: status, metrics at each evaluation, timing, and the weights if asked."""

    spec: RunSpec
    status: str  # "finished" | "diverged"
    diverged_step: int | None
    metrics: list[dict]  # one dict per evaluation: epoch, step, and metric name -> value
    wall_s: float  # wall time of the group chunk this run trained in
    group_size: int
    steps: int
    params: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    buffers: dict[str, torch.Tensor] | None = field(default=None, repr=False)  # e.g. BatchNorm running stats
    # epoch -> the run's weights after that epoch (0: at init), as "param:<name>"/"buffer:<name>" arrays
    checkpoints: dict[int, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)
    env: dict = field(default_factory=dict)  # where it was computed (set by the executor)
    step_path: str = ""  # which arithmetic computed its steps (engine/paths), and why it was chosen
    step_path_reason: str = ""

    @property
    def key(self) -> str:
        return self.spec.key


EpochCallback = Callable[[int, int], None]  # (runs in chunk, epochs done in this call) -> None
ChunkCallback = Callable[[list["RunResult"]], None]  # the results of a chunk, as soon as it is done
ProgressCallback = Callable[[int, float], None]  # (runs in chunk, fraction of the current epoch done)
PartialCallback = Callable[[PartialState], None]  # an interrupted chunk's state, to keep

PROGRESS_EVERY_S = 0.2  # `on_progress` is called at most this often (a clock read per step, no device sync)
SNAPSHOT_EVERY_S = 1.0  # an epoch's end is copied to the host (for Ctrl-C) at most this often


class GroupTrainer:
    """One chunk of a group: its device state, its step path and the loop over its epochs.

    `path`: the step path asked for ("auto", "autograd", "compiled" or "folded"; see `choose_path`).
    `start` and `orders`: given initial weights and example orders, as for GroupState.
    """

    def __init__(
        self,
        specs: list[RunSpec],
        data: Dataset,
        device: torch.device,
        path: str = "auto",
        start: dict[str, np.ndarray] | None = None,
        orders: list | None = None,
    ):
        self.specs, self.data, self.device = specs, data, device
        path_class, self.path_reason = choose_path(specs, device, path, data.task)
        self.state = GroupState(specs, data, device, start, orders)
        self.path = path_class(self.state)
        self.graphs = CudaGraphs(self.path.step, device) if self.path.graphs and device.type == "cuda" else None
        head = specs[0]
        self.precision, self.plan = head.precision, self.state.plan
        self.probes, self.eval_every = head.probes, head.eval_every
        self.stop_metric, self.stop_at = head.stop_metric, head.stop_at
        self.all_stopped = False  # every run has reached its target (or diverged): the group can end
        self.probe_memory: dict = {}  # what probes keep between evaluations (warm starts, fixed subsets)
        # an evaluation keeps runs x examples x 1024 units below 2^25 elements, fewer for bigger activations
        self.eval_elements = (1 << 25) // model_traits(head.model).eval_activations
        if head.user_model:  # an evaluation's chunk from the activations measured on one example
            base = self.state.stack.module(0).to(self.state.dtype)  # only its activations are counted
            per_example = activation_elements(base, data.x_train[:1])
            self.eval_elements = max(1, (1 << 25) // max(1, -(-per_example // 1024)))

    def step(self, batch_size: int) -> None:
        if self.device.type == "cpu":  # TF32 is a CUDA setting: 2.5 us a step saved on a tiny batch
            return self.path.step(batch_size)
        with tf32_mode(self.precision):
            if self.graphs is not None:
                self.graphs(batch_size)
            else:
                self.path.step(batch_size)
        return None

    def train_epoch(self, epoch: int, step0: int = 0, on_step: Callable[[int, float], None] | None = None) -> int:
        """All steps of one epoch (the last batch may be smaller, unless drop_last); returns steps.

        `on_step(global_step, fractional_epoch)` is called after each step (the host's own counter:
        no device synchronisation).
        """
        batch_size, steps = self.plan[epoch]
        self.state.start_epoch(epoch)
        for k in range(steps):
            self.step(min(batch_size, self.data.n_train - k * batch_size))
            if on_step is not None:
                on_step(step0 + k + 1, epoch + (k + 1) / steps)
                if self.all_stopped:
                    return k + 1
        return steps

    @torch.no_grad()
    def measure(self, step: int = 0) -> dict[str, torch.Tensor]:
        """The runs' probes (by default: train and test loss/accuracy, distances and cosines), per run."""
        if not self.probes:
            return {}
        self.path.flush()

        def fwd(xc):
            with autocast_mode(self.precision, self.device):
                return self.state.stack.forward(xc, shared_input=True, bn_mode="eval")

        ctx = ProbeContext(
            self.state.stack.params,
            self.state.init,
            self.data,
            fwd,
            len(self.specs),
            self.eval_elements,
            self.batch_grad_sq_norms,
            seeds=tuple(int(np.random.SeedSequence([s.order_seed, step, 7]).generate_state(1)[0]) for s in self.specs),
            optimizer_state=self.state.optimizer.state,
            loss_fn=self.state.loss_fn,
            step=step,
            batch_size=self.batch_size_at_step(step),
            curvature=StackCurvature(self.state.stack, self.data.task, self.state.loss_fn),
            optimizers=tuple(s.optimizer for s in self.specs),
            optimizer_hp=self.state.optimizer.hp,
            optimizer_step=self.state.optimizer.t,
            memory=self.probe_memory,
        )
        with tf32_mode(self.precision):
            return run_probes(self.probes, ctx)

    def batch_size_at_step(self, step: int) -> int:
        """The batch size of the epoch that the `step`-th step belongs to (the first epoch's at step 0; 0 when
        there are no epochs)."""
        if not self.plan:
            return 0
        done = 0
        for batch_size, steps in self.plan:
            done += steps
            if step <= done:
                return batch_size
        return self.plan[-1][0]

    def batch_grad_sq_norms(self, batch_size: int, generators: list[torch.Generator]) -> torch.Tensor:
        """||g_B||^2 [R] of each run's mean-loss gradient on B training examples drawn with replacement, run r's by
        generators[r] (the gradient-noise probe's ingredient); the weights are not changed."""
        stack = self.state.stack
        idx = torch.stack([torch.randint(self.data.n_train, (batch_size,), generator=g) for g in generators])
        idx = idx.to(self.device)
        with torch.enable_grad():
            losses = batch_losses(
                stack,
                self.data.x_train[idx],
                self.data.y_train[idx],
                task=self.data.task,
                bn_mode="eval",
                loss_fn=self.state.loss_fn,
            )
            grads = torch.autograd.grad(losses.sum(), list(stack.params.values()))
        return sum(g.flatten(1).double().pow(2).sum(1) for g in grads)

    def snapshot(self) -> list[dict[str, np.ndarray]]:
        """Every run's current weights and buffers as host arrays (a checkpoint)."""
        self.path.flush()
        stack = self.state.stack
        host = {f"param:{k}": v.detach().cpu().numpy() for k, v in stack.params.items()}
        host |= {f"buffer:{k}": v.detach().cpu().numpy() for k, v in stack.buffers.items()}
        return [{k: v[r].copy() for k, v in host.items()} for r in range(len(self.specs))]

    def host_copy(self, epochs: int, steps: int, n_records: int) -> HostCopy:
        """The whole state on the host (for an interrupt), the step path's pending updates included."""
        self.path.flush()
        return self.state.host_copy(epochs, steps, n_records)

    def stop_reached(self, record: dict) -> None:
        """Runs whose `stop_metric` reached `stop_at` stop updating (like a diverged run, but finished)."""
        if self.stop_metric not in record:
            raise ValueError(f"stop_metric {self.stop_metric!r} is not measured by the probes {self.probes}")
        value = torch.as_tensor(record[self.stop_metric], device=self.state.alive.device)
        self.state.alive &= ~(value >= self.stop_at)
        self.all_stopped = not bool(self.state.alive.any())

    def freeze_nonfinite(self) -> None:
        """Catch parameters that overflowed without a non-finite loss yet (checked once an epoch)."""
        self.path.flush()
        s = self.state
        ok = torch.stack([torch.isfinite(p.detach().flatten(1)).all(1) for p in s.stack.params.values()]).all(0)
        newly = s.alive & ~ok
        s.diverged_step.copy_(torch.where(newly, s.step_t - 1, s.diverged_step))
        s.alive &= ok

    def run(
        self,
        on_epoch: EpochCallback | None = None,
        keep_params: bool = False,
        checkpoints: set[int] | frozenset[int] = frozenset(),
        *,
        on_metrics: MetricsCallback | None = None,
        on_progress: ProgressCallback | None = None,
        on_partial: PartialCallback | None = None,
        resume: PartialState | None = None,
    ) -> list[RunResult]:
        """Train every epoch, evaluating at the runs' cadence; keep the weights at `checkpoints` epochs.

        `on_metrics` hears each evaluation's values (read back without stalling the device), `on_progress`
        the position inside the epoch, a few times a second. Interrupted (KeyboardInterrupt), the chunk's
        state at the end of its last finished epoch goes to `on_partial` (the end of the current epoch if
        the interrupt comes there, else the last one copied to the host: they are copied at most every
        SNAPSHOT_EVERY_S); `resume` continues from such a state, to the numbers of an uninterrupted run.
        """
        t0 = time.perf_counter()
        records: list[dict] = []
        saved: dict[int, list[dict[str, np.ndarray]]] = {}
        feed = MetricsFeed([s.key for s in self.specs], on_metrics) if on_metrics else None
        last_progress = [t0]

        def record(step: int, epoch: float) -> None:
            if self.probes and (not records or records[-1]["step"] != step):
                records.append({"epoch": epoch, "step": step, **self.measure(step)})
                if self.stop_metric is not None:
                    self.stop_reached(records[-1])
                if feed is not None:
                    feed.add(records[-1])

        def after_step(step: int, epoch: float) -> None:
            if self.eval_every and step % self.eval_every == 0:
                record(step, epoch)
            now = time.perf_counter()
            if now - last_progress[0] >= PROGRESS_EVERY_S:
                last_progress[0] = now
                if feed is not None:
                    feed.flush()
                if on_progress is not None:
                    on_progress(len(self.specs), epoch - math.ceil(epoch) + 1)  # (k + 1) / steps of this epoch

        if resume is not None:
            self.state.restore(resume)
            records, saved = [dict(r) for r in resume.meta["records"]], resume_checkpoints(resume)
            step, first = int(resume.meta["step"]), resume.epoch
            t0 -= float(resume.meta.get("wall_s", 0.0))
        else:
            record(0, 0)
            if 0 in checkpoints:
                saved[0] = self.snapshot()
            step, first = 0, 0
        hooked = self.eval_every or on_progress is not None or feed is not None
        copied: HostCopy | None = None  # the last epoch end copied to the host, for an interrupt inside an epoch
        at_end: tuple[int, int, int] | None = None  # (epochs, steps, records) when the live state is an epoch end
        try:
            for epoch in range(first, len(self.plan)):
                at_end = None
                step += self.train_epoch(epoch, step, after_step if hooked else None)
                self.freeze_nonfinite()
                if not self.eval_every or epoch == len(self.plan) - 1:
                    record(step, epoch + 1)
                if epoch + 1 in checkpoints:
                    saved[epoch + 1] = self.snapshot()
                at_end = (epoch + 1, step, len(records))
                if on_partial is not None and (copied is None or time.perf_counter() - copied.t >= SNAPSHOT_EVERY_S):
                    copied = self.host_copy(*at_end)
                if on_epoch:
                    on_epoch(len(self.specs), len(self.plan) - epoch if self.all_stopped else 1)
                if self.all_stopped:  # every run stopped at its target: the later checkpoints are these weights
                    later = [e for e in checkpoints if e > epoch + 1 and e <= len(self.plan)]
                    if later:
                        now = saved[epoch + 1] if epoch + 1 in saved else self.snapshot()
                        saved |= {e: now for e in later}
                    break
        except KeyboardInterrupt:
            if on_partial is not None:
                if at_end is not None:  # the live state is an epoch end: nothing is lost
                    copied = self.host_copy(*at_end)
                if copied is not None:
                    keys = tuple(s.key for s in self.specs)
                    on_partial(copied.partial(keys, records, saved, time.perf_counter() - t0))
            raise
        if feed is not None:
            feed.flush(wait=True)
        results = self.results(records, step, time.perf_counter() - t0, keep_params)
        for e, per_run in saved.items():
            for result, arrays in zip(results, per_run):
                result.checkpoints[e] = arrays
        return results

    def results(self, records: list[dict], steps: int, wall: float, keep_params: bool) -> list[RunResult]:
        """Each run's result: its status, its metrics (non-finite values as None), its weights if asked."""
        self.path.flush()
        host = [host_record(rec) for rec in records]
        diverged = self.state.diverged_step.cpu().tolist()
        stack = self.state.stack
        out = []
        for r, spec in enumerate(self.specs):
            metrics = [{k: (v[r] if isinstance(v, list) else v) for k, v in rec.items()} for rec in host]
            for m in metrics:
                for k, v in m.items():
                    if isinstance(v, float) and not math.isfinite(v):
                        m[k] = None
            params = {k: v[r].detach().cpu().clone() for k, v in stack.params.items()} if keep_params else None
            buffers = {k: v[r].detach().cpu().clone() for k, v in stack.buffers.items()} if keep_params else None
            status, at = ("diverged", diverged[r]) if diverged[r] >= 0 else ("finished", None)
            out.append(
                RunResult(
                    spec,
                    status,
                    at,
                    metrics,
                    wall,
                    len(self.specs),
                    steps,
                    params,
                    buffers,
                    step_path=self.path.name,
                    step_path_reason=self.path_reason,
                )
            )
        return out
