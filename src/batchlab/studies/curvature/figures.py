"""The curvature family's figures: the line between two solutions, the loss planes around them, and the sharpness
against the step with its stability threshold. An estimate that did not converge is drawn hollow and named so in the
legend, never as a measurement."""

from __future__ import annotations

import numpy as np

from ...outputs import FigureSpec
from ...report.figures import PALETTE, legend_below, new_figure


def line_figure(data: list, ends: tuple[int, int], step: float) -> FigureSpec:
    """data: (seed, alphas, train losses, test losses or None, distance) per seed."""
    fig, ax = new_figure(width=6.0, height=3.6)
    for i, (s, al, loss, test, dist) in enumerate(data):
        color = PALETTE[i % len(PALETTE)]
        ax.plot(al, loss, "-", color=color, linewidth=1.2, label=f"seed {s}: training loss (|Δθ| = {dist:.3g})")
        if test is not None:
            ax.plot(al, test, "--", color=color, linewidth=1.0, label=f"seed {s}: test loss")
    for x in (0.0, 1.0):
        ax.axvline(x, color="#888888", linewidth=0.8, linestyle=":")
    for x in (-step, step, 1 - step, 1 + step):
        ax.axvline(x, color="#cccccc", linewidth=0.6)
    ax.set(
        yscale="log",
        xlabel=f"alpha (0: the B={ends[0]} solution, 1: the B={ends[1]} solution)",
        ylabel="loss (log)",
        title="The loss on the line between two solutions",
    )
    legend_below(fig)
    caption = (
        f"The loss at (1 - alpha) theta(B={ends[0]}) + alpha theta(B={ends[1]}), both of the same seed (Keskar et al. "
        f"2017, fig. 3); grey lines at ±{step:g} around each end, where K3 compares the curvature."
    )
    return FigureSpec("interpolation", fig, caption)


def landscape_figure(planes: dict) -> FigureSpec:
    """planes: B -> (grid [p], losses [p, p]); the same contour levels in both panels."""
    fig, axes = new_figure(ncols=len(planes), width=7.0, height=3.4)
    axes = np.atleast_1d(axes)
    values = np.concatenate([np.asarray(v[1], dtype=float).ravel() for v in planes.values()])
    values = values[np.isfinite(values) & (values > 0)]
    lo, hi = (float(values.min()), float(np.quantile(values, 0.95))) if values.size else (1e-3, 1.0)
    levels = np.geomspace(lo, max(hi, lo * 1.01), 13)
    mappable = None
    for ax, (b, (grid, losses)) in zip(axes, planes.items()):
        z = np.clip(np.asarray(losses, dtype=float), lo, levels[-1])
        mappable = ax.contourf(grid, grid, z.T, levels=levels, cmap="viridis")
        ax.contour(grid, grid, z.T, levels=levels, colors="white", linewidths=0.3)
        ax.plot([0], [0], "+", color="red", markersize=8)
        ax.set(xlabel="direction 1 (filter-normalised)", ylabel="direction 2", title=f"around the B={b} solution")
    if mappable is not None:
        bar = fig.colorbar(mappable, ax=list(axes), shrink=0.9)
        bar.set_label("training loss")
    fig.suptitle("Loss planes around a small- and a large-batch solution (seed 0)")
    caption = (
        "The training loss on a plane through each solution (+) spanned by two random directions, each filter "
        "rescaled to the norm of the solution's own filter (Li et al. 2018), so that the two pictures share a scale. "
        "Colours: the same levels in both panels (the top 5 % clipped). This picture is not invariant to a "
        "reparametrisation of the network (Dinh et al. 2017): the filter normalisation removes the layer scales."
    )
    return FigureSpec("landscape", fig, caption)


def sharpness_panels(panels: list[dict], name: str, title: str, ylabel: str, caption: str) -> FigureSpec:
    """One panel per configuration: each series (steps, values, estimates, label, color) against the step, the
    estimates that did not converge hollow, and the threshold as a dashed line."""
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = new_figure(ncols=ncols, nrows=nrows, width=7.0, height=2.6 * nrows + 0.6)
    axes = np.atleast_1d(axes).ravel()
    for ax, p in zip(axes, panels):
        for steps, values, estimates, label, color in p["series"]:
            ax.plot(steps, values, "-", color=color, linewidth=1.0, label=label)
            if estimates is not None:
                hollow = ~np.isfinite(values) & np.isfinite(estimates)
                if hollow.any():
                    ax.plot(
                        steps[hollow],
                        estimates[hollow],
                        "o",
                        mfc="none",
                        color=color,
                        markersize=3,
                        label="not converged (last estimate)",
                    )
        ax.axhline(p["threshold"], color="black", linestyle="--", linewidth=1.0, label=p["threshold_label"])
        ax.set(xlabel="step", ylabel=ylabel, title=p["title"])
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(title)
    legend_below(fig)
    return FigureSpec(name, fig, caption)


def loss_panels(panels: list[dict], name: str, title: str, caption: str) -> FigureSpec:
    """The training loss against the step, one panel per configuration (log y)."""
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = new_figure(ncols=ncols, nrows=nrows, width=7.0, height=2.6 * nrows + 0.6)
    axes = np.atleast_1d(axes).ravel()
    for ax, p in zip(axes, panels):
        for steps, values, label, color in p["series"]:
            ax.plot(steps, values, "-", color=color, linewidth=1.0, label=label)
        ax.set(yscale="log", xlabel="step", ylabel="training loss (log)", title=p["title"])
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(title)
    legend_below(fig)
    return FigureSpec(name, fig, caption)
