"""Tasks of the gradient-statistics studies, at a training run's checkpoint (or on linear regression).

- `gradient-competition`: do the examples of a batch "compete"? From the checkpoint, each trial
  steps through its own seeded draw of `examples` training examples in batches of `batch_size`
  (SGD after each batch) and adds up the last layer's weight gradients; the norm of that sum is
  recorded per trial. Trials are the runs of a stack (one batched kernel for all of them).
- `gradient-variance`: E||g_B - G||^2 of mini-batch gradients around the full gradient G of a
  sample, measured over many draws with and without replacement, against tr(Sigma)/B.
- `noise-scale`: the simple noise scale B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018) by
  two estimators: per-example gradients, and two batch sizes with ordinary backward passes.

Everything that is a sum over examples of g_i . g_j is computed from a Gram matrix K_ij = g_i . g_j.
For an MLP no per-example gradient is formed: a linear layer's per-example gradient is
dW_i = delta_i a_i^T, so g_i . g_j = (delta_i . delta_j)(a_i . a_j) (+ delta_i . delta_j for the
bias), summed over layers (Goodfellow 2015's trick, extended from norms to inner products).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from ..analysis.noise import per_example_formulas
from ..bounds import BatchSize, Count, Examples, Real, Width, check_elements
from ..datasets import regression_problem
from ..engine.data import loss_for
from ..engine.step import batch_losses, mlp_deltas, per_example_grads, single_example_stack
from ..models import MLP
from . import TaskContext, TaskOutput, register_task

# |gradient element| histogram: log-spaced edges (the same for every task, so counts add up and a
# threshold at any edge can be applied afterwards), one count per sign
HIST_EDGES = np.logspace(-10, 3, 131)
PLAIN = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def trial_draws(seed: int, trials: int, examples: int, n: int) -> torch.Tensor:
    """[trials, examples] distinct example indices, trial t's draw a pure function of (seed, t): every
    batch size of a study sees the same examples in the same order in trial t."""
    out = torch.empty(trials, examples, dtype=torch.long)
    for t in range(trials):
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, t]).generate_state(1)[0]))
        out[t] = torch.randperm(n, generator=g)[:examples]
    return out


def signed_histogram(values: torch.Tensor) -> np.ndarray:
    """Counts [2, len(HIST_EDGES) + 1] of |v| in the log bins, row 0 for v >= 0, row 1 for v < 0
    (bin 0: below the first edge, including zeros; last bin: above the last edge)."""
    edges = torch.as_tensor(HIST_EDGES, device=values.device, dtype=torch.float64)
    v = values.detach().flatten().double()
    bins = torch.bucketize(v.abs(), edges)
    n = len(HIST_EDGES) + 1
    pos = torch.bincount(bins[v >= 0], minlength=n)
    neg = torch.bincount(bins[v < 0], minlength=n)
    return torch.stack([pos, neg]).cpu().numpy().astype(np.int64)


class CompetitionArgs(BaseModel):
    model_config = PLAIN

    batch_size: BatchSize = Field(ge=1, description="B: the examples are taken in batches of B, one SGD step each.")
    trials: Count = Field(ge=1, description="Independent trials (each its own draw of examples).")
    examples: Examples = Field(1024, ge=1, description="Examples per trial (distinct, drawn by the trial's seed).")
    lr: Real = Field(0.01, ge=0, description="SGD learning rate of the steps (0: the weights never move).")
    reduction: Literal["mean", "sum"] = Field("mean", description="Loss over a batch: averaged or summed.")
    trial_chunk: Count = Field(0, ge=0, description="Trials computed together (0: as many as fit 2^28 elements).")


@register_task("gradient-competition", CompetitionArgs)
def gradient_competition(args: CompetitionArgs, ctx: TaskContext) -> TaskOutput:
    """||sum over the steps of the last layer's weight gradient|| per trial, and its elements' histogram."""
    run, data, base, params, buffers = ctx.start_model()
    if args.examples > data.n_train:
        raise ValueError(f"examples {args.examples} exceeds the {data.n_train} training examples")
    last = [k for k in params if k.endswith(".weight")][-1]
    n_params = sum(p.numel() for p in params.values())
    chunk = args.trial_chunk or max(1, min(args.trials, (1 << 28) // (3 * n_params + 1)))
    draws = trial_draws(ctx.spec.seed, args.trials, args.examples, data.n_train)
    norms, kurtosis, before, after = [], [], [], []
    hist = np.zeros((2, len(HIST_EDGES) + 1), dtype=np.int64)
    for begin in range(0, args.trials, chunk):
        idx = draws[begin : begin + chunk].to(ctx.device)
        stack = single_example_stack(base, params, buffers, idx.shape[0])  # one copy of the weights per trial
        names = list(stack.params)
        total = torch.zeros_like(stack.params[last])
        before.append(pass_loss(stack, data, idx))
        for start in range(0, args.examples, args.batch_size):
            b = idx[:, start : start + args.batch_size]
            losses = batch_losses(stack, data.x_train[b], data.y_train[b], task=data.task, reduction=args.reduction)
            grads = dict(zip(names, torch.autograd.grad(losses.sum(), [stack.params[k] for k in names])))
            total += grads[last]
            if args.lr > 0:
                with torch.no_grad():  # one fused in-place update: B = 1, 16 trials took 3.4 s, not 5.3 s
                    torch._foreach_add_([stack.params[k] for k in names], [grads[k] for k in names], alpha=-args.lr)
        after.append(pass_loss(stack, data, idx))
        flat = total.flatten(1).double()
        norms.append(flat.norm(dim=1))
        kurtosis.append(element_kurtosis(flat))
        hist += signed_histogram(total)
    norms = torch.cat(norms)
    return TaskOutput(
        scalars={"mean_norm": float(norms.mean()), "std_norm": float(norms.std()) if len(norms) > 1 else 0.0},
        arrays={
            "norms": norms.cpu().numpy(),
            "element_hist": hist,
            "kurtosis": torch.cat(kurtosis).cpu().numpy(),
            "loss_before": torch.cat(before).cpu().numpy(),
            "loss_after": torch.cat(after).cpu().numpy(),
        },
    )


@torch.no_grad()
def pass_loss(stack, data, idx: torch.Tensor, slice_size: int = 256) -> torch.Tensor:
    """Mean loss [trials] of each trial's weights on its own examples idx [trials, examples] (float64), in slices
    of examples so that a large stack never holds all of them at once. Compared before and after a pass, it says
    whether the pass diverged."""
    total = torch.zeros(idx.shape[0], dtype=torch.float64, device=idx.device)
    for s in range(0, idx.shape[1], slice_size):
        b = idx[:, s : s + slice_size]
        total += batch_losses(stack, data.x_train[b], data.y_train[b], task=data.task, reduction="sum").double()
    return total / idx.shape[1]


def element_kurtosis(flat: torch.Tensor) -> torch.Tensor:
    """E v^4 / (E v^2)^2 over the elements v of each row of flat [trials, n]: a scale-free tail weight (3 for
    Gaussian elements around 0, larger for heavier tails); unlike a count beyond a fixed magnitude it does not move
    when the whole gradient is rescaled."""
    m2 = flat.pow(2).mean(1)
    return flat.pow(4).mean(1) / m2.pow(2)


# --- Gram matrices of per-example gradients ------------------------------------------------------------
def per_example_gram(
    base: nn.Module,
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    task: str = "classification",
    buffers: dict[str, torch.Tensor] | None = None,
    loss_fn=None,
) -> torch.Tensor:
    """K [N, N] (float64) with K_ij = g_i . g_j, g_i the gradient of example i's own loss (`loss_fn`: the
    run's own, see `loss_for`; else the task's).

    MLP: from one backward pass to the pre-activations (see the module docstring); other models:
    from their per-example gradients, flattened.
    """
    if isinstance(base, MLP):
        gram = torch.zeros(x.shape[0], x.shape[0], dtype=torch.float64, device=x.device)
        for a, d in mlp_deltas(base, params, x, y, task, loss_fn):
            a, d = a.double(), d.double()
            dd = d @ d.T
            gram += dd * (a @ a.T) + dd
        return gram
    grads, _ = per_example_grads(base, params, x, y, task=task, buffers=buffers, loss_fn=loss_fn)
    flat = torch.cat([g.flatten(1).double() for g in grads.values()], dim=1)
    return flat @ flat.T


def regression_gram(seed: int, n: int, d: int, noise: float, device) -> torch.Tensor:
    """K for linear regression y ~ x.w + b with squared error at w = 0, b = 0 (the usual start): example
    i's gradient is 2 (x_i.w + b - y_i) [x_i, 1], written out in closed form."""
    x, y, _, _, _ = regression_problem(seed, n, d, noise)
    residual = -y.squeeze(1)  # the prediction is 0 at w = 0, b = 0
    g = 2 * residual[:, None] * torch.cat([x, torch.ones(n, 1, dtype=x.dtype)], dim=1)
    g = g.to(device)
    return g @ g.T


