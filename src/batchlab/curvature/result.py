"""What `sharpness` returns, and how it reads: the measured numbers, each estimate with its convergence or its
standard error, and the text `batchlab sharpness` prints. A value that did not converge is NaN where a measurement
would be read, and shown as not converged with its last estimate, iterations and change."""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field

import torch

from ..analysis.sharpness import EpsilonSharpness
from ..analysis.spectrum import Eigen

CITATIONS = {
    "lanczos": "Lanczos with full reorthogonalisation, as Cohen et al. 2021's eigsh",
    "power": "power iteration: the eigenvalue of largest magnitude",
}


@dataclass(frozen=True)
class Spectrum:
    """The top eigenvalues of a symmetric operator (the Hessian, or Adam's preconditioned Hessian), as measured.

    `eigenvalues`: largest first, NaN where that pair's relative residual ‖Hy − θy‖/|θ| is above `tol` (not
    converged); `estimates`: the last values, converged or not; `residuals` per pair; `converged` every pair asked
    for converged; `iterations` Hessian-vector products used; `last_change` the top value's relative change over
    the last iteration; `history` the top value after each iteration."""

    eigenvalues: tuple[float, ...]
    estimates: tuple[float, ...]
    residuals: tuple[float, ...]
    converged: bool
    iterations: int
    last_change: float
    history: tuple[float, ...]
    method: str
    tol: float
    max_iter: int

    @property
    def lambda_max(self) -> float:
        return self.eigenvalues[0]

    @classmethod
    def from_eigen(cls, eigen: Eigen, method: str, tol: float, max_iter: int, run: int = 0) -> Spectrum:
        floats = lambda t: tuple(float(v) for v in t)  # noqa: E731
        return cls(
            eigenvalues=floats(eigen.settled()[run]),
            estimates=floats(eigen.values[run]),
            residuals=floats(eigen.residual[run]),
            converged=bool(eigen.converged[run]),
            iterations=int(eigen.iterations[run]),
            last_change=float(eigen.last_change[run]),
            history=floats(eigen.history[:, run]),
            method=method,
            tol=tol,
            max_iter=max_iter,
        )

    def describe(self, name: str = "λ_max") -> str:
        """One line: the value and how it was reached, or NOT CONVERGED with the last estimate."""
        if math.isfinite(self.lambda_max):
            return (
                f"{name} = {self.lambda_max:.5g}  (converged after {self.iterations} Hessian-vector products, "
                f"residual {self.residuals[0]:.1e} <= tol {self.tol:g})"
            )
        return (
            f"{name} NOT CONVERGED after {self.iterations} Hessian-vector products: last estimate "
            f"{self.estimates[0]:.5g}, last change {self.last_change:.1e}, residual {self.residuals[0]:.1e} > tol "
            f"{self.tol:g} (raise max_iter or tol)"
        )


@dataclass(frozen=True)
class BatchSharpness:
    """E_B[g_Bᵀ H_B g_B / ‖g_B‖²] over `draws` random mini-batches of `batch_size` (Andreyev & Beneventano 2024), with
    the standard error of the mean over draws."""

    batch_size: int
    mean: float
    standard_error: float
    draws: int


