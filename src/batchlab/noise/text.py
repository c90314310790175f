"""What a measured noise scale means, in words: the recommendation and the lines `batchlab noise-scale` prints."""

from __future__ import annotations

import math
import textwrap
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .measure import NoiseScale

CITATION = "McCandlish et al. 2018, arXiv:1812.06162"
# how far the proxy was from the measurement in this lab's own quick studies (MNIST MLP, README "Which batch size")
LAB_EVIDENCE = (
    "in this lab's own MNIST studies B_simple was 2.8x the measured critical batch size at initialisation, and late "
    "in training 77x the batch size where steps-to-target stop halving (README, 'Which batch size should I use?')."
)


def recommendation(b: float, ci: tuple[float, float], samples: int, level: float = 0.95) -> str:
    """What B_simple means for the choice of batch size, in plain words (McCandlish et al. 2018)."""
    lo, hi = ci
    later = (
        "B_simple is measured at the current weights and usually grows as training proceeds: "
        "measure again later in training."
    )
    if math.isnan(b):
        return f"B_simple could not be estimated from these {samples} samples."
    if math.isinf(b):
        above = f" (the {level:.0%} interval starts at about {format_b(lo)})" if math.isfinite(lo) else ""
        return (
            f"The gradient's signal cannot be told apart from its noise with {samples} samples (the estimate "
            f"of |G|² is ≤ 0), so B_simple is too large to measure here{above}: larger batches probably still "
            f"pay off almost fully. Measure with more samples ({CITATION}). {later}"
        )
    interval = f"{level:.0%} CI {format_b(lo)}–{format_b(hi)}"
    head = f"B_simple ≈ {format_b(b)} ({interval}) at the current weights ({CITATION})."
    body = (
        f"B_simple is a proxy for the critical batch size (the largest batch that still trains about as well per "
        f"example), not a measurement of it: {LAB_EVIDENCE} Measure the critical batch size itself with "
        "`batchlab critical-batch --model ... --data ...` (branched training from checkpoints)."
    )
    tail = " The upper end of the interval is unbounded: more samples would narrow it." if math.isinf(hi) else ""
    return f"{head} {body}{tail} {later}"


def format_noise_scale(ns: NoiseScale, width: int = 100) -> str:
    """A `NoiseScale` as the command line prints it: the estimates, what they mean for the batch size, notes."""
    how = f"{ns.estimator} estimator, {ns.samples} samples"
    if ns.batch_sizes is not None:
        how += f", batch sizes {ns.batch_sizes[0]} and {ns.batch_sizes[1]}, {ns.draws} draws"
    lo, hi = ns.ci
    lines = [
        f"Gradient noise scale ({how})",
        f"  B_simple  ≈ {format_b(ns.b_simple)}  ({ns.level:.0%} CI {format_b(lo)}–{format_b(hi)})",
        f"  |G|²      = {ns.grad_sq_norm:.4g}  (squared norm of the true gradient)",
        f"  tr(Σ)     = {ns.trace_sigma:.4g}  (variance of one example's gradient, summed over parameters)",
    ]
    if ns.b_noise is not None:
        nlo, nhi = ns.b_noise_ci
        lines += [
            f"  B_noise   ≈ {format_b(ns.b_noise)}  ({ns.level:.0%} CI {format_b(nlo)}–{format_b(nhi)}; "
            f"Hessian-weighted, {ns.hessian_samples} samples)",
            f"  GᵀHG      = {ns.g_h_g:.4g}  (curvature along the true gradient, times |G|²)",
            f"  tr(HΣ)    = {ns.trace_h_sigma:.4g}  (the gradient's variance weighted by the Hessian)",
        ]
    lines += [
        "",
        *textwrap.wrap(ns.recommendation, width),
    ]
    lines += [line for note in ns.notes for line in textwrap.wrap(f"note: {note}", width, subsequent_indent="  ")]
    return "\n".join(lines)


def format_b(b: float) -> str:
    """Two significant figures: 483.2 -> '480', 3.46 -> '3.5', 12345 -> '12000'; +inf -> '∞'."""
    if math.isnan(b):
        return "n/a"
    if math.isinf(b):
        return "∞" if b > 0 else "-∞"
    r = float(f"{b:.2g}")
    return f"{r:.0f}" if abs(r) >= 10 else f"{r:g}"