def quadratic_forms(gram: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """w_d^T K w_d for each row w_d of weights [D, N]: ||sum_i w_di g_i||^2 without forming any g.
    Sparse rows (a mini-batch has B << N nonzeros) cost D B N instead of D N^2."""
    if (weights != 0).sum() < weights.numel() // 8:
        return (torch.sparse.mm(weights.to_sparse(), gram) * weights).sum(1)
    return ((weights @ gram) * weights).sum(1)


def batch_weights(n: int, batch_size: int, draws: int, *, replace: bool, gen: torch.Generator) -> torch.Tensor:
    """[draws, n] weights of a mini-batch mean: counts / B of a draw of B examples (with or without
    replacement)."""
    if replace:
        idx = torch.randint(n, (draws, batch_size), generator=gen)
    else:
        idx = torch.rand(draws, n, generator=gen).argsort(dim=1)[:, :batch_size]
    w = torch.zeros(draws, n, dtype=torch.float64)
    w.scatter_add_(1, idx, torch.ones(draws, batch_size, dtype=torch.float64))
    return w / batch_size


def mean_batch_error(
    gram: torch.Tensor, batch_size: int, draws: int, *, replace: bool, gen: torch.Generator
) -> tuple[float, float]:
    """E||g_B - G||^2 over `draws` mini-batches, from the centred Gram matrix, 256 draws at a time, and the
    standard deviation of ||g_B - G||^2 over the draws (its Monte Carlo standard error is sd / sqrt(draws))."""
    n, total, total_sq = gram.shape[0], 0.0, 0.0
    for start in range(0, draws, 256):
        w = batch_weights(n, batch_size, min(256, draws - start), replace=replace, gen=gen)
        q = quadratic_forms(gram, w)
        total, total_sq = total + float(q.sum()), total_sq + float((q * q).sum())
    mean = total / draws
    return mean, math.sqrt(max(total_sq / draws - mean * mean, 0.0) * draws / (draws - 1))


class VarianceArgs(BaseModel):
    model_config = PLAIN

    problem: Literal["checkpoint", "regression"] = Field(description="The start run's checkpoint, or regression.")
    examples: Examples = Field(2048, ge=2, description="N: the sample whose full gradient is G (drawn by the seed).")
    batch_sizes: tuple[Annotated[BatchSize, Field(ge=1)], ...] = Field(
        min_length=1, description="Mini-batch sizes B (each at most N)."
    )
    draws: Count = Field(2000, ge=2, description="Mini-batches drawn per batch size and sampling scheme.")
    regression: tuple[Annotated[Examples, Field(ge=2)], Annotated[Width, Field(ge=1)], Annotated[Real, Field(ge=0)]] = (
        Field((4096, 10, 0.5), description="n, d, noise of the regression problem.")
    )

    @model_validator(mode="after")
    def _fits(self) -> "VarianceArgs":
        n = self.regression[0] if self.problem == "regression" else self.examples
        if max(self.batch_sizes) > n:
            raise ValueError(f"batch size {max(self.batch_sizes)} exceeds the sample of {n} examples")
        if self.problem == "regression":
            check_elements(self.regression[0], self.regression[1], "regression")
        return self


@register_task("gradient-variance", VarianceArgs)
def gradient_variance(args: VarianceArgs, ctx: TaskContext) -> TaskOutput:
    """E||g_B - G||^2 measured (with and without replacement) and predicted, per batch size.

    With the N examples as the population, G = mean g_i and tr(Sigma) = (1/N) sum ||g_i - G||^2:
    with replacement E||g_B - G||^2 = tr(Sigma) / B, without it tr(Sigma) / B (N - B) / (N - 1).
    """
    if args.problem == "regression":
        n, d, noise = args.regression
        gram = regression_gram(ctx.spec.seed, n, d, noise, "cpu")
    else:
        run, data, base, params, buffers = ctx.start_model()
        idx = torch.randperm(data.n_train, generator=torch.Generator().manual_seed(ctx.spec.seed))[: args.examples]
        idx = idx.to(ctx.device)
        x, y = data.x_train[idx], data.y_train[idx]
        gram = per_example_gram(base, params, x, y, task=data.task, buffers=buffers, loss_fn=loss_for(run)).cpu()
    n = gram.shape[0]
    centered = gram - gram.mean(0, keepdim=True) - gram.mean(1, keepdim=True) + gram.mean()
    trace = float(centered.diagonal().sum() / n)
    gen = torch.Generator().manual_seed(ctx.spec.seed + 1)
    with_r, without_r, sd_r = [], [], []
    for b in args.batch_sizes:
        mean, sd = mean_batch_error(centered, b, args.draws, replace=True, gen=gen)
        with_r.append(mean)
        sd_r.append(sd)
        without_r.append(mean_batch_error(centered, b, args.draws, replace=False, gen=gen)[0])
    bs = np.asarray(args.batch_sizes, dtype=float)
    return TaskOutput(
        scalars={"trace_sigma": trace, "grad_sq_norm": float(gram.mean()), "examples": float(n)},
        arrays={
            "batch_sizes": bs,
            "measured_with_replacement": np.asarray(with_r),
            "sd_with_replacement": np.asarray(sd_r),  # of ||g_B - G||^2 over the draws
            "measured_without_replacement": np.asarray(without_r),
            "predicted_with_replacement": trace / bs,
            "predicted_without_replacement": trace / bs * (n - bs) / (n - 1),
        },
    )


class NoiseScaleArgs(BaseModel):
    model_config = PLAIN

    examples: Examples = Field(2048, ge=2, description="Examples of the per-example estimator (drawn by the seed).")
    small_batch: BatchSize = Field(64, ge=1, description="B_small of the two-batch estimator.")
    big_batch: BatchSize = Field(1024, ge=2, description="B_big of the two-batch estimator.")
    draws: Count = Field(64, ge=2, description="Pairs of batches of the two-batch estimator (fresh examples each).")
    bootstrap: Count = Field(200, ge=10, description="Bootstrap resamples of the per-example estimator.")

    @model_validator(mode="after")
    def _order(self) -> "NoiseScaleArgs":
        if self.small_batch >= self.big_batch:
            raise ValueError("small_batch must be smaller than big_batch")
        return self


@register_task("noise-scale", NoiseScaleArgs)
def noise_scale_task(args: NoiseScaleArgs, ctx: TaskContext) -> TaskOutput:
    """B_simple at a checkpoint by both estimators, with their raw ingredients.

    Per-example (N examples, unbiased): tr(Sigma) = sum ||g_i - gbar||^2 / (N - 1) and
    |G|^2 = ||gbar||^2 - (1 - N / n_train) tr(Sigma) / N; bootstrap replicates resample the examples.
    Two-batch (McCandlish et al. 2018, appendix A.1): for each draw, ordinary mean gradients of a
    small and a big batch of fresh examples; |G|^2 = (B_big |g_big|^2 - B_small |g_small|^2) /
    (B_big - B_small) and tr(Sigma) = (|g_small|^2 - |g_big|^2) / (1/B_small - 1/B_big), each
    averaged over the draws before the ratio is taken (the analysis does that from the stored norms).
    """
    run, data, base, params, buffers = ctx.start_model()
    gen = torch.Generator().manual_seed(ctx.spec.seed)
    n = min(args.examples, data.n_train)
    idx = torch.randperm(data.n_train, generator=gen)[:n].to(ctx.device)
    loss_fn = loss_for(run)
    x, y = data.x_train[idx], data.y_train[idx]
    gram = per_example_gram(base, params, x, y, task=data.task, buffers=buffers, loss_fn=loss_fn).cpu()
    ones = torch.ones(1, n, dtype=torch.float64)
    boot = torch.multinomial(torch.ones(args.bootstrap, n), n, replacement=True, generator=gen)
    counts = torch.zeros(args.bootstrap, n, dtype=torch.float64).scatter_add_(
        1, boot, torch.ones(args.bootstrap, n, dtype=torch.float64)
    )
    weights = torch.cat([ones, counts]) / n  # row 0: the sample itself
    mean_sq = quadratic_forms(gram, weights)  # ||gbar||^2 of the sample and of each resample
    sum_sq = (torch.cat([ones, counts]) * gram.diagonal()).sum(1)  # sum_i ||g_i||^2
    _, trace = per_example_formulas(sum_sq, mean_sq, n)  # tr(Sigma) of the sample and of each resample
    # the n examples are drawn without replacement from the n_train of the training set: the variance
    # of their mean is (1 - n / n_train) tr(Sigma) / n (finite population correction; at n = 4096 of 10k
    # leaving it out would bias |G|^2 down by tr(Sigma) / n_train, 10 % of it at the quick early checkpoint)
    g2 = mean_sq - (1 - n / data.n_train) * trace / n
    small, big = _two_batch_norms(args, ctx, run, data, base, params, buffers, gen)
    return TaskOutput(
        scalars={
            "per_example_trace_sigma": float(trace[0]),
            "per_example_grad_sq_norm": float(g2[0]),
            "per_example_b_simple": float(trace[0] / g2[0]) if g2[0] > 0 else float("nan"),
        },
        arrays={
            "bootstrap_trace_sigma": trace[1:].numpy(),
            "bootstrap_grad_sq_norm": g2[1:].numpy(),
            "small_sq_norms": small,
            "big_sq_norms": big,
            "batch_sizes": np.array([args.small_batch, args.big_batch], dtype=float),
        },
    )


def _two_batch_norms(args, ctx, run, data, base, params, buffers, gen) -> tuple[np.ndarray, np.ndarray]:
    """|g_small|^2 and |g_big|^2 for `draws` fresh pairs of batches (a stack of copies, one per draw)."""
    out, loss_fn = [], loss_for(run)
    n_params = sum(p.numel() for p in params.values())
    for b in (args.small_batch, args.big_batch):
        norms = []
        chunk = max(1, min(args.draws, (1 << 27) // (b * data.input_dim + 3 * n_params)))
        for begin in range(0, args.draws, chunk):
            r = min(chunk, args.draws - begin)
            # with replacement, as the estimator assumes (E|g_B|^2 = |G|^2 + tr(Sigma) / B exactly); batches
            # drawn without replacement from a finite training set would bias |G|^2 by tr(Sigma) / n_train
            idx = torch.randint(data.n_train, (r, b), generator=gen).to(ctx.device)
            stack = single_example_stack(base, params, buffers, r)
            x, y = data.x_train[idx], data.y_train[idx]
            losses = batch_losses(stack, x, y, task=data.task, bn_mode="eval", loss_fn=loss_fn)
            grads = torch.autograd.grad(losses.sum(), list(stack.params.values()))
            norms.append(sum(g.flatten(1).double().pow(2).sum(1) for g in grads).cpu())
        out.append(torch.cat(norms).numpy())
    return out[0], out[1]
