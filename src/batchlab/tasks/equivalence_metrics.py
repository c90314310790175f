"""How far apart the equivalence tasks' weights are, in float64 whatever the compute precision: per tensor
and over all tensors, max |A-X|, mean |A-X|, ||A-X|| / ||A-theta0|| and cos(A-theta0, X-theta0); the
fraction of sign-like (Adam) updates; the test loss and accuracy of each set of weights."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..models import Stack
from ..probes import evaluate
from .equivalence_steps import SIGN_TOL, Tensors


def compare(
    a: Mapping[str, torch.Tensor], x: Mapping[str, torch.Tensor], ref: Mapping[str, torch.Tensor], prefix: str
) -> dict[str, float]:
    """max|a-x|, mean|a-x|, ||a-x|| / ||a-ref|| and cos(a-ref, x-ref), per tensor (`<prefix>_max:<name>`...)
    and over all tensors together (`<prefix>_max`...), computed in float64. Only floating-point tensors."""
    out: dict[str, float] = {}
    tot = {"sq": 0.0, "abs": 0.0, "n": 0, "max": 0.0, "den": 0.0, "dot": 0.0, "xx": 0.0}
    for name in a:
        if not a[name].is_floating_point():
            continue
        av, xv, rv = (t[name].detach().double() for t in (a, x, ref))
        d, ua, ux = av - xv, av - rv, xv - rv
        sq, den, dot, xx = (float(t) for t in (d.pow(2).sum(), ua.pow(2).sum(), (ua * ux).sum(), ux.pow(2).sum()))
        mx, ab = float(d.abs().max()) if d.numel() else 0.0, float(d.abs().sum())
        out |= {
            f"{prefix}_max:{name}": mx,
            f"{prefix}_mean:{name}": ab / max(d.numel(), 1),
            f"{prefix}_rel:{name}": ratio(sq**0.5, den**0.5),
            f"{prefix}_cos:{name}": _cos(dot, den, xx),
        }
        tot["sq"] += sq
        tot["abs"] += ab
        tot["n"] += d.numel()
        tot["max"] = max(tot["max"], mx)
        tot["den"] += den
        tot["dot"] += dot
        tot["xx"] += xx
    out |= {
        f"{prefix}_max": tot["max"],
        f"{prefix}_mean": tot["abs"] / max(tot["n"], 1),
        f"{prefix}_rel": ratio(tot["sq"] ** 0.5, tot["den"] ** 0.5),
        f"{prefix}_cos": _cos(tot["dot"], tot["den"], tot["xx"]),
    }
    return out


def ratio(num: float, den: float) -> float:
    return num / den if den > 0 else float("nan")


def _cos(dot: float, aa: float, bb: float) -> float:
    return dot / (aa * bb) ** 0.5 if aa > 0 and bb > 0 else float("nan")


def norm(tensors: Mapping[str, torch.Tensor], ref: Mapping[str, torch.Tensor] | None = None) -> float:
    """||tensors - ref|| (or ||tensors||) over all floating-point tensors, in float64."""
    total = 0.0
    for k, v in tensors.items():
        if v.is_floating_point():
            d = v.double() - (0 if ref is None else ref[k].double())
            total += float(d.pow(2).sum())
    return total**0.5


def signlike_fraction(params: Tensors, ref: Tensors, lr: float) -> float:
    """Fraction of coordinates whose update |params - ref| is lr (within SIGN_TOL): Adam's first step is ±lr."""
    hits = sum(
        int(((p.double() - ref[k].double()).abs() - lr).abs().le(SIGN_TOL * lr).sum()) for k, p in params.items()
    )
    return hits / sum(p.numel() for p in params.values())


# images per run evaluated at once: a CNN's activations are ~64x an MLP's per image, so `evaluate`'s
# default chunk (sized for MLPs) would hold gigabytes; this keeps a chunk of 4 runs near 1 GB in float64
EVAL_IMAGES_PER_RUN = 256


@torch.no_grad()
def eval_metrics(base: nn.Module, weights: Mapping[str, tuple[Tensors, Tensors]], data) -> dict[str, float]:
    """Test loss and accuracy of each named (params, buffers), BatchNorm by running statistics (eval mode)."""
    names = list(weights)
    first_p, first_b = weights[names[0]]
    params = {k: torch.stack([weights[n][0][k].detach() for n in names]) for k in first_p}
    buffers = {k: torch.stack([weights[n][1][k] for n in names]) for k in first_b}
    ref = next(iter(params.values()))
    stack = Stack.from_params(base, params, buffers if buffers else None, ref.device, ref.dtype)
    values = evaluate(
        lambda xc: stack.forward(xc, shared_input=True, bn_mode="eval"),
        data.x_test,
        data.y_test,
        len(names),
        data.task,
        max_elements=EVAL_IMAGES_PER_RUN * len(names) * 1024,  # evaluate's chunk: max_elements / (runs x 1024)
    )
    out = {}
    for i, n in enumerate(names):
        out[f"{n}_test_loss"] = float(values["loss"][i])
        out[f"{n}_test_acc"] = float(values["acc"][i])
    return out
