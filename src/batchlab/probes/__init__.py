"""Probes: what is measured during training or at fixed weights, as functions of stacked parameters.

A probe is a small plug-in: `PROBES[name](ctx)` returns a dict of metric name -> [R] tensor (one
value per run). A run names the probes it wants (`RunSpec.probes`) and how often they run
(`RunSpec.eval_every`: after every epoch, or every N steps); the engine calls them at that cadence. A name may
carry options after colons, "sharpness:examples=2048:every=100", handed to the probe as `ctx.options`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..analysis.noise import two_batch_formulas
from .curvature import adam_sharpness_probe, batch_sharpness_probe, sharpness_probe
from .geometry import geometry, is_weight
from .metrics import evaluate, per_run_loss


@dataclass
class ProbeContext:
    """What a probe may look at: the stacked weights, their initial values, the data, and a forward
    pass in evaluation mode (`forward(x_chunk) -> [R, chunk, out]`, one chunk shared by every run)."""

    params: dict[str, torch.Tensor]
    init: dict[str, torch.Tensor]
    data: Any  # batchlab.datasets.Dataset
    forward: Callable[[torch.Tensor], torch.Tensor]
    n_runs: int
    # evaluation chunk: runs x examples x activation width kept below this many elements at once
    max_elements: int = 1 << 25
    # ||g_B||^2 of every run's gradient on B random training examples, run r's drawn by generators[r]:
    # grad_sq_norms(B, generators) -> [R]
    grad_sq_norms: Callable[[int, list[torch.Generator]], torch.Tensor] | None = None
    # of a probe's own random draws, per run: a function of the run's order seed and the step, so that reruns
    # agree and a run draws the same whatever runs share its group
    seeds: tuple[int, ...] = ()
    optimizer_state: dict[str, dict[str, torch.Tensor]] | None = None  # parameter name -> its optimizer state
    loss_fn: Callable | None = None  # the user's loss (fn(output, target) -> mean over examples); None: "auto"
    step: int = 0  # the global step of this evaluation
    batch_size: int = 0  # the runs' batch size at this step
    # the stack's curvature (engine.curvature.StackCurvature): `operator(x, y)` -> a MeanLoss over the current
    # weights (Hessian-vector products), `batch_sharpness(x, y, batch_size, draws, generator)`
    curvature: Any = None
    optimizers: tuple[str, ...] = ()  # each run's optimizer name
    optimizer_hp: dict[str, torch.Tensor] | None = None  # per-run hyperparameters [R]: beta1, beta2, eps, ...
    optimizer_step: torch.Tensor | None = None  # the optimizer's step count t
    memory: dict = field(default_factory=dict)  # kept across one group's evaluations (warm starts, fixed subsets)
    options: dict[str, Any] = field(default_factory=dict)  # the options in the probe's name


Probe = Callable[[ProbeContext], dict[str, torch.Tensor]]


def metrics_probe(ctx: ProbeContext) -> dict[str, torch.Tensor]:
    """Loss and accuracy over the whole training and test splits (train_loss, train_acc, test_...)."""
    d = ctx.data
    splits = {"train": (d.x_train, d.y_train), "test": (d.x_test, d.y_test)}
    return {
        f"{split}_{k}": v
        for split, (x, y) in splits.items()
        for k, v in evaluate(ctx.forward, x, y, ctx.n_runs, d.task, ctx.max_elements, ctx.loss_fn).items()
    }


def test_probe(ctx: ProbeContext) -> dict[str, torch.Tensor]:
    """Loss and accuracy over the test split only (test_loss, test_acc): cheap enough for every few steps."""
    d = ctx.data
    values = evaluate(ctx.forward, d.x_test, d.y_test, ctx.n_runs, d.task, ctx.max_elements, ctx.loss_fn)
    return {f"test_{k}": v for k, v in values.items()}


# the gradient-noise probe: batch sizes and draws per evaluation (cheap next to a full evaluation)
NOISE_SMALL, NOISE_BIG, NOISE_DRAWS = 32, 512, 4


def noise_probe(ctx: ProbeContext) -> dict[str, torch.Tensor]:
    """Unbiased estimates of |G|^2 and tr(Sigma) from two batch sizes (McCandlish et al. 2018, A.1):
    noise_grad_sq_norm and noise_trace_sigma, kept apart so that the analysis can smooth each over
    evaluations and take the ratio B_simple = tr(Sigma)/|G|^2 last (the ratio of noisy estimates is biased).
    Batches are drawn with replacement, as the estimator assumes."""
    if ctx.grad_sq_norms is None:
        raise ValueError("the noise probe needs a training group (gradients of the stacked runs)")
    big = min(NOISE_BIG, ctx.data.n_train)
    small = min(NOISE_SMALL, big // 2)
    gens = [torch.Generator().manual_seed(seed) for seed in ctx.seeds]
    s = torch.stack([ctx.grad_sq_norms(small, gens) for _ in range(NOISE_DRAWS)]).mean(0)
    b = torch.stack([ctx.grad_sq_norms(big, gens) for _ in range(NOISE_DRAWS)]).mean(0)
    grad_sq_norm, trace_sigma = two_batch_formulas(s, b, small, big)
    return {"noise_grad_sq_norm": grad_sq_norm, "noise_trace_sigma": trace_sigma}


def trust_probe(ctx: ProbeContext) -> dict[str, torch.Tensor]:
    """The last layer-wise trust ratio of each adapted layer, per run (LARS: its local lr; LAMB: ||w|| / ||u||),
    as `trust:<layer>`; NaN (stored as missing) for a run whose optimizer has none, whatever runs share its group
    (a group splits by step path, so a plain SGD run may train apart from the LARS runs it was planned with)."""
    state = ctx.optimizer_state or {}
    out = {}
    for name, p in ctx.params.items():
        if p.dim() >= 3:  # the tensors a layer-wise rule adapts (engine.optim.layer_wise; it imports the probes)
            st = state.get(name, {})
            # a copy: the optimizer updates its state in place, and records are read after training
            none = torch.full((ctx.n_runs,), float("nan"), dtype=p.dtype, device=p.device)
            out[f"trust:{name.removesuffix('.weight')}"] = st["trust"].clone() if "trust" in st else none
    return out


WEIGHTS_MAX = 64  # the weights probe records models of at most this many parameters


def weights_probe(ctx: ProbeContext) -> dict[str, torch.Tensor]:
    """Every parameter value of a tiny model (`w:<tensor>[i]`), for trajectories over a loss surface; nothing
    for a model with more than WEIGHTS_MAX parameters."""
    if sum(p[0].numel() for p in ctx.params.values()) > WEIGHTS_MAX:
        return {}
    return {
        f"w:{name}[{i}]": p.detach().flatten(1)[:, i].clone()  # a copy: training updates p in place
        for name, p in ctx.params.items()
        for i in range(p[0].numel())
    }


def geometry_probe(ctx: ProbeContext) -> dict[str, torch.Tensor]:
    """Distance and per-layer cosine to the initialisation, and distance from the origin."""
    return geometry(ctx.params, ctx.init)


PROBES: dict[str, Probe] = {
    "metrics": metrics_probe,
    "test": test_probe,
    "geometry": geometry_probe,
    "noise": noise_probe,
    "trust": trust_probe,
    "weights": weights_probe,
    "sharpness": sharpness_probe,
    "batch_sharpness": batch_sharpness_probe,
    "adam_sharpness": adam_sharpness_probe,
}
# the probes that take options in their names; the others refuse any
WITH_OPTIONS = {"sharpness", "batch_sharpness", "adam_sharpness"}


def register_probe(name: str, probe: Probe) -> None:
    PROBES[name] = probe


def parse_probe(name: str) -> tuple[str, dict[str, Any]]:
    """ "sharpness:examples=2048:tol=1e-3" -> ("sharpness", {"examples": 2048, "tol": 0.001}): numbers parsed."""
    base, *parts = name.split(":")
    options: dict[str, Any] = {}
    for part in parts:
        key, eq, raw = part.partition("=")
        if not eq or not key:
            raise ValueError(f"probe {name!r}: options must be key=value after a colon, e.g. sharpness:examples=2048")
        options[key] = _number(raw)
    return base, options


def _number(raw: str):
    """An int, else a float, else the string itself."""
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


def run_probes(names, ctx: ProbeContext) -> dict[str, torch.Tensor]:
    """Every named probe's values, merged (later probes cannot overwrite earlier names)."""
    out: dict[str, torch.Tensor] = {}
    for name in names:
        base, options = parse_probe(name)
        if base not in PROBES:
            raise ValueError(f"unknown probe {base!r}; known probes: {', '.join(PROBES)}")
        if options and base not in WITH_OPTIONS:
            raise ValueError(f"probe {base!r} takes no options (got {name!r})")
        for k, v in PROBES[base](dataclasses.replace(ctx, options=options)).items():
            out.setdefault(k, v)
    return out


__all__ = [
    "PROBES",
    "ProbeContext",
    "parse_probe",
    "register_probe",
    "run_probes",
    "geometry",
    "is_weight",
    "evaluate",
    "per_run_loss",
]
