"""Tasks of the equivalence studies: is one step on a batch the same as averaging single-example steps?

Three kinds, each a computation from a seeded initialisation (no checkpoint needed):

- `one-step-equivalence`: from the same weights theta0 and one fixed batch, compare
  A  one optimizer step on the whole batch (model in train mode),
  B  one fresh single-example step per example, theta_i, then the average of the theta_i,
  C  the mean of the per-example gradients, applied as one fresh step.
  With `bn_stats_batches` > 0, every approach starts from BatchNorm running statistics estimated at
  theta0 from that many further training batches, rather than the initial (0, 1).
  B and C are vectorised: the examples are the runs of a stack of copies of theta0 (the engine's
  per-example path), each copy takes its own example and one `StackedOptimizer` step with fresh
  state, and the copies are summed chunk by chunk to bound memory.
- `multistep-equivalence`: K momentum steps on K fixed batches (A) against sequential
  single-example momentum steps (B), averaged per-example gradients applied as plain SGD (C) and
  as momentum SGD with a persistent state (D).
- `accumulation`: the engine's own training loop (`train_group`) with `micro_batch` against the
  direct batch, same init and data order, returning how far the final weights are apart.

Differences are measured in float64 whatever the compute precision, per parameter tensor and over
all parameters together: max |A-X|, mean |A-X|, the relative difference ||A-X|| / ||A-theta0||
(the difference measured against the size of the update, the scale that matters) and
cos(A-theta0, X-theta0). BatchNorm's running buffers are compared on their own.

The three approaches of one step are in `equivalence_steps`, the measures of difference in
`equivalence_metrics`; this module holds the task kinds, their arguments and their shared setup.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from ..bounds import BatchSize, Count, Examples, Real, Steps
from ..engine import RunSpec, train_group
from ..engine.data import compute_dtype, load_for
from ..engine.optim import StackedOptimizer
from ..engine.step import accumulate_grads, batch_losses, single_example_stack
from ..models import build_model, init_params
from . import TaskContext, TaskError, TaskOutput, register_task
from .equivalence_metrics import compare, eval_metrics, norm, ratio, signlike_fraction
from .equivalence_steps import Tensors, batch_step, estimate_bn_statistics, mean_grad_step, single_example_steps

# The optimizers of the equivalence studies, each as the RunSpec fields of its update rule. LARS (accumulation
# only): the lars study's middle lr with its trust coefficient (0.001, RunSpec's default) and a weight decay,
# so every term of the trust ratio eta ||w|| / (||g|| + wd ||w||) is exercised.
OPTIMIZER_SETTINGS: dict[str, dict] = {
    "sgd": {"optimizer": "sgd", "lr": 0.1},
    "momentum": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9},
    "adam": {"optimizer": "adam", "lr": 1e-3},
    "weight_decay": {"optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-4},
    "lars": {"optimizer": "lars", "lr": 10.0, "momentum": 0.9, "weight_decay": 5e-4},
}
OptimizerName = Literal["sgd", "momentum", "adam", "weight_decay"]
AccumulationOptimizer = Literal["sgd", "momentum", "adam", "lars"]
Precision = Literal["float32", "float64"]
ImageDataset = Literal["mnist", "fashion-mnist"]
BN1D_SINGLE = "bn1d-single-example"


def optimizer_spec(name: str, **fields) -> RunSpec:
    """The RunSpec that carries optimizer `name`'s hyperparameters (what StackedOptimizer reads)."""
    return RunSpec(**(OPTIMIZER_SETTINGS[name] | fields))


def has_batchnorm1d(base: nn.Module) -> bool:
    return any(isinstance(m, nn.BatchNorm1d) for m in base.modules())


# ------------------------------------------------------------------------------------------------
# shared setup


def data_spec(
    model: str, precision: str, train_subset: int | None, test_subset: int | None, dataset: str = "mnist"
) -> RunSpec:
    """The data a task uses, as the RunSpec `load_for` reads: the images in [0, 1] (not standardised)."""
    return RunSpec(
        dataset=dataset,
        model=model,
        normalize=False,
        train_subset=train_subset,
        test_subset=test_subset,
        precision=precision,
        batch_size=1,  # the data only: no batch is drawn from this spec
    )


