"""How sharp is a model's loss at its current weights? The curvature of any `nn.Module`'s mean loss.

    from batchlab import sharpness
    s = sharpness(model, loss_fn, (x, y), device="cpu")
    print(s)  # λ_max and the top eigenvalues (converged or said not to be), tr(H) ± its standard error, 2/λ_max

All estimates read the Hessian H of the mean loss over a fixed, seeded subset of the data (Cohen et al. 2021's
"abridged" set) through Hessian-vector products (`engine.curvature.MeanLoss`, forward-over-reverse); H is never
formed. The estimators (formulas and convergence rules in `analysis.spectrum` and `analysis.sharpness`, in words in
docs/curvature.md):

- the top eigenvalues by Lanczos (default) or power iteration, each converged when its relative residual is below
  `tol`, with the iterations used and the last change; one that did not converge is NaN and said to be;
- tr(H) by Hutchinson's estimator with its standard error;
- batch sharpness E_B[g_Bᵀ H_B g_B / ‖g_B‖²] per batch size (Andreyev & Beneventano 2024);
- Keskar et al. 2017's ε-sharpness;
- Adam's preconditioned sharpness λ_max(P⁻¹H) (Cohen et al. 2022), given the optimizer;
- the loss along the segment between two weight vectors, and on a filter-normalised random plane (Li et al. 2018):
  `interpolation_losses`, `landscape_plane`.

Like `noise_scale`, the loss must be a mean of per-example terms: BatchNorm in training mode is refused.

Modules: `measure` (`sharpness` and its input checks), `result` (`Sharpness`, `Spectrum`, the printed text),
`landscape` (1-D and 2-D loss landscapes), `factory` (`batchlab sharpness --model ... --data ...`).
"""

from __future__ import annotations

from .factory import load_setup
from .landscape import interpolation_losses, landscape_plane
from .measure import METHODS, sharpness
from .result import BatchSharpness, Sharpness, Spectrum, format_sharpness

__all__ = [
    "METHODS",
    "BatchSharpness",
    "Sharpness",
    "Spectrum",
    "format_sharpness",
    "interpolation_losses",
    "landscape_plane",
    "load_setup",
    "sharpness",
]
