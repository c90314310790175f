"""What the equivalence studies share: reading task results, layer labels, and log-scale difference plots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ...engine.spec import TaskSpec
from ...models import build_model
from ...report.figures import PALETTE, bars, legend_below
from ..common import Results

# a difference of exactly 0 cannot sit on a log axis: it is drawn at this height (and said so in captions)
LOG_FLOOR = 1e-18
EPS = {"float32": float(torch.finfo(torch.float32).eps), "float64": float(torch.finfo(torch.float64).eps)}


def outcome(results: Results, spec: TaskSpec) -> str:
    """'finished', 'error: <name>: <message>' or 'missing' (not in the store)."""
    if not results.has(spec):
        return "missing"
    if results.status(spec) == "error":
        return f"error: {results.error(spec)}"
    return results.status(spec)


def scalars(results: Results, spec: TaskSpec | None) -> dict[str, float]:
    """A finished task's scalars ({} when absent, failed or not planned)."""
    if spec is None or not results.has(spec) or results.status(spec) != "finished":
        return {}
    return results.scalars(spec)


def value(results: Results, spec: TaskSpec | None, name: str) -> float:
    """One scalar of a finished task; NaN when the task or the value is missing."""
    return float(scalars(results, spec).get(name, float("nan")))


def tensor_names(values: Mapping[str, float], prefix: str, model: str | None = None) -> list[str]:
    """The tensors of per-tensor scalars `<prefix>:<tensor>`, in the model's order of parameters and
    buffers when `model` is given (the store returns them by name)."""
    names = [k.split(":", 1)[1] for k in values if k.startswith(f"{prefix}:")]
    if model is None:
        return names
    base = build_model(model)
    order = {
        n: i for i, n in enumerate([*(n for n, _ in base.named_parameters()), *(n for n, _ in base.named_buffers())])
    }
    return sorted(names, key=lambda n: order.get(n, len(order)))


def layer_label(model: str, tensor: str) -> str:
    """'features.0.weight' -> 'conv1.weight': the layer kind and its position among layers of that kind."""
    module_name, _, kind = tensor.rpartition(".")
    counts: dict[str, int] = {}
    short = {nn.Conv2d: "conv", nn.Linear: "fc", nn.BatchNorm1d: "bn", nn.BatchNorm2d: "bn"}
    for name, module in build_model(model).named_modules():
        tag = short.get(type(module))
        if tag is None:
            continue
        counts[tag] = counts.get(tag, 0) + 1
        if name == module_name:
            return f"{tag}{counts[tag]}.{kind}"
    return tensor


def log_bars(
    ax,
    groups: Mapping[str, Sequence[float]],
    categories: Sequence[str],
    *,
    eps_lines: Sequence[str] = ("float32", "float64"),
    thresholds: Mapping[str, float] | None = None,
    ylabel: str = "‖A − X‖ / ‖A − θ0‖ (ratio, log scale)",
    xlabel: str = "",
):
    """Grouped bars on a log y axis (0 drawn at LOG_FLOOR, NaN left out), with the machine epsilons of
    `eps_lines` (the rounding level of one operation) and optional named thresholds as horizontal lines."""
    clipped = {
        g: np.where(np.asarray(v, dtype=float) == 0, LOG_FLOOR, np.asarray(v, dtype=float)) for g, v in groups.items()
    }
    bars(ax, clipped, categories)
    ax.set_yscale("log")
    styles = {"float32": (PALETTE[0], "--"), "float64": (PALETTE[1], "--")}
    for name in eps_lines:
        color, ls = styles.get(name, ("#555555", "--"))
        ax.axhline(EPS[name], color=color, linestyle=ls, linewidth=1, label=f"{name} machine epsilon")
    for (label, y), ls in zip((thresholds or {}).items(), (":", "-.", (0, (1, 4)))):
        ax.axhline(y, color="#555555", linestyle=ls, linewidth=1.2, label=label)
    finite = [h for v in clipped.values() for h in v if np.isfinite(h) and h > 0]
    low = min([*finite, *(EPS[n] for n in eps_lines)], default=1e-17)
    high = max([*finite, 1.0], default=1.0)
    ax.set_ylim(low / 10, high * 10)
    ax.set_ylabel(ylabel)
    if xlabel:
        ax.set_xlabel(xlabel)
    legend_below(ax.figure)  # below the panels: bars of every height stay visible