def initial_weights(base: nn.Module, seed: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensors, Tensors]:
    """theta0: PyTorch's default init from `seed` (drawn in float32, then cast), and fresh BatchNorm buffers."""
    params = {k: v.to(device, dtype) for k, v in init_params(base, "torch", seed).items()}
    buffers = {
        k: b.detach().to(device, dtype if b.is_floating_point() else None).clone() for k, b in base.named_buffers()
    }
    return params, buffers


def draw(n_pool: int, count: int, seed: int) -> torch.Tensor:
    """`count` distinct example indices out of `n_pool`, seeded (a prefix of one permutation, so a larger
    count extends a smaller one)."""
    if count > n_pool:
        raise TaskError("too-few-examples", f"{count} examples asked for, but the training pool has only {n_pool}")
    return torch.randperm(n_pool, generator=torch.Generator().manual_seed(seed))[:count]


# fields added after tasks were first stored, with the value every earlier task had
LATER_FIELDS = {"dataset": "mnist", "bn_stats_batches": 0}


def task_args(args: BaseModel) -> dict:
    """A task's arguments as its TaskSpec stores them: every field, less a LATER_FIELDS field at its earlier
    value, so the keys of the tasks stored before the field existed stay the same."""
    out = args.model_dump(mode="json")
    return {k: v for k, v in out.items() if k not in LATER_FIELDS or v != LATER_FIELDS[k]}


class _DataArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    dataset: ImageDataset = Field("mnist", description="The images the batches are drawn from.")
    precision: Precision = Field("float64", description="Compute precision of every approach.")
    train_subset: Examples | None = Field(
        None, ge=1, description="The pool of training examples batches are drawn from (the first N; None: all 60k)."
    )
    test_subset: Examples | None = Field(None, ge=1, description="Evaluate on the first N test examples (None: all).")


# ------------------------------------------------------------------------------------------------
# one-step-equivalence


class OneStepArgs(_DataArgs):
    model: Literal["cnn", "cnn-bn"] = Field("cnn", description="The CNN, with or without BatchNorm.")
    optimizer: OptimizerName = Field(
        "sgd",
        description="sgd (lr 0.1), momentum (0.9, lr 0.1), adam (lr 1e-3) or "
        "weight_decay (SGD, lr 0.1, decay 5e-4), fresh state each time.",
    )
    batch_size: BatchSize = Field(256, ge=1, description="Examples in the fixed batch (drawn by the task's seed).")
    bn_single: Literal["eval", "train"] = Field(
        "eval",
        description="BatchNorm in single-example passes: running statistics (eval) or the example's own (train).",
    )
    bn_stats_batches: Count = Field(
        0,
        ge=0,
        description="cnn-bn, bn_single=eval: 0 keeps the initial running statistics (mean 0, variance 1); N > 0 "
        "estimates them at theta0 from the N training batches of batch_size that follow the batch in the draw.",
    )
    chunk_size: Count = Field(32, ge=1, description="Examples per vectorised chunk (bounds memory).")

    @model_validator(mode="after")
    def _stats(self):
        if self.bn_stats_batches and (self.model != "cnn-bn" or self.bn_single != "eval"):
            raise ValueError("bn_stats_batches applies to cnn-bn with bn_single=eval only")
        return self


