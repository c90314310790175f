"""Eigenvalues and trace of symmetric operators known only through their products with vectors (a Hessian, by
Hessian-vector products), for R independent operators at once: the runs of a stack, each with its own.

Vectors are flat, [R, P]. `matvec(V)` takes [R, m, P] (m vectors per run) and returns [R, m, P], A_r V_r for each
run r, so one call serves every run. Nothing here knows about models.

- `lanczos`: the top k eigenvalues (largest first, by value, not magnitude) and their vectors, Lanczos (1950) with
  full reorthogonalisation, as ARPACK's `eigsh(which="LA")` that Cohen et al. 2021 call.
- `power_iteration`: the eigenvalue of largest magnitude (von Mises 1929): equal to lambda_max when lambda_max >=
  |lambda_min|, as for most Hessians met in training, and cheap when warm-started from the previous vector.
- `hutchinson`: the trace, tr(A) = E[zᵀAz] for Rademacher z (Hutchinson 1989), with its standard error.

Both eigensolvers stop a run when every pair it asked for has a relative residual ‖Ay − θy‖ / |θ| <= tol. For a
symmetric A the residual r of a unit vector y bounds the error: some eigenvalue lies within r of θ, and within
r² / gap of it when the gap to the rest of the spectrum is `gap` (Parlett 1998, The Symmetric Eigenvalue Problem,
thms 4.5.1 and 11.7.1). A run that has not met it after `max_iter` products is returned with `converged` False and
its last estimate, never as a final value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

Matvec = Callable[[torch.Tensor], torch.Tensor]  # [R, m, P] -> [R, m, P]


@dataclass
class Eigen:
    """The top eigenpairs of R operators. `values` [R, k] float64, largest first (NaN where a run has fewer than k
    in the Krylov space it built); `vectors` [R, k, P] unit vectors; `residual` [R, k] relative residuals and
    `pair_converged` [R, k] whether each is <= tol; `iterations` [R] products with the operator each run needed
    (all of `max_iter` if it did not converge); `converged` [R] every pair asked for converged (never for a run
    whose products were not finite: its values are NaN); `last_change` [R] the top value's relative change over
    the last iteration (NaN after a single one); `history` [iterations, R] the top value after each iteration
    (frozen once a run converged)."""

    values: torch.Tensor
    vectors: torch.Tensor
    residual: torch.Tensor
    pair_converged: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor
    last_change: torch.Tensor
    history: torch.Tensor

    def settled(self) -> torch.Tensor:
        """`values` where the pair converged, NaN elsewhere: what may be reported as a measurement."""
        return torch.where(self.pair_converged, self.values, torch.nan)


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.double() * b.double()).sum(-1)


def _relative(change: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return change.abs() / scale.abs().clamp_min(torch.finfo(torch.float64).tiny)


def power_iteration(matvec: Matvec, v0: torch.Tensor, *, max_iter: int = 100, tol: float = 1e-3) -> Eigen:
    """The eigenvalue of largest magnitude of each run's operator, from start vectors v0 [R, P].

    v <- Av / ‖Av‖; after each product the Rayleigh quotient θ = vᵀAv and the residual ‖Av − θv‖ / |θ| of the
    current v. The residual shrinks by about |λ2 / λ1| per iteration, so a start with a fair component along the
    top vector needs about log(tol) / log|λ2 / λ1| iterations, and θ is then within (tol λ1)² / gap of λ1. A run whose
    products are not finite (diverged weights) stops at once, not converged."""
    _check(v0, max_iter, tol)
    r = v0.shape[0]
    v = _unit(v0)
    value = torch.full((r,), torch.nan, dtype=torch.float64, device=v0.device)
    residual, change = value.clone(), value.clone()
    vector = v.clone()
    iterations = torch.full((r,), max_iter, dtype=torch.long, device=v0.device)
    done = torch.zeros(r, dtype=torch.bool, device=v0.device)
    failed = done.clone()
    history = []
    for it in range(1, max_iter + 1):
        w = matvec(v[:, None])[:, 0]
        theta = _dot(v, w)
        res = _relative((w.double() - theta[:, None] * v.double()).norm(dim=-1), theta)
        live = ~done
        change = torch.where(live, _relative(theta - value, theta), change)
        value = torch.where(live, theta, value)
        residual = torch.where(live, res, residual)
        vector = torch.where(live[:, None], v, vector)
        history.append(value.clone())
        newly = live & (res <= tol)
        failed |= live & ~torch.isfinite(theta)  # a diverged run's weights: stop it, report NaN
        iterations = torch.where(newly | (live & failed), it, iterations)
        done |= newly | failed
        if bool(done.all()):
            break
        v = _unit(w)
    converged = done & ~failed
    return Eigen(
        values=value[:, None],
        vectors=vector[:, None],
        residual=residual[:, None],
        pair_converged=converged[:, None].clone(),
        iterations=iterations,
        converged=converged,
        last_change=change,
        history=torch.stack(history),
    )


def lanczos(
    matvec: Matvec,
    v0: torch.Tensor,
    *,
    k: int = 1,
    max_iter: int = 100,
    tol: float = 1e-3,
    generator: torch.Generator | None = None,
) -> Eigen:
    """The k largest eigenvalues (by value) of each run's operator and their vectors, from start vectors v0 [R, P].

    Lanczos builds an orthonormal basis Q of the Krylov space span{v0, Av0, A²v0, ...} one product at a time, and
    A restricted to it is a tridiagonal T = QᵀAQ whose eigenvalues (Ritz values θ_i, eigenvectors s_i) approach
    A's extreme eigenvalues first, much faster than power iteration when the gap is small. The basis is
    reorthogonalised in full against every earlier vector, twice ("twice is enough", Giraud et al. 2005), so no
    spurious copies appear. The residual of a Ritz pair costs nothing: ‖A y_i − θ_i y_i‖ = β_m |s_i[m]|
    (Parlett 1998, §13.2). If a start vector lies in an invariant subspace (β = 0 before k pairs exist), the basis
    goes on from a random vector orthogonal to it (drawn from `generator`). Memory: the basis, up to `max_iter`
    vectors per run, in the operator's dtype."""
    _check(v0, max_iter, tol)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer (got {k!r})")
    r, p = v0.shape
    max_iter = min(max_iter, p)
    k_eff = min(k, p)
    dev, tiny = v0.device, torch.finfo(torch.float64).tiny
    basis = v0.new_zeros(r, min(max_iter, 16), p)
    basis[:, 0] = _unit(v0)
    alpha, beta = [], []  # [R] float64 each; beta[j] couples basis vectors j and j + 1 (0 after a breakdown)
    stop_at = torch.full((r,), max_iter, dtype=torch.long, device=dev)
    done = torch.zeros(r, dtype=torch.bool, device=dev)
    failed = done.clone()
    top = torch.full((r,), torch.nan, dtype=torch.float64, device=dev)
    change, history = top.clone(), []
    for j in range(max_iter):
        m = j + 1
        q = basis[:, j]
        w = matvec(q[:, None])[:, 0]
        a = _dot(q, w)
        w = w - a.to(w.dtype)[:, None] * q
        if j > 0:
            w = w - beta[-1].to(w.dtype)[:, None] * basis[:, j - 1]
        w = _reorthogonalise(w, basis[:, :m])
        b = w.double().norm(dim=-1)
        failed |= ~done & ~(torch.isfinite(a) & torch.isfinite(b))  # a diverged run's weights: stop it, report NaN
        # a run that stopped (converged or failed) is read at its own stop_at: its later entries are never used,
        # and a product of weights that diverged since must not put NaN into the batched eigh of the others
        alpha.append(torch.where(failed | done, 0.0, a))
        b = torch.where(failed | done, 0.0, b)
        theta, s = torch.linalg.eigh(_tridiagonal(alpha, beta))  # ascending
        broke = b <= 64 * torch.finfo(v0.dtype).eps * theta.abs().amax(-1).clamp_min(tiny)
        beta.append(torch.where(broke, torch.zeros_like(b), b))  # an invariant subspace: its Ritz pairs are exact
        count = min(k_eff, m)
        res = _relative(beta[-1][:, None] * s[:, -1, -count:].abs(), theta[:, -count:])
        live = ~done
        change = torch.where(live, _relative(theta[:, -1] - top, theta[:, -1]), change)
        top = torch.where(live, theta[:, -1], top)
        history.append(top.clone())
        newly = live & (((res <= tol).all(-1) & (m >= k_eff)) | failed)
        stop_at = torch.where(newly, m, stop_at)
        done |= newly
        if bool(done.all()) or m == max_iter:
            break
        if basis.shape[1] == m:  # grow the basis by doubling
            basis = torch.cat([basis, basis.new_zeros(r, min(m, max_iter - m), p)], 1)
        if bool(broke.any()):
            fresh = torch.randn(r, p, generator=generator, dtype=torch.float64).to(dev, v0.dtype)
            w = torch.where(broke[:, None], _unit(_reorthogonalise(fresh, basis[:, :m])), w)
        basis[:, m] = torch.where(broke[:, None], w, w / b.clamp_min(tiny).to(w.dtype)[:, None])
    return _ritz(alpha, beta, basis, stop_at, done & ~failed, failed, change, torch.stack(history), k, tol)


