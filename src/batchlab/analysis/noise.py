"""Estimators of the gradient noise scale B_simple = tr(Σ) / |G|² (McCandlish et al. 2018, arXiv:1812.06162).

G is the true (full-data) gradient and Σ the covariance of a single example's gradient, so a batch of B
examples has E‖g_B‖² = |G|² + tr(Σ)/B. B_simple is the batch size at which the noise term equals the
signal term. Nothing here knows about models: the functions take squared norms, batch sizes and (for the
bootstrap) per-example feature rows, as numpy arrays, Python floats or torch tensors.

- `per_example_estimates`: from the n per-example gradients g_i of one sample, the unbiased
  tr(Σ) = Σ_i ‖g_i − ḡ‖² / (n − 1) and |G|² = ‖ḡ‖² − tr(Σ)/n, from Σ_i ‖g_i‖² and ‖ḡ‖² alone
  (Σ_i ‖g_i − ḡ‖² = Σ_i ‖g_i‖² − n‖ḡ‖²), so the per-example gradients need not be kept.
- `two_batch_estimates`: the estimator of McCandlish et al. Appendix A.1 from the squared norms of the
  gradients of a small and a big batch, averaged over draws before the ratio is taken.
- `per_example_formulas`, `two_batch_formulas`: the same formulas elementwise, on arrays of bootstrap
  replicates or on one value per run (the `noise` probe); they return (|G|², tr(Σ)).
- `bootstrap_per_example_ci`, `bootstrap_two_batch_ci`: percentile bootstrap intervals for B_simple.
- `log_centred_interval`, `log_centred_two_batch_ci`: the intervals of the `noise-scale` study (bootstrap
  replicates of the ratio, re-centred on the log scale at the estimate).
- `hessian_noise_formulas`, `hessian_noise_estimates`, `bootstrap_hessian_noise`: the Hessian-weighted
  B_noise = tr(HΣ) / (GᵀHG) of the paper's eq. 2.6-2.7 from the matrix Q_ij = g_iᵀ H g_j of n examples (with
  H = I, Q is the Gram matrix and the same functions give B_simple).
- `NoiseScaleEMA`: exponential moving averages of |G|² and tr(Σ) kept apart, the ratio taken last.
- `CountSketch`: a random projection that keeps inner products on average, for a bootstrap over
  examples of models too large to keep every per-example gradient.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

DEFAULT_RESAMPLES = 2000


def b_simple(grad_sq_norm: float, trace_sigma: float) -> float:
    """B_simple = tr(Σ) / |G|², with the edge cases of noisy estimates made explicit.

    |G|² ≤ 0 (the signal is not distinguishable from the noise) gives +inf; tr(Σ) ≤ 0 with |G|² > 0
    (no measurable noise) gives 0; NaN inputs give NaN.
    """
    g2, tr = float(grad_sq_norm), float(trace_sigma)
    if math.isnan(g2) or math.isnan(tr):
        return math.nan
    if g2 <= 0:
        return math.inf
    if tr <= 0:
        return 0.0
    return tr / g2


@dataclass(frozen=True)
class NoiseEstimate:
    """Unbiased estimates of |G|² and tr(Σ); `b_simple` is their ratio (a ratio of unbiased estimates,
    so itself only consistent, not unbiased)."""

    grad_sq_norm: float
    trace_sigma: float

    @property
    def b_simple(self) -> float:
        return b_simple(self.grad_sq_norm, self.trace_sigma)


def per_example_formulas(sum_sq_norms, mean_grad_sq_norm, n: int):
    """(|G|², tr(Σ)) of the per-example estimator, elementwise: from Σ_i ‖g_i‖², ‖ḡ‖² and n.

    tr(Σ) = (Σ_i ‖g_i‖² − n‖ḡ‖²) / (n − 1) is the unbiased sample variance summed over coordinates, and
    E‖ḡ‖² = |G|² + tr(Σ)/n gives the unbiased |G|² = ‖ḡ‖² − tr(Σ)/n. (Equivalently |G|² is the mean of
    ⟨g_i, g_j⟩ over pairs i ≠ j, and tr(Σ) the mean of ‖g_i‖² minus it.)
    """
    trace = (sum_sq_norms - n * mean_grad_sq_norm) / (n - 1)
    return mean_grad_sq_norm - trace / n, trace


def per_example_estimates(sum_sq_norms: float, mean_grad_sq_norm: float, n: int) -> NoiseEstimate:
    """The per-example estimator from running sums: Σ_i ‖g_i‖², ‖ḡ‖² (ḡ = (1/n) Σ_i g_i) and n."""
    if n < 2:
        raise ValueError(f"the per-example estimator needs at least 2 examples (got {n})")
    grad_sq, trace = per_example_formulas(float(sum_sq_norms), float(mean_grad_sq_norm), n)
    return NoiseEstimate(grad_sq_norm=grad_sq, trace_sigma=trace)


def two_batch_estimates(small_sq_norms, big_sq_norms, b_small: int, b_big: int) -> NoiseEstimate:
    """The two-batch estimator (McCandlish et al. 2018, Appendix A.1) from ‖g_small‖² and ‖g_big‖².

    Both formulas (`two_batch_formulas`) are linear in the norms, so averaging the norms over draws first
    keeps them unbiased; the ratio is taken last, because the mean of ratios of noisy estimates is badly
    biased. Each norm array may have any shape (e.g. [draws] or [draws, small batches per draw]); each is
    averaged whole. The identity holds for batches drawn with replacement from the data distribution, and
    for batches drawn without replacement from a sample of n, where it estimates the per-example
    estimator's |G|² and tr(Σ) on that sample.
    """
    if not 1 <= b_small < b_big:
        raise ValueError(f"need 1 <= b_small < b_big (got {b_small}, {b_big})")
    s = float(_as_numpy(small_sq_norms).mean())
    b = float(_as_numpy(big_sq_norms).mean())
    grad_sq, trace = two_batch_formulas(s, b, b_small, b_big)
    return NoiseEstimate(grad_sq_norm=float(grad_sq), trace_sigma=float(trace))


def two_batch_formulas(small_sq_norm, big_sq_norm, b_small: int, b_big: int):
    """(|G|², tr(Σ)) of the two-batch estimator, elementwise on floats, arrays or tensors.

    With E‖g_B‖² = |G|² + tr(Σ)/B at two batch sizes:
        |G|²  ≈ (B_big ‖g_big‖² − B_small ‖g_small‖²) / (B_big − B_small)
        tr(Σ) ≈ (‖g_small‖² − ‖g_big‖²) / (1/B_small − 1/B_big)
    """
    grad_sq = (b_big * big_sq_norm - b_small * small_sq_norm) / (b_big - b_small)
    trace = (small_sq_norm - big_sq_norm) / (1.0 / b_small - 1.0 / b_big)
    return grad_sq, trace


def bootstrap_per_example_ci(
    sq_norms,
    features,
    mean_grad_sq_norm: float,
    *,
    level: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval for B_simple from the per-example estimator, resampling examples.

    Each resample draws n examples with replacement (counts c_i, Σ c_i = n) and recomputes
    Σ c_i ‖g_i‖² and ‖ḡ*‖² = ‖Σ c_i g_i / n‖², then `per_example_formulas`. ‖ḡ*‖² needs the inner products
    of the examples' gradients: `features` [n, k] are the gradients themselves (exact) or a sketch of them
    whose inner products are right on average (`CountSketch`). The exact ‖g_i‖² replace the sketched
    ones, and a constant shift makes the unresampled sample reproduce the exact ‖ḡ‖², so the sketch only
    enters through the cross terms ⟨g_i, g_j⟩ of the resamples.

    The resampled estimates are unbiased for the resampled population's own |G|² = ‖ḡ‖² and
    tr(Σ) = Σ_i ‖g_i − ḡ‖² / n, not for the sample's estimates, so each replicate's errors relative to
    those are added to the sample's estimates before the ratio is taken; a plain percentile interval of
    the replicates' ratios would sit low by a factor of about 1 + B_simple/n.
    """
    sq = _as_numpy(sq_norms).astype(np.float64).ravel()
    z = _as_numpy(features).astype(np.float64)
    n = sq.size
    if z.shape[0] != n:
        raise ValueError(f"features has {z.shape[0]} rows for {n} examples")
    if n < 2:
        return (math.nan, math.nan)
    diag_fix = sq - np.einsum("ij,ij->i", z, z)  # exact minus sketched ‖g_i‖²
    shift = mean_grad_sq_norm - float(np.square(z.mean(0)).sum()) - float(diag_fix.sum()) / n**2
    est = per_example_estimates(float(sq.sum()), mean_grad_sq_norm, n)
    true_trace = (float(sq.sum()) - n * mean_grad_sq_norm) / n  # of the empirical distribution
    rng = np.random.default_rng(seed)
    out = np.empty(resamples)
    block = max(1, min(resamples, 2**22 // max(n, z.shape[1])))
    for start in range(0, resamples, block):
        r = min(block, resamples - start)
        c = rng.multinomial(n, np.full(n, 1.0 / n), size=r).astype(np.float64)
        mean_sq = np.square(c @ z / n).sum(1) + (c**2 @ diag_fix) / n**2 + shift
        grad_sq, trace = per_example_formulas(c @ sq, mean_sq, n)
        grad_sq = est.grad_sq_norm + (grad_sq - mean_grad_sq_norm)
        trace = est.trace_sigma + (trace - true_trace)
        out[start : start + r] = _b_simple_array(grad_sq, trace)
    return percentile_interval(out, level)


def bootstrap_two_batch_ci(
    small_sq_norms,
    big_sq_norms,
    b_small: int,
    b_big: int,
    *,
    level: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval for B_simple from the two-batch estimator, resampling draws.

    `small_sq_norms` is [draws] or [draws, k] (k small batches per draw), `big_sq_norms` [draws]; a
    resample draws whole draws with replacement, so small and big norms of one draw stay together. The
    interval is valid when the draws are independent (e.g. disjoint batches); it is NaN with one draw.
    The resampled estimates' deviations are scaled by √(m/(m−1)) for m draws, the usual correction of the
    bootstrap's variance of a mean; with fewer than about 30 draws the interval still tends to be narrow.
    """
    small = _as_numpy(small_sq_norms).astype(np.float64)
    big = _as_numpy(big_sq_norms).astype(np.float64).ravel()
    small = small.reshape(small.shape[0], -1).mean(1)
    if small.size != big.size:
        raise ValueError(f"{small.size} draws of small batches but {big.size} of big ones")
    draws = big.size
    if draws < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, draws, size=(resamples, draws))
    grad_sq, trace = two_batch_formulas(small[idx].mean(1), big[idx].mean(1), b_small, b_big)
    grad_sq0, trace0 = two_batch_formulas(float(small.mean()), float(big.mean()), b_small, b_big)
    inflate = math.sqrt(draws / (draws - 1))
    grad_sq = grad_sq0 + inflate * (grad_sq - grad_sq0)
    trace = trace0 + inflate * (trace - trace0)
    return percentile_interval(_b_simple_array(grad_sq, trace), level)


def percentile_interval(values, level: float = 0.95) -> tuple[float, float]:
    """The central `level` interval of bootstrap replicates, by order statistics (no interpolation, so
    replicates of +inf, where |G|² ≤ 0, are kept as an unbounded end rather than turned into NaN)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1 (got {level})")
    v = _as_numpy(values).astype(np.float64).ravel()
    v = v[~np.isnan(v)]
    if v.size == 0:
        return (math.nan, math.nan)
    alpha = (1 - level) / 2
    return (float(np.quantile(v, alpha, method="lower")), float(np.quantile(v, 1 - alpha, method="higher")))


def log_centred_interval(replicates, estimate: float) -> tuple[float, float]:
    """95 % interval from bootstrap replicates of a ratio, shifted on the log scale so that their median is the
    estimate: resampling examples with replacement duplicates some, which biases ||gbar||^2 (hence the
    ratio) by about tr(Sigma)/N; the shift removes that bias and keeps the replicates' spread. Replicates
    that are not finite and positive are left out; fewer than 10 left, or no finite positive estimate: NaN."""
    r = np.asarray(replicates)
    r = r[np.isfinite(r) & (r > 0)]
    if r.size < 10 or not np.isfinite(estimate) or estimate <= 0:
        return (np.nan, np.nan)
    logs = np.log(r) - np.median(np.log(r)) + np.log(estimate)
    return (float(np.exp(np.quantile(logs, 0.025))), float(np.exp(np.quantile(logs, 0.975))))


def two_batch_replicates(
    small_sq_norms, big_sq_norms, b_small: int, b_big: int, resamples: int, seed: int = 0
) -> np.ndarray:
    """Bootstrap replicates of the two-batch B_simple as the `noise-scale` study draws them: the small and the big
    batches' norms resampled independently; +inf where a replicate's |G|² ≤ 0 (`b_simple`'s rule)."""
    rng = np.random.default_rng(seed)
    small, big = np.asarray(small_sq_norms), np.asarray(big_sq_norms)
    boot = []
    for _ in range(resamples):
        i, j = rng.integers(0, len(small), len(small)), rng.integers(0, len(big), len(big))
        boot.append(two_batch_estimates(small[i], big[j], b_small, b_big).b_simple)
    return np.asarray(boot, dtype=float)


def log_centred_two_batch_ci(
    small_sq_norms, big_sq_norms, b_small: int, b_big: int, resamples: int, seed: int = 0
) -> tuple[float, float]:
    """95 % interval of the two-batch B_simple as the `noise-scale` study reports it: `two_batch_replicates`
    centred by `log_centred_interval`.

    `bootstrap_two_batch_ci` (what `batchlab.noise_scale` reports) instead keeps each draw's small and big
    norms together and corrects the spread for few draws; this one stays as the study's stored verdicts
    were made with it."""
    boot = two_batch_replicates(small_sq_norms, big_sq_norms, b_small, b_big, resamples, seed)
    return log_centred_interval(boot, two_batch_estimates(small_sq_norms, big_sq_norms, b_small, b_big).b_simple)


def estimator_ratio_interval(per_example, two_batch, estimate: float, level: float = 0.95) -> tuple[float, float]:
    """The `level` interval of two-batch / per-example B_simple (`estimate`) from their bootstrap replicates
    (independent resamples, paired by index), scaled so that the finite replicates' median is the estimate (as
    `log_centred_interval` removes the resampling bias). One rule for a replicate whose |G|² ≤ 0: its B_simple is
    +inf (as `noise_scale` reports it), so the ratio is +inf or 0 and stays in the interval as an open end; inf /
    inf is left out. NaN when the estimate is not finite and positive."""
    a, b = _as_numpy(per_example).astype(float), _as_numpy(two_batch).astype(float)
    m = min(a.size, b.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = b[:m] / a[:m]
    body = q[np.isfinite(q) & (q > 0)]
    if not (math.isfinite(estimate) and estimate > 0) or body.size < 10:
        return (math.nan, math.nan)
    return percentile_interval(q * (estimate / np.median(body)), level)


# --- B_noise = tr(HΣ) / (GᵀHG), the Hessian-weighted noise scale ------------------------------------------


def b_noise(g_h_g: float, trace_h_sigma: float) -> float:
    """B_noise = tr(HΣ) / (GᵀHG) (McCandlish et al. 2018, eq. 2.7), with `b_simple`'s edge cases: GᵀHG ≤ 0
    (no positive curvature along G that the samples can resolve) gives +inf, tr(HΣ) ≤ 0 gives 0, NaN gives NaN."""
    return b_simple(g_h_g, trace_h_sigma)


@dataclass(frozen=True)
class HessianNoiseEstimate:
    """Estimates of GᵀHG and tr(HΣ) (unbiased for a fixed H); `b_noise` is their ratio."""

    g_h_g: float
    trace_h_sigma: float

    @property
    def b_noise(self) -> float:
        return b_noise(self.g_h_g, self.trace_h_sigma)


def hessian_noise_formulas(sum_diag_q, mean_q, n: int, fpc: float = 1.0):
    """(GᵀHG, tr(HΣ)) elementwise, from Σ_i Q_ii, ḡᵀHḡ = Σ_ij Q_ij / n² and n, where Q_ij = g_iᵀ H g_j.

    McCandlish et al. 2018 (arXiv:1812.06162), eq. 2.6: a step of SGD with a batch of B improves a locally
    quadratic loss by at most ΔL_max / (1 + B_noise/B) with B_noise = tr(HΣ) / (GᵀHG) (eq. 2.7), G the true
    gradient, Σ the per-example gradient covariance and H the Hessian. For a fixed H, the sample covariance
    S = Σ_i (g_i − ḡ)(g_i − ḡ)ᵀ / (n − 1) is unbiased for Σ, so

        tr(HΣ)^ = tr(HS) = (Σ_i Q_ii − n ḡᵀHḡ) / (n − 1),

    and E[ḡᵀHḡ] = GᵀHG + fpc · tr(HΣ)/n gives GᵀHG^ = ḡᵀHḡ − fpc · tr(HΣ)^ / n. `fpc` is the finite population
    correction 1 − n/N when the n examples are drawn without replacement from N (1: an infinite population).
    With H = I these are `per_example_formulas` (Q the Gram matrix, GᵀHG = |G|², tr(HΣ) = tr(Σ)).
    """
    trace = (sum_diag_q - n * mean_q) / (n - 1)
    return mean_q - fpc * trace / n, trace


def hessian_noise_estimates(q, *, fpc: float = 1.0) -> HessianNoiseEstimate:
    """GᵀHG, tr(HΣ) and B_noise from Q [n, n], Q_ij = g_iᵀ H g_j (symmetrised; see `hessian_noise_formulas`)."""
    q = _symmetric(q)
    n = q.shape[0]
    if n < 2:
        raise ValueError(f"the per-example estimator needs at least 2 examples (got {n})")
    g_h_g, trace = hessian_noise_formulas(float(np.trace(q)), float(q.sum()) / n**2, n, fpc)
    return HessianNoiseEstimate(g_h_g=float(g_h_g), trace_h_sigma=float(trace))


def bootstrap_hessian_noise(
    q, *, fpc: float = 1.0, resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap replicates (GᵀHG [resamples], tr(HΣ) [resamples]) from Q [n, n], resampling the examples.

    Each resample draws n examples with replacement (multinomial counts c, Σ c_i = n): Σ_i c_i Q_ii and
    ḡ*ᵀHḡ* = cᵀQc / n² go through `hessian_noise_formulas` (fpc 1: a resample is drawn with replacement). As in
    `bootstrap_per_example_ci`, a resample's estimates are unbiased for the resampled population's own
    values (GᵀHG = ḡᵀHḡ, tr(HΣ) = (Σ_i Q_ii − n ḡᵀHḡ) / n), so each replicate is the sample's estimate plus its
    errors relative to those. The ratio of a replicate is `b_noise`'s (+inf where GᵀHG ≤ 0, as the B_simple
    replicates of this module are), kept by `percentile_interval` as an unbounded end. With Q the Gram matrix
    and fpc 1, the ratios equal the replicates of `bootstrap_per_example_ci` with exact features (same seed).
    H is held fixed: its own sampling error (when it is estimated from the same examples) is not resampled.
    """
    q = _symmetric(q)
    n = q.shape[0]
    est = hessian_noise_estimates(q, fpc=fpc)
    diag = np.diag(q).copy()
    mean_q = float(q.sum()) / n**2
    true_trace = (float(diag.sum()) - n * mean_q) / n  # of the empirical distribution
    rng = np.random.default_rng(seed)
    g_h_g, trace = np.empty(resamples), np.empty(resamples)
    block = max(1, min(resamples, 2**22 // max(n, 1)))
    for start in range(0, resamples, block):
        r = min(block, resamples - start)
        c = rng.multinomial(n, np.full(n, 1.0 / n), size=r).astype(np.float64)
        signal, tr = hessian_noise_formulas(c @ diag, ((c @ q) * c).sum(1) / n**2, n)
        g_h_g[start : start + r] = est.g_h_g + (signal - mean_q)
        trace[start : start + r] = est.trace_h_sigma + (tr - true_trace)
    return g_h_g, trace


def ratio_replicates(signal, trace) -> np.ndarray:
    """B = trace / signal of bootstrap replicates, elementwise with `b_simple`'s rules (+inf where signal ≤ 0)."""
    return _b_simple_array(_as_numpy(signal), _as_numpy(trace))


def _symmetric(q) -> np.ndarray:
    q = _as_numpy(q)
    if q.ndim != 2 or q.shape[0] != q.shape[1]:
        raise ValueError(f"Q must be a square [n, n] matrix (got shape {q.shape})")
    return (q + q.T) / 2


@dataclass
class NoiseScaleEMA:
    """Exponential moving averages of |G|² and tr(Σ) during training; B_simple is the ratio of the averages.

    McCandlish et al. (2018, Appendix A.1) smooth the two estimates separately and divide last: a single
    step's estimates are noisy, and the average of their ratios is dominated by steps where |G|² is near 0.
    The averages are bias-corrected as in Adam, so the first updates are not pulled toward 0.
    """

    decay: float = 0.95
    _g2: float = 0.0
    _tr: float = 0.0
    _weight: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.decay < 1:
            raise ValueError(f"decay must be in [0, 1) (got {self.decay})")

    def update(self, grad_sq_norm: float, trace_sigma: float) -> NoiseScaleEMA:
        """Fold in one pair of (unbiased) estimates; returns self."""
        d = self.decay
        self._g2 = d * self._g2 + (1 - d) * float(grad_sq_norm)
        self._tr = d * self._tr + (1 - d) * float(trace_sigma)
        self._weight = d * self._weight + (1 - d)
        return self

    def update_two_batch(self, small_sq_norm, big_sq_norm, b_small: int, b_big: int) -> NoiseScaleEMA:
        """Fold in one step's ‖g_small‖² and ‖g_big‖² (e.g. per-device and all-reduced gradients)."""
        est = two_batch_estimates(small_sq_norm, big_sq_norm, b_small, b_big)
        return self.update(est.grad_sq_norm, est.trace_sigma)

    @property
    def grad_sq_norm(self) -> float:
        return self._g2 / self._weight if self._weight > 0 else math.nan

    @property
    def trace_sigma(self) -> float:
        return self._tr / self._weight if self._weight > 0 else math.nan

    @property
    def b_simple(self) -> float:
        return b_simple(self.grad_sq_norm, self.trace_sigma)


class CountSketch:
    """A random linear map R^P -> R^k with E⟨Sx, Sy⟩ = ⟨x, y⟩ (Charikar, Chen & Farach-Colton 2002).

    Each coordinate p is added, with a random sign s(p), into bucket h(p); the error of an inner product
    is about ‖x‖‖y‖/√k. It is applied tensor by tensor so a gradient is never flattened whole, and costs
    one pass over it. `shapes` are the per-example shapes of the tensors to sketch, in a fixed order.
    """

    def __init__(self, shapes: Sequence[torch.Size], k: int, *, seed: int = 0, device: torch.device | str = "cpu"):
        gen = torch.Generator().manual_seed(seed)
        self.k = k
        self.buckets, self.signs = [], []
        for shape in shapes:
            size = math.prod(shape)
            self.buckets.append(torch.randint(k, (size,), generator=gen).to(device))
            self.signs.append((torch.randint(2, (size,), generator=gen) * 2 - 1).to(device))

    def __call__(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """Sketch a batch: tensors [n, *shape] in the order given at construction -> [n, k] float64."""
        n = tensors[0].shape[0]
        out = torch.zeros(n, self.k, dtype=torch.float64, device=tensors[0].device)
        for t, h, s in zip(tensors, self.buckets, self.signs):
            out.index_add_(1, h, t.reshape(n, -1).to(torch.float64) * s)
        return out


def _b_simple_array(grad_sq: np.ndarray, trace: np.ndarray) -> np.ndarray:
    """`b_simple` elementwise."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(grad_sq <= 0, np.inf, np.where(trace <= 0, 0.0, trace / grad_sq))
    return np.where(np.isnan(grad_sq) | np.isnan(trace), np.nan, out)


def _as_numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().to(torch.float64).cpu().numpy()
    return np.asarray(a, dtype=np.float64)
