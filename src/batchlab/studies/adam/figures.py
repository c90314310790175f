"""The Adam family's figures."""

from __future__ import annotations

import numpy as np

from ...analysis.surge import predict
from ...outputs import FigureSpec
from ...report.figures import PALETTE, legend_below, new_figure

# --- lr-surge ------------------------------------------------------------------------------------------------------


def surge_figure(cfg, measured: dict, labels: dict) -> FigureSpec:
    """The optimal lr against B per optimizer (95 % bootstrap bars; hollow: censored at the grid's edge), with both
    fitted forms (solid: the surge form, dashed: SGD's) and the measured B_simple as a vertical line."""
    fig, ax = new_figure(width=6.4, height=4.0)
    b = np.asarray(cfg.batch_sizes, dtype=float)
    dense = np.geomspace(b.min(), b.max(), 200)
    for i, (opt, f) in enumerate(measured["fits"].items()):
        if f is None:
            continue
        color = PALETTE[i % len(PALETTE)]
        point, reps, edge = f["opt_lr"]["point"], f["opt_lr"]["replicates"], f["opt_lr"]["edge"]
        with np.errstate(all="ignore"):
            lo, hi = np.nanpercentile(reps, [2.5, 97.5], axis=0)
        y = np.exp(point)
        ax.errorbar(b, y, yerr=[y - np.exp(lo), np.exp(hi) - y], fmt="none", ecolor=color, alpha=0.6, linewidth=0.8)
        ax.plot(b[~edge], y[~edge], "o", color=color, label=f"{labels[opt]}: optimal lr")
        if edge.any():
            ax.plot(b[edge], y[edge], "o", mfc="none", color=color, label=f"{labels[opt]}: at the grid's edge")
        if f["cmp"] is not None:
            for form, style in (("surge", "-"), ("sgd", "--")):
                log_eps, log_bn, _ = f["cmp"]["fits"][form]
                ax.plot(dense, np.exp(predict(form, dense, log_eps, log_bn)), style, color=color, linewidth=1.0)
    if np.isfinite(bs := measured["noise"].get("B_simple", np.nan)) and bs > 0:
        ax.axvline(bs, color="#888888", linestyle=":", linewidth=1.0, label=f"B_simple at the start ({bs:.3g})")
    ax.set(xscale="log", yscale="log", xlabel="batch size B", ylabel="optimal lr (largest further loss decrease)",
           title="The optimal lr against the batch size")  # fmt: skip
    legend_below(fig)
    caption = (
        f"From the checkpoint at epoch {measured['epoch']} (loss {measured['start_loss']:.3g}), the lr of the largest "
        f"mean loss decrease over {cfg.window_steps} steps, {cfg.seeds} seeds (bars: 95 % bootstrap over seeds). "
        "Solid: the surge form eps_max / (0.5 (sqrt(B_noise/B) + sqrt(B/B_noise))) (Li et al. 2024); dashed: "
        "eps_max / (1 + B_noise/B) (McCandlish et al. 2018); both fitted on log lr without the censored points."
    )
    return FigureSpec("optimal_lr", fig, caption)
