"""Curvature during training, every run of a group at once: the top Hessian eigenvalue on a fixed abridged subset of
the training set (Cohen et al. 2021), batch sharpness at the run's own batch size (Andreyev & Beneventano 2024),
and Adam's preconditioned sharpness (Cohen et al. 2022).

Each eigensolve starts from the run's top eigenvector of the previous evaluation (kept in `ctx.memory`), so when the
weights moved little it converges in a few Hessian-vector products; the first starts from a seeded random vector.
The runs share one batched product per iteration (`ctx.curvature`, the engine's stacked `MeanLoss`). A value that
did not converge within `max_iter` is NaN, beside its last estimate, iterations, last change and residual.

Options, in the probe's name (`RunSpec.probes`): "sharpness:examples=2048:every=100", with
- examples: the abridged subset's size (default 1024, the first of a permutation seeded by `subset_seed`, 0),
- every: compute only at steps that are multiples of it (default: at every evaluation, `RunSpec.eval_every`),
- max_iter, tol, method ("lanczos" or "power"): as `batchlab.sharpness`; Lanczos keeps one vector per iteration
  and run, so its iterations are also capped at basis_budget / (runs x parameters) (2^28 entries, 1 GiB in float32;
  at least 4): a large group converges less often (NaN, with its estimate) unless given more or method=power,
- subset_seed: the seed of the abridged subset,
- draws (batch_sharpness): mini-batches per evaluation (default 16).
"""

from __future__ import annotations

import torch

from ..analysis.spectrum import adam_preconditioner, mean_and_se, preconditioned, top_eigen

DEFAULTS = {
    "examples": 1024,
    "every": 0,
    "max_iter": 50,
    "tol": 1e-3,
    "method": "lanczos",
    "subset_seed": 0,
    "basis_budget": 2**28,  # Lanczos basis entries (runs x iterations x parameters) at most: 1 GiB in float32
}
BATCH_DEFAULTS = {"every": 0, "draws": 16}
ADAM_OPTIMIZERS = ("adam", "adamw")


def _options(ctx, defaults: dict) -> dict | None:
    """The probe's options over its defaults; None when this step is not one of its `every`."""
    unknown = set(ctx.options) - set(defaults)
    if unknown:
        raise ValueError(f"unknown probe options {sorted(unknown)}; known: {', '.join(defaults)}")
    opts = {**defaults, **ctx.options}
    if opts["every"] and ctx.step % int(opts["every"]) != 0:
        return None
    return opts


