"""Directions for loss-landscape pictures: Li et al. 2018's filter-normalised random directions ("Visualizing the
Loss Landscape of Neural Nets", §4, eq. 1) and the weights along a line or over a plane of them."""

from __future__ import annotations

import torch


def filter_normalised(theta: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A Gaussian direction with each filter rescaled to the norm of the same filter of θ: a filter is a weight's
    slice along its first dimension (a neuron's incoming weights, a convolution's output channel), so a unit step
    moves every filter by its own size and the picture does not depend on the layers' scales. Biases and other 1-D
    parameters are not moved (Li et al.'s "ignore biasbn")."""
    out = {}
    for k, w in theta.items():
        if w.dim() <= 1:
            out[k] = torch.zeros_like(w)
            continue
        d = torch.randn(w.shape, generator=generator, dtype=torch.float64).to(w.device, w.dtype)
        shape = (-1, *([1] * (w.dim() - 1)))
        out[k] = d * w.flatten(1).norm(dim=1).reshape(shape) / d.flatten(1).norm(dim=1).clamp_min(1e-30).reshape(shape)
    return out


def along(t: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """[c, *shape]: t_i times the direction, for each coordinate of t [c]."""
    return t.reshape(-1, *([1] * direction.dim())) * direction[None]


def segment(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]):
    """t [c] -> {name: [c, *shape]}: (1 − t) a + t b (Goodfellow et al. 2015's linear interpolation)."""
    return lambda t: {k: a[k][None] + along(t, b[k] - a[k]) for k in a}


def plane(theta: dict[str, torch.Tensor], d1: dict[str, torch.Tensor], d2: dict[str, torch.Tensor]):
    """t [c, 2] -> {name: [c, *shape]}: θ + t_0 d1 + t_1 d2."""
    return lambda t: {k: theta[k][None] + along(t[:, 0], d1[k]) + along(t[:, 1], d2[k]) for k in theta}