METHODS = ("lanczos", "power")


def top_eigen(
    matvec: Matvec,
    v0: torch.Tensor,
    *,
    method: str = "lanczos",
    k: int = 1,
    max_iter: int = 100,
    tol: float = 1e-3,
    generator: torch.Generator | None = None,
) -> Eigen:
    """The top eigenpairs by `method`: "lanczos" (the k largest) or "power" (the largest in magnitude, k = 1)."""
    if method == "power":
        if k != 1:
            raise ValueError("method='power' gives the top eigenvalue only: use k=1 or method='lanczos'")
        return power_iteration(matvec, v0, max_iter=max_iter, tol=tol)
    if method == "lanczos":
        return lanczos(matvec, v0, k=k, max_iter=max_iter, tol=tol, generator=generator)
    raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


def _reorthogonalise(w: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """w minus its components along the basis [R, m, P] (orthonormal), twice."""
    for _ in range(2):
        w = w - torch.einsum("rmp,rm->rp", basis, torch.einsum("rmp,rp->rm", basis, w))
    return w


def _tridiagonal(alpha: list[torch.Tensor], beta: list[torch.Tensor]) -> torch.Tensor:
    """T [R, m, m] from the diagonal alpha (m of [R]) and the first m - 1 of the off-diagonal beta."""
    t = torch.diag_embed(torch.stack(alpha, -1))
    if len(alpha) > 1:
        off = torch.stack(beta[: len(alpha) - 1], -1)
        t = t + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
    return t


def _ritz(alpha, beta, basis, stop_at, converged, failed, change, history, k, tol) -> Eigen:
    """Each run's top k Ritz pairs from its first stop_at[r] basis vectors: a run that converged early is read where
    it stopped, not after the iterations the other runs went on with (a failed run: NaN)."""
    r, _, p = basis.shape
    values = torch.full((r, k), torch.nan, dtype=torch.float64, device=basis.device)
    residual = values.clone()
    vectors = basis.new_zeros(r, k, p)
    for i in range(r):
        if failed[i]:
            continue
        m = int(stop_at[i])
        t = _tridiagonal([a[i : i + 1] for a in alpha[:m]], [b[i : i + 1] for b in beta[:m]])[0]
        theta, s = torch.linalg.eigh(t)
        c = min(k, m)
        top_s = s[:, -c:].flip(-1)  # [m, c], largest first
        values[i, :c] = theta[-c:].flip(-1)
        residual[i, :c] = _relative(beta[m - 1][i] * top_s[-1].abs(), values[i, :c])
        vectors[i, :c] = torch.einsum("mp,mc->cp", basis[i, :m].double(), top_s).to(basis.dtype)
    return Eigen(
        values=values,
        vectors=vectors,
        residual=residual,
        iterations=stop_at.clone(),
        converged=converged,
        last_change=change,
        history=history,
        pair_converged=(residual <= tol) & torch.isfinite(values),
    )


def _check(v0: torch.Tensor, max_iter: int, tol: float) -> None:
    if v0.dim() != 2:
        raise ValueError(f"start vectors must be [runs, P] (got shape {list(v0.shape)})")
    if not isinstance(max_iter, int) or isinstance(max_iter, bool) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer (got {max_iter!r})")
    if not (isinstance(tol, (int, float)) and 0 < tol < 1):
        raise ValueError(f"tol must be a number in (0, 1) (got {tol!r})")


@dataclass
class Trace:
    """Hutchinson's estimate of tr(A) per run ([R]), its standard error, and the samples zᵀAz [R, m]."""

    estimate: torch.Tensor
    standard_error: torch.Tensor
    samples: torch.Tensor


def hutchinson(
    matvec: Matvec,
    runs: int,
    size: int,
    *,
    samples: int = 32,
    chunk: int = 8,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Trace:
    """tr(A) ≈ (1/m) Σ z_iᵀ A z_i with z_i independent Rademacher vectors (±1 entries), unbiased, with variance
    2 Σ_{i≠j} A_ij² per sample (Hutchinson 1989; Avron & Toledo 2011): exact for a diagonal A. The standard error
    is the samples' standard deviation over sqrt(m). `chunk` vectors per call of `matvec`."""
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 2:
        raise ValueError(f"samples must be an integer of at least 2 (got {samples!r})")
    values = []
    for start in range(0, samples, chunk):
        c = min(chunk, samples - start)
        z = (torch.randint(0, 2, (runs, c, size), generator=generator) * 2 - 1).to(device, dtype)
        values.append(_dot(z, matvec(z)))
    quad = torch.cat(values, 1)
    mean, se = mean_and_se(quad)
    return Trace(mean, se, quad)


def mean_and_se(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean over the last dimension and its standard error (sample sd, ddof 1, over sqrt(n)), float64."""
    x = samples.double()
    n = x.shape[-1]
    se = x.std(-1, correction=1) / math.sqrt(n) if n > 1 else torch.full_like(x[..., 0], torch.nan)
    return x.mean(-1), se


# --- Adam's preconditioned sharpness -----------------------------------------------------------------------------


def adam_preconditioner(
    v: torch.Tensor, step, beta1, beta2, eps, *, first_moment_correction: bool = True
) -> torch.Tensor:
    """The diagonal of Adam's preconditioner P (same shape as v, Adam's second-moment average; `step` t and the
    hyperparameters scalars or broadcastable per run), following Cohen et al. 2022 (arXiv:2207.14484, §2):

        P = (1 − β1^t) (sqrt(v̂) + ε),   v̂ = v / (1 − β2^t),

    so that Adam's step is θ − η P⁻¹ m with m the uncorrected first moment; their stability threshold
    (2 + 2β1) / ((1 − β1) η), 38/η at β1 = 0.9, is for λ_max(P⁻¹H) with this P. `first_moment_correction=False`
    drops the (1 − β1^t) factor (P = sqrt(v̂) + ε, the step along the bias-corrected m̂); it is 1 after a few
    hundred steps either way."""
    p = (v / (1 - beta2**step)).sqrt() + eps
    return p * (1 - beta1**step) if first_moment_correction else p


def preconditioned(matvec: Matvec, diagonal: torch.Tensor) -> Matvec:
    """The product with P^-1/2 A P^-1/2 for a positive diagonal P [R, P]: symmetric, with the eigenvalues of P⁻¹A
    (similar matrices), so the symmetric solvers above apply (Cohen et al. 2022 compute λ_max(P⁻¹H) this way)."""
    scale = diagonal.rsqrt()[:, None]
    return lambda vectors: matvec(vectors * scale.to(vectors.dtype)) * scale.to(vectors.dtype)