@register_task("one-step-equivalence", OneStepArgs)
def one_step_equivalence(args: OneStepArgs, ctx: TaskContext) -> TaskOutput:
    """One step on a batch (A) vs the average of single-example steps (B) vs the mean per-example gradient (C).

    Scalars: `AB_*` and `AC_*` from `compare` (per tensor and overall), `AB_rel_updates` (B averaged as
    updates, not weights: what is left without the rounding of averaging big weights), `buf_AB_*` and
    `buf_AC_*` for BatchNorm's running buffers, the sign-like fractions of A and of the single-example
    steps, ||theta0|| and ||A - theta0||, and test loss/accuracy of theta0, A, B and C. With
    `bn_stats_batches`, theta0's running statistics are estimated from the examples drawn after the batch
    (`estimate_bn_statistics`; their indices are the array `bn_stats_examples`).
    """
    base = build_model(args.model)
    if args.bn_single == "train" and has_batchnorm1d(base):
        raise TaskError(
            BN1D_SINGLE,
            "BatchNorm1d cannot normalise one example by its own statistics (one value "
            "per channel has no variance); use bn_single=eval for single-example passes",
        )
    dtype = compute_dtype(args.precision)
    data = load_for(
        data_spec(args.model, args.precision, args.train_subset, args.test_subset, args.dataset),
        ctx.device,
        ctx.data_dir,
    )
    drawn = draw(data.n_train, args.batch_size * (1 + args.bn_stats_batches), ctx.spec.seed).to(ctx.device)
    idx, stats_idx = drawn[: args.batch_size], drawn[args.batch_size :]  # the batch is the same whatever N
    x, y = data.x_train[idx], data.y_train[idx]
    params0, buffers0 = initial_weights(base, ctx.spec.seed, ctx.device, dtype)
    if args.bn_stats_batches:
        buffers0 = estimate_bn_statistics(base, params0, buffers0, data.x_train[stats_idx], args.batch_size)
    spec = optimizer_spec(args.optimizer)
    a_params, a_buffers = batch_step(base, params0, buffers0 or None, x, y, spec)
    single = single_example_steps(
        base, params0, buffers0 or None, x, y, spec, bn_mode=args.bn_single, chunk_size=args.chunk_size
    )
    c_params = mean_grad_step(params0, single.mean_grad, spec)
    c_buffers = single.buffers
    scalars = compare(a_params, single.params, params0, "AB") | compare(a_params, c_params, params0, "AC")
    scalars["AB_rel_updates"] = ratio(norm(a_params, single.params_from_updates), norm(a_params, params0))
    scalars["BC_rel"] = ratio(norm(single.params, c_params), norm(a_params, params0))
    if buffers0:
        float_buffers = {k: v for k, v in a_buffers.items() if v.is_floating_point()}
        scalars |= compare(float_buffers, single.buffers, buffers0, "buf_AB")
        scalars |= compare(float_buffers, c_buffers, buffers0, "buf_AC")
    scalars |= {
        "theta0_norm": norm(params0),
        "update_norm_A": norm(a_params, params0),
        "update_norm_B": norm(single.params, params0),
        "update_norm_C": norm(c_params, params0),
        "signlike_A": signlike_fraction(a_params, params0, spec.lr),
        "signlike_B": signlike_fraction(single.params, params0, spec.lr),
        "signlike_single": single.signlike_single,
        "lr": spec.lr,
        "eps": float(torch.finfo(dtype).eps),
        "examples": float(x.shape[0]),
        "bn_stats_examples": float(stats_idx.numel()),
    }
    scalars |= eval_metrics(
        base,
        {
            "theta0": (params0, buffers0),
            "A": (a_params, a_buffers),
            "B": (single.params, single.buffers),
            "C": (c_params, c_buffers),
        },
        data,
    )
    arrays = {"examples": idx.cpu().numpy().astype(np.int64)}
    if args.bn_stats_batches:
        arrays["bn_stats_examples"] = stats_idx.cpu().numpy().astype(np.int64)
    return TaskOutput(scalars=scalars, arrays=arrays)


# ------------------------------------------------------------------------------------------------
# multistep-equivalence


class MultistepArgs(_DataArgs):
    model: Literal["cnn"] = Field("cnn", description="The CNN without BatchNorm.")
    k: Steps = Field(2, ge=1, description="Number of fixed batches (steps of A).")
    batch_size: BatchSize = Field(64, ge=1, description="Examples per batch.")
    lr: Real = Field(0.01, gt=0, description="Learning rate of every variant.")
    momentum: float = Field(0.9, ge=0, lt=1, description="Momentum of A, B and D (C has none).")
    chunk_size: Count = Field(64, ge=1, description="Examples per vectorised chunk of per-example gradients.")


def _momentum_spec(lr: float, momentum: float) -> RunSpec:
    return RunSpec(optimizer="sgd", lr=lr, momentum=momentum)