def _abridged(ctx, opts) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed abridged subset of the training set (the same at every evaluation and for every run)."""
    key = ("abridged", int(opts["examples"]), int(opts["subset_seed"]))
    if key not in ctx.memory:
        d = ctx.data
        gen = torch.Generator().manual_seed(int(opts["subset_seed"]))
        idx = torch.randperm(d.n_train, generator=gen)[: int(opts["examples"])].sort().values.to(d.x_train.device)
        ctx.memory[key] = (d.x_train[idx], d.y_train[idx])
    return ctx.memory[key]


def _top(ctx, opts, matvec, size: int, dtype, device, key: str):
    """The top eigenpair of each run's operator, warm-started from memory[key]; the new vectors are kept there."""
    v0 = ctx.memory.get(key)
    if v0 is None:
        # each run's start vector from its own seed, so that a run's estimate does not depend on its group
        rows = [torch.randn(size, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in ctx.seeds]
        v0 = torch.stack(rows).to(device, dtype)
    max_iter = int(opts["max_iter"])
    if opts["method"] == "lanczos":  # the basis keeps every iteration's vector: bounded memory, fewer iterations
        max_iter = min(max_iter, max(4, int(opts["basis_budget"]) // (ctx.n_runs * size)))
    eigen = top_eigen(matvec, v0, method=opts["method"], max_iter=max_iter, tol=float(opts["tol"]),
                      generator=torch.Generator().manual_seed(int(ctx.step)))  # fmt: skip
    ctx.memory[key] = eigen.vectors[:, 0].clone()
    return eigen


SUFFIXES = ("", "_estimate", "_iterations", "_converged", "_change", "_residual")


def _report(prefix: str, eigen) -> dict[str, torch.Tensor]:
    """The settled value (NaN unless converged), its last estimate, iterations, convergence, change and residual."""
    values = (
        eigen.settled()[:, 0],
        eigen.values[:, 0],
        eigen.iterations.double(),
        eigen.converged.double(),
        eigen.last_change,
        eigen.residual[:, 0],
    )
    return {prefix + suffix: v for suffix, v in zip(SUFFIXES, values)}


def _need_curvature(ctx) -> None:
    if ctx.curvature is None:
        raise ValueError("the curvature probes need a training group (Hessian-vector products of the stacked runs)")


def sharpness_probe(ctx) -> dict[str, torch.Tensor]:
    """lambda_max per run: the top eigenvalue of the Hessian of the mean loss over the abridged subset (BatchNorm on
    its running statistics), with lambda_max_estimate, _iterations, _converged, _change and _residual."""
    _need_curvature(ctx)
    opts = _options(ctx, DEFAULTS)
    if opts is None:
        return {}
    op = ctx.curvature.operator(*_abridged(ctx, opts))
    eigen = _top(ctx, opts, op.matvec, op.size, op.dtype, op.device, "sharpness:vector")
    return _report("lambda_max", eigen)


def adam_sharpness_probe(ctx) -> dict[str, torch.Tensor]:
    """adam_lambda_max per run: the top eigenvalue of P⁻¹H with Adam's preconditioner P = (1 − β1^t)(sqrt(v̂) + ε)
    (Cohen et al. 2022; `analysis.spectrum.adam_preconditioner`), H on the abridged subset; NaN for runs that are
    not Adam or AdamW, and before the first step."""
    _need_curvature(ctx)
    opts = _options(ctx, DEFAULTS)
    if opts is None:
        return {}
    op = ctx.curvature.operator(*_abridged(ctx, opts))
    adam = torch.tensor([o in ADAM_OPTIMIZERS for o in ctx.optimizers], device=op.device)
    t = float(ctx.optimizer_step) if ctx.optimizer_step is not None else 0.0
    if not bool(adam.any()) or t < 1:
        nan = torch.full((ctx.n_runs,), torch.nan, dtype=torch.float64, device=op.device)
        return {"adam_lambda_max" + suffix: nan for suffix in SUFFIXES}
    hp = ctx.optimizer_hp

    def diag(name):
        v = ctx.optimizer_state[name]["v"]
        shape = (-1, *([1] * (v.dim() - 1)))
        return adam_preconditioner(
            v, t, hp["beta1"].reshape(shape), hp["beta2"].reshape(shape), hp["eps"].reshape(shape)
        )

    p = op.flatten({k: diag(k) for k in op.names})
    p = torch.where(adam[:, None], p, torch.ones_like(p))  # other runs: the plain Hessian, reported as NaN below
    eigen = _top(ctx, opts, preconditioned(op.matvec, p), op.size, op.dtype, op.device, "adam_sharpness:vector")
    return {k: torch.where(adam, v.double(), torch.nan) for k, v in _report("adam_lambda_max", eigen).items()}


def batch_sharpness_probe(ctx) -> dict[str, torch.Tensor]:
    """batch_sharpness per run: E_B[g_Bᵀ H_B g_B / ‖g_B‖²] at the run's current batch size, over `draws` random
    training batches (the same for every run), with its standard error batch_sharpness_se (Andreyev & Beneventano
    2024: SGD trains where this, not lambda_max, sits at 2/η)."""
    _need_curvature(ctx)
    opts = _options(ctx, BATCH_DEFAULTS)
    if opts is None or ctx.batch_size < 1:  # not this step, or a run without steps
        return {}
    gen = torch.Generator().manual_seed(int(ctx.step))  # the same batches for every run, whatever its group
    d = ctx.data
    ratios, _ = ctx.curvature.batch_sharpness(d.x_train, d.y_train, ctx.batch_size, int(opts["draws"]), gen)
    mean, se = mean_and_se(ratios)
    return {"batch_sharpness": mean, "batch_sharpness_se": se}
