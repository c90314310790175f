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
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..datasets import Dataset
from ..errors import UsageError
from ..models import Stack
from ..probes import ProbeContext, run_probes
from .data import compute_dtype, data_order, load_for, template_model
from .optim import StackedOptimizer
from .schedules import epoch_plan, lr_table
from .spec import RunSpec, group_key
from .step import accumulate_grads, batch_losses

# Batches up to this size use the compiled multiply-sum layers of `stacked_mlp_forward` when a
# group has several runs (H100, batch 2: 3 runs 158 us/step vs 210 with cuBLAS; 1 run 109 vs 98.5,
# so a single run keeps cuBLAS; benchmarks/small_batch.py measures it).
MATVEC_MAX_BATCH = int(os.environ.get("BATCHLAB_MATVEC_MAX_BATCH", "4"))


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
        if fused or (fused is None and device.type == "cuda"):  # None: on CUDA, where it pays
            self.loss_fn = torch.compile(self._loss)
            self.finish_step = torch.compile(self._finish_step)
            self.stack.matvec_max_batch = MATVEC_MAX_BATCH if len(specs) > 1 else 0

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
    def train_step(self, batch_size: int) -> None:
        idx = self.perm.index_select(1, self.offset + self.arange[:batch_size])  # [R, b]: each run's batch
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
        finite = torch.isfinite(losses)
        self.diverged_step.copy_(torch.where(self.alive & ~finite, self.step_t, self.diverged_step))
        self.alive &= finite
        lr = self.lrs.index_select(0, self.step_t.view(1)).squeeze(0)  # no host sync, unlike lrs[step_t]
        self.optimizer.step(self.stack.params, grads, lr, self.alive, consume_grads=True)
        self.step_t += 1
        self.offset += batch_size

    def step(self, batch_size: int) -> None:
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
    ) -> list[RunResult]:
        """Train every epoch, evaluating at the runs' cadence; keep the weights at `checkpoints` epochs."""
        t0 = time.perf_counter()
        records: list[dict] = []
        saved: dict[int, list[dict[str, np.ndarray]]] = {}

        def record(step: int, epoch: float) -> None:
            if self.probes and (not records or records[-1]["step"] != step):
                records.append({"epoch": epoch, "step": step, **self.measure(step)})
                if self.stop_metric is not None:
                    self.stop_reached(records[-1])

        def every_n_steps(step: int, epoch: float) -> None:
            if step % self.eval_every == 0:
                record(step, epoch)

        record(0, 0)
        if 0 in checkpoints:
            saved[0] = self.snapshot()
        step = 0
        for epoch in range(len(self.plan)):
            step += self.train_epoch(epoch, step, every_n_steps if self.eval_every else None)
            self.freeze_nonfinite()
            if not self.eval_every or epoch == len(self.plan) - 1:
                record(step, epoch + 1)
            if epoch + 1 in checkpoints:
                saved[epoch + 1] = self.snapshot()
            if on_epoch:
                on_epoch(len(self.specs), len(self.plan) - epoch if self.all_stopped else 1)
            if self.all_stopped:
                break
        wall = time.perf_counter() - t0
        results = self._results(records, step, wall, keep_params)
        for e, per_run in saved.items():
            for result, arrays in zip(results, per_run):
                result.checkpoints[e] = arrays
        return results

    def _results(self, records, steps, wall, keep_params) -> list[RunResult]:
        host = [
            {k: (v.detach().cpu().tolist() if torch.is_tensor(v) else v) for k, v in rec.items()} for rec in records
        ]
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
) -> list[RunResult]:
    """Train runs that share a group key in lock-step, chunked to fit memory; results in input order.

    `on_chunk` receives each chunk's results as soon as they exist (the runner stores them then, so
    an interrupted group keeps its finished chunks). `graphs=False, fused=False` is the plain eager
    path (cuBLAS matmuls, one kernel per elementwise op); `fused=None` compiles on CUDA only.
    `checkpoints`: epochs after which every run's weights are kept (0: the init). `start` and
    `orders`: given initial weights ([R, ...] arrays) and example orders, as for GroupTrainer.
    """
    if not specs:
        return []
    keys = {group_key(s) for s in specs}
    if len(keys) != 1:
        raise ValueError("train_group: runs differ in fields that must be shared (model, data, batch schedule, ...)")
    device = resolve_device(device)
    data = load_for(specs[0], device, data_dir)
    chunk = min(max_runs or len(specs), runs_that_fit(specs[0], data, device))
    results: list[RunResult] = []
    begin = 0
    while begin < len(specs):
        part = specs[begin : begin + chunk]
        part_start = None if start is None else {k: np.asarray(v)[begin : begin + chunk] for k, v in start.items()}
        part_orders = None if orders is None else orders[begin : begin + chunk]
        try:
            trainer = GroupTrainer(part, data, device, graphs, fused, part_start, part_orders)
            done = trainer.run(on_epoch, keep_params, checkpoints)
        except (RuntimeError, MemoryError) as e:
            if not is_out_of_memory(e):
                raise
            del e  # the traceback holds the failed chunk's tensors
            if chunk == 1:
                s = part[0]
                raise OutOfMemory(
                    f"out of memory on {device} for a single run ({s.model} {list(s.widths)}, batch "
                    f"{s.batch_size}, {s.precision}): use a smaller batch_size or model, micro_batch, or another device"
                ) from None
            chunk = max(1, chunk // 2)  # the estimate was optimistic: halve and retry this chunk
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        if on_chunk:
            on_chunk(done)
        results += done
        begin += len(part)
    return results