class Trajectory:
    """One model (a stack of one run) with one persistent optimizer: the state carries across steps."""

    def __init__(self, base: nn.Module, params0: Tensors, spec: RunSpec):
        self.base, self.spec = base, spec
        self.stack = single_example_stack(base, params0, None, 1)
        self.opt = StackedOptimizer([spec], self.stack.params)
        ref = next(iter(params0.values()))
        self.lr = torch.full((1,), spec.lr, dtype=ref.dtype, device=ref.device)
        self.alive = torch.ones(1, dtype=torch.bool, device=ref.device)

    def step_on(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One step on the batch (x, y) (mean loss)."""
        stack = self.stack
        _, grads = accumulate_grads(lambda xb: batch_losses(stack, xb, y.unsqueeze(0)), x.unsqueeze(0), stack.params)
        self.opt.step(stack.params, grads, self.lr, self.alive)

    def step_with(self, grads: Tensors) -> None:
        """One step with a given gradient (unstacked)."""
        self.opt.step(self.stack.params, {k: v.unsqueeze(0) for k, v in grads.items()}, self.lr, self.alive)

    def mean_per_example_grad(self, x: torch.Tensor, y: torch.Tensor, chunk_size: int) -> Tensors:
        """Mean over the batch of the per-example gradients at the current weights (vectorised)."""
        params = self.weights()
        total: Tensors = {}
        for start in range(0, x.shape[0], chunk_size):
            xc, yc = x[start : start + chunk_size], y[start : start + chunk_size]
            copies = single_example_stack(self.base, params, None, xc.shape[0])
            _, g = accumulate_grads(
                lambda xb: batch_losses(copies, xb, yc.unsqueeze(1), bn_mode="eval"), xc.unsqueeze(1), copies.params
            )
            for k, v in g.items():
                total[k] = v.sum(0) if k not in total else total[k] + v.sum(0)
        return {k: v / x.shape[0] for k, v in total.items()}

    def weights(self) -> Tensors:
        return {k: v[0].detach() for k, v in self.stack.params.items()}


def multistep_variants(
    base: nn.Module,
    params0: Tensors,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lr: float,
    momentum: float,
    chunk_size: int = 64,
) -> dict[str, Tensors]:
    """A, B, C and D after the K batches x [K, b, ...], y [K, b] (see the module docstring)."""
    spec, plain = _momentum_spec(lr, momentum), _momentum_spec(lr, 0.0)
    a, b, c, d = (Trajectory(base, params0, s) for s in (spec, spec, plain, spec))
    for xk, yk in zip(x, y):
        a.step_on(xk, yk)
        for i in range(xk.shape[0]):  # sequential: example i+1 sees the weights example i left
            b.step_on(xk[i : i + 1], yk[i : i + 1])
        c.step_with(c.mean_per_example_grad(xk, yk, chunk_size))
        d.step_with(d.mean_per_example_grad(xk, yk, chunk_size))
    return {"A": a.weights(), "B": b.weights(), "C": c.weights(), "D": d.weights()}


@register_task("multistep-equivalence", MultistepArgs)
def multistep_equivalence(args: MultistepArgs, ctx: TaskContext) -> TaskOutput:
    """K momentum steps on K batches (A) vs sequential single-example steps (B), averaged per-example
    gradients without momentum (C) and with a persistent momentum state (D).

    Scalars: `AB_*`, `AC_*`, `AD_*` from `compare` (relative to ||A - theta0||), the update norms, and
    test loss/accuracy of theta0, A, B, C and D.
    """
    base = build_model(args.model)
    dtype = compute_dtype(args.precision)
    data = load_for(
        data_spec(args.model, args.precision, args.train_subset, args.test_subset, args.dataset),
        ctx.device,
        ctx.data_dir,
    )
    idx = draw(data.n_train, args.k * args.batch_size, ctx.spec.seed).to(ctx.device)
    x = data.x_train[idx].view(args.k, args.batch_size, *data.x_train.shape[1:])
    y = data.y_train[idx].view(args.k, args.batch_size)
    params0, _ = initial_weights(base, ctx.spec.seed, ctx.device, dtype)
    out = multistep_variants(base, params0, x, y, lr=args.lr, momentum=args.momentum, chunk_size=args.chunk_size)
    scalars: dict[str, float] = {}
    for name in "BCD":
        scalars |= compare(out["A"], out[name], params0, f"A{name}")
    scalars |= {f"update_norm_{n}": norm(w, params0) for n, w in out.items()}
    scalars |= {"theta0_norm": norm(params0), "k": float(args.k), "eps": float(torch.finfo(dtype).eps)}
    scalars |= eval_metrics(base, {"theta0": (params0, {}), **{n: (w, {}) for n, w in out.items()}}, data)
    return TaskOutput(scalars=scalars, arrays={"examples": idx.cpu().numpy().astype(np.int64)})


# ------------------------------------------------------------------------------------------------
# accumulation


class AccumulationArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    dataset: ImageDataset = Field("mnist", description="The images both runs train on.")
    model: Literal["cnn", "cnn-bn"] = Field("cnn", description="The CNN, with or without BatchNorm.")
    optimizer: AccumulationOptimizer = Field(
        "sgd",
        description="sgd (lr 0.1), momentum (0.9, lr 0.1), adam (lr 1e-3) or lars (lr 10, momentum 0.9, decay 5e-4).",
    )
    precision: Precision = Field("float64", description="Compute precision of both runs.")
    batch_size: BatchSize = Field(256, ge=1, description="The batch of every step.")
    micro_batch: BatchSize = Field(32, ge=1, description="The micro-batch the accumulated run computes it in.")
    steps: Steps = Field(
        10, ge=1, description="Steps of both runs: one epoch over the first steps x batch_size images."
    )
    test_subset: Examples | None = Field(None, ge=1, description="Evaluate on the first N test examples (None: all).")

    @model_validator(mode="after")
    def _divides(self):
        if self.batch_size % self.micro_batch:
            raise ValueError(f"micro_batch {self.micro_batch} must divide batch_size {self.batch_size}")
        return self


def accumulation_specs(args: AccumulationArgs, seed: int) -> tuple[RunSpec, RunSpec]:
    """(direct, accumulated): the same run (init, data order, optimizer) but for `micro_batch`."""
    common = (
        dict(
            dataset=args.dataset,
            model=args.model,
            init="torch",
            normalize=False,
            train_subset=args.steps * args.batch_size,
            test_subset=args.test_subset,
            precision=args.precision,
            batch_size=args.batch_size,
            epochs=1,
            seed=seed,
            probes=(),  # evaluated once at the end, in bounded chunks (eval_metrics)
        )
        | OPTIMIZER_SETTINGS[args.optimizer]
    )
    return RunSpec(**common), RunSpec(**common, micro_batch=args.micro_batch)


@register_task("accumulation", AccumulationArgs)
def accumulation(args: AccumulationArgs, ctx: TaskContext) -> TaskOutput:
    """Gradient accumulation (the engine's `micro_batch` training path) vs the direct batch.

    Trains both runs with `train_group` (eager, same seed: same init and data order) and compares the
    final weights: `MD_*` from `compare` (relative to the direct run's distance from theta0),
    `buf_MD_*` for BatchNorm's running buffers, and each run's final test loss and accuracy.
    """
    direct, micro = accumulation_specs(args, ctx.spec.seed)
    runs = {}
    for label, spec in (("direct", direct), ("micro", micro)):
        (res,) = train_group([spec], device=ctx.device, keep_params=True, data_dir=ctx.data_dir, path="autograd")
        runs[label] = res
    base = build_model(args.model)
    params0, buffers0 = initial_weights(base, ctx.spec.seed, torch.device("cpu"), compute_dtype(args.precision))
    d, m = runs["direct"], runs["micro"]
    scalars = compare(d.params, m.params, params0, "MD")
    if buffers0:
        float_buffers = {k: v for k, v in d.buffers.items() if v.is_floating_point()}
        scalars |= compare(float_buffers, m.buffers, buffers0, "buf_MD")
    scalars |= {
        "theta0_norm": norm(params0),
        "update_norm": norm(d.params, params0),
        "steps": float(d.steps),
        "eps": float(torch.finfo(compute_dtype(args.precision)).eps),
    }
    data = load_for(direct, ctx.device, ctx.data_dir)
    on = lambda tensors: {k: v.to(ctx.device) for k, v in tensors.items()}  # noqa: E731
    scalars |= eval_metrics(base, {label: (on(r.params), on(r.buffers)) for label, r in runs.items()}, data)
    return TaskOutput(scalars=scalars)
