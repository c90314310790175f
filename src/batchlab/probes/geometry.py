"""Where the weights went: distance and angle to the initialisation and to the origin
(Hoffer et al. 2017; Shen 2018).

W = ||w_T - w_0|| over all weight matrices together, B the same over all biases (and other 1-D
parameters such as BatchNorm scales); per-layer cosine = cos(w_T^l, w_0^l) for each weight matrix.
Every function takes stacked parameters [R, ...] and returns one value per run.
"""

from __future__ import annotations

import torch


def is_weight(name: str, p: torch.Tensor) -> bool:
    """Weight matrices/kernels (>= 2 dims per run) as opposed to biases and norm parameters."""
    return p.dim() >= 3


def _sq(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).pow(2).sum(1)


def geometry(params: dict[str, torch.Tensor], init: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """dist_init_w (W), dist_init_b (B), norm_w, norm_b (distance from origin), and cos_init:<layer>."""
    ref = next(iter(params.values()))
    zeros = torch.zeros(ref.shape[0], device=ref.device, dtype=torch.float64)
    dw, db, nw, nb = zeros.clone(), zeros.clone(), zeros.clone(), zeros.clone()
    out: dict[str, torch.Tensor] = {}
    for name, p in params.items():
        p64, p0 = p.detach().double(), init[name].double()
        if is_weight(name, p):
            dw += _sq(p64 - p0)
            nw += _sq(p64)
            cos = (p64 * p0).flatten(1).sum(1) / (_sq(p64).sqrt() * _sq(p0).sqrt()).clamp_min(1e-300)
            out[f"cos_init:{name.removesuffix('.weight')}"] = cos
        else:
            db += _sq(p64 - p0)
            nb += _sq(p64)
    out.update(dist_init_w=dw.sqrt(), dist_init_b=db.sqrt(), norm_w=nw.sqrt(), norm_b=nb.sqrt())
    return out
