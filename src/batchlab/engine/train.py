"""The lock-step loop: a group of independent runs trained together on one device.

Each step: gather every run's batch on the device by index, one batched forward and backward
(torch.func vmap over stacked parameters), per-run loss check (divergence mask), functional
optimizer update with the per-run lr read from a precomputed device table. No host
synchronisation happens inside an epoch; the probes' values are read back at each evaluation.

A run's result does not depend on its group: its init and its data order come from its own seed
(or from a given checkpoint and a given index sequence), and every kernel treats runs separately.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..datasets import Dataset
from ..errors import UsageError
from ..models import Stack
from ..probes import ProbeContext, run_probes
from .data import compute_dtype, data_order, load_for, template_model
from .fold import DEFER_ROWS, FoldedSGD, fold_blocker
from .optim import StackedOptimizer
from .schedules import epoch_plan, lr_table
from .spec import RunSpec, group_key
from .step import accumulate_grads, batch_losses

# Batches up to this size use the compiled multiply-sum layers of `stacked_mlp_forward` when a
# group has several runs (H100, batch 2: 3 runs 158 us/step vs 210 with cuBLAS; 1 run 109 vs 98.5,
# so a single run keeps cuBLAS; benchmarks/small_batch.py measures it).
MATVEC_MAX_BATCH = int(os.environ.get("BATCHLAB_MATVEC_MAX_BATCH", "4"))
FOLD_ON_CUDA = os.environ.get("BATCHLAB_FOLD_CUDA", "0") == "1"  # see GroupTrainer: the folded SGD step on CUDA


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

    @property
    def key(self) -> str:
        return self.spec.key


EpochCallback = Callable[[int, int], None]  # (runs in chunk, epochs done in this call) -> None
ChunkCallback = Callable[[list["RunResult"]], None]  # the results of a chunk, as soon as it is done
# (epoch, step, run key -> metric name -> value): each evaluation's numbers, None where not finite
MetricsCallback = Callable[[float, int, dict[str, dict]], None]
ProgressCallback = Callable[[int, float], None]  # (runs in chunk, fraction of the current epoch done)
PartialCallback = Callable[["PartialState"], None]  # an interrupted chunk's state, to keep

PROGRESS_EVERY_S = 0.2  # `on_progress` is called at most this often (a clock read per step, no device sync)
SNAPSHOT_EVERY_S = 1.0  # an epoch's end is copied to the host (for Ctrl-C) at most this often


@dataclass(eq=False)
class PartialState:
    """A chunk interrupted after `epoch` finished epochs: what its runs need to continue exactly.

    `keys`: the runs, in the chunk's order. `arrays`: stacked [R, ...] host arrays of every tensor that
    training changes (GroupTrainer.state_tensors: weights, buffers, optimizer state and step count, the
    alive and diverged flags) and the checkpoints kept so far ("checkpoint:<epoch>:param:<name>").
    `meta`: the step count, the wall time so far and the metric records so far (plain JSON).
    """

    keys: tuple[str, ...]
    epoch: int
    meta: dict
    arrays: dict[str, np.ndarray] = field(repr=False)

    def has_checkpoints(self, epochs) -> bool:
        """Whether it holds every checkpoint of `epochs` that lies before its epoch (else it cannot stand in)."""
        return all(any(k.startswith(f"checkpoint:{e}:") for k in self.arrays) for e in epochs if e <= self.epoch)


_warned_no_compiler = False


def can_compile(device: torch.device) -> bool:
    """Whether torch.compile can build kernels here: on the CPU, inductor needs a C++ compiler ($CXX, g++ or
    clang++). Without one the step runs eagerly (the same results), and a warning says so once."""
    global _warned_no_compiler
    if device.type != "cpu" or any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "c++", "clang++") if c):
        return True
    if not _warned_no_compiler:
        _warned_no_compiler = True
        warnings.warn(
            "no C++ compiler found (torch.compile needs one on the CPU): the step runs uncompiled", stacklevel=3
        )
    return False


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return device


@contextlib.contextmanager
def tf32_mode(precision: str):
    """TF32 matmuls off unless asked (results are for science); held over forward, backward and update."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def autocast_mode(precision: str, device: torch.device):
    """bf16 mixed precision for the forward pass (the loss is computed in float32)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def runs_that_fit(spec: RunSpec, data: Dataset, device: torch.device, fraction: float = 0.6) -> int:
    """How many runs of this kind fit in device memory at once (the engine chunks groups by it)."""
    base = template_model(spec, data)
    n_params = sum(p.numel() for p in base.parameters())
    width = max([data.input_dim, *spec.widths]) * (64 if spec.model.startswith("cnn") else 1)
    bytes_per = 8 if spec.precision == "float64" else 4
    max_batch = max(spec.batch_size_at(e) for e in range(max(spec.epochs, 1)))
    # params, init copy, grads, two optimizer buffers, update temporaries; activations of a step
    per_run = bytes_per * (7 * n_params + 6 * min(max_batch, data.n_train) * width * (len(spec.widths) + 2))
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return max(1, int(free * fraction // per_run))


class GroupTrainer:
    """One chunk of a group: stacked parameters, optimizer state and the loop over its steps.

    `start` (optional) gives the runs' initial weights instead of their seeds' init: {"param:<name>":
    [R, ...], "buffer:<name>": [R, ...]}. `orders` (optional) gives each run its own example order
    instead of `data_order(seed, epoch)`: per run None, an index array [n_train] used every epoch, or
    [epochs, n_train], one row per epoch.
    """

    def __init__(
        self,
        specs: list[RunSpec],
        data: Dataset,
        device: torch.device,
        graphs: bool = True,
        fused: bool | None = None,
        start: dict[str, np.ndarray] | None = None,
        orders: list | None = None,
        fold: bool | None = None,
    ):
        self.specs, self.data, self.device = specs, data, device
        # CUDA graphs: each batch shape's whole step is captured once and replayed: per-step launch overhead goes
        self.use_graphs = graphs and device.type == "cuda"
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.eager_steps: dict[int, int] = {}
        self.pool = None
        head = specs[0]
        self.precision, self.task, self.reduction = head.precision, data.task, head.loss_reduction
        self.dtype = compute_dtype(head.precision)
        base = template_model(head, data)
        if start is None:
            self.stack = Stack.from_seeds(base, head.init, [s.seed for s in specs], device, self.dtype)
        else:
            self.stack = Stack.from_params(
                base,
                {k.removeprefix("param:"): torch.as_tensor(v) for k, v in start.items() if k.startswith("param:")},
                {k.removeprefix("buffer:"): torch.as_tensor(v) for k, v in start.items() if k.startswith("buffer:")},
                device,
                self.dtype,
            )
        folds = self._folds(fold, fused, specs, base, data.task)
        if folds and device.type == "cpu":
            self.stack.pad_rows()  # the folded step's matmuls walk down the weights' columns
        self.orders = self._check_orders(orders, len(specs), data.n_train, len(epoch_plan(head, data.n_train)))
        self.init = {k: v.detach().clone() for k, v in self.stack.params.items()}
        for p in self.stack.params.values():
            p.requires_grad_(True)
        self.optimizer = StackedOptimizer(specs, self.stack.params)
        self.plan = epoch_plan(head, data.n_train)
        lrs = np.stack([lr_table(s, data.n_train) for s in specs], axis=1)  # [steps, R]
        self.lrs = torch.tensor(lrs, device=device, dtype=self.dtype)
        r = len(specs)
        self.alive = torch.ones(r, dtype=torch.bool, device=device)
        self.diverged_step = torch.full((r,), -1, dtype=torch.long, device=device)
        self.step_t = torch.zeros((), dtype=torch.long, device=device)  # global step, on device
        self.offset = torch.zeros((), dtype=torch.long, device=device)  # position in the epoch's order
        self.perm = torch.empty((r, data.n_train), dtype=torch.long, device=device)  # static: graphs read it
        self.arange = torch.arange(data.n_train, device=device)
        self.micro_batch = head.micro_batch
        self.probes, self.eval_every = head.probes, head.eval_every
        self.stop_metric, self.stop_at = head.stop_metric, head.stop_at
        self.all_stopped = False  # every run has reached its target (or diverged): the group can end
        # fused: torch.compile merges the loss and the per-step bookkeeping + optimizer update into a
        # few generated kernels (each weight read once per update instead of once per elementwise op).
        self.loss_fn, self.finish_step = self._loss, self._finish_step
        if (fused or (fused is None and device.type == "cuda")) and can_compile(device):  # None: on CUDA
            self.loss_fn = torch.compile(self._loss)
            self.finish_step = torch.compile(self._finish_step)
            self.stack.matvec_max_batch = MATVEC_MAX_BATCH if len(specs) > 1 else 0
        # plain SGD on an MLP: the update folded into the weight-gradient matmul (engine/fold.py), except for
        # the plain path (fused=False) and the tiny batches that take the multiply-sum layers. `fold=None`: on
        # the CPU, where it is measured; on CUDA only with BATCHLAB_FOLD_CUDA=1 until a GPU has timed it
        # against the graph-captured autograd step (benchmarks/fold_ablation.py)
        self.fold = None
        if folds:
            cuda = device.type == "cuda"
            self.fold = FoldedSGD(
                head.activation, len(head.widths) + 1, self.reduction, cuda, 0 if cuda else DEFER_ROWS
            )
            self.stack.deferred = self.fold
        self.fold_min_batch = MATVEC_MAX_BATCH if device.type == "cuda" else 0

    def _folds(self, fold: bool | None, fused: bool | None, specs: list[RunSpec], base, task: str) -> bool:
        """Whether this group takes the folded SGD step (`fold=None`: on the CPU, and on CUDA with
        BATCHLAB_FOLD_CUDA=1)."""
        if fold is None:
            fold = self.device.type == "cpu" or FOLD_ON_CUDA
        return bool(fold) and fused is not False and fold_blocker(specs, base, task) is None

    @staticmethod
    def _check_orders(orders, runs: int, n: int, epochs: int) -> list | None:
        if orders is None:
            return None
        if len(orders) != runs:
            raise ValueError(f"orders: one entry per run expected ({runs}), got {len(orders)}")
        out = []
        for r, order in enumerate(orders):
            if order is None:
                out.append(None)
                continue
            o = torch.as_tensor(np.asarray(order), dtype=torch.long)
            if o.dim() == 1:
                o = o.unsqueeze(0).expand(epochs, -1)
            if o.dim() != 2 or o.shape[1] != n or o.shape[0] < epochs:
                raise ValueError(f"orders[{r}]: expected [{n}] or [{epochs}, {n}] example indices, got {list(o.shape)}")
            if o.numel() and (int(o.min()) < 0 or int(o.max()) >= n):
                raise ValueError(f"orders[{r}]: example indices must lie in 0..{n - 1}")
            out.append(o)
        return out

    # --- one training step: everything is a device tensor, so the step can be graph-captured ---
    def batch_indices(self, batch_size: int) -> torch.Tensor:
        """[R, b]: each run's next batch in its order. On the CPU, where reading the position costs
        nothing, a slice instead of three index kernels."""
        if self.device.type == "cpu":
            offset = int(self.offset)
            return self.perm[:, offset : offset + batch_size]
        return self.perm.index_select(1, self.offset + self.arange[:batch_size])

    def train_step(self, batch_size: int) -> None:
        if self.fold is not None and batch_size > self.fold_min_batch:
            return self._folded_step(batch_size)
        idx = self.batch_indices(batch_size)
        losses, grads = accumulate_grads(
            self.loss_fn, idx, self.stack.params, micro_batch=self.micro_batch, reduction=self.reduction
        )
        self.finish_step(losses, grads, batch_size)

    def _loss(self, idx: torch.Tensor) -> torch.Tensor:
        """Per-run loss of each run's batch, gathered on the device."""
        autocast = torch.autocast(self.device.type, torch.bfloat16) if self.precision == "bf16" else None
        return batch_losses(
            self.stack,
            self.data.x_train[idx],
            self.data.y_train[idx],
            task=self.task,
            reduction=self.reduction,
            autocast=autocast,
        )

    def _finish_step(self, losses: torch.Tensor, grads: dict[str, torch.Tensor], batch_size: int) -> None:
        """Divergence mask, this step's lr from the table, the update, the counters."""
        lr = self._check_losses(losses)
        self.optimizer.step(self.stack.params, grads, lr, self.alive, consume_grads=True)
        self.step_t += 1
        self.offset += batch_size

    def _check_losses(self, losses: torch.Tensor) -> torch.Tensor:
        """A run whose loss is not finite stops (diverged); returns this step's lr [R] from the table."""
        finite = torch.isfinite(losses)
        self.diverged_step.copy_(torch.where(self.alive & ~finite, self.step_t, self.diverged_step))
        self.alive &= finite
        return self.lrs.index_select(0, self.step_t.view(1)).squeeze(0)  # no host sync, unlike lrs[step_t]

    def _folded_step(self, batch_size: int) -> None:
        """The plain-SGD step with the update inside the weight-gradient matmul (engine/fold.py)."""
        idx = self.batch_indices(batch_size)
        y = self.data.y_train[idx]
        params = self.stack.raw_params  # as they are: the step adds or keeps its deferred updates itself
        logits, cache = self.fold.forward(params, self.data.x_train[idx])
        if self.device.type == "cpu" and bool(self.alive.all()) and math.isfinite(logits.sum().item()):
            # every run alive and its logits finite (so its loss too), a free check on the CPU: no
            # per-run losses, no divergence bookkeeping, no masks (a dozen operations fewer per step)
            lr, mask = self.lrs[int(self.step_t)], False
        else:
            lr, mask = self._check_losses(self.fold.losses(logits, y)), True
        self.fold.backward_update(params, logits, y, cache, lr, self.alive, mask)
        self.optimizer.t += 1
        self.step_t += 1
        self.offset += batch_size

    def step(self, batch_size: int) -> None:
        if self.device.type == "cpu":  # TF32 is a CUDA setting: 2.5 us a step saved on a tiny batch
            return self.train_step(batch_size)
        with tf32_mode(self.precision):
            self._step(batch_size)

    def _step(self, batch_size: int) -> None:
        """One step, eager or as the replay of a captured CUDA graph of `train_step`.

        The first steps of each batch shape run eagerly on a side stream (the warm-up CUDA graph
        capture needs); they are real training steps. Capture records without executing, so the
        captured step is then replayed once for the current step.
        """
        if not self.use_graphs:
            return self.train_step(batch_size)
        graph = self.graphs.get(batch_size)
        if graph is None:
            done = self.eager_steps.get(batch_size, 0)
            if done < 3:
                side = torch.cuda.Stream(self.device)
                side.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(side):
                    self.train_step(batch_size)
                torch.cuda.current_stream(self.device).wait_stream(side)
                self.eager_steps[batch_size] = done + 1
                return None
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                self.train_step(batch_size)
            self.pool = graph.pool()
            self.graphs[batch_size] = graph
        graph.replay()
        return None

    def start_epoch(self, epoch: int) -> None:
        n = self.data.n_train
        given = self.orders or [None] * len(self.specs)
        order = torch.stack(
            [data_order(s.order_seed, epoch, n) if o is None else o[epoch] for s, o in zip(self.specs, given)]
        )
        self.perm.copy_(order)
        self.offset.zero_()

    def train_epoch(self, epoch: int, step0: int = 0, on_step: Callable[[int, float], None] | None = None) -> int:
        """All steps of one epoch (the last batch may be smaller, unless drop_last); returns steps.

        `on_step(global_step, fractional_epoch)` is called after each step (the host's own counter:
        no device synchronisation).
        """
        batch_size, steps = self.plan[epoch]
        self.start_epoch(epoch)
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

        def fwd(xc):
            with autocast_mode(self.precision, self.device):
                return self.stack.forward(xc, shared_input=True, bn_mode="eval")

        # a CNN keeps about 32x more activations per image than the MLP (32 channels x 28 x 28 after the
        # first convolution, against 1024 units): evaluate it in 32x smaller chunks (4 float64 CNN runs
        # peaked at 19.7 GB with the MLP's chunks)
        elements = (1 << 25) // (32 if self.specs[0].model.startswith("cnn") else 1)
        ctx = ProbeContext(
            self.stack.params,
            self.init,
            self.data,
            fwd,
            len(self.specs),
            elements,
            self.batch_grad_sq_norms,
            seed=int(np.random.SeedSequence([self.specs[0].order_seed, step, 7]).generate_state(1)[0]),
            optimizer_state=self.optimizer.state,
        )
        with tf32_mode(self.precision):
            return run_probes(self.probes, ctx)

    def batch_grad_sq_norms(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """||g_B||^2 [R] of each run's mean-loss gradient on B training examples drawn with replacement (the
        gradient-noise probe's ingredient); the weights are not changed."""
        idx = torch.randint(self.data.n_train, (len(self.specs), batch_size), generator=generator).to(self.device)
        with torch.enable_grad():
            losses = batch_losses(
                self.stack, self.data.x_train[idx], self.data.y_train[idx], task=self.task, bn_mode="eval"
            )
            grads = torch.autograd.grad(losses.sum(), list(self.stack.params.values()))
        return sum(g.flatten(1).double().pow(2).sum(1) for g in grads)

    def snapshot(self) -> list[dict[str, np.ndarray]]:
        """Every run's current weights and buffers as host arrays (a checkpoint)."""
        host = {f"param:{k}": v.detach().cpu().numpy() for k, v in self.stack.params.items()}
        host |= {f"buffer:{k}": v.detach().cpu().numpy() for k, v in self.stack.buffers.items()}
        return [{k: v[r].copy() for k, v in host.items()} for r in range(len(self.specs))]

    def stop_reached(self, record: dict) -> None:
        """Runs whose `stop_metric` reached `stop_at` stop updating (like a diverged run, but finished)."""
        if self.stop_metric not in record:
            raise ValueError(f"stop_metric {self.stop_metric!r} is not measured by the probes {self.probes}")
        value = torch.as_tensor(record[self.stop_metric], device=self.alive.device)
        self.alive &= ~(value >= self.stop_at)
        self.all_stopped = not bool(self.alive.any())

    def freeze_nonfinite(self) -> None:
        """Catch parameters that overflowed without a non-finite loss yet (checked once an epoch)."""
        ok = torch.stack([torch.isfinite(p.detach().flatten(1)).all(1) for p in self.stack.params.values()]).all(0)
        newly = self.alive & ~ok
        self.diverged_step.copy_(torch.where(newly, self.step_t - 1, self.diverged_step))
        self.alive &= ok

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
        feed = _MetricsFeed([s.key for s in self.specs], on_metrics) if on_metrics else None
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
            self.restore(resume)
            records, saved = [dict(r) for r in resume.meta["records"]], resume_checkpoints(resume)
            step, first = int(resume.meta["step"]), resume.epoch
            t0 -= float(resume.meta.get("wall_s", 0.0))
        else:
            record(0, 0)
            if 0 in checkpoints:
                saved[0] = self.snapshot()
            step, first = 0, 0
        hooked = self.eval_every or on_progress is not None or feed is not None
        copied: dict | None = None  # the last epoch end copied to the host, for an interrupt inside an epoch
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
                if on_partial is not None and (copied is None or time.perf_counter() - copied["t"] >= SNAPSHOT_EVERY_S):
                    copied = self._copy_state(*at_end)
                if on_epoch:
                    on_epoch(len(self.specs), len(self.plan) - epoch if self.all_stopped else 1)
                if self.all_stopped:
                    break
        except KeyboardInterrupt:
            if on_partial is not None:
                if at_end is not None:  # the live state is an epoch end: nothing is lost
                    copied = self._copy_state(*at_end)
                if copied is not None:
                    on_partial(self._partial_state(copied, records, saved, time.perf_counter() - t0))
            raise
        if feed is not None:
            feed.flush(wait=True)
        wall = time.perf_counter() - t0
        results = self._results(records, step, wall, keep_params)
        for e, per_run in saved.items():
            for result, arrays in zip(results, per_run):
                result.checkpoints[e] = arrays
        return results

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor that training changes: weights, buffers, optimizer state, flags, the step count."""
        out = {f"param:{k}": v for k, v in self.stack.params.items()}
        out |= {f"buffer:{k}": v for k, v in self.stack.buffers.items()}
        out |= {f"opt:{p}:{k}": v for p, st in self.optimizer.state.items() for k, v in st.items()}
        return out | {
            "opt:t": self.optimizer.t,
            "alive": self.alive,
            "diverged": self.diverged_step,
            "step": self.step_t,
        }

    def restore(self, partial: PartialState) -> None:
        """Put an interrupted chunk's kept state (the same runs, in the same order) into this trainer."""
        if partial.keys != tuple(s.key for s in self.specs):
            raise ValueError("the kept state is of other runs than this chunk's")
        live = self.state_tensors()
        for name, t in live.items():
            if name not in partial.arrays or tuple(partial.arrays[name].shape) != tuple(t.shape):
                raise ValueError(f"the kept state does not fit these runs: {name!r} is missing or of another shape")
        with torch.no_grad():
            for name, t in live.items():
                t.copy_(torch.tensor(partial.arrays[name]))

    def _copy_state(self, epochs: int, steps: int, n_records: int) -> dict:
        """The state as host copies: on CUDA into pinned memory without waiting (an event tells when done)."""
        cuda = self.device.type == "cuda"
        tensors = {k: v.detach().to("cpu", non_blocking=cuda, copy=True) for k, v in self.state_tensors().items()}
        event = None
        if cuda:
            event = torch.cuda.Event()
            event.record()
        return {
            "epochs": epochs,
            "steps": steps,
            "records": n_records,
            "tensors": tensors,
            "event": event,
            "t": time.perf_counter(),
        }

    def _partial_state(self, copied: dict, records: list[dict], saved: dict, wall: float) -> PartialState:
        if copied["event"] is not None:
            copied["event"].synchronize()
        epochs = copied["epochs"]
        arrays = {k: v.numpy() for k, v in copied["tensors"].items()}
        for e, per_run in saved.items():
            if e <= epochs:
                arrays |= {f"checkpoint:{e}:{n}": np.stack([run[n] for run in per_run]) for n in per_run[0]}
        meta = {
            "step": copied["steps"],
            "wall_s": wall,
            "records": [host_record(r) for r in records[: copied["records"]]],
        }
        return PartialState(tuple(s.key for s in self.specs), epochs, meta, arrays)

    def _results(self, records, steps, wall, keep_params) -> list[RunResult]:
        host = [host_record(rec) for rec in records]
        diverged = self.diverged_step.cpu().tolist()
        results = []
        for r, spec in enumerate(self.specs):
            metrics = [{k: (v[r] if isinstance(v, list) else v) for k, v in rec.items()} for rec in host]
            for m in metrics:
                for k, v in m.items():
                    if isinstance(v, float) and not math.isfinite(v):
                        m[k] = None
            params = {k: v[r].detach().cpu().clone() for k, v in self.stack.params.items()} if keep_params else None
            buffers = {k: v[r].detach().cpu().clone() for k, v in self.stack.buffers.items()} if keep_params else None
            results.append(
                RunResult(
                    spec,
                    "diverged" if diverged[r] >= 0 else "finished",
                    diverged[r] if diverged[r] >= 0 else None,
                    metrics,
                    wall,
                    len(self.specs),
                    steps,
                    params,
                    buffers,
                )
            )
        return results


def host_record(record: dict) -> dict:
    """An evaluation's record as plain numbers: each metric a list with one value per run."""
    return {k: (v.detach().cpu().tolist() if torch.is_tensor(v) else v) for k, v in record.items()}


def resume_checkpoints(partial: PartialState) -> dict[int, list[dict[str, np.ndarray]]]:
    """The checkpoints a kept state holds, as `run` keeps them: epoch -> per run, name -> array."""
    out: dict[int, dict[str, np.ndarray]] = {}
    for key, array in partial.arrays.items():
        if key.startswith("checkpoint:"):
            _, epoch, name = key.split(":", 2)
            out.setdefault(int(epoch), {})[name] = array
    return {
        e: [{n: a[r].copy() for n, a in arrays.items()} for r in range(len(partial.keys))] for e, arrays in out.items()
    }


def _finite(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


class _MetricsFeed:
    """Hands each evaluation's values to `on_metrics` once they are on the host. On CUDA they are copied
    without waiting and delivered when an event says they have arrived, so reporting never stalls the device."""

    def __init__(self, keys: list[str], fn: MetricsCallback):
        self.keys, self.fn, self.queue = keys, fn, []

    def add(self, record: dict) -> None:
        values = {k: v for k, v in record.items() if k not in ("epoch", "step")}
        cuda = any(torch.is_tensor(v) and v.is_cuda for v in values.values())
        host = {
            k: (v.detach().to("cpu", non_blocking=cuda, copy=True) if torch.is_tensor(v) else v)
            for k, v in values.items()
        }
        event = None
        if cuda:
            event = torch.cuda.Event()
            event.record()
        self.queue.append((record["epoch"], record["step"], host, event))
        self.flush()

    def flush(self, wait: bool = False) -> None:
        while self.queue and (wait or self.queue[0][3] is None or self.queue[0][3].query()):
            epoch, step, host, event = self.queue.pop(0)
            if event is not None:
                event.synchronize()
            values = {k: (v.tolist() if torch.is_tensor(v) else v) for k, v in host.items()}
            per_run = {
                key: {k: _finite(v[r] if isinstance(v, list) else v) for k, v in values.items()}
                for r, key in enumerate(self.keys)
            }
            self.fn(epoch, step, per_run)


class OutOfMemory(UsageError):
    """Even one run does not fit the device: one line for the user, no traceback."""


def is_out_of_memory(e: BaseException) -> bool:
    """A device allocation failure: CUDA's OutOfMemoryError, or the CPU allocator's RuntimeError."""
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    return isinstance(e, (oom, torch.cuda.OutOfMemoryError, MemoryError)) or (
        isinstance(e, RuntimeError) and "can't allocate memory" in str(e)
    )


def train_group(
    specs: list[RunSpec],
    *,
    device: str | torch.device = "auto",
    on_epoch: EpochCallback | None = None,
    max_runs: int | None = None,
    keep_params: bool = False,
    data_dir: str | None = None,
    graphs: bool = True,
    on_chunk: ChunkCallback | None = None,
    fused: bool | None = None,
    checkpoints: set[int] | frozenset[int] = frozenset(),
    start: dict[str, np.ndarray] | None = None,
    orders: list | None = None,
    on_metrics: MetricsCallback | None = None,
    on_progress: ProgressCallback | None = None,
    on_partial: PartialCallback | None = None,
    resume: tuple[PartialState, ...] | list[PartialState] = (),
) -> list[RunResult]:
    """Train runs that share a group key in lock-step, chunked to fit memory; results in input order.

    `on_chunk` receives each chunk's results as soon as they exist (the runner stores them then, so
    an interrupted group keeps its finished chunks). `graphs=False, fused=False` is the plain eager
    path (cuBLAS matmuls, one kernel per elementwise op); `fused=None` compiles on CUDA only.
    `checkpoints`: epochs after which every run's weights are kept (0: the init). `start` and
    `orders`: given initial weights ([R, ...] arrays) and example orders, as for GroupTrainer.
    `on_metrics(epoch, step, {run key: {metric: value}})` hears every evaluation; `on_progress` and
    `on_partial`: see `GroupTrainer.run`. `resume`: states kept by `on_partial`; a chunk of exactly
    those runs is trained first and continues where it stopped.
    """
    if not specs:
        return []
    keys = {group_key(s) for s in specs}
    if len(keys) != 1:
        raise ValueError("train_group: runs differ in fields that must be shared (model, data, batch schedule, ...)")
    device = resolve_device(device)
    data = load_for(specs[0], device, data_dir)
    chunk = min(max_runs or len(specs), runs_that_fit(specs[0], data, device))
    index = {s.key: i for i, s in enumerate(specs)}
    resumed: list[tuple[list[int], PartialState]] = []  # (run indices, kept state): trained first, as they were
    taken: set[int] = set()
    for partial in resume:
        idx = [index.get(k, -1) for k in partial.keys]
        if -1 not in idx and not taken & set(idx) and partial.has_checkpoints(checkpoints):
            resumed.append((idx, partial))
            taken |= set(idx)
    rest = [i for i in range(len(specs)) if i not in taken]
    results: list[RunResult | None] = [None] * len(specs)
    while resumed or rest:
        idx, partial = resumed[0] if resumed else (rest[:chunk], None)
        part = [specs[i] for i in idx]
        part_start = None if start is None else {k: np.asarray(v)[idx] for k, v in start.items()}
        part_orders = None if orders is None else [orders[i] for i in idx]
        try:
            trainer = GroupTrainer(part, data, device, graphs, fused, part_start, part_orders)
            done = trainer.run(
                on_epoch,
                keep_params,
                checkpoints,
                on_metrics=on_metrics,
                on_progress=on_progress,
                on_partial=on_partial,
                resume=partial,
            )
        except (RuntimeError, MemoryError) as e:
            if not is_out_of_memory(e):
                raise
            del e  # the traceback holds the failed chunk's tensors
            if partial is not None:  # the interrupted chunk does not fit any more: its runs start again
                resumed.pop(0)
                rest = sorted(rest + idx)
            elif chunk == 1:
                s = part[0]
                raise OutOfMemory(
                    f"out of memory on {device} for a single run ({s.model} {list(s.widths)}, batch "
                    f"{s.batch_size}, {s.precision}): use a smaller batch_size or model, micro_batch, or another device"
                ) from None
            else:
                chunk = max(1, chunk // 2)  # the estimate was optimistic: halve and retry this chunk
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        if on_chunk:
            on_chunk(done)
        for i, result in zip(idx, done):
            results[i] = result
        if partial is not None:
            resumed.pop(0)
        else:
            rest = rest[len(idx) :]
    return results