@dataclass(frozen=True)
class Sharpness:
    """The curvature of a model's mean loss at its current weights, on a fixed set of `examples` examples.

    `hessian`: the top eigenvalues of the Hessian (`lambda_max`, `top_eigenvalues`, `iterations`, `converged` and
    `last_change` read it); `trace` ± `trace_se`: Hutchinson's estimate of tr(H) with its standard error (None when
    not asked); `batch_sharpness` per batch size; `epsilon`: Keskar et al.'s ε-sharpness; `preconditioned`: the top
    eigenvalue of P⁻¹H with Adam's preconditioner P (Cohen et al. 2022), and `adam_threshold` their stability
    threshold (2 + 2β1) / ((1 − β1) η) at the optimizer's lr and β1; `loss` the mean loss on the examples;
    `seconds` the time each estimate took; `eigenvectors` {parameter name: [k, ...]} the Hessian's top vectors (a
    warm start for the next call: `sharpness(..., start=previous)`)."""

    hessian: Spectrum
    examples: int
    loss: float
    trace: float | None = None
    trace_se: float | None = None
    trace_samples: int = 0
    batch_sharpness: tuple[BatchSharpness, ...] = ()
    epsilon: EpsilonSharpness | None = None
    preconditioned: Spectrum | None = None
    adam_threshold: float | None = None  # (2 + 2β1) / ((1 − β1) η) at the optimizer's lr and β1 (one group only)
    seconds: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    eigenvectors: dict[str, torch.Tensor] | None = field(default=None, repr=False, compare=False)

    @property
    def lambda_max(self) -> float:
        """The top Hessian eigenvalue; NaN if it did not converge (its last estimate is `hessian.estimates[0]`)."""
        return self.hessian.lambda_max

    @property
    def top_eigenvalues(self) -> tuple[float, ...]:
        return self.hessian.eigenvalues

    @property
    def iterations(self) -> int:
        return self.hessian.iterations

    @property
    def converged(self) -> bool:
        return self.hessian.converged

    @property
    def last_change(self) -> float:
        return self.hessian.last_change

    def __str__(self) -> str:
        return format_sharpness(self)

    def to_json(self) -> dict:
        """Plain numbers (NaN as None), for `batchlab sharpness --json`."""

        def clean(v):
            if isinstance(v, float):
                return v if math.isfinite(v) else None
            if isinstance(v, (tuple, list)):
                return [clean(u) for u in v]
            if isinstance(v, dict):
                return {k: clean(u) for k, u in v.items()}
            return v

        spec = lambda s: None if s is None else clean(s.__dict__)  # noqa: E731
        return clean(
            {
                "lambda_max": self.lambda_max,
                "top_eigenvalues": self.top_eigenvalues,
                "converged": self.converged,
                "iterations": self.iterations,
                "last_change": self.last_change,
                "hessian": spec(self.hessian),
                "examples": self.examples,
                "loss": self.loss,
                "trace": self.trace,
                "trace_se": self.trace_se,
                "trace_samples": self.trace_samples,
                "batch_sharpness": [b.__dict__ for b in self.batch_sharpness],
                "epsilon_sharpness": None if self.epsilon is None else self.epsilon.__dict__,
                "preconditioned": spec(self.preconditioned),
                "adam_threshold": self.adam_threshold,
                "seconds": self.seconds,
                "notes": list(self.notes),
            }
        )


def format_sharpness(s: Sharpness, width: int = 100) -> str:
    """A `Sharpness` as `batchlab sharpness` prints it."""
    h = s.hessian
    lines = [
        f"Sharpness at the current weights ({s.examples} examples, mean loss {s.loss:.4g}; {CITATIONS[h.method]})",
        f"  {h.describe()}",
    ]
    if len(h.eigenvalues) > 1:
        shown = ", ".join(f"{v:.4g}" if math.isfinite(v) else f"({e:.4g}, not converged)" for v, e in
                          zip(h.eigenvalues, h.estimates))  # fmt: skip
        lines.append(f"  top {len(h.eigenvalues)}: {shown}")
    if math.isfinite(s.lambda_max) and s.lambda_max > 0:
        lines.append(
            f"  2/λ_max = {2 / s.lambda_max:.4g}: the learning rate above which gradient descent is unstable along "
            "the top direction of the local quadratic (Cohen et al. 2021)"
        )
    if s.trace is not None:
        lines.append(
            f"  tr(H) = {s.trace:.5g} ± {s.trace_se:.2g}  (Hutchinson, {s.trace_samples} Rademacher vectors, "
            "± one standard error)"
        )
    for b in s.batch_sharpness:
        lines.append(
            f"  batch sharpness at B = {b.batch_size}: {b.mean:.5g} ± {b.standard_error:.2g}  "
            f"(E_B[g_Bᵀ H_B g_B / |g_B|²] over {b.draws} batches, Andreyev & Beneventano 2024)"
        )
    if s.epsilon is not None:
        e = s.epsilon
        lines.append(
            f"  ε-sharpness = {e.value:.4g} %  (ε = {e.epsilon:g}, max loss {e.max_loss:.5g} found by {e.iterations} "
            "L-BFGS-B iterations: a lower bound; Keskar et al. 2017)"
        )
    if s.preconditioned is not None:
        lines.append("  " + s.preconditioned.describe("λ_max(P⁻¹H), Adam's P (Cohen et al. 2022)"))
        if s.adam_threshold is not None and math.isfinite(s.preconditioned.lambda_max):
            lines.append(
                f"  Adam's stability threshold (2 + 2β1) / ((1 − β1) η) = {s.adam_threshold:.4g} at its lr and β1: "
                f"λ_max(P⁻¹H) is {s.preconditioned.lambda_max / s.adam_threshold:.2g} of it"
            )
    if s.seconds:
        lines.append("  time: " + ", ".join(f"{k} {v:.2f} s" for k, v in s.seconds.items()))
    lines += [line for note in s.notes for line in textwrap.wrap(f"note: {note}", width, subsequent_indent="  ")]
    return "\n".join(lines)
